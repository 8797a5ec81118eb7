//! The issuer's revocation feed, pulled every `REVOCATION_INTERVAL_MS` into isolate memory
//! (`shared::RevocationList` decides; this file says what to fetch and reads the answers).
//! A new isolate waits for its first pull (bounded by the fetch timeout); afterwards pulls
//! run in the background while requests go on with the list they have, so a revocation
//! takes effect within about one interval plus one fetch. If the feed cannot be reached, the
//! edge keeps serving with the list it has and logs it: refusing every token because the
//! feed is down would turn an issuer outage into a global one.

use shared::revocations::{FeedPage, RevocationList};
use shared::{UnixTime, VerifiedToken};

use super::config::Config;
use super::io::{FetchError, Fetched, Get};

/// Pages read per pull, at most (the rest follows on the next pull).
const MAX_PAGES_PER_PULL: usize = 10;

/// The list and when it was last pulled.
#[derive(Debug, Default)]
pub(crate) struct Revocations {
    list: RevocationList,
    last_attempt: Option<UnixTime>,
    last_success: Option<UnixTime>,
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

/// What one answer of the feed did.
pub(crate) enum PullStep {
    /// Fetch this next.
    Get(Get),
    /// The pull is over.
    Done,
}

impl Revocations {
    /// Whether the list needs a pull now: waits only in a new isolate.
    pub(crate) fn sync(&self, config: &Config, now: UnixTime) -> Sync {
        if config.revocation_urls.is_empty() {
            return Sync::Current;
        }
        match self.last_attempt {
            None => Sync::Wait,
            Some(at) if now.millis_since(at) >= config.revocation_interval_ms => Sync::PullBehind,
            Some(_) => Sync::Current,
        }
    }

    /// Whether the token's `jti` or signing key is on the list.
    pub(crate) fn is_revoked(&self, token: &VerifiedToken) -> bool {
        self.list.is_revoked(token)
    }

    /// Whether the key `kid` is revoked (no key set this isolate keeps may hold it).
    pub(crate) fn is_key_revoked(&self, kid: &str) -> bool {
        self.list.is_key_revoked(kid)
    }

    /// Milliseconds since the last successful pull, for the log and `/.edge/health`.
    pub(crate) fn age_ms(&self, now: UnixTime) -> Option<u64> {
        self.last_success.map(|at| now.millis_since(at))
    }

    /// A pull begins at `now`: the job and its first fetch (or nothing to fetch).
    pub(crate) fn start(&mut self, config: &Config, now: UnixTime) -> (Pull, PullStep) {
        self.last_attempt = Some(now);
        let pull = Pull { url: 0, pages: 0 };
        let step = pull.page(self, config);
        (pull, step)
    }

    /// The cursor of the list (the next page's `since`).
    fn cursor(&self) -> i64 {
        self.list.cursor()
    }
}

/// A pull: the feed URLs in order, up to [`MAX_PAGES_PER_PULL`] pages from the first that
/// answers.
#[derive(Debug)]
pub(crate) struct Pull {
    /// The URL being read.
    url: usize,
    /// Pages read from it.
    pages: usize,
}

impl Pull {
    /// A page arrived (or did not) at `now`: the keys it newly revoked (they must leave
    /// every tier at once), and the next page, the next URL, or done; a URL that failed
    /// goes into `failed` with its reason.
    pub(crate) fn answered(
        &mut self,
        list: &mut Revocations,
        config: &Config,
        answer: Result<Fetched, FetchError>,
        now: UnixTime,
        failed: &mut Vec<(String, String)>,
    ) -> (Vec<String>, PullStep) {
        let page = answer.and_then(|response| match (response.status, response.text) {
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
                failed.push((url.to_owned(), reason.to_string()));
                self.url += 1;
                self.pages = 0;
                return (Vec::new(), self.page(list, config));
            }
        };
        let more = page.more;
        let new_kids = list.list.apply(page, now);
        self.pages += 1;
        let next = if more && self.pages < MAX_PAGES_PER_PULL {
            self.page(list, config)
        } else {
            list.last_success = Some(now);
            PullStep::Done
        };
        (new_kids, next)
    }

    /// The fetch of the next page from the current URL (done when no URL is left).
    fn page(&self, list: &Revocations, config: &Config) -> PullStep {
        let Some(url) = config.revocation_urls.get(self.url) else {
            return PullStep::Done;
        };
        let cursor = list.cursor();
        let separator = if url.contains('?') { '&' } else { '?' };
        PullStep::Get(Get {
            url: format!("{url}{separator}since={cursor}"),
            accept: "application/json",
            etag: None,
        })
    }
}
