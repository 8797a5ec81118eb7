//! A third-party OAuth client registers itself at the real issuer process: oauth4webapi
//! (`tests/clients/register.mjs`) reads the discovery document, registers with RFC 7591
//! behind an initial access token from an admin client made on the shell, and gets a token
//! with the secret it was given; the token verifies against the issuer's published keys.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use edgeward_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth4webapi_registers_a_client_and_gets_a_token_with_its_secret() {
    let dir = temp_dir("registration_interop");
    // The discovery document must name the address the client uses.
    let address = OwnAddress::new();
    let (issuer_url, settings) = (&address.url, address.settings(&[]));
    let (_issuer, issuer_port) = issuer_with(&dir, &settings).await;
    let created = issuer_cli_with(
        &dir,
        &settings,
        &[
            "client",
            "create",
            "--admin",
            "--name",
            "automation",
            "--scope",
            "admin:clients",
        ],
    );
    let automation = Client {
        id: created["client_id"].as_str().unwrap().to_owned(),
        secret: created["client_secret"].as_str().unwrap().to_owned(),
    };
    let initial_access_token = automation.token(issuer_port).await;

    let got = node_client("register.mjs", &[issuer_url, &initial_access_token]);
    let client_id = got["client_id"].as_str().unwrap();
    assert_eq!(
        got["registration_client_uri"],
        format!("{issuer_url}/oauth2/register/{client_id}").as_str()
    );
    assert!(got["token_type"]
        .as_str()
        .unwrap()
        .eq_ignore_ascii_case("bearer"));

    let jwks = get(&format!("{issuer_url}/.well-known/jwks.json"))
        .await
        .body;
    let jwks = shared::Jwks::parse(&jwks).unwrap();
    let validator = shared::Validator::new(shared::Validation::new(issuer_url.as_str(), AUDIENCE));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let verified = validator
        .verify(
            got["access_token"].as_str().unwrap(),
            &jwks,
            shared::UnixTime::from_secs(now),
        )
        .unwrap();
    assert_eq!(verified.claims().client_id, client_id);
    assert!(verified.claims().scope.contains("read"));
}
