//! `POST /oauth2/token`: the `client_credentials` grant (RFC 6749 §4.4), with client
//! authentication from `client_auth`, `scope`, RFC 8707 `resource`, rate limits, and DPoP
//! (RFC 9449): a request with a good proof gets a token bound to the proof's key.

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
use shared::dpop::{self, HttpUri, ProofError};
use shared::{Confirmation, Jkt, Scopes};

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
    /// The DPoP key the token is bound to (RFC 9449 §6.1).
    #[serde(skip_serializing_if = "Option::is_none")]
    cnf: Option<Confirmation>,
    /// The cut-off of the client's latest revocation, as the row read says (0: none yet;
    /// `shared::AccessClaims::client_cutoff`): a later revocation covers the token whatever
    /// its `iat`.
    client_cutoff: i64,
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
        // Not a server fault (the server-error ratio that pages counts
        // `temporarily_unavailable`): a client that retries at once after its revocation.
        Err(ApiError::RevokedMomentsAgo { .. }) => "revoked_moments_ago",
        Err(err) => err.code(),
    };
    state
        .metrics
        .token(client_id.as_deref().unwrap_or("unknown"), outcome);
    let mut response = match result {
        Ok(response) => response,
        Err(err) => err.into_response(),
    };
    // RFC 9449 §8: with nonces required, every answer carries the one to use next, the
    // `use_dpop_nonce` error above all.
    let config = state.config();
    if config.dpop_require_nonce {
        let nonce = state
            .dpop_nonces
            .issue(state.clock.now(), config.dpop_nonce_lifetime_secs);
        if let Ok(value) = HeaderValue::from_str(&nonce) {
            response.headers_mut().insert(DPOP_NONCE, value);
        }
    }
    response
}

/// RFC 9449 §8's response header.
const DPOP_NONCE: header::HeaderName = header::HeaderName::from_static("dpop-nonce");

