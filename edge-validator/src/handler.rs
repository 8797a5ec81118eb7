//! The request path: bearer token -> `shared` checks -> signature (WebCrypto) -> revocation
//! list -> rate limit -> forward with a signed identity; or the RFC 6750 / 429 answer. The
//! origin is never contacted for a refused request. Every request logs one JSON line.

use std::rc::Rc;
use std::sync::Arc;

use shared::jwks_refresh::Freshness;
use shared::{bearer_token, EdgeIdentity, Rejection, TokenKey, UnixTime, VerifiedToken};
use worker::{Context, Env};

use crate::clock::{self, now};
use crate::config::{self, Config, RateLimitMode};
use crate::error::{error_response, json_response, EdgeError};
use crate::forward::{self, ForwardError};
use crate::jwks_cache;
use crate::rate_limit::{self, Subject};
use crate::request_log::RequestLog;
use crate::request_url::RequestUrl;
use crate::revocations;

/// The Worker's own health endpoint (never forwarded).
pub(crate) const HEALTH_PATH: &str = "/.edge/health";

/// Handles one request. It stays on web-sys types (not `worker::Request`/`Response`): every
/// conversion between the two crosses the wasm boundary several times for nothing.
pub(crate) async fn handle(
    request: web_sys::Request,
    env: Env,
    ctx: Context,
) -> worker::Result<web_sys::Response> {
    let started = now();
    let config = match config::get(&env) {
        Ok(config) => config,
        Err(err) => return Ok(error_response(&EdgeError::Internal(err.to_string()))?),
    };
    let url = RequestUrl::parse(&request.url());
    if url.path() == HEALTH_PATH {
        return Ok(health(&config, started)?);
    }
    let mut log = RequestLog::start(request.method(), &url, started);
    let outcome = serve(&request, &url, &config, &env, &ctx, started, &mut log).await;
    let response = match outcome {
        Ok(response) => response,
        Err(error) => {
            log.failed(&error);
            error_response(&error)?
        }
    };
    log.finish(&config, response.status());
    Ok(response)
}

/// `/.edge/health`: whether the edge can verify tokens, and how old its revocation list is.
#[derive(serde::Serialize)]
struct Health {
    status: &'static str,
    jwks: &'static str,
    revocations_age_ms: Option<u64>,
}

