//! DPoP at the token endpoint (RFC 9449 §5): the proof checked by `shared::dpop`, the
//! server's nonces, and the replay store.
//!
//! - **Replay.** Each accepted proof's `replay_key` goes into `dpop_proofs` until the last
//!   second the proof would be accepted ([`shared::VerifiedProof::remember_until`]); the
//!   insert and the check are one statement, so two instances racing with one proof see one
//!   winner. The database is the instances' shared state already; a read-only replica cannot
//!   write, so it answers a DPoP request 503 (bearer requests are unaffected).
//! - **Nonces** (`dpop_require_nonce`) are stateless: the time window they were made in and
//!   an HMAC of it under a key every instance derives from the KEK. One is accepted in its
//!   window and the next, so it lives between one and two `dpop_nonce_lifetime_secs`.

use base64ct::{Base64UrlUnpadded, Encoding};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use shared::dpop::{self, HttpUri, ProofError, ProofRequest, ProofRules};
use shared::VerifiedProof;
use subtle::ConstantTimeEq;

use crate::db::Db;

/// What the nonce key is derived for ([`crate::keys::Kek::derive`]).
pub const NONCE_KEY_PURPOSE: &str = "edgeward dpop nonce v1";

/// Clock skew tolerated on a proof's `iat`, in seconds: the edge's (`shared::dpop`'s default).
pub const PROOF_LEEWAY_SECS: u64 = shared::dpop::DEFAULT_LEEWAY_SECS;

/// Bytes of the nonce's MAC: 128 bits cannot be guessed within a window.
const NONCE_MAC_LEN: usize = 16;

/// Makes and checks the server's DPoP nonces.
#[derive(Clone)]
pub struct Nonces {
    key: Hmac<Sha256>,
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Nonces(<redacted>)")
    }
}

impl Nonces {
    /// Nonces under `key` (the same on every instance).
    #[must_use]
    pub fn new(key: [u8; 32]) -> Self {
        // HMAC takes a key of any length: this cannot fail.
        let key = <Hmac<Sha256> as Mac>::new_from_slice(&key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        Self { key }
    }

    fn mac(&self, window: u64) -> [u8; NONCE_MAC_LEN] {
        let mut mac = self.key.clone();
        mac.update(&window.to_be_bytes());
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; NONCE_MAC_LEN];
        out.copy_from_slice(full.get(..NONCE_MAC_LEN).unwrap_or(&[0; NONCE_MAC_LEN]));
        out
    }

    /// A nonce for the window `now` falls in.
    #[must_use]
    pub fn issue(&self, now_secs: u64, lifetime_secs: u64) -> String {
        let window = now_secs / lifetime_secs.max(1);
        let mut bytes = window.to_be_bytes().to_vec();
        bytes.extend(self.mac(window));
        Base64UrlUnpadded::encode_string(&bytes)
    }

    /// Whether `nonce` was made by an instance with this key, in the window `now` falls in
    /// or the one before.
    #[must_use]
    pub fn accepts(&self, nonce: &str, now_secs: u64, lifetime_secs: u64) -> bool {
        let mut bytes = [0u8; 8 + NONCE_MAC_LEN];
        let Ok(decoded) = Base64UrlUnpadded::decode(nonce, &mut bytes) else {
            return false;
        };
        let Some((window, mac)) = decoded.split_first_chunk::<8>() else {
            return false;
        };
        if mac.len() != NONCE_MAC_LEN {
            return false;
        }
        let window = u64::from_be_bytes(*window);
        let current = now_secs / lifetime_secs.max(1);
        (window == current || window.saturating_add(1) == current)
            && bool::from(self.mac(window).as_slice().ct_eq(mac))
    }
}

/// What the token endpoint needs to judge a proof.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    /// The token endpoint's URI as the metadata publishes it: the proof's `htu`.
    pub token_endpoint: &'a HttpUri,
    /// `dpop_proof_max_age_secs`.
    pub max_age_secs: u64,
    /// `dpop_require_nonce`, with `dpop_nonce_lifetime_secs`.
    pub nonce_lifetime_secs: Option<u64>,
}

