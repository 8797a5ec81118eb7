//! `GET /.well-known/jwks.json` and `GET /.well-known/oauth-authorization-server` (RFC 8414):
//! cacheable, with a strong `ETag` and `304 Not Modified` for `If-None-Match`.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64ct::Encoding as _;

use crate::state::AppState;

/// The routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/oauth-authorization-server", get(metadata))
}

async fn jwks(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let keys = state.keys();
    cacheable(
        &state,
        &headers,
        "application/jwk-set+json",
        keys.jwks_json.clone(),
    )
}

async fn metadata(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let issuer = &state.config().issuer_url;
    let document = serde_json::json!({
        "issuer": issuer,
        "token_endpoint": state.config().token_endpoint(),
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "revocation_endpoint": format!("{issuer}/oauth2/revoke"),
        "introspection_endpoint": format!("{issuer}/oauth2/introspect"),
        "registration_endpoint": format!("{issuer}/oauth2/register"),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256"],
        "response_types_supported": [],
        "dpop_signing_alg_values_supported": shared::dpop::PROOF_ALGS,
    })
    .to_string();
    cacheable(&state, &headers, "application/json", document)
}

/// A strong validator for `body`: the first 128 bits of its SHA-256, base64url.
fn strong_etag(body: &str) -> String {
    let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(body.as_bytes()).into();
    let (prefix, _) = digest.split_at(16);
    format!("\"{}\"", base64ct::Base64UrlUnpadded::encode_string(prefix))
}

/// `body` with `ETag` and `Cache-Control`, or `304` when `If-None-Match` already names it.
fn cacheable(
    state: &AppState,
    request: &HeaderMap,
    content_type: &'static str,
    body: String,
) -> Response {
    let etag = strong_etag(&body);
    let etag = etag.as_str();
    let cache_control = format!("public, max-age={}", state.config().jwks_max_age_secs);
    let matches = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/") == etag
        });
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, content_type)], body).into_response()
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, value);
    }
    if let Ok(value) = HeaderValue::from_str(&cache_control) {
        headers.insert(header::CACHE_CONTROL, value);
    }
    response
}
