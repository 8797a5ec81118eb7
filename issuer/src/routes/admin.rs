//! The admin API: what `issuer client …`, `issuer keys …` and `issuer audit …` do, over HTTP
//! for automation, guarded by this issuer's own access tokens.
//!
//! A token for the admin API is an ordinary client-credentials token with the audience
//! `admin_audience` (a client made with `issuer client create --admin`), checked like any
//! other: signature, issuer, time, revocation, and a client still enabled. Its scopes are
//! its powers, one per family of endpoints, so an operator who rotates keys need not be able
//! to create clients or read the audit trail:
//!
//! | scope | endpoints |
//! |---|---|
//! | `admin:clients` | `GET/POST /admin/clients`, `GET /admin/clients/{id}`, `POST /admin/clients/{id}/disable`, `…/enable`, `…/rotate-secret` |
//! | `admin:keys` | `GET /admin/keys`, `POST /admin/keys/rotate`, `POST /admin/keys/{kid}/revoke` |
//! | `admin:audit` | `GET /admin/audit?after=ID`, `GET /admin/audit/verify` |
//!
//! Every change goes through the same functions as the CLI and writes the same audit row,
//! with the admin client's id as the actor. Errors are RFC 6750: 401 with a challenge without
//! or with a bad token, 403 `insufficient_scope` naming the scope.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::clients::{self, ClientError, NewClient};
use crate::error::{ApiError, Realm};
use crate::keys::{self, KeyError, KeyEvent};
use crate::state::AppState;

/// A family of admin endpoints, and the scope a token needs for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    /// Clients: create, list, show, disable, enable, rotate a secret.
    Clients,
    /// Signing keys: list, rotate, revoke.
    Keys,
    /// The audit trail: read and verify.
    Audit,
}

impl Power {
    /// The scope that grants it.
    #[must_use]
    pub const fn scope(self) -> &'static str {
        match self {
            Self::Clients => "admin:clients",
            Self::Keys => "admin:keys",
            Self::Audit => "admin:audit",
        }
    }

    /// Every power's scope.
    pub const SCOPES: [&'static str; 3] = ["admin:clients", "admin:keys", "admin:audit"];
}

/// The routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/clients", get(list_clients).post(create_client))
        .route("/admin/clients/{id}", get(show_client))
        .route("/admin/clients/{id}/disable", post(disable_client))
        .route("/admin/clients/{id}/enable", post(enable_client))
        .route("/admin/clients/{id}/require-dpop", post(require_dpop))
        .route("/admin/clients/{id}/rotate-secret", post(rotate_secret))
        .route("/admin/keys", get(list_keys))
        .route("/admin/keys/rotate", post(rotate_key))
        .route("/admin/keys/{kid}/revoke", post(revoke_key))
        .route("/admin/audit", get(read_audit))
        .route("/admin/audit/verify", get(verify_audit))
}

/// The admin client a request acts for, once its token holds `power`.
pub(crate) async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    power: Power,
) -> Result<String, ApiError> {
    let token = bearer(headers, Realm::Admin)?;
    let config = state.config();
    let validation = shared::Validation::new(config.issuer_url.clone(), config.admin_audience());
    let verified = shared::Validator::new(validation)
        .verify(token, &state.keys().jwks, state.clock.now())
        .map_err(|_| ApiError::InvalidToken(Realm::Admin))?;
    if !clients::token_is_live(&state.db, &verified)
        .await
        .map_err(client_error)?
    {
        return Err(ApiError::InvalidToken(Realm::Admin));
    }
    let claims = verified.claims();
    // The admin API takes bearer tokens only: a DPoP-bound one presented as `Bearer` is a
    // copy without its key (RFC 9449 §7.2), never an admin's credential.
    if claims.cnf.is_some() {
        return Err(ApiError::InvalidToken(Realm::Admin));
    }
    if !claims.scope.contains(power.scope()) {
        return Err(ApiError::InsufficientScope(power.scope()));
    }
    Ok(claims.client_id.clone())
}

