//! The fast path for a fresh token: every check but the signature in wasm, then
//! `crypto.subtle.verify` as a JS promise whose verdict comes back by number
//! ([`token_verified`]).

use std::cell::RefCell;
use std::rc::Rc;

use shared::jwks_refresh::Freshness;
use shared::{PendingSignature, Rejection, TokenKey, UnixTime};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;

use super::{limit, lost, refuse, verified_path, Next};
use crate::clock;
use crate::config::{Config, RateLimitMode};
use crate::forward;
use crate::jwks_cache;
use crate::parked::{self, Parked};
use crate::rate_limit::{self, Subject};
use crate::request_log::RequestLog;
use crate::request_url::RequestUrl;

/// A fresh token: checks everything but the signature (answering a refusal at once) and
/// hands the signature to WebCrypto; `None` when the general path must take it.
pub(super) fn start(
    request: web_sys::Request,
    url: RequestUrl,
    env: worker::Env,
    config: Rc<Config>,
    token: &str,
    key: TokenKey,
    now: UnixTime,
) -> Option<Result<JsValue, JsValue>> {
    if jwks_cache::freshness(&config, now) != Freshness::Fresh {
        return None;
    }
    let ip = rate_limit::client_ip(&request);
    if rate_limit::locally_denied(Subject::FailedAuth(&ip), &config.failed_auth_plan, now).is_some()
    {
        return None;
    }
    let jwks = jwks_cache::usable(&config, now)?;
    let log = RequestLog::start(request.method(), &url, now);
    let check = match config.validator.check(token, &jwks, now) {
        Ok(check) => check,
        // The general path decides on a refetch (the unknown-kid cooldown).
        Err(Rejection::UnknownKeyId) => return None,
        Err(rejection) => return Some(reject(&request, &env, &config, &ip, rejection, log, now)),
    };
    let crypto_key = crate::webcrypto::imported(check.key())?;
    let (subtle, algorithm) = crate::webcrypto::subtle().ok()?;
    let signature = js_sys::Uint8Array::from(check.signature().as_slice());
    let message = js_sys::Uint8Array::from(check.signing_input());
    let pending = Pending {
        request,
        url,
        env,
        config,
        key,
        ip,
        signature: check.into_pending(),
        log,
        started: now,
        verify_started: clock::now(),
    };
    let id = parked::park(&VERIFYING, pending);
    let promise = forward::verify_then(&subtle, &algorithm, &crypto_key, &signature, &message, id);
    Some(Ok(promise.into()))
}

/// A fresh token waiting for WebCrypto's verdict (parked in [`VERIFYING`]).
struct Pending {
    request: web_sys::Request,
    url: RequestUrl,
    env: worker::Env,
    config: Rc<Config>,
    key: TokenKey,
    ip: String,
    signature: PendingSignature,
    log: RequestLog,
    started: UnixTime,
    verify_started: UnixTime,
}

thread_local! {
    static VERIFYING: RefCell<Parked<Pending>> = const { RefCell::new(Parked::new()) };
}

/// WebCrypto answered `valid` for request `id`: the response, or a promise of the origin's.
#[wasm_bindgen(js_name = tokenVerified)]
pub fn token_verified(id: u32, valid: bool) -> Result<JsValue, JsValue> {
    conclude(id, Ok(valid))
}

/// WebCrypto failed (`detail`) for request `id`: the token cannot be verified now.
#[wasm_bindgen(js_name = tokenNotVerified)]
pub fn token_not_verified(id: u32, detail: String) -> Result<JsValue, JsValue> {
    worker::console_error!("webcrypto verify failed: {detail}");
    conclude(id, Err(()))
}

fn conclude(id: u32, verdict: Result<bool, ()>) -> Result<JsValue, JsValue> {
    let Some(pending) = parked::take(&VERIFYING, id) else {
        return lost();
    };
    let Pending {
        request,
        url,
        env,
        config,
        key,
        ip,
        signature,
        mut log,
        started,
        verify_started,
    } = pending;
    let now = clock::now();
    log.jwks_ms = Some(now.millis_since(verify_started));
    let outcome = match verdict {
        Ok(valid) => signature.conclude(valid),
        Err(()) => Err(Rejection::VerifierUnavailable),
    };
    match outcome {
        Ok(verified) => {
            let verified =
                jwks_cache::TOKENS.with(|t| t.borrow_mut().insert_key(key, verified, started));
            verified_path(request, url, &env, &config, verified, log, started)
        }
        Err(rejection) => reject(&request, &env, &config, &ip, rejection, log, started),
    }
}

/// A refused token costs its IP one unit of the failed-auth budget, as in the general path
/// (`handler::charge_failed_auth`); over budget, the answer is 429 instead.
fn reject(
    request: &web_sys::Request,
    env: &worker::Env,
    config: &Rc<Config>,
    ip: &str,
    rejection: Rejection,
    log: RequestLog,
    now: UnixTime,
) -> Result<JsValue, JsValue> {
    if config.rate_limit_mode == RateLimitMode::Off {
        return refuse(config, log, &rejection.into());
    }
    let subject = Subject::FailedAuth(ip);
    let plan = config.failed_auth_plan;
    let check = match rate_limit::begin(subject, &plan, 1, now) {
        Ok(check) => check,
        Err(denied) => return limit::denied(config, log, denied, plan, subject),
    };
    let location = rate_limit::location(request, config.rate_limit_mode);
    limit::decide(
        env,
        &location,
        config,
        log,
        check,
        Next::Refuse(rejection),
        now,
    )
}
