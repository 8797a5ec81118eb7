//! The edge's view of the issuer's revocation feed: revoked token ids, key ids and clients
//! (every token a client was issued up to a time), each kept until it no longer matters.
//! Entries of a kind this version does not know are skipped (and counted), so a newer
//! issuer never stops an older edge's feed; the issuer's docs say which kinds need which
//! edge release. The edge pulls `GET /revocations?since=CURSOR`, applies the
//! page with [`RevocationList::apply`], and asks [`RevocationList::is_revoked`] per request.

use std::collections::HashMap;

use serde::Deserialize;

use crate::json::{self, JsonError, Member};
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
    /// Every token issued to a client (by `client_id`) at or before `issued_before`.
    Client,
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
    /// For [`RevokedKind::Client`]: tokens with `iat` at or before this are revoked.
    pub issued_before: Option<u64>,
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
    /// Entries of kinds this version does not know, skipped.
    pub skipped: usize,
}

/// Largest accepted feed page, in bytes.
pub const MAX_FEED_PAGE_BYTES: usize = 1024 * 1024;

/// Shortest feed token, in bytes: the bearer credential an edge sends with its pulls so that
/// the issuer charges them to a budget of their own (`ISSUER_FEED_TOKENS`,
/// `REVOCATION_FEED_TOKEN`).
pub const MIN_FEED_TOKEN_LEN: usize = 32;
/// Longest feed token, in bytes (the issuer hashes no longer one a client presents).
pub const MAX_FEED_TOKEN_LEN: usize = 512;

/// Whether `token` can be a feed token: a bearer credential (`b64token`) of
/// [`MIN_FEED_TOKEN_LEN`] to [`MAX_FEED_TOKEN_LEN`] bytes. The one rule the issuer and the
/// edge check their settings against.
#[must_use]
pub fn is_feed_token(token: &str) -> bool {
    (MIN_FEED_TOKEN_LEN..=MAX_FEED_TOKEN_LEN).contains(&token.len())
        && crate::bearer::is_b64token(token)
}

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
    Malformed(#[source] JsonError),
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
        read_page(json.as_bytes()).map_err(FeedError::Malformed)
    }
}

/// The page's members (others are ignored, as new fields may be added).
fn read_page(json: &[u8]) -> Result<FeedPage, JsonError> {
    let shape = |expected| JsonError::Shape { expected };
    let [cursor, more, revocations] =
        json::parse(json)?.take_members(["cursor", "more", "revocations"])?;
    let cursor = match cursor {
        Some(Member::UInt(cursor)) => {
            i64::try_from(cursor).map_err(|_| shape("an i64 `cursor`"))?
        }
        Some(Member::Int(cursor)) => cursor,
        _ => return Err(shape("an integer `cursor`")),
    };
    let Some(Member::Bool(more)) = more else {
        return Err(shape("a boolean `more`"));
    };
    let Some(Member::Array(entries)) = revocations else {
        return Err(shape("a `revocations` array"));
    };
    let mut revocations = Vec::with_capacity(entries.len());
    let mut skipped = 0;
    for entry in entries {
        let [kind, value, expires_at, issued_before] =
            entry.take_members(["kind", "value", "expires_at", "issued_before"])?;
        let kind = match kind.as_ref().and_then(Member::as_str) {
            Some("jti") => RevokedKind::Jti,
            Some("kid") => RevokedKind::Kid,
            Some("client") => RevokedKind::Client,
            Some(_) => {
                skipped += 1;
                continue;
            }
            None => return Err(shape("a string `kind`")),
        };
        let Some(Member::Str(value)) = value else {
            return Err(shape("a string `value`"));
        };
        let expires_at = expires_at
            .as_ref()
            .and_then(Member::as_u64)
            .ok_or(shape("an integer `expires_at`"))?;
        let issued_before = match (kind, issued_before.as_ref().and_then(Member::as_u64)) {
            (RevokedKind::Client, None) => return Err(shape("a client entry's `issued_before`")),
            (RevokedKind::Client, found) => found,
            _ => None,
        };
        revocations.push(Revocation {
            kind,
            value,
            expires_at,
            issued_before,
        });
    }
    Ok(FeedPage {
        cursor,
        more,
        revocations,
        skipped,
    })
}

/// What the list keeps per entry.
#[derive(Debug, Clone, Copy, Default)]
struct Kept {
    expires_at: u64,
    /// Tokens issued at or before this are covered (`u64::MAX` for tokens and keys: all).
    issued_before: u64,
}

/// Revoked token ids, key ids and clients with their expiry, and the feed cursor. One map
/// per kind, keyed by the id alone, so the per-request lookups borrow the token's ids
/// instead of allocating a key.
#[derive(Debug, Clone, Default)]
pub struct RevocationList {
    jtis: HashMap<String, Kept>,
    kids: HashMap<String, Kept>,
    clients: HashMap<String, Kept>,
    cursor: i64,
}

impl RevocationList {
    /// An empty list at cursor 0.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&mut self, kind: RevokedKind) -> &mut HashMap<String, Kept> {
        match kind {
            RevokedKind::Jti => &mut self.jtis,
            RevokedKind::Kid => &mut self.kids,
            RevokedKind::Client => &mut self.clients,
        }
    }

    /// Applies a page at `now`, dropping entries that expired; returns the key ids it newly
    /// revoked (the caller drops cached tokens signed by them).
    pub fn apply(&mut self, page: FeedPage, now: UnixTime) -> Vec<String> {
        let mut new_kids = Vec::new();
        for entry in page.revocations {
            if entry.expires_at <= now.as_secs() {
                continue;
            }
            if entry.kind == RevokedKind::Kid && !self.kids.contains_key(&entry.value) {
                new_kids.push(entry.value.clone());
            }
            let kept = self.map(entry.kind).entry(entry.value).or_default();
            kept.expires_at = kept.expires_at.max(entry.expires_at);
            kept.issued_before = kept
                .issued_before
                .max(entry.issued_before.unwrap_or(u64::MAX));
        }
        self.cursor = self.cursor.max(page.cursor);
        self.prune(now);
        new_kids
    }

    /// Drops entries that no longer matter at `now`.
    pub fn prune(&mut self, now: UnixTime) {
        let now = now.as_secs();
        for map in [&mut self.jtis, &mut self.kids, &mut self.clients] {
            map.retain(|_, kept| kept.expires_at > now);
        }
    }

    /// Whether the token's `jti`, its signing key, or its client is revoked: a client entry
    /// covers a token issued up to its cut-off (`iat`), and one issued under an earlier
    /// cut-off (`client_cutoff`, however late its `iat`: made from a copy of the client that
    /// had not seen the revocation).
    #[must_use]
    pub fn is_revoked(&self, token: &VerifiedToken) -> bool {
        let claims = token.claims();
        self.jtis.contains_key(claims.jti.as_str())
            || self.kids.contains_key(token.kid())
            || self
                .clients
                .get(claims.client_id.as_str())
                .is_some_and(|kept| {
                    claims.iat <= kept.issued_before
                        || claims
                            .client_cutoff
                            .is_some_and(|cutoff| cutoff < kept.issued_before)
                })
    }

    /// Whether the key `kid` is revoked (so no key set may hold it).
    #[must_use]
    pub fn is_key_revoked(&self, kid: &str) -> bool {
        self.kids.contains_key(kid)
    }

    /// The cursor to send as `since`.
    #[must_use]
    pub fn cursor(&self) -> i64 {
        self.cursor
    }

    /// Number of live entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.jtis.len() + self.kids.len() + self.clients.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
