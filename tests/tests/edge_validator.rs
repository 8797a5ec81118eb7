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

use base64ct::{Base64UrlUnpadded, Encoding};
use edgeward_tests::*;
use p256::ecdsa::{signature::Signer, Signature};
use serde_json::{json, Map, Value};

const SECRET: &str = "e2e-assertion-secret-0123456789abcdef";
const KEY_ID: &str = "e2e-1";

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
    let now = unix_now();
    let mut header = fixtures::header();
    edit_header(header.as_object_mut().unwrap());
    let mut claims = fixtures::claims();
    claims["iat"] = json!(now - 10);
    claims["nbf"] = json!(now - 10);
    claims["exp"] = json!(now + 300);
    edit_claims(claims.as_object_mut().unwrap());
    fixtures::sign(&header, &claims)
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

/// The vars every test edge shares, plus `extra`.
fn vars(
    issuer: &str,
    audience: &str,
    jwks_urls: String,
    origin_url: String,
    extra: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    let mut vars = vec![
        ("ISSUER", issuer.to_owned()),
        ("AUDIENCE", audience.to_owned()),
        ("JWKS_URLS", jwks_urls),
        ("ORIGIN_URL", origin_url),
        ("ASSERTION_KEY_ID", KEY_ID.to_owned()),
        ("FETCH_TIMEOUT_MS", "1000".to_owned()),
    ];
    vars.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    vars
}

/// The vars of an edge in front of the real issuer on `issuer_port` and an origin, plus `extra`.
fn issuer_vars(
    issuer_port: u16,
    origin_port: u16,
    extra: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    vars(
        ISSUER_URL,
        "edgeward-api",
        format!("http://127.0.0.1:{issuer_port}/.well-known/jwks.json"),
        format!("http://127.0.0.1:{origin_port}"),
        extra,
    )
}

/// One refused request: what is sent, and the status, `error` and log reason expected.
struct Case {
    name: &'static str,
    headers: Vec<String>,
    status: u16,
    error: Option<&'static str>,
    reason: &'static str,
}

fn case(name: &'static str, token: &str, reason: &'static str) -> Case {
    Case {
        name,
        headers: vec![bearer(token)],
        status: 401,
        error: Some("invalid_token"),
        reason,
    }
}

