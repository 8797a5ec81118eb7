//! The key set, in three tiers: isolate memory, then the colo's Cache API (so a new isolate
//! does not wait on the issuer), then the JWKS URLs in order with a timeout each.
//! `shared::jwks_refresh` decides freshness and the unknown-`kid` cooldown; this file keeps
//! the set, the verified-token cache that depends on it, and a [`Refresh`] job's steps (one
//! at a time per isolate; concurrent requests that need it wait for it). A stale set is
//! served while it refreshes in the background; only a missing or too-old set, or an unknown
//! `kid` the cooldown allows, makes a request wait.
//!
//! A revoked key leaves every tier: the set in memory (fresh or stale), the verified-token
//! cache, and the Cache API copy, which is rewritten without it ([`KeySet::drop_revoked`]);
//! a set fetched or a copy read later is filtered the same way. The copy is tagged with an
//! HMAC under `KEYSET_COPY_SECRET` and stored under a cache key derived from it
//! (`shared::keyset_copy`: the Cache API is shared with every script on the zone, which can
//! neither find the copy to replay an older one nor plant one that verifies); a copy whose
//! tag does not verify is ignored. A copy keeps the time the issuer last gave or confirmed
//! the set, so rewriting it never extends its life.

use std::collections::HashMap;
use std::sync::Arc;

use shared::jwks_refresh::{Freshness, JwksRefresh};
use shared::keyset_copy::CopyFields;
use shared::{Jwk, Jwks, TokenCache, TokenKey, UnixTime, VerifiedToken};

use super::config::Config;
use super::io::{CachedCopy, CopyToStore, FetchError, Fetched, Get};

/// Verified tokens kept per isolate.
const TOKEN_CACHE_CAPACITY: usize = 10_000;

/// What a JWKS fetch accepts.
const ACCEPT: &str = "application/jwk-set+json, application/json";

/// The key set and what hangs on it.
pub(crate) struct KeySet {
    refresh: JwksRefresh,
    pub(crate) tokens: TokenCache,
    /// The point each kid's WebCrypto key was imported from (the driver holds the keys): a
    /// kid reused with another point is imported again.
    imported: HashMap<String, [u8; 65]>,
    /// The set in use came from the colo's copy and the issuer has not answered since: a
    /// key made after the copy was written is not in it, so a request that waited for the
    /// copy may still start the unknown-kid refetch.
    from_copy: bool,
}

/// What a fresh token's request does about the key set at `now`.
pub(crate) enum Keys {
    /// Verify with this set.
    Ready(Arc<Jwks>),
    /// Verify with this (stale) set, and refresh it in the background.
    RefreshBehind(Arc<Jwks>),
    /// Wait for a refresh (from the Cache API copy first when `load_copy`).
    Wait { load_copy: bool },
    /// No usable set, and no refresh to wait for: 503.
    Unavailable,
}

/// What a refresh job asks for next.
pub(crate) enum RefreshStep {
    Get(Get),
    ReadCopy(String),
    /// Over; store this copy if any (a new or confirmed set).
    Done(Option<CopyToStore>),
}

/// Why a key-set tier was not used, for the log.
pub(crate) enum KeyEvent {
    /// A JWKS URL failed.
    FetchFailed { url: String, reason: String },
    /// Every URL failed.
    Unavailable { urls: usize, state: Freshness },
    /// The Cache API copy was refused.
    CopyRefused(String),
}

impl KeySet {
    pub(crate) fn new(config: &Config) -> Self {
        Self {
            refresh: JwksRefresh::new(config.refresh_policy),
            tokens: TokenCache::new(TOKEN_CACHE_CAPACITY),
            imported: HashMap::new(),
            from_copy: false,
        }
    }

    /// The key-set decision for a request that has already waited for the Cache API copy
    /// (`copy_tried`) or a refresh (`refreshed`), or not.
    pub(crate) fn decide(&self, now: UnixTime, copy_tried: bool, refreshed: bool) -> Keys {
        let s = &self.refresh;
        let freshness = s.freshness(now);
        if freshness == Freshness::Missing && !copy_tried {
            return Keys::Wait { load_copy: true };
        }
        match (freshness, s.usable(now)) {
            (Freshness::Fresh, Some(jwks)) => Keys::Ready(jwks),
            (Freshness::Stale, Some(jwks)) if s.refresh_due(now) => Keys::RefreshBehind(jwks),
            (Freshness::Stale, Some(jwks)) => Keys::Ready(jwks),
            _ if s.refresh_due(now) && !refreshed => Keys::Wait { load_copy: false },
            _ => Keys::Unavailable,
        }
    }

    /// Caches `verified` (a token whose signature WebCrypto checked, keyed `key`) if the set
    /// in use at `now` still holds the key it verified under: a refresh that landed during
    /// the check may have published another key under its `kid`, and then the token is
    /// served this once but not kept.
    pub(crate) fn keep(
        &mut self,
        key: TokenKey,
        verified: VerifiedToken,
        now: UnixTime,
    ) -> Arc<VerifiedToken> {
        let current = self.refresh.usable(now).is_some_and(|jwks| {
            jwks.find(verified.kid())
                .is_some_and(|jwk| verified.verified_under(jwk))
        });
        if current {
            self.tokens.insert_key(key, verified, now)
        } else {
            Arc::new(verified)
        }
    }

