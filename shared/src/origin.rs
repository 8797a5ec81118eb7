//! The origin side for axum resource APIs: accept only requests the edge verified.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use shared::origin::EdgeAuthLayer;
//! use shared::{AssertionKey, AssertionVerifier, EdgeIdentity};
//!
//! async fn whoami(identity: EdgeIdentity) -> String {
//!     format!("hello {} via {}", identity.sub, identity.client_id)
//! }
//!
//! # fn build() -> Result<Router, shared::assertion::AssertionKeyError> {
//! let key = AssertionKey::new("k1", b"0123456789abcdef0123456789abcdef")?;
//! let app = Router::new()
//!     .route("/whoami", get(whoami))
//!     .layer(EdgeAuthLayer::new(
//!         AssertionVerifier::new(vec![key], shared::assertion::DEFAULT_MAX_AGE_MS)
//!             // This origin's name, as the edge's ORIGIN_URL gives it.
//!             .for_host("api.internal.example"),
//!     ));
//! # Ok(app) }
//! ```
//!
//! Routes that need scopes say so with [`RequireScopesLayer`] as a `route_layer`, behind the
//! edge's own route table (defence in depth):
//!
//! ```no_run
//! # use axum::{routing::get, Router};
//! use shared::origin::RequireScopesLayer;
//! use shared::{ScopeRequirement, Scopes};
//!
//! # fn build() -> Option<Router> {
//! let orders = Router::<()>::new().route(
//!     "/orders",
//!     get(|| async { "orders" })
//!         .route_layer(RequireScopesLayer::new(ScopeRequirement::new(
//!             Scopes::parse("orders:read")?,
//!             Scopes::default(),
//!         ))),
//! );
//! # Some(orders) }
//! ```
//!
//! The request line checked against the assertion is the one this origin received: the
//! method, the path and the exact query, and the host the verifier was configured with
//! ([`AssertionVerifier::for_host`]; without it the `Host` header, or the URI's authority in
//! HTTP/2, which the sender chooses). This adapter reads the system clock; the core never does.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, Request, StatusCode};

use crate::assertion::{
    AssertionError, AssertionVerifier, EdgeIdentity, RequestLine, ASSERTION_HEADER,
};
use crate::claims::ScopeRequirement;
use crate::rejection::Rejection;
use crate::time::UnixTime;

/// The realm of this adapter's challenges (the 401's fixed challenge spells it too).
const REALM: &str = "edgeward-origin";

/// Verifies the edge assertion on every request: on success the [`EdgeIdentity`] goes into
/// the request extensions for handlers; otherwise the request is answered 401 and never
/// reaches the inner service.
#[derive(Debug, Clone)]
pub struct EdgeAuthLayer {
    verifier: Arc<AssertionVerifier>,
}

impl EdgeAuthLayer {
    /// A layer accepting assertions `verifier` accepts.
    #[must_use]
    pub fn new(verifier: AssertionVerifier) -> Self {
        Self {
            verifier: Arc::new(verifier),
        }
    }
}

impl<S> tower::Layer<S> for EdgeAuthLayer {
    type Service = EdgeAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        EdgeAuth {
            inner,
            verifier: Arc::clone(&self.verifier),
        }
    }
}

/// The service [`EdgeAuthLayer`] wraps around the application.
#[derive(Debug, Clone)]
pub struct EdgeAuth<S> {
    inner: S,
    verifier: Arc<AssertionVerifier>,
}

impl<S, B> tower::Service<Request<B>> for EdgeAuth<S>
where
    S: tower::Service<Request<B>, Response = Response> + Send,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // A value that is not visible ASCII is no assertion (empty: malformed), but it still
        // counts as one.
        let values: Vec<&str> = request
            .headers()
            .get_all(ASSERTION_HEADER)
            .iter()
            .map(|value| value.to_str().unwrap_or(""))
            .collect();
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|value| value.to_str().ok())
            .or_else(|| request.uri().authority().map(http::uri::Authority::as_str))
            .unwrap_or("");
        // The target as it arrived: inside a nested router, axum has stripped the prefix
        // from `uri()` (keeping the whole in `OriginalUri`), and an assertion for `/orders`
        // must not pass at `/v1/orders`.
        let uri = request
            .extensions()
            .get::<axum::extract::OriginalUri>()
            .map_or(request.uri(), |original| &original.0);
        let line = RequestLine {
            method: request.method().as_str(),
            host,
            path: uri.path(),
            query: uri.query(),
        };
        let verified = self.verifier.verify_values(values, &line, system_now());
        let admitted = verified
            .map(|identity| {
                request.extensions_mut().insert(identity);
            })
            .map_err(|error| unauthorized(&error));
        call_or_answer(&mut self.inner, request, admitted)
    }
}

