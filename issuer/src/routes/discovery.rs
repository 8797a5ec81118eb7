//! `GET /.well-known/jwks.json` and `GET /.well-known/oauth-authorization-server` (RFC 8414):
//! cacheable, with a strong `ETag` and `304 Not Modified` for `If-None-Match`.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

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
        &keys.etag,
        "application/jwk-set+json",
        keys.jwks_json.clone(),
    )
}

async fn metadata(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let issuer = &state.config.issuer_url;
    let document = serde_json::json!({
        "issuer": issuer,
        "token_endpoint": format!("{issuer}/oauth2/token"),
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "response_types_supported": [],
    })
    .to_string();
    let digest = <sha2::Sha256 as sha2::Digest>::digest(document.as_bytes());
    let etag = format!("\"{}\"", hex::encode(&digest[..12]));
    cacheable(&state, &headers, &etag, "application/json", document)
}

fn cacheable(
    state: &AppState,
    request: &HeaderMap,
    etag: &str,
    content_type: &'static str,
    body: String,
) -> Response {
    let cache_control = format!("public, max-age={}", state.config.jwks_max_age_secs);
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
