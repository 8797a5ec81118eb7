//! The database: one `sqlx` Any pool over SQLite (embedded) or PostgreSQL (production), with
//! the same schema migrated from `migrations/sqlite` or `migrations/postgres`.
//!
//! Queries are written once in the common dialect (`$1` placeholders, `BIGINT` seconds,
//! byte strings, `ON CONFLICT`), which both backends accept.

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::AnyPool;

use crate::audit::{self, AuditKey, AuditKeyError, Entry};
use crate::config::Config;

/// A database handle; cheap to clone.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    sqlite: bool,
    /// The key of the audit trail's HMAC chain (`crate::audit`).
    audit_key: AuditKey,
}

/// Why the database could not be opened or migrated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// Connecting failed (bad URL, server down, file not creatable).
    #[error("cannot open the database: {0}")]
    Connect(#[source] sqlx::Error),
    /// Creating the SQLite data directory failed.
    #[error("cannot create the data directory: {0}")]
    DataDir(#[source] std::io::Error),
    /// A migration failed.
    #[error("database migration failed: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// A backup could not be written.
    #[error("backup failed: {0}")]
    Backup(String),
    /// The database only reads (a replica) and lacks migrations this binary needs: upgrade
    /// the primary first.
    #[error("the database is read-only and lacks migration {version} of this release: migrate the primary first")]
    ReadOnlyBehind {
        /// The first missing migration version.
        version: i64,
    },
    /// A query failed.
    #[error("database query failed: {0}")]
    Query(#[source] sqlx::Error),
    /// PostgreSQL runs transactions at another default isolation than READ COMMITTED, which
    /// the audit chain's ordering needs.
    #[error("the database's default_transaction_isolation is {0:?}: the issuer needs \"read committed\" (PostgreSQL's default)")]
    Isolation(String),
    /// The audit key could not be loaded.
    #[error(transparent)]
    AuditKey(#[from] AuditKeyError),
}

impl Db {
    /// Opens the pool (creating the SQLite file and directory if needed). SQLite runs in WAL
    /// mode so readers never wait for the writer.
    ///
    /// # Errors
    /// [`DbError`].
    pub async fn connect(config: &Config) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let sqlite = config.is_sqlite();
        let mut url = config.database_url.clone();
        if sqlite {
            if let Some(path) = url
                .strip_prefix("sqlite://")
                .or_else(|| url.strip_prefix("sqlite:"))
            {
                if let Some(parent) = std::path::Path::new(path).parent() {
                    if !parent.as_os_str().is_empty() && !path.starts_with(':') {
                        std::fs::create_dir_all(parent).map_err(DbError::DataDir)?;
                    }
                }
            }
            if !url.contains('?') {
                url.push_str("?mode=rwc");
            }
        }
        let options = AnyConnectOptions::from_str(&url).map_err(DbError::Connect)?;
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite {
                config.database_max_connections.min(8)
            } else {
                config.database_max_connections
            })
            .acquire_timeout(Duration::from_secs(3))
            // An embedded SQLite connection cannot go stale as a network one can, and the
            // check before each use is a round trip to the connection's worker thread: a
            // wakeup of that thread and of the task, on every acquire. (sqlx still checks
            // each connection as it goes back to the pool, and drops one whose worker died.)
            .test_before_acquire(!sqlite)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // The wait for a lock first: the next statement may find the
                        // database locked by another process (an instance's key schedule).
                        sqlx::query("PRAGMA busy_timeout = 5000")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(DbError::Connect)?;
        if !sqlite {
            // The audit chain reads the row committed before its own under an advisory lock:
            // with a snapshot taken earlier in the transaction (REPEATABLE READ and above) it
            // would chain to a stale row.
            let isolation: String = sqlx::query_scalar("SHOW default_transaction_isolation")
                .fetch_one(&pool)
                .await
                .map_err(DbError::Query)?;
            if isolation != "read committed" {
                return Err(DbError::Isolation(isolation));
            }
        }
        let (audit_key, development) = AuditKey::load(config)?;
        if development {
            tracing::warn!(
                path = %config.data_dir.join("dev-audit-key").display(),
                "USING A DEVELOPMENT AUDIT KEY stored next to the data: set ISSUER_AUDIT_KEY or audit_key_file in production, the same on every instance"
            );
        }
        Ok(Self {
            pool,
            sqlite,
            audit_key,
        })
    }

    /// Applies pending migrations for this backend. On a read-only database (a region's
    /// replica) nothing can be applied: it checks instead that every migration of this
    /// release is already there (the primary applies them).
    ///
    /// # Errors
    /// [`DbError::Migrate`], [`DbError::ReadOnlyBehind`].
    pub async fn migrate(&self) -> Result<(), DbError> {
        let migrator = if self.sqlite {
            sqlx::migrate!("migrations/sqlite")
        } else {
            sqlx::migrate!("migrations/postgres")
        };
        if !self.read_only().await? {
            return migrator.run(&self.pool).await.map_err(DbError::Migrate);
        }
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await
                .map_err(DbError::Query)?;
        match migrator.iter().find(|m| !applied.contains(&m.version)) {
            Some(missing) => Err(DbError::ReadOnlyBehind {
                version: missing.version,
            }),
            None => Ok(()),
        }
    }

    /// Whether this database only reads: a PostgreSQL standby, or one whose transactions are
    /// read-only by default. SQLite never is.
    ///
    /// # Errors
    /// [`DbError::Query`].
    pub async fn read_only(&self) -> Result<bool, DbError> {
        if self.sqlite {
            return Ok(false);
        }
        let read_only: i32 = sqlx::query_scalar(
            "SELECT CASE WHEN pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on' \
             THEN 1 ELSE 0 END",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(DbError::Query)?;
        Ok(read_only == 1)
    }

    /// The pool, for queries.
    #[must_use]
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Whether the backend is SQLite.
    #[must_use]
    pub fn is_sqlite(&self) -> bool {
        self.sqlite
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// Writes a consistent copy of the embedded SQLite database to `path` while it serves
    /// (`VACUUM INTO`). Restoring is copying the file back with the issuer stopped; the copy
    /// needs the same key-encryption key. PostgreSQL is backed up with `pg_dump` instead.
    ///
    /// # Errors
    /// [`DbError::Backup`] if the backend is PostgreSQL, `path` exists, or SQLite fails.
    pub async fn backup(&self, path: &std::path::Path) -> Result<(), DbError> {
        if !self.sqlite {
            return Err(DbError::Backup(
                "PostgreSQL is backed up with pg_dump (see deploy/); `issuer backup` copies SQLite"
                    .into(),
            ));
        }
        if path.exists() {
            return Err(DbError::Backup(format!(
                "{} already exists",
                path.display()
            )));
        }
        let target = path
            .to_str()
            .ok_or_else(|| DbError::Backup("the path must be UTF-8".into()))?;
        sqlx::query("VACUUM INTO $1")
            .bind(target)
            .execute(&self.pool)
            .await
            .map_err(|err| DbError::Backup(err.to_string()))?;
        Ok(())
    }

    /// Appends `entry` to the audit trail in a transaction of its own.
    ///
    /// # Errors
    /// The database error.
    pub async fn audit(&self, entry: &Entry<'_>) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        self.audit_in(&mut tx, entry).await?;
        tx.commit().await
    }

    /// Appends `entry` to the audit trail inside the caller's transaction, so the row
    /// commits (or not) with the change it records.
    ///
    /// # Errors
    /// The database error.
    pub async fn audit_in(
        &self,
        conn: &mut sqlx::AnyConnection,
        entry: &Entry<'_>,
    ) -> Result<(), sqlx::Error> {
        audit::append(conn, &self.audit_key, !self.sqlite, entry).await
    }

    /// Checks the audit trail's chain (see [`audit::verify`]).
    ///
    /// # Errors
    /// The first row that breaks it, or the database error.
    pub async fn verify_audit(&self) -> Result<audit::Intact, audit::AuditError> {
        audit::verify(&self.pool, &self.audit_key).await
    }

    /// Takes or renews the named lease for `holder` until `now + ttl`; `true` if held.
    /// Several instances call this before a shared job; only one gets it at a time.
    ///
    /// # Errors
    /// The database error.
    pub async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now: i64,
        ttl_secs: i64,
    ) -> Result<bool, sqlx::Error> {
        let result = sqlx::query(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE leases.expires_at < $4 OR leases.holder = excluded.holder",
        )
        .bind(name)
        .bind(holder)
        .bind(now + ttl_secs)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }
}

/// Seconds since the epoch, from the system clock (the issuer's only clock).
#[must_use]
pub fn unix_now() -> i64 {
    i64::try_from(precise_now().as_secs()).unwrap_or(i64::MAX)
}

/// The system clock with millisecond resolution, for rate limits: with whole seconds, two
/// requests straddling a second boundary would look a full second apart.
#[must_use]
pub fn precise_now() -> shared::UnixTime {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    shared::UnixTime::from_millis(millis)
}
