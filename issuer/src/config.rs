//! Typed configuration: embedded defaults, then a TOML file, then `ISSUER_*` environment
//! variables, validated once at start-up with errors that name the setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file or an environment variable could not be read or has the wrong type (the
    /// message names the key).
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    /// A setting has a value outside what the issuer accepts.
    #[error("invalid setting `{setting}`: {reason}")]
    Invalid {
        /// The setting's name as written in TOML (`ISSUER_` + upper case in the environment).
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

fn invalid(setting: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        reason: reason.into(),
    }
}

/// Every setting, with the embedded defaults of a local development issuer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// When set, `/metrics` is served only here (a private address for the scraper), not on
    /// `listen`; `/healthz` and `/readyz` stay on `listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// The issuer identifier: `iss` in tokens and the base of metadata URLs (no trailing `/`).
    pub issuer_url: String,
    /// `sqlite://PATH` (embedded, default) or `postgres://…` (production).
    pub database_url: String,
    /// Largest database pool.
    pub database_max_connections: u32,
    /// Directory for the SQLite file and the development key-encryption key.
    pub data_dir: PathBuf,
    /// File holding the 32-byte key-encryption key (hex or base64). The `ISSUER_KEK` variable
    /// takes precedence. With neither, a development key is created in `data_dir` with a loud
    /// warning.
    pub kek_file: Option<PathBuf>,
    /// File holding the 32-byte audit key (hex or base64) the audit trail's HMAC chain is
    /// made with: a key of its own, not the KEK. The `ISSUER_AUDIT_KEY` variable takes
    /// precedence. With neither, a development key is created in `data_dir`.
    pub audit_key_file: Option<PathBuf>,
    /// Access-token lifetime in seconds (60 to 3600).
    pub token_lifetime_secs: u64,
    /// `Cache-Control: max-age` of the JWKS and metadata, in seconds. A new key is published
    /// at least twice this long before it signs.
    pub jwks_max_age_secs: u64,
    /// How often the signing key rotates, in seconds.
    pub key_rotation_interval_secs: u64,
    /// Per-request timeout in seconds.
    pub request_timeout_secs: u64,
    /// Largest accepted request body in bytes.
    pub max_body_bytes: usize,
    /// Take the client address from the last `X-Forwarded-For` entry (only behind a trusted
    /// reverse proxy that appends it).
    pub trust_forwarded_for: bool,
    /// Token-endpoint limit per source address (a failed authentication costs 5 more).
    pub token_rate_per_address: shared::RatePlan,
    /// Token-endpoint limit per client.
    pub token_rate_per_client: shared::RatePlan,
    /// `GET /revocations` limit per source address. Edges poll it from every isolate (and
    /// many isolates share a few egress addresses), so it is generous; its answers are
    /// cacheable for a second, which lets a CDN in front of the issuer absorb the rest (unless
    /// `feed_requires_token`: then only the poller keeps them). Polls with a feed token have
    /// a budget of their own under the same plan.
    pub feed_rate_per_address: shared::RatePlan,
    /// Refuse `GET /revocations` (401) without one of the feed tokens (`ISSUER_FEED_TOKENS`,
    /// a secret of the environment): the feed then tells no one else which clients, keys and
    /// tokens are revoked. Either way a poll with a token has a per-address budget of its own,
    /// which no one without a token can run down. Needs a token; read at start only.
    pub feed_requires_token: bool,
    /// How often each instance checks the whole audit chain, in seconds (0: never);
    /// `issuer_audit_chain_intact` reports the result.
    pub audit_verify_interval_secs: u64,
    /// The audience of the admin API's tokens (default `<issuer_url>/admin`): a client
    /// made with `client create --admin` gets tokens for it, with `admin:*` scopes.
    pub admin_audience: Option<String>,
    /// Where the token-endpoint limits keep their state: `memory` (each instance its own, so
    /// N instances allow N times the plans) or `redis` (one state for every instance).
    pub limits_backend: LimitsBackend,
    /// The Redis server of `limits_backend = "redis"` (`redis://`: the client is built
    /// without TLS, so `rediss://` is refused), with a user that may run EVALSHA, SCRIPT
    /// LOAD, MGET and SET on `edgeward:issuer:limit:*` (checked at start:
    /// `limits::RedisRefused`).
    pub redis_url: String,
    /// Longest wait for Redis per decision, in ms; past it (or with Redis down) the decision
    /// is this instance's own, from memory (fail open: counted and logged).
    pub redis_timeout_ms: u64,
    /// A lease's life in ms, with `limits_backend = "redis"` (0: no leases, every decision
    /// asks Redis; else at least twice `redis_timeout_ms`, and at most 10000). A busy key's
    /// decisions are made in the instance from permits Redis charged ahead, spent within this
    /// long of their charge: over any window, a key is admitted at most this long's worth of
    /// its plan beyond what the plan allows.
    pub redis_lease_ttl_ms: u64,
    /// The most permits one lease holds (1 to 10000; also at most an eighth of its plan's
    /// burst): with its successor, what one instance may hold of a key that the others then
    /// cannot use, each for at most a lease's life.
    pub redis_lease_max_permits: u32,
    /// How long after its `iat` a DPoP proof is accepted at the token endpoint, in seconds
    /// (5 to 300; 5 more are allowed for clock skew). Each accepted proof is remembered that
    /// long, so a shorter age is a smaller replay store.
    pub dpop_proof_max_age_secs: u64,
    /// Require a server nonce in DPoP proofs (RFC 9449 §8): a proof without a fresh one is
    /// answered `use_dpop_nonce` with a `DPoP-Nonce` to retry with. It bounds a proof made
    /// ahead of time (by a client whose clock is wrong, or an attacker holding its key for a
    /// moment) to a nonce's life.
    pub dpop_require_nonce: bool,
    /// How long a nonce is good for, in seconds (10 to 3600): between one and two of these.
    pub dpop_nonce_lifetime_secs: u64,
    /// `json` (default) or `pretty` log lines.
    pub log_format: String,
    /// What to log, as a tracing filter (`info`, `warn`, `issuer=debug,info`...); `RUST_LOG`
    /// wins when it is set.
    pub log_level: String,
    /// PEM certificate chain: with `tls_key_file`, the issuer serves HTTPS (rustls).
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
}

