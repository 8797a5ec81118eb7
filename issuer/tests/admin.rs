//! The admin API on both databases: each power is its scope, one refusal per scope, RFC 6750
//! answers without, with a bad, or with a non-admin token, and the same audit rows as the CLI
//! (with the admin client as the actor).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use serde_json::{json, Value};
use support::*;

on_both_databases!(
    admin_powers_are_scopes_and_every_change_is_audited,
    a_rotate_secret_body_counts_whatever_its_content_type,
);

/// `{"revoke_tokens": true}` sent without `Content-Type` (as `curl -d` or Python's `requests`
/// with `data=` may) revokes: read as no body, a leaked secret's tokens would live on. A
/// body that is not the JSON asked for is a 400; none at all keeps the tokens.
async fn a_rotate_secret_body_counts_whatever_its_content_type(backend: Backend) {
    let state = open(config(backend).await).await;
    let (_, manager) = admin(&state, "admin:clients").await;
    let (id, _) = client(&state).await;
    let path = format!("/admin/clients/{id}/rotate-secret");
    let post = |body: &'static str| {
        http::Request::post(path.as_str())
            .header("authorization", format!("Bearer {manager}"))
            .body(axum::body::Body::from(body))
            .unwrap()
    };
    let (status, _, answer) = send_json(&state, post("")).await;
    assert_eq!(
        (status.as_u16(), &answer["tokens_revoked"]),
        (200, &json!(false))
    );
    let (status, _, answer) = send_json(&state, post(r#"{"revoke_tokens": true}"#)).await;
    assert_eq!(
        (status.as_u16(), &answer["tokens_revoked"]),
        (200, &json!(true)),
        "{answer}"
    );
    let revoked: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM revocations WHERE kind = 'client' AND value = $1")
            .bind(&id)
            .fetch_one(state.db.pool())
            .await
            .unwrap();
    assert_eq!(revoked, 1);
    for bad in [
        r#"{"revoke_tokens": "yes"}"#,
        "revoke_tokens=true",
        r#"{"other": 1}"#,
    ] {
        let (status, _, answer) = send_json(&state, post(bad)).await;
        assert_eq!(status, 400, "{bad}: {answer}");
    }
}

/// 403 `insufficient_scope` naming `scope`, in the body and the challenge.
fn refused_for(answer: &(http::StatusCode, http::HeaderMap, Value), scope: &str) {
    let (status, headers, body) = answer;
    assert_eq!(*status, 403, "{body}");
    assert_eq!(body["error"], "insufficient_scope");
    let challenge = headers["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.contains("error=\"insufficient_scope\"")
            && challenge.contains(&format!("scope=\"{scope}\"")),
        "{challenge}"
    );
}

