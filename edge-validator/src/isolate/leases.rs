//! `RATE_LIMIT_MODE=lease`: a client's plan spent from leases (`shared::lease`), so most
//! requests are decided in the isolate with no Durable Object call, and the count stays the
//! object's.
//!
//! Per key the isolate holds the lease it spends and, once renewed, the next one. A request
//! takes a permit ([`Leases::take`]): from the current lease, else the next. Past half the
//! permits, or half the life, it asks for the next lease in the background, once at a time
//! (at half the life with less than half spent, the client slowed down: the ask also gives
//! back what the lease will not need, [`shared::lease::Lease::give_back`]). A request that
//! finds no permit asks itself and waits; one that finds an ask already out waits for it
//! (polling: in Workers a request cannot await another's promise), and if that answer leaves
//! it nothing, is refused when the object had nothing left, or else asks itself. A denial is
//! the object's own, kept until its `Retry-After`. Only the answer of the ask out ends the
//! wait: an earlier ask's late answer is kept, but lets no third ask go out.
//!
//! The object's answer is a [`Grant`]; the isolate times the lease from when it asked, so it
//! stops spending before the object's end of it (the bound in `shared::lease`). A lease that
//! ends with permits unspent in an isolate that sees the client no more is not given back:
//! sized for half a life at the client's own rate, it is at most that many permits, which
//! the object's count drains within half a life (stricter for a while, never looser).

use shared::lease::{Grant, Lease, LeaseBook, LeasePolicy};
use shared::{Decision, RatePlan, UnixTime};

use super::limits::denial;
use super::local_table::LocalTable;
use super::url::RequestUrl;

/// Keys whose leases an isolate holds (then the least recently used go: their unspent
/// permits are not given back, the strict side).
const CAPACITY: usize = 20_000;

/// What this isolate holds for one key.
#[derive(Debug, Clone, Copy, Default)]
struct Held {
    /// The plan its leases were granted under: a request under another (a token with another
    /// `rate_plan` for the same client) starts afresh, never spending the other's permits.
    plan: Option<RatePlan>,
    /// Asks sent so far: the latest is the one out, and only its answer ends the wait.
    asks: u32,
    /// The lease being spent (spent or ended ones stay until the next, for their rate).
    current: Option<Lease>,
    /// A renewal's lease, spent once `current` is.
    next: Option<Lease>,
    /// The object's last grant and when it came: the `RateLimit` headers start from it.
    last: Option<(Decision, UnixTime)>,
    /// An ask for this key is out until then (0: none): one at a time.
    asking_until: UnixTime,
    /// The object denied until then.
    denied_until: UnixTime,
    /// Permits of a lease given up here, to send back with the next ask: (lease, permits).
    to_return: Option<(u64, u32)>,
}

/// The isolate's leases, by key.
pub(crate) struct Leases {
    table: LocalTable<Held>,
    policy: LeasePolicy,
    /// How long an ask may be out before another may be sent.
    ask_timeout_ms: u64,
}

/// What a request's [`Leases::take`] found.
#[derive(Debug)]
pub(crate) enum Take {
    /// A permit from a lease held here: allowed, with what the headers say; `renew` is an
    /// ask to send in the background.
    Spent {
        decision: Decision,
        renew: Option<Ask>,
    },
    /// The object's denial still holds.
    Denied(Decision),
    /// No permit here and no ask out: ask, and wait for the answer.
    Ask(Ask),
    /// No permit here, and an ask is out: wait for it.
    Wait,
}

/// An ask for a lease, from when it is sent until its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ask {
    key: String,
    plan: RatePlan,
    wanted: u32,
    /// A lease's permits given back with the ask: (lease, permits).
    returning: Option<(u64, u32)>,
    asked_at: UnixTime,
    /// Sent in the background, while permits were left.
    pub(crate) renewal: bool,
    /// Its number among the key's asks.
    number: u32,
}

/// How an ask ended, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answered {
    /// The object granted a lease (or denied: no permits).
    Granted(Grant),
    /// No usable answer: why.
    Failed(String),
}

