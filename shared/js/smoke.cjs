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
assert.throws(() => new Validator(f.jwks, { issuer: "i" }), TypeError);

const rounds = 200;
const t0 = process.hrtime.bigint();
for (let i = 0; i < rounds; i++) v.verify(f.token, f.now);
const perVerify = Number(process.hrtime.bigint() - t0) / rounds / 1e3;
const wasmBytes = fs.statSync(path.join(pkgDir, "shared_bg.wasm")).size;
console.log(`js smoke ok: verify ${perVerify.toFixed(0)} µs/token in Node (p256 in wasm), package wasm ${wasmBytes} bytes`);
