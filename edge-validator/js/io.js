// The edge's I/O with the Workers runtime other than forwarding (that is js/forward.js):
// fetches to the issuer, the Cache API, timers, key imports, the rate-limit Durable Objects
// and the edge's own answers. Each is one call from wasm (bound in src/issuer.rs,
// jwks_cache.rs, handler/prepare.rs, rate_limit.rs and error.rs); every decision stays in
// Rust. The `...Then` functions are the waits: the result goes back into wasm by number
// through `resume` (the object of wasm exports js/plain-entry.mjs makes), and the promise
// resolves to whatever that call returns (the request's response, or the next wait). None
// of them throws: every failure is a callback too. Doing this I/O through the `worker`
// crate's Fetch/Request/Response/Cache/Delay wrappers, and awaiting it in Rust futures, cost
// about a third of the wasm bundle (measured with benches/size-breakdown) and a boundary
// crossing per header.

/** `GET url` (headers `accept` and, if given, `if-none-match`), never following a redirect,
 * aborted after `timeoutMs` counting the body. Resolves to `{status, text, cacheControl, etag}` (`text` only for a
 * 200); rejects with a message when there was no answer. */
export async function fetchText(url, accept, ifNoneMatch, timeoutMs) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    const headers = { accept };
    if (ifNoneMatch != null) headers["if-none-match"] = ifNoneMatch;
    // A redirect is not followed: the key set and the feed come only from the configured
    // URLs (a 3xx is an answer the job cannot use, and the next URL is tried).
    const response = await fetch(url, { headers, signal: controller.signal, redirect: "manual" });
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

// The Cache API copy of the key set: the set in use, kept `keepSecs`, with when the issuer
// gave it, the issuer's own `Cache-Control` and `ETag`, and an HMAC tag over all of them
// (made and checked in Rust: the cache is shared with every script on the zone).
const FETCHED_AT = "x-edgeward-fetched-at";
const ISSUER_CACHE_CONTROL = "x-edgeward-issuer-cache-control";
const MAC = "x-edgeward-copy-mac";

/** The copy under `key` as `{text, fetchedAt, cacheControl, etag, mac}`, or null. */
export async function cacheGet(key) {
  const response = await caches.default.match(key);
  if (!response) return null;
  return {
    text: await response.text(),
    fetchedAt: response.headers.get(FETCHED_AT),
    cacheControl: response.headers.get(ISSUER_CACHE_CONTROL),
    etag: response.headers.get("etag"),
    mac: response.headers.get(MAC),
  };
}

/** Stores the copy under `key`, kept alive past the response by `ctx.waitUntil`; a failure
 * is logged (the isolate has the set; only the next isolate misses the copy). */
export function cachePut(ctx, key, text, keepSecs, fetchedAt, cacheControl, etag, mac) {
  const headers = new Headers({
    "content-type": "application/json",
    "cache-control": `public, max-age=${keepSecs}`,
    [FETCHED_AT]: String(fetchedAt),
    [MAC]: mac,
  });
  if (cacheControl != null) headers.set(ISSUER_CACHE_CONTROL, cacheControl);
  if (etag != null) headers.set("etag", etag);
  const stored = caches.default.put(key, new Response(text, { headers })).catch((error) =>
    console.warn(JSON.stringify({ event: "jwks_cache_put_failed", reason: String(error) })),
  );
  ctx.waitUntil(stored);
}

/** A wait for an issuer fetch (src/jobs.rs): `fetchText`, then `issuerAnswered(id, answer)`
 * or `issuerUnanswered(id, reason)`. */
export function fetchThen(url, accept, ifNoneMatch, timeoutMs, resume, id) {
  return fetchText(url, accept, ifNoneMatch, timeoutMs).then(
    (answer) => resume.issuerAnswered(id, answer),
    (reason) => resume.issuerUnanswered(id, String(reason)),
  );
}

/** A wait for the Cache API copy: `cacheGet`, then `copyAnswered(id, copy or null)` (a
 * failure is logged and counts as no copy). */
export function cacheGetThen(key, resume, id) {
  return cacheGet(key).then(
    (copy) => resume.copyAnswered(id, copy),
    (error) => {
      console.warn(JSON.stringify({ event: "jwks_cache_get_failed", reason: String(error) }));
      return resume.copyAnswered(id, null);
    },
  );
}

/** `ms` milliseconds, then `waitOver(id)` (a request polling for another's fetch). */
export function sleepThen(ms, resume, id) {
  return new Promise((resolve) => setTimeout(resolve, ms)).then(() => resume.waitOver(id));
}

/** Keeps `promise` (a background fetch) running after the response: `ctx.waitUntil`. */
export function keep(ctx, promise) {
  ctx.waitUntil(promise);
}

/** A wait for a key import: the raw P-256 `point` as a WebCrypto verify key, then
 * `keyImported(id, key)` or `keyNotImported(id, reason)`. */
export function importThen(point, resume, id) {
  return crypto.subtle
    .importKey("raw", point, { name: "ECDSA", namedCurve: "P-256" }, false, ["verify"])
    .then(
      (key) => resume.keyImported(id, key),
      (reason) => resume.keyNotImported(id, String(reason)),
    );
}

/** `GET url` on the Durable Object named `name` in `env[binding]`; resolves to the body of a
 * 200, rejects with a message otherwise. */
async function askObject(env, binding, name, url) {
  const namespace = env[binding];
  if (!namespace) throw `no Durable Object binding ${binding}`;
  const response = await namespace.get(namespace.idFromName(name)).fetch(url);
  if (response.status !== 200) {
    response.body?.cancel();
    throw `status ${response.status}`;
  }
  return response.text();
}

/** The wait for a Durable Object (src/handler/limit.rs): `askObject`, then
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
