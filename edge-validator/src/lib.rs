//! The Edgeward edge: a Cloudflare Worker in Rust that checks each request's bearer token
//! with `shared`, verifying signatures through WebCrypto, and forwards good requests to the
//! origin with a signed identity header (`x-edgeward-assertion`). Bad tokens never reach the
//! origin.
//!
//! Two halves, and the first never uses the second:
//! - [`isolate`]: the logic, a state machine with no I/O, no clock and no JS, built natively
//!   too, so its unit tests run in milliseconds with an injected clock;
//! - `driver` (wasm32 only): the Worker's exports; it turns each request and each settled
//!   promise into an event for the isolate, and performs what comes back through small JS
//!   functions (`js/`).

pub mod isolate;

#[cfg(target_arch = "wasm32")]
pub mod driver;
