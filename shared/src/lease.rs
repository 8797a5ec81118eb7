//! Quota leases: a client's exact rate limit, spent in an isolate without a round trip
//! (issue 30; this is the arithmetic, with no I/O and no clock).
//!
//! A client's limiter (the edge's Durable Object) keeps its GCRA state ([`GcraState`]) and
//! grants leases ([`grant`]): a number of permits, charged to the GCRA at once as that many
//! requests, good for [`LeasePolicy::ttl_ms`]. An isolate spends them with no subrequest
//! ([`Lease::take`]), asks for the next lease early ([`Lease::should_renew`]), and gives back
//! what it did not spend ([`refund`]), which the limiter credits to the GCRA if the lease has
//! not yet expired on its clock. Denials stay the GCRA's own: with nothing left to grant, the
//! limiter answers as [`crate::rate_limit::check`] would, `Retry-After` included.
//!
//! The bound. A client is admitted, in any window of length `w`, at most
//!
//! ```text
//! burst + (w + ttl) / T + O
//! ```
//!
//! requests, where `T` is the plan's interval between requests (`period / limit`) and `O` the
//! permits of leases granted before the window's start minus `ttl` and refunded after that
//! moment; the plan alone admits `burst + w / T`. Why:
//! - a permit is spent, if at all, within `ttl` of its grant: an isolate times its lease from
//!   when it asked, which is no later than the grant, so on equal clock rates it stops before
//!   the limiter's expiry;
//! - so what is spent in the window was granted in the `w + ttl` before its end, and GCRA
//!   holds what it charges there, less what it credits there, to `burst + (w + ttl) / T`;
//! - a credit there is of permits never spent: of a lease granted in that span, or of one
//!   granted before it, which is `O`.
//!
//! Refunds are accepted only before a lease ends, so `O` is at most the unspent permits of
//! the leases alive at the window's start minus `ttl` (those set aside with their refund on
//! the way included). `tests/lease.rs` checks the bound in a simulation of several isolates
//! with adversarial delays and asks.
//!
//! What the limiter must keep to for the bound: refund a lease at most once, with what was
//! really left of it, under the plan it was granted under (the credit is in that plan's
//! interval); and give isolates no longer a `ttl` than its own.

use crate::json::{JsonError, Member};
use crate::rate_limit::{check, Decision, GcraState, RatePlan, NANOS_PER_MILLI};
use crate::time::UnixTime;

/// How leases are sized and how long they live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeasePolicy {
    /// A lease's life, in milliseconds: the bound's `ttl`, and how stale an isolate's view of
    /// the client's remaining budget may get.
    pub ttl_ms: u64,
    /// The most permits in one lease: with the number of isolates, what can be outstanding.
    pub max_permits: u32,
}

/// A lease the limiter granted: `permits` to spend before `expires_at` (the limiter's clock).
/// No permits: denied, and `decision` says until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The lease's number in its limiter's [`LeaseBook`], which its refund names (0: a grant
    /// made outside a book, by [`grant`] alone).
    pub lease: u64,
    /// Permits granted (0: denied).
    pub permits: u32,
    /// When the lease ends on the limiter's clock (refunds after it are refused).
    pub expires_at: UnixTime,
    /// The GCRA's answer for the first permit: `remaining` after the grant, or the denial
    /// with `retry_after_ms`. What the `RateLimit` headers say.
    pub decision: Decision,
}

impl Grant {
    /// The grant as JSON, as [`Grant::from_json`] reads it: the decision's members and the
    /// lease's, flat (`lease` as a string: past 2^53, so not a JS number). Written by hand:
    /// eight numbers need no serializer in the edge's bundle.
    #[must_use]
    pub fn to_json(&self) -> String {
        let Decision {
            allowed,
            limit,
            remaining,
            reset_after_ms,
            retry_after_ms,
        } = self.decision;
        format!(
            "{{\"allowed\":{allowed},\"limit\":{limit},\"remaining\":{remaining},\
             \"reset_after_ms\":{reset_after_ms},\"retry_after_ms\":{retry_after_ms},\
             \"lease\":\"{}\",\"permits\":{},\"expires_at_ms\":{}}}",
            self.lease,
            self.permits,
            self.expires_at.as_millis()
        )
    }

