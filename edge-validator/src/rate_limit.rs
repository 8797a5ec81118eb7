//! Rate limiting at the edge with `shared::rate_limit` (GCRA), in two steps:
//! 1. an in-isolate pre-check: if this isolate's own traffic for the key already exceeds the
//!    plan, or the Durable Object recently said "denied until T", answer 429 at once, with no
//!    round trip (the cheap path for abusive clients);
//! 2. otherwise the key's Durable Object (`js/rate-limiter.js`, deciding with
//!    [`crate::rate_limit_object::rate_limiter_check`]) for this
//!    location decides: one object per (Cloudflare location, key), named `colo/key`, so the
//!    count is exact across every isolate of the location and the object lives next to them
//!    (no cross-region round trip). Each location counts a client separately.
//!
//! If the object cannot be reached, the isolate's own decision stands (logged): limiting
//! gets looser for a while; traffic does not stop.

use std::cell::RefCell;

use shared::rate_limit::check_weighted;
use shared::{Decision, GcraState, RatePlan, UnixTime};

use crate::config::RateLimitMode;
use crate::local_table::LocalTable;
use crate::request_log::{Event, Level};

/// The Durable Object binding in wrangler.toml.
pub(crate) const BINDING: &str = "RATE_LIMITER";
/// Keys tracked per isolate (then the least recently used go: `LocalTable`).
const LOCAL_CAPACITY: usize = 20_000;

/// What is being limited, and under which policy name (for `RateLimit-Policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Subject<'a> {
    /// A client, by `client_id`, under its plan.
    Client(&'a str),
    /// Failed authentications from one IP address.
    FailedAuth(&'a str),
}

impl Subject<'_> {
    fn key(&self) -> String {
        match self {
            Self::Client(id) => format!("client:{id}"),
            Self::FailedAuth(ip) => format!("ip:{ip}"),
        }
    }

    /// The policy name in the `RateLimit` headers.
    pub(crate) fn policy(&self) -> &'static str {
        match self {
            Self::Client(_) => "client",
            Self::FailedAuth(_) => "failed-auth",
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Local {
    state: GcraState,
    denied_until: UnixTime,
}

thread_local! {
    static LOCAL: RefCell<LocalTable<Local>> = RefCell::new(LocalTable::new(LOCAL_CAPACITY));
}

/// Where the decision came from (for the request log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The in-isolate pre-check.
    Isolate,
    /// The Durable Object.
    Object,
    /// The object failed; the isolate's own count decided.
    Fallback,
}

impl Source {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Isolate => "isolate",
            Self::Object => "object",
            Self::Fallback => "fallback",
        }
    }
}

/// Whether the in-isolate table already denies `subject` (without counting the request).
pub(crate) fn locally_denied(
    subject: Subject<'_>,
    plan: &RatePlan,
    now: UnixTime,
) -> Option<Decision> {
    denied_by_key(&subject.key(), plan, now)
}

fn denied_by_key(key: &str, plan: &RatePlan, now: UnixTime) -> Option<Decision> {
    let local = LOCAL.with(|table| table.borrow_mut().get(key))?;
    local.denial(plan, now)
}

