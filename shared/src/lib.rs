//! Edgeward's token core: everything that decides whether a token is good (bearer, or bound
//! to a DPoP key with its proof), with no
//! I/O, no clock and no randomness, so the same code runs in the issuer's tests, at the edge
//! (wasm32 in a Worker), in resource APIs and in any JS runtime.
//!
//! - [`jwks`]: the key set, P-256 signing keys only, parsed and published by the same code.
//! - [`jwks_refresh`]: when the edge (re)fetches its key set: freshness, unknown-`kid`
//!   cooldown, max-stale.
//! - [`token`]: compact JWS access tokens (RFC 9068 profile), ES256 pinned. Untrusted text
//!   becomes a [`VerifiedToken`] only through [`Validator`], in two steps (cheap checks, then
//!   the signature through a [`verifier`] backend, sync or async).
//! - [`claims`]: the claims and the [`Validation`] rules; time is always an argument.
//! - [`dpop`]: DPoP proofs (RFC 9449): the proof's own key, its request, its time, and the
//!   token it goes with.
//! - [`rejection`]: the one [`Rejection`] enum and its RFC 6750 (and RFC 9449) mapping.
//! - [`cache`]: verified tokens by hash, so a repeated token skips crypto.
//! - [`keyset_copy`]: the MAC that keeps the edge's shared-cache copy of its key set honest.
//! - [`rate_limit`]: GCRA over stored state, and the rate-plan claim format.
//! - [`revocations`]: the edge's copy of the issuer's revocation feed.
//! - [`path`]: request paths in their one normal spelling, refusing ambiguous ones.
//! - [`route`]: the edge's route table: per path, what a token needs and where it goes.
//! - [`json`]: the strict reader every untrusted JSON document goes through.
//! - [`assertion`]: the HMAC-signed identity the edge hands to origins.
//! - `origin` (feature `axum`): the tower layer and extractor origins mount.
//! - `js` (feature `js`): the wasm-bindgen API of the npm package.
//!
//! Why the compact-JWS layer is written here rather than taken from `jwt-compact` (which the
//! issuer uses to sign, and the tests use as an independent signer): its verification is a
//! synchronous `Algorithm` trait, so WebCrypto cannot plug in; its parser has no size cap,
//! honours `cty: cbor`, and does not surface `crit`, `jwk` or `x5c` for refusal; and its
//! claims use `chrono`. The layer is small (split, strict base64url via `base64ct`, the
//! strict JSON reader in [`json`], which says why it is not serde's); the cryptography is
//! RustCrypto's (`p256`, `sha2`, `hmac`).
//!
//! ```
//! use shared::{Jwks, Rejection, UnixTime, Validation, Validator};
//!
//! let jwks = Jwks::parse(r#"{"keys":[]}"#)?;
//! let validator = Validator::new(Validation::new("https://issuer.example", "api"));
//! let now = UnixTime::from_secs(1_800_000_000);
//! let refused = validator.check("not-a-token", &jwks, now).unwrap_err();
//! assert_eq!(refused, Rejection::MalformedStructure);
//! assert_eq!(refused.status(), 401);
//! # Ok::<(), shared::jwks::JwksError>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::missing_errors_doc)]

pub mod assertion;
pub mod bearer;
pub mod cache;
pub mod claims;
pub mod dpop;
pub mod json;
pub mod jwks;
pub mod jwks_refresh;
pub mod keyset_copy;
pub mod lease;
mod mac;
pub mod path;
pub mod rate_limit;
pub mod rejection;
pub mod revocations;
pub mod route;
pub mod time;
pub mod token;
pub mod verifier;

#[cfg(feature = "js")]
pub mod js;
#[cfg(feature = "axum")]
pub mod origin;

pub use assertion::{AssertionKey, AssertionSigner, AssertionVerifier, EdgeIdentity, RequestLine};
pub use bearer::{bearer_token, credentials, Scheme};
pub use cache::{TokenCache, TokenKey};
pub use claims::{AccessClaims, Confirmation, ScopeRequirement, Scopes, Validation};
pub use dpop::{HttpUri, Jkt, ProofError, ProofRules, VerifiedProof};
pub use jwks::{Jwk, Jwks};
pub use path::{NormalPath, PathError};
pub use rate_limit::{Decision, GcraState, RatePlan};
pub use rejection::Rejection;
pub use revocations::{FeedPage, RevocationList};
pub use time::UnixTime;
pub use token::{PendingSignature, SignatureCheck, UntrustedToken, Validator, VerifiedToken};
#[cfg(feature = "p256-backend")]
pub use verifier::P256Verifier;
pub use verifier::{AsyncSignatureVerifier, BackendError, SignatureVerifier};

/// The `p256` crate this core builds on, for callers that convert keys.
pub use p256;
