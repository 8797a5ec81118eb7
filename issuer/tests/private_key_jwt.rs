//! `private_key_jwt` (RFC 7523) client authentication on both databases: a good assertion
//! gets a token once; replays, wrong audiences, expired or long-lived assertions, foreign
//! keys and mismatched ids are `invalid_client`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use base64ct::{Base64UrlUnpadded, Encoding};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::{json, Value};
use support::*;

on_both_databases!(assertions_authenticate_once, bad_assertions_are_refused);

const JWT_BEARER: &str = "urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer";

fn b64(bytes: &[u8]) -> String {
    Base64UrlUnpadded::encode_string(bytes)
}

fn sign(key: &SigningKey, kid: &str, claims: &Value) -> String {
    let header = json!({ "alg": "ES256", "typ": "JWT", "kid": kid });
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature: Signature = key.sign(input.as_bytes());
    format!("{input}.{}", b64(&signature.to_bytes()))
}

async fn client_with_key(state: &issuer::AppState) -> (String, SigningKey) {
    let key = SigningKey::random(&mut rand_core::OsRng);
    let point = key.verifying_key().to_encoded_point(false);
    let jwks = json!({ "keys": [{ "kty": "EC", "crv": "P-256", "kid": "ck1",
        "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap()) }] });
    let created = issuer::clients::create(
        &state.db,
        issuer::clients::NewClient {
            name: "keyed".into(),
            scopes: "read".into(),
            audiences: vec![AUDIENCE.into()],
            rate_plan: None,
            jwks: Some(jwks.to_string()),
            resource_server: false,
            require_dpop: false,
        },
        "test",
        issuer::db::unix_now(),
    )
    .await
    .unwrap();
    assert_eq!(created.client.key_ids, vec!["ck1".to_owned()]);
    (created.client.client_id, key)
}

fn claims(state: &issuer::AppState, id: &str, jti: &str) -> Value {
    let now = issuer::db::unix_now();
    json!({ "iss": id, "sub": id, "aud": format!("{}/oauth2/token", state.config().issuer_url),
            "jti": jti, "iat": now, "exp": now + 60 })
}

fn grant(assertion: &str) -> http::Request<axum::body::Body> {
    token_request(&format!("grant_type=client_credentials&client_assertion_type={JWT_BEARER}&client_assertion={assertion}"), None)
}

async fn assertions_authenticate_once(backend: Backend) {
    let state = open(config(backend).await).await;
    let (id, key) = client_with_key(&state).await;
    let assertion = sign(&key, "ck1", &claims(&state, &id, "a-1"));
    let (status, _, body) = send_json(&state, grant(&assertion)).await;
    assert_eq!(status, 200, "{body}");
    let verified = verify(
        &state,
        &jwks(&state).await,
        body["access_token"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(verified.claims().client_id, id);

    let (status, _, body) = send_json(&state, grant(&assertion)).await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (401, Some("invalid_client")),
        "replay"
    );

    // The issuer URL is an accepted audience too, and an array works.
    let mut other = claims(&state, &id, "a-2");
    other["aud"] = json!(["https://elsewhere", state.config().issuer_url]);
    assert_eq!(
        send(&state, grant(&sign(&key, "ck1", &other)))
            .await
            .status(),
        200
    );
}

async fn bad_assertions_are_refused(backend: Backend) {
    let state = open(config(backend).await).await;
    let (id, key) = client_with_key(&state).await;
    let (secret_id, secret) = client(&state).await;
    let now = issuer::db::unix_now();
    let stranger = SigningKey::random(&mut rand_core::OsRng);
    let edit = |field: &str, value: Value| {
        let mut c = claims(&state, &id, &format!("jti-{field}"));
        c[field] = value;
        c
    };
    let cases = [
        (
            "wrong audience",
            sign(&key, "ck1", &edit("aud", json!("https://evil.test/token"))),
        ),
        ("expired", sign(&key, "ck1", &edit("exp", json!(now - 1)))),
        (
            "too long-lived",
            sign(&key, "ck1", &edit("exp", json!(now + 3600))),
        ),
        (
            "iss differs",
            sign(&key, "ck1", &edit("iss", json!(secret_id.clone()))),
        ),
        (
            "no exp",
            sign(&key, "ck1", &{
                let mut c = claims(&state, &id, "x");
                c.as_object_mut().unwrap().remove("exp");
                c
            }),
        ),
        (
            "unknown kid",
            sign(&key, "ck9", &claims(&state, &id, "kid")),
        ),
        (
            "foreign key",
            sign(&stranger, "ck1", &claims(&state, &id, "foreign")),
        ),
        (
            "secret client has no keys",
            sign(&key, "ck1", &edit("sub", json!(secret_id.clone()))),
        ),
        ("garbage", "a.b.c".to_owned()),
    ];
    for (name, assertion) in cases {
        let (status, _, body) = send_json(&state, grant(&assertion)).await;
        assert_eq!(
            (status.as_u16(), body["error"].as_str()),
            (401, Some("invalid_client")),
            "{name}"
        );
    }
    let assertion = sign(&key, "ck1", &claims(&state, &id, "mixed"));
    let both = token_request(
        &format!("grant_type=client_credentials&client_assertion_type={JWT_BEARER}&client_assertion={assertion}"),
        Some((&secret_id, &secret)),
    );
    assert_eq!(send_json(&state, both).await.2["error"], "invalid_request");
    let wrong_type = token_request(
        &format!(
            "grant_type=client_credentials&client_assertion_type=saml&client_assertion={assertion}"
        ),
        None,
    );
    assert_eq!(
        send_json(&state, wrong_type).await.2["error"],
        "invalid_client"
    );
    let half = token_request(
        &format!("grant_type=client_credentials&client_assertion={assertion}"),
        None,
    );
    assert_eq!(send_json(&state, half).await.2["error"], "invalid_request");
}
