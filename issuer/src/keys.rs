//! Signing keys: generated here (P-256), stored encrypted under the key-encryption key (KEK),
//! and moved through pending -> active -> retired -> removed (or revoked).
//!
//! - A new key is *pending*: published in the JWKS but not signing, for
//!   [`Config::key_publish_lead_secs`] (twice the JWKS cache lifetime), so every edge has it
//!   before its first token arrives.
//! - Then it becomes *active* and the previous active key *retired*: still published until
//!   every token it signed has expired (`remove_at`), then *removed*.
//! - `revoke` is the emergency path: the key leaves the JWKS at once, the revocation feed
//!   carries its id, and a pending key (already published) or a fresh one takes over.
//!
//! [`advance`] applies the schedule; instances run it under a database lease so two never
//! rotate at once. Every instance reloads [`SigningKeys`] from the database, so they agree.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64ct::{Base64, Base64UrlUnpadded, Encoding};
use p256::ecdsa::SigningKey;
use rand_core::{OsRng, RngCore};
use sqlx::Row;

use crate::config::Config;
use crate::db::Db;

/// Extra seconds a retired key stays published beyond the token lifetime (clock skew).
const RETIRE_GRACE_SECS: i64 = 60;

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
}

/// The AES-256-GCM key that encrypts private keys at rest, and during a KEK rotation the
/// previous one (`ISSUER_PREVIOUS_KEK`), still accepted for opening until `keys rewrap` has
/// sealed every key under the current one.
pub struct Kek {
    cipher: Aes256Gcm,
    previous: Option<Aes256Gcm>,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek(<redacted>)")
    }
}

/// Where the KEK came from (for the start-up log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KekSource {
    /// The `ISSUER_KEK` environment variable.
    Env,
    /// `kek_file`.
    File,
    /// A development key in `data_dir`, created on first start.
    Development,
}

impl Kek {
    /// From `ISSUER_KEK`, else `kek_file`, else the development key in `data_dir` (created
    /// if absent).
    ///
    /// # Errors
    /// [`KeyError::Kek`].
    pub fn load(config: &Config) -> Result<(Self, KekSource), KeyError> {
        let (kek, source) = Self::load_current(config)?;
        match std::env::var("ISSUER_PREVIOUS_KEK") {
            Ok(text) => Ok((kek.with_previous(Self::parse(&text)?), source)),
            Err(_) => Ok((kek, source)),
        }
    }

    fn load_current(config: &Config) -> Result<(Self, KekSource), KeyError> {
        if let Ok(text) = std::env::var("ISSUER_KEK") {
            return Ok((Self::parse(&text)?, KekSource::Env));
        }
        if let Some(path) = &config.kek_file {
            return Ok((Self::read(path)?, KekSource::File));
        }
        let path = config.data_dir.join("dev-kek");
        if !path.exists() {
            std::fs::create_dir_all(&config.data_dir).map_err(|e| KeyError::Kek(e.to_string()))?;
            let mut bytes = [0u8; 32];
            OsRng.fill_bytes(&mut bytes);
            write_private(&path, &Base64::encode_string(&bytes))
                .map_err(|e| KeyError::Kek(e.to_string()))?;
        }
        Ok((Self::read(&path)?, KekSource::Development))
    }

    fn read(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| KeyError::Kek(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text)
    }

