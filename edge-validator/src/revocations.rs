//! The issuer's revocation feed, pulled every `REVOCATION_INTERVAL_MS` into isolate memory
//! (`shared::RevocationList` decides; this file fetches). A new isolate waits for its first
//! pull (bounded by the fetch timeout); afterwards pulls run in the background while
//! requests go on with the list they have, so a revocation takes effect within about one
//! interval plus one fetch. If the feed cannot be reached, the edge keeps serving with the
//! list it has and logs it: refusing every token because the feed is down would turn an
//! issuer outage into a global one.

use std::cell::{Cell, RefCell};

use shared::revocations::{FeedPage, RevocationList};
use shared::{UnixTime, VerifiedToken};
use wasm_bindgen::JsValue;

use crate::clock::now;
use crate::config::Config;
use crate::issuer::{FetchError, Fetched, Get};
use crate::jobs::Step;
use crate::request_log::{Event, Level};

/// Pages read per pull, at most (the rest follows on the next pull).
const MAX_PAGES_PER_PULL: usize = 10;

thread_local! {
    static LIST: RefCell<RevocationList> = RefCell::new(RevocationList::new());
    static LAST_ATTEMPT: Cell<Option<UnixTime>> = const { Cell::new(None) };
    static LAST_SUCCESS: Cell<Option<UnixTime>> = const { Cell::new(None) };
}

/// What a request does about the list at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sync {
    /// Nothing: no feed, or pulled within the interval.
    Current,
    /// Go on, and pull in the background (the interval has passed).
    PullBehind,
    /// Wait for the first pull (a new isolate).
    Wait,
}

/// Whether the list needs a pull now: waits only in a new isolate.
pub(crate) fn sync(config: &Config, now: UnixTime) -> Sync {
    if config.revocation_urls.is_empty() {
        return Sync::Current;
    }
    match LAST_ATTEMPT.with(Cell::get) {
        None => Sync::Wait,
        Some(at) if now.millis_since(at) >= config.revocation_interval_ms => Sync::PullBehind,
        Some(_) => Sync::Current,
    }
}

/// Whether the token's `jti` or signing key is on the list.
pub(crate) fn is_revoked(token: &VerifiedToken) -> bool {
    LIST.with(|list| list.borrow().is_revoked(token))
}

/// Whether the key `kid` is revoked (no key set this isolate keeps may hold it).
pub(crate) fn is_key_revoked(kid: &str) -> bool {
    LIST.with(|list| list.borrow().is_key_revoked(kid))
}

/// Milliseconds since the last successful pull, for the log and `/.edge/health`.
pub(crate) fn age_ms(now: UnixTime) -> Option<u64> {
    LAST_SUCCESS.with(Cell::get).map(|at| now.millis_since(at))
}

/// A pull: the feed URLs in order, up to [`MAX_PAGES_PER_PULL`] pages from the first that
/// answers.
pub(crate) struct Pull {
    /// The URL being read.
    url: usize,
    /// Pages read from it.
    pages: usize,
}

impl Pull {
    /// The job and its first step (the attempt counts from `now`).
    pub(crate) fn start(config: &Config, now: UnixTime) -> (Self, Step) {
        LAST_ATTEMPT.with(|cell| cell.set(Some(now)));
        let pull = Self { url: 0, pages: 0 };
        let step = pull.page(config);
        (pull, step)
    }

    /// A page arrived (or did not): the next page, the next URL, or done.
    pub(crate) fn answered(
        &mut self,
        config: &Config,
        ctx: &JsValue,
        answer: Result<Fetched, FetchError>,
    ) -> Step {
        let page = answer.and_then(|response| match (response.status(), response.text()) {
            (200, Some(text)) => {
                FeedPage::parse(&text).map_err(|e| FetchError::Unusable(e.to_string()))
            }
            (status, _) => Err(FetchError::Status(status)),
        });
        let page = match page {
            Ok(page) => page,
            Err(reason) => {
                let url = config
                    .revocation_urls
                    .get(self.url)
                    .map_or("", String::as_str);
                Event::fetch_failed("revocation_feed_failed", url, &reason.to_string());
                self.url += 1;
                self.pages = 0;
                return self.page(config);
            }
        };
        let more = page.more;
        let new_kids = LIST.with(|list| list.borrow_mut().apply(page, now()));
        if !new_kids.is_empty() {
            crate::jwks_cache::drop_revoked_keys(config, ctx, &new_kids);
            Event {
                event: "keys_revoked",
                kids: Some(&new_kids),
                ..Event::default()
            }
            .emit(Level::Log);
        }
        self.pages += 1;
        if more && self.pages < MAX_PAGES_PER_PULL {
            return self.page(config);
        }
        LAST_SUCCESS.with(|cell| cell.set(Some(now())));
        Step::Done
    }

    /// The fetch of the next page from the current URL (done when no URL is left).
    fn page(&self, config: &Config) -> Step {
        let Some(url) = config.revocation_urls.get(self.url) else {
            return Step::Done;
        };
        let cursor = LIST.with(|list| list.borrow().cursor());
        let separator = if url.contains('?') { '&' } else { '?' };
        Step::Get(Get {
            url: format!("{url}{separator}since={cursor}"),
            accept: "application/json",
            etag: None,
        })
    }
}
