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
use sqlx::Row;

use super::client_auth::{self, Form};
use crate::clients::Client;
use crate::db::unix_now;
use crate::error::ApiError;
use crate::state::AppState;

/// Most entries one feed page returns.
const FEED_PAGE: i64 = 1000;

/// The routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/oauth2/revoke", post(revoke))
        .route("/oauth2/introspect", post(introspect))
        .route("/revocations", get(feed))
}

/// Authenticates the caller and returns it with the `token` parameter.
async fn caller_and_token(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(Client, String), ApiError> {
    let params: Form = client_auth::parse_form(headers, body)?;
    let client = client_auth::authenticate(state, headers, &params).await?;
    let token = params
        .get("token")
        .cloned()
        .ok_or(ApiError::InvalidRequest("token is required"))?;
    Ok((client, token))
}

/// Verifies one of our own tokens for any audience `client` may address.
fn verify_for(state: &AppState, client: &Client, token: &str) -> Option<shared::VerifiedToken> {
    let keys = state.keys();
    let now = shared::UnixTime::from_secs(u64::try_from(unix_now()).unwrap_or(0));
    client.audiences.iter().find_map(|audience| {
        let validation = shared::Validation::new(state.config.issuer_url.clone(), audience.clone());
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
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (client, token) = caller_and_token(&state, &headers, body).await?;
    if let Some(verified) = verify_for(&state, &client, &token) {
        let claims = verified.claims();
        if claims.client_id == client.client_id {
            let now = unix_now();
            let exp = i64::try_from(claims.exp).unwrap_or(i64::MAX);
            let already: Option<i64> =
                sqlx::query_scalar("SELECT seq FROM revocations WHERE kind = 'jti' AND value = $1")
                    .bind(&claims.jti)
                    .fetch_optional(state.db.pool())
                    .await?;
            if already.is_none() {
                sqlx::query("INSERT INTO revocations (kind, value, expires_at, created_at) VALUES ('jti', $1, $2, $3)")
                    .bind(&claims.jti)
                    .bind(exp)
                    .bind(now)
                    .execute(state.db.pool())
                    .await?;
                state
                    .db
                    .audit(now, &client.client_id, "token.revoke", &claims.jti, "")
                    .await?;
            }
        }
    }
    Ok(no_store(()))
}

/// Whether the token's `jti` or its key is on the revocation list.
async fn is_revoked(state: &AppState, verified: &shared::VerifiedToken) -> Result<bool, ApiError> {
    let hit: Option<i64> = sqlx::query_scalar(
        "SELECT seq FROM revocations WHERE (kind = 'jti' AND value = $1) OR (kind = 'kid' AND value = $2) LIMIT 1",
    )
    .bind(&verified.claims().jti)
    .bind(verified.kid())
    .fetch_optional(state.db.pool())
    .await?;
    Ok(hit.is_some())
}

/// RFC 7662: a resource server asks about a token addressed to one of its audiences.
async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (client, token) = caller_and_token(&state, &headers, body).await?;
    let inactive = || no_store(axum::Json(serde_json::json!({ "active": false })));
    let Some(verified) = verify_for(&state, &client, &token) else {
        return Ok(inactive());
    };
    if is_revoked(&state, &verified).await? {
        return Ok(inactive());
    }
    let claims = verified.claims();
    Ok(no_store(axum::Json(serde_json::json!({
        "active": true,
        "token_type": "Bearer",
        "scope": claims.scope.to_string(),
        "client_id": claims.client_id,
        "sub": claims.sub,
        "aud": claims.aud,
        "iss": claims.iss,
        "exp": claims.exp,
        "iat": claims.iat,
        "nbf": claims.nbf,
        "jti": claims.jti,
    }))))
}

#[derive(Deserialize)]
struct FeedQuery {
    #[serde(default)]
    since: i64,
}

/// The revocation feed: entries after `since` that still matter, oldest first, in pages.
/// `cursor` is what to send as `since` next time; `more` says another page is waiting.
async fn feed(
    State(state): State<AppState>,
    query: Result<Query<FeedQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) =
        query.map_err(|_| ApiError::InvalidRequest("since must be an integer cursor"))?;
    let rows = sqlx::query(
        "SELECT seq, kind, value, expires_at FROM revocations WHERE seq > $1 AND expires_at > $2 ORDER BY seq LIMIT $3",
    )
    .bind(query.since.max(0))
    .bind(unix_now())
    .bind(FEED_PAGE + 1)
    .fetch_all(state.db.pool())
    .await?;
    let more = i64::try_from(rows.len()).unwrap_or(i64::MAX) > FEED_PAGE;
    let mut cursor = query.since.max(0);
    let mut entries = Vec::with_capacity(rows.len());
    for row in rows.iter().take(usize::try_from(FEED_PAGE).unwrap_or(1000)) {
        cursor = row.try_get("seq")?;
        entries.push(serde_json::json!({
            "kind": row.try_get::<String, _>("kind")?,
            "value": row.try_get::<String, _>("value")?,
            "expires_at": row.try_get::<i64, _>("expires_at")?,
        }));
    }
    if entries.is_empty() {
        // Nothing new: report the newest cursor so a fresh edge does not rescan expired rows.
        let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM revocations")
            .fetch_one(state.db.pool())
            .await?;
        cursor = cursor.max(newest.unwrap_or(0));
    }
    let body = serde_json::json!({ "cursor": cursor, "more": more, "revocations": entries });
    let mut response = axum::Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}
