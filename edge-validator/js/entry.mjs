// The Worker's entry, written by hand: a plain module handler object (no per-request class
// or proxy) around the wasm exports that edge-validator/build-worker generates with
// wasm-bindgen (`--target web`, bundled by esbuild under the name `edgeward-wasm`).
//
// Every wait of the edge is a promise that `settle` hands back to the one `resume` export,
// by wait number: a new kind of wait needs nothing here. It is a variant of `Io` (with its
// `Answer` and `Expect`) in src/isolate/io.rs, which the compiler then asks for in every
// match (the isolate's continuation, the driver's start and read), and a function in
// js/io.js that returns its promise.
//
// A panic traps the wasm instance (`panic = "abort"`): the call that trapped fails (its
// request gets a 500), and the next call first starts a new instance (wasm-bindgen's
// `__wbg_reset_state`, generated with `--experimental-reset-state-function`), so no request
// meets a poisoned one. The reset comes before the call, not inside it: the glue passes some
// arguments through the old instance's memory before its own guard would run.
import wasmModule from "./index_bg.wasm";
import * as wasm from "edgeward-wasm";
import { callsServed, rateLimiterClass } from "./rate-limiter.js";

wasm.initSync({ module: wasmModule });

let trapped = false;

/** Starts a new instance if the last call trapped. */
function recover() {
  if (trapped) {
    trapped = false;
    wasm.__wbg_reset_state();
  }
}

/** Notes a trap (`error` thrown by a wasm call) before passing it on. */
function trap(error) {
  if (error instanceof WebAssembly.RuntimeError) trapped = true;
  return error;
}

function handle(request, env, ctx) {
  recover();
  try {
    return wasm.handle(request, env, ctx, settle);
  } catch (error) {
    throw trap(error);
  }
}

function resume(id, ok, value) {
  recover();
  try {
    return wasm.resume(id, ok, value);
  } catch (error) {
    throw trap(error);
  }
}

function rateLimiterAnswer(url, stored, book) {
  recover();
  try {
    return wasm.rateLimiterAnswer(url, stored, book);
  } catch (error) {
    throw trap(error);
  }
}

function replayEntries(url) {
  recover();
  try {
    return wasm.replayEntries(url);
  } catch (error) {
    throw trap(error);
  }
}

/** Hands `promise`'s outcome to wasm under wait number `id`; the promise of what wasm
 * answers (a Response, the next wait's promise, or nothing for a background step). */
function settle(promise, id) {
  return promise.then(
    (value) => resume(id, true, value),
    (error) => resume(id, false, String(error)),
  );
}

export default {
  // Not async: wasm answers with a Response or the promise of one, and awaiting it here
  // would add a promise and a microtask to every request.
  fetch(request, env, ctx) {
    // Benchmarks and tests only (deploy/check refuses it in wrangler.toml): how many calls
    // this isolate's rate-limit objects answered. A suffix test, not a URL parse: the rows
    // that set it must not pay for it on every request (a query string ending in the path
    // matches too, which a benchmark's own requests never have).
    const calls = env.BENCH_LIMITER_CALLS_PATH;
    if (calls && request.url.endsWith(calls)) {
      return new Response(String(callsServed()));
    }
    return handle(request, env, ctx);
  },
};

export const RateLimiter = rateLimiterClass(rateLimiterAnswer, replayEntries);
