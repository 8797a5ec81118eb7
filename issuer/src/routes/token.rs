//! `POST /oauth2/token`: the `client_credentials` grant (RFC 6749 §4.4) with
//! `client_secret_basic` or `client_secret_post`, `scope` and RFC 8707 `resource`.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64ct::{Base64, Base64UrlUnpadded, Encoding};
use jwt_compact::{alg::Es256, AlgorithmExt, Claims, Header};
use rand_core::{OsRng, RngCore};
use serde::Serialize;
use shared::Scopes;

use crate::clients::{self, Client};
use crate::db::unix_now;
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
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (client_id, result) = grant(&state, &headers, body).await;
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
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> (Option<String>, Result<Response, ApiError>) {
    let params = match parse_request(headers, body) {
        Ok(params) => params,
        Err(err) => return (None, Err(err)),
    };
    let client = match authenticate(state, headers, &params).await {
        Ok(client) => client,
        Err(err) => return (None, Err(err)),
    };
    let id = client.client_id.clone();
    (Some(id), issue(state, &client, &params))
}

/// Content type, size, and form parameters (none repeated, RFC 6749 §3.2).
fn parse_request(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<BTreeMap<String, String>, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge
        } else {
            ApiError::InvalidRequest("unreadable request body")
        }
    })?;
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| {
            mime.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form {
        return Err(ApiError::InvalidRequest(
            "content type must be application/x-www-form-urlencoded",
        ));
    }
    let mut params = BTreeMap::new();
    for (name, value) in form_urlencoded::parse(&body) {
        if params
            .insert(name.into_owned(), value.into_owned())
            .is_some()
        {
            return Err(ApiError::InvalidRequest(
                "request parameters must not repeat",
            ));
        }
    }
    match params.get("grant_type").map(String::as_str) {
        None => Err(ApiError::InvalidRequest("grant_type is required")),
        Some("client_credentials") => Ok(params),
        Some(_) => Err(ApiError::UnsupportedGrantType),
    }
}

/// `client_secret_basic` (RFC 6749 §2.3.1: form-encoded id and secret in Basic) or
/// `client_secret_post`; exactly one.
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    params: &BTreeMap<String, String>,
) -> Result<Client, ApiError> {
    let mut authorization = headers.get_all(header::AUTHORIZATION).iter();
    let basic = match (authorization.next(), authorization.next()) {
        (None, _) => None,
        (Some(_), Some(_)) => {
            return Err(ApiError::InvalidRequest("repeated Authorization header"))
        }
        (Some(value), None) => Some(parse_basic(value).ok_or(ApiError::InvalidClient)?),
    };
    let posted = match (params.get("client_id"), params.get("client_secret")) {
        (Some(id), Some(secret)) => Some((id.clone(), secret.clone())),
        (None, Some(_)) => return Err(ApiError::InvalidRequest("client_secret without client_id")),
        _ => None,
    };
    let (client_id, secret) = match (basic, posted) {
        (Some(_), Some(_)) => {
            return Err(ApiError::InvalidRequest(
                "use only one client authentication method",
            ))
        }
        (Some((id, secret)), None) => {
            if params
                .get("client_id")
                .is_some_and(|posted_id| *posted_id != id)
            {
                return Err(ApiError::InvalidRequest(
                    "client_id does not match the authenticated client",
                ));
            }
            (id, secret)
        }
        (None, Some(credentials)) => credentials,
        (None, None) => return Err(ApiError::InvalidClient),
    };
    if client_id.len() > 128 || secret.len() > 256 {
        return Err(ApiError::InvalidClient);
    }
    clients::authenticate(&state.db, &client_id, &secret)
        .await
        .map_err(|err| match err {
            clients::ClientError::Db(err) => ApiError::from(err),
            other => ApiError::Internal(other.to_string()),
        })?
        .ok_or(ApiError::InvalidClient)
}

fn parse_basic(value: &HeaderValue) -> Option<(String, String)> {
    let value = value.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = Base64::decode_vec(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |text: &str| -> String {
        form_urlencoded::parse(format!("v={text}").as_bytes())
            .next()
            .map(|(_, value)| value.into_owned())
            .unwrap_or_default()
    };
    Some((unescape(id), unescape(secret)))
}

/// Scope and audience checks, then the signed token.
fn issue(
    state: &AppState,
    client: &Client,
    params: &BTreeMap<String, String>,
) -> Result<Response, ApiError> {
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
    let (kid, signing_key) = keys
        .active
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("no active signing key".into()))?;
    let now = unix_now();
    let lifetime = state.config.token_lifetime_secs;
    let mut jti = [0u8; 16];
    OsRng.fill_bytes(&mut jti);
    let claims = AccessTokenClaims {
        iss: &state.config.issuer_url,
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
    let header = Header::empty()
        .with_key_id(kid.as_str())
        .with_token_type("at+jwt");
    let access_token = Es256
        .token(&header, &Claims::new(claims), signing_key)
        .map_err(|err| ApiError::Internal(format!("signing failed: {err}")))?;
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
