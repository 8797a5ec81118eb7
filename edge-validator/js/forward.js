// The forwarding hot path's JavaScript half (bound in src/forward.rs). Each function is one
// call from wasm where the same work through web-sys would cross the boundary once per
// header.

/** A copy of `headers` without the credential, `host`, and every name starting with
 * `prefix` (the edge's identity headers, which a client could forge). Names are lower case. */
export function forwardedHeaders(headers, prefix) {
  const out = new Headers(headers);
  for (const name of headers.keys()) {
    if (name === "authorization" || name === "host" || name.startsWith(prefix)) {
      out.delete(name);
    }
  }
  return out;
}

/** Sends `request`'s method and (streamed) body to `target` with `headers`. Redirects are
 * the client's to follow, not the edge's. */
export function forwardTo(request, target, headers) {
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
