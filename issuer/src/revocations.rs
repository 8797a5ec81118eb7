//! The revocation list behind `GET /revocations`: revoked token ids (`jti`), signing key ids
//! (`kid`), and clients (`client`: every token issued to it up to `issued_before`), numbered
//! in the order edges must read them.
//!
//! Two promises, each with its bound:
//! - **Nothing comes back to life.** A `jti` entry lives until its token's `exp` plus
//!   [`JTI_GRACE_SECS`], the largest leeway any verifier may apply
//!   ([`shared::claims::MAX_LEEWAY_SECS`]), so no verifier still accepts the token once the
//!   entry is gone. A `kid` entry never expires ([`KID_ENTRY_EXPIRES_AT`]): an edge may hold
//!   a key set for its max-age plus max-stale, and a new isolate may start from a colo's
//!   cached copy, so only "for ever" outlives every copy of a leaked key. A `client` entry
//!   lives one token lifetime plus [`JTI_GRACE_SECS`] past `issued_before`: by then every
//!   token it covers is refused by every verifier anyway.
//! - **The feed never skips an entry.** An edge reads entries after its cursor, in `seq`
//!   order. On PostgreSQL a `BIGSERIAL` is drawn at insert but seen at commit, so without
//!   care a slow transaction could commit `seq` 11 after a poller had read 12 and moved past
//!   both. [`record`] therefore takes a transaction-scoped advisory lock that orders writers
//!   (readers are not blocked, and it needs no table privilege): `seq`s become visible in
//!   the order they were drawn. SQLite has one writer at a time, which gives the same order.
//!   A feed page reads the newest committed `seq` first and pages only up to it
//!   ([`feed_page`]), so the cursor it hands out never passes a row it did not return.
//! - **A restore does not hide what comes after it.** Edges keep their cursor, and a
//!   database restored from a backup has forgotten the entries after the backup: were `seq`
//!   numbered from the last row, the next entries would reuse numbers every edge has read
//!   past, and no edge would ever see them. So a `seq` is at least the time of its writing
//!   in microseconds ([`seq_floor`]; one more than the newest when that is larger): every
//!   entry written after a restore numbers above every cursor handed out before it, as long
//!   as the clock of the instance that writes it is ahead of the lost entries' writers.

use sqlx::{Any, Row, Transaction};

use crate::db::Db;

/// Seconds a `jti` entry outlives its token's `exp`: the largest leeway a verifier may use.
pub const JTI_GRACE_SECS: i64 = shared::claims::MAX_LEEWAY_SECS as i64;

/// The `expires_at` of a `kid` entry: never (the last second of the year 9999).
pub const KID_ENTRY_EXPIRES_AT: i64 = 253_402_300_799;

/// The advisory lock (PostgreSQL) every revocation writer holds until it commits.
const WRITER_LOCK: i64 = 0x6564_6765_7761_7264; // "edgeward"

/// Most entries one feed page returns.
pub const FEED_PAGE: i64 = 1000;

/// What an entry revokes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Revoked {
    /// One token, by `jti`, until `exp` plus [`JTI_GRACE_SECS`].
    Token {
        /// The token's `exp`.
        exp: i64,
    },
    /// Every token a signing key signed, for ever.
    Key,
    /// Every token issued to a client at or before `issued_before` (disabled, or its secret
    /// rotated with its tokens revoked).
    Client {
        /// The last second whose tokens are revoked.
        issued_before: i64,
        /// The issuer's token lifetime, the longest such a token lives.
        token_lifetime_secs: i64,
    },
}

impl Revoked {
    fn kind(self) -> &'static str {
        match self {
            Self::Token { .. } => "jti",
            Self::Key => "kid",
            Self::Client { .. } => "client",
        }
    }

    fn issued_before(self) -> Option<i64> {
        match self {
            Self::Client { issued_before, .. } => Some(issued_before),
            Self::Token { .. } | Self::Key => None,
        }
    }

    /// When the entry stops mattering.
    #[must_use]
    pub fn expires_at(self) -> i64 {
        match self {
            Self::Token { exp } => exp.saturating_add(JTI_GRACE_SECS),
            Self::Key => KID_ENTRY_EXPIRES_AT,
            Self::Client {
                issued_before,
                token_lifetime_secs,
            } => issued_before
                .saturating_add(token_lifetime_secs)
                .saturating_add(JTI_GRACE_SECS),
        }
    }
}

