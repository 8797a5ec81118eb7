//! Settings from wrangler vars and secrets (names match `wrangler.toml`).

use shared::{AssertionKey, AssertionSigner, Validation};
use worker::Env;

/// Var: the exact `iss`.
pub(crate) const ISSUER: &str = "ISSUER";
/// Var: the audience tokens must carry.
pub(crate) const AUDIENCE: &str = "AUDIENCE";
/// Var: JWKS URLs in order (geo-DNS name first, regional fallbacks after), space-separated.
pub(crate) const JWKS_URLS: &str = "JWKS_URLS";
/// Var: the origin base URL, e.g. `https://api.internal.example`.
pub(crate) const ORIGIN_URL: &str = "ORIGIN_URL";
/// Var: the id of the assertion key in use.
pub(crate) const ASSERTION_KEY_ID: &str = "ASSERTION_KEY_ID";
/// Secret: the assertion HMAC key (at least 32 bytes).
pub(crate) const ASSERTION_SECRET: &str = "ASSERTION_SECRET";

/// Everything a request needs, read from the environment.
pub(crate) struct Config {
    pub(crate) validation: Validation,
    pub(crate) jwks_urls: Vec<String>,
    pub(crate) origin_url: String,
    pub(crate) signer: AssertionSigner,
}

/// A setting is missing or invalid (an ops error: the request gets a generic 500).
#[derive(Debug, thiserror::Error)]
#[error("edge configuration: {0}")]
pub(crate) struct ConfigError(pub(crate) String);

fn var(env: &Env, name: &str) -> Result<String, ConfigError> {
    env.var(name)
        .map(|value| value.to_string())
        .map_err(|_| ConfigError(format!("var {name} is not set")))
}

impl Config {
    pub(crate) fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let jwks_urls: Vec<String> = var(env, JWKS_URLS)?
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if jwks_urls.is_empty() {
            return Err(ConfigError(format!("var {JWKS_URLS} lists no URL")));
        }
        let secret = env
            .secret(ASSERTION_SECRET)
            .map(|value| value.to_string())
            .map_err(|_| ConfigError(format!("secret {ASSERTION_SECRET} is not set")))?;
        let key = AssertionKey::new(&var(env, ASSERTION_KEY_ID)?, secret.as_bytes())
            .map_err(|err| ConfigError(err.to_string()))?;
        Ok(Self {
            validation: Validation::new(var(env, ISSUER)?, var(env, AUDIENCE)?),
            jwks_urls,
            origin_url: var(env, ORIGIN_URL)?.trim_end_matches('/').to_owned(),
            signer: AssertionSigner::new(key),
        })
    }
}
