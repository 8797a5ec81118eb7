//! The key set, in three tiers: isolate memory, then the colo's Cache API (so a new isolate
//! does not wait on the issuer), then the JWKS URLs in order with a timeout each.
//! `shared::jwks_refresh` decides freshness and the unknown-`kid` cooldown; this file only
//! moves bytes. One refresh runs at a time per isolate (`single_flight`); concurrent requests
//! wait for it. A stale set is served while it refreshes in the background; only a missing or
//! too-old set, or an unknown `kid` the cooldown allows, makes a request wait.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use shared::jwks_refresh::{Freshness, JwksRefresh};
use shared::{Jwks, TokenCache, UnixTime};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use worker::Context;

use crate::config::Config;
use crate::error::js_error_text;
use crate::single_flight;
use crate::upstream::{self, FetchError};

/// Verified tokens kept per isolate.
const TOKEN_CACHE_CAPACITY: usize = 10_000;

#[wasm_bindgen(module = "/js/io.js")]
extern "C" {
    /// The Cache API copy of the key set, as `cacheGet` resolves it.
    type CachedCopy;
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

    #[wasm_bindgen(js_name = cacheGet)]
    fn cache_get(key: &str) -> js_sys::Promise;
    #[wasm_bindgen(js_name = cachePut)]
    fn cache_put(
        key: &str,
        text: &str,
        keep_secs: f64,
        fetched_at: f64,
        cache_control: Option<&str>,
        etag: Option<&str>,
    ) -> js_sys::Promise;
}

thread_local! {
    static REFRESH: RefCell<Option<JwksRefresh>> = const { RefCell::new(None) };
    static REFRESHING: Cell<bool> = const { Cell::new(false) };
    pub(crate) static TOKENS: RefCell<TokenCache> = RefCell::new(TokenCache::new(TOKEN_CACHE_CAPACITY));
}

fn with_state<T>(config: &Config, f: impl FnOnce(&mut JwksRefresh) -> T) -> T {
    REFRESH.with(|cell| {
        let mut state = cell.borrow_mut();
        f(state.get_or_insert_with(|| JwksRefresh::new(config.refresh_policy)))
    })
}

/// The key set to verify with now. `force` is set for an unknown `kid` the cooldown allowed:
/// it waits for a refetch. `None` when no usable set exists (answer 503).
pub(crate) async fn current(
    config: &Rc<Config>,
    ctx: &Context,
    now: UnixTime,
    force: bool,
) -> Option<Arc<Jwks>> {
    if !force {
        if with_state(config, |s| s.freshness(now)) == Freshness::Missing {
            load_from_cache_api(config, now).await;
        }
        match with_state(config, |s| s.freshness(now)) {
            Freshness::Fresh => return usable(config, now),
            Freshness::Stale => {
                if with_state(config, |s| s.refresh_due(now)) {
                    ctx.wait_until(refresh_once(config.clone(), false));
                }
                return usable(config, now);
            }
            Freshness::Missing | Freshness::TooOld => {
                if !with_state(config, |s| s.refresh_due(now)) {
                    return None;
                }
            }
        }
    }
    refresh_once(config.clone(), true).await;
    usable(config, crate::clock::now())
}

/// Whether an unknown kid may trigger a refetch now (the cooldown starts if so).
pub(crate) fn unknown_kid(config: &Config, now: UnixTime) -> bool {
    with_state(config, |s| s.unknown_kid(now))
}

/// The set in memory, if usable at `now` (no fetching).
pub(crate) fn usable(config: &Config, now: UnixTime) -> Option<Arc<Jwks>> {
    with_state(config, |s| s.usable(now))
}

/// The state for `/.edge/health` and the request log.
pub(crate) fn freshness(config: &Config, now: UnixTime) -> Freshness {
    with_state(config, |s| s.freshness(now))
}

/// A refresh, unless one is running in this isolate: then `wait` waits for it (bounded by
/// one timeout per URL) and a background caller does nothing.
async fn refresh_once(config: Rc<Config>, wait: bool) {
    let wait_ms = single_flight::wait_budget(wait, config.fetch_timeout_ms, config.jwks_urls.len());
    single_flight::run(&REFRESHING, wait_ms, refresh(&config)).await;
}

