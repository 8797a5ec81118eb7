//! Journeys through the real pieces: the issuer binary on SQLite, the Worker in local workerd,
//! and an axum origin behind the shared edge layer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use edgeward_tests::*;

const SECRET: &str = "e2e-assertion-secret-0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_creates_a_client_and_only_verified_identity_reaches_the_origin() {
    let dir = temp_dir("journey");
    let (seen, origin_port) = origin("e2e-1", SECRET).await;
    let (_issuer, issuer_port) = tokio::task::block_in_place(|| issuer(&dir));
    let edge_port = free_port();
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
    let _edge = tokio::task::block_in_place(|| edge(&dir, edge_port, &vars, SECRET));

    let (status, body) = curl(&[
        "-u",
        &format!("{id}:{secret}"),
        "-d",
        "grant_type=client_credentials",
        "-d",
        "scope=read",
        &format!("{issuer_url}/oauth2/token"),
    ]);
    assert_eq!(status, 200, "{body}");
    let token: serde_json::Value = serde_json::from_str(&body).unwrap();
    let bearer = format!(
        "Authorization: Bearer {}",
        token["access_token"].as_str().unwrap()
    );
    let edge_url = format!("http://127.0.0.1:{edge_port}");

    // The client calls the edge; the origin sees the verified identity and scope.
    let (status, body) = curl(&["-H", &bearer, &format!("{edge_url}/orders/7?x=1")]);
    assert_eq!(status, 200, "{body}");
    let echoed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (echoed["sub"].as_str(), echoed["client_id"].as_str()),
        (Some(id), Some(id))
    );
    assert_eq!(
        (echoed["scope"].as_str(), echoed["path"].as_str()),
        (Some("read"), Some("/orders/7"))
    );

    // A valid token plus forged identity headers: the origin sees only the verified values.
    let forged = "x-edgeward-assertion: v1.e2e-1.eyJzdWIiOiJhZG1pbiJ9.AAAA";
    let (status, body) = curl(&["-H", &bearer, "-H", forged, &format!("{edge_url}/orders/8")]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["sub"].as_str(),
        Some(id)
    );

    // Forged headers without a token never reach the origin.
    let before = seen.lock().unwrap().len();
    for args in [
        vec!["-H", forged],
        vec!["-H", "Authorization: Bearer not.a.token"],
        vec![],
    ] {
        let mut args: Vec<&str> = args;
        let url = format!("{edge_url}/orders/9");
        args.push(&url);
        let (status, body) = curl(&args);
        assert_eq!(status, 401, "{body}");
        let error: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(error["error_description"].is_string());
    }
    assert_eq!(
        seen.lock().unwrap().len(),
        before,
        "the origin was never contacted"
    );

    // Straight to the origin with a forged assertion: refused by the edge layer.
    let (status, _) = curl(&[
        "-H",
        forged,
        &format!("http://127.0.0.1:{origin_port}/orders/7"),
    ]);
    assert_eq!(status, 401);
}
