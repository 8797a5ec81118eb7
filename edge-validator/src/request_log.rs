//! One JSON log line per request: outcome, reason code, client, timings, key-set state.
//! Timings are wall-clock milliseconds around I/O (the Workers clock does not advance during
//! pure computation, so CPU time shows in the platform's own metrics, not here). Never logs
//! a token or the assertion.

use std::cell::Cell;
use std::sync::Arc;

use serde::Serialize;
use shared::{UnixTime, VerifiedToken};
use wasm_bindgen::JsValue;

use crate::config::Config;
use crate::error::EdgeError;
use crate::rate_limit::Source;
use crate::request_url::RequestUrl;

/// What one request did; written by [`RequestLog::finish`].
#[derive(Debug, Serialize)]
pub(crate) struct RequestLog {
    #[serde(skip)]
    started: UnixTime,
    method: String,
    path: String,
    outcome: &'static str,
    reason: Option<&'static str>,
    status: u16,
    /// The verified token, logged as its `client_id` (held rather than copied: with
    /// `LOG_FORWARDED_EVERY` sampling, most forwarded requests never write their line).
    #[serde(rename = "client", serialize_with = "client_id")]
    pub(crate) verified: Option<Arc<VerifiedToken>>,
    /// Whether the verified-token cache answered (no crypto).
    pub(crate) cache_hit: bool,
    /// Time getting keys and verifying, on a cache miss.
    pub(crate) jwks_ms: Option<u64>,
    /// Time deciding the rate limit.
    pub(crate) limit_ms: Option<u64>,
    #[serde(serialize_with = "source_name")]
    pub(crate) limit_source: Option<Source>,
    /// Time until the origin's response headers arrived.
    pub(crate) origin_ms: Option<u64>,
    total_ms: u64,
    jwks: &'static str,
    revocations_age_ms: Option<u64>,
}

fn client_id<S: serde::Serializer>(
    verified: &Option<Arc<VerifiedToken>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match verified {
        Some(verified) => s.serialize_str(&verified.claims().client_id),
        None => s.serialize_none(),
    }
}

fn source_name<S: serde::Serializer>(source: &Option<Source>, s: S) -> Result<S::Ok, S::Error> {
    match source {
        Some(source) => s.serialize_str(source.as_str()),
        None => s.serialize_none(),
    }
}

impl RequestLog {
    pub(crate) fn start(method: String, url: &RequestUrl, started: UnixTime) -> Self {
        Self {
            started,
            method,
            path: url.path().to_owned(),
            outcome: "forwarded",
            reason: None,
            status: 0,
            verified: None,
            cache_hit: false,
            jwks_ms: None,
            limit_ms: None,
            limit_source: None,
            origin_ms: None,
            total_ms: 0,
            jwks: "missing",
            revocations_age_ms: None,
        }
    }

    /// The request's method.
    pub(crate) fn method(&self) -> &str {
        &self.method
    }

    /// The request was answered by the edge with `error`.
    pub(crate) fn failed(&mut self, error: &EdgeError) {
        let (outcome, reason) = error.log_fields();
        self.outcome = outcome;
        self.reason = Some(reason);
    }

    /// Writes the line for an answer with `status`, with the key-set and revocation state
    /// now; a forwarded request's only one in `log_forwarded_every` (refusals and errors
    /// always).
    pub(crate) fn finish(mut self, config: &Config, status: u16) {
        if self.outcome == "forwarded" && !sampled(config.log_forwarded_every) {
            return;
        }
        let now = crate::clock::now();
        self.status = status;
        self.total_ms = now.millis_since(self.started);
        self.jwks = crate::jwks_cache::freshness_name(crate::jwks_cache::freshness(config, now));
        self.revocations_age_ms = crate::revocations::age_ms(now);
        match serde_json::to_string(&self) {
            Ok(line) => web_sys::console::log_1(&line.into()),
            Err(err) => console_error!("request log: {err}"),
        }
    }
}

thread_local! {
    /// Forwarded requests seen by this isolate, for sampling.
    static FORWARDED: Cell<u64> = const { Cell::new(0) };
}

/// Whether this forwarded request is the one in `every` to log (the first is).
fn sampled(every: u64) -> bool {
    match every {
        0 => false,
        1 => true,
        every => FORWARDED.with(|count| {
            let seen = count.get();
            count.set(seen.wrapping_add(1));
            seen % every == 0
        }),
    }
}

/// One operational line that is not a request's (a failed fetch, revoked keys): `event`
/// names it, the other members are there when set. One serialized shape for every event,
/// rather than a `serde_json::Value` built per line (that links `Value` and its map).
#[derive(Debug, Default, Serialize)]
pub(crate) struct Event<'a> {
    pub(crate) event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) kids: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) urls: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) state: Option<&'static str>,
}

/// How loud an [`Event`] is (the console method, so Workers Logs keeps the level).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Level {
    Log,
    Warn,
    Error,
}

impl<'a> Event<'a> {
    /// `event` for a fetch of `url` that failed for `reason` (logged as a warning: the next
    /// URL, or the next pull, is tried).
    pub(crate) fn fetch_failed(event: &'static str, url: &'a str, reason: &'a str) {
        Event {
            event,
            url: Some(url),
            reason: Some(reason),
            ..Event::default()
        }
        .emit(Level::Warn);
    }

    /// Writes the line at `level`.
    pub(crate) fn emit(&self, level: Level) {
        // Strings and integers into a String: cannot fail.
        let line = JsValue::from(serde_json::to_string(self).unwrap_or_default());
        match level {
            Level::Log => web_sys::console::log_1(&line),
            Level::Warn => web_sys::console::warn_1(&line),
            Level::Error => web_sys::console::error_1(&line),
        }
    }
}
