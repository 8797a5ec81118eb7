//! The revocation list behind `GET /revocations`: revoked token ids (`jti`) and signing key
//! ids (`kid`), numbered in the order edges must read them.
//!
//! Two promises, each with its bound:
//! - **Nothing comes back to life.** A `jti` entry lives until its token's `exp` plus
//!   [`JTI_GRACE_SECS`], the largest leeway any verifier may apply
//!   ([`shared::claims::MAX_LEEWAY_SECS`]), so no verifier still accepts the token once the
//!   entry is gone. A `kid` entry never expires ([`KID_ENTRY_EXPIRES_AT`]): an edge may hold
//!   a key set for its max-age plus max-stale, and a new isolate may start from a colo's
//!   cached copy, so only "for ever" outlives every copy of a leaked key.
//! - **The feed never skips an entry.** An edge reads entries after its cursor, in `seq`
//!   order. On PostgreSQL a `BIGSERIAL` is drawn at insert but seen at commit, so without
//!   care a slow transaction could commit `seq` 11 after a poller had read 12 and moved past
//!   both. [`record`] therefore takes a table lock that orders writers (readers are not
//!   blocked): `seq`s become visible in the order they were drawn. SQLite has one writer
//!   at a time, which gives the same order.

use sqlx::{AnyConnection, Row};

use crate::db::Db;

/// Seconds a `jti` entry outlives its token's `exp`: the largest leeway a verifier may use.
pub const JTI_GRACE_SECS: i64 = shared::claims::MAX_LEEWAY_SECS as i64;

/// The `expires_at` of a `kid` entry: never (the last second of the year 9999).
pub const KID_ENTRY_EXPIRES_AT: i64 = 253_402_300_799;

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
}

impl Revoked {
    fn kind(self) -> &'static str {
        match self {
            Self::Token { .. } => "jti",
            Self::Key => "kid",
        }
    }

    /// When the entry stops mattering.
    #[must_use]
    pub fn expires_at(self) -> i64 {
        match self {
            Self::Token { exp } => exp.saturating_add(JTI_GRACE_SECS),
            Self::Key => KID_ENTRY_EXPIRES_AT,
        }
    }
}

/// Adds an entry inside the caller's transaction (which commits it with whatever it
/// revokes: a key's state, an audit row). Returns `false` when the value is already listed.
///
/// # Errors
/// The database error.
pub async fn record(
    conn: &mut AnyConnection,
    db: &Db,
    what: Revoked,
    value: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    if !db.is_sqlite() {
        // Orders writers so that `seq`s commit in the order they are drawn (module docs).
        // EXCLUSIVE conflicts with every writer and with itself, not with readers.
        sqlx::query("LOCK TABLE revocations IN EXCLUSIVE MODE")
            .execute(&mut *conn)
            .await?;
    }
    // One statement, a write: on SQLite it takes the write lock before reading, so two
    // concurrent revocations queue instead of one failing on a stale read snapshot.
    let inserted = sqlx::query(
        "INSERT INTO revocations (kind, value, expires_at, created_at) \
         SELECT $1, $2, $3, $4 \
         WHERE NOT EXISTS (SELECT 1 FROM revocations WHERE kind = $1 AND value = $2)",
    )
    .bind(what.kind())
    .bind(value)
    .bind(what.expires_at())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Whether a token (by `jti`) or its signing key (by `kid`) is listed.
///
/// # Errors
/// The database error.
pub async fn is_revoked(db: &Db, jti: &str, kid: &str) -> Result<bool, sqlx::Error> {
    let hit: Option<i64> = sqlx::query_scalar(
        "SELECT seq FROM revocations WHERE (kind = 'jti' AND value = $1) OR (kind = 'kid' AND value = $2) LIMIT 1",
    )
    .bind(jti)
    .bind(kid)
    .fetch_optional(db.pool())
    .await?;
    Ok(hit.is_some())
}

/// One entry as the feed sends it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FeedEntry {
    /// `jti` or `kid`.
    pub kind: String,
    /// The token or key id.
    pub value: String,
    /// Seconds since the epoch after which it no longer matters.
    pub expires_at: i64,
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
    let rows = sqlx::query(
        "SELECT seq, kind, value, expires_at FROM revocations WHERE seq > $1 AND expires_at > $2 ORDER BY seq LIMIT $3",
    )
    .bind(since)
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
        });
    }
    if revocations.is_empty() {
        // Nothing new: report the newest cursor so a fresh edge does not rescan expired
        // rows. Safe because writers commit in `seq` order ([`record`]).
        let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM revocations")
            .fetch_one(db.pool())
            .await?;
        cursor = cursor.max(newest.unwrap_or(0));
    }
    Ok(FeedPage {
        cursor,
        more,
        revocations,
    })
}