/// Every rejection class of the shared vectors, as the edge sees it.
fn rejection_cases() -> Vec<Case> {
    let now = unix_now();
    let good = good_token();
    let (input, _) = good.rsplit_once('.').unwrap();
    let signature: Signature = fixtures::signing_key(1).sign(input.as_bytes());
    let segments: Vec<&str> = good.split('.').collect();
    let b64 = |text: &str| fixtures::b64(text.as_bytes());
    vec![
        Case {
            name: "no credentials",
            headers: vec![],
            status: 401,
            error: None,
            reason: "missing_token",
        },
        Case {
            name: "another scheme",
            headers: vec!["Authorization: Basic dXNlcjpwYXNz".into()],
            status: 401,
            error: None,
            reason: "missing_token",
        },
        Case {
            name: "two Authorization headers",
            headers: vec![bearer(&good), bearer(&good)],
            status: 400,
            error: Some("invalid_request"),
            reason: "malformed_request",
        },
        Case {
            name: "not a b64token",
            headers: vec!["Authorization: Bearer a\"b".into()],
            status: 400,
            error: Some("invalid_request"),
            reason: "malformed_request",
        },
        case(
            "too large",
            &format!("{}.b.c", "a".repeat(9000)),
            "too_large",
        ),
        case("two segments", "abc.def", "malformed"),
        case(
            "not base64url",
            &format!("ab+c.{}.{}", segments[1], segments[2]),
            "bad_base64",
        ),
        case(
            "header not JSON",
            &fixtures::sign_segments(&b64("not json"), segments[1], 1),
            "bad_json",
        ),
        case(
            "alg none",
            &token(|h| drop(h.insert("alg".into(), json!("none"))), |_| {}),
            "alg_not_allowed",
        ),
        case(
            "alg HS256",
            &token(|h| drop(h.insert("alg".into(), json!("HS256"))), |_| {}),
            "alg_not_allowed",
        ),
        case(
            "jku",
            &token(
                |h| drop(h.insert("jku".into(), json!("https://evil.test/jwks"))),
                |_| {},
            ),
            "forbidden_header",
        ),
        case(
            "embedded jwk",
            &token(
                |h| drop(h.insert("jwk".into(), fixtures::public_jwk(3))),
                |_| {},
            ),
            "forbidden_header",
        ),
        case(
            "typ JWT",
            &token(|h| drop(h.insert("typ".into(), json!("JWT"))), |_| {}),
            "wrong_typ",
        ),
        case(
            "no kid",
            &token(|h| drop(h.remove("kid")), |_| {}),
            "missing_kid",
        ),
        case(
            "DER signature",
            &fixtures::with_signature(&good, &fixtures::der(&signature)),
            "der_signature",
        ),
        case(
            "high-S mirror of the good signature",
            &fixtures::with_signature(&good, &fixtures::high_s(signature).to_bytes()),
            "high_s_signature",
        ),
        case(
            "short signature",
            &fixtures::with_signature(&good, &[7; 10]),
            "signature_length",
        ),
        case(
            "signed by another key",
            &{
                let mut claims: Value =
                    serde_json::from_slice(&Base64UrlUnpadded::decode_vec(segments[1]).unwrap())
                        .unwrap();
                claims["jti"] = json!("other-signer");
                fixtures::sign_with(&fixtures::header(), &claims, 2)
            },
            "bad_signature",
        ),
        case(
            "no exp",
            &token(|_| {}, |c| drop(c.remove("exp"))),
            "missing_claim",
        ),
        case(
            "sub not a string",
            &token(|_| {}, |c| drop(c.insert("sub".into(), json!(42)))),
            "invalid_claim",
        ),
        case(
            "foreign issuer",
            &token(
                |_| {},
                |c| drop(c.insert("iss".into(), json!("https://evil.test"))),
            ),
            "wrong_issuer",
        ),
        case(
            "foreign audience",
            &token(
                |_| {},
                |c| drop(c.insert("aud".into(), json!("https://other.test"))),
            ),
            "wrong_audience",
        ),
        case(
            "expired",
            &token(
                |_| {},
                |c| {
                    c.insert("iat".into(), json!(now - 400));
                    c.insert("nbf".into(), json!(now - 400));
                    c.insert("exp".into(), json!(now - 100));
                },
            ),
            "expired",
        ),
        case(
            "not yet valid",
            &token(|_| {}, |c| drop(c.insert("nbf".into(), json!(now + 600)))),
            "not_yet_valid",
        ),
        case(
            "issued in the future",
            &token(
                |_| {},
                |c| {
                    c.remove("nbf");
                    c.insert("iat".into(), json!(now + 600));
                    c.insert("exp".into(), json!(now + 900));
                },
            ),
            "issued_in_future",
        ),
        case(
            "lifetime too long",
            &token(|_| {}, |c| drop(c.insert("exp".into(), json!(now + 7200)))),
            "lifetime_too_long",
        ),
    ]
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rejection_class_is_answered_at_the_edge_and_never_reaches_the_origin() {
    rejection_classes("edge_rejections", "durable").await;
}

/// The same journey with isolate rate limits: no Durable Object wait on the request path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolate_rate_limits_answer_every_rejection_class_the_same_way() {
    rejection_classes("edge_rejections_fast", "isolate").await;
}

