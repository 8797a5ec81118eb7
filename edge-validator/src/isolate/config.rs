//! Settings from wrangler vars and secrets (names match `wrangler.toml`), read and checked
//! once per isolate: a bad setting answers every request with a logged 500 rather than
//! half-working. Read through a lookup function, so the core never sees the runtime's `env`.

use std::collections::HashMap;
use std::rc::Rc;

use shared::jwks_refresh::RefreshPolicy;
use shared::keyset_copy::CopyKey;
use shared::route::{Origin, Policy, RouteTable};
use shared::{AssertionKey, AssertionSigner, RatePlan, ScopeRequirement, Validation, Validator};

/// Var: the exact `iss`.
pub const ISSUER: &str = "ISSUER";
/// Var: the audience tokens must carry.
pub const AUDIENCE: &str = "AUDIENCE";
/// Var: JWKS URLs in order (geo-DNS name first, regional fallbacks after), space-separated.
pub const JWKS_URLS: &str = "JWKS_URLS";
/// Var: revocation feed URLs in the same order; empty turns the feed off.
pub const REVOCATION_URLS: &str = "REVOCATION_URLS";
/// Secret: the feed token (`ISSUER_FEED_TOKENS` at the issuer), sent with every feed pull:
/// the issuer then charges the pulls to a budget of their own, which no one without the token
/// can run down from the edge's shared egress addresses. Unset: pulls carry none.
pub const REVOCATION_FEED_TOKEN: &str = "REVOCATION_FEED_TOKEN";
/// Var: the origin base URL, e.g. `https://api.internal.example`.
pub const ORIGIN_URL: &str = "ORIGIN_URL";
/// Var: which route table applies: the name of a file `deploy/edge/routes/<name>.toml`, which
/// the build checks and compiles into the bundle (each wrangler environment names its own).
/// Unset: no table (see [`ROUTES`]).
pub const ROUTE_TABLE: &str = "ROUTE_TABLE";
/// The route table itself, as JSON (`shared::route`): in the Worker, the driver answers this
/// name with the bundled table [`ROUTE_TABLE`] names; tests set it directly. Without one,
/// every path needs a valid token for `AUDIENCE` and goes to `ORIGIN_URL` (the edge before
/// route tables).
pub const ROUTES: &str = "ROUTES";
/// Var: the id of the assertion key in use.
pub const ASSERTION_KEY_ID: &str = "ASSERTION_KEY_ID";
/// Secret: the assertion HMAC key (at least 32 bytes).
pub const ASSERTION_SECRET: &str = "ASSERTION_SECRET";
/// Var: which key signs an origin's assertions: `shared` (default: [`ASSERTION_SECRET`] for
/// every origin, which all hold it) or `per-origin` (each origin host's own, derived from
/// [`ASSERTION_SECRET`] and the host by `shared::assertion::origin_secret`: an origin that
/// leaks its key lets its holder sign for that origin alone).
pub const ASSERTION_KEYS: &str = "ASSERTION_KEYS";
/// Secret: the key that tags the Cache API copy of the key set (at least 32 bytes). The
/// Cache API is shared with every script on the zone, so without it no copy is written or
/// read (a new isolate then fetches the set from the issuer before its first fresh token).
pub const KEYSET_COPY_SECRET: &str = "KEYSET_COPY_SECRET";
/// Var: the plan for tokens without a `rate_plan` claim, e.g. `600/60s;burst=100`.
pub const DEFAULT_RATE_PLAN: &str = "DEFAULT_RATE_PLAN";
/// Var: failed authentications allowed per client IP, e.g. `20/60s;burst=20`.
pub const FAILED_AUTH_PLAN: &str = "FAILED_AUTH_PLAN";
/// Var: where rate-limit state lives: `lease` (default: a Durable Object per client grants
/// leases of permits that isolates spend locally), `durable` (the same objects, asked on
/// every request), `isolate` (isolate memory only) or `off`.
pub const RATE_LIMIT_MODE: &str = "RATE_LIMIT_MODE";
/// Var: which Durable Object counts a client: `location` (default: one per Cloudflare location
/// and client, so a client's plan holds per location) or `global` (one per client worldwide:
/// the plan holds overall; with `lease`, a lease amortises the distance to it).
pub const RATE_LIMIT_SCOPE: &str = "RATE_LIMIT_SCOPE";
/// Var: a lease's life in ms (`lease` mode): the bound on over-admission grows with it.
pub const LEASE_TTL_MS: &str = "LEASE_TTL_MS";
/// Var: the most permits in one lease (`lease` mode): with the isolates holding a client's
/// leases, what can be outstanding at once.
pub const LEASE_MAX_PERMITS: &str = "LEASE_MAX_PERMITS";
/// Var: how long after its `iat` a DPoP proof is accepted, in seconds (5 to 300, default
/// 60; 5 more for clock skew). Each accepted proof's id is kept that long by the replay
/// objects.
pub const DPOP_PROOF_MAX_AGE_SECS: &str = "DPOP_PROOF_MAX_AGE_SECS";
/// Var: which Durable Object remembers a DPoP key's proofs: `location` (default: one per
/// Cloudflare location and key, so a proof is accepted once per location within its window)
/// or `global` (one per key worldwide: once overall, at the cost of a round trip to where the
/// object lives).
pub const DPOP_REPLAY_SCOPE: &str = "DPOP_REPLAY_SCOPE";
/// Secret: keys the edge's DPoP nonces (RFC 9449 §9; at least 32 bytes, the edge's alone,
/// the same in every location so that a nonce from one is good at every other). Set, every DPoP
/// proof must carry a nonce of the edge's: one without gets 401 `use_dpop_nonce` with a
/// `DPoP-Nonce` to retry with. Unset (the default): proofs need none.
pub const DPOP_NONCE_SECRET: &str = "DPOP_NONCE_SECRET";
/// Secret, during a rotation of [`DPOP_NONCE_SECRET`] only: the other secret, whose nonces are
/// accepted and never handed out (the next secret before the switch, the previous one after
/// it), so that releases on either side of the switch accept each other's nonces
/// (`deploy/runbooks/dpop-nonce-secret-rotation.md`).
pub const DPOP_NONCE_ROTATION_SECRET: &str = "DPOP_NONCE_ROTATION_SECRET";
/// Var: the edge's DPoP nonce window, in seconds (10 to 3600, default 300): a nonce is good in
/// the window it was made in and the next.
pub const DPOP_NONCE_LIFETIME_SECS: &str = "DPOP_NONCE_LIFETIME_SECS";
/// Var: timeout of each JWKS or feed fetch and of each ask of a rate-limit or DPoP replay
/// object, in ms; also how long a request waits for another's lease ask.
pub const FETCH_TIMEOUT_MS: &str = "FETCH_TIMEOUT_MS";
/// Var: least time between refetches caused by unknown `kid`s, in ms.
pub const UNKNOWN_KID_COOLDOWN_MS: &str = "UNKNOWN_KID_COOLDOWN_MS";
/// Var: how long past its freshness the last good key set stays in use, in seconds.
pub const JWKS_MAX_STALE_SECS: &str = "JWKS_MAX_STALE_SECS";
/// Var: how often the revocation feed is pulled, in ms.
pub const REVOCATION_INTERVAL_MS: &str = "REVOCATION_INTERVAL_MS";

