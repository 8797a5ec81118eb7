// The forwarding hot path's JavaScript half (bound in src/forward.rs). Each function is one
// call from wasm where the same work through web-sys would cross the boundary once per
// header.

/** Sends `request`'s method, headers and (streamed) body to `target`, less the credential,
 * `host` and every header named `prefix*` (the edge's identity headers, which a client
 * could forge), plus `name: value` (the edge's signed assertion). Names are lower case.
 * Redirects are the client's to follow, not the edge's. */
export function forward(request, target, prefix, name, value) {
  // One pass over the client's headers; forEach makes no iterator or entry arrays (copying
  // them with new Headers(request.headers) and deleting some walked them twice).
  const headers = new Headers();
  request.headers.forEach((header, key) => {
    if (key !== "authorization" && key !== "host" && !key.startsWith(prefix)) {
      headers.append(key, header);
    }
  });
  headers.set(name, value);
  return fetch(target, {
    method: request.method,
    headers,
    body: request.body,
    redirect: "manual",
  });
}

/** `response` with two headers set: a fetched response's own headers are immutable, so
 * status, headers and the body stream move to a new one. */
export function withHeaders(response, name1, value1, name2, value2) {
  const out = new Response(response.body, response);
  out.headers.set(name1, value1);
  out.headers.set(name2, value2);
  return out;
}

/** The wait for a fresh token (src/handler/fresh.rs): WebCrypto's verdict goes
 * back into wasm by request number (`resume` holds the wasm exports), which answers with a
 * response or the promise of the origin's. */
export function verifyThen(subtle, algorithm, key, signature, message, resume, id) {
  return subtle.verify(algorithm, key, signature, message).then(
    (valid) => resume.tokenVerified(id, valid),
    (error) => resume.tokenNotVerified(id, String(error)),
  );
}

/** The wait for the origin: `forward`, the two rate-limit headers when given,
 * and `originAnswered(id, status)` for the request log; a failed fetch is the edge's 502. */
export function forwardThen(request, target, prefix, name, value, resume, id, name1, value1, name2, value2) {
  let sent;
  try {
    sent = forward(request, target, prefix, name, value);
  } catch (error) {
    return Promise.resolve(resume.forwardFailed(id, String(error)));
  }
  return sent.then(
    (response) => {
      if (value1 != null) response = withHeaders(response, name1, value1, name2, value2);
      resume.originAnswered(id, response.status);
      return response;
    },
    (error) => resume.originUnreachable(id, String(error)),
  );
}
