//! One exported function whose body pulls in one layer of `shared`, so the linked size of
//! that layer can be measured. Input comes from a static buffer: only the code size matters.
#![allow(unsafe_code)]

use shared::{UnixTime, Validation};

static INPUT: [u8; 4096] = [0; 4096];

/// Runs the selected layer over `len` bytes of input.
#[no_mangle]
pub extern "C" fn run(len: usize, now_ms: u64) -> u32 {
    let text = core::str::from_utf8(INPUT.get(..len).unwrap_or(&[])).unwrap_or("");
    let now = UnixTime::from_millis(now_ms);
    let validation = Validation::new("issuer", "audience");
    layer(text, &validation, now)
}

/// Compact-JWS parsing and header checks only.
#[cfg(feature = "parse")]
fn layer(text: &str, validation: &Validation, _now: UnixTime) -> u32 {
    shared::UntrustedToken::parse(text, validation).map_or(0, |token| token.kid().len() as u32)
}

/// JWKS parsing (with the on-curve check) plus every token check but the signature:
/// what the edge links when WebCrypto verifies.
#[cfg(feature = "check")]
fn layer(text: &str, validation: &Validation, now: UnixTime) -> u32 {
    let Ok(jwks) = shared::Jwks::parse(text) else { return 0 };
    let validator = shared::Validator::new(validation.clone());
    validator.check(text, &jwks, now).map_or(0, |check| u32::from(check.signature()[0]))
}

/// Everything, with the pure-Rust p256 ECDSA backend.
#[cfg(feature = "verify")]
fn layer(text: &str, validation: &Validation, now: UnixTime) -> u32 {
    let Ok(jwks) = shared::Jwks::parse(text) else { return 0 };
    let validator = shared::Validator::new(validation.clone());
    validator.verify(text, &jwks, now).map_or(0, |token| token.claims().exp as u32)
}
