// Loads the wasm-pack package (target nodejs) the way an npm user would and checks one good
// and one bad token from the Rust fixtures. Usage: node smoke.cjs PKG_DIR FIXTURES_JSON
"use strict";
const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");

const [pkgDir, fixturesPath] = process.argv.slice(2);
const { Validator } = require(path.resolve(pkgDir));
const f = JSON.parse(fs.readFileSync(fixturesPath, "utf8"));

const v = new Validator(f.jwks, { issuer: f.issuer, audience: f.audience });
assert.deepEqual(v.keyIds(), ["fixture-1", "fixture-2"]);

const claims = v.verify(f.token, f.now);
assert.equal(claims.sub, "user-42");
assert.equal(claims.client_id, "client-7");
assert.equal(claims.scope, "read write");

assert.throws(() => v.verify(f.expired, f.now), (e) =>
  e.name === "TokenRejected" && e.code === "expired" && e.error === "invalid_token" && e.status === 401);
assert.throws(() => v.verify("garbage", f.now), (e) => e.code === "malformed");
// A DPoP-bound token is no bearer token: the package checks no proof, so it refuses one.
assert.throws(() => v.verify(f.bound, f.now), (e) =>
  e.code === "bound_token_as_bearer" && e.error === "invalid_token" && e.status === 401);
assert.throws(() => new Validator(f.jwks, { issuer: "i" }), TypeError);

// Side by side: the package's full verify (p256 compiled to wasm) against WebCrypto's ECDSA
// verify alone for the same token and key, one at a time, as the edge would do it.
async function compare() {
  const rounds = 300;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < rounds; i++) v.verify(f.token, f.now);
  const wasmUs = Number(process.hrtime.bigint() - t0) / rounds / 1e3;

  const jwk = JSON.parse(f.jwks).keys[0];
  const key = await crypto.subtle.importKey("jwk", { kty: "EC", crv: "P-256", x: jwk.x, y: jwk.y },
    { name: "ECDSA", namedCurve: "P-256" }, false, ["verify"]);
  const dot = f.token.lastIndexOf(".");
  const data = Buffer.from(f.token.slice(0, dot), "ascii");
  const sig = Buffer.from(f.token.slice(dot + 1), "base64url");
  const alg = { name: "ECDSA", hash: "SHA-256" };
  assert.equal(await crypto.subtle.verify(alg, key, sig, data), true);
  const t1 = process.hrtime.bigint();
  for (let i = 0; i < rounds; i++) await crypto.subtle.verify(alg, key, sig, data);
  const webUs = Number(process.hrtime.bigint() - t1) / rounds / 1e3;

  const wasmBytes = fs.statSync(path.join(pkgDir, "shared_bg.wasm")).size;
  console.log(`js smoke ok (package wasm ${wasmBytes} bytes). Node ${process.version}, ${rounds} rounds:`);
  console.log(`  @edgeward/shared verify (p256 in wasm): ${wasmUs.toFixed(0)} µs/token`);
  console.log(`  WebCrypto ECDSA P-256 verify alone:      ${webUs.toFixed(0)} µs/token`);
  console.log(`  ratio: ${(wasmUs / webUs).toFixed(1)}x`);
}
compare().catch((e) => { console.error(e); process.exit(1); });
