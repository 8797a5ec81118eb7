// Post-build step of edge-validator/build-worker: replaces the entry worker-build 0.8.7
// generates (a Proxy around a WorkerEntrypoint class, constructed anew for every request) with
// a plain module handler object. Same wasm, same panic recovery (checkReinitialize and
// handleMaybeCritical are the generated shim's own); measured with benches/run, the class and
// proxies cost about 30 us of CPU per request, a third of the whole cache-hit path.
// Usage: node plain-entry.mjs build/index.js (an unminified bundle: NO_MINIFY=1).
import { readFileSync, writeFileSync } from "node:fs";

const path = process.argv[2];
let source = readFileSync(path, "utf8");
// The rate-limit Durable Object's class (js/rate-limiter.js), inlined below.
const rateLimiter = readFileSync(new URL("./rate-limiter.js", import.meta.url), "utf8");

const proxied = "var shim_default = new Proxy(Entrypoint, classProxyHooks);";
for (const name of ["checkReinitialize", "handleMaybeCritical"]) {
  if (!source.includes(`function ${name}(`)) throw new Error(`${path}: no ${name}; worker-build changed?`);
}
if (!source.includes(proxied)) {
  throw new Error(`${path}: the generated entry is not the expected worker-build 0.8.7 shape`);
}
/** The bundle's local name of the wasm export `name` (worker-build puts each on the class). */
function exported(name, optional = false) {
  const found = source.match(new RegExp(`Entrypoint\\.prototype\\.${name} = (\\w+);`));
  if (!found && !optional) throw new Error(`${path}: no ${name} export`);
  return found?.[1];
}
// The request path (src/handler.rs): a response or the promise of one.
const handle = exported("handle");
// The exports its promises call back by number (src/handler.rs and its modules, src/jobs.rs,
// js/forward.js, js/io.js). A build with the pure-Rust p256 backend has no WebCrypto waits,
// so no key or token callbacks.
const callbacks = ["originAnswered", "originUnreachable", "forwardFailed", "limitAnswered", "limitUnanswered",
  "issuerAnswered", "issuerUnanswered", "copyAnswered", "waitOver",
  "keyImported?", "keyNotImported?", "tokenVerified?", "tokenNotVerified?"];
// Each wrapped with the entry's panic recovery: a callback runs in a promise reaction, after
// fetch has returned (and a background job's outside any request).
const resume = callbacks.flatMap((callback) => {
  const name = callback.replace("?", "");
  const local = exported(name, callback.endsWith("?"));
  return local ? [`${name}: recovering(${local})`] : [];
});
const objectCheck = exported("rateLimiterCheck");
const exportsEnd = "  shim_default as default\n};";
if (!source.includes(exportsEnd)) throw new Error(`${path}: no default export where expected`);
source = source.replace(
  proxied,
  `// edgeward (edge-validator/js/plain-entry.mjs): a plain handler object, no per-request class.
// Not async: the handler answers with a Response or the promise of one, and awaiting it here
// would add a promise and a microtask to every request. A panic in a later step is caught
// by that step's callback instead (recovering).
function recovering(callback) {
  return (id, value) => {
    try {
      return callback(id, value);
    } catch (e) {
      handleMaybeCritical(e);
      throw e;
    }
  };
}
const resume = { ${resume.join(", ")} };
var shim_default = {
  fetch(request, env, ctx) {
    checkReinitialize();
    try {
      return ${handle}(request, env, ctx, resume);
    } catch (e) {
      handleMaybeCritical(e);
      throw e;
    }
  },
};
${rateLimiter}
// The Durable Object's wasm call, with the generated entry's panic recovery.
var RateLimiter = rateLimiterClass((url, stored) => {
  checkReinitialize();
  try {
    return ${objectCheck}(url, stored);
  } catch (e) {
    handleMaybeCritical(e);
    throw e;
  }
});`,
);
source = source.replace(exportsEnd, `  RateLimiter,\n${exportsEnd}`);
writeFileSync(path, source);