/// Var: log one forwarded request in N (per isolate): 1 (default) logs every request, 0 none.
/// Refusals, 429s and errors are always logged. Each line is a Workers Logs event (billed
/// by volume); its CPU was within the noise of `benches/run` (edge-fresh vs edge-fresh-nolog).
pub const LOG_FORWARDED_EVERY: &str = "LOG_FORWARDED_EVERY";

/// Var, for tests only: a request to this path panics, so the wasm instance traps and the
/// entry starts a new one (how `tests/` checks that callbacks of the old instance never land
/// on requests of the new). Never set in production: anyone could reset the isolate's state.
pub const TEST_TRAP_PATH: &str = "TEST_TRAP_PATH";

/// Defaults for the optional vars.
const DEFAULT_PLAN: &str = "600/60s;burst=100";
const DEFAULT_FAILED_AUTH: &str = "20/60s;burst=20";
const DEFAULT_FETCH_TIMEOUT_MS: u64 = 2_000;
const DEFAULT_REVOCATION_INTERVAL_MS: u64 = 5_000;
const DEFAULT_LEASE_TTL_MS: u64 = 2_000;
const DEFAULT_LEASE_MAX_PERMITS: u64 = 100;

/// Where rate-limit state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitMode {
    /// A Durable Object per client (binding `RATE_LIMITER`), with an in-isolate pre-check.
    Durable,
    /// The same objects, asked for leases of permits (`shared::lease`).
    Lease,
    /// Isolate memory only: cheap, per isolate, approximate.
    Isolate,
    /// No rate limiting (benchmarks of the validation path alone).
    Off,
}

