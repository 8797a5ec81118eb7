//! The key set, in three tiers: isolate memory, then the colo's Cache API (so a new isolate
//! does not wait on the issuer), then the JWKS URLs in order with a timeout each.
//! `shared::jwks_refresh` decides freshness and the unknown-`kid` cooldown; this file only
//! moves bytes, as a [`Refresh`] job ([`crate::jobs`]: one at a time per isolate; concurrent
//! requests that need it wait for it). A stale set is served while it refreshes in the
//! background; only a missing or too-old set, or an unknown `kid` the cooldown allows, makes
//! a request wait.
//!
//! A revoked key leaves every tier: the set in memory (fresh or stale), the verified-token
//! cache, and the Cache API copy, which is rewritten without it ([`drop_revoked_keys`]); a
//! set fetched or a copy read later is filtered the same way. The copy is tagged with an
//! HMAC under `KEYSET_COPY_SECRET` and stored under a cache key derived from it
//! (`shared::keyset_copy`: the Cache API is shared with every script on the zone, which can
//! neither find the copy to replay an older one nor plant one that verifies); a copy whose
//! tag does not verify is ignored. A copy keeps the time the issuer last gave or confirmed
//! the set, so rewriting it never extends its life.

use std::cell::RefCell;
use std::sync::Arc;

use shared::jwks_refresh::{Freshness, JwksRefresh};
use shared::keyset_copy::CopyFields;
use shared::{Jwks, TokenCache, UnixTime};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;

use crate::config::Config;
use crate::issuer::{FetchError, Fetched, Get};
use crate::jobs::Step;
use crate::request_log::{Event, Level};

/// Verified tokens kept per isolate.
const TOKEN_CACHE_CAPACITY: usize = 10_000;

/// What a JWKS fetch accepts.
const ACCEPT: &str = "application/jwk-set+json, application/json";

#[wasm_bindgen(module = "/js/io.js")]
extern "C" {
    /// The Cache API copy of the key set, as `cacheGet` resolves it.
    pub type CachedCopy;
    #[wasm_bindgen(method, getter)]
    fn text(this: &CachedCopy) -> String;
    /// Milliseconds since the epoch, as the header's text.
    #[wasm_bindgen(method, getter, js_name = fetchedAt)]
    fn fetched_at(this: &CachedCopy) -> Option<String>;
    /// The issuer's `Cache-Control` when it was fetched.
    #[wasm_bindgen(method, getter, js_name = cacheControl)]
    fn cache_control(this: &CachedCopy) -> Option<String>;
    #[wasm_bindgen(method, getter)]
    fn etag(this: &CachedCopy) -> Option<String>;
    /// The copy's HMAC tag (`shared::keyset_copy`).
    #[wasm_bindgen(method, getter)]
    fn mac(this: &CachedCopy) -> Option<String>;

    /// Stores the copy, kept alive by `ctx.waitUntil` (a failure is logged in JS).
    #[wasm_bindgen(js_name = cachePut)]
    #[allow(clippy::too_many_arguments)] // one boundary crossing
    fn cache_put(
        ctx: &JsValue,
        key: &str,
        text: &str,
        keep_secs: f64,
        fetched_at: f64,
        cache_control: Option<&str>,
        etag: Option<&str>,
        mac: &str,
    );
}

thread_local! {
    static REFRESH: RefCell<Option<JwksRefresh>> = const { RefCell::new(None) };
    pub(crate) static TOKENS: RefCell<TokenCache> = RefCell::new(TokenCache::new(TOKEN_CACHE_CAPACITY));
}

