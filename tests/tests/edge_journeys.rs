//! Journeys through the real pieces: the issuer binary on SQLite, the Worker in local workerd,
//! and an axum origin behind the shared edge layer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use edgeward_tests::*;

const SECRET: &str = "e2e-assertion-secret-0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_creates_a_client_and_only_verified_identity_reaches_the_origin() {
    let dir = temp_dir("journey");
    let (seen, origin_port) = origin("e2e-1", SECRET).await;
    let (_issuer, issuer_port) = issuer(&dir).await;
    let created = issuer_cli(
        &dir,
        &[
            "client",
            "create",
            "--name",
            "journey",
            "--scope",
            "read write",
            "--audience",
            "edgeward-api",
        ],
    );
    let (id, secret) = (
        created["client_id"].as_str().unwrap(),
        created["client_secret"].as_str().unwrap(),
    );
    let issuer_url = format!("http://127.0.0.1:{issuer_port}");
    let vars = [
        ("ISSUER", ISSUER_URL.to_owned()),
        ("AUDIENCE", "edgeward-api".to_owned()),
        ("JWKS_URLS", format!("{issuer_url}/.well-known/jwks.json")),
        ("ORIGIN_URL", format!("http://127.0.0.1:{origin_port}")),
        ("ASSERTION_KEY_ID", "e2e-1".to_owned()),
    ];
    let (_edge, edge_port) = edge(&dir, &vars, SECRET).await;

    let reply = Reply::of(
        http()
            .post(format!("{issuer_url}/oauth2/token"))
            .basic_auth(id, Some(secret))
            .form(&[("grant_type", "client_credentials"), ("scope", "read")]),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let token = reply.json()["access_token"].as_str().unwrap().to_owned();
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
