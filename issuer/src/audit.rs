//! The audit trail: one row per admin action and security event, chained by an HMAC so that
//! a row edited, deleted or moved shows.
//!
//! Each row's `mac` is HMAC-SHA256 under the audit key (a setting of its own, never the KEK:
//! whoever may read keys need not be able to rewrite history) over the previous row's MAC and
//! this row's id and fields, each length-prefixed. `issuer audit verify` walks the rows in id
//! order and names the first whose MAC does not follow.
//!
//! What a chain cannot show by itself: rows cut off its end, or every MAC wiped. So `verify`
//! prints the head (last id and MAC) to be kept elsewhere, and `export` ships the rows, MACs
//! and all, to a SIEM as JSON lines. Rows written before this release have no MAC; the chain
//! starts at the first row that has one, and a row without one after it is tampering.

use std::path::Path;

use base64ct::{Base64, Encoding};
use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use sha2::Sha256;
use sqlx::Row as _;

use crate::config::Config;

type HmacSha256 = Hmac<Sha256>;

/// The advisory lock id (PostgreSQL) that orders audit writers, so each row chains to the
/// one committed before it. ("audit" in ASCII.)
const AUDIT_LOCK: i64 = 0x61_75_64_69_74;

/// Rows read per query while verifying or exporting.
const PAGE: i64 = 1_000;

/// Why the audit key could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("audit key: {0}")]
pub struct AuditKeyError(String);

/// The key the chain's MACs are made with: `ISSUER_AUDIT_KEY` (32 bytes, 64 hex digits or
/// base64), else the file `audit_key_file`, else a development key in `data_dir/dev-audit-key`,
/// created on first use (like the development KEK).
#[derive(Clone)]
pub struct AuditKey(HmacSha256);

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(<redacted>)")
    }
}

impl AuditKey {
    /// The key for `config` (see the type), and whether it is the development one.
    ///
    /// # Errors
    /// [`AuditKeyError`] when it is unreadable or not 32 bytes.
    pub fn load(config: &Config) -> Result<(Self, bool), AuditKeyError> {
        if let Ok(text) = std::env::var("ISSUER_AUDIT_KEY") {
            return Ok((Self::parse(&text)?, false));
        }
        if let Some(path) = &config.audit_key_file {
            return Ok((Self::read(path)?, false));
        }
        let path = config.data_dir.join("dev-audit-key");
        if !path.exists() {
            std::fs::create_dir_all(&config.data_dir).map_err(|e| AuditKeyError(e.to_string()))?;
            let mut bytes = [0u8; 32];
            OsRng.fill_bytes(&mut bytes);
            crate::keys::kek::write_private(&path, &Base64::encode_string(&bytes))
                .map_err(|e| AuditKeyError(e.to_string()))?;
        }
        Ok((Self::read(&path)?, true))
    }

    fn read(path: &Path) -> Result<Self, AuditKeyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AuditKeyError(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text)
    }

    /// 32 bytes as 64 hex digits or standard base64.
    fn parse(text: &str) -> Result<Self, AuditKeyError> {
        let bytes = crate::keys::kek::secret_bytes(text)
            .ok_or_else(|| AuditKeyError("must be 32 bytes, as 64 hex digits or base64".into()))?;
        HmacSha256::new_from_slice(&bytes)
            .map(Self)
            .map_err(|e| AuditKeyError(e.to_string()))
    }

    /// The MAC of the row `id` with `entry`, after the row whose MAC is `previous` (empty
    /// for the first row of the chain).
    fn mac(&self, previous: &[u8], id: i64, entry: &Entry<'_>) -> Vec<u8> {
        let mut mac = self.0.clone();
        for part in [
            previous,
            &id.to_be_bytes(),
            &entry.at.to_be_bytes(),
            entry.actor.as_bytes(),
            entry.action.as_bytes(),
            entry.subject.as_bytes(),
            entry.detail.as_bytes(),
        ] {
            // Length-prefixed, so no two different rows hash the same text.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().to_vec()
    }
}

/// One audit row: who (`actor`) did what (`action`) to which `subject`, with `detail`.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// Seconds since the epoch.
    pub at: i64,
    /// `cli`, a client id, or the issuer itself.
    pub actor: &'a str,
    /// What happened, e.g. `client.disable`.
    pub action: &'a str,
    /// What it happened to.
    pub subject: &'a str,
    /// Anything else worth keeping.
    pub detail: &'a str,
}

