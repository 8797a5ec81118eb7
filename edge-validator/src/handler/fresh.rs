//! A fresh token: every check but the signature in wasm, then `crypto.subtle.verify` as a JS
//! promise whose verdict comes back by number ([`token_verified`]); with the pure-Rust
//! backend (the `p256-verify` measurement build), the signature synchronously.

use std::rc::Rc;

use shared::{Jwks, Rejection, TokenKey, UnixTime};
#[cfg(not(feature = "p256-verify"))]
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;

use super::{limit, prepare, refuse, verified_path, Arrived, Next};
use crate::config::{Config, RateLimitMode};
use crate::jobs::Kind;
use crate::jwks_cache;
use crate::rate_limit::{self, Subject};
use crate::request_log::RequestLog;
use crate::request_url::RequestUrl;

/// Checks `token` (from `arrived`, under `key`) against `jwks`: a refusal (charged to `ip`),
/// a wait (a refetch for an unknown `kid`, a key import), or the signature's verification.
#[allow(clippy::too_many_arguments)] // the request's parts, as `serve` took them apart
pub(super) fn start(
    arrived: Arrived,
    url: RequestUrl,
    config: Rc<Config>,
    token: &str,
    key: TokenKey,
    jwks: &Jwks,
    ip: String,
    log: RequestLog,
    now: UnixTime,
) -> Result<JsValue, JsValue> {
    let check = match config.validator.check(token, jwks, now) {
        Ok(check) => check,
        // A revoked key has left the set: its tokens are revoked, not unknown, and must not
        // spend the unknown-kid refetch that a rotation's new key needs.
        Err(Rejection::UnknownKeyId) if kid_revoked(&config, token) => {
            return reject(arrived, &config, &ip, Rejection::Revoked, log, now);
        }
        // A kid the set does not have: refetch once if the cooldown allows (a rotation's
        // new key), else it is refused like any bad token.
        Err(Rejection::UnknownKeyId)
            if !arrived.waited.refresh && jwks_cache::unknown_kid(&config, now) =>
        {
            let mut arrived = arrived;
            arrived.waited.refresh = true;
            return prepare::wait_for(Kind::Keys { load_copy: false }, &config, arrived);
        }
        Err(rejection) => return reject(arrived, &config, &ip, rejection, log, now),
    };

    #[cfg(feature = "p256-verify")]
    {
        let verified = check.verify_with(&shared::P256Verifier);
        let mut log = log;
        let keys_since = arrived.keys_since.unwrap_or(now);
        log.jwks_ms = Some(crate::clock::now().millis_since(keys_since));
        conclude(arrived, url, &config, key, &ip, verified, log, now)
    }

    #[cfg(not(feature = "p256-verify"))]
    {
        let Some(crypto_key) = crate::webcrypto::imported(check.key()) else {
            if arrived.waited.import {
                // The import failed (logged): the token cannot be verified now.
                return reject(
                    arrived,
                    &config,
                    &ip,
                    Rejection::VerifierUnavailable,
                    log,
                    now,
                );
            }
            let (kid, point) = (
                check.key().kid().to_owned(),
                check.key().uncompressed_point(),
            );
            return prepare::import(arrived, kid, point);
        };
        let (subtle, algorithm) = match crate::webcrypto::subtle() {
            Ok(found) => found,
            Err(err) => {
                console_error!("webcrypto unavailable: {}", err.detail);
                return reject(
                    arrived,
                    &config,
                    &ip,
                    Rejection::VerifierUnavailable,
                    log,
                    now,
                );
            }
        };
        let (signature, message) = (*check.signature(), check.signing_input());
        let pending = Pending {
            arrived,
            url,
            config,
            key,
            ip,
            signature: check.into_pending(),
            log,
            started: now,
            verify_started: crate::clock::now(),
        };
        let id = crate::parked::park(&VERIFYING, pending);
        let promise =
            crate::forward::verify_then(&subtle, &algorithm, &crypto_key, &signature, message, id);
        Ok(promise.into())
    }
}

