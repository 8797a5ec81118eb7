//! The key set in isolate memory, refreshed from the JWKS URLs in order as
//! `shared::jwks_refresh` decides, and the verified-token cache that goes with it.

use std::cell::RefCell;
use std::sync::Arc;

use shared::jwks_refresh::{Freshness, JwksRefresh, RefreshPolicy};
use shared::{Jwks, TokenCache, UnixTime};
use worker::{Fetch, Headers, Method, Request, RequestInit};

/// Verified tokens kept per isolate.
const TOKEN_CACHE_CAPACITY: usize = 10_000;

thread_local! {
    static REFRESH: RefCell<JwksRefresh> = RefCell::new(JwksRefresh::new(RefreshPolicy::default()));
    pub(crate) static TOKENS: RefCell<TokenCache> = RefCell::new(TokenCache::new(TOKEN_CACHE_CAPACITY));
}

/// The key set to verify with now, refreshing first if it is due (or `force`d by an unknown
/// kid the cooldown allows). `None` when there is no usable set at all.
pub(crate) async fn current(urls: &[String], now: UnixTime, force: bool) -> Option<Arc<Jwks>> {
    let due = REFRESH.with(|r| r.borrow().refresh_due(now));
    if due || force {
        refresh(urls, now).await;
    }
    REFRESH.with(|r| r.borrow().usable(now))
}

/// Whether an unknown kid may trigger a refetch now.
pub(crate) fn unknown_kid(now: UnixTime) -> bool {
    REFRESH.with(|r| r.borrow_mut().unknown_kid(now))
}

/// The state for `/.edge/health`.
pub(crate) fn freshness(now: UnixTime) -> Freshness {
    REFRESH.with(|r| r.borrow().freshness(now))
}

async fn refresh(urls: &[String], now: UnixTime) {
    let etag = REFRESH.with(|r| r.borrow().etag().map(str::to_owned));
    for url in urls {
        match fetch_one(url, etag.as_deref()).await {
            Ok(Fetched::New {
                jwks,
                cache_control,
                etag,
            }) => {
                TOKENS.with(|t| t.borrow_mut().retain_keys(&jwks));
                REFRESH.with(|r| {
                    r.borrow_mut()
                        .fetched(jwks, cache_control.as_deref(), etag.as_deref(), now)
                });
                return;
            }
            Ok(Fetched::NotModified { cache_control }) => {
                REFRESH.with(|r| r.borrow_mut().not_modified(cache_control.as_deref(), now));
                return;
            }
            Err(reason) => worker::console_warn!("jwks fetch from {url} failed: {reason}"),
        }
    }
    REFRESH.with(|r| r.borrow_mut().failed(now));
}

enum Fetched {
    New {
        jwks: Jwks,
        cache_control: Option<String>,
        etag: Option<String>,
    },
    NotModified {
        cache_control: Option<String>,
    },
}

async fn fetch_one(url: &str, etag: Option<&str>) -> Result<Fetched, String> {
    let headers = Headers::new();
    headers
        .set("accept", "application/jwk-set+json, application/json")
        .map_err(|e| e.to_string())?;
    if let Some(etag) = etag {
        headers
            .set("if-none-match", etag)
            .map_err(|e| e.to_string())?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Get).with_headers(headers);
    let request = Request::new_with_init(url, &init).map_err(|e| e.to_string())?;
    let mut response = Fetch::Request(request)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let header = |name: &str| response.headers().get(name).ok().flatten();
    let cache_control = header("cache-control");
    match response.status_code() {
        304 => Ok(Fetched::NotModified { cache_control }),
        200 => {
            let etag = header("etag");
            let text = response.text().await.map_err(|e| e.to_string())?;
            let jwks = Jwks::parse(&text).map_err(|e| e.to_string())?;
            Ok(Fetched::New {
                jwks,
                cache_control,
                etag,
            })
        }
        status => Err(format!("status {status}")),
    }
}
