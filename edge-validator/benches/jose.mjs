// The JavaScript peer for benches/run: the same token checks as the edge with `jose`
// (jwtVerify, a local JWKS, ES256 only, at+jwt, issuer, audience, required claims, 30 s
// leeway, 1 h maximum age), then the same forwarding with identity headers.
import { createLocalJWKSet, jwtVerify } from "jose";

let jwks;
const BEARER = /^Bearer ([A-Za-z0-9\-._~+/]+=*)$/;

function refuse(status, error) {
  return new Response(JSON.stringify({ error }), {
    status,
    headers: {
      "content-type": "application/json",
      "www-authenticate": `Bearer realm="edgeward", error="${error}"`,
    },
  });
}

export default {
  async fetch(request, env) {
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
    const url = new URL(request.url);
    const headers = new Headers(request.headers);
    headers.delete("authorization");
    headers.delete("host");
    headers.set("x-edgeward-sub", payload.sub);
    headers.set("x-edgeward-client-id", payload.client_id);
    return fetch(env.ORIGIN_URL + url.pathname + url.search, {
      method: request.method,
      headers,
      body: request.body,
    });
  },
};
