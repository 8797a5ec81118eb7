//! The one place failures become responses.

use shared::rate_limit::{POLICY_HEADER, RATE_LIMIT_HEADER};
use shared::{Decision, RatePlan, Rejection};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};

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

#[wasm_bindgen(module = "/js/io.js")]
extern "C" {
    #[allow(clippy::too_many_arguments)] // one boundary crossing for the whole answer
    #[wasm_bindgen(catch)]
    fn respond(
        status: u16,
        body: &str,
        challenge: Option<&str>,
        retry_after: Option<&str>,
        policy_name: &str,
        policy: Option<&str>,
        rate_limit_name: &str,
        rate_limit: Option<&str>,
    ) -> Result<web_sys::Response, JsValue>;
}

/// A JSON answer of the edge's own (`/.edge/health`).
pub(crate) fn json_response(status: u16, body: &str) -> Result<web_sys::Response, JsValue> {
    respond(status, body, None, None, "", None, "", None)
}

/// The response for `error`. (Building it fails only if the runtime refuses a fixed header:
/// thrown, like any runtime error.)
pub(crate) fn error_response(error: &EdgeError) -> Result<web_sys::Response, JsValue> {
    let mut challenge = None;
    let mut limited = None;
    let (status, body) = match error {
        EdgeError::Rejected(rejection) => {
            challenge = rejection.www_authenticate(REALM);
            (rejection.status(), rejection.json_body())
        }
        EdgeError::RateLimited {
            decision,
            plan,
            policy,
        } => {
            limited = Some((
                decision.retry_after_secs().to_string(),
                plan.policy_header(policy),
                decision.rate_limit_header(policy),
            ));
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
            web_sys::console::error_1(&format!("edge internal error: {detail}").into());
            (500, r#"{"error":"server_error","error_description":"internal error"}"#.to_owned())
        }
    };
    let limited = limited.as_ref();
    respond(
        status,
        &body,
        challenge.as_deref(),
        limited.map(|(retry_after, _, _)| retry_after.as_str()),
        POLICY_HEADER,
        limited.map(|(_, policy, _)| policy.as_str()),
        RATE_LIMIT_HEADER,
        limited.map(|(_, _, rate_limit)| rate_limit.as_str()),
    )
}

/// A JS exception or rejection as text, for logs.
pub(crate) fn js_error_text(err: &JsValue) -> String {
    err.as_string()
        .or_else(|| {
            err.dyn_ref::<js_sys::Error>()
                .map(|e| String::from(e.message()))
        })
        .unwrap_or_else(|| format!("{err:?}"))
}
