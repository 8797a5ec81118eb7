//! When to (re)fetch the key set, as a pure state machine the edge drives with `now`.
//!
//! The edge fetches; this decides. It keeps the last good [`Jwks`] with its freshness (from
//! the issuer's `Cache-Control: max-age`) and `ETag`, and answers:
//! - is the set fresh, stale but usable (refresh due; every URL may be failing), or too old
//!   to trust (past `max_stale`), or missing (answer 503);
//! - may an unknown `kid` trigger a refetch now? At most one per `unknown_kid_cooldown`, so
//!   junk kids cannot cause a refetch storm, while a rotation's new kid is picked up at once
//!   (the issuer publishes keys well before they sign, so this is the rare path).

use std::sync::Arc;

use crate::jwks::Jwks;
use crate::time::UnixTime;

/// The knobs, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshPolicy {
    /// Freshness when the response has no usable `max-age`.
    pub default_max_age_ms: u64,
    /// Cap on the issuer's `max-age`.
    pub max_max_age_ms: u64,
    /// Least time between refetches triggered by unknown `kid`s.
    pub unknown_kid_cooldown_ms: u64,
    /// How long past freshness the last good set is still used when refreshing fails.
    pub max_stale_ms: u64,
    /// Least time between retries after a failed refresh.
    pub retry_after_failure_ms: u64,
}

impl Default for RefreshPolicy {
    /// 5 min default freshness (capped at 1 h), 30 s unknown-kid cooldown, 24 h max-stale,
    /// 10 s between failed attempts.
    fn default() -> Self {
        Self {
            default_max_age_ms: 300_000,
            max_max_age_ms: 3_600_000,
            unknown_kid_cooldown_ms: 30_000,
            max_stale_ms: 24 * 3_600_000,
            retry_after_failure_ms: 10_000,
        }
    }
}

/// How usable the current set is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Within its `max-age`.
    Fresh,
    /// Past `max-age` but within `max_stale`: use it, and refresh.
    Stale,
    /// Past `max_stale`: do not trust it (answer 503 until a fetch succeeds).
    TooOld,
    /// Never fetched.
    Missing,
}

/// The key set and what is known about its freshness.
#[derive(Debug, Clone)]
pub struct JwksRefresh {
    policy: RefreshPolicy,
    jwks: Option<Arc<Jwks>>,
    etag: Option<String>,
    /// When the issuer last gave or confirmed the set, and its `Cache-Control` then: what a
    /// copy of the set must carry so that copying never extends its life.
    confirmed_at: UnixTime,
    cache_control: Option<String>,
    fresh_until: UnixTime,
    last_unknown_kid_fetch: Option<UnixTime>,
    last_failure: Option<UnixTime>,
}

impl JwksRefresh {
    /// Nothing fetched yet.
    #[must_use]
    pub fn new(policy: RefreshPolicy) -> Self {
        Self {
            policy,
            jwks: None,
            etag: None,
            confirmed_at: UnixTime::EPOCH,
            cache_control: None,
            fresh_until: UnixTime::EPOCH,
            last_unknown_kid_fetch: None,
            last_failure: None,
        }
    }

    /// The set, if it may be used at `now` (fresh or stale).
    #[must_use]
    pub fn usable(&self, now: UnixTime) -> Option<Arc<Jwks>> {
        matches!(self.freshness(now), Freshness::Fresh | Freshness::Stale)
            .then(|| self.jwks.clone())
            .flatten()
    }

    /// How usable the set is at `now`.
    #[must_use]
    pub fn freshness(&self, now: UnixTime) -> Freshness {
        if self.jwks.is_none() {
            Freshness::Missing
        } else if now < self.fresh_until {
            Freshness::Fresh
        } else if now.millis_since(self.fresh_until) <= self.policy.max_stale_ms {
            Freshness::Stale
        } else {
            Freshness::TooOld
        }
    }

    /// Whether a scheduled refresh is due at `now` (not fresh, and not just failed).
    #[must_use]
    pub fn refresh_due(&self, now: UnixTime) -> bool {
        self.freshness(now) != Freshness::Fresh && !self.recently_failed(now)
    }

    fn recently_failed(&self, now: UnixTime) -> bool {
        self.last_failure
            .is_some_and(|at| now.millis_since(at) < self.policy.retry_after_failure_ms)
    }

    /// An unknown `kid` was seen at `now`: `true` if the caller should refetch now (and the
    /// cooldown starts), `false` if one was done too recently.
    pub fn unknown_kid(&mut self, now: UnixTime) -> bool {
        let cooled = self
            .last_unknown_kid_fetch
            .is_none_or(|at| now.millis_since(at) >= self.policy.unknown_kid_cooldown_ms);
        if cooled {
            self.last_unknown_kid_fetch = Some(now);
        }
        cooled
    }

    /// The `ETag` to send as `If-None-Match`.
    #[must_use]
    pub fn etag(&self) -> Option<&str> {
        self.etag.as_deref()
    }

    /// When the issuer last gave or confirmed the set (a copy keeps this time, not the
    /// time it was copied).
    #[must_use]
    pub fn confirmed_at(&self) -> UnixTime {
        self.confirmed_at
    }

    /// The issuer's `Cache-Control` when it last gave or confirmed the set.
    #[must_use]
    pub fn cache_control(&self) -> Option<&str> {
        self.cache_control.as_deref()
    }

    /// A fetch returned a new set with this `Cache-Control` and `ETag`.
    pub fn fetched(
        &mut self,
        jwks: Jwks,
        cache_control: Option<&str>,
        etag: Option<&str>,
        now: UnixTime,
    ) {
        self.jwks = Some(Arc::new(jwks));
        self.etag = etag.map(str::to_owned);
        self.renew(cache_control, now);
    }

