//! Leases of permits from Redis (`redis_lease_ttl_ms`): a busy key's decisions made in this
//! instance without a call, from permits Redis already charged to the key.
//!
//! A decision that goes to Redis may ask, for each charge of one request, for more permits
//! than the charge itself: the script charges them to the key at once, as that many requests,
//! if the burst has room for them right now (`shared::lease::grant`'s arithmetic, in Lua).
//! This instance then spends them on the key's next decisions, one each, with no call, until
//! they run out or the lease ends, `ttl` after the decision that asked. Permits left when a
//! lease ends are not given back: the key was charged for requests it did not make, the
//! strict side. Once a lease is half spent or half through its life, the next decision it
//! covers asks Redis for its successor instead (and comes back to the lease if Redis does
//! not allow it), so a busy key's decisions do not all go to Redis each time a lease runs
//! out; the successor is spent once the lease before it is.
//!
//! The bound (`shared::lease`'s, with nothing refunded): in any window of length `w`, the
//! instances together admit a key at most `burst + (w + ttl) / T` requests, where `T` is the
//! plan's interval between requests; the plan alone admits `burst + w / T`. A permit is spent
//! within `ttl` of its charge, so what is spent in the window was charged in the `w + ttl`
//! before its end, which GCRA holds to that. "Within `ttl`" holds on two clocks: on the
//! decisions' own times (the times GCRA charges at) and on this instance's monotonic clock,
//! from before the ask left: a lease ends at whichever comes first, so neither a request
//! stamped long ago (a slow authentication) nor a wall clock stepped back spends a permit
//! later than `ttl` after its charge.
//!
//! What leases cost the other way: permits never spent are lost to the key, as if those
//! requests had been made (the strict side): what is left of a lease when a busy key slows
//! down, moves to other instances or its lease ends (early, on the monotonic clock, for a
//! decision stamped long before its ask), and a whole lease whose answer is not taken (its
//! decision timed out or went away after Redis charged it).
//!
//! Denials are Redis's own: a decision a lease cannot cover (no live lease, or one spent, for
//! any of its charges) goes to Redis. So do charges of more than one request and charges
//! that are not enforced (a failed authentication's extra cost): rare, and exact. A lease
//! holds at most [`LeasePolicy::max_permits`], and at most an eighth of its plan's burst, so a
//! small plan stays exact (and its keys are not kept here); its size follows the key's rate
//! here (`Lease::wanted_next`: what half a lease's life takes at that rate), at most twice the
//! last lease's, so a key seen now and then asks for no more than its own charge, and a busy
//! one grows its leases from one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use shared::lease::{Grant, Lease, LeasePolicy};
use shared::rate_limit::Decision;
use shared::{RatePlan, UnixTime};

use super::{lock, MAX_ENTRIES};

/// The leases this instance holds, by Redis key (which names the plan: a reloaded plan starts
/// with no leases).
#[derive(Debug)]
pub(super) struct Leases {
    policy: LeasePolicy,
    /// How long an ask counts as out: the longest a decision waits for Redis.
    ask_for: Duration,
    held: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    keys: HashMap<String, Held>,
    /// When a full table may next be swept (a sweep is a pass over all).
    next_sweep: Option<Instant>,
}

/// A key's leases, and whether a decision is asking for the next.
#[derive(Debug)]
struct Held {
    /// The lease being spent, or the last one (spent or ended: what sizes the next ask).
    current: Option<Timed>,
    /// A lease asked for before the current one ran out (`Lease::should_renew`: half spent
    /// or half through its life), spent once the current one is: a busy key's decisions do
    /// not all go to Redis each time a lease runs out.
    next: Option<Timed>,
    /// The plan's burst: the limit its decisions state.
    limit: u32,
    /// Since when an ask for this key is out (monotonic: decisions' own times may come out
    /// of order). One at a time: decisions meanwhile are made from the leases held, or go to
    /// Redis with their charge alone.
    asking_since: Option<Instant>,
    /// After Redis refused an ask, no renewal before its retry-after: the lease's decisions
    /// are its own until then, not a round trip each.
    renew_after: UnixTime,
}

/// A lease (its life on the decisions' clock runs from `Lease::asked_at`) and when it ends
/// on the monotonic clock.
#[derive(Debug, Clone, Copy)]
struct Timed {
    lease: Lease,
    /// `ttl` from just before its ask left.
    ends: Instant,
}

/// A decision's time on both clocks: its stamp, and one reading of the monotonic clock (so
/// that every check of one decision sees the same leases).
#[derive(Debug, Clone, Copy)]
struct When {
    now: UnixTime,
    at: Instant,
}

impl Timed {
    /// Whether it has a permit to spend `when`.
    fn covers(&self, when: When) -> bool {
        self.lease.is_live(when.now) && !self.lease.is_spent() && when.at < self.ends
    }