/// The bearer token of a request to an endpoint of `realm` (RFC 6750 §2.1): none is
/// `NoToken`, a malformed one or several `InvalidToken`.
pub(crate) fn bearer(headers: &HeaderMap, realm: Realm) -> Result<&str, ApiError> {
    let authorization = headers
        .get(axum::http::header::AUTHORIZATION)
        .map(|value| value.to_str().map_err(|_| ApiError::InvalidToken(realm)))
        .transpose()?;
    match shared::bearer_token(authorization) {
        Ok(token) => Ok(token),
        Err(shared::Rejection::MissingToken) => Err(ApiError::NoToken(realm)),
        Err(_) => Err(ApiError::InvalidToken(realm)),
    }
}

/// The one mapping of a client operation's failure to an API error.
pub(crate) fn client_error(err: ClientError) -> ApiError {
    match err {
        ClientError::NotFound(_) => ApiError::NotFound,
        ClientError::Invalid(reason) => ApiError::InvalidInput(reason),
        ClientError::Db(err) => err.into(),
    }
}

/// The one mapping of a key operation's failure to an API error.
fn key_error(err: KeyError) -> ApiError {
    match err {
        KeyError::NotFound { .. } => ApiError::NotFound,
        KeyError::Db(err) => err.into(),
        other => ApiError::Internal(other.to_string()),
    }
}

pub(crate) fn change<'a>(state: &AppState, actor: &'a str) -> clients::Change<'a> {
    clients::Change {
        actor,
        now: state.clock.unix_secs(),
        token_lifetime_secs: state.config().token_lifetime_secs,
    }
}

async fn list_clients(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Power::Clients).await?;
    let all = clients::list(&state.db).await.map_err(client_error)?;
    Ok(Json(all).into_response())
}

/// `POST /admin/clients`: the same fields as `issuer client create`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateClient {
    name: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    audiences: Vec<String>,
    /// A rate plan, e.g. `1000/60s;burst=100`.
    rate_plan: Option<String>,
    /// Public keys (a JWKS object) for `private_key_jwt`.
    jwks: Option<serde_json::Value>,
    #[serde(default)]
    resource_server: bool,
    /// Tokens only with a DPoP proof (RFC 9449 §5.2's `dpop_bound_access_tokens`).
    #[serde(default)]
    require_dpop: bool,
}

async fn create_client(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<CreateClient>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let actor = authorize(&state, &headers, Power::Clients).await?;
    let Json(body) = body.map_err(|err| ApiError::InvalidInput(err.body_text()))?;
    let audiences = if body.audiences.is_empty() {
        vec!["edgeward-api".to_owned()]
    } else {
        body.audiences
    };
    // An admin client is made on a shell (`client create --admin`), not by another admin.
    if audiences.contains(&state.config().admin_audience()) {
        return Err(ApiError::InvalidInput(
            "admin clients are created with `issuer client create --admin`".into(),
        ));
    }
    let new = NewClient {
        name: body.name,
        scopes: body.scope,
        audiences,
        rate_plan: body.rate_plan,
        jwks: body.jwks.map(|jwks| jwks.to_string()),
        resource_server: body.resource_server,
        require_dpop: body.require_dpop,
    };
    let created = clients::create(&state.db, new, &actor, state.clock.unix_secs())
        .await
        .map_err(client_error)?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

async fn show_client(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Power::Clients).await?;
    let client = clients::show(&state.db, &id).await.map_err(client_error)?;
    Ok(Json(client).into_response())
}

async fn disable_client(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    set_enabled(state, headers, id, false).await
}

async fn enable_client(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    set_enabled(state, headers, id, true).await
}

async fn set_enabled(
    state: AppState,
    headers: HeaderMap,
    id: String,
    enabled: bool,
) -> Result<Response, ApiError> {
    let actor = authorize(&state, &headers, Power::Clients).await?;
    clients::set_enabled(&state.db, &id, enabled, &change(&state, &actor))
        .await
        .map_err(client_error)?;
    let client = clients::show(&state.db, &id).await.map_err(client_error)?;
    Ok(Json(client).into_response())
}

