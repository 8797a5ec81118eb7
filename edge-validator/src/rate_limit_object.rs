//! The Durable Object that holds one rate-limit key's GCRA state (`shared::rate_limit`). One
//! object per key, so every isolate of a location sees the same count. The state is a single
//! number, kept in memory and written to the object's storage so an eviction does not reset
//! a client's budget.

use std::cell::Cell;

use serde::Deserialize;
use shared::rate_limit::check_weighted;
use shared::{GcraState, RatePlan, UnixTime};
use worker::{durable_object, url, Date, DurableObject, Env, Request, Response, State, Url};

/// Storage key of the state.
const STATE_KEY: &str = "gcra";

/// The URL the edge calls on the object's stub (the host is a placeholder).
pub(crate) fn check_url(plan: &RatePlan, cost: u32) -> Result<Url, url::ParseError> {
    Url::parse_with_params(
        "https://rate-limiter.internal/check",
        &[("plan", plan.to_string()), ("cost", cost.to_string())],
    )
}

#[derive(Deserialize)]
struct CheckQuery {
    plan: RatePlan,
    cost: u32,
}

/// One rate-limit key's state.
#[durable_object]
pub struct RateLimiter {
    state: State,
    gcra: Cell<Option<GcraState>>,
}

impl DurableObject for RateLimiter {
    fn new(state: State, _env: Env) -> Self {
        Self {
            state,
            gcra: Cell::new(None),
        }
    }

    async fn fetch(&self, request: Request) -> worker::Result<Response> {
        let Ok(query) = request.query::<CheckQuery>() else {
            return Response::error("bad rate-limit query", 400);
        };
        let current = match self.gcra.get() {
            Some(state) => state,
            None => self
                .state
                .storage()
                .get::<GcraState>(STATE_KEY)
                .await?
                .unwrap_or_default(),
        };
        let now = UnixTime::from_millis(Date::now().as_millis());
        let (decision, next) = check_weighted(&query.plan, current, now, query.cost);
        self.gcra.set(Some(next));
        if next != current {
            self.state.storage().put(STATE_KEY, next).await?;
        }
        Response::from_json(&decision)
    }
}