async fn admin_powers_are_scopes_and_every_change_is_audited(backend: Backend) {
    let state = open(config(backend).await).await;
    let (manager_id, manager) = admin(&state, "admin:clients").await;
    let (operator_id, operator) = admin(&state, "admin:keys").await;
    let (_, auditor) = admin(&state, "admin:audit").await;

    // Without a token: a bare challenge. A bad token, or a token for another audience (even
    // with an admin scope), is invalid_token.
    let (status, headers, _) = call(&state, "GET", "/admin/clients", None, None).await;
    assert_eq!(status, 401);
    assert_eq!(
        headers["www-authenticate"],
        "Bearer realm=\"edgeward-admin\""
    );
    let (status, headers, body) =
        call(&state, "GET", "/admin/clients", Some("not.a.token"), None).await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (401, Some("invalid_token"))
    );
    assert!(headers["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("invalid_token"));
    let (api_id, api_secret) = client(&state).await;
    let api_token = token(&state, &api_id, &api_secret).await;
    let (status, _, _) = call(&state, "GET", "/admin/keys", Some(&api_token), None).await;
    assert_eq!(status, 401);

    // admin:clients: make, show, disable a client; nothing else.
    let (status, _, created) = call(
        &state,
        "POST",
        "/admin/clients",
        Some(&manager),
        Some(
            json!({ "name": "made by the api", "scope": "read", "rate_plan": "100/60s;burst=10" }),
        ),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let new_id = created["client_id"].as_str().unwrap().to_owned();
    assert!(created["client_secret"].is_string());
    token(&state, &new_id, created["client_secret"].as_str().unwrap()).await;
    let (status, _, shown) = call(
        &state,
        "GET",
        &format!("/admin/clients/{new_id}"),
        Some(&manager),
        None,
    )
    .await;
    assert_eq!(
        (status.as_u16(), shown["name"].as_str()),
        (200, Some("made by the api"))
    );
    let (status, _, disabled) = call(
        &state,
        "POST",
        &format!("/admin/clients/{new_id}/disable"),
        Some(&manager),
        None,
    )
    .await;
    assert_eq!(
        (status.as_u16(), &disabled["enabled"]),
        (200, &json!(false))
    );
    let (status, _, body) = call(
        &state,
        "POST",
        "/admin/clients",
        Some(&manager),
        Some(json!({ "name": "x", "audiences": [state.config().admin_audience()] })),
    )
    .await;
    assert_eq!(status, 400, "the API never makes an admin client: {body}");
    let (status, _, body) = call(
        &state,
        "POST",
        "/admin/clients",
        Some(&manager),
        Some(json!({ "nom": "x" })),
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, _, _) = call(
        &state,
        "GET",
        "/admin/clients/c_nobody",
        Some(&manager),
        None,
    )
    .await;
    assert_eq!(status, 404);
    refused_for(
        &call(&state, "POST", "/admin/keys/rotate", Some(&manager), None).await,
        "admin:keys",
    );

    // admin:keys: list and rotate keys; not read the audit trail or make clients.
    let (status, _, keys) = call(&state, "GET", "/admin/keys", Some(&operator), None).await;
    assert_eq!(status, 200, "{keys}");
    let (status, _, rotated) =
        call(&state, "POST", "/admin/keys/rotate", Some(&operator), None).await;
    assert_eq!(
        (status.as_u16(), rotated["event"].as_str()),
        (200, Some("key.rotate")),
        "{rotated}"
    );
    refused_for(
        &call(&state, "GET", "/admin/audit", Some(&operator), None).await,
        "admin:audit",
    );
    refused_for(
        &call(
            &state,
            "POST",
            "/admin/clients",
            Some(&operator),
            Some(json!({ "name": "x" })),
        )
        .await,
        "admin:clients",
    );

    // admin:audit: read and verify; the API's changes are there with their actors, in the
    // same rows the CLI writes.
    let (status, _, rows) = call(&state, "GET", "/admin/audit", Some(&auditor), None).await;
    assert_eq!(status, 200);
    let rows = rows.as_array().unwrap();
    let by = |action: &str, subject: &str| {
        rows.iter()
            .find(|row| row["action"] == action && row["subject"] == subject)
            .map(|row| row["actor"].as_str().unwrap().to_owned())
    };
    assert_eq!(
        by("client.create", &new_id).as_deref(),
        Some(manager_id.as_str())
    );
    assert_eq!(
        by("client.disable", &new_id).as_deref(),
        Some(manager_id.as_str())
    );
    assert_eq!(
        by("key.rotate", rotated["kid"].as_str().unwrap()).as_deref(),
        Some(operator_id.as_str())
    );
    assert_eq!(by("client.create", &manager_id).as_deref(), Some("cli"));
    let (status, _, verified) =
        call(&state, "GET", "/admin/audit/verify", Some(&auditor), None).await;
    assert_eq!((status.as_u16(), &verified["intact"]), (200, &json!(true)));
    refused_for(
        &call(&state, "GET", "/admin/keys", Some(&auditor), None).await,
        "admin:keys",
    );

    // A disabled admin client's tokens stop working at once.
    issuer::clients::set_enabled(
        &state.db,
        &operator_id,
        false,
        &change(issuer::db::unix_now()),
    )
    .await
    .unwrap();
    let (status, _, _) = call(&state, "GET", "/admin/keys", Some(&operator), None).await;
    assert_eq!(status, 401);
}
