//! Rate limiting at the edge with `shared::rate_limit` (GCRA), per request (`durable` and
//! `isolate` modes, and failed authentications in every mode; `lease` mode is
//! `super::leases`), in two steps:
//! 1. an in-isolate pre-check: if this isolate's own traffic for the key already exceeds the
//!    plan, or the Durable Object recently said "denied until T", answer 429 at once, with no
//!    round trip (the cheap path for abusive clients);
//! 2. otherwise (`durable`) the key's Durable Object (`js/rate-limiter.js`, deciding with
//!    [`object_decision`]) decides: one object per key and Cloudflare location (`colo/key`)
//!    or per key worldwide (`RATE_LIMIT_SCOPE`), so the count is exact across every isolate
//!    it serves.
//!
//! If the object cannot be reached, the isolate's own decision stands (logged): limiting
//! gets looser for a while; traffic does not stop.

use shared::rate_limit::check_weighted;
use shared::{Decision, GcraState, RatePlan, UnixTime};

use super::local_table::LocalTable;
use super::url::RequestUrl;

/// Keys tracked per isolate (then the least recently used go: `LocalTable`).
const LOCAL_CAPACITY: usize = 20_000;

/// What is being limited, and under which policy name (for `RateLimit-Policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Subject<'a> {
    /// A client, by `client_id`, under its plan.
    Client(&'a str),
    /// Failed authentications from one IP address.
    FailedAuth(&'a str),
    /// A client on a route with a plan of its own (`None`: the unmatched policy's), counted
    /// apart from the client's own plan.
    ClientOnRoute {
        client: &'a str,
        route: Option<&'a str>,
    },
    /// A client network on a public route with a plan (no token: no client id).
    NetworkOnRoute {
        network: &'a str,
        route: Option<&'a str>,
    },
}

impl Subject<'_> {
    /// The key its counts are kept under, here and in its Durable Object's name.
    pub(crate) fn key(&self) -> String {
        match self {
            Self::Client(id) => format!("client:{id}"),
            Self::FailedAuth(ip) => format!("ip:{ip}"),
            // Route ids hold no `:`, so no key of one kind reads as another.
            Self::ClientOnRoute { client, route } => match route {
                Some(route) => format!("route:{route}:client:{client}"),
                None => format!("unmatched:client:{client}"),
            },
            Self::NetworkOnRoute { network, route } => match route {
                Some(route) => format!("route:{route}:ip:{network}"),
                None => format!("unmatched:ip:{network}"),
            },
        }
    }

    /// The policy name in the `RateLimit` headers.
    pub(crate) fn policy(&self) -> &'static str {
        match self {
            Self::Client(_) => "client",
            Self::FailedAuth(_) => "failed-auth",
            Self::ClientOnRoute { .. } | Self::NetworkOnRoute { .. } => "route",
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Local {
    state: GcraState,
    denied_until: UnixTime,
}

/// The isolate's own counts and the Durable Objects' recent denials, by key.
pub(crate) struct Limiter {
    local: LocalTable<Local>,
}

/// Where the decision came from (for the request log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The in-isolate pre-check.
    Isolate,
    /// The Durable Object.
    Object,
    /// A lease held in the isolate (`lease` mode).
    Lease,
    /// The object failed; the isolate's own count decided.
    Fallback,
}

impl Source {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Isolate => "isolate",
            Self::Object => "object",
            Self::Lease => "lease",
            Self::Fallback => "fallback",
        }
    }
}

impl Limiter {
    pub(crate) fn new() -> Self {
        Self {
            local: LocalTable::new(LOCAL_CAPACITY),
        }
    }

    /// Whether the in-isolate table already denies `subject` (without counting the request).
    pub(crate) fn locally_denied(
        &mut self,
        subject: Subject<'_>,
        plan: &RatePlan,
        now: UnixTime,
    ) -> Option<Decision> {
        self.local.get(&subject.key())?.denial(plan, now)
    }

    /// Step one for `subject` under `plan`: denied at once by the isolate's table, or a
    /// [`Check`] to conclude (with the object's answer in `durable` mode, without otherwise).
    pub(crate) fn begin(
        &mut self,
        subject: Subject<'_>,
        plan: &RatePlan,
        cost: u32,
        now: UnixTime,
    ) -> Result<Check, Decision> {
        self.begin_key(subject.key(), subject.policy(), plan, cost, now)
    }

    /// [`Limiter::begin`] for the key `key`, under the policy name `policy`.
    pub(crate) fn begin_key(
        &mut self,
        key: String,
        policy: &'static str,
        plan: &RatePlan,
        cost: u32,
        now: UnixTime,
    ) -> Result<Check, Decision> {
        let local = self.local.get(&key).unwrap_or_default();
        if let Some(denied) = local.denial(plan, now) {
            return Err(denied);
        }
        let (own, own_state) = check_weighted(plan, local.state, now, cost);
        if !own.allowed {
            return Err(own);
        }
        Ok(Check {
            key,
            policy,
            plan: *plan,
            cost,
            own,
            own_state,
        })
    }

