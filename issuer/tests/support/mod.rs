//! Test support: an issuer on a fresh SQLite file or a fresh PostgreSQL database, driven
//! in-process through `issuer::app` (no socket), and helpers for requests.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::body::Body;
use http::{Request, Response};
use issuer::{AppState, Config};
use serde_json::Value;
use tower::ServiceExt;

pub const AUDIENCE: &str = "https://api.edgeward.test";

/// Which database a test runs on.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other test (of this run or another) uses: `prefix`, the process, a counter and
/// the time.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst),
        issuer::db::unix_now()
    )
}

/// A fresh data directory.
pub fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(unique("edgeward_issuer_test"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What a PostgreSQL test says when it has no server: it fails rather than passing without
/// having run (a skipped test that counts as passed checks nothing).
pub const NO_POSTGRES: &str = "PostgreSQL tests need a server: set TEST_DATABASE_URL \
     (e.g. postgres://postgres@127.0.0.1:5432/test; tests/run sets it to the machine's). \
     Each test creates its own database there.";

/// The PostgreSQL server the tests create their databases on (`TEST_DATABASE_URL`).
///
/// # Panics
/// With [`NO_POSTGRES`] when it is not set.
pub fn postgres_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| panic!("{NO_POSTGRES}"))
}

/// A config on a new, empty database of `backend`.
///
/// # Panics
/// For PostgreSQL without `TEST_DATABASE_URL` ([`NO_POSTGRES`]).
pub async fn config(backend: Backend) -> Config {
    let data_dir = temp_dir();
    let database_url = match backend {
        Backend::Sqlite => format!("sqlite://{}", data_dir.join("issuer.db").display()),
        Backend::Postgres => {
            let admin_url = postgres_admin_url();
            let name = unique("edgeward_test");
            sqlx::any::install_default_drivers();
            let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin_url)
                .await
                .unwrap();
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut admin)
                .await
                .unwrap();
            let (base, _) = admin_url.rsplit_once('/').unwrap();
            format!("{base}/{name}")
        }
    };
    Config {
        database_url,
        data_dir,
        log_format: "pretty".into(),
        ..Config::default()
    }
}

/// An opened issuer for `config`.
pub async fn open(config: Config) -> AppState {
    issuer::open(config).await.unwrap()
}

/// Sends one request through the app.
pub async fn send(state: &AppState, request: Request<Body>) -> Response<Body> {
    issuer::app(state.clone()).oneshot(request).await.unwrap()
}

/// Status, headers and JSON body (Null when empty or not JSON).
pub async fn send_json(
    state: &AppState,
    request: Request<Body>,
) -> (http::StatusCode, http::HeaderMap, Value) {
    let response = send(state, request).await;
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A client with scopes `read write` for [`AUDIENCE`] (and `https://other.test`), which is
/// also a resource server for those audiences (it may introspect).
pub async fn client(state: &AppState) -> (String, String) {
    client_with(state, true).await
}

/// [`client`], a resource server or not.
pub async fn client_with(state: &AppState, resource_server: bool) -> (String, String) {
    let created = issuer::clients::create(
        &state.db,
        issuer::clients::NewClient {
            name: "test".into(),
            scopes: "read write".into(),
            audiences: vec![AUDIENCE.into(), "https://other.test".into()],
            rate_plan: Some("100/60s;burst=10".into()),
            jwks: None,
            resource_server,
            require_dpop: false,
        },
        "test",
        issuer::db::unix_now(),
    )
    .await
    .unwrap();
    (created.client.client_id, created.client_secret)
}

/// A change to a client by the tests at `now` (default token lifetime).
pub fn change(now: i64) -> issuer::clients::Change<'static> {
    issuer::clients::Change {
        actor: "test",
        now,
        token_lifetime_secs: Config::default().token_lifetime_secs,
    }
}

pub fn basic(id: &str, secret: &str) -> String {
    use base64ct::Encoding;
    format!(
        "Basic {}",
        base64ct::Base64::encode_string(format!("{id}:{secret}").as_bytes())
    )
}

/// `POST /oauth2/token` with a form body and optional Basic credentials.
pub fn token_request(form: &str, basic_auth: Option<(&str, &str)>) -> Request<Body> {
    let mut builder =
        Request::post("/oauth2/token").header("content-type", "application/x-www-form-urlencoded");
    if let Some((id, secret)) = basic_auth {
        builder = builder.header("authorization", basic(id, secret));
    }
    builder.body(Body::from(form.to_owned())).unwrap()
}

/// Gets a token for the client; panics on failure.
pub async fn token(state: &AppState, id: &str, secret: &str) -> String {
    let (status, _, body) = send_json(
        state,
        token_request("grant_type=client_credentials", Some((id, secret))),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

/// The published JWKS, parsed by the same code the edge uses.
pub async fn jwks(state: &AppState) -> shared::Jwks {
    let response = send(
        state,
        Request::get("/.well-known/jwks.json")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    shared::Jwks::parse(std::str::from_utf8(&bytes).unwrap()).unwrap()
}

/// Verifies `token` as the edge would, at the current time.
pub fn verify(
    state: &AppState,
    jwks: &shared::Jwks,
    token: &str,
) -> Result<shared::VerifiedToken, shared::Rejection> {
    let validator = shared::Validator::new(shared::Validation::new(
        state.config().issuer_url.clone(),
        AUDIENCE,
    ));
    validator.verify(
        token,
        jwks,
        shared::UnixTime::from_secs(issuer::db::unix_now() as u64),
    )
}

/// Generates a `#[tokio::test]` per backend for `async fn name(backend: Backend)`.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::support::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::support::Backend::Postgres).await;
                }
            )*
        }
    };
}

/// An admin client with `powers` (space-separated admin scopes), made as `issuer client create --admin` makes one.
pub async fn admin(state: &issuer::AppState, powers: &str) -> (String, String) {
    let created = issuer::clients::create(
        &state.db,
        issuer::clients::NewClient {
            name: format!("admin {powers}"),
            scopes: powers.into(),
            audiences: vec![state.config().admin_audience()],
            rate_plan: None,
            jwks: None,
            resource_server: false,
            require_dpop: false,
        },
        "cli",
        issuer::db::unix_now(),
    )
    .await
    .unwrap();
    let token = token(state, &created.client.client_id, &created.client_secret).await;
    (created.client.client_id, token)
}

/// `method path` through the app, with `token` as bearer and `body` as JSON.
pub async fn call(
    state: &issuer::AppState,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (http::StatusCode, http::HeaderMap, Value) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = match body {
        Some(body) => request
            .header("content-type", "application/json")
            .body(Body::from(body.to_string())),
        None => request.body(Body::empty()),
    };
    send_json(state, request.unwrap()).await
}