    /// 32 bytes as 64 hex digits or standard base64.
    ///
    /// # Errors
    /// [`KeyError::Kek`].
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let bytes = hex::decode(text)
            .ok()
            .or_else(|| Base64::decode_vec(text).ok())
            .filter(|bytes| bytes.len() == 32)
            .ok_or_else(|| KeyError::Kek("must be 32 bytes as hex or base64".into()))?;
        let cipher =
            Aes256Gcm::new_from_slice(&bytes).map_err(|_| KeyError::Kek("bad length".into()))?;
        Ok(Self {
            cipher,
            previous: None,
        })
    }

    /// This KEK, also opening what `previous` sealed (a KEK rotation in progress).
    #[must_use]
    pub fn with_previous(self, previous: Kek) -> Self {
        Self {
            cipher: self.cipher,
            previous: Some(previous.cipher),
        }
    }

    /// Whether a previous KEK is configured.
    #[must_use]
    pub fn has_previous(&self) -> bool {
        self.previous.is_some()
    }

    /// `nonce || ciphertext || tag`, with the key id as associated data so a blob cannot be
    /// moved to another row.
    fn seal(&self, kid: &str, secret: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut nonce = [0u8; 12];
        OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: secret,
                    aad: kid.as_bytes(),
                },
            )
            .map_err(|_| KeyError::Corrupt {
                kid: kid.to_owned(),
            })?;
        let mut out = nonce.to_vec();
        out.extend(sealed);
        Ok(out)
    }

    /// Opens a sealed key with the current KEK, else the previous one.
    fn open(&self, kid: &str, blob: &[u8]) -> Result<Vec<u8>, KeyError> {
        let corrupt = || KeyError::Corrupt {
            kid: kid.to_owned(),
        };
        let (nonce, sealed) = blob.split_at_checked(12).ok_or_else(corrupt)?;
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| corrupt())?;
        let payload = || Payload {
            msg: sealed,
            aad: kid.as_bytes(),
        };
        self.cipher
            .decrypt(&Nonce::from(nonce), payload())
            .or_else(|err| match &self.previous {
                Some(previous) => previous.decrypt(&Nonce::from(nonce), payload()),
                None => Err(err),
            })
            .map_err(|_| KeyError::Decrypt {
                kid: kid.to_owned(),
            })
    }
}

/// Seals every stored private key under the current KEK (the second step of a KEK rotation:
/// instances already run with `ISSUER_KEK` = new and `ISSUER_PREVIOUS_KEK` = old). One
/// transaction; returns how many keys were resealed. Afterwards the previous KEK can go.
///
/// # Errors
/// [`KeyError`]: a key that opens under neither KEK stops the rewrap with nothing changed.
pub async fn rewrap(db: &Db, kek: &Kek) -> Result<usize, KeyError> {
    let mut tx = db.pool().begin().await?;
    let rows = sqlx::query("SELECT kid, private_key FROM signing_keys")
        .fetch_all(&mut *tx)
        .await?;
    let mut count = 0;
    for row in &rows {
        let kid: String = row.try_get("kid")?;
        let sealed: Vec<u8> = row.try_get("private_key")?;
        let resealed = kek.seal(&kid, &kek.open(&kid, &sealed)?)?;
        sqlx::query("UPDATE signing_keys SET private_key = $1 WHERE kid = $2")
            .bind(resealed)
            .bind(&kid)
            .execute(&mut *tx)
            .await?;
        count += 1;
    }
    tx.commit().await?;
    Ok(count)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(text.as_bytes())
}

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