    /// Reads a grant as [`Grant::to_json`] writes it. Unknown members are ignored.
    ///
    /// # Errors
    /// [`JsonError`] for anything but an object with the decision's five members and
    /// `lease`, `permits` and `expires_at_ms`; or a grant of permits that does not allow.
    pub fn from_json(json: &str) -> Result<Self, JsonError> {
        let shape = |expected| JsonError::Shape { expected };
        let [allowed, limit, remaining, reset_after_ms, retry_after_ms, lease, permits, expires_at_ms] =
            crate::json::parse(json.as_bytes())?.take_members([
                "allowed",
                "limit",
                "remaining",
                "reset_after_ms",
                "retry_after_ms",
                "lease",
                "permits",
                "expires_at_ms",
            ])?;
        let decision =
            Decision::from_members([allowed, limit, remaining, reset_after_ms, retry_after_ms])?;
        let lease = lease
            .as_ref()
            .and_then(Member::as_str)
            .and_then(|text| text.parse().ok())
            .ok_or(shape("a decimal string `lease`"))?;
        let permits = permits
            .as_ref()
            .and_then(Member::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or(shape("a u32 `permits`"))?;
        let expires_at_ms = expires_at_ms
            .as_ref()
            .and_then(Member::as_u64)
            .ok_or(shape("a u64 `expires_at_ms`"))?;
        if (permits > 0) != decision.allowed {
            return Err(shape("permits exactly when allowed"));
        }
        Ok(Self {
            lease,
            permits,
            expires_at: UnixTime::from_millis(expires_at_ms),
            decision,
        })
    }
}

/// Grants up to `wanted` permits (at least 1 is asked for) at `now` under `plan`: as many as
/// the GCRA admits at once, at most `policy.max_permits`. Returns the grant and the state to
/// store (unchanged when denied).
#[must_use]
pub fn grant(
    plan: &RatePlan,
    policy: &LeasePolicy,
    state: GcraState,
    now: UnixTime,
    wanted: u32,
) -> (Grant, GcraState) {
    let expires_at = now.plus_millis(policy.ttl_ms);
    // The first permit is an ordinary GCRA decision: a denial is exact.
    let (decision, after_one) = check(plan, state, now);
    if !decision.allowed {
        let denied = Grant {
            lease: 0,
            permits: 0,
            expires_at,
            decision,
        };
        return (denied, state);
    }
    // Then as many more as the burst has room for right now (`remaining`), up to the ask.
    let more = wanted
        .max(1)
        .min(policy.max_permits.max(1))
        .saturating_sub(1)
        .min(decision.remaining);
    let unit = plan.emission_interval();
    let state = GcraState {
        tat_nanos: after_one
            .tat_nanos
            .saturating_add(unit.saturating_mul(u64::from(more))),
    };
    let now_nanos = now.as_millis().saturating_mul(NANOS_PER_MILLI);
    let decision = Decision {
        remaining: decision.remaining.saturating_sub(more),
        reset_after_ms: state
            .tat_nanos
            .saturating_sub(now_nanos)
            .div_ceil(NANOS_PER_MILLI),
        ..decision
    };
    let granted = Grant {
        lease: 0,
        permits: more + 1,
        expires_at,
        decision,
    };
    (granted, state)
}

/// The arithmetic of a refund, with no record of leases: a limiter calls
/// [`LeaseBook::refund`], which also holds each lease to one refund of at most its permits.
/// Credits `unused` permits of a lease that ends at `expires_at` back to the GCRA at `now`:
/// the client may be granted them again. After the lease's end the refund is refused (the
/// state comes back unchanged): the bound above counts on no permit being credited later
/// than `ttl` after its grant. The credit never takes the state below "idle" (`now`).
#[must_use]
pub fn refund(
    plan: &RatePlan,
    state: GcraState,
    now: UnixTime,
    unused: u32,
    expires_at: UnixTime,
) -> GcraState {
    if now >= expires_at {
        return state;
    }
    credit(state, now, plan.emission_interval(), unused)
}

/// The GCRA state less `unused` permits of `interval_nanos` each, never below idle at `now`.
fn credit(state: GcraState, now: UnixTime, interval_nanos: u64, unused: u32) -> GcraState {
    let now_nanos = now.as_millis().saturating_mul(NANOS_PER_MILLI);
    let credit = interval_nanos.saturating_mul(u64::from(unused));
    GcraState {
        tat_nanos: state.tat_nanos.saturating_sub(credit).max(now_nanos),
    }
}

/// The leases a limiter has granted and not yet seen come back: what makes a refund count
/// at most once, for no more than the lease held, in the interval of the plan it was granted
/// under (the rules the bound above counts on, kept by the limiter whatever an isolate
/// sends). Kept in the limiter's memory, not its storage: a limiter that restarts has an
/// empty book and refuses the refunds of its earlier leases, which only makes it stricter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseBook {
    /// The last lease number given.
    last: u64,
    /// The leases not yet refunded, oldest first; at most [`LeaseBook::CAPACITY`].
    out: Vec<Outstanding>,
}