    /// The isolate's own decision for `key` when its object gave no usable answer (`lease`
    /// mode: the fallback `conclude` makes in `durable` mode), counted in its table.
    pub(crate) fn fallback(
        &mut self,
        key: &str,
        plan: &RatePlan,
        policy: &'static str,
        now: UnixTime,
    ) -> Decision {
        match self.begin_key(key.to_owned(), policy, plan, 1, now) {
            // No answer to weigh: the isolate's own decision, kept in its table.
            Ok(check) => self.conclude(check, None, now).decision,
            Err(denied) => denied,
        }
    }

    /// Step two of `check`: the object's `answer` (a JSON [`Decision`], or why there was
    /// none), or `None` when no object is asked. Without a usable answer the isolate's own
    /// decision stands (and the reason is returned, for the log). Keeps the outcome in the
    /// isolate's table.
    pub(crate) fn conclude(
        &mut self,
        check: Check,
        answer: Option<Result<String, String>>,
        now: UnixTime,
    ) -> Concluded {
        let parsed = answer.map(|answer| {
            answer.and_then(|text| Decision::from_json(&text).map_err(|e| e.to_string()))
        });
        let (decision, source, unreachable) = match parsed {
            None => (check.own, Source::Isolate, None),
            Some(Ok(decision)) => (decision, Source::Object, None),
            Some(Err(reason)) => (check.own, Source::Fallback, Some(reason)),
        };
        let own_state = check.own_state;
        self.local.update(check.key, |entry| {
            if decision.allowed {
                entry.state = own_state;
            } else {
                entry.denied_until = now.plus_millis(decision.retry_after_ms);
            }
        });
        Concluded {
            decision,
            source,
            unreachable,
        }
    }
}

/// The outcome of [`Limiter::conclude`].
pub(crate) struct Concluded {
    pub(crate) decision: Decision,
    pub(crate) source: Source,
    /// Why the Durable Object gave no usable answer, when it did not.
    pub(crate) unreachable: Option<String>,
}

impl Local {
    /// The 429 decision while the Durable Object's "denied until" holds.
    fn denial(&self, plan: &RatePlan, now: UnixTime) -> Option<Decision> {
        (self.denied_until > now).then(|| denial(plan, self.denied_until, now))
    }
}

/// The 429 decision at `now` while an object's denial holds, `until` then.
pub(crate) fn denial(plan: &RatePlan, until: UnixTime, now: UnixTime) -> Decision {
    let wait = until.millis_since(now);
    Decision {
        allowed: false,
        limit: plan.burst(),
        remaining: 0,
        reset_after_ms: wait,
        retry_after_ms: wait,
    }
}

/// A request's limit check between its two steps: the isolate's own decision (allowed),
/// waiting for the Durable Object's answer, which [`Check::conclude`] takes.
pub(crate) struct Check {
    key: String,
    policy: &'static str,
    plan: RatePlan,
    cost: u32,
    own: Decision,
    own_state: GcraState,
}

impl Check {
    /// The key it counts.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// The query the object is asked.
    pub(crate) fn object_url(&self) -> String {
        check_url(&self.plan, self.cost)
    }

    /// The policy name in the `RateLimit` headers.
    pub(crate) fn policy(&self) -> &'static str {
        self.policy
    }

    /// The plan being applied.
    pub(crate) fn plan(&self) -> RatePlan {
        self.plan
    }
}

/// The URL the edge calls on the object's stub (the host is a placeholder). Only numbers,
/// so nothing needs escaping.
pub(crate) fn check_url(plan: &RatePlan, cost: u32) -> String {
    format!(
        "https://rate-limiter.internal/check?limit={}&period={}&burst={}&cost={cost}",
        plan.limit(),
        plan.period_secs(),
        plan.burst()
    )
}

/// The plan and cost from a [`check_url`].
fn parse_check(url: &str) -> Option<(RatePlan, u32)> {
    let url = RequestUrl::parse(url);
    let names = ["limit", "period", "burst", "cost"];
    let [limit, period, burst, cost] = super::url::query_numbers(url.query()?, names)?;
    let small = |n: Option<u64>| n.and_then(|n| u32::try_from(n).ok());
    let plan = RatePlan::new(small(limit)?, small(period)?, small(burst)?).ok()?;
    Some((plan, small(cost)?))
}

/// The Durable Object's decision for one request at `now`: `url` is a [`check_url`] and
/// `stored` the key's state as kept in storage (a decimal TAT in nanoseconds: past 2^53, so
/// not a JS number; none, or unreadable, is a fresh budget). The decision as JSON and the
/// state to keep, or `None` for a malformed query (answered 400).
pub(crate) fn object_decision(
    url: &str,
    stored: Option<&str>,
    now: UnixTime,
) -> Option<(String, String)> {
    let (plan, cost) = parse_check(url)?;
    let (decision, next) = check_weighted(&plan, stored_state(stored), now, cost);
    let decision = serde_json::to_string(&decision).ok()?;
    Some((decision, next.tat_nanos.to_string()))
}

/// The GCRA state as the object keeps it in storage: a decimal TAT in nanoseconds (none, or
/// unreadable, is a fresh budget).
pub(crate) fn stored_state(stored: Option<&str>) -> GcraState {
    stored
        .and_then(|text| text.parse().ok())
        .map(|tat_nanos| GcraState { tat_nanos })
        .unwrap_or_default()
}
