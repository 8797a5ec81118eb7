//! The request path: bearer token -> `shared` checks -> WebCrypto signature -> forward with a
//! signed identity, or the RFC 6750 answer. The origin is never contacted for a bad token.

use std::sync::Arc;

use shared::assertion::{ASSERTION_HEADER, HEADER_PREFIX};
use shared::{bearer_token, EdgeIdentity, Rejection, UnixTime, Validator, VerifiedToken};
use worker::{Date, Env, Fetch, Headers, Request, RequestInit, Response};

use crate::config::Config;
use crate::error::{error_response, EdgeError};
use crate::jwks_cache;
use crate::webcrypto::WebCrypto;

/// Handles one request.
pub(crate) async fn handle(request: Request, env: Env) -> worker::Result<Response> {
    let now = UnixTime::from_millis(Date::now().as_millis());
    let path = request.path();
    if path == "/.edge/health" {
        let state = format!("{:?}", jwks_cache::freshness(now)).to_lowercase();
        return Response::from_json(&serde_json::json!({ "status": "ok", "jwks": state }));
    }
    let outcome = match Config::from_env(&env) {
        Ok(config) => serve(request, &config, now).await,
        Err(err) => Err(EdgeError::Internal(err.to_string())),
    };
    match outcome {
        Ok(response) => Ok(response),
        Err(error) => {
            if let EdgeError::Rejected(rejection) = &error {
                worker::console_log!(
                    "{}",
                    serde_json::json!({ "outcome": "rejected", "reason": rejection.reason(), "path": path })
                );
            }
            error_response(&error)
        }
    }
}

async fn serve(request: Request, config: &Config, now: UnixTime) -> Result<Response, EdgeError> {
    let authorization = request.headers().get("authorization").ok().flatten();
    let token = bearer_token(authorization.as_deref())?.to_owned();
    let verified = verify(&token, config, now).await?;
    forward(request, config, &verified, now).await
}

async fn verify(
    token: &str,
    config: &Config,
    now: UnixTime,
) -> Result<Arc<VerifiedToken>, EdgeError> {
    if let Some(hit) = jwks_cache::TOKENS.with(|t| t.borrow().get(token, now)) {
        return Ok(hit);
    }
    let validator = Validator::new(config.validation.clone());
    let mut jwks = jwks_cache::current(&config.jwks_urls, now, false)
        .await
        .ok_or(EdgeError::NoKeys)?;
    let check = match validator.check(token, &jwks, now) {
        Err(Rejection::UnknownKeyId) if jwks_cache::unknown_kid(now) => {
            jwks = jwks_cache::current(&config.jwks_urls, now, true)
                .await
                .ok_or(EdgeError::NoKeys)?;
            validator.check(token, &jwks, now)
        }
        other => other,
    }?;
    let verified = check.verify_with_async(&WebCrypto).await?;
    Ok(jwks_cache::TOKENS.with(|t| t.borrow_mut().insert(token, verified, now)))
}

async fn forward(
    request: Request,
    config: &Config,
    verified: &VerifiedToken,
    now: UnixTime,
) -> Result<Response, EdgeError> {
    let internal = |err: worker::Error| EdgeError::Internal(err.to_string());
    let url = request.url().map_err(internal)?;
    let target = format!(
        "{}{}{}",
        config.origin_url,
        url.path(),
        url.query().map(|q| format!("?{q}")).unwrap_or_default()
    );
    let method = request.method();
    let identity = EdgeIdentity::new(verified.claims(), method.as_ref(), url.path(), now);

    // Forward every header except the credential, hop-by-hop `host`, and anything a client
    // could use to forge the edge's identity headers.
    let headers = Headers::new();
    for (name, value) in request.headers().entries() {
        let lower = name.to_ascii_lowercase();
        if lower == "authorization" || lower == "host" || lower.starts_with(HEADER_PREFIX) {
            continue;
        }
        headers.append(&name, &value).map_err(internal)?;
    }
    headers
        .set(ASSERTION_HEADER, &config.signer.sign(&identity))
        .map_err(internal)?;

    let mut init = RequestInit::new();
    init.with_method(method.clone()).with_headers(headers);
    if !matches!(method, worker::Method::Get | worker::Method::Head) {
        // Streamed through, not buffered.
        init.with_body(request.inner().body().map(Into::into));
    }
    let outbound = Request::new_with_init(&target, &init).map_err(internal)?;
    Fetch::Request(outbound).send().await.map_err(|err| {
        worker::console_error!("origin fetch failed: {err}");
        EdgeError::OriginUnreachable
    })
}
