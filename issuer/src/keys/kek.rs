//! The key-encryption key (KEK): AES-256-GCM over each stored private key, with the key id
//! as associated data, and the KEK rotation's second step ([`rewrap`]).

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64ct::{Base64, Encoding};
use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use sha2::Sha256;
use sqlx::Row;

use super::KeyError;
use crate::config::Config;
use crate::db::Db;

/// The AES-256-GCM key that encrypts private keys at rest, and during a KEK rotation the
/// previous one (`ISSUER_PREVIOUS_KEK`), still accepted for opening until `keys rewrap` has
/// sealed every key under the current one.
pub struct Kek {
    cipher: Aes256Gcm,
    previous: Option<Aes256Gcm>,
    /// HMAC-SHA256 under the KEK's bytes, for keys derived from it ([`Kek::derive`]).
    deriver: Hmac<Sha256>,
    /// The same under the previous KEK's bytes ([`Kek::derive_previous`]).
    previous_deriver: Option<Hmac<Sha256>>,
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
        let bytes = secret_bytes(text)
            .ok_or_else(|| KeyError::Kek("must be 32 bytes as hex or base64".into()))?;
        let cipher =
            Aes256Gcm::new_from_slice(&bytes).map_err(|_| KeyError::Kek("bad length".into()))?;
        let deriver = <Hmac<Sha256> as Mac>::new_from_slice(&bytes)
            .map_err(|_| KeyError::Kek("bad length".into()))?;
        Ok(Self {
            cipher,
            previous: None,
            deriver,
            previous_deriver: None,
        })
    }

    /// This KEK, also opening what `previous` sealed (a KEK rotation in progress).
    #[must_use]
    pub fn with_previous(self, previous: Kek) -> Self {
        Self {
            cipher: self.cipher,
            previous: Some(previous.cipher),
            deriver: self.deriver,
            previous_deriver: Some(previous.deriver),
        }
    }

    /// A 32-byte key for `purpose`, the same on every instance that holds this KEK (HMAC-SHA256
    /// of the purpose under the KEK): what instances must share but need not store, such as
    /// the DPoP nonce key. A KEK rotation changes it.
    #[must_use]
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        Self::derive_under(&self.deriver, purpose)
    }

    /// The key for `purpose` that the previous KEK derived, during a KEK rotation: what other
    /// instances, not yet restarted with the new KEK, still use (the DPoP nonces they hand
    /// out).
    #[must_use]
    pub fn derive_previous(&self, purpose: &str) -> Option<[u8; 32]> {
        self.previous_deriver
            .as_ref()
            .map(|deriver| Self::derive_under(deriver, purpose))
    }

    fn derive_under(deriver: &Hmac<Sha256>, purpose: &str) -> [u8; 32] {
        let mut mac = deriver.clone();
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Whether a previous KEK is configured.
    #[must_use]
    pub fn has_previous(&self) -> bool {
        self.previous.is_some()
    }

    /// `nonce || ciphertext || tag`, with the key id as associated data so a blob cannot be
    /// moved to another row.
    pub(super) fn seal(&self, kid: &str, secret: &[u8]) -> Result<Vec<u8>, KeyError> {
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
    pub(super) fn open(&self, kid: &str, blob: &[u8]) -> Result<Vec<u8>, KeyError> {
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

/// A 32-byte secret written as 64 hex digits or standard base64 (the KEK, the audit key).
pub(crate) fn secret_bytes(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    hex::decode(text)
        .ok()
        .or_else(|| Base64::decode_vec(text).ok())
        .filter(|bytes| bytes.len() == 32)
}

/// Creates `path` readable by its owner only, with `text` (a development secret).
pub(crate) fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(text.as_bytes())
}