fn with_state<T>(config: &Config, f: impl FnOnce(&mut JwksRefresh) -> T) -> T {
    REFRESH.with(|cell| {
        let mut state = cell.borrow_mut();
        f(state.get_or_insert_with(|| JwksRefresh::new(config.refresh_policy)))
    })
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

/// The key-set decision for a request that has already waited for the Cache API copy
/// (`copy_tried`) or a refresh (`refreshed`), or not.
pub(crate) fn keys(config: &Config, now: UnixTime, copy_tried: bool, refreshed: bool) -> Keys {
    with_state(config, |s| {
        let freshness = s.freshness(now);
        if freshness == Freshness::Missing && !copy_tried {
            return Keys::Wait { load_copy: true };
        }
        let usable = s.usable(now);
        match (freshness, usable) {
            (Freshness::Fresh, Some(jwks)) => Keys::Ready(jwks),
            (Freshness::Stale, Some(jwks)) if s.refresh_due(now) => Keys::RefreshBehind(jwks),
            (Freshness::Stale, Some(jwks)) => Keys::Ready(jwks),
            _ if s.refresh_due(now) && !refreshed => Keys::Wait { load_copy: false },
            _ => Keys::Unavailable,
        }
    })
}

/// Whether an unknown kid may trigger a refetch now (the cooldown starts if so).
pub(crate) fn unknown_kid(config: &Config, now: UnixTime) -> bool {
    with_state(config, |s| s.unknown_kid(now))
}

/// The state for `/.edge/health` and the request log.
pub(crate) fn freshness(config: &Config, now: UnixTime) -> Freshness {
    with_state(config, |s| s.freshness(now))
}

/// A key-set refresh: the Cache API copy (a new isolate), then the JWKS URLs in order until
/// one gives a set (or `304 Not Modified`).
pub(crate) struct Refresh {
    /// The next URL to try.
    next_url: usize,
    /// The `ETag` sent as `If-None-Match`.
    etag: Option<String>,
}

impl Refresh {
    /// The job and its first step.
    pub(crate) fn start(config: &Config, load_copy: bool) -> (Self, Step) {
        let mut refresh = Self {
            next_url: 0,
            etag: None,
        };
        let step = match cache_key(config) {
            Some(key) if load_copy => Step::CacheCopy(key.to_owned()),
            _ => refresh.fetch_next(config),
        };
        (refresh, step)
    }

    /// The Cache API copy arrived (or there was none): enough if it is usable, else fetch.
    pub(crate) fn copy_answered(&mut self, config: &Config, copy: Option<CachedCopy>) -> Step {
        // (Revocations are applied to the copy as it is read: `apply_copy`.)
        let now = crate::clock::now();
        if let Some(copy) = copy {
            apply_copy(config, &copy, now);
        }
        let needed = with_state(config, |s| s.usable(now).is_none() && s.refresh_due(now));
        if needed {
            self.fetch_next(config)
        } else {
            Step::Done
        }
    }

    /// A URL answered (or did not): done with a new or confirmed set, else the next URL.
    pub(crate) fn answered(
        &mut self,
        config: &Config,
        ctx: &JsValue,
        answer: Result<Fetched, FetchError>,
    ) -> Step {
        let url = config
            .jwks_urls
            .get(self.next_url.wrapping_sub(1))
            .map_or("", String::as_str);
        match answer.and_then(parse) {
            Ok(Answer::New {
                mut jwks,
                cache_control,
                etag,
            }) => {
                jwks.remove_keys(crate::revocations::is_key_revoked);
                TOKENS.with(|t| t.borrow_mut().retain_keys(&jwks));
                let at = crate::clock::now();
                with_state(config, |s| {
                    s.fetched(jwks, cache_control.as_deref(), etag.as_deref(), at);
                });
                store_copy(config, ctx);
                Step::Done
            }
            Ok(Answer::NotModified { cache_control }) => {
                let at = crate::clock::now();
                with_state(config, |s| s.not_modified(cache_control.as_deref(), at));
                store_copy(config, ctx);
                Step::Done
            }
            Err(reason) => {
                Event::fetch_failed("jwks_fetch_failed", url, &reason.to_string());
                self.fetch_next(config)
            }
        }
    }

    /// The next URL's fetch, or (none left) the failure recorded and logged.
    fn fetch_next(&mut self, config: &Config) -> Step {
        let Some(url) = config.jwks_urls.get(self.next_url) else {
            let at = crate::clock::now();
            with_state(config, |s| s.failed(at));
            Event {
                event: "jwks_unavailable",
                urls: Some(config.jwks_urls.len()),
                state: Some(freshness_name(freshness(config, at))),
                ..Event::default()
            }
            .emit(Level::Error);
            return Step::Done;
        };
        if self.next_url == 0 {
            self.etag = with_state(config, |s| s.etag().map(str::to_owned));
        }
        self.next_url += 1;
        Step::Get(Get {
            url: url.clone(),
            accept: ACCEPT,
            etag: self.etag.clone(),
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
    let cache_control = response.cache_control();
    match (response.status(), response.text()) {
        (304, _) => Ok(Answer::NotModified { cache_control }),
        (200, Some(text)) => {
            let jwks = Jwks::parse(&text).map_err(|e| FetchError::Unusable(e.to_string()))?;
            Ok(Answer::New {
                jwks,
                cache_control,
                etag: response.etag(),
            })
        }
        (status, _) => Err(FetchError::Status(status)),
    }
}

/// The Cache API key: the first (geo-DNS) JWKS URL with a parameter derived from
/// `KEYSET_COPY_SECRET`; `None` when there is no copy tier (no secret).
fn cache_key(config: &Config) -> Option<&str> {
    config.copy.as_ref().map(|(_, at)| at.as_str())
}

/// Keeps the set in use in the colo's cache, tagged, for as long as it may be used
/// (freshness plus max-stale), with the time the issuer last gave or confirmed it.
fn store_copy(config: &Config, ctx: &JsValue) {
    let Some((copy_key, key)) = &config.copy else {
        return;
    };
    let now = crate::clock::now();
    let Some((body, fetched_at, cache_control, etag)) = with_state(config, |s| {
        let jwks = s.usable(now)?;
        let meta = (
            s.confirmed_at(),
            s.cache_control().map(str::to_owned),
            s.etag().map(str::to_owned),
        );
        Some((jwks.to_json(), meta.0, meta.1, meta.2))
    }) else {
        return;
    };
    let fields = CopyFields {
        cache_key: key,
        body: &body,
        fetched_at_ms: fetched_at.as_millis(),
        cache_control: cache_control.as_deref(),
        etag: etag.as_deref(),
    };
    let mac = copy_key.seal(&fields);
    let keep_secs =
        (config.refresh_policy.max_max_age_ms + config.refresh_policy.max_stale_ms) / 1000;
    // Whole numbers well below 2^53: exact as JS numbers.
    cache_put(
        ctx,
        key,
        &body,
        keep_secs as f64,
        fetched_at.as_millis() as f64,
        fields.cache_control,
        fields.etag,
        &mac,
    );
}

/// A new isolate starts from the colo's copy, if its tag verifies and it parses; keys the
/// isolate knows to be revoked are left out.
fn apply_copy(config: &Config, copy: &CachedCopy, now: UnixTime) {
    let Some((copy_key, key)) = &config.copy else {
        return;
    };
    let body = copy.text();
    let Some(fetched_at) = copy
        .fetched_at()
        .and_then(|value| value.parse::<u64>().ok())
    else {
        return refused_copy("no fetch time");
    };
    let (cache_control, etag) = (copy.cache_control(), copy.etag());
    let fields = CopyFields {
        cache_key: key,
        body: &body,
        fetched_at_ms: fetched_at,
        cache_control: cache_control.as_deref(),
        etag: etag.as_deref(),
    };
    if let Err(err) = copy_key.open(&fields, copy.mac().as_deref()) {
        return refused_copy(&err.to_string());
    }
    match Jwks::parse(&body) {
        Ok(mut jwks) => with_state(config, |s| {
            if s.freshness(now) == Freshness::Missing {
                jwks.remove_keys(crate::revocations::is_key_revoked);
                let fetched_at = UnixTime::from_millis(fetched_at).min(now);
                s.fetched(jwks, cache_control.as_deref(), etag.as_deref(), fetched_at);
            }
        }),
        Err(err) => refused_copy(&err.to_string()),
    }
}

fn refused_copy(reason: &str) {
    Event {
        event: "jwks_copy_refused",
        reason: Some(reason),
        ..Event::default()
    }
    .emit(Level::Warn);
}

/// Keys just revoked (`kids`) leave every tier at once: the set in use, the tokens they
/// signed, and the colo's copy (rewritten without them, keeping its original time).
pub(crate) fn drop_revoked_keys(config: &Config, ctx: &JsValue, kids: &[String]) {
    let now = crate::clock::now();
    let kept = with_state(config, |s| {
        s.remove_keys(|kid| kids.iter().any(|revoked| revoked == kid))
            .then(|| s.usable(now))
            .flatten()
    });
    if let Some(kept) = kept {
        TOKENS.with(|t| t.borrow_mut().retain_keys(&kept));
        store_copy(config, ctx);
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
