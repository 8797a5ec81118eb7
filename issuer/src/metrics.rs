//! Prometheus metrics (`/metrics`, OpenMetrics text).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of `tokens_issued`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    /// The client, or `unknown` when authentication failed.
    pub client_id: String,
    /// `issued` or the OAuth error code.
    pub outcome: String,
}

/// Labels of the request histogram.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The matched route.
    pub route: String,
}

/// Labels of `key_events`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyEventLabels {
    /// `activated`, `created`, `removed`, `scheduled`, `revoked` or `failed`.
    pub kind: String,
}

/// Every metric the issuer exports.
/// Labels of `issuer_config_reloads_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `applied` (some or no setting changed; refused ones are logged) or `invalid` (the
    /// file did not load or validate: nothing changed).
    pub outcome: String,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Token requests by client and outcome.
    pub tokens: Family<TokenLabels, Counter>,
    /// Request latency by route, in seconds.
    pub latency: Family<RouteLabels, Histogram>,
    /// Age of the active signing key, in seconds.
    pub key_age: Gauge,
    /// Key lifecycle events.
    pub key_events: Family<KeyEventLabels, Counter>,
    /// Open database connections.
    pub db_connections: Gauge,
    /// Idle database connections.
    pub db_idle: Gauge,
    /// The most connections the pool opens (`database_max_connections`, at most 8 on
    /// SQLite): alerts judge the busy ones against it, whatever each environment sets.
    pub db_max: Gauge,
    /// Limit decisions made from this instance's memory because Redis did not answer.
    pub limits_redis_fallbacks: Counter,
    /// Token-endpoint limit decisions made from a lease of permits Redis charged ahead.
    pub limits_redis_leased: Counter,
    /// Configuration reloads (`SIGHUP`) by outcome.
    pub config_reloads: Family<ReloadLabels, Counter>,
    /// 1 while the last check of the audit chain found it whole, 0 once one found a broken
    /// row (`lib::watch_audit`).
    pub audit_chain_intact: Gauge,
    /// Rows in the audit chain at its last check.
    pub audit_chain_rows: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("issuer");
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "tokens",
            "Token requests by client and outcome",
            tokens.clone(),
        );
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 16))
        });
        registry.register(
            "request_duration_seconds",
            "Request latency by route",
            latency.clone(),
        );
        let key_age = Gauge::default();
        registry.register(
            "active_key_age_seconds",
            "Age of the active signing key",
            key_age.clone(),
        );
        let key_events = Family::<KeyEventLabels, Counter>::default();
        registry.register(
            "key_events",
            "Signing key lifecycle events",
            key_events.clone(),
        );
        let db_connections = Gauge::default();
        registry.register(
            "db_connections",
            "Open database connections",
            db_connections.clone(),
        );
        let db_idle = Gauge::default();
        registry.register(
            "db_idle_connections",
            "Idle database connections",
            db_idle.clone(),
        );
        let db_max = Gauge::default();
        registry.register(
            "db_max_connections",
            "The most database connections the pool opens (database_max_connections; at most 8 on SQLite)",
            db_max.clone(),
        );
        let limits_redis_fallbacks = Counter::default();
        registry.register(
            "limits_redis_fallbacks",
            "Token-endpoint limit decisions made from this instance's memory because Redis did not answer",
            limits_redis_fallbacks.clone(),
        );
        let limits_redis_leased = Counter::default();
        registry.register(
            "limits_redis_leased",
            "Token-endpoint limit decisions made from a lease of permits Redis charged ahead",
            limits_redis_leased.clone(),
        );
        let config_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads (SIGHUP) by outcome",
            config_reloads.clone(),
        );
        let audit_chain_intact = Gauge::default();
        // Unknown until the first check; an alert waits for a 0.
        audit_chain_intact.set(1);
        registry.register(
            "audit_chain_intact",
            "1 while the last check of the audit chain found it whole, 0 once it found a broken row",
            audit_chain_intact.clone(),
        );
        let audit_chain_rows = Gauge::default();
        registry.register(
            "audit_chain_rows",
            "Rows in the audit chain at its last check",
            audit_chain_rows.clone(),
        );
        Self {
            registry,
            tokens,
            latency,
            key_age,
            key_events,
            db_connections,
            db_idle,
            db_max,
            limits_redis_fallbacks,
            limits_redis_leased,
            config_reloads,
            audit_chain_intact,
            audit_chain_rows,
        }
    }
}

impl Metrics {
    /// Counts one token request.
    pub fn token(&self, client_id: &str, outcome: &str) {
        self.tokens
            .get_or_create(&TokenLabels {
                client_id: client_id.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// The OpenMetrics text.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
