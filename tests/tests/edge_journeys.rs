//! Journeys through the real pieces: the issuer binary on SQLite, the Worker in local workerd,
//! and an axum origin behind the shared edge layer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use edgeward_tests::*;

/// A client (`read write`, for `edgeward-api`) made with the issuer's CLI, and a token for it
/// with the `read` scope: its id and the token.
async fn read_token(dir: &std::path::Path, issuer_url: &str, name: &str) -> (String, String) {
    let created = issuer_cli(
        dir,
        &[
            "client",
            "create",
            "--name",
            name,
            "--scope",
            "read write",
            "--audience",
            AUDIENCE,
        ],
    );
    let (id, secret) = (
        created["client_id"].as_str().unwrap(),
        created["client_secret"].as_str().unwrap(),
    );
    let reply = Reply::of(
        http()
            .post(format!("{issuer_url}/oauth2/token"))
            .basic_auth(id, Some(secret))
            .form(&[("grant_type", "client_credentials"), ("scope", "read")]),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let token = reply.json()["access_token"].as_str().unwrap().to_owned();
    (id.to_owned(), token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_creates_a_client_and_only_verified_identity_reaches_the_origin() {
    let dir = temp_dir("journey");
    let (seen, origin_port) = origin(ASSERTION_KEY_ID, ASSERTION_SECRET).await;
    let (_issuer, issuer_port) = issuer(&dir).await;
    let issuer_url = format!("http://127.0.0.1:{issuer_port}");
    let (id, token) = read_token(&dir, &issuer_url, "journey").await;
    let id = id.as_str();
    let vars = EdgeSettings::new(issuer_port, origin_port);
    let (_edge, edge_port) = edge(&dir, &vars, ASSERTION_SECRET).await;
    let edge_url = format!("http://127.0.0.1:{edge_port}");

    // The client calls the edge; the origin sees the verified identity and scope.
    let reply = get_with(&format!("{edge_url}/orders/7?x=1"), &token).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let echoed = reply.json();
    assert_eq!(
        (echoed["sub"].as_str(), echoed["client_id"].as_str()),
        (Some(id), Some(id))
    );
    assert_eq!(
        (echoed["scope"].as_str(), echoed["path"].as_str()),
        (Some("read"), Some("/orders/7"))
    );

    // A route the origin guards with a scope the token lacks: 403 `insufficient_scope` from
    // the origin's layer, naming the scope, passed on by the edge.
    let reply = get_with(&format!("{edge_url}/admin/users"), &token).await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    let challenge = reply.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.contains(r#"error="insufficient_scope""#),
        "{challenge}"
    );
    assert!(challenge.contains(r#"scope="admin""#), "{challenge}");

    // A valid token plus forged identity headers: the origin sees only the verified values.
    let forged = ("x-edgeward-assertion", "v1.e2e-1.eyJzdWIiOiJhZG1pbiJ9.AAAA");
    let reply = Reply::of(
        http()
            .get(format!("{edge_url}/orders/8"))
            .bearer_auth(&token)
            .header(forged.0, forged.1),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["sub"].as_str(), Some(id));

    // Forged headers without a token never reach the origin.
    let before = seen.lock().unwrap().len();
    for (name, value) in [
        forged,
        ("authorization", "Bearer not.a.token"),
        ("x-nothing", "at all"),
    ] {
        let request = http()
            .get(format!("{edge_url}/orders/9"))
            .header(name, value);
        let reply = Reply::of(request).await;
        assert_eq!(reply.status, 401, "{}", reply.body);
        assert!(reply.json()["error_description"].is_string());
    }
    assert_eq!(
        seen.lock().unwrap().len(),
        before,
        "the origin was never contacted"
    );

    // Straight to the origin with a forged assertion: refused by the edge layer.
    let request = http()
        .get(format!("http://127.0.0.1:{origin_port}/orders/7"))
        .header(forged.0, forged.1);
    assert_eq!(Reply::of(request).await.status, 401);
}

/// Issue 29 through the real pieces: one edge with a route table (the `ROUTES` var, as tests
/// set it; deployments bundle theirs) in front of two origins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_table_sends_each_path_to_its_origin_under_its_rule() {
    let dir = temp_dir("routes");
    let (orders_seen, orders_port) = origin(ASSERTION_KEY_ID, ASSERTION_SECRET).await;
    let (reports_seen, reports_port) = origin(ASSERTION_KEY_ID, ASSERTION_SECRET).await;
    let (_issuer, issuer_port) = issuer(&dir).await;
    let issuer_url = format!("http://127.0.0.1:{issuer_port}");
    let (_, token) = read_token(&dir, &issuer_url, "routes").await;
    let reports = format!("http://127.0.0.1:{reports_port}");
    let routes = serde_json::json!({ "route": [
        { "id": "open", "path": "/public/**", "require": "public", "rate_plan": "1/60s" },
        { "id": "orders", "path": "/orders/{id}", "methods": ["GET"], "scopes_all": ["read"] },
        { "id": "old-orders", "path": "/orders/old", "require": "deny" },
        { "id": "writes", "path": "/writes/**", "scopes_all": ["write"], "origin": reports },
        { "id": "reports", "path": "/reports/**", "origin": reports, "rate_plan": "2/60s" },
        { "id": "upload", "path": "/upload", "methods": ["POST"], "max_body": 16 },
    ] });
    let vars = EdgeSettings::new(issuer_port, orders_port).set("ROUTES", routes.to_string());
    let (_edge, edge_port) = edge(&dir, &vars, ASSERTION_SECRET).await;
    let edge_url = format!("http://127.0.0.1:{edge_port}");
    let seen = |origin: &Seen| origin.lock().unwrap().len();

    // Public: no token needed; a client's credential and forged identity never arrive.
    let reply = Reply::of(
        http()
            .get(format!("{edge_url}/public/docs?page=2"))
            .bearer_auth(&token)
            .header("x-edgeward-assertion", "v2.e2e-1.forged.AAAA"),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let echoed = reply.json();
    assert_eq!(echoed["public"], true);
    assert_eq!(echoed["path"], "/public/docs");
    assert_eq!(
        (
            echoed["edge_headers"].as_u64(),
            echoed["authorization"].as_bool()
        ),
        (Some(0), Some(false))
    );
    // The public route's plan, one a minute per client network: the next is 429.
    let reply = get(&format!("{edge_url}/public/docs")).await;
    assert_eq!(reply.status, 429, "{}", reply.body);
    assert!(reply
        .header("ratelimit-policy")
        .unwrap_or_default()
        .starts_with(r#""route";q=1"#));

    // Scoped, on the default origin: the token has `read`.
    let reply = get_with(&format!("{edge_url}/orders/7"), &token).await;
    assert_eq!(
        (reply.status, reply.json()["path"].as_str()),
        (200, Some("/orders/7")),
        "{}",
        reply.body
    );
    assert_eq!(
        reply.json()["route"],
        "orders",
        "the assertion names the rule that let it in"
    );

    // Scope missing: 403 from the edge, naming the scope; the other origin never hears of it.
    let before = seen(&reports_seen);
    let reply = get_with(&format!("{edge_url}/writes/1"), &token).await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    let challenge = reply
        .header("www-authenticate")
        .unwrap_or_default()
        .to_owned();
    assert!(
        challenge.contains(r#"error="insufficient_scope""#)
            && challenge.contains(r#"scope="write""#),
        "{challenge}"
    );
    assert_eq!(reply.json()["error"], "insufficient_scope");
    assert_eq!(seen(&reports_seen), before);

    // The second origin, with the route's own plan: two a minute, then 429 for this route
    // only (the client's own plan still lets it reach the orders).
    for _ in 0..2 {
        let reply = get_with(&format!("{edge_url}/reports/q1"), &token).await;
        assert_eq!(
            (reply.status, reply.json()["path"].as_str()),
            (200, Some("/reports/q1")),
            "{}",
            reply.body
        );
    }
    assert_eq!(
        seen(&reports_seen),
        before + 2,
        "the reports went to the second origin"
    );
    let reply = get_with(&format!("{edge_url}/reports/q1"), &token).await;
    assert_eq!(reply.status, 429, "{}", reply.body);
    assert!(
        reply
            .header("ratelimit-policy")
            .unwrap_or_default()
            .starts_with(r#""route";q=2"#),
        "{:?}",
        reply.headers
    );
    assert_eq!(
        get_with(&format!("{edge_url}/orders/8"), &token)
            .await
            .status,
        200
    );

    // A route's body limit, from the declared length, before the token is checked.
    for (body, status) in [("0123456789abcdef", 200), ("0123456789abcdefg", 413)] {
        let request = http()
            .post(format!("{edge_url}/upload"))
            .bearer_auth(&token)
            .body(body);
        let reply = Reply::of(request).await;
        assert_eq!(reply.status, status, "{} bytes: {}", body.len(), reply.body);
    }

    // Denied, unmatched, wrong method: one 404, token or not.
    for (method, path) in [
        ("GET", "/orders/old"),
        ("GET", "/elsewhere"),
        ("POST", "/orders/7"),
    ] {
        let url = format!("{edge_url}{path}");
        for request in [
            http()
                .request(method.parse().unwrap(), &url)
                .bearer_auth(&token),
            http().request(method.parse().unwrap(), &url),
        ] {
            let reply = Reply::of(request).await;
            assert_eq!(
                (reply.status, reply.json()["error"].as_str()),
                (404, Some("not_found")),
                "{method} {path}"
            );
        }
    }

    // Path confusion: each spelling is routed as the origin reads it, or refused.
    let orders_before = seen(&orders_seen);
    for (path, status) in [
        ("/public/..%2forders/7", 400),       // an encoded slash: two readings
        ("/orders;jsessionid=x/7", 400),      // a path parameter, cut by some servers
        ("/public/%252e%252e/orders/7", 400), // an escape of an escape
        ("/public/x%00", 400),
        ("/public/%2e%2e/orders/7", 401), // `..`: the orders rule, so a token is needed
        ("//public/../orders/old", 404),  // merged and resolved: the denied route
    ] {
        let reply = get(&format!("{edge_url}{path}")).await;
        assert_eq!(reply.status, status, "{path}: {}", reply.body);
    }
    assert_eq!(
        seen(&orders_seen),
        orders_before,
        "no confusing spelling reached an origin"
    );
    let reply = get_with(&format!("{edge_url}//orders//./9"), &token).await;
    assert_eq!(
        (reply.status, reply.json()["path"].as_str()),
        (200, Some("/orders/9")),
        "forwarded as routed"
    );
}

/// The secret `deploy/edge/origin-secret` gives the origin at `url`, for an edge whose
/// secret is `edge_secret` (on standard input, as ops give it).
fn origin_secret_of(edge_secret: &str, url: &str) -> String {
    use std::io::Write;
    let mut script = std::process::Command::new(root().join("deploy/edge/origin-secret"))
        .arg(url)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(script.stdin.take().unwrap(), "{edge_secret}").unwrap();
    let printed = script.wait_with_output().unwrap();
    assert!(printed.status.success(), "{printed:?}");
    String::from_utf8(printed.stdout).unwrap().trim().to_owned()
}

/// `ASSERTION_KEYS = "per-origin"` through the real pieces: two origins, each holding only the
/// secret ops derived for it with `deploy/edge/origin-secret`, accept the edge's requests;
/// one origin's secret signs nothing the other accepts, and neither holds the edge's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_key_per_origin_one_origins_secret_signs_for_no_other() {
    let dir = temp_dir("origin_keys");
    let url_of = |port: u16| format!("http://127.0.0.1:{port}");
    let (orders_secret, reports_secret) = (
        std::sync::Mutex::new(String::new()),
        std::sync::Mutex::new(String::new()),
    );
    let (orders_seen, orders_port) = origin_keyed(ASSERTION_KEY_ID, |port| {
        let secret = origin_secret_of(ASSERTION_SECRET, &url_of(port));
        orders_secret.lock().unwrap().clone_from(&secret);
        secret
    })
    .await;
    let (reports_seen, reports_port) = origin_keyed(ASSERTION_KEY_ID, |port| {
        let secret = origin_secret_of(ASSERTION_SECRET, &url_of(port));
        reports_secret.lock().unwrap().clone_from(&secret);
        secret
    })
    .await;
    let (_issuer, issuer_port) = issuer(&dir).await;
    let (id, token) = read_token(&dir, &url_of(issuer_port), "origin-keys").await;
    let routes = serde_json::json!({ "route": [
        { "id": "orders", "path": "/orders/{id}" },
        { "id": "reports", "path": "/reports/**", "origin": url_of(reports_port) },
    ] });
    let vars = EdgeSettings::new(issuer_port, orders_port)
        .set("ROUTES", routes.to_string())
        .set("ASSERTION_KEYS", "per-origin".to_owned());
    let (_edge, edge_port) = edge(&dir, &vars, ASSERTION_SECRET).await;
    let edge_url = url_of(edge_port);

    // Through the edge: each origin verifies its requests with its own secret.
    for (path, seen) in [("/orders/7", &orders_seen), ("/reports/q1", &reports_seen)] {
        let reply = get_with(&format!("{edge_url}{path}"), &token).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        assert_eq!(
            (reply.json()["path"].as_str(), reply.json()["sub"].as_str()),
            (Some(path), Some(id.as_str()))
        );
        assert_eq!(
            seen.lock().unwrap().len(),
            1,
            "{path} reached its own origin"
        );
    }

    // Whoever holds the orders origin's secret (or the edge's, which no origin holds) signs
    // a request for the reports origin, straight to it: refused.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let identity: shared::EdgeIdentity = serde_json::from_value(serde_json::json!({
        "sub": "admin", "client_id": "admin", "scope": "read write", "jti": "forged",
        "exp": 4_102_444_800_u64, "method": "GET", "host": format!("127.0.0.1:{reports_port}"),
        "path": "/reports/q1", "query": shared::assertion::query_hash(None), "ts": now_ms,
        "route": "reports",
    }))
    .unwrap();
    let orders_secret = orders_secret.lock().unwrap().clone();
    let reports_secret = reports_secret.lock().unwrap().clone();
    for (secret, expected) in [
        (
            orders_secret.as_str(),
            (401, Some("bad_assertion_signature")),
        ),
        (ASSERTION_SECRET, (401, Some("bad_assertion_signature"))),
        // The reports origin's own secret is the one that signs for it.
        (reports_secret.as_str(), (200, None)),
    ] {
        let key = shared::AssertionKey::new(ASSERTION_KEY_ID, secret.as_bytes()).unwrap();
        let signed = shared::AssertionSigner::new(key).sign(&identity);
        let reply = Reply::of(
            http()
                .get(format!("{}/reports/q1", url_of(reports_port)))
                .header("x-edgeward-assertion", signed),
        )
        .await;
        assert_eq!(
            (reply.status, reply.json()["reason"].as_str()),
            expected,
            "{}",
            reply.body
        );
    }
    assert_eq!(reports_seen.lock().unwrap().len(), 2);
}