fn health(config: &Config, now: UnixTime) -> Result<web_sys::Response, wasm_bindgen::JsValue> {
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

async fn serve(
    request: &web_sys::Request,
    url: &RequestUrl,
    config: &Rc<Config>,
    env: &Env,
    ctx: &Context,
    now: UnixTime,
    log: &mut RequestLog,
) -> Result<web_sys::Response, EdgeError> {
    let authorization = request.headers().get("authorization").ok().flatten();
    let token = bearer_token(authorization.as_deref())?.to_owned();
    revocations::sync(config, ctx, now).await;

    let key = TokenKey::of(&token);
    let cached = jwks_cache::TOKENS.with(|t| t.borrow().get_key(&key, now));
    log.cache_hit = cached.is_some();
    let verified = match cached {
        Some(hit) => hit,
        None => {
            // Only a token that needs checking can cost its IP failed-auth budget.
            let ip = rate_limit::client_ip(request);
            let failed_auth = Subject::FailedAuth(&ip);
            if let Some(decision) =
                rate_limit::locally_denied(failed_auth, &config.failed_auth_plan, now)
            {
                return Err(EdgeError::rate_limited(
                    decision,
                    config.failed_auth_plan,
                    failed_auth,
                ));
            }
            let jwks_started = clock::now();
            let result = verify(&token, key, config, ctx, now).await;
            log.jwks_ms = Some(clock::now().millis_since(jwks_started));
            match result {
                Ok(verified) => verified,
                Err(EdgeError::Rejected(rejection)) => {
                    let location = rate_limit::location(request, config.rate_limit_mode);
                    return Err(charge_failed_auth(
                        rejection,
                        config,
                        env,
                        &location,
                        failed_auth,
                        now,
                    )
                    .await);
                }
                Err(other) => return Err(other),
            }
        }
    };
    log.client = Some(verified.claims().client_id.clone());
    if revocations::is_revoked(&verified) {
        return Err(Rejection::Revoked.into());
    }

    let limit = if config.rate_limit_mode == RateLimitMode::Off {
        None
    } else {
        let plan = verified.claims().rate_plan.unwrap_or(config.default_plan);
        let subject = Subject::Client(&verified.claims().client_id);
        let limit_started = clock::now();
        let (decision, source) = rate_limit::decide(
            env,
            config.rate_limit_mode,
            &rate_limit::location(request, config.rate_limit_mode),
            subject,
            &plan,
            1,
            now,
        )
        .await;
        log.limit_ms = Some(clock::now().millis_since(limit_started));
        log.limit_source = Some(source);
        if !decision.allowed {
            return Err(EdgeError::rate_limited(decision, plan, subject));
        }
        Some((decision, plan, subject.policy()))
    };

    let origin_started = clock::now();
    let response = send(request, url, config, &verified, now).await;
    log.origin_ms = Some(clock::now().millis_since(origin_started));
    let response = response?;
    match limit {
        Some((decision, plan, policy)) => forward::with_rate_limit(
            &response,
            &plan.policy_header(policy),
            &decision.rate_limit_header(policy),
        )
        .map_err(EdgeError::from),
        None => Ok(response),
    }
}

/// A refused token costs its IP one unit of the failed-auth budget; over budget, the answer
/// is 429 instead (and later requests from the IP that need crypto are refused at once). A
/// request with no token at all is the normal challenge and costs nothing.
async fn charge_failed_auth(
    rejection: Rejection,
    config: &Config,
    env: &Env,
    location: &str,
    subject: Subject<'_>,
    now: UnixTime,
) -> EdgeError {
    if matches!(rejection, Rejection::MissingToken) || config.rate_limit_mode == RateLimitMode::Off
    {
        return rejection.into();
    }
    let (decision, _) = rate_limit::decide(
        env,
        config.rate_limit_mode,
        location,
        subject,
        &config.failed_auth_plan,
        1,
        now,
    )
    .await;
    if decision.allowed {
        rejection.into()
    } else {
        EdgeError::rate_limited(decision, config.failed_auth_plan, subject)
    }
}

async fn verify(
    token: &str,
    key: TokenKey,
    config: &Rc<Config>,
    ctx: &Context,
    now: UnixTime,
) -> Result<Arc<VerifiedToken>, EdgeError> {
    let validator = &config.validator;
    let mut jwks = jwks_cache::current(config, ctx, now, false)
        .await
        .ok_or(EdgeError::NoKeys)?;
    let check = match validator.check(token, &jwks, now) {
        Err(Rejection::UnknownKeyId) if jwks_cache::unknown_kid(config, now) => {
            jwks = jwks_cache::current(config, ctx, now, true)
                .await
                .ok_or(EdgeError::NoKeys)?;
            validator.check(token, &jwks, now)
        }
        other => other,
    }?;
    #[cfg(feature = "p256-verify")]
    let verified = check.verify_with(&shared::P256Verifier)?;
    #[cfg(not(feature = "p256-verify"))]
    let verified = check
        .verify_with_async(&crate::webcrypto::WebCrypto)
        .await?;
    Ok(jwks_cache::TOKENS.with(|t| t.borrow_mut().insert_key(key, verified, now)))
}

/// Forwards to the origin: method, path, query, headers (less the credential and anything
/// that could forge the edge's identity) and the streamed body, plus the signed assertion.
async fn send(
    request: &web_sys::Request,
    url: &RequestUrl,
    config: &Config,
    verified: &VerifiedToken,
    now: UnixTime,
) -> Result<web_sys::Response, EdgeError> {
    let target = format!("{}{}", config.origin_url, url.target());
    let method = request.method();
    let identity = EdgeIdentity::new(verified.claims(), &method, url.path(), now);
    let assertion = config.signer.sign(&identity);
    Ok(forward::send(request, &target, &assertion).await?)
}

impl From<ForwardError> for EdgeError {
    fn from(error: ForwardError) -> Self {
        match error {
            ForwardError::Build(detail) => EdgeError::Internal(detail),
            ForwardError::Unreachable(detail) => {
                worker::console_error!("origin fetch failed: {detail}");
                EdgeError::OriginUnreachable
            }
        }
    }
}
