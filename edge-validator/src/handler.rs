//! The request path: bearer token -> `shared` checks -> signature (WebCrypto) -> revocation
//! list -> rate limit -> forward with a signed identity; or the RFC 6750 / 429 / 503 answer.
//! The origin is never contacted for a refused request. Every request logs one JSON line.
//!
//! No Rust futures: wasm decides synchronously, and each wait a request can have is a
//! JavaScript promise whose callback comes back into wasm by request number (`js/io.js`,
//! `js/forward.js`, [`crate::parked`]): the first revocation pull and the key set of a new
//! isolate, a refetch for an unknown `kid`, a key import ([`prepare`]); WebCrypto's verify
//! ([`fresh`]); the rate limit's Durable Object ([`limit`]); the origin's answer. After a
//! preparation wait the request starts over ([`serve`]) with what it waited for marked, so
//! it never waits twice for the same thing.
//!
//! Why: every `.await` on a JS promise in wasm-bindgen-futures costs two closures, a task
//! wake-up and a microtask, and the handler future itself another promise; measured with
//! `benches/run`, that glue was most of what the edge paid over the JavaScript floor, and
//! the futures were a sixth of the wasm (`benches/size-breakdown`).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use shared::jwks_refresh::Freshness;
use shared::{bearer_token, Rejection, TokenKey, UnixTime, VerifiedToken};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;

use crate::clock::{self, now};
use crate::config::{self, Config, RateLimitMode};
use crate::error::{error_response, json_response, EdgeError};
use crate::forward::{self, ForwardError};
use crate::jobs::{self, Kind};
use crate::jwks_cache::{self, Keys};
use crate::parked::{self, Parked};
use crate::rate_limit::{self, Subject};
use crate::request_log::RequestLog;
use crate::request_url::RequestUrl;
use crate::revocations::{self, Sync};

mod fresh;
mod limit;
mod prepare;
#[cfg(not(feature = "p256-verify"))]
pub use fresh::{token_not_verified, token_verified};
pub use limit::{limit_answered, limit_unanswered};
pub(crate) use prepare::prepared;
pub use prepare::wait_over;
#[cfg(not(feature = "p256-verify"))]
pub use prepare::{key_imported, key_not_imported};

/// The Worker's own health endpoint (never forwarded).
pub(crate) const HEALTH_PATH: &str = "/.edge/health";

/// Handles one request: a `Response`, or a `Promise` of one. Called by the entry
/// (`js/plain-entry.mjs`) with `resume`, the object of wasm exports its promises call back.
#[wasm_bindgen]
pub fn handle(
    request: web_sys::Request,
    env: crate::runtime::Env,
    ctx: JsValue,
    resume: JsValue,
) -> Result<JsValue, JsValue> {
    forward::set_resume(resume);
    serve(Arrived {
        request,
        env,
        ctx,
        started: now(),
        waited: Waited::default(),
        keys_since: None,
    })
}

/// A request as it arrived, with what it has already waited for.
pub(super) struct Arrived {
    request: web_sys::Request,
    env: crate::runtime::Env,
    ctx: JsValue,
    started: UnixTime,
    waited: Waited,
    /// When it began waiting for keys (a key-set job or an import), for the log's `jwks_ms`.
    keys_since: Option<UnixTime>,
}

/// The preparation waits a request has had (each at most once).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Waited {
    revocations: bool,
    /// The Cache API copy of the key set (a new isolate).
    copy: bool,
    /// A key-set refresh (its own, or one another request ran).
    refresh: bool,
    /// A WebCrypto key import.
    #[cfg_attr(feature = "p256-verify", allow(dead_code))]
    import: bool,
}

