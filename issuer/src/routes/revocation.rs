//! `POST /oauth2/revoke` (RFC 7009), `POST /oauth2/introspect` (RFC 7662), and
//! `GET /revocations?since=CURSOR`, the feed edges pull to refuse revoked tokens and keys.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use super::client_auth::{self, limited, ClientAddress};
use crate::audit::Entry;
use crate::clients::{Client, ClientError};
use crate::error::{ApiError, Realm};
use crate::revocations::{self, Revoked};
use crate::state::AppState;

/// The routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/oauth2/revoke", post(revoke))
        .route("/oauth2/introspect", post(introspect))
        .route("/revocations", get(feed))
}

/// Authenticates the caller under the token endpoint's per-address limits (one request
/// each; a failed authentication costs extra) and returns it with the `token` parameter.
async fn caller_and_token(
    state: &AppState,
    address: std::net::IpAddr,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(Client, String), ApiError> {
    let now = state.clock.now();
    let (client, params) =
        client_auth::authenticate_limited(state, address, headers, body, Ok, now).await?;
    limited(&state.limits.authenticated(address, None, now).await)?;
    let token = params
        .get("token")
        .cloned()
        .ok_or(ApiError::InvalidRequest("token is required"))?;
    Ok((client, token))
}

/// Verifies one of our own tokens for any audience `client` may address.
fn verify_for(state: &AppState, client: &Client, token: &str) -> Option<shared::VerifiedToken> {
    let keys = state.keys();
    let now = state.clock.now();
    client.audiences.iter().find_map(|audience| {
        let validation =
            shared::Validation::new(state.config().issuer_url.clone(), audience.clone());
        shared::Validator::new(validation)
            .verify(token, &keys.jwks, now)
            .ok()
    })
}

fn no_store(response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// RFC 7009: a client revokes one of its own tokens. Unknown, invalid or foreign tokens get
/// the same 200, so the endpoint reveals nothing.
async fn revoke(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (client, token) = caller_and_token(&state, address, &headers, body).await?;
    if let Some(verified) = verify_for(&state, &client, &token) {
        let claims = verified.claims();
        if claims.client_id == client.client_id {
            let now = state.clock.unix_secs();
            let revoked = Revoked::Token {
                exp: i64::try_from(claims.exp).unwrap_or(i64::MAX),
            };
            let mut tx = state.db.pool().begin().await?;
            if revocations::record(&mut tx, &state.db, revoked, &claims.jti, now).await? {
                let entry = Entry {
                    at: now,
                    actor: &client.client_id,
                    action: "token.revoke",
                    subject: &claims.jti,
                    detail: "",
                };
                state.db.audit_in(&mut tx, &entry).await?;
            }
            tx.commit().await?;
        }
    }
    Ok(no_store(()))
}

/// RFC 7662: a resource server (a client created with `--resource-server`) asks about a
/// token addressed to one of its audiences; anything else is `active: false`, and other
/// clients get 403 `unauthorized_client`.
async fn introspect(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (client, token) = caller_and_token(&state, address, &headers, body).await?;
    if !client.resource_server {
        return Err(ApiError::UnauthorizedClient);
    }
    let inactive = || no_store(axum::Json(serde_json::json!({ "active": false })));
    // Only tokens addressed to the caller's own audiences: another API's are never shown.
    let Some(verified) = verify_for(&state, &client, &token) else {
        return Ok(inactive());
    };
    match crate::clients::token_is_live(&state.db, &verified).await {
        Ok(true) => {}
        Ok(false) => return Ok(inactive()),
        Err(ClientError::Db(err)) => return Err(err.into()),
        Err(err) => return Err(ApiError::Internal(err.to_string())),
    }
    let claims = verified.claims();
    let mut answer = serde_json::json!({
        "active": true,
        // RFC 9449 §6.2: a bound token is `DPoP`, with the key it is bound to.
        "token_type": if claims.cnf.is_some() { "DPoP" } else { "Bearer" },
        "scope": claims.scope.to_string(),
        "client_id": claims.client_id,
        "sub": claims.sub,
        "aud": claims.aud,
        "iss": claims.iss,
        "exp": claims.exp,
        "iat": claims.iat,
        "nbf": claims.nbf,
        "jti": claims.jti,
    });
    if let (Some(cnf), Some(fields)) = (&claims.cnf, answer.as_object_mut()) {
        fields.insert("cnf".into(), serde_json::json!({ "jkt": cnf.jkt.as_str() }));
    }
    Ok(no_store(axum::Json(answer)))
}

#[derive(Deserialize)]
struct FeedQuery {
    #[serde(default)]
    since: i64,
}

/// How long a feed page may be served from a cache: what it adds, at most, to the time a
/// revocation takes to reach an edge. Shared caches may keep it unless the feed needs a token
/// (`feed_requires_token`): a shared cache would then hand it to anyone, so only the poller
/// keeps it (and a CDN in front absorbs nothing; a CDN rule that caches whatever the origin
/// says must leave `/revocations` out).
const FEED_MAX_AGE: &str = "public, max-age=1";
const FEED_MAX_AGE_WITH_TOKEN: &str = "private, max-age=1";

/// The revocation feed: entries after `since` that still matter, oldest first, in pages.
/// `cursor` is what to send as `since` next time; `more` says another page is waiting.
/// Limited per address (`feed_rate_per_address`), with a budget of its own for polls that
/// carry a feed token (`Authorization: Bearer`, `crate::feed_tokens`); a wrong token is
/// 401, as is none when `feed_requires_token`. Cacheable for a second (by shared caches only
/// when no token is required), so a burst of identical polls can be absorbed by a cache in
/// front of the issuer.
async fn feed(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    query: Result<Query<FeedQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let requires_token = state.config().feed_requires_token;
    // An issuer with no feed token reads no `Authorization` here, as before there were any.
    let with_token = match super::admin::bearer(&headers, Realm::Feed) {
        _ if state.feed_tokens.is_empty() => Ok(false),
        Ok(token) if state.feed_tokens.accepts(token) => Ok(true),
        Ok(_) => Err(ApiError::InvalidToken(Realm::Feed)),
        Err(ApiError::NoToken(_)) if !requires_token => Ok(false),
        Err(refused) => Err(refused),
    };
    let with_token = match with_token {
        Ok(with_token) => with_token,
        Err(refused) => {
            // Charged to the budget without a token, as every poll without a good one.
            limited(&state.limits.feed(address, false, state.clock.now()).await)?;
            return Err(refused);
        }
    };
    limited(
        &state
            .limits
            .feed(address, with_token, state.clock.now())
            .await,
    )?;
    let Query(query) =
        query.map_err(|_| ApiError::InvalidRequest("since must be an integer cursor"))?;
    let page = revocations::feed_page(&state.db, query.since, state.clock.unix_secs()).await?;
    let mut response = axum::Json(page).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if requires_token {
            FEED_MAX_AGE_WITH_TOKEN
        } else {
            FEED_MAX_AGE
        }),
    );
    Ok(response)
}
