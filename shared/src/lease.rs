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
    /// Permits granted (0: denied).
    pub permits: u32,
    /// When the lease ends on the limiter's clock (refunds after it are refused).
    pub expires_at: UnixTime,
    /// The GCRA's answer for the first permit: `remaining` after the grant, or the denial
    /// with `retry_after_ms`. What the `RateLimit` headers say.
    pub decision: Decision,
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
        permits: more + 1,
        expires_at,
        decision,
    };
    (granted, state)
}

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
    let now_nanos = now.as_millis().saturating_mul(NANOS_PER_MILLI);
    let credit = plan.emission_interval().saturating_mul(u64::from(unused));
    GcraState {
        tat_nanos: state.tat_nanos.saturating_sub(credit).max(now_nanos),
    }
}

/// A lease as an isolate spends it, timed on the isolate's clock from when it asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
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

    /// The limiter's end of the lease, which [`refund`] is given.
    #[must_use]
    pub fn expires_at(&self) -> UnixTime {
        self.expires_at
    }

    /// How many permits to ask for next: what this lease's rate of spending would use in a
    /// lease's life (at least 1), so a busy isolate renews rarely and an idle one holds little.
    #[must_use]
    pub fn wanted_next(&self, now: UnixTime, policy: &LeasePolicy) -> u32 {
        let elapsed = now.millis_since(self.asked_at).max(1);
        let per_life = u64::from(self.spent).saturating_mul(policy.ttl_ms) / elapsed;
        u32::try_from(per_life)
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
        // Two permits in 20 ms is a hundred in a lease's life: capped at max_permits.
        assert_eq!(lease.wanted_next(at(20), &POLICY), 4);
        assert_eq!(lease.wanted_next(at(999), &POLICY), 2);
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
}
