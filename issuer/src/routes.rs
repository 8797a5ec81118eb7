//! HTTP routes, one module per concern, merged into one router.

mod client_auth;
mod discovery;
mod health;
mod revocation;
mod token;

use axum::Router;

use crate::state::AppState;

/// Every route.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .merge(token::router())
        .merge(discovery::router())
        .merge(health::router())
        .merge(revocation::router())
}
