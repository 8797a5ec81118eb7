//! DPoP at the token endpoint (RFC 9449 §5): the proof checked by `shared::dpop`, the
//! server's nonces, and the replay store.
//!
//! - **Replay.** Each accepted proof's `replay_key` goes into `dpop_proofs` until the last
//!   second any instance would accept the proof, whatever its max age
//!   ([`shared::VerifiedProof::remember_until`]); the
//!   insert and the check are one statement, so two instances racing with one proof see one
//!   winner. The database is the instances' shared state already; a read-only replica cannot
//!   write, so it answers a DPoP request 503 (bearer requests are unaffected).
//! - **Nonces** (`dpop_require_nonce`) are `shared::dpop::Nonces`, stateless, under a key
//!   every instance derives from the KEK. One is accepted in its window and the next, so it
//!   lives between one and two `dpop_nonce_lifetime_secs`.

use shared::dpop::{self, HttpUri, Nonces, ProofError, ProofRequest, ProofRules};
use shared::VerifiedProof;

use crate::db::Db;

/// What the nonce key is derived for ([`crate::keys::Kek::derive`]).
pub const NONCE_KEY_PURPOSE: &str = "edgeward dpop nonce v1";

/// Clock skew tolerated on a proof's `iat`, in seconds: the edge's (`shared::dpop`'s default).
pub const PROOF_LEEWAY_SECS: u64 = shared::dpop::DEFAULT_LEEWAY_SECS;

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
            .is_some_and(|nonce| nonces.accepts(nonce, now, lifetime));
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

/// How long past its window a proof's row stays before [`prune`] deletes it: instances prune
/// by their own clocks, so one running ahead of another by less than this deletes no row the
/// other still needs (a row's last second can be the last second a proof is accepted).
pub const PRUNE_MARGIN_SECS: i64 = 60;

/// Forgets proofs whose window passed more than [`PRUNE_MARGIN_SECS`] ago; the number
/// forgotten.
///
/// # Errors
/// The database error.
pub async fn prune(db: &Db, now_secs: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM dpop_proofs WHERE expires_at < $1")
        .bind(now_secs.saturating_sub(PRUNE_MARGIN_SECS))
        .execute(db.pool())
        .await?;
    Ok(done.rows_affected())
}