/// The inner service's answer for an admitted request, else the refusal, without calling it.
fn call_or_answer<S, B>(
    inner: &mut S,
    request: Request<B>,
    admitted: Result<(), Response>,
) -> Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>
where
    S: tower::Service<Request<B>, Response = Response>,
    S::Future: Send + 'static,
{
    match admitted {
        Ok(()) => Box::pin(inner.call(request)),
        Err(response) => Box::pin(async move { Ok(response) }),
    }
}

/// Requires scopes of the edge-verified identity on the routes it wraps (a `route_layer`
/// under [`EdgeAuthLayer`]): a request without an identity is 401, one whose scopes fall
/// short is 403 `insufficient_scope` naming the scopes needed, as the edge answers it, and
/// the handler never runs.
#[derive(Debug, Clone)]
pub struct RequireScopesLayer {
    required: Arc<ScopeRequirement>,
}

impl RequireScopesLayer {
    /// A layer requiring `required`.
    #[must_use]
    pub fn new(required: ScopeRequirement) -> Self {
        Self {
            required: Arc::new(required),
        }
    }
}

impl<S> tower::Layer<S> for RequireScopesLayer {
    type Service = RequireScopes<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireScopes {
            inner,
            required: Arc::clone(&self.required),
        }
    }
}

/// The service [`RequireScopesLayer`] wraps around a route.
#[derive(Debug, Clone)]
pub struct RequireScopes<S> {
    inner: S,
    required: Arc<ScopeRequirement>,
}

impl<S, B> tower::Service<Request<B>> for RequireScopes<S>
where
    S: tower::Service<Request<B>, Response = Response> + Send,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let checked = match request.extensions().get::<EdgeIdentity>() {
            Some(identity) => self
                .required
                .check(&identity.scope)
                .map_err(|refused| refused_response(&refused)),
            None => Err(unauthorized(&AssertionError::Missing)),
        };
        call_or_answer(&mut self.inner, request, checked)
    }
}

fn system_now() -> UnixTime {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    UnixTime::from_millis(millis)
}

/// The one mapping of an assertion failure to HTTP: 401, RFC 6750 body and challenge.
fn unauthorized(error: &AssertionError) -> Response {
    let body = serde_json::json!({
        "error": "invalid_token",
        "error_description": error.to_string(),
        "reason": error.reason(),
    });
    let challenge =
        HeaderValue::from_static("Bearer realm=\"edgeward-origin\", error=\"invalid_token\"");
    json_response(StatusCode::UNAUTHORIZED, body.to_string(), Some(challenge))
}

/// The one mapping of a token rejection to HTTP here (a route's missing scopes): its
/// status, RFC 6750 challenge and body.
fn refused_response(rejection: &Rejection) -> Response {
    let status = StatusCode::from_u16(rejection.status()).unwrap_or(StatusCode::FORBIDDEN);
    let challenge = rejection
        .www_authenticate(REALM)
        .and_then(|value| HeaderValue::from_str(&value).ok());
    json_response(status, rejection.json_body(), challenge)
}

/// A JSON answer of this adapter's own, with its challenge when it has one.
fn json_response(status: StatusCode, body: String, challenge: Option<HeaderValue>) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(challenge) = challenge {
        headers.insert(header::WWW_AUTHENTICATE, challenge);
    }
    response
}

impl<S: Send + Sync> FromRequestParts<S> for EdgeIdentity {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<EdgeIdentity>()
            .cloned()
            .ok_or_else(|| unauthorized(&AssertionError::Missing))
    }
}
