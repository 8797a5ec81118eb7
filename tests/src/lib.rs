//! End-to-end harness: real processes on loopback ports the OS picks (the issuer binary, the
//! Worker in local workerd, an axum origin mounting the `shared` edge layer), cleaned up on
//! drop. Each process says which port it bound in a JSON line the harness reads; tests speak
//! HTTP to them through reqwest.
//!
//! Expects `tests/run` to have built the issuer (`target/debug/issuer`) and the Worker bundle
//! (`edge-validator/build/worker.mjs`) once per run, and `npm ci` to have installed
//! wrangler.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // a test harness: failing loudly is right

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The workspace root.
#[must_use]
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A free loopback port.
#[must_use]
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh directory under the system temp dir.
#[must_use]
pub fn temp_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "edgeward_e2e_{name}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A child process killed (with its group) when dropped; its log file is printed on failure.
pub struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    /// Starts `command` with stdout and stderr into `log`.
    pub fn spawn(mut command: Command, log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).unwrap();
        command
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null());
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        Self {
            child: command.spawn().unwrap(),
            log,
        }
    }

    /// The process id (also its process group's id).
    #[must_use]
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL to the process and its group: a crash, no shutdown.
    pub fn kill_hard(&mut self) {
        let pgid = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &pgid])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }

    /// The log so far.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let pgid = format!("-{}", self.child.id());
        // The group may be gone already (kill_hard): kill's complaint is noise.
        let _ = Command::new("kill")
            .args(["-TERM", "--", &pgid])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- {} ----\n{}", self.log.display(), self.log());
        }
    }
}

/// A client for one request: plain HTTP on loopback, no proxy from the environment, no
/// redirect followed (a test that meets a 3xx sees it), 30 s at most. Each request gets its
/// own: every `#[tokio::test]` has a runtime of its own, and a pooled connection must not
/// outlive the runtime that opened it.
#[must_use]
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A full HTTP answer: status, headers (names lower-cased) and body.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code (0 when nothing answered).
    pub status: u16,
    /// Headers in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

impl Reply {
    /// The first header named `name` (lower case).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` when it is not JSON).
    #[must_use]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// What came back for `request`: status 0 when nothing answered (a dead port, a timeout),
    /// since tests poll with that.
    pub async fn of(request: reqwest::RequestBuilder) -> Self {
        let Ok(response) = request.send().await else {
            return Self {
                status: 0,
                headers: Vec::new(),
                body: String::new(),
            };
        };
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_owned(), value)
            })
            .collect();
        let body = response.text().await.unwrap_or_default();
        Self {
            status,
            headers,
            body,
        }
    }
}

/// `GET url`.
pub async fn get(url: &str) -> Reply {
    Reply::of(http().get(url)).await
}

/// `GET url` with `Authorization: Bearer token`.
pub async fn get_with(url: &str, token: &str) -> Reply {
    Reply::of(http().get(url).bearer_auth(token)).await
}