/// Decides `arrived` from the start: an answer now, or the promise of one.
fn serve(arrived: Arrived) -> Result<JsValue, JsValue> {
    let config = match config::get(&arrived.env) {
        Ok(config) => config,
        Err(err) => return Ok(error_response(&EdgeError::Internal(err.to_string()))?.into()),
    };
    let url = RequestUrl::parse(&arrived.request.url());
    if url.path() == HEALTH_PATH {
        return Ok(health(&config, now())?.into());
    }
    if config.test_trap_path.as_deref() == Some(url.path()) {
        trap();
    }
    let mut log = RequestLog::start(arrived.request.method(), &url, arrived.started);
    let authorization = arrived
        .request
        .headers()
        .get("authorization")
        .ok()
        .flatten();
    let token = match bearer_token(authorization.as_deref()) {
        Ok(token) => token,
        // No token, or a malformed header: the challenge, at no cost to the IP's budget.
        Err(rejection) => return refuse(&config, log, &rejection.into()),
    };
    let now = now();
    match revocations::sync(&config, now) {
        Sync::Current => {}
        Sync::PullBehind => jobs::background(Kind::Revocations, &config, &arrived.ctx),
        Sync::Wait if !arrived.waited.revocations => {
            let mut arrived = arrived;
            arrived.waited.revocations = true;
            return prepare::wait_for(Kind::Revocations, &config, arrived);
        }
        Sync::Wait => {}
    }

    let key = TokenKey::of(token);
    let cached = jwks_cache::TOKENS.with(|t| t.borrow().get_key(&key, now));
    if let Some(verified) = cached {
        log.cache_hit = true;
        return verified_path(arrived, url, &config, verified, log, now);
    }
    // Only a token that needs checking can cost its IP failed-auth budget.
    let ip = rate_limit::client_ip(&arrived.request);
    let failed_auth = Subject::FailedAuth(&ip);
    if let Some(denied) = rate_limit::locally_denied(failed_auth, &config.failed_auth_plan, now) {
        return limit::denied(&config, log, denied, config.failed_auth_plan, failed_auth);
    }
    let waited = arrived.waited;
    let jwks = match jwks_cache::keys(&config, now, waited.copy, waited.refresh) {
        Keys::Ready(jwks) => jwks,
        Keys::RefreshBehind(jwks) => {
            jobs::background(Kind::Keys { load_copy: false }, &config, &arrived.ctx);
            jwks
        }
        Keys::Wait { load_copy } => {
            let mut arrived = arrived;
            arrived.waited.copy |= load_copy;
            arrived.waited.refresh = true;
            return prepare::wait_for(Kind::Keys { load_copy }, &config, arrived);
        }
        Keys::Unavailable => return refuse(&config, log, &EdgeError::NoKeys),
    };
    fresh::start(arrived, url, config, token, key, &jwks, ip, log, now)
}

/// A panic on purpose ([`config::TEST_TRAP_PATH`]): with `panic = "abort"` the instance
/// traps, as it would on any bug.
#[allow(clippy::panic, reason = "the point: tests/ force a trap")]
fn trap() -> ! {
    panic!("{} requested", config::TEST_TRAP_PATH)
}

/// `/.edge/health`: whether the edge can verify tokens, and how old its revocation list is.
#[derive(serde::Serialize)]
struct Health {
    status: &'static str,
    jwks: &'static str,
    revocations_age_ms: Option<u64>,
}

fn health(config: &Config, now: UnixTime) -> Result<web_sys::Response, JsValue> {
    let freshness = jwks_cache::freshness(config, now);
    let ok = matches!(freshness, Freshness::Fresh | Freshness::Stale);
    let health = Health {
        status: if ok { "ok" } else { "degraded" },
        jwks: jwks_cache::freshness_name(freshness),
        revocations_age_ms: revocations::age_ms(now),
    };
    let body = serde_json::to_string(&health).unwrap_or_default();
    json_response(200, &body)
}

/// A verified token (cached or just verified): revocation, rate limit, then the origin.
pub(super) fn verified_path(
    arrived: Arrived,
    url: RequestUrl,
    config: &Rc<Config>,
    verified: Arc<VerifiedToken>,
    mut log: RequestLog,
    now: UnixTime,
) -> Result<JsValue, JsValue> {
    let Arrived { request, env, .. } = arrived;
    log.verified = Some(Arc::clone(&verified));
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
    limit::decide(&env, &location, config, log, check, next, now)
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
    let line = shared::RequestLine {
        method: log.method(),
        host: &config.origin_host,
        path: url.path(),
        query: url.query(),
    };
    let assertion = config.signer.sign_claims(verified.claims(), &line, now);
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
pub(crate) fn lost() -> Result<JsValue, JsValue> {
    let error = EdgeError::Internal("a parked request was evicted before its callback".into());
    Ok(error_response(&error)?.into())
}

impl From<ForwardError> for EdgeError {
    fn from(error: ForwardError) -> Self {
        match error {
            ForwardError::Build(detail) => EdgeError::Internal(detail),
            ForwardError::Unreachable(detail) => {
                console_error!("origin fetch failed: {detail}");
                EdgeError::OriginUnreachable
            }
        }
    }
}
