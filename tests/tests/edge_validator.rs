//! The edge validator as built (`tests/run` builds the bundle once), in local workerd
//! (`wrangler dev --local`), against a real issuer process and a real origin. Crafted bad
//! tokens need a signer that publishes its keys, since the real issuer never signs one: those
//! come from `shared`'s own fixtures (one source of vectors), served by a small key server
//! that can change its keys and counts its fetches.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

#[path = "../../shared/tests/fixtures/mod.rs"]
mod fixtures;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edgeward_tests::*;
use serde_json::{json, Map, Value};

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A fixture token (key 1) valid now, with its header and claims edited.
fn token(
    edit_header: impl FnOnce(&mut Map<String, Value>),
    edit_claims: impl FnOnce(&mut Map<String, Value>),
) -> String {
    fixtures::token_at(unix_now(), edit_header, edit_claims)
}

fn good_token() -> String {
    token(|_| {}, |_| {})
}

/// Publishes fixture keys as a JWKS (`max-age=300`), counting fetches.
#[derive(Clone)]
struct KeyServer {
    keys: Arc<Mutex<Vec<u8>>>,
    fetches: Arc<AtomicUsize>,
    port: u16,
}

impl KeyServer {
    async fn start(keys: &[u8]) -> Self {
        Self::answering_after(keys, Duration::ZERO).await
    }

