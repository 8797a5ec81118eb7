//! One JSON log line per request: outcome, reason code, client, timings, key-set state.
//! Timings are wall-clock milliseconds around I/O (the Workers clock does not advance during
//! pure computation, so CPU time shows in the platform's own metrics, not here). Never logs
//! a token or the assertion.

use std::rc::Rc;
use std::sync::Arc;

use serde::Serialize;
use shared::{UnixTime, VerifiedToken};

use super::limits::Source;
use super::reply::EdgeError;

/// What one request did; written by [`RequestLog::finish`].
#[derive(Debug, Serialize)]
pub(crate) struct RequestLog {
    #[serde(skip)]
    started: UnixTime,
    method: String,
    path: String,
    /// The id of the route that took the request (`None`: no route, or a path refused
    /// before routing).
    #[serde(serialize_with = "route_id")]
    pub(crate) route: Option<Rc<str>>,
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
    /// The thumbprint of the DPoP key the request proved (a sender-constrained token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) dpop_jkt: Option<shared::Jkt>,
    /// Time checking the DPoP proof (its signature and the replay object).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) dpop_ms: Option<u64>,
    /// Whether a refusal is challenged with the `DPoP` scheme (the request used it, or its
    /// route requires it).
    #[serde(skip)]
    pub(crate) dpop_challenge: bool,
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

fn route_id<S: serde::Serializer>(route: &Option<Rc<str>>, s: S) -> Result<S::Ok, S::Error> {
    match route {
        Some(route) => s.serialize_str(route),
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
    pub(crate) fn start(method: String, path: &str, started: UnixTime) -> Self {
        Self {
            started,
            method,
            path: path.to_owned(),
            route: None,
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
            dpop_jkt: None,
            dpop_ms: None,
            dpop_challenge: false,
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

    /// Whether the request went to the origin (sampled) rather than being answered by the
    /// edge (always logged).
    pub(crate) fn forwarded(&self) -> bool {
        self.outcome == "forwarded"
    }

    /// The line for an answer with `status` at `now`, with the key-set state `jwks` and the
    /// revocation list's age then.
    pub(crate) fn line(
        mut self,
        status: u16,
        now: UnixTime,
        jwks: &'static str,
        revocations_age_ms: Option<u64>,
    ) -> String {
        self.status = status;
        self.total_ms = now.millis_since(self.started);
        self.jwks = jwks;
        self.revocations_age_ms = revocations_age_ms;
        // Strings and integers into a String: cannot fail.
        serde_json::to_string(&self).unwrap_or_default()
    }
}

/// Picks one forwarded request in `every` to log (the first is); 0 logs none.
#[derive(Debug, Default)]
pub(crate) struct Sampler {
    seen: u64,
}

impl Sampler {
    pub(crate) fn sampled(&mut self, every: u64) -> bool {
        match every {
            0 => false,
            1 => true,
            every => {
                let seen = self.seen;
                self.seen = seen.wrapping_add(1);
                seen % every == 0
            }
        }
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
    /// A rate-limit key (a lease's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) key: Option<&'a str>,
    /// A lease's number in its object's book, as a string: past 2^53, so not a JSON number
    /// a log reader keeps exactly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) lease: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) permits: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) retry_after_ms: Option<u64>,
}

impl<'a> Event<'a> {
    /// An `event` with no other member (set them with struct update syntax).
    pub(crate) fn of(event: &'static str) -> Self {
        Self {
            event,
            ..Self::default()
        }
    }

    /// The line.
    pub(crate) fn line(&self) -> String {
        // Strings and integers into a String: cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The line of an operational `event` the driver writes itself (with its `reason`, if any).
pub fn event_line(event: &'static str, reason: &str) -> String {
    Event {
        event,
        reason: (!reason.is_empty()).then_some(reason),
        ..Event::default()
    }
    .line()
}

/// What became of a lease, for its log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaseEvent {
    /// A request with no permit left asked, and got a lease.
    Granted,
    /// A background renewal got the next lease.
    Renewed,
    /// Permits given up here went back to the object with an ask that was answered.
    Returned,
    /// The object denied the ask: no permits until `retry_after_ms`.
    Denied,
    /// The ask got no usable answer.
    AskFailed,
}

impl LeaseEvent {
    /// Its `event` in the log.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::Granted => "lease_granted",
            Self::Renewed => "lease_renewed",
            Self::Returned => "lease_returned",
            Self::Denied => "lease_denied",
            Self::AskFailed => "lease_ask_failed",
        }
    }
}
