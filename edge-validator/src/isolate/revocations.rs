//! The issuer's revocation feed, pulled every `REVOCATION_INTERVAL_MS` into isolate memory
//! (`shared::RevocationList` decides; this file says what to fetch and reads the answers).
//!
//! The bound: a request is decided with a list that held every revocation the feed had at
//! most `REVOCATION_INTERVAL_MS + FETCH_TIMEOUT_MS` before it, or it waits (within the job's
//! budget) for a pull. While the list is younger than that, pulls run behind the requests
//! once per interval; older (a new isolate, or one that sat idle), the request waits for
//! the pull, and so do the others that arrive while it runs. A pull reads page after page
//! until the feed has no more, or until its deadline.
//!
//! If the feed cannot be reached (or its pages outlast the deadline), the edge keeps
//! serving with the list it has and logs it, and pulls behind the requests again after an
//! interval: refusing every token because the feed is down would turn an issuer outage into
//! a global one. A failure excuses the list's age for an interval and a pull's budget after
//! it: longer than the next pull can take, so a busy isolate in an outage does not wait for
//! each pull, while one idle past that waits for a pull again (with the requests that
//! arrive while it runs), so one failure never leaves an old list in use for good. When an
//! outage begins, the requests past the bound wait once for the pull that finds it.

use shared::revocations::{FeedPage, RevocationList};
use shared::{UnixTime, VerifiedToken};

use super::config::Config;
use super::io::{FetchError, Fetched, Get};

/// Why a pull stopped at a page that said "more" without moving the cursor (the log's
/// `reason`).
const STUCK: &str = "a page said more but did not move the cursor";
/// Why a pull that was still reading pages stopped (the log's `reason`).
const PAST_DEADLINE: &str =
    "more pages than one pull reads by its deadline (the rest next interval)";

/// The list and when it was last pulled.
#[derive(Debug, Default)]
pub(crate) struct Revocations {
    list: RevocationList,
    last_attempt: Option<UnixTime>,
    /// When the last pull that read the feed to its end began: the list holds every
    /// revocation the feed had then.
    current_as_of: Option<UnixTime>,
    /// Set when a pull fails (no URL answered, the deadline came first, or the feed's cursor
    /// stuck), cleared when one succeeds: until then the edge serves with the list it has
    /// rather than hold requests for the feed.
    failure_excuses_until: Option<UnixTime>,
}

/// What a request does about the list at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sync {
    /// Nothing: no feed, or pulled within the interval.
    Current,
    /// Go on, and pull in the background (the interval has passed).
    PullBehind,
    /// Wait for a pull: the list is older than the bound (a new isolate, or an idle one).
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
    /// Whether the list needs a pull now, and whether the request waits for it.
    pub(crate) fn sync(&self, config: &Config, now: UnixTime) -> Sync {
        if config.revocation_urls.is_empty() {
            return Sync::Current;
        }
        // A busy isolate's list is at most an interval and one fetch old; an older one
        // waits, unless a pull failed lately (the feed is down: serve on).
        let bound = config
            .revocation_interval_ms
            .saturating_add(config.fetch_timeout_ms);
        let too_old = self
            .current_as_of
            .is_none_or(|at| now.millis_since(at) >= bound);
        let excused = self.failure_excuses_until.is_some_and(|until| now < until);
        if too_old && !excused {
            return Sync::Wait;
        }
        match self.last_attempt {
            Some(at) if now.millis_since(at) < config.revocation_interval_ms => Sync::Current,
            _ => Sync::PullBehind,
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

    /// The list's age in milliseconds (since the start of the last pull that read the
    /// feed to its end), for the log and `/.edge/health`.
    pub(crate) fn age_ms(&self, now: UnixTime) -> Option<u64> {
        self.current_as_of.map(|at| now.millis_since(at))
    }

    /// A pull begins at `now` and starts no fetch that could still be out at `deadline`: the
    /// job and its first fetch (or nothing to fetch).
    pub(crate) fn start(
        &mut self,
        config: &Config,
        now: UnixTime,
        deadline: UnixTime,
    ) -> (Pull, PullStep) {
        self.last_attempt = Some(now);
        let pull = Pull {
            url: 0,
            began: now,
            deadline,
        };
        let step = pull.page(self, config);
        (pull, step)
    }

    /// The cursor of the list (the next page's `since`).
    fn cursor(&self) -> i64 {
        self.list.cursor()
    }
}

/// A pull: the feed URLs in order, each read from the list's cursor until the feed has no
/// more pages, or the deadline comes.
#[derive(Debug)]
pub(crate) struct Pull {
    /// The URL being read.
    url: usize,
    /// When the pull began: what the list is current as of, once read to the end.
    began: UnixTime,
    /// The job's end: no fetch starts that could still be out then.
    deadline: UnixTime,
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
        let url = config.revocation_urls.get(self.url);
        let url = || url.map_or("", String::as_str).to_owned();
        // A fetch started now must be over by the job's end, or requests polling for the job
        // would stop waiting (and a second pull start) while it is still out.
        let time_left = now.plus_millis(config.fetch_timeout_ms) < self.deadline;
        let page = match page {
            Ok(page) => page,
            Err(reason) => {
                failed.push((url(), reason.to_string()));
                self.url += 1;
                let next = if time_left {
                    self.page(list, config)
                } else {
                    PullStep::Done
                };
                if matches!(next, PullStep::Done) {
                    self.failed(list, config, now);
                }
                return (Vec::new(), next);
            }
        };
        let more = page.more;
        let cursor = list.cursor();
        let new_kids = list.list.apply(page, now);
        // A page that says "more" must move the cursor, or the next would be the same.
        let stopped = if !more {
            None
        } else if list.cursor() == cursor {
            Some(STUCK)
        } else if time_left {
            return (new_kids, self.page(list, config));
        } else {
            Some(PAST_DEADLINE)
        };
        match stopped {
            None => {
                list.current_as_of = Some(self.began);
                list.failure_excuses_until = None;
            }
            Some(reason) => {
                failed.push((url(), reason.to_owned()));
                self.failed(list, config, now);
            }
        }
        (new_kids, PullStep::Done)
    }

    /// The pull failed at `now`: the list's age is excused for an interval and this pull's
    /// budget (as long as the next pull may take).
    fn failed(&self, list: &mut Revocations, config: &Config, now: UnixTime) {
        let budget = self.deadline.millis_since(self.began);
        let excuse = config.revocation_interval_ms.saturating_add(budget);
        list.failure_excuses_until = Some(now.plus_millis(excuse));
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
            authorization: config.feed_authorization.clone(),
        })
    }
}