/// Whether `token` names a key on the revocation list (read again: only on the rare path
/// of a `kid` the set lacks).
fn kid_revoked(config: &Config, token: &str) -> bool {
    shared::UntrustedToken::parse(token, config.validator.validation())
        .is_ok_and(|untrusted| crate::revocations::is_key_revoked(untrusted.kid()))
}

/// The signature's outcome: on to the verified path (and into the token cache), or refused.
#[allow(clippy::too_many_arguments)] // a parked request's parts
fn conclude(
    arrived: Arrived,
    url: RequestUrl,
    config: &Rc<Config>,
    key: TokenKey,
    ip: &str,
    outcome: Result<shared::VerifiedToken, Rejection>,
    log: RequestLog,
    now: UnixTime,
) -> Result<JsValue, JsValue> {
    match outcome {
        Ok(verified) => {
            let verified =
                jwks_cache::TOKENS.with(|t| t.borrow_mut().insert_key(key, verified, now));
            verified_path(arrived, url, config, verified, log, now)
        }
        Err(rejection) => reject(arrived, config, ip, rejection, log, now),
    }
}

/// A fresh token waiting for WebCrypto's verdict (parked in [`VERIFYING`]).
#[cfg(not(feature = "p256-verify"))]
struct Pending {
    arrived: Arrived,
    url: RequestUrl,
    config: Rc<Config>,
    key: TokenKey,
    ip: String,
    signature: shared::PendingSignature,
    log: RequestLog,
    started: UnixTime,
    verify_started: UnixTime,
}

#[cfg(not(feature = "p256-verify"))]
thread_local! {
    static VERIFYING: std::cell::RefCell<crate::parked::Parked<Pending>> =
        const { std::cell::RefCell::new(crate::parked::Parked::new()) };
}

/// WebCrypto answered `valid` for request `id`: the response, or a promise of the origin's.
#[cfg(not(feature = "p256-verify"))]
#[wasm_bindgen(js_name = tokenVerified)]
pub fn token_verified(id: u32, valid: bool) -> Result<JsValue, JsValue> {
    verdict(id, Ok(valid))
}

/// WebCrypto failed (`detail`) for request `id`: the token cannot be verified now.
#[cfg(not(feature = "p256-verify"))]
#[wasm_bindgen(js_name = tokenNotVerified)]
pub fn token_not_verified(id: u32, detail: String) -> Result<JsValue, JsValue> {
    console_error!("webcrypto verify failed: {detail}");
    verdict(id, Err(()))
}

#[cfg(not(feature = "p256-verify"))]
fn verdict(id: u32, verdict: Result<bool, ()>) -> Result<JsValue, JsValue> {
    let Some(pending) = crate::parked::take(&VERIFYING, id) else {
        return super::lost();
    };
    let Pending {
        arrived,
        url,
        config,
        key,
        ip,
        signature,
        mut log,
        started,
        verify_started,
    } = pending;
    let keys_since = arrived.keys_since.unwrap_or(verify_started);
    log.jwks_ms = Some(crate::clock::now().millis_since(keys_since));
    let outcome = match verdict {
        Ok(valid) => signature.conclude(valid),
        Err(()) => Err(Rejection::VerifierUnavailable),
    };
    conclude(arrived, url, &config, key, &ip, outcome, log, started)
}

/// A refused token costs its IP one unit of the failed-auth budget; over budget, the answer
/// is 429 instead (and later requests from the IP that need crypto are refused at once).
fn reject(
    arrived: Arrived,
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
    if rejection.is_malformed() {
        // Not a token at all: the isolate's count decides, with no Durable Object call, so
        // junk costs the abuser its budget and the edge no round trip.
        return limit::decide_in_isolate(config, log, check, Next::Refuse(rejection), now);
    }
    let location = rate_limit::location(&arrived.request, config.rate_limit_mode);
    limit::decide(
        &arrived.env,
        &location,
        config,
        log,
        check,
        Next::Refuse(rejection),
        now,
    )
}
