//! The issuer's revocation feed, pulled every `REVOCATION_INTERVAL_MS` into isolate memory
//! (`shared::RevocationList` decides; this file fetches). A new isolate waits for its first
//! pull (bounded by the fetch timeout); afterwards pulls run in the background while
//! requests go on with the list they have, so a revocation takes effect within about one
//! interval plus one fetch. If the feed cannot be reached, the edge keeps serving with the
//! list it has and logs it: refusing every token because the feed is down would turn an
//! issuer outage into a global one.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use shared::revocations::{FeedPage, RevocationList};
use shared::{UnixTime, VerifiedToken};
use worker::Context;

use crate::clock::now;

use crate::config::Config;
use crate::single_flight;
use crate::upstream;

/// Pages read per pull, at most (the rest follows on the next pull).
const MAX_PAGES_PER_PULL: usize = 10;

thread_local! {
    static LIST: RefCell<RevocationList> = RefCell::new(RevocationList::new());
    static LAST_ATTEMPT: Cell<Option<UnixTime>> = const { Cell::new(None) };
    static LAST_SUCCESS: Cell<Option<UnixTime>> = const { Cell::new(None) };
    static PULLING: Cell<bool> = const { Cell::new(false) };
}

/// Brings the list up to date as the interval asks: waits only in a new isolate.
pub(crate) async fn sync(config: &Rc<Config>, ctx: &Context, now: UnixTime) {
    if config.revocation_urls.is_empty() {
        return;
    }
    match LAST_ATTEMPT.with(Cell::get) {
        None => pull_once(config.clone(), true).await,
        Some(at) if now.millis_since(at) >= config.revocation_interval_ms => {
            ctx.wait_until(pull_once(config.clone(), false));
        }
        Some(_) => {}
    }
}

/// Whether the list needs no pull now (no feed, or pulled within the interval): the fast
/// path's condition, as it cannot wait or start one.
pub(crate) fn in_sync(config: &Config, now: UnixTime) -> bool {
    if config.revocation_urls.is_empty() {
        return true;
    }
    LAST_ATTEMPT
        .with(Cell::get)
        .is_some_and(|at| now.millis_since(at) < config.revocation_interval_ms)
}

/// Whether the token's `jti` or signing key is on the list.
pub(crate) fn is_revoked(token: &VerifiedToken) -> bool {
    LIST.with(|list| list.borrow().is_revoked(token))
}

/// Milliseconds since the last successful pull, for the log and `/.edge/health`.
pub(crate) fn age_ms(now: UnixTime) -> Option<u64> {
    LAST_SUCCESS.with(Cell::get).map(|at| now.millis_since(at))
}

/// A pull, unless one is running in this isolate: then `wait` waits for it (bounded by one
/// timeout per URL and page) and a background caller does nothing.
async fn pull_once(config: Rc<Config>, wait: bool) {
    LAST_ATTEMPT.with(|cell| cell.set(Some(now())));
    let wait_ms =
        single_flight::wait_budget(wait, config.fetch_timeout_ms, config.revocation_urls.len());
    single_flight::run(&PULLING, wait_ms, pull(&config)).await;
}

async fn pull(config: &Config) {
    'urls: for url in config.revocation_urls.iter() {
        for _ in 0..MAX_PAGES_PER_PULL {
            let cursor = LIST.with(|list| list.borrow().cursor());
            let page = match fetch_page(url, cursor, config.fetch_timeout_ms).await {
                Ok(page) => page,
                Err(reason) => {
                    worker::console_warn!(
                        "{}",
                        serde_json::json!({ "event": "revocation_feed_failed", "url": url, "reason": reason })
                    );
                    continue 'urls;
                }
            };
            let more = page.more;
            let at = now();
            let new_kids = LIST.with(|list| list.borrow_mut().apply(page, at));
            if !new_kids.is_empty() {
                worker::console_log!(
                    "{}",
                    serde_json::json!({ "event": "keys_revoked", "kids": new_kids })
                );
            }
            if !more {
                break;
            }
        }
        LAST_SUCCESS.with(|cell| cell.set(Some(now())));
        return;
    }
}

async fn fetch_page(url: &str, cursor: i64, timeout_ms: u64) -> Result<FeedPage, String> {
    let separator = if url.contains('?') { '&' } else { '?' };
    let target = format!("{url}{separator}since={cursor}");
    let response = upstream::get(&target, "application/json", None, timeout_ms)
        .await
        .map_err(|e| e.to_string())?;
    match (response.status(), response.text()) {
        (200, Some(text)) => FeedPage::parse(&text).map_err(|e| e.to_string()),
        (status, _) => Err(format!("status {status}")),
    }
}
