//! Every HTTP error the issuer sends, mapped to a response in exactly one place.
//!
//! Client mistakes get the RFC 6749 §5.2 error body; server trouble gets a generic body (the
//! detail is logged, never sent). Nothing a client sends produces a 500.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// An error answer from the token endpoint or any other route.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// `invalid_request` (400): malformed, missing or repeated parameters, wrong content type.
    #[error("{0}")]
    InvalidRequest(&'static str),
    /// `invalid_request` (400) with a message of the input's own (the admin API's bodies).
    #[error("{0}")]
    InvalidInput(String),
    /// `invalid_request` (413): the body exceeds the limit.
    #[error("request body too large")]
    TooLarge,
    /// `invalid_client` (401 with a `Basic` challenge): unknown, disabled or wrong secret.
    #[error("client authentication failed")]
    InvalidClient,
    /// `unsupported_grant_type` (400).
    #[error("only the client_credentials grant is supported")]
    UnsupportedGrantType,
    /// `invalid_scope` (400): a requested scope the client does not have.
    #[error("requested scope is not allowed for this client")]
    InvalidScope,
    /// `invalid_target` (400, RFC 8707): a `resource` the client may not address.
    #[error("requested resource is not allowed for this client")]
    InvalidTarget,
    /// `unauthorized_client` (403): an authenticated client that may not use this endpoint
    /// (introspection is for resource servers).
    #[error("this client may not use this endpoint")]
    UnauthorizedClient,
    /// `too_many_requests` (429 with `Retry-After`): over the token endpoint's limit.
    #[error("too many requests")]
    TooManyRequests {
        /// Seconds until a request would be allowed.
        retry_after_secs: u64,
    },
    /// A bearer-token endpoint without a token (401 with a bare `Bearer` challenge, RFC 6750
    /// §3.1).
    #[error("a bearer token is required")]
    NoToken(Realm),
    /// `invalid_token` (401): the admin token is malformed, expired, revoked, for another
    /// audience, or its client is disabled; or the registration access token is not this
    /// client's.
    #[error("the bearer token is not valid")]
    InvalidToken(Realm),
    /// `insufficient_scope` (403): the token lacks the admin power (scope) this endpoint needs.
    #[error("this token lacks the scope {0}")]
    InsufficientScope(&'static str),
    /// `invalid_client_metadata` (400, RFC 7591 §3.2.2): a registration's metadata is not
    /// acceptable.
    #[error("{0}")]
    InvalidClientMetadata(String),
    /// `invalid_redirect_uri` (400, RFC 7591 §3.2.2): this issuer has no redirect-based flow.
    #[error("this issuer grants client credentials only: a client has no redirect_uris")]
    InvalidRedirectUri,
    /// `invalid_request` (409): the audit chain does not hold (the first bad row named).
    #[error("{0}")]
    AuditBroken(String),
    /// `invalid_dpop_proof` or `use_dpop_nonce` (400, RFC 9449 §5 and §8): the token request's
    /// DPoP proof is missing where the client requires one, malformed, for another request,
    /// stale, replayed, or lacks a fresh nonce. (A backend failure is 503.)
    #[error("{}", .0.description())]
    Dpop(shared::ProofError),
    /// No such route or resource (404).
    #[error("not found")]
    NotFound,
    /// `temporarily_unavailable` (503): the database or signing key is not available.
    #[error("the service is temporarily unavailable")]
    Unavailable(String),
    /// `temporarily_unavailable` (503 with `Retry-After`): the client's tokens were revoked
    /// seconds ago, and a token issued now would fall under that revocation.
    #[error("this client's tokens were revoked moments ago: new ones can be issued shortly")]
    RevokedMomentsAgo {
        /// Seconds until a token can be issued.
        retry_after_secs: u64,
    },
    /// `server_error` (500): a bug; logged with detail, sent generically.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest(_)
            | Self::InvalidInput(_)
            | Self::UnsupportedGrantType
            | Self::InvalidScope
            | Self::InvalidTarget
            | Self::InvalidClientMetadata(_)
            | Self::InvalidRedirectUri => StatusCode::BAD_REQUEST,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Dpop(error) if error.error_code().is_none() => StatusCode::SERVICE_UNAVAILABLE,
            Self::Dpop(_) => StatusCode::BAD_REQUEST,
            Self::NoToken(_) | Self::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            Self::InsufficientScope(_) => StatusCode::FORBIDDEN,
            Self::AuditBroken(_) => StatusCode::CONFLICT,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::InvalidClient => StatusCode::UNAUTHORIZED,
            Self::UnauthorizedClient => StatusCode::FORBIDDEN,
            Self::Unavailable(_) | Self::RevokedMomentsAgo { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The RFC 6749 `error` code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) | Self::InvalidInput(_) | Self::TooLarge | Self::NoToken(_) => {
                "invalid_request"
            }
            Self::InvalidToken(_) => "invalid_token",
            Self::Dpop(error) => error
                .error_code()
                .map_or("temporarily_unavailable", |code| code.as_str()),
            Self::InvalidClientMetadata(_) => "invalid_client_metadata",
            Self::InvalidRedirectUri => "invalid_redirect_uri",
            Self::InsufficientScope(_) => "insufficient_scope",
            Self::AuditBroken(_) => "audit_chain_broken",
            Self::InvalidClient => "invalid_client",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::InvalidTarget => "invalid_target",
            Self::NotFound => "not_found",
            Self::TooManyRequests { .. } => "too_many_requests",
            Self::Unavailable(_) | Self::RevokedMomentsAgo { .. } => "temporarily_unavailable",
            Self::Internal(_) => "server_error",
        }
    }
}

