// The edge's I/O with the Workers runtime other than forwarding (that is js/forward.js):
// fetches to the issuer, the Cache API, timers, key imports and verifies, the rate-limit
// Durable Objects and the edge's own answers. Each is one call from wasm (bound in
// src/driver/js.rs); every decision stays in Rust. A function that starts a wait returns its
// promise, and the entry's `settle` hands the outcome back to wasm by wait number. (Through the
// `worker` crate's Fetch/Request/Response/Cache/Delay wrappers, awaited in Rust futures, this
// I/O weighed on the wasm bundle and cost a boundary crossing per header: docs/edge.md.)

/** `GET url` (headers `accept` and, if given, `if-none-match` and `authorization`), never following a redirect,
 * aborted after `timeoutMs` counting the body. Resolves to `{status, text, cacheControl, etag}` (`text` only for a
 * 200); rejects with a message when there was no answer. */
export async function fetchText(url, accept, ifNoneMatch, authorization, timeoutMs) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    const headers = { accept };
    if (ifNoneMatch != null) headers["if-none-match"] = ifNoneMatch;
    if (authorization != null) headers.authorization = authorization;
    // A redirect is not followed: the key set and the feed come only from the configured
    // URLs (a 3xx is an answer the job cannot use, and the next URL is tried). Nor is the
    // zone's HTTP cache read: other scripts on the zone can write it (`cache.put` under the
    // issuer's URL, where a cache rule makes JSON cacheable). The tagged copy is the shared tier.
    const response = await fetch(url, {
      headers,
      signal: controller.signal,
      redirect: "manual",
      cache: "no-store",
    });
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

/** `ms` milliseconds (a request polling for another's job). */
export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** `promise` (another request's background wait, settled), or else a timer after
 * `timeoutMs`: the timer is this request's own pending event (workerd cancels a request with
 * nothing of its own pending as hung) and bounds the wait. Followed from this request's
 * event, so the runtime runs what comes next in this request, not in the one that settled
 * `promise`. Resolves either way. */
export function join(promise, timeoutMs) {
  let timer;
  const late = new Promise((resolve) => {
    timer = setTimeout(resolve, timeoutMs);
  });
  const done = () => clearTimeout(timer);
  return Promise.race([promise, late]).then(done, done);
}

/** Keeps `promise` (a background fetch) running after the response: `ctx.waitUntil`. */
export function keep(ctx, promise) {
  ctx.waitUntil(promise);
}

/** The raw P-256 `point` as a WebCrypto verify key. */
export function importKey(point) {
  return crypto.subtle.importKey("raw", point, { name: "ECDSA", namedCurve: "P-256" }, false, ["verify"]);
}

/** `crypto.subtle.verify(...)`. `signature` and `message` are views into wasm memory, not
 * copies: WebCrypto copies its input when called (the spec's "get a copy of the bytes held
 * by"), and workerd does the crypto before `verify` returns (its crypto.c++: "all of our
 * implementations perform the crypto synchronously"), so the views need only last the
 * call. That saves two copies, an ArrayBuffer allocation each. */
export function verify(subtle, algorithm, key, signature, message) {
  return subtle.verify(algorithm, key, signature, message);
}

/** `GET url` on the Durable Object named `name` in `env[binding]`; resolves to the body of a
 * 200, rejects with a message otherwise. */
export async function askObject(env, binding, name, url, timeoutMs) {
  const namespace = env[binding];
  if (!namespace) throw `no Durable Object binding ${binding}`;
  // Every ask settles: one that hangs is given up (the edge then counts in the isolate).
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(`no answer within ${timeoutMs} ms`), timeoutMs);
  });
  try {
    const response = await Promise.race([namespace.get(namespace.idFromName(name)).fetch(url), late]);
    if (response.status !== 200) {
      response.body?.cancel();
      throw `status ${response.status}`;
    }
    return await Promise.race([response.text(), late]);
  } finally {
    clearTimeout(timer);
  }
}

/** What the edge reads of a request, in one crossing: method, URL, `CF-Connecting-IP`,
 * `cf.colo` (when `withColo`), the body's declared length, `DPoP` and, when present,
 * `Authorization`, one per line (none of them can hold a line break: the runtime refuses
 * such header values and URLs). */
export function head(request, withColo) {
  const headers = request.headers;
  const authorization = headers.get("authorization");
  const colo = withColo ? (request.cf?.colo ?? "") : "";
  const ip = headers.get("cf-connecting-ip") ?? "";
  // The body: "" for none, else its declared length ("?" when chunked, without one).
  const body = request.body === null ? "" : (headers.get("content-length") ?? "?");
  const dpop = headers.get("dpop") ?? "";
  const line = `${request.method}\n${request.url}\n${ip}\n${colo}\n${body}\n${dpop}`;
  return authorization === null ? line : `${line}\n${authorization}`;
}

/** The status of the origin's `response`. */
export function status(response) {
  return response.status;
}

/** The edge's own answer: `status` and a JSON `body`, with `www-authenticate`, `retry-after`,
 * the two rate-limit headers (names from Rust) and `dpop-nonce` when their values are given. */
export function respond(status, body, challenge, retryAfter, policyName, policy, rateLimitName, rateLimit, dpopNonce) {
  const headers = new Headers({ "content-type": "application/json", "cache-control": "no-store" });
  if (challenge != null) headers.set("www-authenticate", challenge);
  if (retryAfter != null) headers.set("retry-after", retryAfter);
  if (policy != null) headers.set(policyName, policy);
  if (rateLimit != null) headers.set(rateLimitName, rateLimit);
  if (dpopNonce != null) headers.set("dpop-nonce", dpopNonce);
  return new Response(body, { status, headers });
}

// Wasm instances this isolate has started (module state: it outlives a trapped instance).
let instances = 0;

/** The number of the wasm instance starting now (its waits carry it: src/isolate/waits.rs). */
export function nextInstance() {
  instances += 1;
  return instances;
}
