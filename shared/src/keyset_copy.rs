//! The MAC on the edge's Cache API copy of its key set.
//!
//! A Cloudflare zone's Cache API is shared by every Worker on the zone, so any script there
//! could `put` a key set of its own under the edge's cache key, and every new isolate of the
//! colo would trust it. The edge therefore stores the copy with an HMAC-SHA256 tag under a
//! Worker secret of its own ([`CopyKey`]), over the cache key, the body and every header it
//! trusts when reading the copy back (when it was fetched, the issuer's `Cache-Control`, the
//! `ETag`), and refuses a copy whose tag does not verify. A planted or edited copy is then
//! just a cache miss: the isolate fetches from the issuer.
//!
//! The copy is also stored under a cache key derived from the secret ([`CopyKey::cache_key`]),
//! so no other script can find it: not to read a copy now and put it back after a key in it
//! was revoked (a replayed copy's tag would still verify), nor to overwrite it.
//!
//! The MAC input is unambiguous: a fixed label, then each field with its length (optional
//! fields with a presence byte), so no two different copies share an input.

use base64ct::{Base64UrlUnpadded, Encoding};
use hmac::Mac;

use crate::mac::{finish, keyed, HmacSha256};

/// Shortest accepted secret, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// Names the MAC's purpose and version, so a tag made for anything else never verifies.
const LABEL: &[u8] = b"edgeward keyset copy v1";

/// Why a copy key was refused (a configuration error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CopyKeyError {
    /// The secret is shorter than [`MIN_SECRET_LEN`] bytes.
    #[error("the key set copy secret must be at least {MIN_SECRET_LEN} bytes")]
    ShortSecret,
}

/// Why a stored copy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CopyError {
    /// The copy carries no tag (written by something other than this edge).
    #[error("the cached key set has no MAC")]
    Missing,
    /// The tag is not base64url of an HMAC-SHA256 tag, or does not match the copy.
    #[error("the cached key set's MAC does not verify")]
    Mismatch,
}

/// What the copy holds, as stored and as read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyFields<'a> {
    /// The Cache API key it is stored under (the first JWKS URL).
    pub cache_key: &'a str,
    /// The key set document.
    pub body: &'a str,
    /// When the set was fetched, milliseconds since the epoch.
    pub fetched_at_ms: u64,
    /// The issuer's `Cache-Control` at that fetch.
    pub cache_control: Option<&'a str>,
    /// The issuer's `ETag` at that fetch.
    pub etag: Option<&'a str>,
}

/// The Worker secret that tags copies.
#[derive(Clone)]
pub struct CopyKey {
    keyed: HmacSha256,
}

impl core::fmt::Debug for CopyKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("CopyKey(<redacted>)")
    }
}

