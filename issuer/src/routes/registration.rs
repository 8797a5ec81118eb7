//! Dynamic client registration: RFC 7591 to register, RFC 7592 for a client to read, change
//! and delete its own registration.
//!
//! - `POST /oauth2/register` takes an initial access token: an admin token with the
//!   `admin:clients` power (what `POST /admin/clients` takes), so registration is open to
//!   automation ops trust, never to anyone. The client gets its id, its secret and a
//!   registration access token, each shown once.
//! - `GET`, `PUT` and `DELETE /oauth2/register/{client_id}` take that registration access
//!   token. Only hashes are stored, and every RFC 7592 answer carries a token: so each `GET`
//!   and `PUT` issues a new one and the old one stops working. `DELETE` disables the client
//!   and revokes every token it holds, as `issuer client disable` does.
//!
//! This issuer grants client credentials only: a registration names no redirect URIs and no
//! grant but `client_credentials`, and no admin power (`admin:…` scopes are for clients ops
//! make on a shell). A client may rename itself, narrow its scope (never widen it: ops
//! granted it) and, with its current secret, change its keys; its audiences and rate plan
//! are ops' to set (`issuer client`, the admin API). Metadata this
//! issuer does not know is ignored (RFC 7591 §2). Every change writes the same audit rows as
//! the CLI, with the admin client (registration) or the client itself (management) as actor.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::admin::{authorize, bearer, change, client_error, Power};
use crate::clients::{self, Client, NewClient, SelfService};
use crate::error::{ApiError, Realm};
use crate::state::AppState;

/// The routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/oauth2/register", post(register))
        .route(
            "/oauth2/register/{client_id}",
            axum::routing::get(read).put(update).delete(deregister),
        )
}

/// The audience a registered client's tokens get (as `POST /admin/clients` without one).
const DEFAULT_AUDIENCE: &str = "edgeward-api";

/// The client metadata this issuer reads (RFC 7591 §2, RFC 7592 §2.2); the rest is ignored.
#[derive(Debug, Default, Deserialize)]
struct Metadata {
    client_name: Option<String>,
    scope: Option<String>,
    grant_types: Option<Vec<String>>,
    response_types: Option<Vec<String>>,
    redirect_uris: Option<Vec<String>>,
    token_endpoint_auth_method: Option<String>,
    jwks: Option<Value>,
    jwks_uri: Option<String>,
    /// RFC 9449 §5.2: tokens only with a DPoP proof. Set at registration; an update keeps it.
    dpop_bound_access_tokens: Option<bool>,
    // RFC 7592 §2.2: an update names the client, may repeat its secret, and must not send
    // what only the server sets.
    client_id: Option<String>,
    client_secret: Option<String>,
    registration_access_token: Option<Value>,
    registration_client_uri: Option<Value>,
    client_id_issued_at: Option<Value>,
    client_secret_expires_at: Option<Value>,
}

/// The metadata of a registration this issuer can honour.
struct Checked {
    name: String,
    scopes: String,
    jwks: Option<String>,
    auth_method: &'static str,
    /// `dpop_bound_access_tokens` as sent (absent: not said).
    require_dpop: Option<bool>,
}

/// The one checker of registration metadata: what this issuer can honour, or why not.
fn check(metadata: Metadata) -> Result<Checked, ApiError> {
    let invalid = |reason: &str| Err(ApiError::InvalidClientMetadata(reason.to_owned()));
    if metadata.redirect_uris.is_some_and(|uris| !uris.is_empty()) {
        return Err(ApiError::InvalidRedirectUri);
    }
    if metadata
        .grant_types
        .is_some_and(|grants| grants.iter().any(|grant| grant != "client_credentials"))
    {
        return invalid("grant_types: this issuer grants client_credentials only");
    }
    if metadata
        .response_types
        .is_some_and(|types| !types.is_empty())
    {
        return invalid("response_types: a client-credentials client has none");
    }
    if metadata.jwks_uri.is_some() {
        return invalid("jwks_uri is not supported: send the keys as jwks");
    }
    let auth_method = match metadata.token_endpoint_auth_method.as_deref() {
        None if metadata.jwks.is_some() => "private_key_jwt",
        None | Some("client_secret_basic") => "client_secret_basic",
        Some("client_secret_post") => "client_secret_post",
        Some("private_key_jwt") if metadata.jwks.is_some() => "private_key_jwt",
        Some("private_key_jwt") => return invalid("private_key_jwt needs jwks"),
        Some(_) => {
            return invalid(
                "token_endpoint_auth_method: client_secret_basic, client_secret_post or private_key_jwt",
            )
        }
    };
    let scopes = metadata.scope.unwrap_or_default();
    if scopes
        .split(' ')
        .any(|scope| Power::SCOPES.contains(&scope))
    {
        return invalid("scope: admin powers are granted on a shell, not registered");
    }
    let name = metadata
        .client_name
        .unwrap_or_else(|| "registered client".to_owned());
    Ok(Checked {
        name,
        scopes,
        jwks: metadata.jwks.map(|jwks| jwks.to_string()),
        auth_method,
        require_dpop: metadata.dpop_bound_access_tokens,
    })
}