/// Appends `entry` to the chain inside the caller's transaction, so the row commits (or not)
/// with the change it records. The row goes in first: on SQLite that takes the write lock,
/// on PostgreSQL the advisory lock is taken before it, so no other writer slips a row in
/// between this row and the one it chains to.
///
/// # Errors
/// The database error.
pub async fn append(
    conn: &mut sqlx::AnyConnection,
    key: &AuditKey,
    postgres: bool,
    entry: &Entry<'_>,
) -> Result<(), sqlx::Error> {
    if postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(AUDIT_LOCK)
            .execute(&mut *conn)
            .await?;
    }
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO audit_log (at, actor, action, subject, detail) VALUES ($1, $2, $3, $4, $5) \
         RETURNING id",
    )
    .bind(entry.at)
    .bind(entry.actor)
    .bind(entry.action)
    .bind(entry.subject)
    .bind(entry.detail)
    .fetch_one(&mut *conn)
    .await?;
    let previous: Option<Option<Vec<u8>>> =
        sqlx::query_scalar("SELECT mac FROM audit_log WHERE id < $1 ORDER BY id DESC LIMIT 1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    let mac = key.mac(&previous.flatten().unwrap_or_default(), id, entry);
    sqlx::query("UPDATE audit_log SET mac = $1 WHERE id = $2")
        .bind(mac)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// What [`verify`] found in a chain that holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Intact {
    /// Rows in the chain.
    pub chained: u64,
    /// Rows before the chain began (written before this release).
    pub before_chain: u64,
    /// The last row's id and MAC (base64): keep them elsewhere, so a cut end shows too.
    pub head: Option<(i64, String)>,
}

/// Why the chain does not hold.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The row's MAC does not follow from the row before it and its own fields: it was
    /// edited, a row before it was deleted, or rows were moved.
    #[error("audit row {id} does not follow the chain: it, or the row before it, was edited, deleted or moved")]
    Broken {
        /// The first row that does not follow.
        id: i64,
    },
    /// A row after the start of the chain has no MAC.
    #[error("audit row {id} has no MAC inside the chain")]
    Unsealed {
        /// The row.
        id: i64,
    },
    /// Reading the rows failed.
    #[error("reading the audit log: {0}")]
    Query(#[from] sqlx::Error),
}

/// One row as stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredRow {
    /// Its position in the chain.
    pub id: i64,
    /// Seconds since the epoch.
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub detail: String,
    /// The MAC, base64 (absent before the chain began).
    pub mac: Option<String>,
    #[serde(skip)]
    raw_mac: Option<Vec<u8>>,
}

/// Rows with an id above `after`, in order, at most a page (1,000): the admin API's read.
///
/// # Errors
/// The database error.
pub async fn rows_after(pool: &sqlx::AnyPool, after: i64) -> Result<Vec<StoredRow>, sqlx::Error> {
    page(pool, after).await
}

/// Rows with an id above `after`, in order, at most [`PAGE`].
async fn page(pool: &sqlx::AnyPool, after: i64) -> Result<Vec<StoredRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, at, actor, action, subject, detail, mac FROM audit_log WHERE id > $1 \
         ORDER BY id LIMIT $2",
    )
    .bind(after)
    .bind(PAGE)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let raw_mac: Option<Vec<u8>> = row.try_get("mac")?;
            Ok(StoredRow {
                id: row.try_get("id")?,
                at: row.try_get("at")?,
                actor: row.try_get("actor")?,
                action: row.try_get("action")?,
                subject: row.try_get("subject")?,
                detail: row.try_get("detail")?,
                mac: raw_mac.as_deref().map(Base64::encode_string),
                raw_mac,
            })
        })
        .collect()
}

/// Walks the whole log in id order and checks every MAC.
///
/// # Errors
/// [`AuditError::Broken`] or [`AuditError::Unsealed`] naming the first bad row.
pub async fn verify(pool: &sqlx::AnyPool, key: &AuditKey) -> Result<Intact, AuditError> {
    let mut intact = Intact {
        chained: 0,
        before_chain: 0,
        head: None,
    };
    let mut previous: Option<Vec<u8>> = None;
    let mut after = i64::MIN;
    loop {
        let rows = page(pool, after).await?;
        let Some(last) = rows.last() else {
            return Ok(intact);
        };
        after = last.id;
        for row in rows {
            let Some(mac) = &row.raw_mac else {
                if previous.is_some() {
                    return Err(AuditError::Unsealed { id: row.id });
                }
                intact.before_chain += 1;
                continue;
            };
            let entry = Entry {
                at: row.at,
                actor: &row.actor,
                action: &row.action,
                subject: &row.subject,
                detail: &row.detail,
            };
            let expected = key.mac(previous.as_deref().unwrap_or_default(), row.id, &entry);
            // Not secret-dependent timing that matters here (the verifier holds the key),
            // but a MAC comparison is done in constant time by habit.
            if !bool::from(subtle::ConstantTimeEq::ct_eq(
                expected.as_slice(),
                mac.as_slice(),
            )) {
                return Err(AuditError::Broken { id: row.id });
            }
            intact.chained += 1;
            intact.head = Some((row.id, Base64::encode_string(mac)));
            previous = Some(expected);
        }
    }
}

/// Every row with an id above `after`, in order, to `out` as JSON lines (for a SIEM).
///
/// # Errors
/// The database or write error.
pub async fn export(
    pool: &sqlx::AnyPool,
    after: i64,
    out: &mut impl std::io::Write,
) -> Result<u64, Box<dyn std::error::Error>> {
    let mut after = after;
    let mut written = 0;
    loop {
        let rows = page(pool, after).await?;
        let Some(last) = rows.last() else {
            return Ok(written);
        };
        after = last.id;
        for row in &rows {
            serde_json::to_writer(&mut *out, row)?;
            out.write_all(b"\n")?;
            written += 1;
        }
    }
}
