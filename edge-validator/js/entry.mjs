// The Worker's entry, written by hand: a plain module handler object (no per-request class
// or proxy) around the wasm exports that edge-validator/build-worker generates with
// wasm-bindgen (`--target web`, bundled by esbuild under the name `edgeward-wasm`).
//
// Every wait of the edge is a promise that `settle` hands back to the one `resume` export,
// by wait number: a new kind of wait needs a function in js/io.js and a variant in
// src/isolate/io.rs, and nothing here.
//
// A panic traps the wasm instance; wasm-bindgen's glue (`--experimental-reset-state-function`
// with the abort handler src/driver/runtime.rs installs) then starts a new instance at the
// next call, so the next request does not meet a poisoned one.
import wasmModule from "./index_bg.wasm";
import { initSync, handle, resume, rateLimiterCheck } from "edgeward-wasm";
import { rateLimiterClass } from "./rate-limiter.js";

initSync({ module: wasmModule });

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
    return handle(request, env, ctx, settle);
  },
};

export const RateLimiter = rateLimiterClass(rateLimiterCheck);