/// `POST /admin/clients/{id}/require-dpop`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequireDpop {
    /// Tokens only with a DPoP proof (true), or bearer tokens again (false).
    required: bool,
}

async fn require_dpop(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<RequireDpop>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let actor = authorize(&state, &headers, Power::Clients).await?;
    let Json(body) = body.map_err(|err| ApiError::InvalidInput(err.body_text()))?;
    clients::set_require_dpop(&state.db, &id, body.required, &change(&state, &actor))
        .await
        .map_err(client_error)?;
    let client = clients::show(&state.db, &id).await.map_err(client_error)?;
    Ok(Json(client).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateSecret {
    /// Also revoke every token issued so far (the old secret leaked).
    #[serde(default)]
    revoke_tokens: bool,
}

/// The body is optional (none: keep the tokens), but one that is there is read as JSON
/// whatever its `Content-Type`: taking a `{"revoke_tokens": true}` sent without one as no
/// body would rotate the secret and silently leave a leaked secret's tokens alive.
async fn rotate_secret(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let actor = authorize(&state, &headers, Power::Clients).await?;
    let body: RotateSecret = if body.iter().all(u8::is_ascii_whitespace) {
        RotateSecret::default()
    } else {
        serde_json::from_slice(&body).map_err(|err| ApiError::InvalidInput(err.to_string()))?
    };
    let revoke_tokens = body.revoke_tokens;
    let secret = clients::rotate_secret(&state.db, &id, revoke_tokens, &change(&state, &actor))
        .await
        .map_err(client_error)?;
    let answer = serde_json::json!({
        "client_id": id,
        "client_secret": secret,
        "tokens_revoked": revoke_tokens,
    });
    Ok(Json(answer).into_response())
}

async fn list_keys(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Power::Keys).await?;
    let all = keys::list(&state.db).await.map_err(key_error)?;
    Ok(Json(all).into_response())
}

async fn rotate_key(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let actor = authorize(&state, &headers, Power::Keys).await?;
    let event = keys::rotate(
        &state.db,
        &state.kek,
        &state.config(),
        &actor,
        state.clock.unix_secs(),
    )
    .await
    .map_err(key_error)?;
    Ok(applied(&state, &event).await)
}

async fn revoke_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(kid): Path<String>,
) -> Result<Response, ApiError> {
    let actor = authorize(&state, &headers, Power::Keys).await?;
    let event = keys::revoke(
        &state.db,
        &state.kek,
        &state.config(),
        &kid,
        &actor,
        state.clock.unix_secs(),
    )
    .await
    .map_err(key_error)?;
    Ok(applied(&state, &event).await)
}

/// The answer to a key change, once this instance serves the new keys (the others do on
/// their next maintenance; a failed reload is logged and left to it, as the change stands).
async fn applied(state: &AppState, event: &KeyEvent) -> Response {
    crate::reload_keys(state).await;
    let body = serde_json::json!({ "event": event.action(), "kid": event.kid(), "detail": event.detail() });
    Json(body).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    #[serde(default)]
    after: i64,
}

/// Up to a page of audit rows after `after`, as stored (MACs included).
async fn read_audit(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Power::Audit).await?;
    let Query(query) = query.map_err(|err| ApiError::InvalidInput(err.body_text()))?;
    let rows = crate::audit::rows_after(state.db.pool(), query.after).await?;
    Ok(Json(rows).into_response())
}

async fn verify_audit(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Power::Audit).await?;
    match state.db.verify_audit().await {
        Ok(intact) => {
            Ok(Json(serde_json::json!({ "intact": true, "chain": intact })).into_response())
        }
        Err(crate::audit::AuditError::Query(err)) => Err(err.into()),
        Err(broken) => Err(ApiError::AuditBroken(broken.to_string())),
    }
}