impl Local {
    /// The 429 decision while the Durable Object's "denied until" holds.
    fn denial(&self, plan: &RatePlan, now: UnixTime) -> Option<Decision> {
        (self.denied_until > now).then(|| {
            let wait = self.denied_until.millis_since(now);
            Decision {
                allowed: false,
                limit: plan.burst(),
                remaining: 0,
                reset_after_ms: wait,
                retry_after_ms: wait,
            }
        })
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

/// Step one for `subject` under `plan`: denied at once by the isolate's table, or a
/// [`Check`] to conclude (with the object's answer in `durable` mode, without otherwise).
pub(crate) fn begin(
    subject: Subject<'_>,
    plan: &RatePlan,
    cost: u32,
    now: UnixTime,
) -> Result<Check, Decision> {
    let key = subject.key();
    let (own, own_state) = own_decision(&key, plan, cost, now)?;
    Ok(Check {
        key,
        policy: subject.policy(),
        plan: *plan,
        cost,
        own,
        own_state,
    })
}

impl Check {
    /// The Durable Object that decides for this key at `location` (`colo/key`).
    pub(crate) fn object_name(&self, location: &str) -> String {
        format!("{location}/{}", self.key)
    }

    /// The query the object is asked.
    pub(crate) fn object_url(&self) -> String {
        crate::rate_limit_object::check_url(&self.plan, self.cost)
    }

    /// The policy name in the `RateLimit` headers.
    pub(crate) fn policy(&self) -> &'static str {
        self.policy
    }

    /// The plan being applied.
    pub(crate) fn plan(&self) -> RatePlan {
        self.plan
    }

    /// Step two: the object's `answer` (a JSON [`Decision`], or why there was none), or
    /// `None` when no object is asked. Without a usable answer the isolate's own decision
    /// stands (logged). Keeps the outcome in the isolate's table.
    pub(crate) fn conclude(
        self,
        answer: Option<Result<String, String>>,
        now: UnixTime,
    ) -> (Decision, Source) {
        let parsed = answer.map(|answer| {
            answer.and_then(|text| Decision::from_json(&text).map_err(|e| e.to_string()))
        });
        let (decision, source) = match parsed {
            None => (self.own, Source::Isolate),
            Some(Ok(decision)) => (decision, Source::Object),
            Some(Err(reason)) => {
                Event {
                    event: "rate_limiter_unreachable",
                    reason: Some(&reason),
                    ..Event::default()
                }
                .emit(Level::Warn);
                (self.own, Source::Fallback)
            }
        };
        record(self.key, &decision, self.own_state, now);
        (decision, source)
    }
}

/// This isolate's decision for `key`: allowed (with the state to record if the request goes
/// ahead) or denied (nothing to record).
fn own_decision(
    key: &str,
    plan: &RatePlan,
    cost: u32,
    now: UnixTime,
) -> Result<(Decision, GcraState), Decision> {
    let local = LOCAL
        .with(|table| table.borrow_mut().get(key))
        .unwrap_or_default();
    if let Some(denied) = local.denial(plan, now) {
        return Err(denied);
    }
    let (own, own_state) = check_weighted(plan, local.state, now, cost);
    if own.allowed {
        Ok((own, own_state))
    } else {
        Err(own)
    }
}

/// Keeps the outcome in the isolate's table: the new state if allowed, the wait if denied.
fn record(key: String, decision: &Decision, own_state: GcraState, now: UnixTime) {
    LOCAL.with(|table| {
        table.borrow_mut().update(key, |entry| {
            if decision.allowed {
                entry.state = own_state;
            } else {
                entry.denied_until = now.plus_millis(decision.retry_after_ms);
            }
        });
    });
}

/// The client's network for the failed-auth budget: `CF-Connecting-IP`, with an IPv6
/// address widened to its `/64` (`shared::rate_limit::address_network`); `unknown` when
/// absent (as in local workerd) or not an address.
pub(crate) fn client_ip(request: &web_sys::Request) -> String {
    request
        .headers()
        .get("cf-connecting-ip")
        .ok()
        .flatten()
        .and_then(|text| shared::rate_limit::network_key(&text))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Where the request's rate-limit objects live: its Cloudflare location (`request.cf.colo`,
/// e.g. `FRA`; `local` when absent, as in local workerd). Read only in `durable` mode (empty
/// otherwise: nothing is asked).
pub(crate) fn location(request: &web_sys::Request, mode: RateLimitMode) -> String {
    if mode != RateLimitMode::Durable {
        return String::new();
    }
    js_sys::Reflect::get(request, &"cf".into())
        .and_then(|cf| js_sys::Reflect::get(&cf, &"colo".into()))
        .ok()
        .and_then(|colo| colo.as_string())
        .filter(|colo| !colo.is_empty())
        .unwrap_or_else(|| "local".to_owned())
}
