//! The key schedule: pending -> active -> retired -> removed, or revoked.
//!
//! Every step ([`advance`], [`rotate`], [`revoke`]) is one transaction with its audit rows
//! and, for a revocation, its feed entry: a crash between statements leaves either the whole
//! step or none of it (never a revoked key missing from the feed). Each transaction starts
//! by locking the schedule's lease row ([`SCHEDULE_LEASE`]), so a step from the instance that
//! holds the lease and one from an operator's CLI never interleave: the second waits, then
//! reads the state the first left.

use std::fmt;

use base64ct::{Base64UrlUnpadded, Encoding};
use p256::ecdsa::SigningKey;
use rand_core::{OsRng, RngCore};
use sqlx::{AnyConnection, Row};

use super::{Kek, KeyError};
use crate::audit::Entry;
use crate::config::Config;
use crate::db::Db;
use crate::revocations::{self, Revoked};

/// The lease (a row of `leases`) under which one instance applies the schedule.
pub const SCHEDULE_LEASE: &str = "key-rotation";

/// Extra seconds a retired key stays published beyond the token lifetime (clock skew).
const RETIRE_GRACE_SECS: i64 = 60;

/// A key's lifecycle state, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Published, not yet signing.
    Pending,
    /// Signing (exactly one at a time).
    Active,
    /// Published until its tokens expire, not signing.
    Retired,
    /// Gone from the JWKS.
    Removed,
    /// Withdrawn in an emergency.
    Revoked,
}

impl KeyState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Retired => "retired",
            Self::Removed => "removed",
            Self::Revoked => "revoked",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "pending" => Self::Pending,
            "active" => Self::Active,
            "retired" => Self::Retired,
            "removed" => Self::Removed,
            "revoked" => Self::Revoked,
            _ => return None,
        })
    }
}

/// A key's public record (what `keys list` prints).
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyInfo {
    /// Key id.
    pub kid: String,
    /// Lifecycle state.
    pub state: KeyState,
    /// Creation time.
    pub created_at: i64,
    /// When it starts (or started) signing.
    pub activate_at: i64,
    /// When it was retired.
    pub retired_at: Option<i64>,
    /// When it leaves the JWKS.
    pub remove_at: Option<i64>,
    /// When it was revoked.
    pub revoked_at: Option<i64>,
}

/// A change to the signing keys, for the log, the audit trail and the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyEvent {
    /// A key was created and signs at once: a new database, or nothing left to sign.
    CreatedActive {
        /// The new key.
        kid: String,
    },
    /// A pending key started signing; the key that signed before, if any, retired.
    Activated {
        /// The key now signing.
        kid: String,
        /// The key that retired.
        retired: Option<String>,
    },
    /// A retired key left the JWKS: every token it signed has expired.
    Removed {
        /// The key.
        kid: String,
    },
    /// A new key was created pending: published now, signing from `signs_from`.
    Scheduled {
        /// The new key.
        kid: String,
        /// When it starts signing (seconds since the epoch).
        signs_from: i64,
    },
    /// A key was revoked: out of the JWKS and onto the revocation feed for good.
    Revoked {
        /// The key.
        kid: String,
        /// The key signing from now on, when the revoked one was signing.
        successor: Option<String>,
    },
}

impl KeyEvent {
    /// The metric label and the audit action's suffix.
    #[must_use]
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::CreatedActive { .. } => "created",
            Self::Activated { .. } => "activated",
            Self::Removed { .. } => "removed",
            Self::Scheduled { .. } => "scheduled",
            Self::Revoked { .. } => "revoked",
        }
    }

    /// The key the event is about.
    #[must_use]
    pub fn kid(&self) -> &str {
        match self {
            Self::CreatedActive { kid }
            | Self::Activated { kid, .. }
            | Self::Removed { kid }
            | Self::Scheduled { kid, .. }
            | Self::Revoked { kid, .. } => kid,
        }
    }

    /// The audit row's action.
    #[must_use]
    pub const fn action(&self) -> &'static str {
        match self {
            Self::CreatedActive { .. } => "key.create",
            Self::Activated { .. } => "key.activate",
            Self::Removed { .. } => "key.remove",
            Self::Scheduled { .. } => "key.rotate",
            Self::Revoked { .. } => "key.revoke",
        }
    }

    /// The audit row's detail: the other key involved, or when the new one signs.
    pub fn detail(&self) -> String {
        match self {
            Self::Activated {
                retired: Some(other),
                ..
            }
            | Self::Revoked {
                successor: Some(other),
                ..
            } => other.clone(),
            Self::Scheduled { signs_from, .. } => signs_from.to_string(),
            _ => String::new(),
        }
    }
}

impl fmt::Display for KeyEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CreatedActive { kid } => write!(f, "created active {kid}"),
            Self::Activated { kid, retired } => match retired {
                Some(retired) => write!(f, "activated {kid}, retired {retired}"),
                None => write!(f, "activated {kid}"),
            },
            Self::Removed { kid } => write!(f, "removed {kid}"),
            Self::Scheduled { kid, signs_from } => {
                write!(f, "scheduled {kid}, signing from {signs_from}")
            }
            Self::Revoked { kid, successor } => match successor {
                Some(successor) => write!(f, "revoked {kid}, now signing {successor}"),
                None => write!(f, "revoked {kid}"),
            },
        }
    }
}