/// Adds an entry inside the caller's transaction (which commits it with whatever it
/// revokes: a key's state, an audit row). Returns `false` when a token or key is already
/// listed (a client gets an entry per revocation: each covers a later `issued_before`).
///
/// # Errors
/// The database error.
pub async fn record(
    tx: &mut Transaction<'_, Any>,
    db: &Db,
    what: Revoked,
    value: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    if !db.is_sqlite() {
        // Orders writers so that `seq`s commit in the order they are drawn (module docs);
        // held until this transaction ends.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(WRITER_LOCK)
            .execute(&mut **tx)
            .await?;
    }
    // One statement, a write: on SQLite it takes the write lock before reading, so two
    // concurrent revocations queue instead of one failing on a stale read snapshot. The
    // `seq` is the larger of the next number and the time (module docs: a restore).
    let inserted = sqlx::query(
        "INSERT INTO revocations (seq, kind, value, expires_at, created_at, issued_before) \
         SELECT CASE WHEN next > $6 THEN next ELSE $6 END, $1, $2, $3, $4, $5 \
         FROM (SELECT COALESCE(MAX(seq), 0) + 1 AS next FROM revocations) AS newest \
         WHERE $1 = 'client' OR NOT EXISTS (SELECT 1 FROM revocations WHERE kind = $1 AND value = $2)",
    )
    .bind(what.kind())
    .bind(value)
    .bind(what.expires_at())
    .bind(now)
    .bind(what.issued_before())
    .bind(seq_floor(now))
    .execute(&mut **tx)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// The least `seq` an entry written at `now` (seconds) takes: `now` in microseconds, so a
/// million entries a second can follow one another before numbers run ahead of the time.
/// A clock past [`LAST_SEQ_SECOND`] counts as that second: numbers stay exact as JSON
/// doubles (below 2^53), and far from the top of a `BIGINT`, whatever the clock says.
#[must_use]
pub fn seq_floor(now: i64) -> i64 {
    now.clamp(0, LAST_SEQ_SECOND).saturating_mul(1_000_000)
}

/// The last second [`seq_floor`] follows (in the year 2255).
pub const LAST_SEQ_SECOND: i64 = 9_007_199_254;

/// Whether a token (by `jti`), its signing key (by `kid`) or its client (up to its issue
/// time `iat`, or under an earlier cut-off `client_cutoff`) is listed.
///
/// # Errors
/// The database error.
pub async fn is_revoked(
    db: &Db,
    jti: &str,
    kid: &str,
    client_id: &str,
    iat: i64,
    client_cutoff: Option<i64>,
) -> Result<bool, sqlx::Error> {
    // A client entry covers the token's `iat`, or the earlier cut-off it was stamped with
    // (none stamped: no entry's cut-off is above the largest number).
    let hit: Option<i64> = sqlx::query_scalar(
        "SELECT seq FROM revocations WHERE (kind = 'jti' AND value = $1) OR (kind = 'kid' AND value = $2) \
         OR (kind = 'client' AND value = $3 AND (issued_before >= $4 OR issued_before > $5)) LIMIT 1",
    )
    .bind(jti)
    .bind(kid)
    .bind(client_id)
    .bind(iat)
    .bind(client_cutoff.unwrap_or(i64::MAX))
    .fetch_optional(db.pool())
    .await?;
    Ok(hit.is_some())
}

/// One entry as the feed sends it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FeedEntry {
    /// `jti`, `kid` or `client`.
    pub kind: String,
    /// The token, key or client id.
    pub value: String,
    /// Seconds since the epoch after which it no longer matters.
    pub expires_at: i64,
    /// For `client`: tokens issued (`iat`) at or before this are revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_before: Option<i64>,
}

/// One page of the feed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FeedPage {
    /// What to send as `since` next time.
    pub cursor: i64,
    /// Whether another page is waiting.
    pub more: bool,
    /// Entries after `since` that still matter at `now`, oldest first.
    pub revocations: Vec<FeedEntry>,
}

/// The entries after `since` that still matter at `now`, at most [`FEED_PAGE`] of them.
///
/// # Errors
/// The database error.
pub async fn feed_page(db: &Db, since: i64, now: i64) -> Result<FeedPage, sqlx::Error> {
    let since = since.max(0);
    // The newest committed entry first: every `seq` up to it is committed (writers commit
    // in order), so paging up to it, and handing it out as the cursor when nothing is left,
    // never skips an entry committed between the two reads.
    let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM revocations")
        .fetch_one(db.pool())
        .await?;
    let newest = newest.unwrap_or(0);
    let rows = sqlx::query(
        "SELECT seq, kind, value, expires_at, issued_before FROM revocations \
         WHERE seq > $1 AND seq <= $2 AND expires_at > $3 ORDER BY seq LIMIT $4",
    )
    .bind(since)
    .bind(newest)
    .bind(now)
    .bind(FEED_PAGE + 1)
    .fetch_all(db.pool())
    .await?;
    let more = i64::try_from(rows.len()).unwrap_or(i64::MAX) > FEED_PAGE;
    let mut cursor = since;
    let mut revocations = Vec::with_capacity(rows.len());
    for row in rows.iter().take(usize::try_from(FEED_PAGE).unwrap_or(1000)) {
        cursor = row.try_get("seq")?;
        revocations.push(FeedEntry {
            kind: row.try_get("kind")?,
            value: row.try_get("value")?,
            expires_at: row.try_get("expires_at")?,
            issued_before: row.try_get("issued_before")?,
        });
    }
    if !more {
        // Nothing else up to `newest` matters: skip past expired rows too, so a fresh edge
        // does not rescan them.
        cursor = cursor.max(newest);
    }
    Ok(FeedPage {
        cursor,
        more,
        revocations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_floor_stays_below_two_to_the_53() {
        assert_eq!(seq_floor(1_800_000_000), 1_800_000_000_000_000);
        assert_eq!(seq_floor(-5), 0);
        let top = seq_floor(i64::MAX);
        assert_eq!(top, seq_floor(LAST_SEQ_SECOND));
        assert!(top < 1 << 53);
    }
}
