// The edge's I/O with the Workers runtime other than forwarding (that is js/forward.js):
// fetches to the issuer, the Cache API, timers, the rate-limit Durable Objects and the
// edge's own answers. Each is one call from wasm (bound in src/upstream.rs, jwks_cache.rs,
// single_flight.rs, rate_limit.rs and error.rs); every decision stays in Rust. The async
// ones never throw: every failure is a rejected promise. Doing them
// through the `worker` crate's Fetch/Request/Response/Cache/Delay wrappers cost about a
// third of the wasm bundle (measured with benches/size-breakdown) and a boundary crossing per
// header.

/** `GET url` (headers `accept` and, if given, `if-none-match`), aborted after `timeoutMs`
 * counting the body. Resolves to `{status, text, cacheControl, etag}` (`text` only for a
 * 200); rejects with a message when there was no answer. */
export async function fetchText(url, accept, ifNoneMatch, timeoutMs) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    const headers = { accept };
    if (ifNoneMatch != null) headers["if-none-match"] = ifNoneMatch;
    const response = await fetch(url, { headers, signal: controller.signal });
    const text = response.status === 200 ? await response.text() : null;
    if (text === null) response.body?.cancel();
    return {
      status: response.status,
      text,
      cacheControl: response.headers.get("cache-control"),
      etag: response.headers.get("etag"),
    };
  } catch (error) {
    throw controller.signal.aborted ? `no answer within ${timeoutMs} ms` : String(error);
  } finally {
    clearTimeout(timer);
  }
}

// The Cache API copy of the key set: the issuer's body, kept `keepSecs`, with when it was
// fetched and the issuer's own `Cache-Control` and `ETag` in headers of its own.
const FETCHED_AT = "x-edgeward-fetched-at";
const ISSUER_CACHE_CONTROL = "x-edgeward-issuer-cache-control";

/** The copy under `key` as `{text, fetchedAt, cacheControl, etag}`, or null. */
export async function cacheGet(key) {
  const response = await caches.default.match(key);
  if (!response) return null;
  return {
    text: await response.text(),
    fetchedAt: response.headers.get(FETCHED_AT),
    cacheControl: response.headers.get(ISSUER_CACHE_CONTROL),
    etag: response.headers.get("etag"),
  };
}

/** Stores the copy under `key`. */
export async function cachePut(key, text, keepSecs, fetchedAt, cacheControl, etag) {
  const headers = new Headers({
    "content-type": "application/json",
    "cache-control": `public, max-age=${keepSecs}`,
    [FETCHED_AT]: String(fetchedAt),
  });
  if (cacheControl != null) headers.set(ISSUER_CACHE_CONTROL, cacheControl);
  if (etag != null) headers.set("etag", etag);
  await caches.default.put(key, new Response(text, { headers }));
}

/** A promise resolved after `ms` milliseconds. */
export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** `GET url` on the Durable Object named `name` in `env[binding]`; resolves to the body of a
 * 200, rejects with a message otherwise. */
export async function askObject(env, binding, name, url) {
  const namespace = env[binding];
  if (!namespace) throw `no Durable Object binding ${binding}`;
  const response = await namespace.get(namespace.idFromName(name)).fetch(url);
  if (response.status !== 200) {
    response.body?.cancel();
    throw `status ${response.status}`;
  }
  return response.text();
}

/** The fast path's wait for a Durable Object (src/fast_path/limit.rs): `askObject`, then
 * its answer back into wasm by request number (`resume` holds the wasm exports). */
export function askObjectThen(env, binding, name, url, resume, id) {
  return askObject(env, binding, name, url).then(
    (text) => resume.limitAnswered(id, text),
    (reason) => resume.limitUnanswered(id, String(reason)),
  );
}

/** The edge's own answer: `status` and a JSON `body`, with `www-authenticate`, `retry-after`
 * and the two rate-limit headers (names from Rust) when their values are given. */
export function respond(status, body, challenge, retryAfter, policyName, policy, rateLimitName, rateLimit) {
  const headers = new Headers({ "content-type": "application/json", "cache-control": "no-store" });
  if (challenge != null) headers.set("www-authenticate", challenge);
  if (retryAfter != null) headers.set("retry-after", retryAfter);
  if (policy != null) headers.set(policyName, policy);
  if (rateLimit != null) headers.set(rateLimitName, rateLimit);
  return new Response(body, { status, headers });
}