/// Which Durable Object counts a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitScope {
    /// One per Cloudflare location and client.
    Location,
    /// One per client worldwide.
    Global,
}

/// Who signs each origin's assertions ([`ASSERTION_KEYS`]).
enum Signers {
    /// `shared`: the edge's key, for every origin.
    Shared(AssertionSigner),
    /// `per-origin`: the key of each origin host the settings name, made at start-up, and the
    /// edge's own key, from which any other host's would be derived.
    PerOrigin {
        by_host: Vec<(String, AssertionSigner)>,
        edge: AssertionKey,
    },
}

impl Signers {
    /// The signers `ASSERTION_KEYS` asks for, from the edge's `key`, for `ORIGIN_URL`'s
    /// `origin` and the routes' own.
    fn new(
        env: &impl Vars,
        key: AssertionKey,
        origin: &Origin,
        routes: &RouteTable,
    ) -> Result<Self, ConfigError> {
        match optional(env, ASSERTION_KEYS).as_deref().map(str::trim) {
            None | Some("shared") => Ok(Self::Shared(AssertionSigner::new(key))),
            Some("per-origin") => {
                // A list: a table names few origins, and a map would add kilobytes of wasm.
                let mut by_host: Vec<(String, AssertionSigner)> = Vec::new();
                let route_origins = routes
                    .routes()
                    .iter()
                    .map(|route| &route.policy)
                    .chain(routes.unmatched())
                    .filter_map(|policy| policy.origin.as_ref());
                for each in std::iter::once(origin).chain(route_origins) {
                    if !by_host.iter().any(|(host, _)| host == each.host()) {
                        let signer = AssertionSigner::new(key.for_origin(each.host()));
                        by_host.push((each.host().to_owned(), signer));
                    }
                }
                Ok(Self::PerOrigin { by_host, edge: key })
            }
            Some(other) => Err(ConfigError(format!(
                "var {ASSERTION_KEYS} must be shared or per-origin, not \"{other}\""
            ))),
        }
    }
}

/// Everything a request needs, read from the environment.
pub struct Config {
    /// Built once: the rules are fixed for the isolate's life. For `AUDIENCE`.
    pub(crate) validator: Validator,
    /// The same rules for each other audience a route names.
    route_validators: HashMap<String, Validator>,
    pub(crate) routes: RouteTable,
    /// The routes' ids, in the table's order, shared: every request's log line names its
    /// route without copying the id.
    route_ids: Vec<Rc<str>>,
    pub(crate) jwks_urls: Rc<[String]>,
    pub(crate) revocation_urls: Rc<[String]>,
    /// `Bearer <REVOCATION_FEED_TOKEN>`, for the feed pulls.
    pub(crate) feed_authorization: Option<Rc<str>>,
    /// `ORIGIN_URL`: where a route without its own origin sends.
    pub(crate) origin: Origin,
    signers: Signers,
    /// Tags and checks the Cache API copy of the key set, with the cache key it lives
    /// under (derived from the secret); `None`: no copy tier.
    pub(crate) copy: Option<(CopyKey, String)>,
    pub(crate) default_plan: RatePlan,
    pub(crate) failed_auth_plan: RatePlan,
    pub(crate) rate_limit_mode: RateLimitMode,
    pub(crate) rate_limit_scope: RateLimitScope,
    pub(crate) lease_policy: shared::lease::LeasePolicy,
    /// How old and how far ahead a DPoP proof may be.
    pub(crate) dpop_rules: shared::ProofRules,
    /// Which object remembers a key's proofs.
    pub(crate) dpop_replay_scope: RateLimitScope,
    /// The edge's DPoP nonces and their window in seconds; `None`: proofs need none.
    pub(crate) dpop_nonces: Option<(shared::dpop::Nonces, u64)>,
    pub(crate) fetch_timeout_ms: u64,
    pub(crate) refresh_policy: RefreshPolicy,
    pub(crate) revocation_interval_ms: u64,
    pub(crate) log_forwarded_every: u64,
    /// [`TEST_TRAP_PATH`]: unset outside tests.
    pub(crate) test_trap_path: Option<String>,
}