/// Waits until `url` answers 200.
pub async fn wait_ready(url: &str, timeout: Duration, who: &Running) {
    let deadline = Instant::now() + timeout;
    while get(url).await.status != 200 {
        assert!(
            Instant::now() < deadline,
            "{url} not ready; log:\n{}",
            who.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `iss` of the test issuer (it need not be its address).
pub const ISSUER_URL: &str = "http://issuer.test";

/// The issuer binary on SQLite in `dir`, on a port the OS picks (no race with other tests);
/// returns it with the bound port, read from its "issuer listening" log line.
pub async fn issuer(dir: &Path) -> (Running, u16) {
    issuer_with(dir, &[]).await
}

/// An issuer address its metadata names: a free port fixed before the issuer starts, for
/// clients that find the issuer by its discovery document or name it in a DPoP proof's `htu`.
pub struct OwnAddress {
    /// `http://127.0.0.1:<port>`: the issuer URL its metadata publishes.
    pub url: String,
    listen: String,
}

impl OwnAddress {
    #[must_use]
    pub fn new() -> Self {
        let port = free_port();
        Self {
            url: format!("http://127.0.0.1:{port}"),
            listen: format!("127.0.0.1:{port}"),
        }
    }

    /// The issuer's settings to listen there and say so, then `extra`.
    #[must_use]
    pub fn settings<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut settings = vec![
            ("ISSUER_LISTEN", self.listen.as_str()),
            ("ISSUER_ISSUER_URL", self.url.as_str()),
        ];
        settings.extend_from_slice(extra);
        settings
    }
}

impl Default for OwnAddress {
    fn default() -> Self {
        Self::new()
    }
}

/// [`issuer`] with extra `ISSUER_*` settings, e.g. `("ISSUER_JWKS_MAX_AGE_SECS", "10")`; they
/// override the harness defaults (a fixed `ISSUER_LISTEN` keeps the port across restarts).
pub async fn issuer_with(dir: &Path, settings: &[(&str, &str)]) -> (Running, u16) {
    let mut command = Command::new(root().join("target/debug/issuer"));
    command
        .current_dir(dir)
        .env_remove("ISSUER_KEK")
        .env("ISSUER_LISTEN", "127.0.0.1:0")
        .env("ISSUER_LOG_FORMAT", "json")
        .env("ISSUER_ISSUER_URL", ISSUER_URL)
        .envs(settings.iter().copied())
        .arg("serve");
    let running = Running::spawn(command, dir.join("issuer.log"));
    let addr = bound(&running, "issuer listening", Duration::from_secs(30)).await;
    let port = addr.port();
    wait_ready(
        &format!("http://{addr}/readyz"),
        Duration::from_secs(30),
        &running,
    )
    .await;
    (running, port)
}

/// The address `running` bound, from its first JSON line whose `message` is `message`,
/// once it has printed it (panics with its log after `timeout`).
pub async fn bound(running: &Running, message: &str, timeout: Duration) -> std::net::SocketAddr {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(addr) = listening_addr(&running.log(), message) {
            return addr;
        }
        assert!(
            Instant::now() < deadline,
            "no `{message}` line:\n{}",
            running.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `addr` of the first JSON log line whose `message` is `message` (a process's bound
/// address, as it logs it).
#[must_use]
pub fn listening_addr(log: &str, message: &str) -> Option<std::net::SocketAddr> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|event| event["message"] == message)
        .and_then(|event| event["addr"].as_str()?.parse().ok())
}

/// Runs an issuer CLI command in `dir`; returns its JSON output.
#[must_use]
pub fn issuer_cli(dir: &Path, args: &[&str]) -> serde_json::Value {
    issuer_cli_with(dir, &[], args)
}

/// [`issuer_cli`] with `ISSUER_*` settings (e.g. the database URL).
#[must_use]
pub fn issuer_cli_with(dir: &Path, settings: &[(&str, &str)], args: &[&str]) -> serde_json::Value {
    let output = Command::new(root().join("target/debug/issuer"))
        .current_dir(dir)
        .env_remove("ISSUER_KEK")
        .envs(settings.iter().copied())
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The issuer's default audience (what its clients get without `--audience`), which test
/// edges require.
pub const AUDIENCE: &str = "edgeward-api";
/// The key id of the assertions test edges sign for their origins.
pub const ASSERTION_KEY_ID: &str = "e2e-1";
/// The secret those assertions are signed with (the edge's and the origins').
pub const ASSERTION_SECRET: &str = "e2e-assertion-secret-0123456789abcdef";

/// An edge's settings (its `[vars]`), each name once. The assertion secret is not one of
/// them: [`edge`] passes it as a secret, and a workerd config ([`isolates_config`]) needs
/// `.set("ASSERTION_SECRET", …)`.
#[derive(Debug, Clone)]
pub struct EdgeSettings(Vec<(&'static str, String)>);

impl EdgeSettings {
    /// What every test edge in front of the real issuer is told: tokens of [`ISSUER_URL`]
    /// for [`AUDIENCE`], with the keys of the issuer on `issuer_port`, forwarded to the
    /// origin on `origin_port` with assertions under [`ASSERTION_KEY_ID`].
    #[must_use]
    pub fn new(issuer_port: u16, origin_port: u16) -> Self {
        Self::with(
            ISSUER_URL,
            AUDIENCE,
            format!("http://127.0.0.1:{issuer_port}/.well-known/jwks.json"),
            format!("http://127.0.0.1:{origin_port}"),
        )
    }

    /// An edge that takes tokens of `issuer` for `audience`, with the keys at `jwks_urls`
    /// (space-separated), forwarded to `origin_url` with assertions under
    /// [`ASSERTION_KEY_ID`].
    #[must_use]
    pub fn with(issuer: &str, audience: &str, jwks_urls: String, origin_url: String) -> Self {
        Self(vec![
            ("ISSUER", issuer.to_owned()),
            ("AUDIENCE", audience.to_owned()),
            ("JWKS_URLS", jwks_urls),
            ("ORIGIN_URL", origin_url),
            ("ASSERTION_KEY_ID", ASSERTION_KEY_ID.to_owned()),
        ])
    }

    /// These settings with `name` set to `value`, in its place if it was set already (a
    /// setting named twice would be a TOML error).
    #[must_use]
    pub fn set(mut self, name: &'static str, value: impl Into<String>) -> Self {
        let value = value.into();
        match self.0.iter_mut().find(|(set, _)| *set == name) {
            Some(setting) => setting.1 = value,
            None => self.0.push((name, value)),
        }
        self
    }
}

/// The prebuilt Worker in local workerd with these vars and secret; returns it with the port
/// it bound.
pub async fn edge(dir: &Path, vars: &EdgeSettings, secret: &str) -> (Running, u16) {
    let shim = root().join("edge-validator/build/worker.mjs");
    assert!(shim.exists(), "build the Worker first (tests/run does)");
    let mut config = format!(
        "name = \"edgeward-edge-test\"\nmain = \"{}\"\ncompatibility_date = \"2026-04-26\"\n\
         [[durable_objects.bindings]]\nname = \"RATE_LIMITER\"\nclass_name = \"RateLimiter\"\n\
         [[migrations]]\ntag = \"v1\"\nnew_sqlite_classes = [\"RateLimiter\"]\n[vars]\n",
        shim.display()
    );
    for (name, value) in &vars.0 {
        config.push_str(&format!(
            "{name} = {}\n",
            serde_json::Value::String(value.clone())
        ));
    }
    std::fs::write(dir.join("wrangler.toml"), config).unwrap();
    std::fs::write(
        dir.join(".dev.vars"),
        format!("ASSERTION_SECRET=\"{secret}\"\nKEYSET_COPY_SECRET=\"{secret}-keyset-copy\"\n"),
    )
    .unwrap();
    let (running, port) = serve_worker(dir, dir, "wrangler.log").await;
    wait_ready(
        &format!("http://127.0.0.1:{port}/.edge/health"),
        Duration::from_secs(30),
        &running,
    )
    .await;
    (running, port)
}

/// The Worker of the `wrangler.toml` in `dir`, served in local workerd by
/// `tests/workers/serve.mjs` (wrangler's `unstable_dev`, what `wrangler dev --local` runs) on a
/// port the OS picks, its local state (Durable Objects, the Cache API: one "location") in
/// `state_of`'s `state/`, its output in `dir`'s `log`. Returns it with the port, read from
/// the script's JSON line `worker listening`.
pub async fn serve_worker(dir: &Path, state_of: &Path, log: &str) -> (Running, u16) {
    let mut command = Command::new("node");
    command
        .current_dir(dir)
        .env("WRANGLER_SEND_METRICS", "false")
        .env("CI", "true")
        .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
        .arg(root().join("tests/workers/serve.mjs"))
        .arg(state_of.join("state"));
    let running = Running::spawn(command, dir.join(log));
    let addr = bound(&running, "worker listening", Duration::from_secs(90)).await;
    (running, addr.port())
}

/// What the demo origin saw: every request it answered, as the identity JSON it echoed.
pub type Seen = Arc<std::sync::Mutex<Vec<serde_json::Value>>>;

/// An axum origin on a port the OS picks, mounting the `shared` edge layer and echoing the
/// verified identity; returns what it saw and its port. `/public/…` is outside the layer (as
/// an origin's public pages are, behind a public route of the edge): it echoes the path and
/// whether any identity or credential header arrived.
pub async fn origin(key_id: &str, secret: &str) -> (Seen, u16) {
    origin_keyed(key_id, |_| secret.to_owned()).await
}

/// [`origin`] with the secret `secret_of(its port)`: an edge with a key per origin derives
/// each origin's from its host, which holds the port.
pub async fn origin_keyed(key_id: &str, secret_of: impl FnOnce(u16) -> String) -> (Seen, u16) {
    use axum::http::HeaderMap;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    let key = shared::AssertionKey::new(key_id, secret_of(port).as_bytes()).unwrap();
    // `/admin/…` also needs the `admin` scope, checked here as an origin would (defence in
    // depth behind the edge).
    let admin = shared::origin::RequireScopesLayer::new(shared::ScopeRequirement::new(
        shared::Scopes::parse("admin").unwrap(),
        shared::Scopes::default(),
    ));
    let admin = axum::Router::new()
        .route("/admin/{*rest}", axum::routing::any(|| async { "admin" }))
        .route_layer(admin);
    let app = axum::Router::new()
        .merge(admin)
        .fallback(move |identity: shared::EdgeIdentity, headers: HeaderMap| {
            let log = Arc::clone(&log);
            async move {
                // The edge's headers in any spelling (proxies may map `_` to `-`).
                let edge_headers: Vec<&str> = headers
                    .keys()
                    .map(axum::http::HeaderName::as_str)
                    .filter(|name| name.replace(['_', '.'], "-").starts_with(shared::assertion::HEADER_PREFIX))
                    .collect();
                // What the origin hears about the client from proxy headers.
                let proxy_headers: serde_json::Map<String, serde_json::Value> = headers
                    .iter()
                    .filter(|(name, _)| {
                        let name = name.as_str().replace(['_', '.'], "-");
                        name == "forwarded" || name.starts_with("x-forwarded-") || name == "x-real-ip"
                            || name == "true-client-ip" || name == "proxy-authorization"
                            || name == "x-http-method-override" || name.starts_with("cf-access-")
                            || name == "remote-user" || name == "x-original-method"
                    })
                    .map(|(name, value)| (name.as_str().to_owned(), value.to_str().unwrap_or("?").into()))
                    .collect();
                let body = serde_json::json!({
                    "edge_headers": edge_headers,
                    "proxy_headers": proxy_headers,
                    "sub": identity.sub, "client_id": identity.client_id, "scope": identity.scope.to_string(),
                    "path": identity.path, "method": identity.method, "route": identity.route,
                    "cnf_jkt": identity.cnf_jkt,
                    "dpop_header": headers.contains_key("dpop"),
                    "forged": headers.get("x-forged").and_then(|v| v.to_str().ok()),
                });
                log.lock().unwrap().push(body.clone());
                // A `DPoP-Nonce` of the origin's own when the client asks for one (what an
                // edge that requires nonces must replace with its own).
                let mut answer = axum::response::IntoResponse::into_response(axum::Json(body));
                if let Some(nonce) = headers.get("x-origin-dpop-nonce") {
                    answer.headers_mut().insert("dpop-nonce", nonce.clone());
                }
                answer
            }
        })
        .layer(shared::origin::EdgeAuthLayer::new(shared::AssertionVerifier::new(vec![key], shared::assertion::DEFAULT_MAX_AGE_MS)));
    let log = Arc::clone(&seen);
    let public = axum::Router::new().route(
        "/public/{*rest}",
        axum::routing::any(move |uri: axum::http::Uri, headers: HeaderMap| {
            let log = Arc::clone(&log);
            async move {
                let body = serde_json::json!({
                    "public": true,
                    "path": uri.path(),
                    "edge_headers": headers.keys().filter(|name| name.as_str().starts_with(shared::assertion::HEADER_PREFIX)).count(),
                    "authorization": headers.contains_key("authorization"),
                });
                log.lock().unwrap().push(body.clone());
                axum::Json(body)
            }
        }),
    );
    let app = public.merge(app);
    tokio::spawn(async move { axum::serve(listener, app).await });
    (seen, port)
}

/// A fresh PostgreSQL database on the `TEST_DATABASE_URL` server (default the machine's),
/// made with `psql`; returns its URL with `host:port` replaced by `via` when given (to route
/// the issuer through a [`TcpProxy`]).
#[must_use]
pub fn postgres_database(name: &str, via: Option<u16>) -> String {
    let server = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let database = format!("edgeward_test_{name}_{}", std::process::id());
    for sql in [
        format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"),
        format!("CREATE DATABASE \"{database}\""),
    ] {
        let status = Command::new("psql")
            .args([server.as_str(), "-qc", &sql])
            .status()
            .unwrap();
        assert!(status.success(), "psql: {sql}");
    }
    let (base, _) = server.rsplit_once('/').unwrap();
    let base = match via {
        Some(port) => {
            let (scheme_user, _) = base.rsplit_once('@').unwrap();
            format!("{scheme_user}@127.0.0.1:{port}")
        }
        None => base.to_owned(),
    };
    format!("{base}/{database}")
}

/// A TCP forwarder on a fixed loopback port that can be cut (listener and every open
/// connection dropped, as when a database server dies) and restored on the same port.
pub struct TcpProxy {
    /// The port it listens on.
    pub port: u16,
    upstream: std::net::SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TcpProxy {
    /// Forwards a free port to `upstream`.
    pub async fn start(upstream: std::net::SocketAddr) -> Self {
        let mut proxy = Self {
            port: free_port(),
            upstream,
            task: None,
        };
        proxy.restore().await;
        proxy
    }

    /// Forwards `port` (free now) to `upstream`: a stand-in for an address that outlives
    /// the process behind it.
    pub async fn start_on(port: u16, upstream: std::net::SocketAddr) -> Self {
        let mut proxy = Self {
            port,
            upstream,
            task: None,
        };
        proxy.restore().await;
        proxy
    }

    /// Drops the listener and every connection.
    pub fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn restore(&mut self) {
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => break listener,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let upstream = self.upstream;
        self.task = Some(tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// A TCP forwarder that keeps a copy of every byte sent upstream: what an origin behind it
/// received, for tests that replay or alter it.
pub struct Tap {
    /// The port it listens on.
    pub port: u16,
    sent: Arc<std::sync::Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Tap {
    /// Forwards a port the OS picks to `upstream`, recording.
    pub async fn start(upstream: std::net::SocketAddr) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let sent: Arc<std::sync::Mutex<Vec<u8>>> = Arc::default();
        let record = Arc::clone(&sent);
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let record = Arc::clone(&record);
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut from_client, mut to_client) = inbound.into_split();
                    let (mut from_origin, mut to_origin) = outbound.into_split();
                    let upward = async move {
                        let mut buffer = vec![0; 16 * 1024];
                        while let Ok(read) = from_client.read(&mut buffer).await {
                            if read == 0 {
                                break;
                            }
                            record.lock().unwrap().extend_from_slice(&buffer[..read]);
                            if to_origin.write_all(&buffer[..read]).await.is_err() {
                                break;
                            }
                        }
                        let _ = to_origin.shutdown().await;
                    };
                    let downward = tokio::io::copy(&mut from_origin, &mut to_client);
                    let _ = tokio::join!(upward, downward);
                });
            }
        });
        Self { port, sent, task }
    }

    /// Every value of header `name` (lower case) in the requests sent so far, in order.
    #[must_use]
    pub fn header_values(&self, name: &str) -> Vec<String> {
        let sent = String::from_utf8_lossy(&self.sent.lock().unwrap()).into_owned();
        sent.split("\r\n")
            .filter_map(|line| line.split_once(':'))
            .filter(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.trim().to_owned())
            .collect()
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The `kid` in a compact token's header (read with `shared`'s own parser).
#[must_use]
pub fn kid_of(token: &str) -> String {
    let validation = shared::Validation::new(ISSUER_URL, AUDIENCE);
    shared::UntrustedToken::parse(token, &validation)
        .unwrap()
        .kid()
        .to_owned()
}

/// A client of the real issuer, created with its CLI.
#[derive(Debug, Clone)]
pub struct Client {
    /// `client_id`.
    pub id: String,
    /// `client_secret` (shown once by `client create`).
    pub secret: String,
}

impl Client {
    /// `issuer client create --name NAME --scope read EXTRA…` in `dir`.
    #[must_use]
    pub fn create(dir: &Path, name: &str, extra: &[&str]) -> Self {
        Self::create_with(dir, &[], name, extra)
    }

    /// [`Client::create`] with `ISSUER_*` settings for the CLI.
    #[must_use]
    pub fn create_with(dir: &Path, settings: &[(&str, &str)], name: &str, extra: &[&str]) -> Self {
        let mut args = vec!["client", "create", "--name", name, "--scope", "read"];
        args.extend(extra);
        let created = issuer_cli_with(dir, settings, &args);
        Self {
            id: created["client_id"].as_str().unwrap().to_owned(),
            secret: created["client_secret"].as_str().unwrap().to_owned(),
        }
    }

    /// A token request to the issuer at `issuer` (`http://host:port`).
    pub async fn request_token_at(&self, issuer: &str) -> Reply {
        let request = http()
            .post(format!("{issuer}/oauth2/token"))
            .basic_auth(&self.id, Some(&self.secret))
            .form(&[("grant_type", "client_credentials")]);
        Reply::of(request).await
    }

    /// RFC 7009: the client revokes `token` at the issuer at `issuer` (`http://host:port`).
    pub async fn revoke_at(&self, issuer: &str, token: &str) -> Reply {
        let request = http()
            .post(format!("{issuer}/oauth2/revoke"))
            .basic_auth(&self.id, Some(&self.secret))
            .form(&[("token", token)]);
        Reply::of(request).await
    }

    /// A token request to the issuer on `issuer_port`.
    pub async fn request_token(&self, issuer_port: u16) -> Reply {
        self.request_token_at(&format!("http://127.0.0.1:{issuer_port}"))
            .await
    }

    /// A token from the issuer on `issuer_port` (panics unless it answers 200).
    pub async fn token(&self, issuer_port: u16) -> String {
        let reply = self.request_token(issuer_port).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()["access_token"].as_str().unwrap().to_owned()
    }
}

/// A workerd config: an edge Worker of the built bundle per port (each its own isolate), with
/// `vars`, the first defining the rate-limit class (objects stored in memory, under
/// `unique_key`) that the others bind by service name: one set of Durable Objects for all.
#[must_use]
pub fn isolates_config(ports: &[u16], vars: &EdgeSettings, unique_key: &str) -> String {
    use std::fmt::Write as _;
    let text = |value: &str| serde_json::Value::String(value.to_owned()).to_string();
    let mut services = String::new();
    let mut sockets = String::new();
    let mut workers = String::new();
    for (n, port) in ports.iter().enumerate() {
        let _ = write!(services, "(name = \"edge-{n}\", worker = .edge{n}),");
        let _ = write!(
            sockets,
            "(name = \"s{n}\", address = \"127.0.0.1:{port}\", http = (), service = \"edge-{n}\"),"
        );
        let mut bindings = String::from(
            "(name = \"RATE_LIMITER\", durableObjectNamespace = (className = \"RateLimiter\", \
             serviceName = \"edge-0\")),",
        );
        for (name, value) in &vars.0 {
            let _ = write!(bindings, "(name = \"{name}\", text = {}),", text(value));
        }
        let objects = if n == 0 {
            format!(
                "durableObjectNamespaces = [(className = \"RateLimiter\", \
             uniqueKey = \"{unique_key}\", enableSql = true)],\n  \
             durableObjectStorage = (inMemory = void),"
            )
        } else {
            String::new()
        };
        let _ = write!(
            workers,
            "const edge{n} :Workerd.Worker = (\n  modules = [(name = \"worker.mjs\", esModule = \
             embed \"worker.mjs\"), (name = \"index_bg.wasm\", wasm = embed \"index_bg.wasm\")],\n  \
             compatibilityDate = \"2026-04-26\",\n  bindings = [{bindings}],\n  {objects}\n);\n"
        );
    }
    format!(
        "using Workerd = import \"/workerd/workerd.capnp\";\n\
         const config :Workerd.Config = (\n  services = [{services}\
         (name = \"internet\", network = (allow = [\"public\", \"private\", \"local\"]))],\n  \
         sockets = [{sockets}],\n);\n{workers}"
    )
}

/// workerd on `config` ([`isolates_config`]) in `dir`, with the built bundle beside it.
pub fn workerd_isolates(dir: &Path, config: &str) -> Running {
    for file in ["worker.mjs", "index_bg.wasm"] {
        let built = root().join("edge-validator/build").join(file);
        assert!(built.exists(), "build the Worker first (tests/run does)");
        std::fs::copy(built, dir.join(file)).unwrap();
    }
    std::fs::write(dir.join("edges.capnp"), config).unwrap();
    let mut command = Command::new(root().join("node_modules/.bin/workerd"));
    command
        .current_dir(dir)
        .args(["serve", "edges.capnp", "--experimental"]);
    Running::spawn(command, dir.join("workerd.log"))
}

/// Runs the third-party client `tests/clients/<script>` with `args` under node, from a
/// multi-threaded test runtime, and returns the one JSON line it prints (panics if it fails).
#[must_use]
pub fn node_client(script: &str, args: &[&str]) -> serde_json::Value {
    let output = tokio::task::block_in_place(|| {
        Command::new("node")
            .arg(root().join("tests/clients").join(script))
            .args(args)
            .output()
            .unwrap()
    });
    assert!(
        output.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}
