//! The demo resource API: what an origin behind the Edgeward edge looks like. Every route but
//! `/healthz` and `/readyz` sits behind `shared::origin::EdgeAuthLayer`, which admits a request only with a
//! valid edge assertion (HMAC, fresh, for this origin and request line) and hands the handler the
//! verified identity; the handler echoes it as JSON.
//!
//! `/metrics` (OpenMetrics) counts answers by status, so refusals by the edge layer show.
//!
//! Settings (environment): `DEMO_ORIGIN_LISTEN` (default `127.0.0.1:9090`), `ORIGIN_HOST`
//! (this origin's name as the edge's `ORIGIN_URL` gives it: assertions must name it; without
//! it the request's `Host` header, which the sender chooses, stands in),
//! `ASSERTION_KEY_ID` and `ASSERTION_SECRET` (the edge's key; at least 32 bytes), during a
//! key rotation `ASSERTION_PREVIOUS_KEY_ID` and `ASSERTION_PREVIOUS_SECRET` (still accepted),
//! and `ADMIN_SCOPES` (default `admin`): what `/admin` and below require of the identity,
//! checked here too, whatever the edge's route table says (`RequireScopesLayer`; 403
//! `insufficient_scope` otherwise).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use shared::origin::{EdgeAuthLayer, RequireScopesLayer};
use shared::{AssertionKey, AssertionVerifier, EdgeIdentity, ScopeRequirement, Scopes};

/// Assertions older than this are refused (the edge signs each request as it forwards it).
const MAX_ASSERTION_AGE_MS: u64 = shared::assertion::DEFAULT_MAX_AGE_MS;

/// Why the demo origin could not start.
#[derive(Debug)]
struct StartError(String);

fn setting(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

fn key(id_var: &str, secret_var: &str) -> Result<Option<AssertionKey>, StartError> {
    match (setting(id_var), setting(secret_var)) {
        (Some(id), Some(secret)) => AssertionKey::new(&id, secret.as_bytes())
            .map(Some)
            .map_err(|err| StartError(format!("{secret_var}: {err}"))),
        (None, None) => Ok(None),
        _ => Err(StartError(format!(
            "set both {id_var} and {secret_var}, or neither"
        ))),
    }
}

/// Labels of `demo_origin_responses`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: u16,
}

/// The metrics registry and the one counter.
struct Metrics {
    registry: Registry,
    responses: Family<StatusLabels, Counter>,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("demo_origin");
        let responses = Family::<StatusLabels, Counter>::default();
        registry.register("responses", "Answers by HTTP status", responses.clone());
        Self {
            registry,
            responses,
        }
    }
}

/// The routes: `/healthz`, `/readyz` and `/metrics` open, everything else behind the edge
/// layer, and `/admin` and below also needing `admin_scopes`; every answer counted by status.
fn app(verifier: AssertionVerifier, admin_scopes: Scopes) -> Router {
    let metrics = Arc::new(Metrics::new());
    let admin = Router::new()
        .route("/admin", any(echo))
        .route("/admin/{*rest}", any(echo))
        .route_layer(RequireScopesLayer::new(ScopeRequirement::new(
            admin_scopes,
            Scopes::default(),
        )));
    let protected = Router::new()
        .merge(admin)
        .fallback(echo)
        .layer(EdgeAuthLayer::new(verifier));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/metrics", get(render))
        .merge(protected)
        .layer(axum::middleware::from_fn_with_state(metrics.clone(), count))
        .with_state(metrics)
}

async fn count(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    metrics
        .responses
        .get_or_create(&StatusLabels {
            status: response.status().as_u16(),
        })
        .inc();
    response
}

async fn render(State(metrics): State<Arc<Metrics>>) -> Response {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &metrics.registry).is_err() {
        return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Echoes what the edge vouched for, plus the request line and the client's own `x-` headers
/// (the edge's assertion header is left out).
async fn echo(
    identity: EdgeIdentity,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Json<serde_json::Value> {
    let forwarded: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .filter(|(name, _)| {
            name.as_str().starts_with("x-")
                && !name.as_str().starts_with(shared::assertion::HEADER_PREFIX)
        })
        .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.into())))
        .collect();
    tracing::info!(sub = %identity.sub, client_id = %identity.client_id, path = %uri.path(), "served");
    Json(serde_json::json!({
        "message": "hello from the demo origin",
        "identity": {
            "sub": identity.sub,
            "client_id": identity.client_id,
            "scope": identity.scope.to_string(),
        },
        "request": { "method": method.as_str(), "path": uri.path(), "query": uri.query() },
        "headers": forwarded,
    }))
}

async fn run() -> Result<(), StartError> {
    let listen: SocketAddr = setting("DEMO_ORIGIN_LISTEN")
        .unwrap_or_else(|| "127.0.0.1:9090".into())
        .parse()
        .map_err(|err| StartError(format!("DEMO_ORIGIN_LISTEN: {err}")))?;
    let mut keys: Vec<AssertionKey> = key("ASSERTION_KEY_ID", "ASSERTION_SECRET")?
        .into_iter()
        .collect();
    if keys.is_empty() {
        return Err(StartError(
            "ASSERTION_KEY_ID and ASSERTION_SECRET are required".into(),
        ));
    }
    let previous = key("ASSERTION_PREVIOUS_KEY_ID", "ASSERTION_PREVIOUS_SECRET")?;
    if previous
        .as_ref()
        .is_some_and(|previous| keys.iter().any(|key| key.id() == previous.id()))
    {
        return Err(StartError(
            "ASSERTION_PREVIOUS_KEY_ID must differ from ASSERTION_KEY_ID".into(),
        ));
    }
    keys.extend(previous);
    let admin_scopes = setting("ADMIN_SCOPES").unwrap_or_else(|| "admin".into());
    let admin_scopes = Scopes::parse(&admin_scopes)
        .filter(|scopes| !scopes.is_empty())
        .ok_or_else(|| {
            StartError(format!(
                "ADMIN_SCOPES: `{admin_scopes}` is not a scope list"
            ))
        })?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|err| StartError(format!("cannot listen on {listen}: {err}")))?;
    tracing::info!(addr = %listen, keys = keys.len(), "demo origin listening");
    let verifier = AssertionVerifier::new(keys, MAX_ASSERTION_AGE_MS);
    let verifier = match setting("ORIGIN_HOST") {
        Some(host) => verifier.for_host(&host),
        None => {
            // The Host header then stands in, and the sender chooses it (docs/origins.md).
            tracing::warn!("ORIGIN_HOST is not set: set it to this origin's name");
            verifier
        }
    };
    axum::serve(listener, app(verifier, admin_scopes))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|err| StartError(format!("serve: {err}")))
}

/// Ctrl-C or SIGTERM: stop accepting, finish what is in flight.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt().json().with_target(false).init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(StartError(message)) => {
            tracing::error!("{message}");
            eprintln!("demo-origin: {message}");
            ExitCode::FAILURE
        }
    }
}