/// One lifecycle step: a transaction that holds the schedule's lease row until it commits,
/// and records each event in the audit log as it happens.
struct Step<'a> {
    db: &'a Db,
    tx: sqlx::Transaction<'a, sqlx::Any>,
    actor: &'a str,
    now: i64,
    events: Vec<KeyEvent>,
}

impl<'a> Step<'a> {
    async fn begin(db: &'a Db, actor: &'a str, now: i64) -> Result<Self, KeyError> {
        let mut tx = db.pool().begin().await?;
        // A write first: on PostgreSQL it locks the lease row until commit; on SQLite it
        // takes the database's write lock, so the reads below see the latest state.
        sqlx::query(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, '', 0) \
             ON CONFLICT (name) DO UPDATE SET expires_at = leases.expires_at",
        )
        .bind(SCHEDULE_LEASE)
        .execute(&mut *tx)
        .await?;
        Ok(Self {
            db,
            tx,
            actor,
            now,
            events: Vec::new(),
        })
    }

    fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    async fn record(&mut self, event: KeyEvent) -> Result<(), KeyError> {
        let (now, actor, detail) = (self.now, self.actor, event.detail());
        let entry = Entry {
            at: now,
            actor,
            action: event.action(),
            subject: event.kid(),
            detail: &detail,
        };
        self.db.audit_in(&mut self.tx, &entry).await?;
        self.events.push(event);
        Ok(())
    }

    async fn commit(self) -> Result<Vec<KeyEvent>, KeyError> {
        self.tx.commit().await?;
        Ok(self.events)
    }
}

/// Every key, newest first.
///
/// # Errors
/// The database error.
pub async fn list(db: &Db) -> Result<Vec<KeyInfo>, KeyError> {
    let mut conn = db.pool().acquire().await?;
    list_in(&mut conn).await
}

async fn list_in(conn: &mut AnyConnection) -> Result<Vec<KeyInfo>, KeyError> {
    let rows = sqlx::query(
        "SELECT kid, state, created_at, activate_at, retired_at, remove_at, revoked_at \
         FROM signing_keys ORDER BY created_at DESC, kid",
    )
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            let kid: String = row.try_get("kid")?;
            let state: String = row.try_get("state")?;
            Ok(KeyInfo {
                state: KeyState::parse(&state)
                    .ok_or_else(|| KeyError::Corrupt { kid: kid.clone() })?,
                kid,
                created_at: row.try_get("created_at")?,
                activate_at: row.try_get("activate_at")?,
                retired_at: row.try_get("retired_at")?,
                remove_at: row.try_get("remove_at")?,
                revoked_at: row.try_get("revoked_at")?,
            })
        })
        .collect()
}

