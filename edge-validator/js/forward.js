// The forwarding hot path's JavaScript half (bound in src/driver/js.rs). Each function is
// one call from wasm where the same work through web-sys would cross the boundary once per
// header.

// Request headers the origin never gets from the client: the credential and its DPoP proof
// (the assertion says the edge checked it), the host, what
// proxies say about the client (the edge sets its own from what the platform says), what
// identity-aware proxies say the user is (`remote-user`, Cloudflare Access's `cf-access-*`:
// only the assertion says who the client is), what frameworks take to override the method
// or URL the assertion binds, and the hop-by-hop headers of RFC 9110 §7.6.1. Names are
// compared lower case with every character but [a-z0-9] read as a dash: servers in front of
// origins map `x_forwarded_for` (and CGI maps any punctuation) to the same name.
const DROPPED = new Set([
  "authorization", "dpop", "host", "forwarded", "x-real-ip", "true-client-ip", "client-ip",
  "x-client-ip", "x-cluster-client-ip", "fastly-client-ip", "x-original-forwarded-for",
  "x-host", "x-original-host", "x-original-url", "x-rewrite-url",
  "remote-user", "x-remote-user", "x-authenticated-user",
  "x-http-method-override", "x-http-method", "x-method-override", "x-original-method",
  "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
  "te", "trailer", "transfer-encoding", "upgrade",
]);
const PUNCTUATION = /[^a-z0-9-]/;
const NOT_ALPHANUMERIC = /[^a-z0-9]/g;
const FORWARDED_PREFIX = "x-forwarded-";
const ACCESS_PREFIX = "cf-access-";

/** Sends `request`'s method, headers and (streamed) body to `target`, less what `DROPPED`
 * names, every `x-forwarded-*` header, and every header named `prefix*` in any spelling (the
 * edge's identity headers, which a client could forge); plus `name: value` (the edge's
 * signed assertion), `x-forwarded-for` from the platform's `cf-connecting-ip` and
 * `x-forwarded-proto` from the URL the platform parsed; never through the zone's cache.
 * (The runtime consumes the client's `Connection` header before the Worker sees it, so the
 * headers it names cannot be told apart here.) Redirects are the client's to follow, not
 * the edge's. */
export function forward(request, target, prefix, name, value) {
  // (A request the runtime refuses to build throws here: wasm answers 500 at once.)
  const incoming = request.headers;
  // A GET or HEAD goes without a body, as fetch() sends those: it refuses one, so a client's
  // GET with a body was a 502. RFC 9110 gives such a body no meaning, and the assertion does
  // not cover bodies.
  const bodiless = request.method === "GET" || request.method === "HEAD";
  // One pass over the client's headers; forEach makes no iterator or entry arrays (copying
  // them with new Headers(request.headers) and deleting some walked them twice).
  const headers = new Headers();
  incoming.forEach((header, key) => {
    const canonical = PUNCTUATION.test(key) ? key.replace(NOT_ALPHANUMERIC, "-") : key;
    if (
      !DROPPED.has(canonical) &&
      !canonical.startsWith(FORWARDED_PREFIX) &&
      !canonical.startsWith(ACCESS_PREFIX) &&
      !canonical.startsWith(prefix) &&
      !(bodiless && canonical === "content-length")
    ) {
      headers.append(key, header);
    }
  });
  const client = incoming.get("cf-connecting-ip");
  if (client !== null) headers.set("x-forwarded-for", client);
  headers.set("x-forwarded-proto", request.url.startsWith("https:") ? "https" : "http");
  // A public route's request carries no assertion (`value` is undefined).
  if (value !== undefined) headers.set(name, value);
  return fetch(target, {
    method: request.method,
    headers,
    body: bodiless ? null : request.body,
    redirect: "manual",
    // Never from the zone's HTTP cache: the cache keys by URL alone, and the edge strips the
    // credential, so one client's answer could be served to another.
    cache: "no-store",
  });
}

/** `response` with the headers whose values are given set (the rate-limit pair, named by
 * wasm, and `DPoP-Nonce`): a fetched response's own headers are immutable, so status,
 * headers and the body stream move to a new one. */
export function withHeaders(response, name1, value1, name2, value2, dpopNonce) {
  const out = new Response(response.body, response);
  if (value1 != null) out.headers.set(name1, value1);
  if (value2 != null) out.headers.set(name2, value2);
  if (dpopNonce != null) out.headers.set("dpop-nonce", dpopNonce);
  return out;
}