    /// Whether an unknown kid may trigger a refetch now (the cooldown starts if so), for a
    /// request that has waited for a refresh (`refreshed`) or not: one that only met the
    /// colo's copy has not asked the issuer.
    pub(crate) fn unknown_kid(&mut self, refreshed: bool, now: UnixTime) -> bool {
        (!refreshed || self.from_copy) && self.refresh.unknown_kid(now)
    }

    /// The state for `/.edge/health` and the request log.
    pub(crate) fn freshness(&self, now: UnixTime) -> Freshness {
        self.refresh.freshness(now)
    }

    /// Whether `jwk`'s WebCrypto key is imported (from the same point).
    pub(crate) fn is_imported(&self, jwk: &Jwk) -> bool {
        self.imported.get(jwk.kid()) == Some(&jwk.uncompressed_point())
    }

    /// The driver imported the key `kid` from `point`.
    pub(crate) fn imported(&mut self, kid: String, point: [u8; 65]) {
        self.imported.insert(kid, point);
    }

    /// Keys just revoked (`kids`) leave every tier at once: the set in use, the tokens they
    /// signed, and the colo's copy (rewritten without them, keeping its original time).
    pub(crate) fn drop_revoked(
        &mut self,
        config: &Config,
        kids: &[String],
        now: UnixTime,
    ) -> Option<CopyToStore> {
        let removed = self
            .refresh
            .remove_keys(|kid| kids.iter().any(|revoked| revoked == kid));
        let kept = self.refresh.usable(now).filter(|_| removed)?;
        self.tokens.retain_keys(&kept);
        self.copy_to_store(config, now)
    }

    /// Keeps the set in use in the colo's cache, tagged, for as long as it may be used
    /// (freshness plus max-stale), with the time the issuer last gave or confirmed it.
    fn copy_to_store(&self, config: &Config, now: UnixTime) -> Option<CopyToStore> {
        let (copy_key, key) = config.copy.as_ref()?;
        let s = &self.refresh;
        let text = s.usable(now)?.to_json();
        let fields = CopyFields {
            cache_key: key,
            body: &text,
            fetched_at_ms: s.confirmed_at().as_millis(),
            cache_control: s.cache_control(),
            etag: s.etag(),
        };
        let mac = copy_key.seal(&fields);
        Some(CopyToStore {
            key: key.clone(),
            keep_secs: (config.refresh_policy.max_max_age_ms + config.refresh_policy.max_stale_ms)
                / 1000,
            fetched_at_ms: fields.fetched_at_ms,
            cache_control: fields.cache_control.map(str::to_owned),
            etag: fields.etag.map(str::to_owned),
            mac,
            text,
        })
    }

    /// A new isolate starts from the colo's copy, if its tag verifies and it parses; keys
    /// `revoked` are left out.
    fn apply_copy(
        &mut self,
        config: &Config,
        copy: &CachedCopy,
        revoked: &dyn Fn(&str) -> bool,
        now: UnixTime,
    ) -> Result<(), String> {
        let Some((copy_key, key)) = &config.copy else {
            return Ok(());
        };
        let fetched_at = copy
            .fetched_at
            .as_deref()
            .and_then(|value| value.parse::<u64>().ok())
            .ok_or("no fetch time")?;
        let fields = CopyFields {
            cache_key: key,
            body: &copy.text,
            fetched_at_ms: fetched_at,
            cache_control: copy.cache_control.as_deref(),
            etag: copy.etag.as_deref(),
        };
        copy_key
            .open(&fields, copy.mac.as_deref())
            .map_err(|err| err.to_string())?;
        let mut jwks = Jwks::parse(&copy.text).map_err(|err| err.to_string())?;
        if self.refresh.freshness(now) == Freshness::Missing {
            jwks.remove_keys(revoked);
            // A copy never claims a time after now.
            let fetched_at = UnixTime::from_millis(fetched_at).min(now);
            self.refresh
                .fetched(jwks, fields.cache_control, fields.etag, fetched_at);
            self.from_copy = true;
        }
        Ok(())
    }
}

/// A key-set refresh: the Cache API copy (a new isolate), then the JWKS URLs in order until
/// one gives a set (or `304 Not Modified`).
#[derive(Debug)]
pub(crate) struct Refresh {
    /// The next URL to try.
    next_url: usize,
    /// The `ETag` sent as `If-None-Match`.
    etag: Option<String>,
}