/// The longest `token_lifetime_secs` accepted: what anything that must outlive every token
/// (a client's revocation entry) waits for, whatever the lifetime is now.
pub const MAX_TOKEN_LIFETIME_SECS: u64 = 3600;

/// Where token-endpoint limit state lives (`limits_backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitsBackend {
    /// In this instance's memory.
    Memory,
    /// In Redis, shared by every instance: one atomic script per decision Redis makes, and
    /// leases of permits for busy keys (`redis_lease_ttl_ms`).
    Redis,
}

/// A plan from constants known to be in range.
fn plan(limit: u32, period_secs: u32, burst: u32) -> shared::RatePlan {
    shared::RatePlan::new(limit, period_secs, burst)
        .unwrap_or_else(|_| unreachable!("constant plan"))
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics_listen: None,
            issuer_url: "http://127.0.0.1:8080".into(),
            database_url: "sqlite://data/issuer.db".into(),
            database_max_connections: 8,
            data_dir: PathBuf::from("data"),
            kek_file: None,
            audit_key_file: None,
            token_lifetime_secs: 600,
            jwks_max_age_secs: 300,
            key_rotation_interval_secs: 7 * 24 * 3600,
            request_timeout_secs: 10,
            max_body_bytes: 8 * 1024,
            trust_forwarded_for: false,
            token_rate_per_address: plan(6000, 60, 600),
            token_rate_per_client: plan(3000, 60, 300),
            feed_rate_per_address: plan(600, 1, 1200),
            feed_requires_token: false,
            audit_verify_interval_secs: 600,
            admin_audience: None,
            limits_backend: LimitsBackend::Memory,
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_timeout_ms: 100,
            redis_lease_ttl_ms: 250,
            redis_lease_max_permits: 32,
            dpop_proof_max_age_secs: 60,
            dpop_require_nonce: false,
            dpop_nonce_lifetime_secs: shared::dpop::DEFAULT_NONCE_LIFETIME_SECS,
            log_format: "json".into(),
            log_level: "info".into(),
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

impl Config {
    /// Defaults, then `file` (if any), then `ISSUER_*` variables; validated.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad setting.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(invalid(
                    "--config",
                    format!("{} does not exist", file.display()),
                ));
            }
            figment = figment.merge(Toml::file(file));
        }
        // `ISSUER_KEK` and `ISSUER_PREVIOUS_KEK` are secrets read by `keys::Kek`,
        // `ISSUER_FEED_TOKENS` one read by `feed_tokens`, and `ISSUER_CONFIG` names the file
        // (the `--config` flag): none is a setting.
        figment = figment.merge(Env::prefixed("ISSUER_").ignore(&[
            "kek",
            "previous_kek",
            "audit_key",
            "feed_tokens",
            "config",
        ]));
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every setting's range and shape.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = &self.issuer_url;
        if !(url.starts_with("https://") || url.starts_with("http://")) || url.ends_with('/') {
            return Err(invalid(
                "issuer_url",
                "must be an http(s) URL without a trailing slash",
            ));
        }
        // DPoP proofs name the token endpoint (`htu`), read with the edge's normalisation.
        if shared::HttpUri::parse(&self.token_endpoint()).is_none() {
            return Err(invalid(
                "issuer_url",
                "must be a URL the edge's normalisation reads: a host, a port, a plain path",
            ));
        }
        if !(self.database_url.starts_with("sqlite:")
            || self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "database_url",
                "must start with sqlite: or postgres://",
            ));
        }
        if self
            .metrics_listen
            .is_some_and(|metrics| metrics == self.listen)
        {
            return Err(invalid("metrics_listen", "must differ from listen"));
        }
        if self.database_max_connections == 0 {
            return Err(invalid("database_max_connections", "must be at least 1"));
        }
        if !(60..=MAX_TOKEN_LIFETIME_SECS).contains(&self.token_lifetime_secs) {
            return Err(invalid(
                "token_lifetime_secs",
                "must be between 60 and 3600",
            ));
        }
        if !(10..=86_400).contains(&self.jwks_max_age_secs) {
            return Err(invalid("jwks_max_age_secs", "must be between 10 and 86400"));
        }
        let lead = self.key_publish_lead_secs();
        if self.key_rotation_interval_secs < lead + self.token_lifetime_secs {
            return Err(invalid(
                "key_rotation_interval_secs",
                format!(
                    "must be at least {} (publish lead + token lifetime)",
                    lead + self.token_lifetime_secs
                ),
            ));
        }
        if !(1..=300).contains(&self.request_timeout_secs) {
            return Err(invalid("request_timeout_secs", "must be between 1 and 300"));
        }
        if !(1024..=1024 * 1024).contains(&self.max_body_bytes) {
            return Err(invalid(
                "max_body_bytes",
                "must be between 1024 and 1048576",
            ));
        }
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(_), None) => {
                return Err(invalid("tls_key_file", "is required with tls_cert_file"))
            }
            (None, Some(_)) => {
                return Err(invalid("tls_cert_file", "is required with tls_key_file"))
            }
            (Some(cert), Some(key)) => {
                for (setting, path) in [("tls_cert_file", cert), ("tls_key_file", key)] {
                    if !path.is_file() {
                        return Err(invalid(
                            setting,
                            format!("{} is not a readable file", path.display()),
                        ));
                    }
                }
            }
            (None, None) => {}
        }
        if self.limits_backend == LimitsBackend::Redis {
            if let Err(err) = redis::Client::open(self.redis_url.as_str()) {
                return Err(invalid("redis_url", format!("not a Redis URL: {err}")));
            }
        }
        // A decision waits at most twice the timeout (the call out, or a connection attempt,
        // then its own call): that must fit well within a request's own timeout.
        if !(1..=1_000).contains(&self.redis_timeout_ms)
            || self.redis_timeout_ms.saturating_mul(3)
                >= self.request_timeout_secs.saturating_mul(1_000)
        {
            return Err(invalid(
                "redis_timeout_ms",
                "must be between 1 and 1000, and three times it under request_timeout_secs",
            ));
        }
        // A lease's life runs from before its ask left, which may wait twice the timeout for
        // its answer: a shorter life would end leases before they arrive.
        if self.redis_lease_ttl_ms > 10_000
            || (self.redis_lease_ttl_ms != 0
                && self.redis_lease_ttl_ms < self.redis_timeout_ms.saturating_mul(2))
        {
            return Err(invalid(
                "redis_lease_ttl_ms",
                "must be 0 (no leases), or at least twice redis_timeout_ms and at most 10000",
            ));
        }
        if !(1..=10_000).contains(&self.redis_lease_max_permits) {
            return Err(invalid(
                "redis_lease_max_permits",
                "must be between 1 and 10000",
            ));
        }
        // No longer than the replay stores keep a proof.
        let most = shared::dpop::MAX_PROOF_AGE_SECS;
        if !(5..=most).contains(&self.dpop_proof_max_age_secs) {
            return Err(invalid(
                "dpop_proof_max_age_secs",
                format!("must be between 5 and {most}"),
            ));
        }
        if !(10..=3600).contains(&self.dpop_nonce_lifetime_secs) {
            return Err(invalid(
                "dpop_nonce_lifetime_secs",
                "must be between 10 and 3600",
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return Err(invalid(
                "log_level",
                "is not a tracing filter (e.g. info, or issuer=debug,info)",
            ));
        }
        if !matches!(self.log_format.as_str(), "json" | "pretty") {
            return Err(invalid("log_format", "must be json or pretty"));
        }
        Ok(())
    }

    /// How long a new key is published before it signs: twice the JWKS cache lifetime, so
    /// every edge has it before the first token it signs arrives.
    #[must_use]
    pub fn key_publish_lead_secs(&self) -> u64 {
        self.jwks_max_age_secs * 2
    }

    /// Whether the database is the embedded SQLite.
    #[must_use]
    pub fn is_sqlite(&self) -> bool {
        self.database_url.starts_with("sqlite:")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn errors_name_the_setting() {
        let config = Config {
            token_lifetime_secs: 5,
            ..Config::default()
        };
        let message = config.validate().unwrap_err().to_string();
        assert!(message.contains("token_lifetime_secs"), "{message}");
        for bad in ["http://x/", "https://user@x", "https://x/a;b"] {
            let config = Config {
                issuer_url: bad.into(),
                ..Config::default()
            };
            assert!(
                config
                    .validate()
                    .unwrap_err()
                    .to_string()
                    .contains("issuer_url"),
                "{bad}"
            );
        }
    }
}

/// What a reload (`SIGHUP`) did with a newly read configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reload {
    /// The configuration to run with from now on: the new values of the settings that can
    /// change while running, the old values of the rest.
    pub config: Config,
    /// Settings whose new value is now in use.
    pub changed: Vec<&'static str>,
    /// Settings that cannot change while running and were given a new value: it was not
    /// applied (restart the instance for it).
    pub refused: Vec<&'static str>,
}