/// A body that is not JSON metadata is `invalid_client_metadata` (one too large, 413), not
/// axum's own answer.
fn metadata(
    body: Result<Json<Metadata>, axum::extract::rejection::JsonRejection>,
) -> Result<Metadata, ApiError> {
    body.map(|Json(metadata)| metadata).map_err(|err| {
        if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge
        } else {
            ApiError::InvalidClientMetadata(err.body_text())
        }
    })
}

/// `ClientError::Invalid` from a registration is the metadata's fault.
fn registration_error(err: clients::ClientError) -> ApiError {
    match err {
        clients::ClientError::Invalid(reason) => ApiError::InvalidClientMetadata(reason),
        other => client_error(other),
    }
}

/// A client's registration as RFC 7591 §3.2.1 and RFC 7592 §3 answer it, with its new
/// registration access token, and its secret when it was just made.
fn information(
    state: &AppState,
    client: &Client,
    auth_method: &str,
    registration_access_token: &str,
    client_secret: Option<&str>,
) -> Value {
    let mut body = serde_json::Map::new();
    let mut put = |name: &str, value: Value| body.insert(name.to_owned(), value);
    put("client_id", json!(client.client_id));
    put("client_id_issued_at", json!(client.created_at));
    if let Some(secret) = client_secret {
        put("client_secret", json!(secret));
        put("client_secret_expires_at", json!(0));
    }
    put("client_name", json!(client.name));
    put("scope", json!(client.scopes.to_string()));
    put("grant_types", json!(["client_credentials"]));
    put("response_types", json!([]));
    put("token_endpoint_auth_method", json!(auth_method));
    put("dpop_bound_access_tokens", json!(client.require_dpop));
    if let Some(jwks) = &client.jwks {
        put(
            "jwks",
            serde_json::from_str(&jwks.to_json()).unwrap_or(Value::Null),
        );
    }
    put(
        "registration_access_token",
        json!(registration_access_token),
    );
    let uri = format!(
        "{}/oauth2/register/{}",
        state.config().issuer_url,
        client.client_id
    );
    put("registration_client_uri", json!(uri));
    Value::Object(body)
}

/// A renewed registration as RFC 7592 §3 answers it.
fn answer(state: &AppState, renewed: &clients::Renewed) -> Value {
    information(
        state,
        &renewed.client,
        &renewed.auth_method,
        &renewed.registration_access_token,
        None,
    )
}

/// RFC 7591 §3.2.1: credentials are never cached.
fn no_store(status: StatusCode, body: Value) -> Response {
    let mut response = (status, Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// `POST /oauth2/register`.
async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<Metadata>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let actor = authorize(&state, &headers, Power::Clients).await?;
    let checked = check(metadata(body)?)?;
    // As `POST /admin/clients`: never a client of the admin API's audience.
    if state.config().admin_audience() == DEFAULT_AUDIENCE {
        return Err(ApiError::InvalidInput(
            "registration is off: admin_audience is the registered clients' audience".into(),
        ));
    }
    let new = NewClient {
        name: checked.name,
        scopes: checked.scopes,
        audiences: vec![DEFAULT_AUDIENCE.to_owned()],
        rate_plan: None,
        jwks: checked.jwks,
        resource_server: false,
        require_dpop: checked.require_dpop.unwrap_or(false),
    };
    let now = state.clock.unix_secs();
    let registered = clients::register(&state.db, new, checked.auth_method, &actor, now)
        .await
        .map_err(registration_error)?;
    let created = &registered.created;
    let body = information(
        &state,
        &created.client,
        checked.auth_method,
        &registered.registration_access_token,
        Some(&created.client_secret),
    );
    Ok(no_store(StatusCode::CREATED, body))
}

/// The registration access token the request carries, once it is `client_id`'s.
async fn registered<'h>(
    state: &AppState,
    headers: &'h HeaderMap,
    client_id: &str,
) -> Result<&'h str, ApiError> {
    let token = bearer(headers, Realm::Registration)?;
    // An unknown client and a wrong token are the same answer: ids are not probed this way.
    if clients::registration_token_matches(&state.db, client_id, token)
        .await
        .map_err(client_error)?
    {
        Ok(token)
    } else {
        Err(ApiError::InvalidToken(Realm::Registration))
    }
}