impl CopyKey {
    /// A key from the secret's bytes.
    ///
    /// # Errors
    /// [`CopyKeyError::ShortSecret`].
    pub fn new(secret: &[u8]) -> Result<Self, CopyKeyError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(CopyKeyError::ShortSecret);
        }
        Ok(Self {
            keyed: keyed(secret),
        })
    }

    /// The Cache API key for the copy of the set fetched from `url`: `url` with a query
    /// parameter derived from the secret, which no other script on the zone can compute.
    #[must_use]
    pub fn cache_key(&self, url: &str) -> String {
        let tag = finish(
            self.keyed.clone(),
            &[b"edgeward keyset copy location v1", url.as_bytes()],
        );
        let mut key = String::from(url);
        key.push(if url.contains('?') { '&' } else { '?' });
        key.push_str("edgeward-copy=");
        key.push_str(&Base64UrlUnpadded::encode_string(
            tag.get(..16).unwrap_or_default(),
        ));
        key
    }

    fn mac(&self, fields: &CopyFields<'_>) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        let mut field = |bytes: &[u8]| {
            mac.update(&u64::try_from(bytes.len()).unwrap_or(u64::MAX).to_be_bytes());
            mac.update(bytes);
        };
        field(LABEL);
        field(fields.cache_key.as_bytes());
        field(fields.body.as_bytes());
        field(&fields.fetched_at_ms.to_be_bytes());
        for optional in [fields.cache_control, fields.etag] {
            match optional {
                Some(text) => {
                    field(&[1]);
                    field(text.as_bytes());
                }
                None => field(&[0]),
            }
        }
        mac
    }

    /// The tag to store with the copy (base64url).
    #[must_use]
    pub fn seal(&self, fields: &CopyFields<'_>) -> String {
        Base64UrlUnpadded::encode_string(&finish(self.mac(fields), &[]))
    }

    /// Checks the stored `tag` against the copy as read back (in constant time).
    ///
    /// # Errors
    /// [`CopyError`].
    pub fn open(&self, fields: &CopyFields<'_>, tag: Option<&str>) -> Result<(), CopyError> {
        let tag = tag.ok_or(CopyError::Missing)?;
        // The expected tag's text, compared in constant time (no early exit on a difference).
        let expected = self.seal(fields);
        let differences = expected
            .bytes()
            .zip(tag.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if expected.len() == tag.len() && differences == 0 {
            Ok(())
        } else {
            Err(CopyError::Mismatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn fields() -> CopyFields<'static> {
        CopyFields {
            cache_key: "https://issuer.example/.well-known/jwks.json",
            body: r#"{"keys":[]}"#,
            fetched_at_ms: 1_800_000_000_000,
            cache_control: Some("public, max-age=300"),
            etag: Some("\"e1\""),
        }
    }

    #[test]
    fn a_sealed_copy_opens_and_any_edit_is_refused() {
        let key = CopyKey::new(SECRET).unwrap_or_else(|_| unreachable!());
        let tag = key.seal(&fields());
        assert_eq!(key.open(&fields(), Some(&tag)), Ok(()));
        assert_eq!(key.open(&fields(), None), Err(CopyError::Missing));
        assert_eq!(
            key.open(&fields(), Some("not base64!")),
            Err(CopyError::Mismatch)
        );
        let edits = [
            CopyFields {
                body: r#"{"keys":[{"kid":"planted"}]}"#,
                ..fields()
            },
            CopyFields {
                fetched_at_ms: 1_900_000_000_000,
                ..fields()
            },
            CopyFields {
                cache_control: Some("public, max-age=3600"),
                ..fields()
            },
            CopyFields {
                cache_control: None,
                ..fields()
            },
            CopyFields {
                etag: None,
                ..fields()
            },
            CopyFields {
                cache_key: "https://other.example/jwks",
                ..fields()
            },
        ];
        for edited in edits {
            assert_eq!(
                key.open(&edited, Some(&tag)),
                Err(CopyError::Mismatch),
                "{edited:?}"
            );
        }
        let other = CopyKey::new(b"another secret of at least 32 bytes!!")
            .unwrap_or_else(|_| unreachable!());
        assert_eq!(other.open(&fields(), Some(&tag)), Err(CopyError::Mismatch));
    }

    #[test]
    fn the_cache_key_depends_on_the_secret() {
        let url = "https://issuer.example/.well-known/jwks.json";
        let key = CopyKey::new(SECRET).unwrap_or_else(|_| unreachable!());
        let other = CopyKey::new(b"another secret of at least 32 bytes!!")
            .unwrap_or_else(|_| unreachable!());
        let at = key.cache_key(url);
        assert!(at.starts_with("https://issuer.example/.well-known/jwks.json?edgeward-copy="));
        assert_eq!(at, key.cache_key(url), "stable");
        assert_ne!(at, other.cache_key(url));
        assert!(key
            .cache_key("https://h/jwks?v=1")
            .contains("?v=1&edgeward-copy="));
    }

    #[test]
    fn short_secrets_are_refused() {
        assert_eq!(
            CopyKey::new(b"short").map(|_| ()),
            Err(CopyKeyError::ShortSecret)
        );
    }
}