impl Leases {
    pub(crate) fn new(policy: LeasePolicy, ask_timeout_ms: u64) -> Self {
        Self {
            table: LocalTable::new(CAPACITY),
            policy,
            ask_timeout_ms,
        }
    }

    /// `ask`, made by a request's `take`, will not be sent after all: no ask is out, and
    /// what it was to give back waits for the next.
    pub(crate) fn abandon(&mut self, ask: &Ask) {
        self.table.update_key(&ask.key, |held| {
            if held.asks == ask.number {
                held.asking_until = UnixTime::EPOCH;
            }
            if held.to_return.is_none() {
                held.to_return = ask.returning;
            }
        });
    }

    /// The lease policy: what asks say, and how the isolate times its leases.
    pub(crate) fn policy(&self) -> &LeasePolicy {
        &self.policy
    }

    /// A request of `key` under `plan` at `now` takes a permit, if one is here. `waited_since`:
    /// when it began waiting for another's ask, if it did. If that ask's answer came and left
    /// it no permit, with nothing left at the object then, it is refused until the next
    /// permit is due (one interval): the client is at its limit; with more left at the object,
    /// it asks for itself. Waiting on for the asks after would queue it behind requests that
    /// keep arriving.
    pub(crate) fn take(
        &mut self,
        key: &str,
        plan: &RatePlan,
        now: UnixTime,
        waited_since: Option<UnixTime>,
    ) -> Take {
        let (policy, timeout) = (self.policy, self.ask_timeout_ms);
        self.table.update_key(key, |held| {
            if held.plan != Some(*plan) {
                // Another plan's leases are not this one's to spend: what is left of the one
                // being spent goes back with the next ask (a token of the new plan and one of
                // the old, used in turn while a plan change rolls over, ask on most requests).
                let back = held
                    .current
                    .filter(|lease| lease.is_live(now) && lease.unused() > 0)
                    .map(|lease| (lease.number(), lease.unused()));
                *held = Held {
                    plan: Some(*plan),
                    asks: held.asks,
                    to_return: back.or(held.to_return),
                    ..Held::default()
                };
            }
            if !held.spend(now) {
                // A renewal's denial leaves the permits held here to spend; after them, it
                // holds until its `Retry-After`.
                if held.denied_until > now {
                    return Take::Denied(denial(plan, held.denied_until, now));
                }
                // An answer came while it waited, and others took its permits.
                let answered = match (waited_since, held.last) {
                    (Some(since), Some((last, at))) if at >= since => Some((last, at)),
                    _ => None,
                };
                if let Some((last, at)) = answered {
                    // Nothing left at the object then: refused until its next permit, at the
                    // latest one interval on (a denial's own `Retry-After`, if it was one).
                    let due = if last.allowed {
                        let interval = (u64::from(plan.period_secs()) * 1000)
                            .div_ceil(u64::from(plan.limit().max(1)));
                        at.plus_millis(interval)
                    } else {
                        at.plus_millis(last.retry_after_ms)
                    };
                    if last.remaining == 0 && due > now {
                        return Take::Denied(denial(plan, due, now));
                    }
                }
                // The object has more: it asks for itself rather than queue behind the next
                // ask, which requests arriving meanwhile would drain first (waiting on costs
                // more than the call: in a simulation most such waiters reached the wait's
                // deadline). With several waiters that is an ask each.
                if held.asking_until > now && answered.is_none() {
                    return Take::Wait;
                }
                let wanted = held
                    .current
                    .map_or(1, |lease| lease.wanted_next(now, &policy));
                return Take::Ask(held.ask(key, plan, wanted, false, now, timeout));
            }
            let decision = held.headers(plan, now);
            let renew = match held.current {
                Some(mut lease)
                    if held.next.is_none()
                        && held.asking_until <= now
                        && held.denied_until <= now
                        && lease.should_renew(now) =>
                {
                    let wanted = lease.wanted_next(now, &policy);
                    // Slowed down: what this lease will not need goes back with the ask.
                    let back = lease.give_back();
                    if back > 0 && held.to_return.is_none() {
                        held.to_return = Some((lease.number(), back));
                        held.current = Some(lease);
                    }
                    Some(held.ask(key, plan, wanted, true, now, timeout))
                }
                _ => None,
            };
            Take::Spent { decision, renew }
        })
    }

