//! A bounded cache of verified tokens, so a token seen again skips the signature check.
//!
//! Keyed by the SHA-256 of the compact token: the cache never holds token text, and finding a
//! second token with the same key would mean breaking SHA-256. An entry lives until the
//! token's `exp` (or the cache's `max_ttl`, if shorter), and goes when its signing key leaves
//! the key set (or its `kid` comes to name another key there) or its `jti` is revoked. Only
//! verified tokens go in, so an attacker cannot fill it; when full, the entry closest to
//! expiry makes room.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::jwks::Jwks;
use crate::time::UnixTime;
use crate::token::VerifiedToken;

type TokenHash = [u8; 32];

#[derive(Debug)]
struct Entry {
    /// Seconds since the epoch after which the entry is dead.
    expires_at: u64,
    token: Arc<VerifiedToken>,
}

/// A compact token's SHA-256: its cache key, and the hash a DPoP proof's `ath` states
/// (`dpop::ProofRequest::access_token`). A fresh token is looked up and then inserted, and a
/// bound token's proof is checked against it: computing it once saves hashing the token
/// again for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenKey(TokenHash);

impl TokenKey {
    /// The key of `token` (the compact JWS, as received).
    #[must_use]
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// The token's SHA-256.
    pub(crate) const fn digest(&self) -> &TokenHash {
        &self.0
    }
}

/// Verified tokens by hash, bounded in count and lifetime.
#[derive(Debug)]
pub struct TokenCache {
    capacity: usize,
    max_ttl_secs: u64,
    entries: HashMap<TokenHash, Entry>,
    by_expiry: BTreeSet<(u64, TokenHash)>,
}

impl TokenCache {
    /// An empty cache for at most `capacity` tokens, each kept until its `exp`.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self::with_max_ttl(capacity, u64::MAX)
    }

    /// As [`TokenCache::new`], also capping each entry's life at `max_ttl_secs` from insertion.
    #[must_use]
    pub fn with_max_ttl(capacity: usize, max_ttl_secs: u64) -> Self {
        Self {
            capacity,
            max_ttl_secs,
            entries: HashMap::with_capacity(capacity.min(4096)),
            by_expiry: BTreeSet::new(),
        }
    }

    /// The verified token for this compact token, if cached and still alive at `now`.
    #[must_use]
    pub fn get(&self, token: &str, now: UnixTime) -> Option<Arc<VerifiedToken>> {
        self.get_key(&TokenKey::of(token), now)
    }

    /// As [`TokenCache::get`], by a key computed once for both the lookup and the insert.
    #[must_use]
    pub fn get_key(&self, key: &TokenKey, now: UnixTime) -> Option<Arc<VerifiedToken>> {
        let entry = self.entries.get(&key.0)?;
        (now.as_secs() < entry.expires_at).then(|| Arc::clone(&entry.token))
    }

    /// Caches a token verified at `now`, returning the shared handle. A token already past
    /// its life, or a cache of capacity zero, stores nothing.
    pub fn insert(
        &mut self,
        token: &str,
        verified: VerifiedToken,
        now: UnixTime,
    ) -> Arc<VerifiedToken> {
        self.insert_key(TokenKey::of(token), verified, now)
    }

    /// As [`TokenCache::insert`], by the key [`TokenCache::get_key`] missed with.
    pub fn insert_key(
        &mut self,
        key: TokenKey,
        verified: VerifiedToken,
        now: UnixTime,
    ) -> Arc<VerifiedToken> {
        let verified = Arc::new(verified);
        let now_secs = now.as_secs();
        let expires_at = verified
            .claims()
            .exp
            .min(now_secs.saturating_add(self.max_ttl_secs));
        if expires_at <= now_secs || self.capacity == 0 {
            return verified;
        }
        let key = key.0;
        self.remove_key(&key);
        self.evict_expired(now_secs);
        while self.entries.len() >= self.capacity {
            let Some(&(_, soonest)) = self.by_expiry.first() else {
                break;
            };
            self.remove_key(&soonest);
        }
        self.by_expiry.insert((expires_at, key));
        self.entries.insert(
            key,
            Entry {
                expires_at,
                token: Arc::clone(&verified),
            },
        );
        verified
    }

    /// Drops every entry signed by a key that is no longer in `jwks`: its `kid` gone, or
    /// published again with another point.
    pub fn retain_keys(&mut self, jwks: &Jwks) {
        self.remove_where(|token| {
            !jwks
                .find(token.kid())
                .is_some_and(|key| token.verified_under(key))
        });
    }

    /// Drops every entry signed by `kid` (a revoked key).
    pub fn remove_kid(&mut self, kid: &str) {
        self.remove_where(|token| token.kid() == kid);
    }

    /// Drops the entry with this `jti` (a revoked token).
    pub fn remove_jti(&mut self, jti: &str) {
        self.remove_where(|token| token.claims().jti == jti);
    }

    /// Drops every entry.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.by_expiry.clear();
    }

    /// Number of entries, including any that expired but were not yet swept.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn evict_expired(&mut self, now_secs: u64) {
        while let Some(&(expires_at, key)) = self.by_expiry.first() {
            if expires_at > now_secs {
                break;
            }
            self.remove_key(&key);
        }
    }

    fn remove_key(&mut self, key: &TokenHash) {
        if let Some(entry) = self.entries.remove(key) {
            self.by_expiry.remove(&(entry.expires_at, *key));
        }
    }

    fn remove_where(&mut self, doomed: impl Fn(&VerifiedToken) -> bool) {
        let keys: Vec<TokenHash> = self
            .entries
            .iter()
            .filter(|(_, entry)| doomed(&entry.token))
            .map(|(key, _)| *key)
            .collect();
        for key in keys {
            self.remove_key(&key);
        }
    }
}