impl Config {
    /// The token endpoint's URL, as the metadata publishes it: `private_key_jwt` assertions'
    /// `aud` and DPoP proofs' `htu` name it.
    #[must_use]
    pub fn token_endpoint(&self) -> String {
        format!("{}/oauth2/token", self.issuer_url)
    }

    /// The admin API's audience (`admin_audience`, default `<issuer_url>/admin`).
    #[must_use]
    pub fn admin_audience(&self) -> String {
        self.admin_audience
            .clone()
            .unwrap_or_else(|| format!("{}/admin", self.issuer_url))
    }

    /// The settings `new` (read and validated again) may change in this running
    /// configuration: rate limits, token lifetime, JWKS max-age, key rotation interval,
    /// audit verify interval, `trust_forwarded_for`, the DPoP settings and the log level.
    /// The rest (addresses, database, keys, TLS, the limits backend, body and time limits
    /// built into the server) are kept, and named in [`Reload::refused`] when `new` differs.
    ///
    /// # Errors
    /// [`ConfigError`] when the mix of kept and new values does not validate (then nothing
    /// changes).
    pub fn reload(&self, new: Config) -> Result<Reload, ConfigError> {
        // Every setting is live or fixed below: a new one fails to compile here until it is
        // put in one of the two lists.
        let Config {
            listen: _,
            metrics_listen: _,
            issuer_url: _,
            database_url: _,
            database_max_connections: _,
            data_dir: _,
            kek_file: _,
            audit_key_file: _,
            token_lifetime_secs: _,
            jwks_max_age_secs: _,
            key_rotation_interval_secs: _,
            request_timeout_secs: _,
            max_body_bytes: _,
            trust_forwarded_for: _,
            token_rate_per_address: _,
            token_rate_per_client: _,
            feed_rate_per_address: _,
            feed_requires_token: _,
            audit_verify_interval_secs: _,
            admin_audience: _,
            limits_backend: _,
            redis_url: _,
            redis_timeout_ms: _,
            redis_lease_ttl_ms: _,
            redis_lease_max_permits: _,
            dpop_proof_max_age_secs: _,
            dpop_require_nonce: _,
            dpop_nonce_lifetime_secs: _,
            log_format: _,
            log_level: _,
            tls_cert_file: _,
            tls_key_file: _,
        } = &new;
        let mut config = self.clone();
        let mut changed = Vec::new();
        let mut refused = Vec::new();
        macro_rules! live {
            ($($field:ident),*) => {$(
                if config.$field != new.$field {
                    config.$field = new.$field.clone();
                    changed.push(stringify!($field));
                }
            )*};
        }
        macro_rules! fixed {
            ($($field:ident),*) => {$(
                if config.$field != new.$field {
                    refused.push(stringify!($field));
                }
            )*};
        }
        live!(
            token_lifetime_secs,
            jwks_max_age_secs,
            key_rotation_interval_secs,
            trust_forwarded_for,
            audit_verify_interval_secs,
            token_rate_per_address,
            token_rate_per_client,
            feed_rate_per_address,
            dpop_proof_max_age_secs,
            dpop_require_nonce,
            dpop_nonce_lifetime_secs,
            log_level
        );
        fixed!(
            feed_requires_token,
            listen,
            metrics_listen,
            issuer_url,
            database_url,
            database_max_connections,
            data_dir,
            kek_file,
            audit_key_file,
            request_timeout_secs,
            max_body_bytes,
            admin_audience,
            limits_backend,
            redis_url,
            redis_timeout_ms,
            redis_lease_ttl_ms,
            redis_lease_max_permits,
            log_format,
            tls_cert_file,
            tls_key_file
        );
        config.validate()?;
        Ok(Reload {
            config,
            changed,
            refused,
        })
    }
}