    /// The object's answer to `ask` (its JSON grant, or why there was none) at `now`: the
    /// lease is kept for the requests to come.
    pub(crate) fn answered(
        &mut self,
        ask: &Ask,
        answer: Result<String, String>,
        now: UnixTime,
    ) -> Answered {
        let grant = answer.and_then(|text| Grant::from_json(&text).map_err(|e| e.to_string()));
        let policy = self.policy;
        self.table.update_key(&ask.key, |held| {
            // A key pushed out of the table while its ask was out starts again from this.
            held.plan.get_or_insert(ask.plan);
            if held.plan != Some(ask.plan) {
                // Asked under another plan: its lease is not this plan's (given up).
                return match grant {
                    Ok(grant) => Answered::Granted(grant),
                    Err(reason) => Answered::Failed(reason),
                };
            }
            // Only the ask out ends the wait: an earlier one's late answer does not let a
            // third go out while the second is on its way.
            if held.asks == ask.number {
                held.asking_until = UnixTime::EPOCH;
            }
            let grant = match grant {
                Ok(grant) => grant,
                // Whether the return landed is unknown: it is not sent again (a refund
                // counts at most once; the object's book would refuse it anyway).
                Err(reason) => return Answered::Failed(reason),
            };
            held.last = Some((grant.decision, now));
            if grant.permits == 0 {
                held.denied_until = now.plus_millis(grant.decision.retry_after_ms);
                return Answered::Granted(grant);
            }
            let lease = Lease::new(&grant, ask.asked_at, &policy);
            let spendable = |lease: &Lease| lease.is_live(now) && !lease.is_spent();
            if !held.current.as_ref().is_some_and(spendable) {
                held.current = held.next.take();
            }
            if held.current.as_ref().is_some_and(spendable) {
                // An older next (two asks out, after a timeout) is given up.
                if let Some(old) = held.next.replace(lease) {
                    if held.to_return.is_none() && old.unused() > 0 {
                        held.to_return = Some((old.number(), old.unused()));
                    }
                }
            } else {
                held.current = Some(lease);
            }
            Answered::Granted(grant)
        })
    }
}

impl Held {
    /// Takes a permit from the current lease, or else from the next (which becomes current).
    fn spend(&mut self, now: UnixTime) -> bool {
        for _ in 0..2 {
            if let Some(lease) = self.current.as_mut() {
                if lease.take(now) {
                    return true;
                }
            }
            match self.next.take() {
                Some(next) => self.current = Some(next),
                None => return false,
            }
        }
        false
    }

    /// Marks an ask out and builds it, with what there is to give back.
    fn ask(
        &mut self,
        key: &str,
        plan: &RatePlan,
        wanted: u32,
        renewal: bool,
        now: UnixTime,
        timeout_ms: u64,
    ) -> Ask {
        self.asking_until = now.plus_millis(timeout_ms);
        self.asks = self.asks.wrapping_add(1);
        Ask {
            number: self.asks,
            key: key.to_owned(),
            plan: *plan,
            wanted,
            returning: self.to_return.take(),
            asked_at: now,
            renewal,
        }
    }

    /// What the `RateLimit` headers say after a permit was spent here: the object's
    /// `remaining` at its last grant plus the permits still held here (other isolates'
    /// leases are not known here: within the bound of `shared::lease`).
    fn headers(&self, plan: &RatePlan, now: UnixTime) -> Decision {
        let held: u32 = [self.current, self.next]
            .iter()
            .flatten()
            .filter(|lease| lease.is_live(now))
            .map(Lease::unused)
            .sum();
        let (last_remaining, reset_after_ms) = self.last.map_or((0, 0), |(last, at)| {
            let since = now.millis_since(at);
            (last.remaining, last.reset_after_ms.saturating_sub(since))
        });
        Decision {
            allowed: true,
            limit: plan.burst(),
            remaining: last_remaining
                .saturating_add(held)
                .min(plan.burst().saturating_sub(1)),
            reset_after_ms,
            retry_after_ms: 0,
        }
    }
}