/// Every key, newest first.
///
/// # Errors
/// The database error.
pub async fn list(db: &Db) -> Result<Vec<KeyInfo>, KeyError> {
    let rows = sqlx::query(
        "SELECT kid, state, created_at, activate_at, retired_at, remove_at, revoked_at \
         FROM signing_keys ORDER BY created_at DESC, kid",
    )
    .fetch_all(db.pool())
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

/// Creates a key that starts signing at `activate_at` (pending until then).
async fn create(
    db: &Db,
    kek: &Kek,
    now: i64,
    activate_at: i64,
    state: KeyState,
) -> Result<String, KeyError> {
    let signing = SigningKey::random(&mut OsRng);
    let mut id = [0u8; 12];
    OsRng.fill_bytes(&mut id);
    let kid = Base64UrlUnpadded::encode_string(&id);
    let sealed = kek.seal(&kid, &signing.to_bytes())?;
    let public = signing.verifying_key().to_encoded_point(false);
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
    .execute(db.pool())
    .await?;
    Ok(kid)
}

/// Applies the lifecycle at `now` and returns what changed (for the audit log and metrics):
/// promotes a due pending key (retiring the active one), removes retired keys whose tokens
/// have expired, creates the first key, and schedules the next rotation when the active key
/// is due. Call it under the `key-rotation` lease.
///
/// # Errors
/// [`KeyError`].
pub async fn advance(
    db: &Db,
    kek: &Kek,
    config: &Config,
    now: i64,
) -> Result<Vec<String>, KeyError> {
    let mut events = Vec::new();
    let keys = list(db).await?;
    let active = keys.iter().find(|k| k.state == KeyState::Active);
    let due_pending = keys
        .iter()
        .filter(|k| k.state == KeyState::Pending && k.activate_at <= now)
        .min_by_key(|k| k.activate_at);

    if let Some(pending) = due_pending {
        promote(
            db,
            config,
            now,
            &pending.kid,
            active.map(|a| a.kid.as_str()),
        )
        .await?;
        events.push(format!("activated {}", pending.kid));
    } else if active.is_none() {
        // First start (or everything revoked with nothing pending): sign at once.
        let kid = create(db, kek, now, now, KeyState::Active).await?;
        events.push(format!("created active {kid}"));
    }

    for retired in keys.iter().filter(|k| k.state == KeyState::Retired) {
        if retired.remove_at.is_some_and(|at| at <= now) {
            set_state(db, &retired.kid, KeyState::Removed).await?;
            events.push(format!("removed {}", retired.kid));
        }
    }

    let interval = i64::try_from(config.key_rotation_interval_secs).unwrap_or(i64::MAX);
    let has_pending = keys.iter().any(|k| k.state == KeyState::Pending);
    let active_since = active.map(|a| a.activate_at);
    if !has_pending && active_since.is_some_and(|since| now - since >= interval) {
        let kid = rotate(db, kek, config, now).await?;
        events.push(format!("scheduled {kid}"));
    }
    Ok(events)
}

/// On-demand rotation: a new pending key, signing after the publish lead.
///
/// # Errors
/// [`KeyError`].
pub async fn rotate(db: &Db, kek: &Kek, config: &Config, now: i64) -> Result<String, KeyError> {
    let lead = i64::try_from(config.key_publish_lead_secs()).unwrap_or(i64::MAX);
    create(db, kek, now, now.saturating_add(lead), KeyState::Pending).await
}

/// Emergency revocation of `kid`: out of the JWKS at once, onto the revocation feed; if it
/// was signing, a pending key (already published) or a fresh key takes over now. Returns the
/// key that signs afterwards, if it changed.
///
/// # Errors
/// [`KeyError::NotFound`] for an unknown, removed or already revoked key.
pub async fn revoke(
    db: &Db,
    kek: &Kek,
    config: &Config,
    kid: &str,
    now: i64,
) -> Result<Option<String>, KeyError> {
    let keys = list(db).await?;
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
        .execute(db.pool())
        .await?;
    // Tokens it signed live at most one token lifetime; the feed entry outlives them.
    let lifetime = i64::try_from(config.token_lifetime_secs).unwrap_or(3600);
    sqlx::query(
        "INSERT INTO revocations (kind, value, expires_at, created_at) VALUES ('kid', $1, $2, $3)",
    )
    .bind(kid)
    .bind(now + lifetime + RETIRE_GRACE_SECS)
    .bind(now)
    .execute(db.pool())
    .await?;
    if target.state != KeyState::Active {
        return Ok(None);
    }
    let successor = keys
        .iter()
        .filter(|k| k.state == KeyState::Pending)
        .min_by_key(|k| k.activate_at);
    let kid = match successor {
        Some(pending) => {
            promote(db, config, now, &pending.kid, None).await?;
            pending.kid.clone()
        }
        None => create(db, kek, now, now, KeyState::Active).await?,
    };
    Ok(Some(kid))
}

async fn promote(
    db: &Db,
    config: &Config,
    now: i64,
    kid: &str,
    previous: Option<&str>,
) -> Result<(), KeyError> {
    if let Some(previous) = previous {
        let lifetime = i64::try_from(config.token_lifetime_secs).unwrap_or(3600);
        sqlx::query("UPDATE signing_keys SET state = 'retired', retired_at = $1, remove_at = $2 WHERE kid = $3")
            .bind(now)
            .bind(now + lifetime + RETIRE_GRACE_SECS)
            .bind(previous)
            .execute(db.pool())
            .await?;
    }
    sqlx::query("UPDATE signing_keys SET state = 'active', activate_at = $1 WHERE kid = $2")
        .bind(now)
        .bind(kid)
        .execute(db.pool())
        .await?;
    Ok(())
}

async fn set_state(db: &Db, kid: &str, state: KeyState) -> Result<(), KeyError> {
    sqlx::query("UPDATE signing_keys SET state = $1 WHERE kid = $2")
        .bind(state.as_str())
        .bind(kid)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// The signing key in use, ready to sign access tokens.
///
/// Signs with `ring` (8x faster than pure-Rust `p256` for ES256 signing on this hardware);
/// the compact header for this key is encoded once.
pub struct ActiveKey {
    kid: String,
    key_pair: ring::signature::EcdsaKeyPair,
    header_b64: String,
    rng: ring::rand::SystemRandom,
}

impl std::fmt::Debug for ActiveKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActiveKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl ActiveKey {
    fn new(kid: String, signing: &SigningKey) -> Result<Self, KeyError> {
        let corrupt = || KeyError::Corrupt { kid: kid.clone() };
        let rng = ring::rand::SystemRandom::new();
        let public = signing.verifying_key().to_encoded_point(false);
        let key_pair = ring::signature::EcdsaKeyPair::from_private_key_and_public_key(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &signing.to_bytes(),
            public.as_bytes(),
            &rng,
        )
        .map_err(|_| corrupt())?;
        let header = serde_json::json!({ "alg": "ES256", "typ": "at+jwt", "kid": kid });
        let header_b64 = Base64UrlUnpadded::encode_string(header.to_string().as_bytes());
        Ok(Self {
            kid,
            key_pair,
            header_b64,
            rng,
        })
    }

    /// The key id.
    #[must_use]
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// A compact JWS (`at+jwt`, ES256, this `kid`) over the JSON of `claims`.
    ///
    /// # Errors
    /// [`KeyError::Sign`] if serialization or the system RNG fails.
    pub fn sign_jwt(&self, claims: &impl serde::Serialize) -> Result<String, KeyError> {
        let payload = serde_json::to_vec(claims).map_err(|err| KeyError::Sign(err.to_string()))?;
        let mut token = String::with_capacity(self.header_b64.len() + payload.len() * 4 / 3 + 100);
        token.push_str(&self.header_b64);
        token.push('.');
        token.push_str(&Base64UrlUnpadded::encode_string(&payload));
        let signature = self
            .key_pair
            .sign(&self.rng, token.as_bytes())
            .map_err(|_| KeyError::Sign("the system RNG failed".into()))?;
        token.push('.');
        token.push_str(&Base64UrlUnpadded::encode_string(signature.as_ref()));
        Ok(token)
    }
}

/// What an instance signs with and publishes, loaded from the database.
#[derive(Clone)]
pub struct SigningKeys {
    /// The active key, if any (`/readyz` is false without one).
    pub active: Option<std::sync::Arc<ActiveKey>>,
    /// When the active key started signing.
    pub active_since: Option<i64>,
    /// Published keys (pending, active, retired).
    pub jwks: shared::Jwks,
    /// The JWKS document, serialized once per load.
    pub jwks_json: String,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeys")
            .field("active", &self.active.as_ref().map(|key| key.kid()))
            .field("jwks", &self.jwks)
            .finish_non_exhaustive()
    }
}

impl SigningKeys {
    /// Loads the published keys and decrypts the active one.
    ///
    /// # Errors
    /// [`KeyError`], including [`KeyError::Decrypt`] for a wrong KEK.
    pub async fn load(db: &Db, kek: &Kek) -> Result<Self, KeyError> {
        let rows = sqlx::query(
            "SELECT kid, state, private_key, public_sec1, activate_at FROM signing_keys \
             WHERE state IN ('pending', 'active', 'retired') ORDER BY activate_at DESC, kid",
        )
        .fetch_all(db.pool())
        .await?;
        let mut published = Vec::with_capacity(rows.len());
        let mut active = None;
        let mut active_since = None;
        for row in &rows {
            let kid: String = row.try_get("kid")?;
            let state: String = row.try_get("state")?;
            let public: Vec<u8> = row.try_get("public_sec1")?;
            let jwk = shared::Jwk::from_sec1_bytes(&kid, &public)
                .map_err(|_| KeyError::Corrupt { kid: kid.clone() })?;
            published.push(jwk);
            if state == "active" {
                let sealed: Vec<u8> = row.try_get("private_key")?;
                let secret = kek.open(&kid, &sealed)?;
                let signing = SigningKey::from_slice(&secret)
                    .map_err(|_| KeyError::Corrupt { kid: kid.clone() })?;
                active_since = Some(row.try_get::<i64, _>("activate_at")?);
                active = Some(std::sync::Arc::new(ActiveKey::new(kid, &signing)?));
            }
        }
        let jwks = shared::Jwks::from_keys(published).map_err(|_| KeyError::Corrupt {
            kid: "(duplicate)".into(),
        })?;
        let jwks_json = jwks.to_json();
        Ok(Self {
            active,
            active_since,
            jwks,
            jwks_json,
        })
    }
}
