//! The one application state every handler shares.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::clock::Clock;
use crate::config::{Config, ConfigError, LimitsBackend, Reload};
use crate::db::Db;
use crate::feed_tokens::FeedTokens;
use crate::keys::{Kek, SigningKeys};
use crate::limits::TokenLimits;
use crate::metrics::Metrics;
use shared::dpop::Nonces;

/// Shared by every request; cheap to clone (handles and `Arc`s).
#[derive(Clone, Debug)]
pub struct AppState {
    /// Validated configuration, swapped whole by a reload (`SIGHUP`): read it with
    /// [`AppState::config`].
    config: Arc<RwLock<Arc<Config>>>,
    /// The database.
    pub db: Db,
    /// The key-encryption key.
    pub kek: Arc<Kek>,
    /// Current signing and published keys, swapped whole on reload.
    pub keys: Arc<RwLock<Arc<SigningKeys>>>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Token-endpoint rate limits.
    pub limits: Arc<TokenLimits>,
    /// Where handlers read the time (the system clock; a test's own in tests).
    pub clock: Clock,
    /// The DPoP nonces, under a key derived from the KEK (the same on every instance).
    pub dpop_nonces: Nonces,
    /// The tokens that give a feed poll its own budget (`ISSUER_FEED_TOKENS`; none by
    /// default): `crate::open` reads them.
    pub feed_tokens: Arc<FeedTokens>,
}

impl AppState {
    /// State over an opened database with keys already loaded.
    #[must_use]
    pub fn new(config: Config, db: Db, kek: Kek, keys: SigningKeys) -> Self {
        let metrics = Metrics::default();
        let limits = TokenLimits::new(
            config.token_rate_per_address,
            config.token_rate_per_client,
            config.feed_rate_per_address,
        );
        let limits = match config.limits_backend {
            LimitsBackend::Memory => limits,
            // A client only holds the URL (it connects on first use, so a Redis that is down
            // does not stop the start). `Config::validate` refuses a bad URL; should one get
            // here anyway, the limits stay in memory, as when Redis is down.
            LimitsBackend::Redis => match redis::Client::open(config.redis_url.as_str()) {
                Ok(client) => {
                    let limits = limits.in_redis(
                        client,
                        Duration::from_millis(config.redis_timeout_ms),
                        metrics.limits_redis_fallbacks.clone(),
                    );
                    if config.redis_lease_ttl_ms == 0 {
                        limits
                    } else {
                        let policy = shared::lease::LeasePolicy {
                            ttl_ms: config.redis_lease_ttl_ms,
                            max_permits: config.redis_lease_max_permits,
                        };
                        limits.leasing(policy, metrics.limits_redis_leased.clone())
                    }
                }
                Err(err) => {
                    tracing::error!(error = %err, "redis_url: limits stay in this instance's memory");
                    limits
                }
            },
        };
        // During a KEK rotation, the nonces of instances not yet restarted stay good here.
        let dpop_nonces = Nonces::new(kek.derive(crate::dpop::NONCE_KEY_PURPOSE));
        let dpop_nonces = match kek.derive_previous(crate::dpop::NONCE_KEY_PURPOSE) {
            Some(previous) => dpop_nonces.also_accepting(&Nonces::new(previous)),
            None => dpop_nonces,
        };
        Self {
            dpop_nonces,
            limits: Arc::new(limits),
            config: Arc::new(RwLock::new(Arc::new(config))),
            db,
            kek: Arc::new(kek),
            keys: Arc::new(RwLock::new(Arc::new(keys))),
            metrics: Arc::new(metrics),
            clock: Clock::system(),
            feed_tokens: Arc::default(),
        }
    }

    /// The configuration in force (a cheap `Arc` clone; a reload swaps it whole, so one
    /// request reads one configuration throughout if it holds on to this).
    #[must_use]
    pub fn config(&self) -> Arc<Config> {
        match self.config.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Applies `new` (read and validated again, e.g. on `SIGHUP`) as far as it may change
    /// while running ([`Config::reload`]): the settings and the rate plans. The caller logs,
    /// audits and counts what it returns.
    ///
    /// # Errors
    /// [`ConfigError`] when the result would not validate; nothing changes then.
    pub fn reload(&self, new: Config) -> Result<Reload, ConfigError> {
        let mut guard = match self.config.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let reload = guard.reload(new)?;
        self.limits.set_plans(
            reload.config.token_rate_per_address,
            reload.config.token_rate_per_client,
            reload.config.feed_rate_per_address,
        );
        *guard = Arc::new(reload.config.clone());
        Ok(reload)
    }

    /// The current keys (a cheap `Arc` clone; never blocks on I/O).
    #[must_use]
    pub fn keys(&self) -> Arc<SigningKeys> {
        match self.keys.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The same state reading the time from `clock` (tests stand at chosen instants).
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Replaces the current keys.
    pub fn set_keys(&self, keys: SigningKeys) {
        let keys = Arc::new(keys);
        match self.keys.write() {
            Ok(mut guard) => *guard = keys,
            Err(poisoned) => *poisoned.into_inner() = keys,
        }
    }
}