    /// Whether it still has permits for decisions from `when` on: live, or asked for less
    /// than `ttl_ms` after the decision's stamp (a decision stamped before the ask that came
    /// in after it, which Redis decides alone rather than throw the lease away).
    fn holds_permits(&self, when: When, ttl_ms: u64) -> bool {
        let asked_at = self.lease.asked_at();
        let ahead = when.now < asked_at && asked_at.millis_since(when.now) < ttl_ms;
        !self.lease.is_spent() && (ahead || self.lease.is_live(when.now)) && when.at < self.ends
    }
}

impl Held {
    /// The lease to spend `when`: the current one while it covers, else the next one, which
    /// becomes the current one once the current one holds no permits.
    fn spendable(&mut self, when: When, ttl_ms: u64) -> Option<&mut Timed> {
        let current_holds = self
            .current
            .is_some_and(|current| current.holds_permits(when, ttl_ms));
        if !current_holds && self.next.is_some_and(|next| next.covers(when)) {
            self.current = self.next.take();
        }
        self.current.as_mut().filter(|current| current.covers(when))
    }

    /// Whether an ask for this key is out.
    fn asking(&self, ask_for: Duration) -> bool {
        self.asking_since
            .is_some_and(|since| since.elapsed() < ask_for)
    }

    /// Whether the current lease is due for renewal `when` (half spent or half through its
    /// life, for a decision stamped within it, and not just refused) and nothing is asking
    /// for or holding its successor.
    fn due(&self, when: When, ask_for: Duration) -> bool {
        self.next.is_none() && !self.asking(ask_for) && self.renews(when.now)
    }

    /// Whether the current lease is to be renewed by a decision stamped `now`.
    fn renews(&self, now: UnixTime) -> bool {
        now >= self.renew_after
            && self.current.is_some_and(|current| {
                now >= current.lease.asked_at() && current.lease.should_renew(now)
            })
    }
}

/// What the leases made of a decision ([`Leases::take_all`]).
#[derive(Debug, Clone, Copy)]
pub(super) enum Taken {
    /// Made from the leases: a permit of each key spent.
    Spent(Decision),
    /// The leases cover it, but one of them is due for renewal: the decision goes to Redis to
    /// ask for the next, and comes back to the leases if Redis does not allow it
    /// (`renewing: false`).
    Renew,
    /// Not covered: the decision goes to Redis.
    Uncovered,
}

/// What one charge asks of Redis beyond itself.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ask {
    /// Permits beyond the charge (0: just the charge, still a lease of one, which tells the
    /// next ask the key's rate).
    pub(super) extra: u32,
    /// When it was counted as out: its answer is taken only while it still is
    /// ([`Leases::answered`]), and the lease ends `ttl` after it.
    since: Instant,
}

impl Leases {
    /// `ask_for`: how long a decision may wait for Redis (an ask left unanswered counts as out
    /// that long).
    pub(super) fn new(policy: LeasePolicy, ask_for: Duration) -> Self {
        Self {
            policy,
            ask_for,
            held: Mutex::new(Table::default()),
        }
    }

