//! What the Workers runtime hands the module (the `env` object: vars, secrets, bindings) and
//! the instance's start: the panic hook and the instance's number.
//!
//! Why not the `worker` crate (workers-rs): the edge had come to use only its `Env` and its
//! panic hook (the request path is web-sys types and small JS helpers, `js/`), yet linking it
//! kept every `#[wasm_bindgen]` export it has (stream adapters with their futures, container
//! options, R2 ranges, minify config), a measurable share of the bundle
//! (docs/performance-history.md has the figures).

use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;

#[wasm_bindgen]
extern "C" {
    /// The Worker's `env`: vars and secrets as strings, bindings as objects.
    #[derive(Debug, Clone)]
    pub type Env;
}

impl crate::isolate::Vars for Env {
    /// A var or secret; `ROUTES` is the bundled table that `ROUTE_TABLE` names, when it names
    /// one (else the var itself, as tests set it).
    fn text(&self, name: &str) -> Option<String> {
        use crate::isolate::config::{ROUTES, ROUTE_TABLE};
        if name == ROUTES {
            if let Some(table) = self.text(ROUTE_TABLE) {
                return super::js::route_table(&table);
            }
        }
        js_sys::Reflect::get(self, &JsValue::from_str(name))
            .ok()?
            .as_string()
    }
}

/// Runs once per wasm instance. A panic logs and aborts (`panic = "abort"`): the instance
/// traps, and the entry (`js/entry.mjs`) starts a new one before the next call. Waits carry
/// the instance's number, so answers to an instance that trapped never reach this one.
#[wasm_bindgen(start)]
fn start() {
    std::panic::set_hook(Box::new(|info| {
        web_sys::console::error_1(&format!("Rust panic: {info}").into());
    }));
    super::set_epoch(super::js::next_instance());
}
