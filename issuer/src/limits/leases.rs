//! Leases of permits from Redis (`redis_lease_ttl_ms`): a busy key's decisions made in this
//! instance without a call, from permits Redis already charged to the key.
//!
//! A decision that goes to Redis may ask, for each charge of one request, for more permits
//! than the charge itself: the script charges them to the key at once, as that many requests,
//! if the burst has room for them right now (`shared::lease::grant`'s arithmetic, in Lua).
//! This instance then spends them on the key's next decisions, one each, with no call, until
//! they run out or the lease ends, `ttl` after the decision that asked (on this instance's
//! clock, which also timed the charge). Permits left when a lease ends are not given back:
//! the key was charged for requests it did not make, the strict side.
//!
//! The bound (`shared::lease`'s, with nothing refunded): in any window of length `w`, the
//! instances together admit a key at most `burst + (w + ttl) / T` requests, where `T` is the
//! plan's interval between requests; the plan alone admits `burst + w / T`. A permit is spent
//! within `ttl` of its charge, so what is spent in the window was charged in the `w + ttl`
//! before its end, which GCRA holds to that. What leases cost the other way: a key may be
//! refused by one instance while another holds permits of it, at most one lease's worth per
//! instance for at most `ttl`.
//!
//! Denials are Redis's own: a decision a lease cannot cover (no live lease, or one spent, for
//! any of its charges) goes to Redis. So do charges of more than one request and charges
//! that are not enforced (a failed authentication's extra cost): rare, and exact. A lease
//! holds at most [`LeasePolicy::max_permits`], and at most an eighth of its plan's burst, so a
//! small plan stays exact; its size follows the key's rate here (`Lease::wanted_next`: what
//! half a lease's life takes at that rate), at most twice the last lease's, so a key seen now
//! and then asks for no more than its own charge, and a busy one grows its leases from one.

use std::collections::HashMap;
use std::sync::Mutex;

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
    ask_ms: u64,
    held: Mutex<HashMap<String, Held>>,
}

/// A key's lease, and whether a decision is asking for the next.
#[derive(Debug)]
struct Held {
    /// The last lease granted (spent, ended or not): what sizes the next ask.
    lease: Option<Lease>,
    /// When it was asked for (its life runs from then).
    asked_at: UnixTime,
    /// The plan's burst: the limit its decisions state.
    limit: u32,
    /// Until when an ask for this key is out. One at a time: decisions meanwhile go to Redis
    /// with their charge alone, so no two leases of a key are held here at once.
    asking_until: UnixTime,
}

/// What one charge asks of Redis beyond itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ask {
    /// Permits beyond the charge (0: just the charge, still a lease of one, which tells the
    /// next ask the key's rate).
    pub(super) extra: u32,
}

impl Leases {
    /// `ask_ms`: how long a decision may wait for Redis (an ask left unanswered counts as out
    /// that long).
    pub(super) fn new(policy: LeasePolicy, ask_ms: u64) -> Self {
        Self {
            policy,
            ask_ms,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// Spends one permit of each key's lease at `now` if every key has a live lease with a
    /// permit left (all or none), and returns the decision: allowed, with the last key's
    /// permits still held here as `remaining` and its lease's life left as `reset_after_ms`.
    pub(super) fn take_all<'k>(
        &self,
        keys: impl Iterator<Item = &'k str> + Clone,
        now: UnixTime,
    ) -> Option<Decision> {
        let mut held = lock(&self.held);
        let covered = keys.clone().all(|key| {
            held.get(key)
                .and_then(|held| held.lease.as_ref())
                .is_some_and(|lease| lease.is_live(now) && !lease.is_spent())
        });
        if !covered {
            return None;
        }
        let mut decision = None;
        for key in keys {
            let held = held.get_mut(key)?;
            let lease = held.lease.as_mut()?;
            lease.take(now);
            decision = Some(Decision {
                allowed: true,
                limit: held.limit,
                remaining: lease.unused(),
                reset_after_ms: self
                    .policy
                    .ttl_ms
                    .saturating_sub(now.millis_since(held.asked_at)),
                retry_after_ms: 0,
            });
        }
        decision
    }

    /// The ask to send with a charge of one request to `key` under `plan` at `now`, and the
    /// ask counted as out; `None` when this decision installs no lease: one is asking
    /// already, the key's lease still has permits (only another charge of the decision needed
    /// Redis), or the table is full of live keys.
    pub(super) fn ask(&self, key: &str, plan: &RatePlan, now: UnixTime) -> Option<Ask> {
        let mut held = lock(&self.held);
        if held.len() >= MAX_ENTRIES && !held.contains_key(key) {
            // Keys whose lease ended and that ask nothing tell only an old rate: forgotten.
            held.retain(|_, held| {
                now < held.asking_until || held.lease.is_some_and(|lease| lease.is_live(now))
            });
            if held.len() >= MAX_ENTRIES {
                return None;
            }
        }
        let entry = held.entry(key.to_owned()).or_insert(Held {
            lease: None,
            asked_at: UnixTime::EPOCH,
            limit: plan.burst(),
            asking_until: UnixTime::EPOCH,
        });
        let has_permits = entry
            .lease
            .is_some_and(|lease| lease.is_live(now) && !lease.is_spent());
        // Out: until its time is up (or the clock stepped back past when it was sent).
        let asking =
            now < entry.asking_until && entry.asking_until.millis_since(now) <= self.ask_ms;
        if has_permits || asking {
            return None;
        }
        // What the key's rate here would spend in half a lease's life, and at most twice the
        // last lease: a key's first few requests in quick succession do not take a whole
        // lease of its burst that it may never use.
        let wanted = entry
            .lease
            .map_or(1, |lease| {
                lease
                    .wanted_next(now, &self.policy)
                    .min(lease.permits().saturating_mul(2))
            })
            .min(self.max_permits(plan));
        entry.asking_until = now.plus_millis(self.ask_ms);
        Some(Ask {
            extra: wanted.saturating_sub(1),
        })
    }

    /// The answer to an ask of `key` made at `now`: the permits charged with the charge (its
    /// own among them: 0 when it was refused or not reached) and the decision, or `None` when
    /// Redis did not answer. Permits become the key's lease, and the decision's own is spent
    /// from it.
    pub(super) fn answered(&self, key: &str, now: UnixTime, granted: Option<(u32, Decision)>) {
        let mut held = lock(&self.held);
        let Some(entry) = held.get_mut(key) else {
            return;
        };
        entry.asking_until = UnixTime::EPOCH;
        let Some((permits @ 1.., decision)) = granted else {
            return;
        };
        let grant = Grant {
            lease: 0,
            permits,
            expires_at: now.plus_millis(self.policy.ttl_ms),
            decision,
        };
        let mut lease = Lease::new(&grant, now, &self.policy);
        lease.take(now);
        entry.lease = Some(lease);
        entry.asked_at = now;
    }

    /// The most permits one lease of `plan` holds: the policy's, and at most an eighth of the
    /// burst (at least 1, the charge alone). A plan of a few requests stays exact, and what
    /// one instance may hold of a key stays a small part of its burst.
    fn max_permits(&self, plan: &RatePlan) -> u32 {
        self.policy.max_permits.min(plan.burst() / 8).max(1)
    }
}