    /// Spends one permit of each key's lease at `now` if every key has a lease with a permit
    /// left (all or none), unless `renewing` and one of them is due for renewal. The decision
    /// made: allowed, with the last key's permits in its lease as `remaining` and the lease's
    /// life left as `reset_after_ms`.
    pub(super) fn take_all<'k>(
        &self,
        keys: impl Iterator<Item = &'k str> + Clone,
        now: UnixTime,
        renewing: bool,
    ) -> Taken {
        let when = When {
            now,
            at: Instant::now(),
        };
        let ttl_ms = self.policy.ttl_ms;
        let mut table = lock(&self.held);
        let mut due = false;
        for key in keys.clone() {
            let Some(held) = table.keys.get_mut(key) else {
                return Taken::Uncovered;
            };
            if held.spendable(when, ttl_ms).is_none() {
                return Taken::Uncovered;
            }
            due |= held.due(when, self.ask_for);
        }
        if renewing && due {
            return Taken::Renew;
        }
        let mut decision = Taken::Uncovered;
        for key in keys {
            let Some(held) = table.keys.get_mut(key) else {
                continue;
            };
            let limit = held.limit;
            // Covered, as the pass above found at the same instant.
            let Some(timed) = held.spendable(when, ttl_ms) else {
                continue;
            };
            timed.lease.take(now);
            let life_left = timed.ends.saturating_duration_since(when.at);
            decision = Taken::Spent(Decision {
                allowed: true,
                limit,
                remaining: timed.lease.unused(),
                reset_after_ms: self
                    .policy
                    .ttl_ms
                    .saturating_sub(now.millis_since(timed.lease.asked_at()))
                    .min(u64::try_from(life_left.as_millis()).unwrap_or(u64::MAX)),
                retry_after_ms: 0,
            });
        }
        decision
    }

    /// The ask to send with a charge of one request to `key` under `plan` at `now`, and the
    /// ask counted as out; `None` when this decision installs no lease: the plan is too small
    /// for leases, one is asking already, a successor waits, the key's lease still has
    /// permits and is not due for renewal (only another charge of the decision needed Redis,
    /// or the decision was stamped just before the lease's ask), or the table is full of live
    /// keys.
    pub(super) fn ask(&self, key: &str, plan: &RatePlan, now: UnixTime) -> Option<Ask> {
        if !self.leases(plan) {
            return None;
        }
        let most = self.max_permits(plan);
        let mut table = lock(&self.held);
        let Table { keys, next_sweep } = &mut *table;
        if keys.len() >= MAX_ENTRIES && !keys.contains_key(key) {
            let at = Instant::now();
            if next_sweep.is_none_or(|next| at >= next) {
                // Keys whose lease ended and that ask nothing tell only an old rate (an ask
                // whose decision went away is out no longer than `ask_for`).
                let ask_for = self.ask_for;
                keys.retain(|_, held| {
                    held.asking_since
                        .is_some_and(|since| at.duration_since(since) < ask_for)
                        || [held.current, held.next]
                            .iter()
                            .flatten()
                            .any(|timed| at < timed.ends)
                });
                *next_sweep = Some(at + Duration::from_secs(1));
            }
            if keys.len() >= MAX_ENTRIES {
                return None;
            }
        }
        if !keys.contains_key(key) {
            let new = Held {
                current: None,
                next: None,
                limit: plan.burst(),
                asking_since: None,
                renew_after: UnixTime::EPOCH,
            };
            keys.insert(key.to_owned(), new);
        }
        let held = keys.get_mut(key)?;
        let ttl_ms = self.policy.ttl_ms;
        let when = When {
            now,
            at: Instant::now(),
        };
        // Nothing to ask: an ask is out, a successor waits, or the current lease holds
        // permits and is not due for renewal.
        let holds =
            |timed: Option<Timed>| timed.is_some_and(|timed| timed.holds_permits(when, ttl_ms));
        if held.asking(self.ask_for)
            || holds(held.next)
            || (holds(held.current) && !held.renews(now))
        {
            return None;
        }
        // What the key's rate here would spend in half a lease's life, and at most twice the
        // last lease: a key's first few requests in quick succession do not take a whole
        // lease of its burst that it may never use.
        let wanted = held
            .next
            .or(held.current)
            .map(|timed| timed.lease)
            .map_or(1, |lease| {
                lease
                    .wanted_next(now, &self.policy)
                    .min(lease.permits().saturating_mul(2))
            })
            .min(most);
        let since = Instant::now();
        held.asking_since = Some(since);
        Some(Ask {
            extra: wanted.saturating_sub(1),
            since,
        })
    }

    /// The answer to `ask` of `key`, made at `now`: the permits charged with the charge (its
    /// own among them: 0 when it was refused or not reached) and the decision, or `None` when
    /// Redis did not answer. Permits become a lease, the decision's own spent from it: the
    /// key's current lease, or its successor while the current one holds permits. Unless the
    /// ask no longer counts as out (a later one replaced it): then its permits are left
    /// unspent.
    pub(super) fn answered(
        &self,
        key: &str,
        ask: Ask,
        now: UnixTime,
        granted: Option<(u32, Decision)>,
    ) {
        let mut table = lock(&self.held);
        let Some(held) = table.keys.get_mut(key) else {
            return;
        };
        if held.asking_since != Some(ask.since) {
            return;
        }
        held.asking_since = None;
        let (permits, decision) = match granted {
            Some((permits @ 1.., decision)) => (permits, decision),
            // Refused (or not reached past a refusal): no renewal until its retry-after.
            Some((_, refused)) => {
                held.renew_after = now.plus_millis(refused.retry_after_ms);
                return;
            }
            None => return,
        };
        // `Lease` is the edge's, made from a grant; the issuer's leases have no number (no
        // refunds), and end `ttl` after the decision that asked.
        let grant = Grant {
            lease: 0,
            permits,
            expires_at: now.plus_millis(self.policy.ttl_ms),
            decision,
        };
        let mut lease = Lease::new(&grant, now, &self.policy);
        lease.take(now);
        let timed = Timed {
            lease,
            ends: ask.since + Duration::from_millis(self.policy.ttl_ms),
        };
        // The successor of a lease that still holds permits; else the current lease.
        let when = When {
            now,
            at: Instant::now(),
        };
        if held
            .current
            .is_some_and(|current| current.holds_permits(when, self.policy.ttl_ms))
        {
            held.next = Some(timed);
        } else {
            held.current = Some(timed);
            held.next = None;
        }
    }

    /// Whether keys of `plan` are leased at all: not when a lease could hold only the charge
    /// itself. A decision is leased only if every charge of it is: a lease one of its keys
    /// could never spend alongside the others would be charged for nothing.
    pub(super) fn leases(&self, plan: &RatePlan) -> bool {
        self.max_permits(plan) > 1
    }

    /// The most permits one lease of `plan` holds: the policy's, and at most an eighth of the
    /// burst (at least 1, the charge alone). A plan of a few requests stays exact, and what
    /// one instance may hold of a key stays a small part of its burst.
    fn max_permits(&self, plan: &RatePlan) -> u32 {
        self.policy.max_permits.min(plan.burst() / 8).max(1)
    }
}
