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
use worker::{Cache, Context, Headers, Response};

use crate::config::Config;
use crate::{single_flight, upstream};

/// Verified tokens kept per isolate.
const TOKEN_CACHE_CAPACITY: usize = 10_000;
/// Headers on the Cache API copy: when it was fetched and the issuer's `Cache-Control`.
const FETCHED_AT: &str = "x-edgeward-fetched-at";
const ISSUER_CACHE_CONTROL: &str = "x-edgeward-issuer-cache-control";

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

async fn fetch_one(
    url: &str,
    etag: Option<&str>,
    timeout_ms: u64,
) -> Result<Fetched, upstream::FetchError> {
    let mut headers = vec![("accept", "application/jwk-set+json, application/json")];
    if let Some(etag) = etag {
        headers.push(("if-none-match", etag));
    }
    let response = upstream::get(url, &headers, timeout_ms).await?;
    let header = |name: &str| response.headers().get(name).ok().flatten();
    let cache_control = header("cache-control");
    match response.status_code() {
        304 => Ok(Fetched::NotModified { cache_control }),
        200 => {
            let etag = header("etag");
            let text = upstream::text(response, timeout_ms).await?;
            let jwks =
                Jwks::parse(&text).map_err(|e| upstream::FetchError::Failed(e.to_string()))?;
            Ok(Fetched::New {
                jwks,
                text,
                cache_control,
                etag,
            })
        }
        status => Err(upstream::FetchError::Status(status)),
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
    let stored = (|| -> worker::Result<Response> {
        let headers = Headers::new();
        headers.set("content-type", "application/json")?;
        headers.set("cache-control", &format!("public, max-age={keep_secs}"))?;
        headers.set(FETCHED_AT, &fetched_at.as_millis().to_string())?;
        if let Some(value) = &issuer_cache_control {
            headers.set(ISSUER_CACHE_CONTROL, value)?;
        }
        if let Some(value) = &etag {
            headers.set("etag", value)?;
        }
        Ok(Response::ok(text)?.with_headers(headers))
    })();
    let result = match stored {
        Ok(response) => Cache::default().put(key, response).await,
        Err(err) => Err(err),
    };
    if let Err(err) = result {
        worker::console_warn!("jwks cache api put failed: {err}");
    }
}

/// A new isolate starts from the colo's copy, if there is one.
async fn load_from_cache_api(config: &Config, now: UnixTime) {
    let Some(key) = cache_key(config) else { return };
    let response = match Cache::default().get(key, false).await {
        Ok(Some(response)) => response,
        Ok(None) => return,
        Err(err) => {
            worker::console_warn!("jwks cache api get failed: {err}");
            return;
        }
    };
    let header = |name: &str| response.headers().get(name).ok().flatten();
    let fetched_at = header(FETCHED_AT)
        .and_then(|value| value.parse::<u64>().ok())
        .map_or(now, UnixTime::from_millis);
    let issuer_cache_control = header(ISSUER_CACHE_CONTROL);
    let etag = header("etag");
    let Ok(text) = upstream::text(response, config.fetch_timeout_ms).await else {
        return;
    };
    match Jwks::parse(&text) {
        Ok(jwks) => with_state(config, |s| {
            if s.freshness(now) == Freshness::Missing {
                s.fetched(
                    jwks,
                    issuer_cache_control.as_deref(),
                    etag.as_deref(),
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
