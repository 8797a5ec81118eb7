//! The steady-state request path without Rust futures: wasm decides synchronously, and the
//! waits a request can have (WebCrypto's verify for a fresh token, the rate limit's Durable
//! Object, the origin's answer) are JavaScript promises whose callbacks come back into wasm
//! by request number (`js/forward.js`, `js/io.js`, [`crate::parked`]).
//!
//! Why: every `.await` on a JS promise in wasm-bindgen-futures costs two closures, a task
//! wake-up and a microtask, and the handler future itself another promise; measured with
//! `benches/run`, that glue was most of what the edge paid over the JavaScript floor.
//!
//! It takes a request only when nothing needs fetching: the key set is fresh, the key is
//! imported, the revocation list is in sync, and the token is well-formed with a known key.
//! The rate limit's Durable Object (`durable` mode) is a third wait of the same kind
//! ([`limit`]). Anything else (no or bad token, first request of an isolate, refresh due,
//! `/.edge/health`) returns `undefined` and goes to [`crate::handler`], the general path,
//! which makes the same decisions with `shared`.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use shared::{bearer_token, EdgeIdentity, Rejection, TokenKey, UnixTime, VerifiedToken};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;

use crate::clock::{self, now};
use crate::config::{self, Config, RateLimitMode};
use crate::error::{error_response, EdgeError};
use crate::forward::{self, ForwardError};
use crate::handler::HEALTH_PATH;
use crate::jwks_cache;
use crate::parked::{self, Parked};
use crate::rate_limit::{self, Subject};
use crate::request_log::RequestLog;
use crate::request_url::RequestUrl;
use crate::revocations;

#[cfg(not(feature = "p256-verify"))]
mod fresh;
mod limit;
#[cfg(not(feature = "p256-verify"))]
pub use fresh::{token_not_verified, token_verified};
pub use limit::{limit_answered, limit_unanswered};

/// The request through the fast path: a `Response`, a `Promise` of one, or `undefined` for
/// the general path. Called by the entry (`js/plain-entry.mjs`) before the general handler,
/// with `resume`, the object of wasm exports its promises call back.
#[wasm_bindgen(js_name = fastFetch)]
pub fn fast_fetch(
    request: web_sys::Request,
    env: worker::Env,
    resume: JsValue,
) -> Result<JsValue, JsValue> {
    forward::set_resume(resume);
    let started = now();
    let Ok(config) = config::get(&env) else {
        return Ok(JsValue::UNDEFINED);
    };
    if !revocations::in_sync(&config, started) {
        return Ok(JsValue::UNDEFINED);
    }
    let authorization = request.headers().get("authorization").ok().flatten();
    let Ok(token) = bearer_token(authorization.as_deref()) else {
        return Ok(JsValue::UNDEFINED);
    };
    let url = RequestUrl::parse(&request.url());
    if url.path() == HEALTH_PATH {
        return Ok(JsValue::UNDEFINED);
    }
    let key = TokenKey::of(token);
    let cached = jwks_cache::TOKENS.with(|t| t.borrow().get_key(&key, started));
    if let Some(verified) = cached {
        let mut log = RequestLog::start(request.method(), &url, started);
        log.cache_hit = true;
        return verified_path(request, url, &env, &config, verified, log, started);
    }
    #[cfg(not(feature = "p256-verify"))]
    if let Some(answer) = fresh::start(request, url, env, config, token, key, started) {
        return answer;
    }
    // Otherwise (and always with the pure-Rust backend, a measurement build) the general path.
    Ok(JsValue::UNDEFINED)
}

/// A verified token (cached or just verified): revocation, rate limit, then the origin.
pub(super) fn verified_path(
    request: web_sys::Request,
    url: RequestUrl,
    env: &worker::Env,
    config: &Rc<Config>,
    verified: Arc<VerifiedToken>,
    mut log: RequestLog,
    now: UnixTime,
) -> Result<JsValue, JsValue> {
    log.client = Some(verified.claims().client_id.clone());
    if revocations::is_revoked(&verified) {
        return refuse(config, log, &Rejection::Revoked.into());
    }
    if config.rate_limit_mode == RateLimitMode::Off {
        let next = Next::Forward {
            request,
            url,
            verified,
        };
        return next.go(config, log, None, now);
    }
    let plan = verified.claims().rate_plan.unwrap_or(config.default_plan);
    let subject = Subject::Client(&verified.claims().client_id);
    let check = match rate_limit::begin(subject, &plan, 1, now) {
        Ok(check) => check,
        Err(denied) => return limit::denied(config, log, denied, plan, subject),
    };
    let location = rate_limit::location(&request, config.rate_limit_mode);
    let next = Next::Forward {
        request,
        url,
        verified,
    };
    limit::decide(env, &location, config, log, check, next, now)
}