    /// A conditional fetch answered `304 Not Modified`.
    pub fn not_modified(&mut self, cache_control: Option<&str>, now: UnixTime) {
        self.renew(cache_control, now);
    }

    /// Takes the keys `revoked` names out of the set in use (fresh or stale alike), so a
    /// revoked key is gone from every tier that copies this set. `true` if any went.
    pub fn remove_keys(&mut self, revoked: impl FnMut(&str) -> bool) -> bool {
        let Some(current) = &self.jwks else {
            return false;
        };
        let mut kept = Jwks::clone(current);
        if kept.remove_keys(revoked) == 0 {
            return false;
        }
        self.jwks = Some(Arc::new(kept));
        true
    }

    /// Every URL failed at `now` (the set, if any, stays in use until `max_stale`).
    pub fn failed(&mut self, now: UnixTime) {
        self.last_failure = Some(now);
    }

    fn renew(&mut self, cache_control: Option<&str>, now: UnixTime) {
        self.confirmed_at = now;
        self.cache_control = cache_control.map(str::to_owned);
        let max_age = cache_control
            .and_then(max_age_ms)
            .unwrap_or(self.policy.default_max_age_ms)
            .min(self.policy.max_max_age_ms);
        self.fresh_until = now.plus_millis(max_age);
        self.last_failure = None;
    }
}

/// `max-age` from a `Cache-Control` value, in milliseconds; `no-cache`/`no-store` mean 0.
#[must_use]
pub fn max_age_ms(cache_control: &str) -> Option<u64> {
    let mut max_age = None;
    for directive in cache_control.split(',') {
        let directive = directive.trim();
        if directive.eq_ignore_ascii_case("no-cache") || directive.eq_ignore_ascii_case("no-store")
        {
            return Some(0);
        }
        if let Some((name, value)) = directive.split_once('=') {
            if name.trim().eq_ignore_ascii_case("max-age") {
                max_age = value
                    .trim()
                    .trim_matches('"')
                    .parse::<u64>()
                    .ok()
                    .map(|secs| secs.saturating_mul(1000));
            }
        }
    }
    max_age
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> UnixTime {
        UnixTime::from_millis(1_800_000_000_000 + ms)
    }

    #[test]
    fn lifecycle_fresh_stale_too_old() {
        let policy = RefreshPolicy {
            max_stale_ms: 1000,
            ..RefreshPolicy::default()
        };
        let mut state = JwksRefresh::new(policy);
        assert_eq!(state.freshness(at(0)), Freshness::Missing);
        assert!(state.usable(at(0)).is_none() && state.refresh_due(at(0)));
        state.fetched(
            Jwks::default(),
            Some("public, max-age=60"),
            Some("\"e1\""),
            at(0),
        );
        assert_eq!(state.etag(), Some("\"e1\""));
        assert_eq!(state.freshness(at(59_999)), Freshness::Fresh);
        assert!(!state.refresh_due(at(59_999)));
        assert_eq!(state.freshness(at(60_000)), Freshness::Stale);
        state.failed(at(60_000));
        assert!(
            !state.refresh_due(at(60_001)),
            "no hammering after a failure"
        );
        assert!(
            state.usable(at(61_000)).is_some(),
            "the last good set stays in use"
        );
        assert_eq!(state.freshness(at(61_001)), Freshness::TooOld);
        assert!(state.usable(at(61_001)).is_none());
        state.not_modified(Some("max-age=10"), at(70_000));
        assert_eq!(state.freshness(at(70_000)), Freshness::Fresh);
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn a_revoked_key_leaves_the_set_in_use_fresh_or_stale() {
        // RFC 7515 A.3's P-256 key under two ids.
        let key = r#""kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0""#;
        let json = format!(r#"{{"keys":[{{"kid":"a",{key}}},{{"kid":"b",{key}}}]}}"#);
        let mut state = JwksRefresh::new(RefreshPolicy::default());
        state.fetched(Jwks::parse(&json).unwrap(), Some("max-age=60"), None, at(0));
        assert!(!state.remove_keys(|kid| kid == "c"), "nothing to remove");
        assert!(state.remove_keys(|kid| kid == "a"));
        assert!(!state.usable(at(0)).unwrap().contains("a"));
        // Stale (past max-age, within max-stale): the set in use has lost the key too.
        let stale = state.usable(at(120_000)).unwrap();
        assert!(!stale.contains("a") && stale.contains("b"));
    }

    #[test]
    fn unknown_kids_share_one_refetch_per_cooldown() {
        let mut state = JwksRefresh::new(RefreshPolicy::default());
        assert!(state.unknown_kid(at(0)));
        assert!(!state.unknown_kid(at(1)));
        assert!(!state.unknown_kid(at(29_999)));
        assert!(state.unknown_kid(at(30_000)));
    }

    #[test]
    fn cache_control_parsing() {
        assert_eq!(max_age_ms("public, max-age=300"), Some(300_000));
        assert_eq!(max_age_ms("max-age=\"5\""), Some(5000));
        assert_eq!(max_age_ms("no-cache, max-age=300"), Some(0));
        assert_eq!(max_age_ms("private"), None);
        assert_eq!(max_age_ms("max-age=-1"), None);
        let mut state = JwksRefresh::new(RefreshPolicy::default());
        state.fetched(Jwks::default(), Some("max-age=999999"), None, at(0));
        assert_eq!(
            state.freshness(at(3_599_999)),
            Freshness::Fresh,
            "capped at an hour"
        );
        assert_eq!(state.freshness(at(3_600_000)), Freshness::Stale);
    }
}
