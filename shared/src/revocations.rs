//! The edge's view of the issuer's revocation feed: revoked token ids and key ids, each kept
//! until it no longer matters. The edge pulls `GET /revocations?since=CURSOR`, applies the
//! page with [`RevocationList::apply`], and asks [`RevocationList::is_revoked`] per request.

use std::collections::HashMap;

use serde::Deserialize;

use crate::time::UnixTime;
use crate::token::VerifiedToken;

/// What a feed entry revokes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevokedKind {
    /// One token, by `jti`.
    Jti,
    /// Every token signed by a key, by `kid`.
    Kid,
}

/// One feed entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Revocation {
    /// Token or key.
    pub kind: RevokedKind,
    /// The `jti` or `kid`.
    pub value: String,
    /// Seconds since the epoch after which the entry no longer matters (the token or every
    /// token of the key has expired).
    pub expires_at: u64,
}

/// One page of the feed, as the issuer sends it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FeedPage {
    /// The cursor to send as `since` next time.
    pub cursor: i64,
    /// Whether another page is waiting now.
    pub more: bool,
    /// New entries, oldest first.
    pub revocations: Vec<Revocation>,
}

/// Largest accepted feed page, in bytes.
pub const MAX_FEED_PAGE_BYTES: usize = 1024 * 1024;

/// Why a feed page was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FeedError {
    /// Larger than [`MAX_FEED_PAGE_BYTES`].
    #[error("revocation feed page of {len} bytes is too large")]
    TooLarge {
        /// Page length.
        len: usize,
    },
    /// Not the feed's JSON shape.
    #[error("revocation feed page is malformed")]
    Malformed(#[source] serde_json::Error),
}

impl FeedPage {
    /// Parses a page.
    ///
    /// # Errors
    /// [`FeedError`].
    pub fn parse(json: &str) -> Result<Self, FeedError> {
        if json.len() > MAX_FEED_PAGE_BYTES {
            return Err(FeedError::TooLarge { len: json.len() });
        }
        serde_json::from_slice(json.as_bytes()).map_err(FeedError::Malformed)
    }
}

/// Revoked token and key ids with their expiry, and the feed cursor.
#[derive(Debug, Clone, Default)]
pub struct RevocationList {
    entries: HashMap<(RevokedKind, String), u64>,
    cursor: i64,
}

impl RevocationList {
    /// An empty list at cursor 0.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies a page at `now`, dropping entries that expired; returns the key ids it newly
    /// revoked (the caller drops cached tokens signed by them).
    pub fn apply(&mut self, page: FeedPage, now: UnixTime) -> Vec<String> {
        let mut new_kids = Vec::new();
        for entry in page.revocations {
            if entry.expires_at <= now.as_secs() {
                continue;
            }
            if entry.kind == RevokedKind::Kid
                && !self
                    .entries
                    .contains_key(&(RevokedKind::Kid, entry.value.clone()))
            {
                new_kids.push(entry.value.clone());
            }
            let expiry = self.entries.entry((entry.kind, entry.value)).or_insert(0);
            *expiry = (*expiry).max(entry.expires_at);
        }
        self.cursor = self.cursor.max(page.cursor);
        self.prune(now);
        new_kids
    }

    /// Drops entries that no longer matter at `now`.
    pub fn prune(&mut self, now: UnixTime) {
        let now = now.as_secs();
        self.entries.retain(|_, expires_at| *expires_at > now);
    }

    /// Whether the token's `jti` or signing key is revoked.
    #[must_use]
    pub fn is_revoked(&self, token: &VerifiedToken) -> bool {
        self.entries
            .contains_key(&(RevokedKind::Jti, token.claims().jti.clone()))
            || self
                .entries
                .contains_key(&(RevokedKind::Kid, token.kid().to_owned()))
    }

    /// The cursor to send as `since`.
    #[must_use]
    pub fn cursor(&self) -> i64 {
        self.cursor
    }

    /// Number of live entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
