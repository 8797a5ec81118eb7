// The edge-assertion conformance vectors (shared/tests/assertion-vectors.json) against the
// wasm-pack package's AssertionVerifier, loaded as an npm user would.
// Usage: node assertion-vectors.cjs PKG_DIR VECTORS_JSON
"use strict";
const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");

const [pkgDir, vectorsPath] = process.argv.slice(2);
const { AssertionVerifier } = require(path.resolve(pkgDir));
const file = JSON.parse(fs.readFileSync(vectorsPath, "utf8"));

const verifier = new AssertionVerifier(file.keys, { maxAgeMs: file.max_age_ms });
const wrong = [];
for (const vector of file.vectors) {
  // A vector with origin_host is for a verifier configured with its own host.
  const check = vector.origin_host === undefined ? verifier
    : new AssertionVerifier(file.keys, { maxAgeMs: file.max_age_ms, host: vector.origin_host });
  let got;
  try {
    got = { verdict: "accept", identity: check.verify(vector.headers, vector.request, vector.now_ms) };
  } catch (e) {
    if (e.name !== "AssertionRejected") throw e;
    assert.equal(e.status, 401);
    got = { verdict: "reject", reason: e.reason };
  }
  try {
    assert.deepStrictEqual(got, vector.expect);
  } catch {
    wrong.push(`${vector.name}: expected ${JSON.stringify(vector.expect)}, got ${JSON.stringify(got)}`);
  }
}
if (wrong.length) {
  console.error(wrong.join("\n"));
  process.exit(1);
}
// A single string is one value, as Node's req.headers gives it.
const good = file.vectors.find((v) => v.name === "good");
assert.equal(verifier.verify(good.headers[0], good.request, good.now_ms).sub, "user-42");
// Misspelt options and short secrets fail loudly.
assert.throws(() => new AssertionVerifier(file.keys, { maxAge: 1 }), TypeError);
assert.throws(() => new AssertionVerifier([{ id: "k", secret: "short" }]), TypeError);
assert.throws(() => verifier.verify([], { method: "GET", host: "h", path: "/", extra: 1 }, 0), TypeError);

// The Node example origin (examples/origin-node) on a real socket: a fresh assertion made
// here with node:crypto passes and echoes the identity; the same for another path is 401.
async function example() {
  process.env.EDGEWARD_SHARED = path.resolve(pkgDir);
  const { server } = require("../../examples/origin-node/server.cjs");
  const app = server(verifier);
  await new Promise((resolve) => app.listen(0, "127.0.0.1", resolve));
  const host = `127.0.0.1:${app.address().port}`;
  const key = file.keys[0];
  const now = Date.now();
  const identity = { ...good.expect.identity, host, ts: now, exp: Math.floor(now / 1000) + 300 };
  const signed = `v2.${key.id}.${Buffer.from(JSON.stringify(identity)).toString("base64url")}`;
  const mac = require("node:crypto").createHmac("sha256", key.secret).update(signed).digest("base64url");
  const headers = { "x-edgeward-assertion": `${signed}.${mac}` };
  try {
    const ok = await fetch(`http://${host}${identity.path}`, { headers });
    assert.equal(ok.status, 200);
    assert.deepEqual(await ok.json(), identity);
    const other = await fetch(`http://${host}/admin`, { headers });
    assert.equal(other.status, 401);
    assert.equal((await other.json()).reason, "assertion_path_mismatch");
    assert.match(other.headers.get("www-authenticate"), /error="invalid_token"/);
  } finally {
    app.close();
  }
}
example().then(
  () => console.log(`assertion vectors ok under Node ${process.version}: ${file.vectors.length} vectors; the example origin admits and refuses`),
  (e) => { console.error(e); process.exit(1); },
);