    /// A key server that takes `delay` to answer each fetch.
    async fn answering_after(keys: &[u8], delay: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let server = Self {
            keys: Arc::new(Mutex::new(keys.to_vec())),
            fetches: Arc::default(),
            port: listener.local_addr().unwrap().port(),
        };
        let state = server.clone();
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let state = state.clone();
                async move {
                    state.fetches.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    let keys: Vec<Value> = state
                        .keys
                        .lock()
                        .unwrap()
                        .iter()
                        .map(|&n| fixtures::public_jwk(n))
                        .collect();
                    (
                        [("cache-control", "max-age=300")],
                        axum::Json(json!({ "keys": keys })),
                    )
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        server
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/jwks", self.port)
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// A URL nothing listens on.
fn dead_url(path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", free_port())
}

/// The settings of a test edge (`EdgeSettings::with`) with a short fetch timeout, plus
/// `extra`. (These tests use the fixtures' issuer and audience, `fixtures::ISSUER` and
/// `fixtures::AUDIENCE`, unless in front of the real issuer: `issuer_vars`.)
fn vars(
    issuer: &str,
    audience: &str,
    jwks_urls: String,
    origin_url: String,
    extra: &[(&'static str, &str)],
) -> EdgeSettings {
    extra.iter().fold(
        EdgeSettings::with(issuer, audience, jwks_urls, origin_url).set("FETCH_TIMEOUT_MS", "1000"),
        |settings, (name, value)| settings.set(name, *value),
    )
}

/// The settings of an edge in front of the real issuer on `issuer_port` and an origin, plus
/// `extra`.
fn issuer_vars(issuer_port: u16, origin_port: u16, extra: &[(&'static str, &str)]) -> EdgeSettings {
    vars(
        ISSUER_URL,
        AUDIENCE,
        format!("http://127.0.0.1:{issuer_port}/.well-known/jwks.json"),
        format!("http://127.0.0.1:{origin_port}"),
        extra,
    )
}

/// The request-log lines the edge printed (one JSON object per request).
fn request_logs(edge: &Running) -> Vec<Value> {
    edge.log()
        .lines()
        .filter_map(|line| line.find("{\"method\"").map(|at| &line[at..]))
        .filter_map(|json| serde_json::from_str(json).ok())
        .collect()
}

/// The request-log lines `keep` selects, once `count` of them have appeared (the edge's
/// output reaches its log file a little after the response), or after 10 s.
async fn logged_lines(edge: &Running, count: usize, keep: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines: Vec<Value> = request_logs(edge).into_iter().filter(&keep).collect();
        if lines.len() >= count || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sends `headers` to `url`.
async fn send(url: &str, headers: &[(String, String)]) -> Reply {
    let request = headers
        .iter()
        .fold(http().get(url), |request, (name, value)| {
            request.header(name, value)
        });
    Reply::of(request).await
}

/// The journey of every rejection class through the driver, with the Durable Object limiter.
/// The core's own tests (`edge-validator/tests/isolate.rs`) cover the same classes with the
/// isolate limiter, and the unknown-kid cooldown and rotation with an injected clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rejection_class_is_answered_at_the_edge_and_never_reaches_the_origin() {
    let dir = temp_dir("edge_rejections");
    let (seen, origin_port) = origin(ASSERTION_KEY_ID, ASSERTION_SECRET).await;
    let keys = KeyServer::start(&[1]).await;
    let vars = vars(
        fixtures::ISSUER,
        fixtures::AUDIENCE,
        keys.url(),
        format!("http://127.0.0.1:{origin_port}"),
        &[
            ("FAILED_AUTH_PLAN", "1000/60s;burst=1000"),
            ("UNKNOWN_KID_COOLDOWN_MS", "3000"),
            ("RATE_LIMIT_MODE", "durable"),
        ],
    );
    let (edge, edge_port) = edge(&dir, &vars, ASSERTION_SECRET).await;
    let url = format!("http://127.0.0.1:{edge_port}/orders/7?x=1");

    // A valid token reaches the origin, which sees the verified identity and only the
    // assertion header, whatever identity headers the client sent.
    let forged = [
        ("X-Edgeward-Sub", "admin"),
        ("x-edgeward-assertion", "v1.e2e-1.eyJzdWIiOiJhZG1pbiJ9.AAAA"),
        ("X_Edgeward_Sub", "admin"),
        ("x-edgeward_assertion", "v1.e2e-1.eyJzdWIiOiJhZG1pbiJ9.AAAA"),
        ("X-Forwarded-For", "203.0.113.66"),
        ("X_Forwarded_Host", "admin.internal"),
        ("x.edgeward.sub", "admin"),
        ("X-HTTP-Method-Override", "DELETE"),
        ("Forwarded", "for=203.0.113.66;proto=https"),
        ("X-Real-IP", "203.0.113.66"),
        ("True-Client-IP", "203.0.113.66"),
        ("Proxy-Authorization", "Basic c2VjcmV0"),
        ("Cf-Access-Authenticated-User-Email", "admin@example.com"),
        ("Remote-User", "admin"),
        ("X-Original-Method", "DELETE"),
        ("X-Forged", "kept"),
    ];
    let mut headers = vec![(
        "authorization".to_owned(),
        format!("Bearer {}", good_token()),
    )];
    headers.extend(forged.map(|(name, value)| (name.to_owned(), value.to_owned())));
    let reply = send(&url, &headers).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let echoed = reply.json();
    // Only what the edge says about the client: the platform's address and scheme.
    let proxy = echoed["proxy_headers"].as_object().unwrap();
    let mut names: Vec<&str> = proxy.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["x-forwarded-for", "x-forwarded-proto"], "{proxy:?}");
    assert_eq!(proxy["x-forwarded-proto"], "http");
    // Local workerd's CF-Connecting-IP: the loopback address the test connected from.
    assert_eq!(proxy["x-forwarded-for"], "127.0.0.1", "{proxy:?}");
    assert_eq!(echoed["sub"], "user-42");
    assert_eq!(echoed["client_id"], "client-7");
    assert_eq!(echoed["scope"], "read write");
    assert_eq!(echoed["path"], "/orders/7");
    assert_eq!(echoed["edge_headers"], json!(["x-edgeward-assertion"]));
    assert_eq!(echoed["forged"], "kept", "other headers pass through");
    assert!(reply.header("ratelimit").is_some(), "{:?}", reply.headers);
    // A GET with a body, empty or not: forwarded without it (fetch() takes none for a GET),
    // never a 500.
    for body in ["", "ignored"] {
        let request = http()
            .get(&url)
            .header("authorization", format!("Bearer {}", good_token()))
            .body(body);
        let reply = Reply::of(request).await;
        assert_eq!(reply.status, 200, "a GET with {body:?}: {}", reply.body);
    }

    let reached = seen.lock().unwrap().len();
    let cases = fixtures::edge_rejections(unix_now());
    for case in &cases {
        let mut headers: Vec<(String, String)> = case
            .authorization
            .iter()
            .map(|value| ("authorization".to_owned(), value.clone()))
            .collect();
        headers.push(("X-Edgeward-Sub".into(), "admin".into()));
        let reply = send(&url, &headers).await;
        assert_eq!(reply.status, case.status, "{}: {}", case.name, reply.body);
        let body = reply.json();
        assert_eq!(
            body["error"].as_str(),
            case.error,
            "{}: {}",
            case.name,
            reply.body
        );
        assert!(body["error_description"].is_string(), "{}", case.name);
        let challenge = reply.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer realm=\"edgeward\""),
            "{}: {challenge}",
            case.name
        );
        if let Some(error) = case.error {
            assert!(
                challenge.contains(&format!("error=\"{error}\"")),
                "{}: {challenge}",
                case.name
            );
        }
        assert_eq!(reply.header("content-type"), Some("application/json"));
    }
    assert_eq!(
        seen.lock().unwrap().len(),
        reached,
        "no refused request reached the origin"
    );

    // Each was refused for its own reason, as the request log says (wrangler relays the
    // Worker's log lines with a short delay).
    let logged = |case: &fixtures::EdgeRejection, logs: &[Value]| {
        logs.iter()
            .any(|l| l["reason"] == case.reason && l["status"] == case.status)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut logs = request_logs(&edge);
    while !cases.iter().all(|case| logged(case, &logs)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        logs = request_logs(&edge);
    }
    for case in &cases {
        assert!(
            logged(case, &logs),
            "{}: no log line with reason {}",
            case.name,
            case.reason
        );
    }
    // A token that is not even well formed is charged in the isolate alone: no Durable
    // Object round trip for junk.
    for reason in [
        "malformed",
        "bad_base64",
        "alg_not_allowed",
        "high_s_signature",
    ] {
        for line in logs.iter().filter(|l| l["reason"] == reason) {
            assert_eq!(line["limit_source"], "isolate", "{line}");
        }
    }

    // Junk kids, many at once through the real driver: at most one refetch per cooldown,
    // and no origin contact.
    let before = keys.fetches();
    let junk = (0..24).map(|n| {
        let token = token(
            |h| drop(h.insert("kid".into(), json!(format!("junk-{n}")))),
            |_| {},
        );
        let url = url.clone();
        tokio::spawn(async move { get_with(&url, &token).await.status })
    });
    for request in junk.collect::<Vec<_>>() {
        assert_eq!(request.await.unwrap(), 401);
    }
    let after_junk = keys.fetches();
    assert!(
        after_junk <= before + 1,
        "junk kids caused {} refetches",
        after_junk - before
    );
    assert_eq!(seen.lock().unwrap().len(), reached);
}

/// A new isolate's first requests arrive together: one fetches the key set, the others wait
/// for that fetch on the driver's timer (the `Sleep` wait), and all are answered from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_requests_together_share_one_key_set_fetch() {
    let dir = temp_dir("edge_single_flight");
    let (seen, origin_port) = origin(ASSERTION_KEY_ID, ASSERTION_SECRET).await;
    let keys = KeyServer::answering_after(&[1], Duration::from_millis(500)).await;
    let vars = vars(
        fixtures::ISSUER,
        fixtures::AUDIENCE,
        keys.url(),
        format!("http://127.0.0.1:{origin_port}"),
        &[("RATE_LIMIT_MODE", "isolate")],
    );
    let (_edge, edge_port) = edge(&dir, &vars, ASSERTION_SECRET).await;
    let url = format!("http://127.0.0.1:{edge_port}/together");
    let requests: Vec<_> = (0..6)
        .map(|n| {
            let token = token(
                |_| {},
                |c| drop(c.insert("jti".into(), json!(format!("together-{n}")))),
            );
            let url = url.clone();
            tokio::spawn(async move { get_with(&url, &token).await })
        })
        .collect();
    for request in requests {
        let reply = request.await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    assert_eq!(keys.fetches(), 1, "one fetch for every first request");
    assert_eq!(seen.lock().unwrap().len(), 6);
}

/// The key set comes only from the configured URLs: a JWKS URL that redirects (to a good
/// key set) gives the edge nothing, so with no other URL it has no key set (503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_fetches_never_follow_a_redirect() {
    let dir = temp_dir("edge_redirect");
    let keys = KeyServer::start(&[1]).await;
    let target = keys.url();
    let redirector = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let redirector_port = redirector.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let target = target.clone();
            async move { axum::response::Redirect::temporary(&target) }
        }),
    );
    tokio::spawn(async move { axum::serve(redirector, app).await });
    let vars = vars(
        fixtures::ISSUER,
        fixtures::AUDIENCE,
        format!("http://127.0.0.1:{redirector_port}/jwks"),
        dead_url(""),
        &[],
    );
    let (_edge, port) = edge(&dir, &vars, ASSERTION_SECRET).await;
    let reply = get_with(&format!("http://127.0.0.1:{port}/a"), &good_token()).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(keys.fetches(), 0, "the redirect was followed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_set_at_all_is_503_and_a_dead_origin_is_502() {
    let dir = temp_dir("edge_unavailable");
    let keys = KeyServer::start(&[1]).await;
    let keyless_vars = vars(
        fixtures::ISSUER,
        fixtures::AUDIENCE,
        format!("{} {}", dead_url("/jwks"), dead_url("/jwks")),
        dead_url(""),
        &[],
    );
    let originless_vars = vars(
        fixtures::ISSUER,
        fixtures::AUDIENCE,
        keys.url(),
        dead_url(""),
        &[],
    );
    let keyless_dir = dir.join("keyless");
    let originless_dir = dir.join("originless");
    std::fs::create_dir_all(&keyless_dir).unwrap();
    std::fs::create_dir_all(&originless_dir).unwrap();
    let ((_keyless, keyless_port), (_originless, originless_port)) = tokio::join!(
        edge(&keyless_dir, &keyless_vars, ASSERTION_SECRET),
        edge(&originless_dir, &originless_vars, ASSERTION_SECRET),
    );
    let token = good_token();
    let reply = get_with(&format!("http://127.0.0.1:{keyless_port}/a"), &token).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.json()["error"], "temporarily_unavailable");
    let health = get(&format!("http://127.0.0.1:{keyless_port}/.edge/health"))
        .await
        .json();
    assert_eq!(
        (health["status"].as_str(), health["jwks"].as_str()),
        (Some("degraded"), Some("missing"))
    );

    let reply = get_with(&format!("http://127.0.0.1:{originless_port}/a"), &token).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert_eq!(reply.json()["error"], "bad_gateway");
}

/// Polls `url` with `token` until it is refused; returns the seconds it took.
/// A token of `client` that `url` (through the edge) accepts, then revokes (RFC 7009): the
/// seconds until the edge refuses it (at most 10).
async fn revoked_and_refused(client: &Client, issuer_port: u16, url: &str) -> f64 {
    let revoked = client.token(issuer_port).await;
    assert_eq!(get_with(url, &revoked).await.status, 200);
    let reply = client
        .revoke_at(&format!("http://127.0.0.1:{issuer_port}"), &revoked)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    seconds_until_refused(url, &revoked, Duration::from_secs(10)).await
}

async fn seconds_until_refused(url: &str, token: &str, limit: Duration) -> f64 {
    let started = Instant::now();
    loop {
        let reply = get_with(url, token).await;
        if reply.status == 401 {
            assert_eq!(reply.json()["error"], "invalid_token", "{}", reply.body);
            return started.elapsed().as_secs_f64();
        }
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert!(started.elapsed() < limit, "still accepted after {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A new isolate starts from the colo's Cache API copy of the key set: with the issuer gone,
/// a restarted edge (same local state, so the same "colo") still verifies a token it has
/// never seen, and says it got a fresh set without fetching.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_isolate_starts_from_the_cache_api_copy_when_the_issuer_is_down() {
    let dir = temp_dir("edge_cache_copy");
    let (seen, origin_port) = origin(ASSERTION_KEY_ID, ASSERTION_SECRET).await;
    let (issuer, issuer_port) = issuer(&dir).await;
    let client = Client::create(&dir, "cache-copy", &[]);
    let vars = issuer_vars(issuer_port, origin_port, &[]);
    let (first, second) = (
        client.token(issuer_port).await,
        client.token(issuer_port).await,
    );
    let (first_edge, edge_port) = edge(&dir, &vars, ASSERTION_SECRET).await;
    let url = format!("http://127.0.0.1:{edge_port}/copy");
    assert_eq!(get_with(&url, &first).await.status, 200);
    drop(first_edge);
    drop(issuer);

    let (_second_edge, edge_port) = edge(&dir, &vars, ASSERTION_SECRET).await;
    let health = format!("http://127.0.0.1:{edge_port}/.edge/health");
    assert_eq!(get(&health).await.json()["jwks"], "missing");
    let reply = get_with(&format!("http://127.0.0.1:{edge_port}/copy"), &second).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(get(&health).await.json()["jwks"], "fresh");
    assert_eq!(seen.lock().unwrap().len(), 2);
}

/// Another script on the zone plants a key set (with the attacker's key), dated now, with
/// every header the edge reads and a made-up tag: under the JWKS URL (where a copy used to
/// live) and, as if it had learnt it, under the edge's secret-derived cache key. A new
/// isolate must refuse the copy (its HMAC does not verify), fetch the real set, and refuse
/// the attacker's token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_set_planted_in_the_shared_cache_is_refused() {
    let dir = temp_dir("edge_planted_copy");
    let (seen, origin_port) = origin(ASSERTION_KEY_ID, ASSERTION_SECRET).await;
    let keys = KeyServer::start(&[1]).await;
    let planted_body = json!({ "keys": [fixtures::public_jwk(1), fixtures::public_jwk(2)] });
    let now_ms = unix_now() * 1000;
    let copy_secret = format!("{ASSERTION_SECRET}-keyset-copy"); // what `edge` puts in .dev.vars
    let derived = shared::keyset_copy::CopyKey::new(copy_secret.as_bytes())
        .unwrap()
        .cache_key(&keys.url());
    let plant = json!({
        "key": derived,
        "body": planted_body.to_string(),
        "headers": {
            "content-type": "application/json",
            "cache-control": "public, max-age=86400",
            "x-edgeward-fetched-at": now_ms.to_string(),
            "x-edgeward-issuer-cache-control": "max-age=3600",
            "x-edgeward-copy-mac": fixtures::b64(&[7u8; 32]),
        },
    });
    let attacker = fixtures::sign_with(
        &json!({ "alg": "ES256", "typ": "at+jwt", "kid": fixtures::kid(2) }),
        &{
            let mut claims = fixtures::claims();
            claims["iat"] = json!(unix_now() - 10);
            claims["nbf"] = json!(unix_now() - 10);
            claims["exp"] = json!(unix_now() + 300);
            claims
        },
        2,
    );
    let vars = vars(
        fixtures::ISSUER,
        fixtures::AUDIENCE,
        keys.url(),
        format!("http://127.0.0.1:{origin_port}"),
        &[("UNKNOWN_KID_COOLDOWN_MS", "3000")],
    );
    let mut under_the_url = plant.clone();
    under_the_url["key"] = json!(keys.url());
    plant_in_cache(&dir, &[plant, under_the_url]).await;
    let (edge, edge_port) = edge(&dir, &vars, ASSERTION_SECRET).await;
    let url = format!("http://127.0.0.1:{edge_port}/orders/1");
    let reply = get_with(&url, &attacker).await;
    assert_eq!(
        reply.status, 401,
        "the planted key was trusted: {}",
        reply.body
    );
    assert_eq!(reply.json()["error"], "invalid_token");
    // (wrangler writes its log a little after the answer.)
    let logged = Instant::now();
    while !edge.log().contains("jwks_copy_refused") {
        assert!(logged.elapsed() < Duration::from_secs(10), "{}", edge.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(keys.fetches() >= 1, "the real set was fetched instead");
    assert_eq!(get_with(&url, &good_token()).await.status, 200);
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "only the good token reached the origin"
    );
}

/// Runs `tests/workers/plant-cache.mjs` in `wrangler dev` on the same local state as the
/// edge of `dir` (the same "zone" cache) and has it store each of `plants`.
async fn plant_in_cache(dir: &std::path::Path, plants: &[Value]) {
    let planter = dir.join("planter");
    std::fs::create_dir_all(&planter).unwrap();
    std::fs::write(
        planter.join("wrangler.toml"),
        format!(
            "name = \"planter\"\nmain = \"{}\"\ncompatibility_date = \"2026-04-26\"\n",
            root().join("tests/workers/plant-cache.mjs").display()
        ),
    )
    .unwrap();
    let (running, port) = serve_worker(&planter, dir, "wrangler.log").await;
    let url = format!("http://127.0.0.1:{port}/");
    wait_ready(&url, Duration::from_secs(30), &running).await;
    for plant in plants {
        let reply = Reply::of(http().post(&url).body(plant.to_string())).await;
        assert_eq!(reply.body, "planted", "{}", running.log());
    }
}

/// A neighbour on the edge's egress address keeps the feed's per-address budget run down.
/// The edge presents the feed token, so its pulls go on a budget of their own, and a revoked
/// token is refused within the interval: without the token its pulls would be refused too,
/// and it would keep serving the last list. With `feed_requires_token`, a poll without the
/// token is 401 with an RFC 6750 challenge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_neighbour_cannot_hold_revocations_back_from_an_edge_with_the_feed_token() {
    const FEED_TOKEN: &str = "an-edge-feed-token-0123456789abcdef";
    let dir = temp_dir("edge_feed_token");
    let (_seen, origin_port) = origin(ASSERTION_KEY_ID, ASSERTION_SECRET).await;
    let (_issuer, issuer_port) = issuer_with(
        &dir,
        &[
            ("ISSUER_FEED_TOKENS", FEED_TOKEN),
            ("ISSUER_FEED_REQUIRES_TOKEN", "true"),
            ("ISSUER_FEED_RATE_PER_ADDRESS", "5/1s;burst=5"),
        ],
    )
    .await;
    let client = Client::create(&dir, "feed-token", &[]);
    let issuer_url = format!("http://127.0.0.1:{issuer_port}");
    let feed_url = format!("{issuer_url}/revocations");

    let reply = get(&feed_url).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(
        reply.header("www-authenticate"),
        Some(r#"Bearer realm="edgeward-feed""#)
    );
    // With the token: no shared cache may keep the answer and hand it to anyone.
    let reply = get_with(&feed_url, FEED_TOKEN).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("cache-control"), Some("private, max-age=1"));

    // The neighbour: anonymous polls from the same address, every 20 ms, until told to stop.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let neighbour = {
        let (feed_url, stop) = (feed_url.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut refused = 0_u32;
            for _ in 0..1_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                if get(&feed_url).await.status == 429 {
                    refused += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            refused
        })
    };
    let vars = issuer_vars(
        issuer_port,
        origin_port,
        &[
            ("REVOCATION_URLS", &feed_url),
            ("REVOCATION_INTERVAL_MS", "1000"),
            ("REVOCATION_FEED_TOKEN", FEED_TOKEN),
        ],
    );
    let (_edge, edge_port) = edge(&dir, &vars, ASSERTION_SECRET).await;
    let url = format!("http://127.0.0.1:{edge_port}/revoked");
    let seconds = revoked_and_refused(&client, issuer_port, &url).await;
    println!("with the feed token, the revocation reached the edge in {seconds:.2} s while a neighbour ran the address's budget down");
    stop.store(true, Ordering::SeqCst);
    let refused = neighbour.await.unwrap();
    assert!(
        refused > 0,
        "the neighbour ran the budget without a token down"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_tokens_and_keys_are_refused_within_the_feed_interval() {
    let dir = temp_dir("edge_revocation");
    let (_seen, origin_port) = origin(ASSERTION_KEY_ID, ASSERTION_SECRET).await;
    let (_issuer, issuer_port) = issuer(&dir).await;
    let client = Client::create(&dir, "revocation", &[]);
    let issuer_url = format!("http://127.0.0.1:{issuer_port}");
    let vars = issuer_vars(
        issuer_port,
        origin_port,
        &[
            ("REVOCATION_URLS", &format!("{issuer_url}/revocations")),
            ("REVOCATION_INTERVAL_MS", "1000"),
        ],
    );
    let (_edge, edge_port) = edge(&dir, &vars, ASSERTION_SECRET).await;
    let url = format!("http://127.0.0.1:{edge_port}/revoked");
    // RFC 7009: the client revokes its token; the edge refuses it within the interval.
    let seconds = revoked_and_refused(&client, issuer_port, &url).await;
    println!("token revocation reached the edge in {seconds:.2} s (feed interval 1 s)");

    // A disabled client: every token it holds is refused, well before it expires.
    let disabled = Client::create(&dir, "disabled", &[]);
    let held = disabled.token(issuer_port).await;
    assert_eq!(get_with(&url, &held).await.status, 200);
    let answer = issuer_cli(&dir, &["--json", "client", "disable", &disabled.id]);
    assert_eq!(answer["tokens_revoked"], true);
    let seconds = seconds_until_refused(&url, &held, Duration::from_secs(10)).await;
    println!("a disabled client's token refused at the edge in {seconds:.2} s (feed interval 1 s)");

    // Key compromise: every token the key signed is refused; new tokens work at once.
    let token = client.token(issuer_port).await;
    let kid = kid_of(&token);
    assert_eq!(get_with(&url, &token).await.status, 200);
    let revoked_at = Instant::now();
    let answer = issuer_cli(&dir, &["keys", "revoke", &kid]);
    let seconds = seconds_until_refused(&url, &token, Duration::from_secs(10)).await;
    println!("key revocation reached the edge in {seconds:.2} s (feed interval 1 s)");
    let successor = answer["now_signing"].as_str().unwrap().to_owned();
    let fresh = loop {
        let fresh = client.token(issuer_port).await;
        if kid_of(&fresh) == successor {
            break fresh;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(15),
            "issuer still signs with {kid}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let reply = get_with(&url, &fresh).await;
    assert_eq!(reply.status, 200, "a new key's first token: {}", reply.body);
    println!(
        "tokens from the successor key work {:.2} s after the revocation",
        revoked_at.elapsed().as_secs_f64()
    );

    // An isolate that sat idle past its list's bound (the interval and a fetch timeout,
    // 2 s here) pulls before it decides: the first request after the pause is refused, not
    // served from the list it had.
    let reply = client.revoke_at(&issuer_url, &fresh).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let reply = get_with(&url, &fresh).await;
    assert_eq!(
        reply.status, 401,
        "the first request after the pause: {}",
        reply.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_at_the_planned_count_per_client_and_per_ip() {
    let dir = temp_dir("edge_rate_limit");
    let (seen, origin_port) = origin(ASSERTION_KEY_ID, ASSERTION_SECRET).await;
    let (_issuer, issuer_port) = issuer(&dir).await;
    let limited = Client::create(&dir, "limited", &["--rate", "5/60s", "--burst", "5"]);
    let other = Client::create(&dir, "other", &[]);
    let vars = issuer_vars(
        issuer_port,
        origin_port,
        &[
            ("DEFAULT_RATE_PLAN", "100/60s;burst=100"),
            ("FAILED_AUTH_PLAN", "3/60s;burst=3"),
        ],
    );
    let (edge, edge_port) = edge(&dir, &vars, ASSERTION_SECRET).await;
    let url = format!("http://127.0.0.1:{edge_port}/limited");
    let (token, other_token) = (
        limited.token(issuer_port).await,
        other.token(issuer_port).await,
    );
    for n in 1..=5 {
        let reply = get_with(&url, &token).await;
        assert_eq!(reply.status, 200, "request {n}: {}", reply.body);
        assert_eq!(
            reply.header("ratelimit-policy"),
            Some("\"client\";q=5;w=60;burst=5")
        );
        let remaining = reply.header("ratelimit").unwrap();
        assert!(
            remaining.contains(&format!("r={}", 5 - n)),
            "request {n}: {remaining}"
        );
    }
    let reply = get_with(&url, &token).await;
    assert_eq!(reply.status, 429, "{}", reply.body);
    assert_eq!(reply.json()["error"], "too_many_requests");
    let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=12).contains(&retry), "retry-after {retry}");
    assert_eq!(
        reply.header("ratelimit-policy"),
        Some("\"client\";q=5;w=60;burst=5")
    );
    assert!(reply.header("ratelimit").unwrap().contains("r=0"));

    // Another client is unaffected.
    let reply = get_with(&url, &other_token).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.header("ratelimit-policy"),
        Some("\"client\";q=100;w=60;burst=100")
    );

    // Failed authentication is limited per IP: three refusals, then 429.
    let bad = format!("{}x", &token[..token.len() - 1]);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(get_with(&url, &bad).await.status);
    }
    assert_eq!(statuses, [401, 401, 401, 429]);
    // The allowed requests were decided by the client's Durable Object (the default mode,
    // `lease`: the first by its answer, the rest from its leases), never by a fallback.
    let allowed = logged_lines(&edge, 5, |line| {
        line["client"] == limited.id.as_str() && line["status"] == 200
    })
    .await;
    let sources: Vec<&Value> = allowed.iter().map(|line| &line["limit_source"]).collect();
    assert_eq!(sources[0], "object", "{sources:?}");
    assert!(
        sources.iter().all(|s| *s == "object" || *s == "lease"),
        "{sources:?}"
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        6,
        "five from the limited client, one from the other"
    );
}

/// An origin that holds `/a` until `/c` has arrived, answers it 201, then holds `/c` a
/// further second and answers it 202: so `/a`'s answer comes back while `/c` is parked.
async fn ordered_origin() -> u16 {
    let c_arrived = Arc::new(tokio::sync::Notify::new());
    let held = Arc::clone(&c_arrived);
    let app = axum::Router::new()
        .route(
            "/a",
            axum::routing::get(move || {
                let held = Arc::clone(&held);
                async move {
                    held.notified().await;
                    (axum::http::StatusCode::CREATED, "a")
                }
            }),
        )
        .route(
            "/c",
            axum::routing::get(move || {
                let arrived = Arc::clone(&c_arrived);
                async move {
                    arrived.notify_one();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    (axum::http::StatusCode::ACCEPTED, "c")
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

/// Issue 27, point 11. Request `/a` is the old instance's first forward and waits at the
/// origin; a request to the trap path panics the instance; `/c` is the new instance's first
/// forward, parked under the same count. `/a`'s answer then calls back into the new
/// instance: with its epoch it finds nothing (its log line is lost), so `/c` keeps its own
/// wait and is logged once, with its own status. (Without the epoch `/a`'s callback would
/// take `/c`'s place: `/c` logged with 201.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_of_a_trapped_instance_never_land_on_requests_of_the_new_one() {
    let dir = temp_dir("edge_trap");
    let keys = KeyServer::start(&[1]).await;
    let origin_port = ordered_origin().await;
    let vars = vars(
        fixtures::ISSUER,
        fixtures::AUDIENCE,
        keys.url(),
        format!("http://127.0.0.1:{origin_port}"),
        &[("TEST_TRAP_PATH", "/trap"), ("RATE_LIMIT_MODE", "isolate")],
    );
    let (edge, edge_port) = edge(&dir, &vars, ASSERTION_SECRET).await;
    let token = good_token();
    let url = |path: &str| format!("http://127.0.0.1:{edge_port}{path}");
    let a = {
        let (token, url) = (token.clone(), url("/a"));
        tokio::spawn(async move { get_with(&url, &token).await })
    };
    // `/a` is parked once its request log's origin wait began; give it time to get there.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let trapped = get_with(&url("/trap"), &token).await;
    assert_eq!(trapped.status, 500, "{}", trapped.body);
    let c = get_with(&url("/c"), &token).await;
    assert_eq!((c.status, c.body.as_str()), (202, "c"));
    let a = a.await.unwrap();
    assert_eq!((a.status, a.body.as_str()), (201, "a"));
    assert!(
        edge.log().contains("TEST_TRAP_PATH requested"),
        "the instance did not trap:\n{}",
        edge.log()
    );
    let c_lines = logged_lines(&edge, 1, |line| line["path"] == "/c").await;
    // Any second line for `/c` would have come with the first (the edge writes both before `/c`
    // is answered).
    let statuses: Vec<&Value> = c_lines.iter().map(|line| &line["status"]).collect();
    assert_eq!(statuses, [&json!(202)], "{c_lines:?}");
    // The new instance serves on: a second request is forwarded and logged as usual.
    let again = get_with(&url("/c"), &token).await;
    assert_eq!(again.status, 202);
}
