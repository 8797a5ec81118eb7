//! Edgeward's OAuth 2 authorization server: it authenticates clients, signs short-lived ES256
//! access tokens (RFC 9068), publishes its JWKS, and rotates its keys.
//!
//! [`app`] builds the router from an [`AppState`] so tests drive it without a socket;
//! [`open`] does everything start-up needs (database, migrations, key-encryption key, first
//! key); [`serve`] runs the server until shutdown; [`maintain_keys`] is the background task
//! that applies the key schedule under a database lease and reloads the published keys.

pub mod audit;
pub mod clients;
pub mod clock;
pub mod config;
pub mod db;
pub mod dpop;
pub mod error;
pub mod feed_tokens;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod revocations;
mod routes;
pub mod state;

use std::future::Future;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tower_http::LatencyUnit;

pub use config::Config;
pub use routes::admin::Power;
pub use state::AppState;

use crate::db::{unix_now, Db};
use crate::error::ApiError;
use crate::keys::{Kek, KekSource, SigningKeys};

/// How often each instance applies the key schedule and reloads keys from the database.
pub const KEY_REFRESH: Duration = Duration::from_secs(5);

/// Why the issuer could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Configuration.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// Database.
    #[error(transparent)]
    Db(#[from] db::DbError),
    /// Keys.
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
    /// Redis refused the limits script (`limits_backend = "redis"`).
    #[error(transparent)]
    Redis(#[from] limits::RedisRefused),
    /// TLS could not be set up or served.
    #[error("tls: {0}")]
    Tls(String),
    /// Binding the listener.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Opens the database (migrating it), loads the key-encryption key, applies the key
/// schedule once (creating the first key on a new database) and loads the signing keys.
///
/// # Errors
/// [`StartError`].
pub async fn open(config: Config) -> Result<AppState, StartError> {
    config.validate()?;
    // Before anything is written: a bad token setting stops the start with nothing changed.
    let feed_tokens = feed_tokens::FeedTokens::for_config(&config)?;
    let db = Db::connect(&config).await?;
    db.migrate().await?;
    let (kek, source) = Kek::load(&config)?;
    if source == KekSource::Development {
        tracing::warn!(
            path = %config.data_dir.join("dev-kek").display(),
            "USING A DEVELOPMENT KEY-ENCRYPTION KEY stored next to the data: set ISSUER_KEK or kek_file in production"
        );
    }
    let now = unix_now();
    if db.read_only().await? {
        // A region on a replica: it issues tokens with the keys the primary's regions
        // scheduled; key changes, revocations and private_key_jwt replay records need the
        // primary (those requests get 503 here).
        tracing::warn!("read-only database: serving tokens; key schedule, revocation and private_key_jwt need the primary");
    } else {
        for event in keys::advance(&db, &kek, &config, now).await? {
            tracing::info!(event = %event, kind = event.kind(), "signing key lifecycle");
        }
    }
    let signing = SigningKeys::load(&db, &kek).await?;
    let mut state = AppState::new(config, db, kek, signing);
    state.feed_tokens = std::sync::Arc::new(feed_tokens);
    // A Redis that answers, but not as the limits need, stops the start here rather than
    // send every decision to memory; one that does not answer now does not.
    match state.limits.probe_redis(db::precise_now()).await? {
        limits::RedisProbe::Unreachable(why) => tracing::warn!(
            reason = %why,
            "redis limits unavailable at start: decisions fall back to this instance's memory until Redis answers"
        ),
        limits::RedisProbe::NotUsed | limits::RedisProbe::Ready => {}
    }
    Ok(state)
}

/// The HTTP application.
pub fn app(state: AppState) -> Router {
    let timeout = Duration::from_secs(state.config().request_timeout_secs);
    let body_limit = state.config().max_body_bytes;
    routes::router(state.config().metrics_listen.is_none())
        .fallback(|| async { ApiError::NotFound.into_response() })
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(TimeoutLayer::with_status_code(http::StatusCode::REQUEST_TIMEOUT, timeout))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            // One JSON line per request (method, path, request id, status, latency).
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    let id = request
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
                })
                .on_request(())
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO).latency_unit(LatencyUnit::Micros)),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// `/metrics` alone, for the private `metrics_listen` address (404 for anything else).
pub fn metrics_app(state: AppState) -> Router {
    routes::metrics_router()
        .fallback(|| async { ApiError::NotFound.into_response() })
        .with_state(state)
}

