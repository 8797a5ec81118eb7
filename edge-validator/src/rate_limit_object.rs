//! The Durable Object that holds one rate-limit key's GCRA state (`shared::rate_limit`). One
//! object per key, so every isolate of a location sees the same count. The state is a single
//! number, kept in memory and written to the object's storage so an eviction does not reset
//! a client's budget.

use std::cell::Cell;

use shared::rate_limit::check_weighted;
use shared::{GcraState, RatePlan};
use worker::{durable_object, DurableObject, Env, Request, Response, State};

use crate::request_url::RequestUrl;

/// Storage key of the state.
const STATE_KEY: &str = "gcra";

/// The URL the edge calls on the object's stub (the host is a placeholder). Only numbers, so
/// nothing needs escaping.
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
    let (mut limit, mut period, mut burst, mut cost) = (None, None, None, None);
    for pair in url.query()?.split('&') {
        let (name, value) = pair.split_once('=')?;
        let value: u32 = value.parse().ok()?;
        match name {
            "limit" => limit = Some(value),
            "period" => period = Some(value),
            "burst" => burst = Some(value),
            "cost" => cost = Some(value),
            _ => return None,
        }
    }
    let plan = RatePlan::new(limit?, period?, burst?).ok()?;
    Some((plan, cost?))
}

/// One rate-limit key's state.
#[durable_object]
pub struct RateLimiter {
    state: State,
    gcra: Cell<Option<GcraState>>,
}

impl RateLimiter {
    /// The stored state; none (or an unreadable value) is a fresh budget.
    async fn load(&self) -> GcraState {
        match self.state.storage().get::<String>(STATE_KEY).await {
            Ok(Some(text)) => text
                .parse()
                .map(|tat_nanos| GcraState { tat_nanos })
                .unwrap_or_default(),
            _ => GcraState::default(),
        }
    }
}

impl DurableObject for RateLimiter {
    fn new(state: State, _env: Env) -> Self {
        Self {
            state,
            gcra: Cell::new(None),
        }
    }

    async fn fetch(&self, request: Request) -> worker::Result<Response> {
        let Some((plan, cost)) = parse_check(&request.inner().url()) else {
            return Response::error("bad rate-limit query", 400);
        };
        let current = match self.gcra.get() {
            Some(state) => state,
            None => self.load().await,
        };
        let now = crate::clock::now();
        let (decision, next) = check_weighted(&plan, current, now, cost);
        self.gcra.set(Some(next));
        if next != current {
            // As a decimal string: a TAT in nanoseconds is past 2^53, which a JS number (what
            // storage would get from a u64) cannot hold exactly.
            self.state
                .storage()
                .put(STATE_KEY, next.tat_nanos.to_string())
                .await?;
        }
        Response::from_json(&decision)
    }
}