/// Runs the grant; also returns the authenticated client id for metrics. Every request is
/// one rate-limit decision: its address's charge with its client's grant, or with its
/// failure's cost (`client_auth::authenticate_limited`).
async fn grant(
    state: &AppState,
    address: IpAddr,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> (Option<String>, Result<Response, ApiError>) {
    let now = state.clock.now();
    let authenticated = client_auth::authenticate_limited(
        state,
        address,
        headers,
        body,
        require_client_credentials,
        now,
    )
    .await;
    let (client, params) = match authenticated {
        Ok(authenticated) => authenticated,
        Err(err) => return (None, Err(err)),
    };
    let id = client.client_id.clone();
    if let Err(err) = limited(&state.limits.authenticated(address, Some(&id), now).await) {
        return (Some(id), Err(err));
    }
    // The token is stamped with the time this request started, before the client's row was
    // read: a revocation committed after that read covers it (`clients::CUTOFF_MARGIN_SECS`).
    let issued_at = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    if issued_at <= client.tokens_valid_after {
        // Read after a revocation: a token now would fall under it, so none until it passes.
        let wait = client
            .tokens_valid_after
            .saturating_sub(issued_at)
            .saturating_add(1);
        // Further ahead of this instance's clock now (read after the row) than the margin
        // and a second: only a revoking clock ahead of this one (or a burst of revocations,
        // each a second past the one before) puts it there.
        let margin = crate::clients::CUTOFF_MARGIN_SECS + 1;
        if client.tokens_valid_after > state.clock.unix_secs().saturating_add(margin) {
            tracing::warn!(
                client_id = %id,
                wait_secs = wait,
                "a revocation's cut-off is further ahead than its margin: clocks disagree"
            );
        }
        let retry_after_secs = u64::try_from(wait).unwrap_or(1);
        return (
            Some(id),
            Err(ApiError::RevokedMomentsAgo { retry_after_secs }),
        );
    }
    // What the request may have is checked before its proof is spent, so a request refused
    // for its scope, its resource or a missing key can be sent again with the same proof.
    let result = async {
        let grant = what_is_asked(state, &client, &params)?;
        let bound_to = proof_of_possession(state, &client, headers).await?;
        issue(state, &client, grant, bound_to, issued_at)
    };
    (Some(id), result.await)
}

/// The key the token is to be bound to: the one of the request's DPoP proof, checked and
/// recorded as used; `None` for a bearer request, which a client that requires DPoP may not
/// make. Runs after client authentication and its limit, so only a known client's requests
/// cost a signature check and a write.
async fn proof_of_possession(
    state: &AppState,
    client: &Client,
    headers: &HeaderMap,
) -> Result<Option<Jkt>, ApiError> {
    let values: Vec<&str> = headers
        .get_all(DPOP)
        .iter()
        .map(|value| value.to_str().map_err(|_| ProofError::Malformed))
        .collect::<Result<_, _>>()
        .map_err(ApiError::Dpop)?;
    let proof = match dpop::proof_header(values) {
        Ok(proof) => proof,
        Err(ProofError::Missing) if !client.require_dpop => return Ok(None),
        Err(err) => return Err(ApiError::Dpop(err)),
    };
    let config = state.config();
    let token_endpoint = HttpUri::parse(&config.token_endpoint())
        .ok_or_else(|| ApiError::Internal("issuer_url is not an http(s) URL".into()))?;
    let policy = crate::dpop::Policy {
        token_endpoint: &token_endpoint,
        max_age_secs: config.dpop_proof_max_age_secs,
        nonce_lifetime_secs: config
            .dpop_require_nonce
            .then_some(config.dpop_nonce_lifetime_secs),
    };
    let verified = crate::dpop::accept_token_request(
        &state.db,
        &state.dpop_nonces,
        &policy,
        proof,
        state.clock.now(),
    )
    .await?;
    Ok(Some(verified.jkt().clone()))
}

/// RFC 9449 §4.1's request header.
const DPOP: header::HeaderName = header::HeaderName::from_static("dpop");

fn require_client_credentials(params: Form) -> Result<Form, ApiError> {
    match params.get("grant_type").map(String::as_str) {
        None => Err(ApiError::InvalidRequest("grant_type is required")),
        Some("client_credentials") => Ok(params),
        Some(_) => Err(ApiError::UnsupportedGrantType),
    }
}

/// What a token request may have: the scope and audience it asks for, of its client's.
struct Grant<'c> {
    scope: Scopes,
    audience: &'c str,
}

/// The scope and audience `params` ask of `client`'s, with a key to sign them (checked again
/// when signing: it may go while the proof is recorded).
fn what_is_asked<'c>(
    state: &AppState,
    client: &'c Client,
    params: &Form,
) -> Result<Grant<'c>, ApiError> {
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
    if state.keys().active.is_none() {
        return Err(ApiError::Unavailable("no active signing key".into()));
    }
    Ok(Grant {
        scope,
        audience: audience.as_str(),
    })
}

/// The signed token of `grant` (bound to `bound_to`'s key, if any), stamped `now`.
fn issue(
    state: &AppState,
    client: &Client,
    grant: Grant<'_>,
    bound_to: Option<Jkt>,
    now: i64,
) -> Result<Response, ApiError> {
    let Grant { scope, audience } = grant;
    let keys = state.keys();
    let signer = keys
        .active
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("no active signing key".into()))?;
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
        cnf: bound_to.map(|jkt| Confirmation { jkt }),
        client_cutoff: client.tokens_valid_after,
    };
    let access_token = signer
        .sign_jwt(&claims)
        .map_err(|err| ApiError::Internal(err.to_string()))?;
    let body = TokenResponse {
        access_token,
        // RFC 9449 §5: a bound token is `DPoP`, and is refused as `Bearer`.
        token_type: if claims.cnf.is_some() {
            "DPoP"
        } else {
            "Bearer"
        },
        expires_in: lifetime,
        scope: scope.to_string(),
    };
    let mut response = axum::Json(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(response)
}
