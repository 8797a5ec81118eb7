//! The axum origin adapter: the layer lets edge-verified requests through with their
//! identity and answers everything else 401 without running the handler.
#![cfg(all(feature = "axum", not(target_arch = "wasm32")))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // tests may panic

mod fixtures;

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use fixtures::*;
use http::{Request, StatusCode};
use shared::assertion::ASSERTION_HEADER;
use shared::origin::EdgeAuthLayer;
use shared::{
    AssertionKey, AssertionSigner, AssertionVerifier, EdgeIdentity, RequestLine, UnixTime,
};
use tower::ServiceExt;

const SECRET: &[u8] = b"origin test secret, 32+ bytes long";

fn app() -> Router {
    let key = AssertionKey::new("k1", SECRET).unwrap();
    Router::new()
        .route(
            "/whoami",
            get(|identity: EdgeIdentity| async move {
                format!("{} {} {}", identity.sub, identity.client_id, identity.scope)
            }),
        )
        .layer(EdgeAuthLayer::new(AssertionVerifier::new(
            vec![key],
            30_000,
        )))
}

/// The host the test requests carry (`Host`), as the edge's `ORIGIN_URL` would name it.
const HOST: &str = "origin.test";

fn assertion(method: &str, path: &str) -> String {
    assertion_for(method, path, None)
}

fn assertion_for(method: &str, path: &str, query: Option<&str>) -> String {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let now = UnixTime::from_millis(now_ms);
    let verified = validator()
        .verify(&good_token(), &jwks(), fixtures::now())
        .unwrap();
    let mut claims = verified.into_claims();
    claims.exp = now.as_secs() + 300;
    let line = RequestLine {
        method,
        host: HOST,
        path,
        query,
    };
    let identity = EdgeIdentity::new(&claims, &line, now);
    AssertionSigner::new(AssertionKey::new("k1", SECRET).unwrap()).sign(&identity)
}

async fn call(request: Request<Body>) -> (StatusCode, http::HeaderMap, String) {
    let response = app().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn edge_verified_request_reaches_the_handler_with_identity() {
    let request = Request::get("/whoami?x=1")
        .header("host", HOST)
        .header(
            ASSERTION_HEADER,
            assertion_for("GET", "/whoami", Some("x=1")),
        )
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = call(request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "user-42 client-7 read write");
}

#[tokio::test]
async fn inside_a_nested_router_the_assertion_binds_the_whole_path() {
    let nested = Router::new().nest("/v1", app());
    let with = |path: &str| {
        Request::get("/v1/whoami")
            .header("host", HOST)
            .header(ASSERTION_HEADER, assertion("GET", path))
            .body(Body::empty())
            .unwrap()
    };
    let answer = nested.clone().oneshot(with("/v1/whoami")).await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    // One signed for the path the inner router sees is for another target.
    let answer = nested.oneshot(with("/whoami")).await.unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn everything_else_is_401_with_a_challenge() {
    let valid = assertion("GET", "/whoami");
    let requests = [
        Request::get("/whoami").body(Body::empty()).unwrap(),
        Request::get("/whoami")
            .header(ASSERTION_HEADER, "v1.k1.e30.AAAA")
            .body(Body::empty())
            .unwrap(),
        Request::get("/whoami")
            .header(ASSERTION_HEADER, assertion("POST", "/whoami"))
            .body(Body::empty())
            .unwrap(),
        Request::get("/whoami?x=1")
            .header(ASSERTION_HEADER, assertion("GET", "/other"))
            .body(Body::empty())
            .unwrap(),
        Request::get("/whoami")
            .header("host", HOST)
            .header(ASSERTION_HEADER, valid.clone())
            .header(ASSERTION_HEADER, valid.clone())
            .body(Body::empty())
            .unwrap(),
        // Another origin's host, or another query.
        Request::get("/whoami")
            .header("host", "admin.test")
            .header(ASSERTION_HEADER, valid)
            .body(Body::empty())
            .unwrap(),
        Request::get("/whoami?admin=1")
            .header("host", HOST)
            .header(ASSERTION_HEADER, assertion("GET", "/whoami"))
            .body(Body::empty())
            .unwrap(),
    ];
    for request in requests {
        let (status, headers, body) = call(request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(headers[http::header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Bearer "));
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"], "invalid_token");
    }
}

/// Issue 29, defence in depth: a route needing a scope the identity lacks is 403
/// `insufficient_scope` naming it, and its handler never runs; one the identity has passes.
#[tokio::test]
async fn a_route_requiring_a_scope_the_identity_lacks_is_403_insufficient_scope() {
    use shared::origin::RequireScopesLayer;
    use shared::{ScopeRequirement, Scopes};
    let key = AssertionKey::new("k1", SECRET).unwrap();
    let require = |all: &str, any: &str| {
        RequireScopesLayer::new(ScopeRequirement::new(
            Scopes::parse(all).unwrap(),
            Scopes::parse(any).unwrap(),
        ))
    };
    let app = Router::new()
        .route(
            "/admin",
            get(|| async { "admin" }).route_layer(require("admin", "")),
        )
        .route(
            "/orders",
            get(|| async { "orders" }).route_layer(require("read", "ops write")),
        )
        .layer(EdgeAuthLayer::new(AssertionVerifier::new(
            vec![key],
            30_000,
        )));
    let get_with_assertion = |path: &'static str| {
        Request::get(path)
            .header("host", HOST)
            .header(ASSERTION_HEADER, assertion("GET", path))
            .body(Body::empty())
            .unwrap()
    };
    // The fixture token's scopes are `read write`.
    let response = app
        .clone()
        .oneshot(get_with_assertion("/admin"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.contains(r#"error="insufficient_scope""#),
        "{challenge}"
    );
    assert!(challenge.contains(r#"scope="admin""#), "{challenge}");
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&body).contains("insufficient_scope"));
    let response = app.oneshot(get_with_assertion("/orders")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}