/// One lease in a [`LeaseBook`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Outstanding {
    lease: u64,
    permits: u32,
    expires_at_ms: u64,
    interval_nanos: u64,
}

/// What became of a refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refunded {
    /// This many permits went back to the GCRA (the unused permits named, at most the
    /// lease's own).
    Credited(u32),
    /// The lease had ended: nothing went back.
    Late,
    /// The book holds no such lease (refunded already, or granted before a restart, or
    /// pushed out of a full book): nothing went back.
    Unknown,
}

impl LeaseBook {
    /// The most leases a book remembers: far more than the isolates that hold a client's
    /// leases at once (each holds at most two). Past it the oldest is forgotten, and its
    /// refund refused.
    pub const CAPACITY: usize = 256;

    /// [`grant`], recorded: the grant carries its lease number. A lease number is at least
    /// the grant's time in milliseconds times 4,096, so a limiter that restarts does not give
    /// again a number its earlier leases had (unless it had granted 4,096 in a millisecond).
    pub fn grant(
        &mut self,
        plan: &RatePlan,
        policy: &LeasePolicy,
        state: GcraState,
        now: UnixTime,
        wanted: u32,
    ) -> (Grant, GcraState) {
        let (mut granted, state) = grant(plan, policy, state, now, wanted);
        self.out
            .retain(|lease| lease.expires_at_ms > now.as_millis());
        if granted.permits == 0 {
            return (granted, state);
        }
        self.last = self
            .last
            .saturating_add(1)
            .max(now.as_millis().saturating_mul(4096));
        granted.lease = self.last;
        if self.out.len() >= Self::CAPACITY {
            self.out.remove(0);
        }
        self.out.push(Outstanding {
            lease: self.last,
            permits: granted.permits,
            expires_at_ms: granted.expires_at.as_millis(),
            interval_nanos: plan.emission_interval(),
        });
        (granted, state)
    }

    /// Credits `unused` permits of lease `lease` at `now` (at most its own permits, once, if
    /// it has not ended) and forgets it. Returns the state to store and what was credited.
    pub fn refund(
        &mut self,
        state: GcraState,
        now: UnixTime,
        lease: u64,
        unused: u32,
    ) -> (GcraState, Refunded) {
        let Some(at) = self.out.iter().position(|out| out.lease == lease) else {
            return (state, Refunded::Unknown);
        };
        let out = self.out.remove(at);
        if now.as_millis() >= out.expires_at_ms {
            return (state, Refunded::Late);
        }
        let unused = unused.min(out.permits);
        let state = credit(state, now, out.interval_nanos, unused);
        (state, Refunded::Credited(unused))
    }

    /// How many leases the book holds (ended ones go at the next grant).
    #[must_use]
    pub fn len(&self) -> usize {
        self.out.len()
    }

    /// Whether the book holds none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// The book as text, for a limiter that keeps it between calls as a string:
    /// `last` then `lease:permits:expires_at_ms:interval_nanos` per lease, `;`-separated.
    #[must_use]
    pub fn to_text(&self) -> String {
        let mut text = self.last.to_string();
        for out in &self.out {
            text.push_str(&format!(
                ";{}:{}:{}:{}",
                out.lease, out.permits, out.expires_at_ms, out.interval_nanos
            ));
        }
        text
    }

