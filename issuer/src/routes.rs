//! HTTP routes, one module per concern, merged into one router.

pub(crate) mod admin;
mod client_auth;
mod discovery;
mod health;
mod registration;
mod revocation;
mod token;

use axum::Router;

use crate::state::AppState;

/// Every route; `/metrics` too unless it has a listener of its own.
pub(crate) fn router(with_metrics: bool) -> Router<AppState> {
    let router = Router::new()
        .merge(token::router())
        .merge(discovery::router())
        .merge(health::router())
        .merge(revocation::router())
        .merge(admin::router())
        .merge(registration::router());
    if with_metrics {
        router.merge(health::metrics_router())
    } else {
        router
    }
}

/// `/metrics` alone, for `metrics_listen`.
pub(crate) fn metrics_router() -> Router<AppState> {
    health::metrics_router()
}