/// What a request does once the rate limit allows it.
pub(super) enum Next {
    /// A verified token: to the origin.
    Forward {
        request: web_sys::Request,
        url: RequestUrl,
        verified: Arc<VerifiedToken>,
    },
    /// A refused token whose failed authentication was charged: its RFC 6750 answer.
    // (The pure-Rust backend's measurement build leaves fresh tokens to the general path.)
    #[cfg_attr(feature = "p256-verify", allow(dead_code))]
    Refuse(Rejection),
}

impl Next {
    /// Carries on: forwards (with the `RateLimit-Policy`/`RateLimit` values in `headers`,
    /// when a limit applied) or refuses.
    fn go(
        self,
        config: &Rc<Config>,
        log: RequestLog,
        headers: Option<(String, String)>,
        now: UnixTime,
    ) -> Result<JsValue, JsValue> {
        match self {
            Self::Forward {
                request,
                url,
                verified,
            } => forward(
                &request,
                &url,
                config,
                &verified,
                log,
                headers.as_ref(),
                now,
            ),
            Self::Refuse(rejection) => refuse(config, log, &rejection.into()),
        }
    }
}

/// Sends a verified request to the origin, with the signed assertion.
fn forward(
    request: &web_sys::Request,
    url: &RequestUrl,
    config: &Rc<Config>,
    verified: &VerifiedToken,
    log: RequestLog,
    headers: Option<&(String, String)>,
    now: UnixTime,
) -> Result<JsValue, JsValue> {
    let target = format!("{}{}", config.origin_url, url.target());
    let identity = EdgeIdentity::new(verified.claims(), log.method(), url.path(), now);
    let assertion = config.signer.sign(&identity);
    let finish = Finish {
        config: config.clone(),
        log,
        origin_started: clock::now(),
    };
    let id = parked::park(&FORWARDING, finish);
    Ok(forward::forward_then(request, &target, &assertion, headers, id).into())
}

/// The edge's own answer for `error`, logged.
pub(super) fn refuse(
    config: &Config,
    mut log: RequestLog,
    error: &EdgeError,
) -> Result<JsValue, JsValue> {
    log.failed(error);
    let response = error_response(error)?;
    log.finish(config, response.status());
    Ok(response.into())
}

/// A forwarded request waiting for the origin (parked in [`FORWARDING`]).
struct Finish {
    config: Rc<Config>,
    log: RequestLog,
    origin_started: UnixTime,
}

thread_local! {
    static FORWARDING: RefCell<Parked<Finish>> = const { RefCell::new(Parked::new()) };
}

fn finishing(id: u32) -> Option<Finish> {
    let mut finish = parked::take(&FORWARDING, id)?;
    finish.log.origin_ms = Some(clock::now().millis_since(finish.origin_started));
    Some(finish)
}

/// The origin answered forwarded request `id` with `status`: log the request.
#[wasm_bindgen(js_name = originAnswered)]
pub fn origin_answered(id: u32, status: u16) {
    if let Some(finish) = finishing(id) {
        finish.log.finish(&finish.config, status);
    }
}

/// The origin could not be reached for request `id` (`detail`): the 502 answer.
#[wasm_bindgen(js_name = originUnreachable)]
pub fn origin_unreachable(id: u32, detail: String) -> Result<JsValue, JsValue> {
    forward_not_done(finishing(id), ForwardError::Unreachable(detail))
}

/// The outbound request for `id` could not be built (`detail`): a runtime error, 500.
#[wasm_bindgen(js_name = forwardFailed)]
pub fn forward_failed(id: u32, detail: String) -> Result<JsValue, JsValue> {
    forward_not_done(finishing(id), ForwardError::Build(detail))
}

/// The edge's answer for a forward that did not happen (logged if the request is still
/// parked).
fn forward_not_done(finish: Option<Finish>, error: ForwardError) -> Result<JsValue, JsValue> {
    let error: EdgeError = error.into();
    match finish {
        Some(finish) => refuse(&finish.config, finish.log, &error),
        None => Ok(error_response(&error)?.into()),
    }
}

/// The answer for a callback whose request was no longer parked (see [`Parked`]).
fn lost() -> Result<JsValue, JsValue> {
    let error = EdgeError::Internal("a parked request was evicted before its callback".into());
    Ok(error_response(&error)?.into())
}