    /// A book from [`LeaseBook::to_text`]; text it did not write is an empty book (which
    /// refuses every refund: the strict side).
    #[must_use]
    pub fn from_text(text: &str) -> Self {
        Self::parse(text).unwrap_or_default()
    }

    fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split(';');
        let last = parts.next()?.parse().ok()?;
        let mut out = Vec::new();
        for part in parts.take(Self::CAPACITY) {
            let mut fields = part.split(':');
            let mut next = || fields.next()?.parse::<u64>().ok();
            out.push(Outstanding {
                lease: next()?,
                permits: u32::try_from(next()?).ok()?,
                expires_at_ms: next()?,
                interval_nanos: next()?,
            });
        }
        Some(Self { last, out })
    }
}

/// A lease as an isolate spends it, timed on the isolate's clock from when it asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Its number in the limiter's book, for the refund.
    lease: u64,
    permits: u32,
    spent: u32,
    /// When the isolate asked: the lease ends `ttl` after it on the isolate's clock, no later
    /// than on the limiter's.
    asked_at: UnixTime,
    ttl_ms: u64,
    /// The limiter's end of the lease, for the refund.
    expires_at: UnixTime,
}

impl Lease {
    /// The lease `grant` made for an ask sent at `asked_at`, under `policy`.
    #[must_use]
    pub fn new(grant: &Grant, asked_at: UnixTime, policy: &LeasePolicy) -> Self {
        Self {
            lease: grant.lease,
            permits: grant.permits,
            spent: 0,
            asked_at,
            ttl_ms: policy.ttl_ms,
            expires_at: grant.expires_at,
        }
    }

    /// Spends one permit at `now`, if the lease is still live and has one left.
    pub fn take(&mut self, now: UnixTime) -> bool {
        if !self.is_live(now) || self.spent >= self.permits {
            return false;
        }
        self.spent += 1;
        true
    }

    /// Whether the lease is still good at `now` (on the isolate's clock).
    #[must_use]
    pub fn is_live(&self, now: UnixTime) -> bool {
        now.millis_since(self.asked_at) < self.ttl_ms && now >= self.asked_at
    }

    /// Whether to ask for the next lease now, in the background: half the permits spent, or
    /// half the life gone, so a steady client never waits on its limiter.
    #[must_use]
    pub fn should_renew(&self, now: UnixTime) -> bool {
        self.spent.saturating_mul(2) >= self.permits
            || now.millis_since(self.asked_at).saturating_mul(2) >= self.ttl_ms
    }

    /// Permits left unspent: what [`refund`] gives back once the lease is set aside.
    #[must_use]
    pub fn unused(&self) -> u32 {
        self.permits - self.spent
    }

    /// When it was asked for, on the isolate's clock: its life runs from then.
    #[must_use]
    pub fn asked_at(&self) -> UnixTime {
        self.asked_at
    }

    /// The limiter's end of the lease, which [`refund`] is given.
    #[must_use]
    pub fn expires_at(&self) -> UnixTime {
        self.expires_at
    }

    /// Its number in the limiter's [`LeaseBook`] (what a refund names).
    #[must_use]
    pub fn number(&self) -> u64 {
        self.lease
    }

    /// The permits it was granted.
    #[must_use]
    pub fn permits(&self) -> u32 {
        self.permits
    }

    /// Gives back what its rate of spending will not use: it keeps as many permits again as
    /// it has spent, plus one, and returns how many it gave up (never to be spent here: what
    /// the limiter's [`refund`] may credit). Meant for [`Lease::should_renew`]'s half-life
    /// point, when less than half is spent: the client slowed down.
    pub fn give_back(&mut self) -> u32 {
        let keep = self.spent.saturating_mul(2).saturating_add(1);
        let back = self.permits.saturating_sub(keep);
        self.permits -= back;
        back
    }

    /// Whether every permit is spent.
    #[must_use]
    pub fn is_spent(&self) -> bool {
        self.spent >= self.permits
    }