/// The answer when the client went away between its check and the change: its token no
/// longer stands.
fn gone(err: clients::ClientError) -> ApiError {
    match err {
        clients::ClientError::NotFound(_) => ApiError::InvalidToken(Realm::Registration),
        other => registration_error(other),
    }
}

/// `GET /oauth2/register/{client_id}` (RFC 7592 §2.1).
async fn read(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(client_id): Path<String>,
) -> Result<Response, ApiError> {
    let presented = registered(&state, &headers, &client_id).await?;
    let actor = change(&state, &client_id);
    let renewed = clients::renew_registration(&state.db, &client_id, presented, None, &actor)
        .await
        .map_err(gone)?;
    Ok(no_store(StatusCode::OK, answer(&state, &renewed)))
}

/// `PUT /oauth2/register/{client_id}` (RFC 7592 §2.2): the whole metadata, omitted fields
/// cleared.
async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(client_id): Path<String>,
    body: Result<Json<Metadata>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let presented = registered(&state, &headers, &client_id).await?;
    let metadata = metadata(body)?;
    if metadata.client_id.as_deref() != Some(client_id.as_str()) {
        return Err(ApiError::InvalidClientMetadata(
            "client_id must name the client being updated".into(),
        ));
    }
    if metadata.registration_access_token.is_some()
        || metadata.registration_client_uri.is_some()
        || metadata.client_id_issued_at.is_some()
        || metadata.client_secret_expires_at.is_some()
    {
        return Err(ApiError::InvalidClientMetadata(
            "registration_access_token, registration_client_uri, client_id_issued_at and \
             client_secret_expires_at are the server's to set"
                .into(),
        ));
    }
    let secret_confirmed = match &metadata.client_secret {
        Some(secret) => {
            let current = clients::authenticate(&state.db, &client_id, secret)
                .await
                .map_err(client_error)?;
            if current.is_none() {
                return Err(ApiError::InvalidClientMetadata(
                    "client_secret is not the client's current secret".into(),
                ));
            }
            true
        }
        None => false,
    };
    let checked = check(metadata)?;
    // Whether its tokens are DPoP-bound is set at registration or by ops, not by an update.
    if let Some(asked) = checked.require_dpop {
        let current = clients::show(&state.db, &client_id)
            .await
            .map_err(gone)?
            .require_dpop;
        if asked != current {
            return Err(ApiError::InvalidClientMetadata(
                "dpop_bound_access_tokens is set at registration or by ops, not by an update"
                    .into(),
            ));
        }
    }
    let update = SelfService {
        name: checked.name,
        scopes: checked.scopes,
        jwks: checked.jwks,
        auth_method: checked.auth_method.to_owned(),
        secret_confirmed,
    };
    let renewed = clients::renew_registration(
        &state.db,
        &client_id,
        presented,
        Some(update),
        &change(&state, &client_id),
    )
    .await
    .map_err(gone)?;
    Ok(no_store(StatusCode::OK, answer(&state, &renewed)))
}

/// `DELETE /oauth2/register/{client_id}` (RFC 7592 §2.3).
async fn deregister(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(client_id): Path<String>,
) -> Result<Response, ApiError> {
    let presented = registered(&state, &headers, &client_id).await?;
    clients::deregister(
        &state.db,
        &client_id,
        presented,
        &change(&state, &client_id),
    )
    .await
    .map_err(gone)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(metadata: Value) -> Result<Checked, ApiError> {
        check(
            serde_json::from_value(metadata)
                .map_err(|err| ApiError::InvalidClientMetadata(err.to_string()))?,
        )
    }

    #[test]
    fn only_client_credentials_registrations_are_honoured() {
        assert!(matches!(
            checked(json!({"redirect_uris": ["https://app.example/cb"]})),
            Err(ApiError::InvalidRedirectUri)
        ));
        for refused in [
            json!({"grant_types": ["authorization_code"]}),
            json!({"response_types": ["code"]}),
            json!({"jwks_uri": "https://app.example/jwks"}),
            json!({"token_endpoint_auth_method": "private_key_jwt"}),
            json!({"token_endpoint_auth_method": "none"}),
        ] {
            assert!(
                matches!(
                    checked(refused.clone()),
                    Err(ApiError::InvalidClientMetadata(_))
                ),
                "{refused}"
            );
        }
        let plain = checked(json!({"client_name": "n", "software_id": "ignored"})).unwrap();
        assert_eq!(plain.auth_method, "client_secret_basic");
        let keyed = checked(json!({"jwks": {"keys": []}})).unwrap();
        assert_eq!(keyed.auth_method, "private_key_jwt");
        let posted = checked(json!({
            "grant_types": ["client_credentials"],
            "redirect_uris": [],
            "token_endpoint_auth_method": "client_secret_post",
        }))
        .unwrap();
        assert_eq!(posted.auth_method, "client_secret_post");
    }
}
