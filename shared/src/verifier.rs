//! Signature backends. The core decides everything else; a backend only answers "does this
//! ES256 signature verify under this key?".
//!
//! Two traits because the two real backends differ in kind: pure-Rust `p256` is synchronous,
//! WebCrypto (`crypto.subtle.verify` in the Worker) returns a promise. Every synchronous
//! verifier is also an asynchronous one.

use core::future::Future;

use crate::jwks::Jwk;
use crate::token::SIGNATURE_LEN;

/// The backend could not run (not "the signature is wrong", which is `Ok(false)`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("signature backend failed: {detail}")]
pub struct BackendError {
    /// What the backend reported, for logs (never token content).
    pub detail: String,
}

/// A synchronous ES256 verifier.
pub trait SignatureVerifier {
    /// Whether `signature` (raw `R || S`) is valid for `message` under `key`.
    ///
    /// # Errors
    /// [`BackendError`] when the backend itself failed.
    fn verify_es256(
        &self,
        key: &Jwk,
        message: &[u8],
        signature: &[u8; SIGNATURE_LEN],
    ) -> Result<bool, BackendError>;
}

/// An asynchronous ES256 verifier, such as WebCrypto.
pub trait AsyncSignatureVerifier {
    /// Whether `signature` (raw `R || S`) is valid for `message` under `key`.
    ///
    /// The future need not be `Send`: the Workers runtime is single-threaded.
    fn verify_es256(
        &self,
        key: &Jwk,
        message: &[u8],
        signature: &[u8; SIGNATURE_LEN],
    ) -> impl Future<Output = Result<bool, BackendError>>;
}

impl<T: SignatureVerifier + ?Sized> AsyncSignatureVerifier for T {
    fn verify_es256(
        &self,
        key: &Jwk,
        message: &[u8],
        signature: &[u8; SIGNATURE_LEN],
    ) -> impl Future<Output = Result<bool, BackendError>> {
        core::future::ready(SignatureVerifier::verify_es256(
            self, key, message, signature,
        ))
    }
}

/// The pure-Rust backend (RustCrypto `p256`), for native code and any wasm host.
#[cfg(feature = "p256-backend")]
#[derive(Debug, Clone, Copy, Default)]
pub struct P256Verifier;

#[cfg(feature = "p256-backend")]
impl SignatureVerifier for P256Verifier {
    fn verify_es256(
        &self,
        key: &Jwk,
        message: &[u8],
        signature: &[u8; SIGNATURE_LEN],
    ) -> Result<bool, BackendError> {
        use p256::ecdsa::signature::Verifier as _;
        // Zero or out-of-range `R`/`S` fail to parse: that is a bad signature, not an error.
        let Ok(signature) = p256::ecdsa::Signature::from_slice(signature) else {
            return Ok(false);
        };
        Ok(key.verifying_key().verify(message, &signature).is_ok())
    }
}
