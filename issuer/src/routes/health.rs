//! `/healthz` (alive), `/readyz` (database reachable and a signing key it may use), and
//! `/metrics`, on the main listener or on `metrics_listen` of its own.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::state::AppState;

/// The health routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
}

/// `/metrics`.
pub(crate) fn metrics_router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

async fn readyz(State(state): State<AppState>) -> Response {
    let database = state.db.ping().await;
    let signing_key = state.keys().active.is_some();
    let ready = database && signing_key;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    // Informational: a read-only region is ready (it issues tokens), and ops see its role.
    let read_only = state.db.read_only().await.ok();
    let body = serde_json::json!({
        "ready": ready, "database": database, "signing_key": signing_key, "read_only": read_only,
    });
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let metrics = &state.metrics;
    let pool = state.db.pool();
    metrics.db_connections.set(i64::from(pool.size()));
    metrics
        .db_max
        .set(i64::from(pool.options().get_max_connections()));
    metrics
        .db_idle
        .set(i64::try_from(pool.num_idle()).unwrap_or(i64::MAX));
    if let Some(since) = state.keys().active_since {
        metrics.key_age.set(state.clock.unix_secs() - since);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    )
        .into_response()
}
