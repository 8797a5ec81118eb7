//! What an instance signs with ([`ActiveKey`], through `ring`) and publishes
//! ([`SigningKeys`]), loaded from the database.

use base64ct::{Base64UrlUnpadded, Encoding};
use p256::ecdsa::SigningKey;
use sqlx::Row;

use super::{Kek, KeyError};
use crate::db::Db;

/// The signing key in use, ready to sign access tokens.
///
/// Signs with `ring` (several times faster than pure-Rust `p256` for ES256 signing:
/// `cargo bench -p issuer --bench signer`);
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

    /// A compact JWS (`at+jwt`, ES256, this `kid`, low-S) over the JSON of `claims`.
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
        // Verifiers take only low-S signatures (one spelling per token); ring does not
        // normalise, so half of its signatures are mirrored here (S -> n - S).
        let signature = p256::ecdsa::Signature::from_slice(signature.as_ref())
            .map_err(|_| KeyError::Sign("ring gave a malformed signature".into()))?;
        let signature = signature.normalize_s().unwrap_or(signature);
        token.push('.');
        token.push_str(&Base64UrlUnpadded::encode_string(&signature.to_bytes()));
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
    /// The same published keys, with none to sign with.
    #[must_use]
    pub fn without_signer(&self) -> Self {
        Self {
            active: None,
            active_since: None,
            jwks: self.jwks.clone(),
            jwks_json: self.jwks_json.clone(),
        }
    }

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
