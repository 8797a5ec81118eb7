//! The one place failures become responses.

use shared::path::PathError;
use shared::{Decision, RatePlan, Rejection};

use super::io::ForwardError;
use super::limits::Subject;

/// Realm in `WWW-Authenticate`.
const REALM: &str = "edgeward";

/// Why the edge answered instead of the origin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EdgeError {
    /// The token or request was refused (RFC 6750 status, body and challenge).
    #[error("{0}")]
    Rejected(Rejection),
    /// The request path has no one reading (an encoded `/`, a `;`, a double escape...): 400
    /// `invalid_request`, no challenge (the token is not the problem).
    #[error("bad path: {0}")]
    BadPath(PathError),
    /// No route takes the request, or its route denies it: 404, the same answer either way.
    #[error("no route")]
    NoRoute,
    /// The declared body is over the route's `max_body`: 413.
    #[error("body over {max} bytes")]
    BodyTooLarge {
        /// The route's limit.
        max: u64,
    },
    /// A route with `max_body` got a body without `Content-Length`: 411.
    #[error("body without a length")]
    LengthRequired,
    /// Over a rate limit: 429 with `Retry-After` and the `RateLimit` headers.
    #[error("rate limited ({policy})")]
    RateLimited {
        /// The denying decision.
        decision: Decision,
        /// The plan that denied.
        plan: RatePlan,
        /// Its policy name.
        policy: &'static str,
    },
    /// No key set could be obtained and none is cached: 503.
    #[error("no usable key set")]
    NoKeys,
    /// The origin could not be reached (the runtime's reason is logged, not sent): 502.
    #[error("origin unreachable: {0}")]
    OriginUnreachable(String),
    /// Misconfiguration or a runtime failure (logged, not sent): 500.
    #[error("internal: {0}")]
    Internal(String),
}

impl EdgeError {
    /// The outcome and reason code for the request log.
    pub(crate) fn log_fields(&self) -> (&'static str, &'static str) {
        match self {
            Self::Rejected(rejection) => ("rejected", rejection.reason()),
            Self::BadPath(error) => ("bad_request", error.reason()),
            Self::NoRoute => ("not_found", "no_route"),
            Self::BodyTooLarge { .. } => ("bad_request", "body_too_large"),
            Self::LengthRequired => ("bad_request", "length_required"),
            Self::RateLimited { policy, .. } => ("rate_limited", policy),
            Self::NoKeys => ("unavailable", "no_keys"),
            Self::OriginUnreachable(_) => ("bad_gateway", "origin_unreachable"),
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

impl From<ForwardError> for EdgeError {
    fn from(error: ForwardError) -> Self {
        match error {
            ForwardError::Build(detail) => Self::Internal(detail),
            ForwardError::Unreachable(detail) => Self::OriginUnreachable(detail),
        }
    }
}

impl From<Rejection> for EdgeError {
    fn from(rejection: Rejection) -> Self {
        Self::Rejected(rejection)
    }
}

/// The edge's own answer, as the driver builds it: JSON with `cache-control: no-store`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    /// `WWW-Authenticate`.
    pub challenge: Option<String>,
    /// `Retry-After`, in seconds.
    pub retry_after: Option<String>,
    /// `RateLimit-Policy` and `RateLimit`.
    pub rate_limit: Option<RateLimitHeaders>,
    /// `DPoP-Nonce`: the edge's nonce to make the next proof with (RFC 9449 §9).
    pub dpop_nonce: Option<String>,
}

/// What the edge sets on the origin's response it passes on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Added {
    /// `RateLimit-Policy` and `RateLimit` (rate limiting on).
    pub rate_limit: Option<RateLimitHeaders>,
    /// `DPoP-Nonce`: the edge's current nonce, on the answer to a DPoP request when the
    /// edge requires nonces (it replaces any the origin sent).
    pub dpop_nonce: Option<String>,
}

/// The values of `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitHeaders {
    pub policy: String,
    pub rate_limit: String,
}

impl Reply {
    /// A JSON answer of the edge's own (`/.edge/health`).
    pub(crate) fn json(status: u16, body: String) -> Self {
        Self {
            status,
            body,
            challenge: None,
            retry_after: None,
            rate_limit: None,
            dpop_nonce: None,
        }
    }

    /// The answer for `error`; `dpop`: challenge with the `DPoP` scheme (RFC 9449 §7.1).
    pub(crate) fn of(error: &EdgeError, dpop: bool) -> Self {
        let mut reply = Self::json(0, String::new());
        (reply.status, reply.body) = match error {
            EdgeError::Rejected(rejection) => {
                reply.challenge = rejection.challenge(REALM, dpop);
                // The edge's own passing failure (a backend, the replay store): worth a retry.
                if rejection.is_server_side() {
                    reply.retry_after = Some("1".to_owned());
                }
                (rejection.status(), rejection.json_body())
            }
            EdgeError::BadPath(error) => (
                400,
                [
                    r#"{"error":"invalid_request","error_description":"the request path is refused ("#,
                    error.reason(),
                    r#")"}"#,
                ]
                .concat(),
            ),
            EdgeError::BodyTooLarge { max } => (
                413,
                [
                    r#"{"error":"invalid_request","error_description":"the body is over this route's limit of "#,
                    &max.to_string(),
                    r#" bytes"}"#,
                ]
                .concat(),
            ),
            EdgeError::LengthRequired => (
                411,
                r#"{"error":"invalid_request","error_description":"this route needs a Content-Length"}"#
                    .to_owned(),
            ),
            EdgeError::NoRoute => (
                404,
                r#"{"error":"not_found","error_description":"no route for this request"}"#
                    .to_owned(),
            ),
            EdgeError::RateLimited {
                decision,
                plan,
                policy,
            } => {
                reply.retry_after = Some(decision.retry_after_secs().to_string());
                reply.rate_limit = Some(RateLimitHeaders {
                    policy: plan.policy_header(policy),
                    rate_limit: decision.rate_limit_header(policy),
                });
                (
                    429,
                    r#"{"error":"too_many_requests","error_description":"rate limit exceeded; see Retry-After"}"#.to_owned(),
                )
            }
            EdgeError::NoKeys => (
                503,
                r#"{"error":"temporarily_unavailable","error_description":"token keys are unavailable"}"#.to_owned(),
            ),
            EdgeError::OriginUnreachable(_) => (
                502,
                r#"{"error":"bad_gateway","error_description":"the origin is unreachable"}"#.to_owned(),
            ),
            EdgeError::Internal(_) => (
                500,
                r#"{"error":"server_error","error_description":"internal error"}"#.to_owned(),
            ),
        };
        reply
    }
}
