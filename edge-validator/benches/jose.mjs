// The JavaScript peer for benches/run: the same token checks as the edge with `jose`
// (jwtVerify, a local JWKS, ES256 only, at+jwt, issuer, audience, required claims, 30 s
// leeway, 1 h maximum age), then the same forwarding with identity headers.
// FEATURES=full (the jose-full row) adds, written the plain JavaScript way, the two
// per-request features that are platform cost rather than token checks: an in-isolate GCRA
// per client with `RateLimit-Policy`/`RateLimit` on the answer (a fetched response's headers
// are immutable, so it is rebuilt, as the edge does), and one JSON log line per request with
// the edge's fields. It still sends plain identity headers (no signed assertion) and checks
// no revocations, so it stays lighter than the edge.
import { createLocalJWKSet, jwtVerify } from "jose";

let jwks;
let plan;
const BEARER = /^Bearer ([A-Za-z0-9\-._~+/]+=*)$/;
const PLAN = /^(\d+)\/(\d+)s(?:;burst=(\d+))?$/;
/** client_id -> theoretical arrival time in ms (GCRA). */
const arrivals = new Map();

function refuse(status, error) {
  return new Response(JSON.stringify({ error }), {
    status,
    headers: {
      "content-type": "application/json",
      "www-authenticate": `Bearer realm="edgeward", error="${error}"`,
    },
  });
}

/** `"10/1s;burst=5"` as { limit, period, burst, interval } (interval in ms per request). */
function parsePlan(text) {
  const [, limit, period, burst] = PLAN.exec(text);
  return { limit: +limit, period: +period, burst: +(burst ?? limit), interval: (period * 1000) / limit };
}

/** GCRA for `client` at `now`: whether allowed, and the two header values. */
function limitClient(client, claimed, now) {
  const rule = typeof claimed === "string" && PLAN.test(claimed) ? parsePlan(claimed) : plan;
  const tat = Math.max(arrivals.get(client) ?? now, now);
  const next = tat + rule.interval;
  const allowAt = next - rule.interval * rule.burst;
  const allowed = now >= allowAt;
  if (allowed) arrivals.set(client, next);
  const remaining = allowed ? Math.min(Math.floor((now - allowAt) / rule.interval), rule.burst - 1) : 0;
  return {
    allowed,
    policy: `"client";q=${rule.limit};w=${rule.period};burst=${rule.burst}`,
    rateLimit: `"client";r=${remaining};t=${Math.ceil(((allowed ? next : tat) - now) / 1000)}`,
  };
}

export default {
  async fetch(request, env) {
    const full = env.FEATURES === "full";
    const started = full ? Date.now() : 0;
    const match = BEARER.exec(request.headers.get("authorization") ?? "");
    if (!match) return refuse(400, "invalid_request");
    jwks ??= createLocalJWKSet(JSON.parse(env.JWKS_JSON));
    let payload;
    try {
      ({ payload } = await jwtVerify(match[1], jwks, {
        issuer: env.ISSUER,
        audience: env.AUDIENCE,
        algorithms: ["ES256"],
        typ: "at+jwt",
        requiredClaims: ["exp", "iat", "sub", "jti", "client_id"],
        clockTolerance: 30,
        maxTokenAge: 3600,
      }));
    } catch {
      return refuse(401, "invalid_token");
    }
    let limited, verified;
    if (full) {
      verified = Date.now();
      plan ??= parsePlan(env.DEFAULT_RATE_PLAN.replace(/\s/g, ""));
      limited = limitClient(payload.client_id, payload.rate_plan, verified);
      if (!limited.allowed) return refuse(429, "rate_limited");
    }
    const url = new URL(request.url);
    const headers = new Headers(request.headers);
    headers.delete("authorization");
    headers.delete("host");
    headers.set("x-edgeward-sub", payload.sub);
    headers.set("x-edgeward-client-id", payload.client_id);
    const sent = fetch(env.ORIGIN_URL + url.pathname + url.search, {
      method: request.method,
      headers,
      body: request.body,
    });
    if (!full) return sent; // the plain row's path, as before this mode existed
    const fetched = await sent;
    const response = new Response(fetched.body, fetched);
    response.headers.set("ratelimit-policy", limited.policy);
    response.headers.set("ratelimit", limited.rateLimit);
    const now = Date.now();
    console.log(JSON.stringify({
      method: request.method,
      path: url.pathname,
      outcome: "forwarded",
      reason: null,
      status: response.status,
      client: payload.client_id,
      cache_hit: false,
      jwks_ms: verified - started,
      limit_ms: 0,
      limit_source: "isolate",
      origin_ms: now - verified,
      total_ms: now - started,
      jwks: "fresh",
      revocations_age_ms: null,
    }));
    return response;
  },
};