impl Refresh {
    /// The job and its first step.
    pub(crate) fn start(
        keys: &mut KeySet,
        config: &Config,
        load_copy: bool,
        now: UnixTime,
        events: &mut Vec<KeyEvent>,
    ) -> (Self, RefreshStep) {
        let mut refresh = Self {
            next_url: 0,
            etag: None,
        };
        let step = match &config.copy {
            Some((_, key)) if load_copy => RefreshStep::ReadCopy(key.clone()),
            // No copy tier: as if the copy were missing, so a set that failed is not
            // fetched again before its backoff (a new isolate's first fetch is always due).
            None if load_copy => refresh.fetch_if_needed(keys, config, now, events),
            _ => refresh.fetch_next(keys, config, now, events),
        };
        (refresh, step)
    }

    /// The Cache API copy arrived (or there was none): enough if it is usable, else fetch.
    pub(crate) fn copy_answered(
        &mut self,
        keys: &mut KeySet,
        config: &Config,
        copy: Option<CachedCopy>,
        revoked: &dyn Fn(&str) -> bool,
        now: UnixTime,
        events: &mut Vec<KeyEvent>,
    ) -> RefreshStep {
        if let Some(copy) = copy {
            if let Err(reason) = keys.apply_copy(config, &copy, revoked, now) {
                events.push(KeyEvent::CopyRefused(reason));
            }
        }
        self.fetch_if_needed(keys, config, now, events)
    }

    /// Fetches when there is no usable set and a refresh is due (not just failed).
    fn fetch_if_needed(
        &mut self,
        keys: &mut KeySet,
        config: &Config,
        now: UnixTime,
        events: &mut Vec<KeyEvent>,
    ) -> RefreshStep {
        let s = &keys.refresh;
        if s.usable(now).is_none() && s.refresh_due(now) {
            self.fetch_next(keys, config, now, events)
        } else {
            RefreshStep::Done(None)
        }
    }

    /// A URL answered (or did not): done with a new or confirmed set, else the next URL.
    pub(crate) fn answered(
        &mut self,
        keys: &mut KeySet,
        config: &Config,
        answer: Result<Fetched, FetchError>,
        revoked: &dyn Fn(&str) -> bool,
        now: UnixTime,
        events: &mut Vec<KeyEvent>,
    ) -> RefreshStep {
        match answer.and_then(parse) {
            Ok(Answer::New {
                mut jwks,
                cache_control,
                etag,
            }) => {
                jwks.remove_keys(revoked);
                keys.tokens.retain_keys(&jwks);
                keys.refresh
                    .fetched(jwks, cache_control.as_deref(), etag.as_deref(), now);
                keys.from_copy = false;
                RefreshStep::Done(keys.copy_to_store(config, now))
            }
            Ok(Answer::NotModified { cache_control }) => {
                keys.refresh.not_modified(cache_control.as_deref(), now);
                keys.from_copy = false;
                RefreshStep::Done(keys.copy_to_store(config, now))
            }
            Err(reason) => {
                let url = config
                    .jwks_urls
                    .get(self.next_url.wrapping_sub(1))
                    .map_or("", String::as_str);
                events.push(KeyEvent::FetchFailed {
                    url: url.to_owned(),
                    reason: reason.to_string(),
                });
                self.fetch_next(keys, config, now, events)
            }
        }
    }

    /// The next URL's fetch, or (none left) the failure recorded.
    fn fetch_next(
        &mut self,
        keys: &mut KeySet,
        config: &Config,
        now: UnixTime,
        events: &mut Vec<KeyEvent>,
    ) -> RefreshStep {
        let Some(url) = config.jwks_urls.get(self.next_url) else {
            keys.refresh.failed(now);
            events.push(KeyEvent::Unavailable {
                urls: config.jwks_urls.len(),
                state: keys.refresh.freshness(now),
            });
            return RefreshStep::Done(None);
        };
        if self.next_url == 0 {
            self.etag = keys.refresh.etag().map(str::to_owned);
        }
        self.next_url += 1;
        RefreshStep::Get(Get {
            url: url.clone(),
            accept: ACCEPT,
            etag: self.etag.clone(),
            authorization: None,
        })
    }
}

enum Answer {
    New {
        jwks: Jwks,
        cache_control: Option<String>,
        etag: Option<String>,
    },
    NotModified {
        cache_control: Option<String>,
    },
}

fn parse(response: Fetched) -> Result<Answer, FetchError> {
    match (response.status, response.text) {
        (304, _) => Ok(Answer::NotModified {
            cache_control: response.cache_control,
        }),
        (200, Some(text)) => {
            let jwks = Jwks::parse(&text).map_err(|e| FetchError::Unusable(e.to_string()))?;
            Ok(Answer::New {
                jwks,
                cache_control: response.cache_control,
                etag: response.etag,
            })
        }
        (status, _) => Err(FetchError::Status(status)),
    }
}

/// The state's name in logs and `/.edge/health`.
pub(crate) const fn freshness_name(freshness: Freshness) -> &'static str {
    match freshness {
        Freshness::Fresh => "fresh",
        Freshness::Stale => "stale",
        Freshness::TooOld => "too_old",
        Freshness::Missing => "missing",
    }
}
