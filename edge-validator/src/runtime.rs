//! What the Workers runtime hands the module: the `env` object (vars, secrets, bindings) and
//! the panic contract of worker-build's generated entry.
//!
//! Why not the `worker` crate (workers-rs): the edge had come to use only its `Env` and this
//! panic hook (the request path is web-sys types and small JS helpers, `js/`), yet linking it
//! kept every `#[wasm_bindgen]` export it has (stream adapters with their futures, container
//! options, R2 ranges, minify config): 13.7 KB of gzipped wasm and 2 KB of JS glue (`gzip -9`
//! of the build output with and without the crate: 152.4 -> 138.7 KB of wasm).
//! The build is still workers-rs's own `worker-build`.
//!
//! worker-build's entry (kept by `js/plain-entry.mjs`) reinstantiates the wasm after a
//! panic when `globalThis.__worker_init_state.criticalError` is set; the `worker` crate
//! sets it from its panic hook. This module does the same, so a panic logs, and the next
//! request gets a fresh instance instead of a poisoned one.

use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};

#[wasm_bindgen(inline_js = "
export const state = globalThis.__worker_init_state = { criticalError: false, instanceId: 0 };
")]
extern "C" {
    type InitState;

    #[wasm_bindgen(thread_local_v2, js_name = state)]
    static INIT_STATE: InitState;

    #[wasm_bindgen(method, setter, js_name = criticalError)]
    fn set_critical_error(this: &InitState, value: bool);

    #[wasm_bindgen(method, getter, js_name = instanceId)]
    fn instance_id(this: &InitState) -> u32;

    #[wasm_bindgen(method, setter, js_name = instanceId)]
    fn set_instance_id(this: &InitState, value: u32);

    /// The Worker's `env`: vars and secrets as strings, bindings as objects.
    #[derive(Debug, Clone)]
    pub type Env;
}

impl Env {
    /// The var or secret `name`, when it is set to a string.
    pub(crate) fn text(&self, name: &str) -> Option<String> {
        js_sys::Reflect::get(self, &JsValue::from_str(name))
            .ok()?
            .as_string()
    }
}

/// Runs once per instance: the panic hook, and the instance count the entry checks.
#[wasm_bindgen(start)]
fn init() {
    std::panic::set_hook(Box::new(|info| {
        web_sys::console::error_1(&format!("Rust panic: {info}").into());
        INIT_STATE.with(|state| state.set_critical_error(true));
    }));
    let instance = INIT_STATE.with(|state| {
        let instance = state.instance_id().wrapping_add(1);
        state.set_instance_id(instance);
        instance
    });
    // Parked ids carry it, so callbacks of an instance that trapped never reach this one.
    crate::parked::set_epoch(instance);
    wasm_bindgen::handler::set_on_abort(wasm_bindgen::handler::schedule_reinit);
}

/// The state object worker-build's entry reads (`checkReinitialize`).
#[wasm_bindgen(js_name = "__worker_init_state")]
pub fn worker_init_state() -> JsValue {
    INIT_STATE.with(|state| state.unchecked_ref::<JsValue>().clone())
}
