//! Signing keys: generated here (P-256), stored encrypted under the key-encryption key (KEK),
//! and moved through pending -> active -> retired -> removed (or revoked).
//!
//! - A new key is *pending*: published in the JWKS but not signing, for
//!   [`Config::key_publish_lead_secs`](crate::Config::key_publish_lead_secs) (twice the JWKS cache lifetime), so every edge has it
//!   before its first token arrives.
//! - Then it becomes *active* and the previous active key *retired*: still published until
//!   every token it signed has expired (`remove_at`), then *removed*.
//! - `revoke` is the emergency path: the key leaves the JWKS at once, the revocation feed
//!   carries its id, and a pending key (already published) or a fresh one takes over.
//!
//! [`advance`] applies the schedule; instances run it under a database lease so two never
//! rotate at once, and every step is one transaction ([`lifecycle`] says how). Every
//! instance reloads [`SigningKeys`] from the database, so they agree.
//!
//! - [`kek`]: the key-encryption key that seals private keys at rest;
//! - [`lifecycle`]: the schedule and its events;
//! - [`signer`]: what an instance signs with and publishes.

pub mod kek;
pub mod lifecycle;
pub mod signer;

pub use kek::{rewrap, Kek, KekSource};
pub use lifecycle::{advance, list, revoke, rotate, KeyEvent, KeyInfo, KeyState, SCHEDULE_LEASE};
pub use signer::{ActiveKey, SigningKeys};

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The KEK is missing, unreadable or not 32 bytes of hex or base64.
    #[error("key-encryption key: {0}")]
    Kek(String),
    /// A stored private key does not decrypt under this KEK (wrong KEK, or tampering).
    #[error("signing key {kid} does not decrypt under this key-encryption key")]
    Decrypt {
        /// The key id.
        kid: String,
    },
    /// A stored key is malformed.
    #[error("signing key {kid} is corrupt")]
    Corrupt {
        /// The key id.
        kid: String,
    },
    /// No such key, or not in a state the operation applies to.
    #[error("no key {kid} that can be {action}")]
    NotFound {
        /// The key id.
        kid: String,
        /// What was attempted.
        action: &'static str,
    },
    /// Signing a token failed (the system RNG or serialization).
    #[error("signing failed: {0}")]
    Sign(String),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A scheduled step took longer than its turn (`KEY_REFRESH`) and was rolled back.
    #[error("the key schedule's step timed out")]
    TimedOut,
}