async fn refresh(config: &Config) {
    let etag = with_state(config, |s| s.etag().map(str::to_owned));
    for url in config.jwks_urls.iter() {
        let now = crate::clock::now;
        match fetch_one(url, etag.as_deref(), config.fetch_timeout_ms).await {
            Ok(Fetched::New {
                jwks,
                text,
                cache_control,
                etag,
            }) => {
                TOKENS.with(|t| t.borrow_mut().retain_keys(&jwks));
                let at = now();
                with_state(config, |s| {
                    s.fetched(jwks, cache_control.as_deref(), etag.as_deref(), at);
                });
                store_in_cache_api(config, text, cache_control, etag, at).await;
                return;
            }
            Ok(Fetched::NotModified { cache_control }) => {
                let at = now();
                let text = with_state(config, |s| {
                    s.not_modified(cache_control.as_deref(), at);
                    s.usable(at).map(|jwks| jwks.to_json())
                });
                if let Some(text) = text {
                    store_in_cache_api(config, text, cache_control, etag.clone(), at).await;
                }
                return;
            }
            Err(reason) => worker::console_warn!(
                "{}",
                serde_json::json!({ "event": "jwks_fetch_failed", "url": url, "reason": reason.to_string() })
            ),
        }
    }
    let at = crate::clock::now();
    with_state(config, |s| s.failed(at));
    worker::console_error!(
        "{}",
        serde_json::json!({
            "event": "jwks_unavailable",
            "urls": config.jwks_urls.len(),
            "state": freshness_name(freshness(config, at)),
        })
    );
}

enum Fetched {
    New {
        jwks: Jwks,
        text: String,
        cache_control: Option<String>,
        etag: Option<String>,
    },
    NotModified {
        cache_control: Option<String>,
    },
}

async fn fetch_one(url: &str, etag: Option<&str>, timeout_ms: u64) -> Result<Fetched, FetchError> {
    let accept = "application/jwk-set+json, application/json";
    let response = upstream::get(url, accept, etag, timeout_ms).await?;
    let cache_control = response.cache_control();
    match (response.status(), response.text()) {
        (304, _) => Ok(Fetched::NotModified { cache_control }),
        (200, Some(text)) => {
            let jwks = Jwks::parse(&text).map_err(|e| FetchError::Unusable(e.to_string()))?;
            Ok(Fetched::New {
                jwks,
                text,
                cache_control,
                etag: response.etag(),
            })
        }
        (status, _) => Err(FetchError::Status(status)),
    }
}

/// The Cache API key: the first (geo-DNS) JWKS URL.
fn cache_key(config: &Config) -> Option<&str> {
    config.jwks_urls.first().map(String::as_str)
}

/// Keeps a copy in the colo's cache for as long as it may be used (freshness plus max-stale).
async fn store_in_cache_api(
    config: &Config,
    text: String,
    issuer_cache_control: Option<String>,
    etag: Option<String>,
    fetched_at: UnixTime,
) {
    let Some(key) = cache_key(config) else { return };
    let keep_secs =
        (config.refresh_policy.max_max_age_ms + config.refresh_policy.max_stale_ms) / 1000;
    // Whole numbers well below 2^53: exact as JS numbers.
    let stored = cache_put(
        key,
        &text,
        keep_secs as f64,
        fetched_at.as_millis() as f64,
        issuer_cache_control.as_deref(),
        etag.as_deref(),
    );
    if let Err(err) = JsFuture::from(stored).await {
        worker::console_warn!("jwks cache api put failed: {}", js_error_text(&err));
    }
}

/// A new isolate starts from the colo's copy, if there is one.
async fn load_from_cache_api(config: &Config, now: UnixTime) {
    let Some(key) = cache_key(config) else { return };
    let copy: CachedCopy = match JsFuture::from(cache_get(key)).await {
        Ok(copy) if copy.is_null() => return,
        Ok(copy) => copy.unchecked_into(),
        Err(err) => {
            worker::console_warn!("jwks cache api get failed: {}", js_error_text(&err));
            return;
        }
    };
    let fetched_at = copy
        .fetched_at()
        .and_then(|value| value.parse::<u64>().ok())
        .map_or(now, UnixTime::from_millis);
    match Jwks::parse(&copy.text()) {
        Ok(jwks) => with_state(config, |s| {
            if s.freshness(now) == Freshness::Missing {
                s.fetched(
                    jwks,
                    copy.cache_control().as_deref(),
                    copy.etag().as_deref(),
                    fetched_at.min(now),
                );
            }
        }),
        Err(err) => worker::console_warn!("jwks cache api copy unusable: {err}"),
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
