// Post-build step of edge-validator/build-worker: replaces the entry worker-build 0.8.7
// generates (a Proxy around a WorkerEntrypoint class, constructed anew for every request) with
// a plain module handler object. Same wasm, same panic recovery (checkReinitialize and
// handleMaybeCritical are the generated shim's own); measured with benches/run, the class and
// proxies cost about 30 us of CPU per request, a third of the whole cache-hit path.
// Usage: node plain-entry.mjs build/index.js (an unminified bundle: NO_MINIFY=1).
import { readFileSync, writeFileSync } from "node:fs";

const path = process.argv[2];
let source = readFileSync(path, "utf8");

const handler = source.match(
  /Entrypoint\.prototype\.fetch = function \w+\(arg\) \{\n\s*return (\w+)\.call\(this, arg, this\.env, this\.ctx\);\n\};/,
);
const proxied = "var shim_default = new Proxy(Entrypoint, classProxyHooks);";
for (const name of ["checkReinitialize", "handleMaybeCritical"]) {
  if (!source.includes(`function ${name}(`)) throw new Error(`${path}: no ${name}; worker-build changed?`);
}
if (!handler || !source.includes(proxied)) {
  throw new Error(`${path}: the generated entry is not the expected worker-build 0.8.7 shape`);
}
const wasmFetch = handler[1];
// The synchronous fast path (src/fast_path.rs), exported beside the handler.
const fast = source.match(/Entrypoint\.prototype\.fastFetch = (\w+);/);
if (!fast) throw new Error(`${path}: no fastFetch export`);
const fastFetch = fast[1];
// The exports its promises call back by request number (src/fast_path.rs, js/forward.js, js/io.js).
// (A build with the pure-Rust p256 backend has no WebCrypto wait, so no token callbacks.)
const callbacks = ["originAnswered", "originUnreachable", "forwardFailed", "limitAnswered", "limitUnanswered",
  "tokenVerified?", "tokenNotVerified?"];
const resume = callbacks.flatMap((callback) => {
  const name = callback.replace("?", "");
  const found = source.match(new RegExp(`Entrypoint\\.prototype\\.${name} = (\\w+);`));
  if (!found && !callback.endsWith("?")) throw new Error(`${path}: no ${name} export`);
  return found ? [`${name}: ${found[1]}`] : [];
});
source = source.replace(
  proxied,
  `// edgeward (edge-validator/js/plain-entry.mjs): a plain handler object, no per-request class.
const resume = { ${resume.join(", ")} };
var shim_default = {
  async fetch(request, env, ctx) {
    checkReinitialize();
    try {
      // A response or a promise of one when the fast path takes the request, else undefined.
      const fast = ${fastFetch}(request, env, resume);
      return await (fast === undefined ? ${wasmFetch}(request, env, ctx) : fast);
    } catch (e) {
      handleMaybeCritical(e);
      throw e;
    }
  },
};`,
);
writeFileSync(path, source);
