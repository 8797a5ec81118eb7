//! HMAC-SHA256, keyed and finished in one place each. The assertion, the key-set copy and
//! the DPoP nonces key and tag through these two functions, so the edge's wasm holds one copy
//! of HMAC's key schedule and of its finalisation, where inlining put one at every use.
//! Neither is on a path where a call costs anything measurable.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// HMAC-SHA256.
pub(crate) type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 keyed by `secret`.
#[inline(never)]
pub(crate) fn keyed(secret: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    HmacSha256::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
}

/// The tag of `parts`, one after the other, under `keyed` (an HMAC already keyed, and
/// perhaps fed).
#[inline(never)]
pub(crate) fn finish(mut keyed: HmacSha256, parts: &[&[u8]]) -> [u8; 32] {
    for part in parts {
        keyed.update(part);
    }
    keyed.finalize().into_bytes().into()
}