/// Serves [`metrics_app`] on `listener` until `shutdown` resolves.
///
/// # Errors
/// The server's I/O error.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, metrics_app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Records request latency by matched route.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    state
        .metrics
        .latency
        .get_or_create(&metrics::RouteLabels { route })
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The background work of a serving instance, forever: the key schedule, the audit trail's
/// periodic check, and forgetting used DPoP proofs.
pub async fn maintain(state: AppState) {
    tokio::join!(
        maintain_keys(state.clone()),
        watch_audit(state.clone()),
        prune_dpop_proofs(state)
    );
}

/// How often used DPoP proofs past their window are forgotten. Rows only need to go
/// eventually: a stale row never refuses a fresh proof (`dpop::accept_token_request`).
const DPOP_PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Forgets used DPoP proofs whose window has passed, forever (not on a read-only replica).
pub async fn prune_dpop_proofs(state: AppState) {
    let mut ticker = tokio::time::interval(DPOP_PRUNE_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if matches!(state.db.read_only().await, Ok(true)) {
            continue;
        }
        if let Err(err) = dpop::prune(&state.db, state.clock.unix_secs()).await {
            tracing::warn!(error = %err, "cannot prune used DPoP proofs");
        }
    }
}

/// Checks the whole audit chain every `audit_verify_interval_secs` (0: never), from start:
/// `issuer_audit_chain_intact` is 1 while it holds and 0 from the first check that finds a
/// broken row (alert `IssuerAuditChainBroken`); the row is logged.
pub async fn watch_audit(state: AppState) {
    loop {
        let every = state.config().audit_verify_interval_secs;
        if every > 0 {
            match state.db.verify_audit().await {
                Ok(intact) => {
                    state.metrics.audit_chain_intact.set(1);
                    state
                        .metrics
                        .audit_chain_rows
                        .set(i64::try_from(intact.chained).unwrap_or(i64::MAX));
                }
                Err(audit::AuditError::Query(err)) => {
                    tracing::warn!(error = %err, "audit chain not checked: the database did not answer");
                }
                Err(broken) => {
                    state.metrics.audit_chain_intact.set(0);
                    tracing::error!(error = %broken, "the audit trail does not hold");
                }
            }
        }
        // Read again each time: a reload may change it (10 s while it is off).
        let wait = if every > 0 { every } else { 10 };
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
}

/// Applies the key schedule (under the `key-rotation` lease) and reloads the keys, forever.
pub async fn maintain_keys(state: AppState) {
    let holder = format!("{}-{}", std::process::id(), unix_now());
    let mut ticker = tokio::time::interval(KEY_REFRESH);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        refresh_keys(&state, &holder).await;
    }
}

