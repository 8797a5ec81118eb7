//! The one place failures become responses.

use shared::rate_limit::{POLICY_HEADER, RATE_LIMIT_HEADER};
use shared::{Decision, RatePlan, Rejection};
use worker::{Headers, Response};

use crate::rate_limit::Subject;

/// Realm in `WWW-Authenticate`.
const REALM: &str = "edgeward";

/// Why the edge answered instead of the origin.
#[derive(Debug)]
pub(crate) enum EdgeError {
    /// The token or request was refused (RFC 6750 status, body and challenge).
    Rejected(Rejection),
    /// Over a rate limit: 429 with `Retry-After` and the `RateLimit` headers.
    RateLimited {
        /// The denying decision.
        decision: Decision,
        /// The plan that denied.
        plan: RatePlan,
        /// Its policy name.
        policy: &'static str,
    },
    /// No key set could be obtained and none is cached.
    NoKeys,
    /// The origin could not be reached.
    OriginUnreachable,
    /// Misconfiguration or a runtime failure; detail is logged, not sent.
    Internal(String),
}

impl EdgeError {
    /// The outcome and reason code for the request log.
    pub(crate) fn log_fields(&self) -> (&'static str, &'static str) {
        match self {
            Self::Rejected(rejection) => ("rejected", rejection.reason()),
            Self::RateLimited { policy, .. } => ("rate_limited", policy),
            Self::NoKeys => ("unavailable", "no_keys"),
            Self::OriginUnreachable => ("bad_gateway", "origin_unreachable"),
            Self::Internal(_) => ("error", "internal"),
        }
    }
}

impl EdgeError {
    /// The 429 for `subject`, denied by `decision` under `plan`.
    pub(crate) fn rate_limited(decision: Decision, plan: RatePlan, subject: Subject<'_>) -> Self {
        Self::RateLimited {
            decision,
            plan,
            policy: subject.policy(),
        }
    }
}

impl From<Rejection> for EdgeError {
    fn from(rejection: Rejection) -> Self {
        Self::Rejected(rejection)
    }
}

/// The response for `error`.
pub(crate) fn error_response(error: &EdgeError) -> worker::Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    headers.set("cache-control", "no-store")?;
    let (status, body) = match error {
        EdgeError::Rejected(rejection) => {
            if let Some(challenge) = rejection.www_authenticate(REALM) {
                headers.set("www-authenticate", &challenge)?;
            }
            (rejection.status(), rejection.json_body())
        }
        EdgeError::RateLimited {
            decision,
            plan,
            policy,
        } => {
            headers.set("retry-after", &decision.retry_after_secs().to_string())?;
            headers.set(POLICY_HEADER, &plan.policy_header(policy))?;
            headers.set(RATE_LIMIT_HEADER, &decision.rate_limit_header(policy))?;
            (
                429,
                r#"{"error":"too_many_requests","error_description":"rate limit exceeded; see Retry-After"}"#.to_owned(),
            )
        }
        EdgeError::NoKeys => (
            503,
            r#"{"error":"temporarily_unavailable","error_description":"token keys are unavailable"}"#.to_owned(),
        ),
        EdgeError::OriginUnreachable => (
            502,
            r#"{"error":"bad_gateway","error_description":"the origin is unreachable"}"#.to_owned(),
        ),
        EdgeError::Internal(detail) => {
            worker::console_error!("edge internal error: {detail}");
            (500, r#"{"error":"server_error","error_description":"internal error"}"#.to_owned())
        }
    };
    Ok(Response::ok(body)?
        .with_status(status)
        .with_headers(headers))
}
