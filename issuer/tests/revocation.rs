//! Revocation (RFC 7009), introspection (RFC 7662) and the revocation feed, on both databases.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use axum::body::Body;
use http::Request;
use support::*;

on_both_databases!(
    revoked_tokens_are_inactive_and_on_the_feed,
    revoke_and_introspect_errors
);

fn form_request(path: &str, form: &str, id: &str, secret: &str) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", basic(id, secret))
        .body(Body::from(form.to_owned()))
        .unwrap()
}

async fn revoked_tokens_are_inactive_and_on_the_feed(backend: Backend) {
    let state = open(config(backend).await.unwrap()).await;
    let (id, secret) = client(&state).await;
    let token = token(&state, &id, &secret).await;
    let jti = verify(&state, &jwks(&state).await, &token)
        .unwrap()
        .claims()
        .jti
        .clone();

    let (status, _, body) = send_json(
        &state,
        form_request(
            "/oauth2/introspect",
            &format!("token={token}"),
            &id,
            &secret,
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["active"], true);
    assert_eq!(body["client_id"], id.as_str());
    assert_eq!(body["scope"], "read write");

    let (_, _, feed) = send_json(
        &state,
        Request::get("/revocations").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(feed["revocations"].as_array().unwrap().len(), 0);
    let start = feed["cursor"].as_i64().unwrap();

    for _ in 0..2 {
        let response = send(
            &state,
            form_request(
                "/oauth2/revoke",
                &format!("token={token}&token_type_hint=access_token"),
                &id,
                &secret,
            ),
        )
        .await;
        assert_eq!(response.status(), 200, "idempotent");
    }
    let (_, _, body) = send_json(
        &state,
        form_request(
            "/oauth2/introspect",
            &format!("token={token}"),
            &id,
            &secret,
        ),
    )
    .await;
    assert_eq!(body, serde_json::json!({ "active": false }));

    let (_, headers, feed) = send_json(
        &state,
        Request::get(format!("/revocations?since={start}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(headers["cache-control"], "no-cache");
    let entries = feed["revocations"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["kind"], "jti");
    assert_eq!(entries[0]["value"], jti.as_str());
    let cursor = feed["cursor"].as_i64().unwrap();
    assert!(cursor > start);

    // The contract with the edge: the page parses with `shared` and revokes the token there.
    let mut list = shared::RevocationList::new();
    list.apply(
        shared::FeedPage::parse(&feed.to_string()).unwrap(),
        shared::UnixTime::from_secs(issuer::db::unix_now() as u64),
    );
    let revoked = verify(&state, &jwks(&state).await, &token).unwrap();
    assert!(list.is_revoked(&revoked));
    let (_, _, later) = send_json(
        &state,
        Request::get(format!("/revocations?since={cursor}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(later["revocations"].as_array().unwrap().len(), 0);
    assert_eq!(later["more"], false);

    // A key revocation reaches the feed too.
    let kid = state.keys().active.as_ref().unwrap().kid().to_owned();
    issuer::keys::revoke(
        &state.db,
        &state.kek,
        &state.config,
        &kid,
        issuer::db::unix_now(),
    )
    .await
    .unwrap();
    let (_, _, feed) = send_json(
        &state,
        Request::get(format!("/revocations?since={cursor}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(feed["revocations"][0]["kind"], "kid");
    assert_eq!(feed["revocations"][0]["value"], kid.as_str());
}

async fn revoke_and_introspect_errors(backend: Backend) {
    let state = open(config(backend).await.unwrap()).await;
    let (id, secret) = client(&state).await;
    let (other_id, other_secret) = client(&state).await;
    let token = token(&state, &id, &secret).await;

    // Another client cannot revoke it (200, but nothing happens).
    let response = send(
        &state,
        form_request(
            "/oauth2/revoke",
            &format!("token={token}"),
            &other_id,
            &other_secret,
        ),
    )
    .await;
    assert_eq!(response.status(), 200);
    let (_, _, body) = send_json(
        &state,
        form_request(
            "/oauth2/introspect",
            &format!("token={token}"),
            &id,
            &secret,
        ),
    )
    .await;
    assert_eq!(body["active"], true);

    // Garbage tokens are simply inactive / ignored.
    let (status, _, body) = send_json(
        &state,
        form_request("/oauth2/introspect", "token=garbage", &id, &secret),
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["active"].as_bool()),
        (200, Some(false))
    );
    assert_eq!(
        send(
            &state,
            form_request("/oauth2/revoke", "token=garbage", &id, &secret)
        )
        .await
        .status(),
        200
    );

    // Missing token, bad credentials, bad cursor.
    let (status, _, body) = send_json(
        &state,
        form_request("/oauth2/revoke", "token_type_hint=x", &id, &secret),
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, _, body) = send_json(
        &state,
        form_request(
            "/oauth2/introspect",
            &format!("token={token}"),
            &id,
            "wrong",
        ),
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let (status, _, body) = send_json(
        &state,
        Request::get("/revocations?since=abc")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (400, Some("invalid_request"))
    );
}