/// One maintenance step: schedule if this instance holds the lease, then reload.
pub async fn refresh_keys(state: &AppState, holder: &str) {
    let now = unix_now();
    // A replica cannot take the lease or write the schedule: it only reloads (it learns of
    // a promotion on the next tick).
    if matches!(state.db.read_only().await, Ok(true)) {
        reload_keys(state).await;
        return;
    }
    let lease_secs = i64::try_from(KEY_REFRESH.as_secs() * 3).unwrap_or(15);
    match state
        .db
        .try_lease(keys::SCHEDULE_LEASE, holder, now, lease_secs)
        .await
    {
        // The step wrote its own audit rows, in its transaction. Bounded, so the reload below
        // always runs (a step stuck on a dead connection is rolled back when dropped).
        Ok(true) => match tokio::time::timeout(
            KEY_REFRESH,
            keys::advance(&state.db, &state.kek, &state.config(), now),
        )
        .await
        .unwrap_or_else(|_| Err(keys::KeyError::TimedOut))
        {
            Ok(events) => {
                for event in events {
                    tracing::info!(event = %event, kind = event.kind(), "signing key lifecycle");
                    state
                        .metrics
                        .key_events
                        .get_or_create(&metrics::KeyEventLabels {
                            kind: event.kind().to_owned(),
                        })
                        .inc();
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "key rotation failed");
                state
                    .metrics
                    .key_events
                    .get_or_create(&metrics::KeyEventLabels {
                        kind: "failed".into(),
                    })
                    .inc();
            }
        },
        Ok(false) => {}
        Err(err) => tracing::warn!(error = %err, "cannot take the key-rotation lease"),
    }
    reload_keys(state).await;
}

pub(crate) async fn reload_keys(state: &AppState) {
    match SigningKeys::load(&state.db, &state.kek).await {
        Ok(keys) => state.set_keys(keys),
        Err(err) => {
            tracing::warn!(error = %err, "cannot reload signing keys; keeping the current ones");
            stop_signing_unless_active(state).await;
        }
    }
}

/// The keys could not be read (a KEK that cannot open a key made since, a bad row), so the
/// key this instance signs with may have been revoked, retired or removed meanwhile: its
/// state, read without decrypting anything, says whether it may still sign. If not, the
/// instance stops signing (token requests 503, `/readyz` false): a revoked key's tokens are
/// refused at every edge, and a retired key's would outlive its publication.
async fn stop_signing_unless_active(state: &AppState) {
    let current = state.keys();
    let Some(active) = &current.active else {
        return;
    };
    let kid = active.kid();
    let listed = match keys::list(&state.db).await {
        Ok(listed) => listed,
        // The database is away: `/readyz` says so, and the token endpoint cannot work.
        Err(err) => return tracing::warn!(error = %err, "cannot read the signing key's state"),
    };
    let state_now = listed
        .iter()
        .find(|key| key.kid == kid)
        .map(|key| key.state);
    if state_now != Some(keys::KeyState::Active) {
        tracing::error!(
            kid = %kid,
            state = ?state_now,
            "the signing key is no longer active and the keys cannot be reloaded: this instance stops signing"
        );
        state.set_keys(current.without_signer());
    }
}

/// Serves HTTPS (rustls, ring provider) on `addr` with the configured certificate until
/// `shutdown` resolves, then drains in-flight requests for up to 30 s.
///
/// # Errors
/// [`StartError::Tls`] for an unreadable certificate or key, or the server's I/O error.
pub async fn serve_tls(
    listener: std::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let (Some(cert), Some(key)) = (&state.config().tls_cert_file, &state.config().tls_key_file)
    else {
        return Err(StartError::Tls(
            "tls_cert_file and tls_key_file are required".into(),
        ));
    };
    // Several crates may link rustls providers; choose ring explicitly (ignore "already set").
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
        .await
        .map_err(|err| StartError::Tls(err.to_string()))?;
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.graceful_shutdown(Some(Duration::from_secs(30)));
    });
    let maintenance = tokio::spawn(maintain(state.clone()));
    let result = axum_server::from_tcp_rustls(listener, tls)
        .map_err(|err| StartError::Tls(err.to_string()))?
        .handle(handle)
        .serve(app(state).into_make_service_with_connect_info::<std::net::SocketAddr>())
        .await;
    maintenance.abort();
    result.map_err(|err| StartError::Tls(err.to_string()))
}

/// Serves `state` on `listener` until `shutdown` resolves, then drains in-flight requests.
///
/// # Errors
/// The server's I/O error.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let maintenance = tokio::spawn(maintain(state.clone()));
    let result = axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    maintenance.abort();
    result
}