    /// How many permits to ask for next: what this lease's rate of spending would use in
    /// half a lease's life (at least 1), so a busy isolate renews rarely, an idle one holds
    /// little, and at a steady rate a lease is spent well before it ends (nothing is left
    /// to give back).
    #[must_use]
    pub fn wanted_next(&self, now: UnixTime, policy: &LeasePolicy) -> u32 {
        let elapsed = now.millis_since(self.asked_at).max(1);
        let per_half_life = u64::from(self.spent).saturating_mul(policy.ttl_ms / 2) / elapsed;
        u32::try_from(per_half_life)
            .unwrap_or(u32::MAX)
            .clamp(1, policy.max_permits.max(1))
    }
}

// Natively with `cargo test`, and in wasm with `wasm-pack test --node` (tests/run).
#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn plan() -> RatePlan {
        RatePlan::new(10, 1, 5).unwrap()
    }

    const POLICY: LeasePolicy = LeasePolicy {
        ttl_ms: 1000,
        max_permits: 4,
    };

    fn at(ms: u64) -> UnixTime {
        UnixTime::from_millis(1_000_000 + ms)
    }

    #[test]
    fn a_grant_is_what_the_gcra_admits_at_once_and_a_denial_is_its_own() {
        let (first, state) = grant(&plan(), &POLICY, GcraState::default(), at(0), 10);
        assert_eq!(first.permits, 4, "capped by max_permits");
        assert_eq!(first.decision.remaining, 1, "5 in the burst, 4 granted");
        let (second, state) = grant(&plan(), &POLICY, state, at(0), 10);
        assert_eq!(second.permits, 1, "what is left of the burst");
        let (denied, unchanged) = grant(&plan(), &POLICY, state, at(0), 1);
        assert_eq!(denied.permits, 0);
        assert_eq!(unchanged, state);
        // Exactly what a single request's check says: one every 100 ms.
        assert_eq!(
            denied.decision,
            crate::rate_limit::check(&plan(), state, at(0)).0
        );
        assert_eq!(denied.decision.retry_after_ms, 100);
        let (later, _) = grant(&plan(), &POLICY, state, at(100), 10);
        assert_eq!(later.permits, 1);
    }

    #[test]
    fn a_lease_ends_at_its_ttl_from_the_ask() {
        let (granted, _) = grant(&plan(), &POLICY, GcraState::default(), at(30), 4);
        // Asked at 0, granted at 30: the isolate's lease ends at 1000, before the limiter's.
        let mut lease = Lease::new(&granted, at(0), &POLICY);
        assert_eq!(lease.expires_at(), at(1030));
        assert!(lease.take(at(999)));
        assert!(!lease.take(at(1000)), "not at its end");
        assert!(!lease.take(at(5000)));
        assert_eq!(lease.unused(), 3);
        let mut early = Lease::new(&granted, at(500), &POLICY);
        assert!(
            !early.take(at(499)),
            "nor before its ask, on a clock that went back"
        );
    }

    #[test]
    fn renewal_comes_at_half_the_permits_or_half_the_life() {
        let (granted, _) = grant(&plan(), &POLICY, GcraState::default(), at(0), 4);
        let mut lease = Lease::new(&granted, at(0), &POLICY);
        assert!(lease.take(at(10)));
        assert!(!lease.should_renew(at(10)));
        assert!(lease.should_renew(at(500)), "half its life");
        assert!(lease.take(at(20)));
        assert!(lease.should_renew(at(20)), "half its permits");
        // Two permits in 20 ms is fifty in half a lease's life: capped at max_permits.
        assert_eq!(lease.wanted_next(at(20), &POLICY), 4);
        assert_eq!(lease.wanted_next(at(499), &POLICY), 2);
        assert_eq!(lease.wanted_next(at(999), &POLICY), 1);
        let mut slow = Lease::new(&granted, at(0), &POLICY);
        assert!(slow.take(at(10)));
        assert!(slow.should_renew(at(500)));
        assert_eq!(slow.give_back(), 1, "keeps what it spent again, plus one");
        assert_eq!((slow.permits(), slow.unused()), (3, 2));
        assert_eq!(slow.give_back(), 0);
    }

    #[test]
    fn a_refund_counts_only_before_the_lease_ends() {
        let (granted, state) = grant(&plan(), &POLICY, GcraState::default(), at(0), 4);
        let credited = refund(&plan(), state, at(1), 3, granted.expires_at);
        let (again, _) = grant(&plan(), &POLICY, credited, at(1), 4);
        assert_eq!(again.permits, 4, "three back: four of the five again");
        let expired = refund(&plan(), state, granted.expires_at, 3, granted.expires_at);
        assert_eq!(expired, state, "at its end, too late");
        // Never below idle: a refund cannot bank permits for later.
        let idle = refund(&plan(), state, at(900), 4, granted.expires_at);
        assert_eq!(idle.tat_nanos, at(900).as_millis() * NANOS_PER_MILLI);
    }

    #[test]
    fn a_grant_crosses_as_json_and_nothing_else_reads_as_one() {
        let mut book = LeaseBook::default();
        let (granted, state) = book.grant(&plan(), &POLICY, GcraState::default(), at(0), 3);
        assert_eq!(Grant::from_json(&granted.to_json()), Ok(granted));
        assert!(granted.lease >= at(0).as_millis() * 4096);
        let (_, state) = book.grant(&plan(), &POLICY, state, at(0), 4);
        let (denied, _) = book.grant(&plan(), &POLICY, state, at(0), 4);
        assert_eq!(denied.permits, 0);
        assert_eq!(Grant::from_json(&denied.to_json()), Ok(denied));
        let forged = granted
            .to_json()
            .replace("\"allowed\":true", "\"allowed\":false");
        assert!(Grant::from_json(&forged).is_err(), "permits with a denial");
        assert!(Grant::from_json("{\"allowed\":true}").is_err());
        assert!(Grant::from_json("[]").is_err());
    }

    #[test]
    fn the_book_refunds_a_lease_once_and_no_more_than_it_held() {
        let mut book = LeaseBook::default();
        let (first, state) = book.grant(&plan(), &POLICY, GcraState::default(), at(0), 2);
        let (second, state) = book.grant(&plan(), &POLICY, state, at(0), 2);
        assert_ne!(first.lease, second.lease);
        assert_eq!(book.len(), 2);
        // Through text, as the Durable Object keeps it.
        let mut book = LeaseBook::from_text(&book.to_text());
        assert_eq!(book.len(), 2);
        let (credited, refunded) = book.refund(state, at(1), first.lease, 50);
        assert_eq!(
            refunded,
            Refunded::Credited(2),
            "no more than the lease held"
        );
        assert_eq!(credited, refund(&plan(), state, at(1), 2, first.expires_at));
        let (again, refunded) = book.refund(credited, at(1), first.lease, 2);
        assert_eq!((again, refunded), (credited, Refunded::Unknown), "once");
        let (late, refunded) = book.refund(credited, second.expires_at, second.lease, 2);
        assert_eq!((late, refunded), (credited, Refunded::Late));
        assert!(book.is_empty());
        // A restarted limiter's empty book refuses an earlier lease's refund.
        let (_, refunded) = LeaseBook::from_text("junk").refund(state, at(1), first.lease, 1);
        assert_eq!(refunded, Refunded::Unknown);
    }

    #[test]
    fn a_full_book_forgets_its_oldest_lease() {
        let plan = RatePlan::new(1_000_000, 1, 1_000_000).unwrap();
        let policy = LeasePolicy {
            ttl_ms: 1000,
            max_permits: 1,
        };
        let mut book = LeaseBook::default();
        let mut state = GcraState::default();
        let mut first = None;
        for _ in 0..=LeaseBook::CAPACITY {
            let (granted, next) = book.grant(&plan, &policy, state, at(0), 1);
            first.get_or_insert(granted.lease);
            state = next;
        }
        assert_eq!(book.len(), LeaseBook::CAPACITY);
        let (_, refunded) = book.refund(state, at(1), first.unwrap(), 1);
        assert_eq!(refunded, Refunded::Unknown);
    }
}