/// Which bearer token an endpoint wants, named in its challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Realm {
    /// The admin API (and RFC 7591 registration, whose initial access token is an admin
    /// token): this issuer's access tokens for the admin audience.
    Admin,
    /// RFC 7592 registration management: the client's registration access token.
    Registration,
    /// The revocation feed: a feed token (`ISSUER_FEED_TOKENS`).
    Feed,
}

impl Realm {
    /// The challenge's `realm`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Admin => "edgeward-admin",
            Self::Registration => "edgeward-registration",
            Self::Feed => "edgeward-feed",
        }
    }
}

impl From<crate::dpop::DpopError> for ApiError {
    fn from(err: crate::dpop::DpopError) -> Self {
        match err {
            crate::dpop::DpopError::Proof(error) => Self::Dpop(error),
            // Logged with what failed: the replay store, not any database read.
            store @ crate::dpop::DpopError::Store(_) => Self::Unavailable(store.to_string()),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        Self::Unavailable(format!("database: {err}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Unavailable(detail) => {
                tracing::warn!(error = %detail, "request failed: unavailable")
            }
            Self::Internal(detail) => {
                tracing::error!(error = %detail, "request failed: internal error")
            }
            _ => {}
        }
        let body =
            serde_json::json!({ "error": self.code(), "error_description": self.to_string() });
        let mut response = (self.status(), axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if matches!(self, Self::InvalidClient) {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"edgeward\""),
            );
        }
        // RFC 6750 §3: the bearer-token endpoints' challenges.
        let challenge = match &self {
            Self::NoToken(realm) => Some(format!("Bearer realm=\"{}\"", realm.name())),
            Self::InvalidToken(realm) => Some(format!(
                "Bearer realm=\"{}\", error=\"invalid_token\"",
                realm.name()
            )),
            Self::InsufficientScope(scope) => Some(format!(
                "Bearer realm=\"{}\", error=\"insufficient_scope\", scope=\"{scope}\"",
                Realm::Admin.name()
            )),
            _ => None,
        };
        if let Some(value) = challenge.and_then(|value| HeaderValue::from_str(&value).ok()) {
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
        match self {
            Self::TooManyRequests { retry_after_secs }
            | Self::RevokedMomentsAgo { retry_after_secs } => {
                if let Ok(value) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                    headers.insert(header::RETRY_AFTER, value);
                }
            }
            _ if self.status() == StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        response
    }
}
