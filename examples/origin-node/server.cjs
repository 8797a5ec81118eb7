// A Node origin behind the Edgeward edge, with node:http only: every path but /healthz needs
// the edge's assertion, checked by @edgeward/shared's AssertionVerifier, and echoes the
// verified identity. Settings as demo-origin: DEMO_ORIGIN_LISTEN (host:port), ORIGIN_HOST (this
// origin's name as the edge's ORIGIN_URL gives it; without it the request's Host header, which
// the sender chooses, stands in), ASSERTION_KEY_ID, ASSERTION_SECRET, and during a rotation
// ASSERTION_PREVIOUS_KEY_ID/ASSERTION_PREVIOUS_SECRET.
// EDGEWARD_SHARED names the package if it is not installed (the repository's tests point it
// at target/wasm-pkg). docs/origins.md explains each rule.
"use strict";
const http = require("node:http");
const { AssertionVerifier } = require(process.env.EDGEWARD_SHARED || "@edgeward/shared");

/** The request handler: `verifier` decides, `next(req, res, identity)` answers. */
function edgeAuth(verifier, next) {
  return (req, res) => {
    // The request target as sent: the assertion binds the raw path and query, never a
    // decoded or normalised one.
    const target = req.url;
    const at = target.indexOf("?");
    const request = {
      method: req.method,
      host: req.headers.host ?? "",
      path: at < 0 ? target : target.slice(0, at),
      query: at < 0 ? null : target.slice(at + 1),
    };
    let identity;
    try {
      // headersDistinct keeps repeated headers apart (req.headers would join them).
      identity = verifier.verify(req.headersDistinct["x-edgeward-assertion"], request, Date.now());
    } catch (e) {
      if (e.name !== "AssertionRejected") {
        // Not the client's fault, and no reason to take the process down: 500, logged.
        console.error(JSON.stringify({ event: "assertion_check_failed", error: String(e) }));
        res.writeHead(500).end();
        return;
      }
      // The reason, never the header's value: an assertion is a credential for ten seconds.
      console.error(JSON.stringify({ event: "assertion_refused", reason: e.reason, method: req.method, path: request.path }));
      res.writeHead(401, {
        "content-type": "application/json",
        "www-authenticate": 'Bearer realm="edgeward-origin", error="invalid_token"',
      });
      res.end(JSON.stringify({ error: "invalid_token", error_description: e.message, reason: e.reason }));
      return;
    }
    next(req, res, identity);
  };
}

function keysFromEnv(env) {
  const keys = [];
  for (const [idVar, secretVar] of [["ASSERTION_KEY_ID", "ASSERTION_SECRET"],
    ["ASSERTION_PREVIOUS_KEY_ID", "ASSERTION_PREVIOUS_SECRET"]]) {
    if (!env[idVar] !== !env[secretVar]) throw new Error(`set both ${idVar} and ${secretVar}, or neither`);
    if (keys.some((key) => key.id === env[idVar])) throw new Error(`${idVar} must differ from ASSERTION_KEY_ID`);
    if (env[idVar]) keys.push({ id: env[idVar], secret: env[secretVar] });
  }
  return keys;
}

function server(verifier) {
  const protectedRoutes = edgeAuth(verifier, (req, res, identity) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(identity));
  });
  return http.createServer((req, res) => {
    if (req.url === "/healthz") return res.end("ok");
    protectedRoutes(req, res);
  });
}

module.exports = { edgeAuth, server };

if (require.main === module) {
  const verifier = new AssertionVerifier(keysFromEnv(process.env),
    { maxAgeMs: 10000, host: process.env.ORIGIN_HOST || undefined });
  if (!process.env.ORIGIN_HOST) {
    // The Host header then stands in, and the sender chooses it (docs/origins.md).
    console.error(JSON.stringify({ event: "origin_host_unset", detail: "set ORIGIN_HOST to this origin's name" }));
  }
  const listen = process.env.DEMO_ORIGIN_LISTEN || "127.0.0.1:9090";
  const at = listen.lastIndexOf(":");
  const app = server(verifier);
  app.listen(Number(listen.slice(at + 1)), listen.slice(0, at), () => {
    console.log(JSON.stringify({ event: "listening", port: app.address().port }));
  });
}
