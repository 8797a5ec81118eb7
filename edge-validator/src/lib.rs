//! The Edgeward edge: a Cloudflare Worker in Rust (wasm-bindgen, built with workers-rs's
//! worker-build) that checks each request's bearer token with `shared`, verifying signatures
//! through WebCrypto, and forwards good requests to the origin with a signed identity header
//! (`x-edgeward-assertion`). Bad tokens never reach the origin.
//!
//! This crate is only a shell: every decision (token rules, rejections, JWKS freshness, the
//! assertion) is `shared`'s; here are the bindings, the fetches and the one error mapping.
//! Natively the crate is empty; it is built for wasm32 with worker-build.

/// `console.error` of a formatted line (Workers Logs).
#[cfg(target_arch = "wasm32")]
macro_rules! console_error {
    ($($arg:tt)*) => { web_sys::console::error_1(&format!($($arg)*).into()) };
}

#[cfg(target_arch = "wasm32")]
mod clock;
#[cfg(target_arch = "wasm32")]
mod config;
#[cfg(target_arch = "wasm32")]
mod error;
#[cfg(target_arch = "wasm32")]
mod forward;
#[cfg(target_arch = "wasm32")]
pub mod handler;
#[cfg(target_arch = "wasm32")]
mod issuer;
#[cfg(target_arch = "wasm32")]
pub mod jobs;
#[cfg(target_arch = "wasm32")]
mod jwks_cache;
// Pure bookkeeping: also built natively so its unit tests run with the workspace's.
#[cfg(any(target_arch = "wasm32", test))]
mod local_table;
// Pure bookkeeping: also built natively so its unit tests run with the workspace's.
#[cfg(any(target_arch = "wasm32", test))]
mod parked;
#[cfg(target_arch = "wasm32")]
mod rate_limit;
#[cfg(target_arch = "wasm32")]
pub mod rate_limit_object;
#[cfg(target_arch = "wasm32")]
mod request_log;
// Pure string handling: also built natively so its unit tests run with the workspace's.
#[cfg(any(target_arch = "wasm32", test))]
mod request_url;
#[cfg(target_arch = "wasm32")]
mod revocations;
#[cfg(target_arch = "wasm32")]
pub mod runtime;
#[cfg(all(target_arch = "wasm32", not(feature = "p256-verify")))]
mod webcrypto;