/// A setting is missing or invalid (an ops error: the request gets a generic 500).
#[derive(Debug, Clone, thiserror::Error)]
#[error("edge configuration: {0}")]
pub struct ConfigError(pub(crate) String);

/// The settings, by name: what the runtime's `env` holds as a string (vars and secrets).
pub trait Vars {
    /// The value of `name`, when it is set to a string.
    fn text(&self, name: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> Vars for F {
    fn text(&self, name: &str) -> Option<String> {
        self(name)
    }
}

fn var(env: &impl Vars, name: &str) -> Result<String, ConfigError> {
    env.text(name)
        .ok_or_else(|| ConfigError(format!("var {name} is not set")))
}

fn optional(env: &impl Vars, name: &str) -> Option<String> {
    env.text(name).filter(|value| !value.trim().is_empty())
}

fn number(env: &impl Vars, name: &str, default: u64) -> Result<u64, ConfigError> {
    optional(env, name).map_or(Ok(default), |text| {
        text.trim()
            .parse()
            .map_err(|_| ConfigError(format!("var {name} is not a whole number: \"{text}\"")))
    })
}

fn plan(env: &impl Vars, name: &str, default: &str) -> Result<RatePlan, ConfigError> {
    let text = optional(env, name).unwrap_or_else(|| default.to_owned());
    text.parse()
        .map_err(|err| ConfigError(format!("var {name}: {err}")))
}

/// `Bearer <token>` of [`REVOCATION_FEED_TOKEN`], a token the issuer can accept
/// (`shared::revocations::is_feed_token`).
fn feed_authorization(env: &impl Vars) -> Result<Option<Rc<str>>, ConfigError> {
    // Blank is unset, and surrounding whitespace is dropped, as the issuer reads its tokens.
    let Some(token) = optional(env, REVOCATION_FEED_TOKEN) else {
        return Ok(None);
    };
    let token = token.trim();
    if !shared::revocations::is_feed_token(token) {
        use shared::revocations::{MAX_FEED_TOKEN_LEN, MIN_FEED_TOKEN_LEN};
        return Err(ConfigError(format!(
            "secret {REVOCATION_FEED_TOKEN} must be {MIN_FEED_TOKEN_LEN} to {MAX_FEED_TOKEN_LEN} bytes of A-Z a-z 0-9 - . _ ~ + / and trailing ="
        )));
    }
    Ok(Some(Rc::from(format!("Bearer {token}"))))
}

fn urls(text: &str) -> Rc<[String]> {
    text.split_whitespace().map(str::to_owned).collect()
}

impl Config {
    /// Reads and checks every setting.
    pub fn from_vars(env: &impl Vars) -> Result<Self, ConfigError> {
        let jwks_urls = urls(&var(env, JWKS_URLS)?);
        if jwks_urls.is_empty() {
            return Err(ConfigError(format!("var {JWKS_URLS} lists no URL")));
        }
        let secret = env
            .text(ASSERTION_SECRET)
            .ok_or_else(|| ConfigError(format!("secret {ASSERTION_SECRET} is not set")))?;
        let key = AssertionKey::new(&var(env, ASSERTION_KEY_ID)?, secret.as_bytes())
            .map_err(|err| ConfigError(err.to_string()))?;
        let defaults = RefreshPolicy::default();
        let refresh_policy = RefreshPolicy {
            unknown_kid_cooldown_ms: number(
                env,
                UNKNOWN_KID_COOLDOWN_MS,
                defaults.unknown_kid_cooldown_ms,
            )?,
            max_stale_ms: number(env, JWKS_MAX_STALE_SECS, defaults.max_stale_ms / 1000)?
                .saturating_mul(1000),
            ..defaults
        };
        // The same checker as a route table's origins: scheme, host, default port left out.
        let origin = Origin::parse(&var(env, ORIGIN_URL)?)
            .map_err(|problem| ConfigError(format!("var {ORIGIN_URL}: {problem}")))?;
        let routes = route_table(env)?;
        let signers = Signers::new(env, key, &origin, &routes)?;
        let validation = Validation::new(var(env, ISSUER)?, var(env, AUDIENCE)?);
        let route_validators = routes
            .routes()
            .iter()
            .map(|route| &route.policy)
            .chain(routes.unmatched())
            .filter_map(|policy| policy.audience.clone())
            .filter(|audience| *audience != validation.audience)
            .map(|audience| {
                let validation = Validation {
                    audience: audience.clone(),
                    ..validation.clone()
                };
                (audience, Validator::new(validation))
            })
            .collect();
        let copy = optional(env, KEYSET_COPY_SECRET)
            .map(|secret| CopyKey::new(secret.as_bytes()))
            .transpose()
            .map_err(|err| ConfigError(format!("secret {KEYSET_COPY_SECRET}: {err}")))?
            .zip(jwks_urls.first())
            .map(|(key, url)| {
                let at = key.cache_key(url);
                (key, at)
            });
        Ok(Self {
            validator: Validator::new(validation),
            route_validators,
            route_ids: routes
                .routes()
                .iter()
                .map(|route| Rc::from(route.id.as_str()))
                .collect(),
            routes,
            jwks_urls,
            revocation_urls: urls(&optional(env, REVOCATION_URLS).unwrap_or_default()),
            feed_authorization: feed_authorization(env)?,
            origin,
            signers,
            copy,
            default_plan: plan(env, DEFAULT_RATE_PLAN, DEFAULT_PLAN)?,
            failed_auth_plan: plan(env, FAILED_AUTH_PLAN, DEFAULT_FAILED_AUTH)?,
            rate_limit_mode: match optional(env, RATE_LIMIT_MODE).as_deref().map(str::trim) {
                None | Some("lease") => RateLimitMode::Lease,
                Some("durable") => RateLimitMode::Durable,
                Some("isolate") => RateLimitMode::Isolate,
                Some("off") => RateLimitMode::Off,
                Some(other) => {
                    return Err(ConfigError(format!(
                    "var {RATE_LIMIT_MODE} must be lease, durable, isolate or off, not \"{other}\""
                )))
                }
            },
            rate_limit_scope: scope(env, RATE_LIMIT_SCOPE)?,
            dpop_replay_scope: scope(env, DPOP_REPLAY_SCOPE)?,
            lease_policy: lease_policy(env)?,
            dpop_rules: dpop_rules(env)?,
            dpop_nonces: dpop_nonces(env)?,
            fetch_timeout_ms: fetch_timeout_ms(env)?,
            refresh_policy,
            revocation_interval_ms: number(
                env,
                REVOCATION_INTERVAL_MS,
                DEFAULT_REVOCATION_INTERVAL_MS,
            )?
            .max(100),
            log_forwarded_every: number(env, LOG_FORWARDED_EVERY, 1)?,
            test_trap_path: optional(env, TEST_TRAP_PATH),
        })
    }
}

/// The longest [`FETCH_TIMEOUT_MS`]: a request can wait up to three such timeouts between
/// its token's check and its forwarding (replay object calls, a limiter object), and the
/// origin judges the token's expiry by the assertion's time, allowing the verifiers' largest
/// leeway (`shared::claims::MAX_LEEWAY_SECS`) past `exp`: the edge's leeway and those waits
/// must stay inside it.
const MAX_FETCH_TIMEOUT_MS: u64 = 30_000;

/// [`FETCH_TIMEOUT_MS`], 1 to [`MAX_FETCH_TIMEOUT_MS`].
fn fetch_timeout_ms(env: &impl Vars) -> Result<u64, ConfigError> {
    let timeout = number(env, FETCH_TIMEOUT_MS, DEFAULT_FETCH_TIMEOUT_MS)?;
    if !(1..=MAX_FETCH_TIMEOUT_MS).contains(&timeout) {
        return Err(ConfigError(format!(
            "var {FETCH_TIMEOUT_MS} must be 1 to {MAX_FETCH_TIMEOUT_MS}, not {timeout}"
        )));
    }
    Ok(timeout)
}

/// [`LEASE_TTL_MS`] and [`LEASE_MAX_PERMITS`], each at least 1, the life at most a minute.
fn lease_policy(env: &impl Vars) -> Result<shared::lease::LeasePolicy, ConfigError> {
    let ttl_ms = number(env, LEASE_TTL_MS, DEFAULT_LEASE_TTL_MS)?;
    // The object refuses a longer one: the bound on over-admission grows with it.
    let max = super::leases::MAX_TTL_MS;
    if !(1..=max).contains(&ttl_ms) {
        return Err(ConfigError(format!(
            "var {LEASE_TTL_MS} must be 1 to {max}, not {ttl_ms}"
        )));
    }
    let max_permits = number(env, LEASE_MAX_PERMITS, DEFAULT_LEASE_MAX_PERMITS)?;
    let max_permits = u32::try_from(max_permits)
        .ok()
        .filter(|max| *max >= 1)
        .ok_or_else(|| {
            ConfigError(format!(
                "var {LEASE_MAX_PERMITS} must be 1 to {}, not {max_permits}",
                u32::MAX
            ))
        })?;
    Ok(shared::lease::LeasePolicy {
        ttl_ms,
        max_permits,
    })
}

/// A scope var ([`RATE_LIMIT_SCOPE`], [`DPOP_REPLAY_SCOPE`]): `location` (default) or `global`.
fn scope(env: &impl Vars, name: &str) -> Result<RateLimitScope, ConfigError> {
    match optional(env, name).as_deref().map(str::trim) {
        None | Some("location") => Ok(RateLimitScope::Location),
        Some("global") => Ok(RateLimitScope::Global),
        Some(other) => Err(ConfigError(format!(
            "var {name} must be location or global, not \"{other}\""
        ))),
    }
}

/// [`DPOP_PROOF_MAX_AGE_SECS`], 5 seconds to [`shared::dpop::MAX_PROOF_AGE_SECS`] (what the
/// replay entries are kept for), with the default leeway (as the issuer).
fn dpop_rules(env: &impl Vars) -> Result<shared::ProofRules, ConfigError> {
    let defaults = shared::ProofRules::default();
    let max_age_secs = number(env, DPOP_PROOF_MAX_AGE_SECS, defaults.max_age_secs)?;
    let most = shared::dpop::MAX_PROOF_AGE_SECS;
    if !(5..=most).contains(&max_age_secs) {
        return Err(ConfigError(format!(
            "var {DPOP_PROOF_MAX_AGE_SECS} must be 5 to {most}, not {max_age_secs}"
        )));
    }
    Ok(shared::ProofRules {
        max_age_secs,
        ..defaults
    })
}

/// [`DPOP_NONCE_SECRET`], [`DPOP_NONCE_ROTATION_SECRET`] and [`DPOP_NONCE_LIFETIME_SECS`]: the
/// window is checked even without the secret, so a typo fails before the day the secret is set.
fn dpop_nonces(env: &impl Vars) -> Result<Option<(shared::dpop::Nonces, u64)>, ConfigError> {
    let lifetime = number(
        env,
        DPOP_NONCE_LIFETIME_SECS,
        shared::dpop::DEFAULT_NONCE_LIFETIME_SECS,
    )?;
    if !(10..=3600).contains(&lifetime) {
        return Err(ConfigError(format!(
            "var {DPOP_NONCE_LIFETIME_SECS} must be 10 to 3600, not {lifetime}"
        )));
    }
    let secret = optional(env, DPOP_NONCE_SECRET);
    // Set only on purpose, for a rotation: blank is a mistake, not "none".
    let rotation = env.text(DPOP_NONCE_ROTATION_SECRET);
    if rotation.as_ref().is_some_and(|text| text.trim().is_empty()) {
        return Err(ConfigError(format!(
            "secret {DPOP_NONCE_ROTATION_SECRET} is blank: set it to a secret, or delete it"
        )));
    }
    let Some(secret) = secret else {
        return match rotation {
            Some(_) => Err(ConfigError(format!(
                "secret {DPOP_NONCE_ROTATION_SECRET} is set without {DPOP_NONCE_SECRET}: a rotation needs both"
            ))),
            None => Ok(None),
        };
    };
    if rotation.as_ref() == Some(&secret) {
        return Err(ConfigError(format!(
            "secret {DPOP_NONCE_ROTATION_SECRET} is the same as {DPOP_NONCE_SECRET}: a rotation needs two secrets"
        )));
    }
    let nonces = edge_nonces(env, DPOP_NONCE_SECRET, &secret)?;
    let nonces = match rotation {
        Some(other) => {
            nonces.also_accepting(&edge_nonces(env, DPOP_NONCE_ROTATION_SECRET, &other)?)
        }
        None => nonces,
    };
    Ok(Some((nonces, lifetime)))
}

/// The nonces the secret `name` (holding `secret`) keys: long enough
/// ([`shared::dpop::MIN_NONCE_SECRET_LEN`]), and the edge's alone.
fn edge_nonces(
    env: &impl Vars,
    name: &str,
    secret: &str,
) -> Result<shared::dpop::Nonces, ConfigError> {
    // The origins hold the assertion secret: with it, they could make the edge's nonces.
    for other in [ASSERTION_SECRET, KEYSET_COPY_SECRET] {
        if env.text(other).as_deref() == Some(secret) {
            return Err(ConfigError(format!(
                "secret {name} must be the edge's alone, not the same as {other}"
            )));
        }
    }
    shared::dpop::Nonces::from_edge_secret(secret.as_bytes())
        .map_err(|err| ConfigError(format!("secret {name}: {err}")))
}

/// The table [`ROUTES`] holds, checked again as the build checked it; without one, a table
/// with no routes whose unmatched policy is "a valid token".
fn route_table(env: &impl Vars) -> Result<RouteTable, ConfigError> {
    // Set at all, even empty, it must name a table: a typo never means "no rules".
    let named = env.text(ROUTE_TABLE);
    let Some(json) = optional(env, ROUTES) else {
        if let Some(name) = named {
            return Err(ConfigError(format!(
                "var {ROUTE_TABLE} names `{name}`, and the bundle has no such route table"
            )));
        }
        let token = Policy::token(ScopeRequirement::default());
        return RouteTable::new(Vec::new(), Some(token))
            .map_err(|err| ConfigError(err.to_string()));
    };
    let name = named.unwrap_or_else(|| ROUTES.to_owned());
    RouteTable::from_json(&json).map_err(|err| ConfigError(format!("route table {name}: {err}")))
}

impl Config {
    /// The validator for tokens a route with `audience` takes (`None`: `AUDIENCE`).
    pub(crate) fn validator_for(&self, audience: Option<&str>) -> &Validator {
        audience
            .and_then(|audience| self.route_validators.get(audience))
            .unwrap_or(&self.validator)
    }

    /// The policy of the route at `position` in the table, or of unmatched requests (`None`:
    /// denied).
    pub(crate) fn policy(&self, position: Option<usize>) -> Option<&Policy> {
        match position {
            Some(at) => self.routes.routes().get(at).map(|route| &route.policy),
            None => self.routes.unmatched(),
        }
    }

    /// Whether any Durable Objects (rate limits, DPoP replay objects in every mode) are one per
    /// Cloudflare location: the driver then reads the request's location (`request.cf.colo`).
    pub fn objects_per_location(&self) -> bool {
        let limits_in_objects = matches!(
            self.rate_limit_mode,
            RateLimitMode::Durable | RateLimitMode::Lease
        );
        (limits_in_objects && self.rate_limit_scope == RateLimitScope::Location)
            || self.dpop_replay_scope == RateLimitScope::Location
    }

    /// The id of the route at `position` (`None` for unmatched requests).
    pub(crate) fn route_id(&self, position: Option<usize>) -> Option<&Rc<str>> {
        self.route_ids.get(position?)
    }

    /// Who signs the assertions of requests sent to `origin`: the one key, or that origin
    /// host's own. Every origin of the settings has its key made at start-up; another host
    /// (none today) would get its own derived on the spot, never another's.
    pub(crate) fn signer(&self, origin: &Origin) -> std::borrow::Cow<'_, AssertionSigner> {
        use std::borrow::Cow;
        match &self.signers {
            Signers::Shared(signer) => Cow::Borrowed(signer),
            Signers::PerOrigin { by_host, edge } => by_host
                .iter()
                .find(|(host, _)| host == origin.host())
                .map_or_else(
                    || Cow::Owned(AssertionSigner::new(edge.for_origin(origin.host()))),
                    |(_, signer)| Cow::Borrowed(signer),
                ),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests may panic

    use super::*;

    /// The settings an edge needs, with `more`.
    fn settings<'a>(more: &[(&'a str, &'a str)]) -> HashMap<&'a str, &'a str> {
        let mut vars = HashMap::from([
            (ISSUER, "https://issuer.test"),
            (AUDIENCE, "api"),
            (JWKS_URLS, "https://issuer.test/jwks"),
            (ORIGIN_URL, "https://origin.test"),
            (ASSERTION_KEY_ID, "edge-1"),
            (ASSERTION_SECRET, "an assertion secret of at least 32 bytes"),
        ]);
        vars.extend(more.iter().copied());
        vars
    }

    /// With a key per origin, a host the settings do not name (none can reach `forward` today)
    /// gets its own key, derived on the spot: never `ORIGIN_URL`'s or the edge's.
    #[test]
    fn a_host_the_settings_do_not_name_gets_its_own_key() {
        let secret = "an assertion secret of at least 32 bytes";
        let vars = settings(&[(ASSERTION_SECRET, secret), (ASSERTION_KEYS, "per-origin")]);
        let config =
            Config::from_vars(&|name: &str| vars.get(name).map(|v| (*v).to_owned())).unwrap();
        let identity: shared::EdgeIdentity = serde_json::from_value(serde_json::json!({
            "sub": "s", "client_id": "c", "scope": "read", "jti": "j", "exp": 2_000_000_000_u64,
            "method": "GET", "host": "elsewhere.test", "path": "/",
            "query": shared::assertion::query_hash(None), "ts": 1_000,
        }))
        .unwrap();
        let line = shared::RequestLine {
            method: "GET",
            host: "elsewhere.test",
            path: "/",
            query: None,
        };
        let elsewhere = Origin::parse("https://elsewhere.test").unwrap();
        let header = config.signer(&elsewhere).sign(&identity);
        let verifies_with = |secret: &str| {
            let key = AssertionKey::new("edge-1", secret.as_bytes()).unwrap();
            shared::AssertionVerifier::new(vec![key], 10_000)
                .verify(Some(&header), &line, shared::UnixTime::from_millis(1_000))
                .is_ok()
        };
        let origin_secret = |host: &str| shared::assertion::origin_secret(secret.as_bytes(), host);
        assert!(verifies_with(&origin_secret("elsewhere.test")));
        assert!(!verifies_with(&origin_secret("origin.test")));
        assert!(!verifies_with(secret));
    }

    /// A fetch timeout whose waits could outlast the origin's allowance past `exp` is a
    /// start-up error, not an origin refusing what the edge admitted.
    #[test]
    fn the_fetch_timeout_is_bounded() {
        let with_timeout = |timeout: &'static str| {
            let vars = settings(&[(FETCH_TIMEOUT_MS, timeout)]);
            Config::from_vars(&|name: &str| vars.get(name).map(|v| (*v).to_owned()))
        };
        assert!(with_timeout("30000").is_ok());
        for refused in ["0", "30001"] {
            let error = with_timeout(refused).err().unwrap().to_string();
            assert!(error.contains(FETCH_TIMEOUT_MS), "{error}");
        }
    }
}