async fn rejection_classes(name: &str, rate_limit_mode: &str) {
    let dir = temp_dir(name);
    let (seen, origin_port) = origin(KEY_ID, SECRET).await;
    let keys = KeyServer::start(&[1]).await;
    let edge_port = free_port();
    let vars = vars(
        fixtures::ISSUER,
        fixtures::AUDIENCE,
        keys.url(),
        format!("http://127.0.0.1:{origin_port}"),
        &[
            ("FAILED_AUTH_PLAN", "1000/60s;burst=1000"),
            ("UNKNOWN_KID_COOLDOWN_MS", "3000"),
            ("RATE_LIMIT_MODE", rate_limit_mode),
        ],
    );
    let edge = tokio::task::block_in_place(|| edge(&dir, edge_port, &vars, SECRET));
    let url = format!("http://127.0.0.1:{edge_port}/orders/7?x=1");

    // A valid token reaches the origin, which sees the verified identity and only the
    // assertion header, whatever identity headers the client sent.
    let reply = http(&[
        "-H",
        &bearer(&good_token()),
        "-H",
        "X-Edgeward-Sub: admin",
        "-H",
        "x-edgeward-assertion: v1.e2e-1.eyJzdWIiOiJhZG1pbiJ9.AAAA",
        "-H",
        "X_Edgeward_Sub: admin",
        "-H",
        "x-edgeward_assertion: v1.e2e-1.eyJzdWIiOiJhZG1pbiJ9.AAAA",
        "-H",
        "X-Forwarded-For: 203.0.113.66",
        "-H",
        "X_Forwarded_Host: admin.internal",
        "-H",
        "x.edgeward.sub: admin",
        "-H",
        "X-HTTP-Method-Override: DELETE",
        "-H",
        "Forwarded: for=203.0.113.66;proto=https",
        "-H",
        "X-Real-IP: 203.0.113.66",
        "-H",
        "True-Client-IP: 203.0.113.66",
        "-H",
        "Proxy-Authorization: Basic c2VjcmV0",
        "-H",
        "X-Forged: kept",
        &url,
    ]);
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

    let reached = seen.lock().unwrap().len();
    let cases = rejection_cases();
    for case in &cases {
        let mut args: Vec<&str> = case
            .headers
            .iter()
            .flat_map(|h| ["-H", h.as_str()])
            .collect();
        args.extend(["-H", "X-Edgeward-Sub: admin", &url]);
        let reply = tokio::task::block_in_place(|| http(&args));
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
    let logged = |case: &Case, logs: &[Value]| {
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

    // Junk kids, many at once: at most one refetch per cooldown, and no origin contact.
    let before = keys.fetches();
    let junk: Vec<_> = (0..24)
        .map(|n| {
            let token = token(
                |h| drop(h.insert("kid".into(), json!(format!("junk-{n}")))),
                |_| {},
            );
            let url = url.clone();
            std::thread::spawn(move || http(&["-H", &bearer(&token), &url]).status)
        })
        .collect();
    for request in junk {
        assert_eq!(request.join().unwrap(), 401);
    }
    let after_junk = keys.fetches();
    assert!(
        after_junk <= before + 1,
        "junk kids caused {} refetches",
        after_junk - before
    );

    // Rotation: the issuer publishes key 2; once the cooldown has passed, the first token
    // signed with it is accepted on its first try (one refetch, no 401 window).
    keys.keys.lock().unwrap().push(2);
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let rotated = fixtures::sign_with(
        &json!({ "alg": "ES256", "typ": "at+jwt", "kid": fixtures::kid(2) }),
        &serde_json::from_slice::<Value>(
            &Base64UrlUnpadded::decode_vec(good_token().split('.').nth(1).unwrap()).unwrap(),
        )
        .unwrap(),
        2,
    );
    let reply = tokio::task::block_in_place(|| http(&["-H", &bearer(&rotated), &url]));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        keys.fetches(),
        after_junk + 1,
        "one refetch for the new kid"
    );
    assert_eq!(seen.lock().unwrap().len(), reached + 1);
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
    tokio::task::block_in_place(|| {
        let port = free_port();
        let _edge = edge(&dir, port, &vars, SECRET);
        let reply = http(&[
            "-H",
            &bearer(&good_token()),
            &format!("http://127.0.0.1:{port}/a"),
        ]);
        assert_eq!(reply.status, 503, "{}", reply.body);
    });
    assert_eq!(keys.fetches(), 0, "the redirect was followed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_set_at_all_is_503_and_a_dead_origin_is_502() {
    let dir = temp_dir("edge_unavailable");
    let keys = KeyServer::start(&[1]).await;
    let (keyless_port, originless_port) = (free_port(), free_port());
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
    let (_keyless, _originless) = tokio::task::block_in_place(|| {
        (
            edge(&keyless_dir, keyless_port, &keyless_vars, SECRET),
            edge(&originless_dir, originless_port, &originless_vars, SECRET),
        )
    });
    let token = good_token();
    tokio::task::block_in_place(|| {
        let reply = http(&[
            "-H",
            &bearer(&token),
            &format!("http://127.0.0.1:{keyless_port}/a"),
        ]);
        assert_eq!(reply.status, 503, "{}", reply.body);
        assert_eq!(reply.json()["error"], "temporarily_unavailable");
        let health = http(&[&format!("http://127.0.0.1:{keyless_port}/.edge/health")]).json();
        assert_eq!(
            (health["status"].as_str(), health["jwks"].as_str()),
            (Some("degraded"), Some("missing"))
        );

        let reply = http(&[
            "-H",
            &bearer(&token),
            &format!("http://127.0.0.1:{originless_port}/a"),
        ]);
        assert_eq!(reply.status, 502, "{}", reply.body);
        assert_eq!(reply.json()["error"], "bad_gateway");
    });
}

/// Polls `url` with `token` until it is refused; returns the seconds it took.
fn seconds_until_refused(url: &str, token: &str, limit: Duration) -> f64 {
    let started = Instant::now();
    loop {
        let reply = http(&["-H", &bearer(token), url]);
        if reply.status == 401 {
            assert_eq!(reply.json()["error"], "invalid_token", "{}", reply.body);
            return started.elapsed().as_secs_f64();
        }
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert!(started.elapsed() < limit, "still accepted after {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_down_keeps_serving_from_the_stale_key_set_and_the_url_list_fails_over() {
    let dir = temp_dir("edge_stale");
    let (seen, origin_port) = origin(KEY_ID, SECRET).await;
    let (issuer, issuer_port) =
        tokio::task::block_in_place(|| issuer_with(&dir, &[("ISSUER_JWKS_MAX_AGE_SECS", "10")]));
    let client = Client::create(&dir, "stale", &[]);
    let edge_port = free_port();
    // The first URL is dead: the edge moves on to the next within its timeout.
    let vars = vars(
        ISSUER_URL,
        "edgeward-api",
        format!(
            "{} http://127.0.0.1:{issuer_port}/.well-known/jwks.json",
            dead_url("/.well-known/jwks.json")
        ),
        format!("http://127.0.0.1:{origin_port}"),
        &[],
    );
    let _edge = tokio::task::block_in_place(|| edge(&dir, edge_port, &vars, SECRET));
    let url = format!("http://127.0.0.1:{edge_port}/stale");
    tokio::task::block_in_place(|| {
        let (first, second) = (client.token(issuer_port), client.token(issuer_port));
        assert_eq!(http(&["-H", &bearer(&first), &url]).status, 200);
        drop(issuer);
        // Past the key set's max-age (10 s): it is stale, every URL fails, and a token the
        // edge has never seen still verifies against the last good set.
        std::thread::sleep(Duration::from_secs(11));
        let reply = http(&["-H", &bearer(&second), &url]);
        assert_eq!(reply.status, 200, "{}", reply.body);
        let health = http(&[&format!("http://127.0.0.1:{edge_port}/.edge/health")]).json();
        assert_eq!(health["jwks"], "stale", "{health}");
    });
    assert_eq!(seen.lock().unwrap().len(), 2);
}

/// A new isolate starts from the colo's Cache API copy of the key set: with the issuer gone,
/// a restarted edge (same local state, so the same "colo") still verifies a token it has
/// never seen, and says it got a fresh set without fetching.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_isolate_starts_from_the_cache_api_copy_when_the_issuer_is_down() {
    let dir = temp_dir("edge_cache_copy");
    let (seen, origin_port) = origin(KEY_ID, SECRET).await;
    let (issuer, issuer_port) = tokio::task::block_in_place(|| issuer(&dir));
    let client = Client::create(&dir, "cache-copy", &[]);
    let vars = issuer_vars(issuer_port, origin_port, &[]);
    tokio::task::block_in_place(|| {
        let (first, second) = (client.token(issuer_port), client.token(issuer_port));
        let edge_port = free_port();
        let first_edge = edge(&dir, edge_port, &vars, SECRET);
        let url = format!("http://127.0.0.1:{edge_port}/copy");
        assert_eq!(http(&["-H", &bearer(&first), &url]).status, 200);
        drop(first_edge);
        drop(issuer);

        let edge_port = free_port();
        let _second_edge = edge(&dir, edge_port, &vars, SECRET);
        let health = format!("http://127.0.0.1:{edge_port}/.edge/health");
        assert_eq!(http(&[&health]).json()["jwks"], "missing");
        let reply = http(&[
            "-H",
            &bearer(&second),
            &format!("http://127.0.0.1:{edge_port}/copy"),
        ]);
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(http(&[&health]).json()["jwks"], "fresh");
    });
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
    let (seen, origin_port) = origin(KEY_ID, SECRET).await;
    let keys = KeyServer::start(&[1]).await;
    let planted_body = json!({ "keys": [fixtures::public_jwk(1), fixtures::public_jwk(2)] });
    let now_ms = unix_now() * 1000;
    let copy_secret = format!("{SECRET}-keyset-copy"); // what `edge` puts in .dev.vars
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
    tokio::task::block_in_place(|| {
        let mut under_the_url = plant.clone();
        under_the_url["key"] = json!(keys.url());
        plant_in_cache(&dir, &[plant, under_the_url]);
        let edge_port = free_port();
        let edge = edge(&dir, edge_port, &vars, SECRET);
        let url = format!("http://127.0.0.1:{edge_port}/orders/1");
        let reply = http(&["-H", &bearer(&attacker), &url]);
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
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(keys.fetches() >= 1, "the real set was fetched instead");
        assert_eq!(http(&["-H", &bearer(&good_token()), &url]).status, 200);
    });
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "only the good token reached the origin"
    );
}

/// Runs `tests/workers/plant-cache.mjs` in `wrangler dev` on the same local state as the
/// edge of `dir` (the same "zone" cache) and has it store each of `plants`.
fn plant_in_cache(dir: &std::path::Path, plants: &[Value]) {
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
    let port = free_port();
    let command = wrangler_dev(&planter, port, dir);
    let running = Running::spawn(command, planter.join("wrangler.log"));
    let url = format!("http://127.0.0.1:{port}/");
    wait_ready(&url, Duration::from_secs(90), &running);
    for plant in plants {
        let reply = http(&["-X", "POST", "--data-binary", &plant.to_string(), &url]);
        assert_eq!(reply.body, "planted", "{}", running.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_tokens_and_keys_are_refused_within_the_feed_interval() {
    let dir = temp_dir("edge_revocation");
    let (_seen, origin_port) = origin(KEY_ID, SECRET).await;
    let (_issuer, issuer_port) = tokio::task::block_in_place(|| issuer(&dir));
    let client = Client::create(&dir, "revocation", &[]);
    let edge_port = free_port();
    let issuer_url = format!("http://127.0.0.1:{issuer_port}");
    let vars = issuer_vars(
        issuer_port,
        origin_port,
        &[
            ("REVOCATION_URLS", &format!("{issuer_url}/revocations")),
            ("REVOCATION_INTERVAL_MS", "1000"),
        ],
    );
    let _edge = tokio::task::block_in_place(|| edge(&dir, edge_port, &vars, SECRET));
    let url = format!("http://127.0.0.1:{edge_port}/revoked");
    tokio::task::block_in_place(|| {
        // RFC 7009: the client revokes its token; the edge refuses it within the interval.
        let revoked = client.token(issuer_port);
        assert_eq!(http(&["-H", &bearer(&revoked), &url]).status, 200);
        let reply = http(&[
            "-u",
            &format!("{}:{}", client.id, client.secret),
            "-d",
            &format!("token={revoked}"),
            &format!("{issuer_url}/oauth2/revoke"),
        ]);
        assert_eq!(reply.status, 200, "{}", reply.body);
        let seconds = seconds_until_refused(&url, &revoked, Duration::from_secs(10));
        println!("token revocation reached the edge in {seconds:.2} s (feed interval 1 s)");

        // A disabled client: every token it holds is refused, well before it expires.
        let disabled = Client::create(&dir, "disabled", &[]);
        let held = disabled.token(issuer_port);
        assert_eq!(http(&["-H", &bearer(&held), &url]).status, 200);
        let answer = issuer_cli(&dir, &["--json", "client", "disable", &disabled.id]);
        assert_eq!(answer["tokens_revoked"], true);
        let seconds = seconds_until_refused(&url, &held, Duration::from_secs(10));
        println!(
            "a disabled client's token refused at the edge in {seconds:.2} s (feed interval 1 s)"
        );

        // Key compromise: every token the key signed is refused; new tokens work at once.
        let token = client.token(issuer_port);
        let kid = kid_of(&token);
        assert_eq!(http(&["-H", &bearer(&token), &url]).status, 200);
        let revoked_at = Instant::now();
        let answer = issuer_cli(&dir, &["keys", "revoke", &kid]);
        let seconds = seconds_until_refused(&url, &token, Duration::from_secs(10));
        println!("key revocation reached the edge in {seconds:.2} s (feed interval 1 s)");
        let successor = answer["now_signing"].as_str().unwrap().to_owned();
        let fresh = loop {
            let fresh = client.token(issuer_port);
            if kid_of(&fresh) == successor {
                break fresh;
            }
            assert!(
                revoked_at.elapsed() < Duration::from_secs(15),
                "issuer still signs with {kid}"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        let reply = http(&["-H", &bearer(&fresh), &url]);
        assert_eq!(reply.status, 200, "a new key's first token: {}", reply.body);
        println!(
            "tokens from the successor key work {:.2} s after the revocation",
            revoked_at.elapsed().as_secs_f64()
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_at_the_planned_count_per_client_and_per_ip() {
    let dir = temp_dir("edge_rate_limit");
    let (seen, origin_port) = origin(KEY_ID, SECRET).await;
    let (_issuer, issuer_port) = tokio::task::block_in_place(|| issuer(&dir));
    let limited = Client::create(&dir, "limited", &["--rate", "5/60s", "--burst", "5"]);
    let other = Client::create(&dir, "other", &[]);
    let edge_port = free_port();
    let vars = issuer_vars(
        issuer_port,
        origin_port,
        &[
            ("DEFAULT_RATE_PLAN", "100/60s;burst=100"),
            ("FAILED_AUTH_PLAN", "3/60s;burst=3"),
        ],
    );
    let edge = tokio::task::block_in_place(|| edge(&dir, edge_port, &vars, SECRET));
    let url = format!("http://127.0.0.1:{edge_port}/limited");
    tokio::task::block_in_place(|| {
        let (token, other_token) = (limited.token(issuer_port), other.token(issuer_port));
        for n in 1..=5 {
            let reply = http(&["-H", &bearer(&token), &url]);
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
        let reply = http(&["-H", &bearer(&token), &url]);
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
        let reply = http(&["-H", &bearer(&other_token), &url]);
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(
            reply.header("ratelimit-policy"),
            Some("\"client\";q=100;w=60;burst=100")
        );

        // Failed authentication is limited per IP: three refusals, then 429.
        let bad = format!("{}x", &token[..token.len() - 1]);
        let statuses: Vec<u16> = (0..4)
            .map(|_| http(&["-H", &bearer(&bad), &url]).status)
            .collect();
        assert_eq!(statuses, [401, 401, 401, 429]);
    });
    // The allowed requests were decided by the client's Durable Object (not a fallback).
    let allowed = logged_lines(&edge, 5, |line| {
        line["client"] == limited.id.as_str() && line["status"] == 200
    })
    .await;
    let sources: Vec<&Value> = allowed.iter().map(|line| &line["limit_source"]).collect();
    assert_eq!(sources, vec![&json!("object"); 5]);
    assert_eq!(
        seen.lock().unwrap().len(),
        6,
        "five from the limited client, one from the other"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_sampling_keeps_one_forwarded_line_in_n_and_every_refusal() {
    let dir = temp_dir("edge_log_sampling");
    let (seen, origin_port) = origin(KEY_ID, SECRET).await;
    let (_issuer, issuer_port) = tokio::task::block_in_place(|| issuer(&dir));
    let client = Client::create(&dir, "sampled", &[]);
    let edge_port = free_port();
    let vars = issuer_vars(issuer_port, origin_port, &[("LOG_FORWARDED_EVERY", "3")]);
    let edge = tokio::task::block_in_place(|| edge(&dir, edge_port, &vars, SECRET));
    let url = format!("http://127.0.0.1:{edge_port}/sampled");
    tokio::task::block_in_place(|| {
        let token = client.token(issuer_port);
        for _ in 0..6 {
            assert_eq!(http(&["-H", &bearer(&token), &url]).status, 200);
        }
        for _ in 0..2 {
            assert_eq!(
                http(&["-H", "Authorization: Bearer x.y.z", &url]).status,
                401
            );
        }
    });
    // The first forwarded request of every three is logged, each refusal is; a moment
    // more, in case a line that should not be there is still on its way.
    let sampled = |line: &Value| line["path"] == "/sampled";
    logged_lines(&edge, 4, sampled).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let outcomes: Vec<Value> = request_logs(&edge)
        .into_iter()
        .filter(sampled)
        .map(|line| line["outcome"].clone())
        .collect();
    assert_eq!(
        outcomes,
        vec![
            json!("forwarded"),
            json!("forwarded"),
            json!("rejected"),
            json!("rejected")
        ]
    );
    assert_eq!(seen.lock().unwrap().len(), 6);
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
    let edge_port = free_port();
    let vars = vars(
        fixtures::ISSUER,
        fixtures::AUDIENCE,
        keys.url(),
        format!("http://127.0.0.1:{origin_port}"),
        &[("TEST_TRAP_PATH", "/trap"), ("RATE_LIMIT_MODE", "isolate")],
    );
    let edge = tokio::task::block_in_place(|| edge(&dir, edge_port, &vars, SECRET));
    let token = good_token();
    let url = |path: &str| format!("http://127.0.0.1:{edge_port}{path}");
    let a = {
        let (token, url) = (token.clone(), url("/a"));
        std::thread::spawn(move || http(&["-H", &bearer(&token), &url]))
    };
    // `/a` is parked once its request log's origin wait began; give it time to get there.
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| {
        let trapped = http(&["-H", &bearer(&token), &url("/trap")]);
        assert_eq!(trapped.status, 500, "{}", trapped.body);
        let c = http(&["-H", &bearer(&token), &url("/c")]);
        assert_eq!((c.status, c.body.as_str()), (202, "c"));
        let a = a.join().unwrap();
        assert_eq!((a.status, a.body.as_str()), (201, "a"));
    });
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
    let again = tokio::task::block_in_place(|| http(&["-H", &bearer(&token), &url("/c")]));
    assert_eq!(again.status, 202);
}
