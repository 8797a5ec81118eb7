//! The Durable Object that holds one rate-limit key's GCRA state (`shared::rate_limit`). One
//! object per key, so every isolate of a location sees the same count. The state is a single
//! number, kept in memory and written to the object's storage so an eviction does not reset
//! a client's budget. The decision is here; the class is `js/rate-limiter.js`.

use shared::rate_limit::check_weighted;
use shared::{GcraState, RatePlan};
use wasm_bindgen::prelude::wasm_bindgen;

use crate::request_url::RequestUrl;

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

/// The object's decision for one request: `url` is a [`check_url`] and `stored` the key's
/// state as kept in storage (a decimal TAT in nanoseconds: past 2^53, so not a JS number;
/// none, or unreadable, is a fresh budget). Returns `[decision JSON, state to keep]`, or
/// `None` for a malformed query (answered 400). The object itself is JavaScript
/// (`js/rate-limiter.js`): storage and the `Response` around this call.
#[wasm_bindgen(js_name = rateLimiterCheck)]
pub fn rate_limiter_check(url: &str, stored: Option<String>) -> Option<js_sys::Array> {
    let (plan, cost) = parse_check(url)?;
    let current = stored
        .and_then(|text| text.parse().ok())
        .map(|tat_nanos| GcraState { tat_nanos })
        .unwrap_or_default();
    let (decision, next) = check_weighted(&plan, current, crate::clock::now(), cost);
    let decision = serde_json::to_string(&decision).ok()?;
    Some(js_sys::Array::of2(
        &decision.into(),
        &next.tat_nanos.to_string().into(),
    ))
}