/// Why a token request's proof was refused: the proof, or the store.
#[derive(Debug, thiserror::Error)]
pub enum DpopError {
    /// The proof itself (RFC 9449 §5 errors).
    #[error(transparent)]
    Proof(#[from] ProofError),
    /// The replay store could not be written (a read-only replica, or the database down).
    #[error("dpop replay store: {0}")]
    Store(#[from] sqlx::Error),
}

/// Checks the token request's proof (the `DPoP` header values), and records it as used.
///
/// # Errors
/// [`DpopError::Proof`] for a proof that is not good for this request now, or a replay;
/// [`DpopError::Store`] when the replay store cannot be written.
pub async fn accept_token_request(
    db: &Db,
    nonces: &Nonces,
    policy: &Policy<'_>,
    proof: &str,
    now: shared::UnixTime,
) -> Result<VerifiedProof, DpopError> {
    let request = ProofRequest {
        method: "POST",
        uri: policy.token_endpoint,
        access_token: None,
        bound_to: None,
    };
    let rules = ProofRules {
        max_age_secs: policy.max_age_secs,
        leeway_secs: PROOF_LEEWAY_SECS,
    };
    let verified = dpop::check(proof, &request, &rules, now)?.verify_with(&shared::P256Verifier)?;
    if let Some(lifetime) = policy.nonce_lifetime_secs {
        let fresh = verified
            .nonce()
            .is_some_and(|nonce| nonces.accepts(nonce, now.as_secs(), lifetime));
        if !fresh {
            return Err(ProofError::UseNonce.into());
        }
    }
    if !remember(db, &verified, now.as_secs()).await? {
        return Err(ProofError::Replayed.into());
    }
    Ok(verified)
}

/// Records `proof` as used; `false` if it already was (within its window). A row left by an
/// earlier proof with the same key and `jti` whose window has passed is taken over.
async fn remember(db: &Db, proof: &VerifiedProof, now_secs: u64) -> Result<bool, sqlx::Error> {
    let until = i64::try_from(proof.remember_until()).unwrap_or(i64::MAX);
    let now = i64::try_from(now_secs).unwrap_or(i64::MAX);
    let written = sqlx::query(
        "INSERT INTO dpop_proofs (replay_key, expires_at) VALUES ($1, $2) \
         ON CONFLICT (replay_key) DO UPDATE SET expires_at = excluded.expires_at \
         WHERE dpop_proofs.expires_at < $3",
    )
    .bind(proof.replay_key())
    .bind(until)
    .bind(now)
    .execute(db.pool())
    .await?;
    Ok(written.rows_affected() == 1)
}

/// Forgets proofs whose window has passed; the number forgotten.
///
/// # Errors
/// The database error.
pub async fn prune(db: &Db, now_secs: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM dpop_proofs WHERE expires_at < $1")
        .bind(now_secs)
        .execute(db.pool())
        .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_lives_its_window_and_the_next() {
        let nonces = Nonces::new([7; 32]);
        let nonce = nonces.issue(1_000, 100);
        assert!(nonces.accepts(&nonce, 1_000, 100));
        assert!(nonces.accepts(&nonce, 1_099, 100));
        assert!(nonces.accepts(&nonce, 1_199, 100));
        assert!(!nonces.accepts(&nonce, 1_200, 100));
        assert!(!nonces.accepts(&nonce, 999, 100), "not before its window");
        assert!(!Nonces::new([8; 32]).accepts(&nonce, 1_000, 100));
        assert!(!nonces.accepts("", 1_000, 100));
        assert!(!nonces.accepts(&format!("{nonce}A"), 1_000, 100));
        let mut forged = Base64UrlUnpadded::decode_vec(&nonce).unwrap();
        forged[7] += 1;
        assert!(!nonces.accepts(&Base64UrlUnpadded::encode_string(&forged), 1_100, 100));
    }
}