/// Creates a key in `state` that signs from `activate_at`.
async fn create(
    step: &mut Step<'_>,
    kek: &Kek,
    activate_at: i64,
    state: KeyState,
) -> Result<String, KeyError> {
    let signing = SigningKey::random(&mut OsRng);
    let mut id = [0u8; 12];
    OsRng.fill_bytes(&mut id);
    let kid = Base64UrlUnpadded::encode_string(&id);
    let sealed = kek.seal(&kid, &signing.to_bytes())?;
    let public = signing.verifying_key().to_encoded_point(false);
    let now = step.now;
    sqlx::query(
        "INSERT INTO signing_keys (kid, state, private_key, public_sec1, created_at, activate_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&kid)
    .bind(state.as_str())
    .bind(sealed)
    .bind(public.as_bytes().to_vec())
    .bind(now)
    .bind(activate_at)
    .execute(step.conn())
    .await?;
    Ok(kid)
}

/// Applies the lifecycle at `now` in one transaction and returns what changed: promotes a
/// due pending key (retiring the active one), removes retired keys whose tokens have
/// expired, creates the first key, and schedules the next rotation when the active key is
/// due. The instance holding [`SCHEDULE_LEASE`] calls it (and each instance once at start).
///
/// # Errors
/// [`KeyError`]; nothing is changed then.
pub async fn advance(
    db: &Db,
    kek: &Kek,
    config: &Config,
    now: i64,
) -> Result<Vec<KeyEvent>, KeyError> {
    let mut step = Step::begin(db, "issuer", now).await?;
    let keys = list_in(step.conn()).await?;
    let active = keys.iter().find(|k| k.state == KeyState::Active);
    let due_pending = keys
        .iter()
        .filter(|k| k.state == KeyState::Pending && k.activate_at <= now)
        .min_by_key(|k| k.activate_at);

    if let Some(pending) = due_pending {
        let retired = active.map(|a| a.kid.clone());
        promote(&mut step, config, &pending.kid, retired.as_deref()).await?;
        let kid = pending.kid.clone();
        step.record(KeyEvent::Activated { kid, retired }).await?;
    } else if active.is_none() {
        // First start (or everything revoked with nothing pending): sign at once.
        let kid = create(&mut step, kek, now, KeyState::Active).await?;
        step.record(KeyEvent::CreatedActive { kid }).await?;
    }

    for retired in keys.iter().filter(|k| k.state == KeyState::Retired) {
        if retired.remove_at.is_some_and(|at| at <= now) {
            set_state(&mut step, &retired.kid, KeyState::Removed).await?;
            let kid = retired.kid.clone();
            step.record(KeyEvent::Removed { kid }).await?;
        }
    }

    let interval = i64::try_from(config.key_rotation_interval_secs).unwrap_or(i64::MAX);
    let has_pending = keys.iter().any(|k| k.state == KeyState::Pending);
    let active_since = active.map(|a| a.activate_at);
    if !has_pending && active_since.is_some_and(|since| now - since >= interval) {
        schedule(&mut step, kek, config).await?;
    }
    step.commit().await
}

/// On-demand rotation by `actor`: a new pending key, signing after the publish lead.
///
/// # Errors
/// [`KeyError`]; nothing is changed then.
pub async fn rotate(
    db: &Db,
    kek: &Kek,
    config: &Config,
    actor: &str,
    now: i64,
) -> Result<KeyEvent, KeyError> {
    let mut step = Step::begin(db, actor, now).await?;
    let event = schedule(&mut step, kek, config).await?;
    step.commit().await?;
    Ok(event)
}

async fn schedule(step: &mut Step<'_>, kek: &Kek, config: &Config) -> Result<KeyEvent, KeyError> {
    let lead = i64::try_from(config.key_publish_lead_secs()).unwrap_or(i64::MAX);
    let signs_from = step.now.saturating_add(lead);
    let kid = create(step, kek, signs_from, KeyState::Pending).await?;
    let event = KeyEvent::Scheduled { kid, signs_from };
    step.record(event.clone()).await?;
    Ok(event)
}

/// Emergency revocation of `kid` by `actor`, in one transaction with its feed entry and
/// audit row: out of the JWKS at once, onto the revocation feed for good; if it was
/// signing, a pending key (already published) or a fresh key takes over now.
///
/// # Errors
/// [`KeyError::NotFound`] for an unknown, removed or already revoked key; any other
/// [`KeyError`] leaves everything as it was.
pub async fn revoke(
    db: &Db,
    kek: &Kek,
    config: &Config,
    kid: &str,
    actor: &str,
    now: i64,
) -> Result<KeyEvent, KeyError> {
    let mut step = Step::begin(db, actor, now).await?;
    let keys = list_in(step.conn()).await?;
    let target = keys
        .iter()
        .find(|k| {
            k.kid == kid
                && matches!(
                    k.state,
                    KeyState::Pending | KeyState::Active | KeyState::Retired
                )
        })
        .ok_or_else(|| KeyError::NotFound {
            kid: kid.to_owned(),
            action: "revoked",
        })?;
    sqlx::query("UPDATE signing_keys SET state = 'revoked', revoked_at = $1 WHERE kid = $2")
        .bind(now)
        .bind(kid)
        .execute(step.conn())
        .await?;
    revocations::record(&mut step.tx, db, Revoked::Key, kid, now).await?;
    let successor = if target.state == KeyState::Active {
        let pending = keys
            .iter()
            .filter(|k| k.state == KeyState::Pending)
            .min_by_key(|k| k.activate_at);
        Some(match pending {
            Some(pending) => {
                promote(&mut step, config, &pending.kid, None).await?;
                pending.kid.clone()
            }
            None => create(&mut step, kek, now, KeyState::Active).await?,
        })
    } else {
        None
    };
    let event = KeyEvent::Revoked {
        kid: kid.to_owned(),
        successor,
    };
    step.record(event.clone()).await?;
    step.commit().await?;
    Ok(event)
}

async fn promote(
    step: &mut Step<'_>,
    config: &Config,
    kid: &str,
    previous: Option<&str>,
) -> Result<(), KeyError> {
    let now = step.now;
    if let Some(previous) = previous {
        let lifetime = i64::try_from(config.token_lifetime_secs).unwrap_or(3600);
        sqlx::query(
            "UPDATE signing_keys SET state = 'retired', retired_at = $1, remove_at = $2 WHERE kid = $3",
        )
        .bind(now)
        .bind(now + lifetime + RETIRE_GRACE_SECS)
        .bind(previous)
        .execute(step.conn())
        .await?;
    }
    sqlx::query("UPDATE signing_keys SET state = 'active', activate_at = $1 WHERE kid = $2")
        .bind(now)
        .bind(kid)
        .execute(step.conn())
        .await?;
    Ok(())
}

async fn set_state(step: &mut Step<'_>, kid: &str, state: KeyState) -> Result<(), KeyError> {
    sqlx::query("UPDATE signing_keys SET state = $1 WHERE kid = $2")
        .bind(state.as_str())
        .bind(kid)
        .execute(step.conn())
        .await?;
    Ok(())
}
