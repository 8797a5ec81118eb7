//! The request's rate limit: the isolate's own decision at once, and in `durable` mode the
//! client's Durable Object asked through a JS promise whose answer comes back by number
//! ([`limit_answered`]), as WebCrypto's verdict does (`rate_limit::begin`, then
//! `Check::conclude`).

use std::cell::RefCell;
use std::rc::Rc;

use shared::{Decision, RatePlan, UnixTime};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;

use super::{lost, refuse, Next};
use crate::clock;
use crate::config::{Config, RateLimitMode};
use crate::error::EdgeError;
use crate::parked::{self, Parked};
use crate::rate_limit::{self, Check, Source, Subject};
use crate::request_log::RequestLog;

#[wasm_bindgen(module = "/js/io.js")]
extern "C" {
    /// `askObject(...)`, then `limitAnswered(id, text)` (or `limitUnanswered`).
    #[wasm_bindgen(js_name = askObjectThen)]
    fn ask_object_then(
        env: &crate::runtime::Env,
        binding: &str,
        name: &str,
        url: &str,
        resume: &JsValue,
        id: u32,
    ) -> js_sys::Promise;
}

/// A request waiting for its Durable Object (parked in [`ASKING`]).
struct Asking {
    config: Rc<Config>,
    log: RequestLog,
    check: Check,
    next: Next,
    /// The request's time (as on the general path, every decision uses it).
    now: UnixTime,
    asked_at: UnixTime,
}

thread_local! {
    static ASKING: RefCell<Parked<Asking>> = const { RefCell::new(Parked::new()) };
}

/// Over the limit by the isolate's own table: the 429 at once.
pub(super) fn denied(
    config: &Config,
    mut log: RequestLog,
    decision: Decision,
    plan: RatePlan,
    subject: Subject<'_>,
) -> Result<JsValue, JsValue> {
    log.limit_ms = Some(0);
    log.limit_source = Some(Source::Isolate);
    refuse(
        config,
        log,
        &EdgeError::rate_limited(decision, plan, subject),
    )
}

/// Step two of `check` (its Durable Object at `location` in `durable` mode), then `next`.
pub(super) fn decide(
    env: &crate::runtime::Env,
    location: &str,
    config: &Rc<Config>,
    log: RequestLog,
    check: Check,
    next: Next,
    now: UnixTime,
) -> Result<JsValue, JsValue> {
    if config.rate_limit_mode != RateLimitMode::Durable {
        return decide_in_isolate(config, log, check, next, now);
    }
    let name = check.object_name(location);
    let url = check.object_url();
    let asking = Asking {
        config: config.clone(),
        log,
        check,
        next,
        now,
        asked_at: clock::now(),
    };
    let id = parked::park(&ASKING, asking);
    let promise = crate::forward::with_resume(|resume| {
        ask_object_then(env, rate_limit::BINDING, &name, &url, resume, id)
    });
    Ok(promise.into())
}

/// Step two of `check` by the isolate's own count alone (whatever the mode), then `next`.
pub(super) fn decide_in_isolate(
    config: &Rc<Config>,
    log: RequestLog,
    check: Check,
    next: Next,
    now: UnixTime,
) -> Result<JsValue, JsValue> {
    concluded(config, log, check, None, 0, next, now)
}

/// The Durable Object for request `id` answered `text` (a JSON decision).
#[wasm_bindgen(js_name = limitAnswered)]
pub fn limit_answered(id: u32, text: String) -> Result<JsValue, JsValue> {
    answered(id, Ok(text))
}

/// The Durable Object for request `id` could not be asked (`reason`): the isolate decides.
#[wasm_bindgen(js_name = limitUnanswered)]
pub fn limit_unanswered(id: u32, reason: String) -> Result<JsValue, JsValue> {
    answered(id, Err(reason))
}

fn answered(id: u32, answer: Result<String, String>) -> Result<JsValue, JsValue> {
    let Some(asking) = parked::take(&ASKING, id) else {
        return lost();
    };
    let Asking {
        config,
        log,
        check,
        next,
        now,
        asked_at,
    } = asking;
    let limit_ms = clock::now().millis_since(asked_at);
    concluded(&config, log, check, Some(answer), limit_ms, next, now)
}

/// The decision (logged with where it came from and the `limit_ms` it took): the 429, or
/// `next` with the `RateLimit` headers.
fn concluded(
    config: &Rc<Config>,
    mut log: RequestLog,
    check: Check,
    answer: Option<Result<String, String>>,
    limit_ms: u64,
    next: Next,
    now: UnixTime,
) -> Result<JsValue, JsValue> {
    let (plan, policy) = (check.plan(), check.policy());
    let (decision, source) = check.conclude(answer, now);
    log.limit_ms = Some(limit_ms);
    log.limit_source = Some(source);
    if !decision.allowed {
        let error = EdgeError::RateLimited {
            decision,
            plan,
            policy,
        };
        return refuse(config, log, &error);
    }
    let headers = (
        plan.policy_header(policy),
        decision.rate_limit_header(policy),
    );
    next.go(config, log, Some(headers), now)
}