impl Ask {
    /// The key it is for.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// The permits given back with it, if any: (lease, permits).
    pub(crate) fn returning(&self) -> Option<(u64, u32)> {
        self.returning
    }

    /// The query the object is asked (only numbers: nothing needs escaping).
    pub(crate) fn object_url(&self, policy: &LeasePolicy) -> String {
        let plan = &self.plan;
        let mut url = format!(
            "https://rate-limiter.internal/lease?limit={}&period={}&burst={}&want={}&ttl={}&max={}",
            plan.limit(),
            plan.period_secs(),
            plan.burst(),
            self.wanted,
            policy.ttl_ms,
            policy.max_permits,
        );
        if let Some((lease, permits)) = self.returning {
            url.push_str(&format!("&return={lease}&unused={permits}"));
        }
        url
    }
}

/// An ask as the object reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LeaseQuery {
    pub(crate) plan: RatePlan,
    pub(crate) policy: LeasePolicy,
    pub(crate) wanted: u32,
    pub(crate) returning: Option<(u64, u32)>,
}

impl LeaseQuery {
    /// The ask from an [`Ask::object_url`] (`None`: not one).
    pub(crate) fn parse(query: &str) -> Option<Self> {
        let names = [
            "limit", "period", "burst", "want", "ttl", "max", "return", "unused",
        ];
        let fields = super::url::query_numbers(query, names)?;
        let small = |n: Option<u64>| n.and_then(|n| u32::try_from(n).ok());
        let [limit, period, burst, want, ttl, max, lease, unused] = fields;
        let plan = RatePlan::new(small(limit)?, small(period)?, small(burst)?).ok()?;
        let returning = match (lease, small(unused)) {
            (Some(lease), Some(unused)) => Some((lease, unused)),
            (None, None) => None,
            _ => return None,
        };
        Some(Self {
            plan,
            policy: LeasePolicy {
                ttl_ms: ttl?,
                max_permits: small(max)?,
            },
            wanted: small(want)?,
            returning,
        })
    }
}

/// The longest lease an object grants, whatever an ask says (`LEASE_TTL_MS` is held to it).
pub(crate) const MAX_TTL_MS: u64 = 60_000;

/// The rate-limit Durable Object's answer to the edge's `url` at `now` (`js/rate-limiter.js`
/// calls it through the driver): a decision for one request (`/check`, `durable` mode) or a
/// lease (`/lease`, with the refund of the permits an ask gives back). `stored` is the GCRA
/// state from storage and `book` the object's [`LeaseBook`] as text (kept in memory: none is
/// an empty book). Returns the answer's JSON, the state to store and the book to keep, or
/// `None` for a query that is not the edge's (answered 400).
pub fn object_answer(
    url: &str,
    stored: Option<&str>,
    book: Option<&str>,
    now: UnixTime,
) -> Option<(String, String, String)> {
    let parsed = RequestUrl::parse(url);
    if parsed.path() == "/check" {
        let (decision, state) = super::limits::object_decision(url, stored, now)?;
        return Some((decision, state, book.unwrap_or_default().to_owned()));
    }
    if parsed.path() != "/lease" {
        return None;
    }
    let ask = LeaseQuery::parse(parsed.query()?)?;
    if !(1..=MAX_TTL_MS).contains(&ask.policy.ttl_ms) {
        return None;
    }
    let mut book = book.map(LeaseBook::from_text).unwrap_or_default();
    let mut state = super::limits::stored_state(stored);
    if let Some((lease, unused)) = ask.returning {
        state = book.refund(state, now, lease, unused).0;
    }
    let (grant, state) = book.grant(&ask.plan, &ask.policy, state, now, ask.wanted);
    Some((grant.to_json(), state.tat_nanos.to_string(), book.to_text()))
}
