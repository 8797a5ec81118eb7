//! `POST /oauth2/token`: the `client_credentials` grant (RFC 6749 §4.4), with client
//! authentication from `client_auth`, `scope`, RFC 8707 `resource`, and rate limits.

use std::net::IpAddr;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64ct::{Base64UrlUnpadded, Encoding};
use rand_core::{OsRng, RngCore};
use serde::Serialize;
use shared::Scopes;

use super::client_auth::{self, limited, ClientAddress, Form};
use crate::clients::Client;
use crate::error::ApiError;
use crate::state::AppState;

/// The route.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/oauth2/token", post(token))
}

/// The access-token claims (RFC 9068 §2.2 plus `client_id`, `scope` and `rate_plan`).
#[derive(Serialize)]
struct AccessTokenClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: i64,
    iat: i64,
    nbf: i64,
    jti: String,
    client_id: &'a str,
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_plan: Option<String>,
}

#[derive(Serialize)]
struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    scope: String,
}

async fn token(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (client_id, result) = grant(&state, address, &headers, body).await;
    let outcome = match &result {
        Ok(_) => "issued",
        Err(err) => err.code(),
    };
    state
        .metrics
        .token(client_id.as_deref().unwrap_or("unknown"), outcome);
    match result {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

/// Runs the grant; also returns the authenticated client id for metrics.
async fn grant(
    state: &AppState,
    address: IpAddr,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> (Option<String>, Result<Response, ApiError>) {
    let now = state.clock.now();
    if let Err(err) = limited(&state.limits.address(address, now, false).await) {
        return (None, Err(err));
    }
    let params = match client_auth::parse_form(headers, body).and_then(require_client_credentials) {
        Ok(params) => params,
        Err(err) => return (None, Err(err)),
    };
    let client = match client_auth::authenticate_charged(state, address, headers, &params).await {
        Ok(client) => client,
        Err(err) => return (None, Err(err)),
    };
    let id = client.client_id.clone();
    let result =
        limited(&state.limits.client(&id, now).await).and_then(|()| issue(state, &client, &params));
    (Some(id), result)
}

fn require_client_credentials(params: Form) -> Result<Form, ApiError> {
    match params.get("grant_type").map(String::as_str) {
        None => Err(ApiError::InvalidRequest("grant_type is required")),
        Some("client_credentials") => Ok(params),
        Some(_) => Err(ApiError::UnsupportedGrantType),
    }
}

/// Scope and audience checks, then the signed token.
fn issue(state: &AppState, client: &Client, params: &Form) -> Result<Response, ApiError> {
    let scope = match params.get("scope") {
        None => client.scopes.clone(),
        Some(text) => {
            let requested: Scopes = text.parse().map_err(|_| ApiError::InvalidScope)?;
            if !client.scopes.contains_all(&requested) {
                return Err(ApiError::InvalidScope);
            }
            requested
        }
    };
    let audience = match params.get("resource") {
        None => client.audiences.first().ok_or(ApiError::InvalidTarget)?,
        Some(resource) => client
            .audiences
            .iter()
            .find(|a| *a == resource)
            .ok_or(ApiError::InvalidTarget)?,
    };

    let keys = state.keys();
    let signer = keys
        .active
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("no active signing key".into()))?;
    let now = state.clock.unix_secs();
    let lifetime = state.config().token_lifetime_secs;
    let mut jti = [0u8; 16];
    OsRng.fill_bytes(&mut jti);
    let claims = AccessTokenClaims {
        iss: &state.config().issuer_url,
        sub: &client.client_id,
        aud: audience,
        exp: now + i64::try_from(lifetime).unwrap_or(600),
        iat: now,
        nbf: now,
        jti: Base64UrlUnpadded::encode_string(&jti),
        client_id: &client.client_id,
        scope: scope.to_string(),
        rate_plan: client.rate_plan.map(|plan| plan.to_string()),
    };
    let access_token = signer
        .sign_jwt(&claims)
        .map_err(|err| ApiError::Internal(err.to_string()))?;
    let body = TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: lifetime,
        scope: scope.to_string(),
    };
    let mut response = axum::Json(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(response)
}
