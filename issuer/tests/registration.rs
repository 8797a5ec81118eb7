//! Dynamic client registration on both databases: RFC 7591 behind an initial access token
//! (an admin token with `admin:clients`), RFC 7592 behind the client's registration access
//! token, which every read and update replaces; deregistering ends the client and its
//! tokens; every step is an audit row with its actor.
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
    a_client_registers_itself_manages_its_registration_and_leaves,
    a_registration_token_never_outgrows_what_ops_granted,
    dpop_binding_is_set_at_registration_and_kept_by_updates,
);

/// The registration management path of a client from its `registration_client_uri`.
fn path_of(registration: &Value) -> String {
    let uri = registration["registration_client_uri"].as_str().unwrap();
    let id = registration["client_id"].as_str().unwrap();
    assert!(uri.ends_with(&format!("/oauth2/register/{id}")), "{uri}");
    format!("/oauth2/register/{id}")
}

fn token_of(registration: &Value) -> String {
    registration["registration_access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// 401 `invalid_token` in the registration realm.
fn refused(answer: &(http::StatusCode, http::HeaderMap, Value)) {
    let (status, headers, body) = answer;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (401, Some("invalid_token")),
        "{body}"
    );
    assert_eq!(
        headers["www-authenticate"],
        "Bearer realm=\"edgeward-registration\", error=\"invalid_token\""
    );
}

async fn a_client_registers_itself_manages_its_registration_and_leaves(backend: Backend) {
    let state = open(config(backend).await).await;
    let (manager_id, manager) = admin(&state, "admin:clients").await;
    let (_, operator) = admin(&state, "admin:keys").await;
    let metadata = json!({
        "client_name": "registered by automation",
        "scope": "read write",
        "grant_types": ["client_credentials"],
        "token_endpoint_auth_method": "client_secret_basic",
        "software_id": "metadata this issuer does not know is ignored",
    });

    // The initial access token is an admin token with admin:clients.
    let (status, headers, _) = call(
        &state,
        "POST",
        "/oauth2/register",
        None,
        Some(metadata.clone()),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(
        headers["www-authenticate"],
        "Bearer realm=\"edgeward-admin\""
    );
    let (status, _, body) = call(
        &state,
        "POST",
        "/oauth2/register",
        Some(&operator),
        Some(metadata.clone()),
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (403, Some("insufficient_scope"))
    );

    // What this issuer cannot honour: RFC 7591 §3.2.2 errors.
    for (refused_metadata, error) in [
        (
            json!({"redirect_uris": ["https://app.example/cb"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"grant_types": ["authorization_code"]}),
            "invalid_client_metadata",
        ),
        (
            json!({"scope": "not\u{7f}a scope"}),
            "invalid_client_metadata",
        ),
        (
            json!({"token_endpoint_auth_method": "private_key_jwt"}),
            "invalid_client_metadata",
        ),
        (json!({"client_name": 42}), "invalid_client_metadata"),
    ] {
        let (status, _, body) = call(
            &state,
            "POST",
            "/oauth2/register",
            Some(&manager),
            Some(refused_metadata.clone()),
        )
        .await;
        assert_eq!(
            (status.as_u16(), body["error"].as_str()),
            (400, Some(error)),
            "{refused_metadata}: {body}"
        );
    }

    // Registered: its credentials once, never cached; it gets tokens at once.
    let (status, headers, registration) = call(
        &state,
        "POST",
        "/oauth2/register",
        Some(&manager),
        Some(metadata),
    )
    .await;
    assert_eq!(status, 201, "{registration}");
    assert_eq!(headers["cache-control"], "no-store");
    let id = registration["client_id"].as_str().unwrap().to_owned();
    let secret = registration["client_secret"].as_str().unwrap().to_owned();
    assert_eq!(registration["client_secret_expires_at"], 0);
    assert_eq!(registration["grant_types"], json!(["client_credentials"]));
    assert_eq!(registration["scope"], "read write");
    assert!(registration.get("software_id").is_none());
    token(&state, &id, &secret).await;
    let path = path_of(&registration);
    let first = token_of(&registration);

    // RFC 7592 read: the registration, with a new token; the old one is dead.
    let answer = call(&state, "GET", &path, None, None).await;
    assert_eq!(answer.0, 401);
    assert_eq!(
        answer.1["www-authenticate"],
        "Bearer realm=\"edgeward-registration\""
    );
    refused(&call(&state, "GET", &path, Some(&manager), None).await);
    let (status, _, read) = call(&state, "GET", &path, Some(&first), None).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["client_name"], "registered by automation");
    assert!(read.get("client_secret").is_none(), "only hashes are kept");
    let second = token_of(&read);
    assert_ne!(second, first);
    refused(&call(&state, "GET", &path, Some(&first), None).await);
    // Another client's registration token opens nothing here, nor an unknown id.
    let (_, _, other) = call(
        &state,
        "POST",
        "/oauth2/register",
        Some(&manager),
        Some(json!({"client_name": "another"})),
    )
    .await;
    refused(&call(&state, "GET", &path, Some(&token_of(&other)), None).await);
    refused(
        &call(
            &state,
            "GET",
            "/oauth2/register/c_nobody",
            Some(&second),
            None,
        )
        .await,
    );

    // RFC 7592 update: the whole metadata, named by client_id; never the server's fields; a
    // narrower scope, never a wider one.
    let renamed = json!({"client_id": id, "client_name": "renamed", "scope": "read"});
    for (bad, why) in [
        (
            json!({"client_id": id, "scope": "read write delete"}),
            "a wider scope",
        ),
        (json!({"client_name": "renamed"}), "no client_id"),
        (
            json!({"client_id": id, "registration_access_token": second}),
            "a server field",
        ),
        (
            json!({"client_id": id, "client_secret": "not-the-secret"}),
            "a wrong secret",
        ),
    ] {
        let (status, _, body) = call(&state, "PUT", &path, Some(&second), Some(bad)).await;
        assert_eq!(
            (status.as_u16(), body["error"].as_str()),
            (400, Some("invalid_client_metadata")),
            "{why}: {body}"
        );
    }
    let mut with_secret = renamed.clone();
    with_secret["client_secret"] = json!(secret);
    let (status, _, updated) = call(&state, "PUT", &path, Some(&second), Some(with_secret)).await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(
        (updated["client_name"].as_str(), updated["scope"].as_str()),
        (Some("renamed"), Some("read"))
    );
    let third = token_of(&updated);
    refused(&call(&state, "PUT", &path, Some(&second), Some(renamed)).await);
    // Of two calls with one token only the first swaps it: a second that passed the token
    // check before the swap changes nothing.
    let late = change(issuer::db::unix_now());
    let stale = issuer::clients::renew_registration(&state.db, &id, &second, None, &late).await;
    assert!(
        matches!(stale, Err(issuer::clients::ClientError::NotFound(_))),
        "{stale:?}"
    );
    let stale = issuer::clients::deregister(&state.db, &id, &second, &late).await;
    assert!(
        matches!(stale, Err(issuer::clients::ClientError::NotFound(_))),
        "{stale:?}"
    );

    // RFC 7592 delete: the client is gone, its secret and tokens with it.
    let held = token(&state, &id, &secret).await;
    let (status, _, _) = call(&state, "DELETE", &path, Some(&third), None).await;
    assert_eq!(status, 204);
    refused(&call(&state, "GET", &path, Some(&third), None).await);
    let (status, _, _) = send_json(
        &state,
        token_request("grant_type=client_credentials", Some((&id, &secret))),
    )
    .await;
    assert_eq!(status, 401);
    // (A registered client's tokens are for the default audience.)
    let validator = shared::Validator::new(shared::Validation::new(
        state.config().issuer_url.clone(),
        "edgeward-api",
    ));
    let now = shared::UnixTime::from_secs(u64::try_from(issuer::db::unix_now()).unwrap());
    let verified = validator.verify(&held, &jwks(&state).await, now).unwrap();
    assert!(!issuer::clients::token_is_live(&state.db, &verified)
        .await
        .unwrap());

    // Each step is in the audit trail, by who did it, and the chain holds.
    let rows = issuer::audit::rows_after(state.db.pool(), 0).await.unwrap();
    let actor_of = |action: &str| {
        rows.iter()
            .find(|row| row.action == action && row.subject == id)
            .map(|row| row.actor.clone())
    };
    assert_eq!(
        actor_of("client.register").as_deref(),
        Some(manager_id.as_str())
    );
    for action in [
        "client.renew_registration_token",
        "client.update_registration",
        "client.deregister",
    ] {
        assert_eq!(actor_of(action).as_deref(), Some(id.as_str()), "{action}");
    }
    state.db.verify_audit().await.unwrap();
}

/// Registers a client with `metadata` through `manager`; its registration answer.
async fn register(state: &issuer::AppState, manager: &str, metadata: Value) -> Value {
    let (status, _, registration) = call(
        state,
        "POST",
        "/oauth2/register",
        Some(manager),
        Some(metadata),
    )
    .await;
    assert_eq!(status, 201, "{registration}");
    registration
}

async fn a_registration_token_never_outgrows_what_ops_granted(backend: Backend) {
    // One database connection: a registration change must never need a second one (a
    // transaction waiting on the pool would starve every other request).
    let mut one_connection = config(backend).await;
    one_connection.database_max_connections = 1;
    let state = open(one_connection).await;
    let (_, manager) = admin(&state, "admin:clients").await;

    // No admin power by registration.
    let (status, _, body) = call(
        &state,
        "POST",
        "/oauth2/register",
        Some(&manager),
        Some(json!({"scope": "read admin:keys"})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (400, Some("invalid_client_metadata"))
    );

    // The method it registered with reads back; a change that holds works on one connection.
    let registration = register(
        &state,
        &manager,
        json!({"client_name": "poster", "scope": "read", "token_endpoint_auth_method": "client_secret_post"}),
    )
    .await;
    let (id, secret) = (
        registration["client_id"].as_str().unwrap().to_owned(),
        registration["client_secret"].as_str().unwrap().to_owned(),
    );
    let path = path_of(&registration);
    let (status, _, read) = call(&state, "GET", &path, Some(&token_of(&registration)), None).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["token_endpoint_auth_method"], "client_secret_post");
    let mut current = token_of(&read);

    // New keys need the current secret: the registration token alone must not let its holder
    // sign in as the client.
    let keys: Value = serde_json::from_str(&jwks(&state).await.to_json()).unwrap();
    let rekeyed = json!({"client_id": id, "scope": "read", "jwks": keys});
    let (status, _, body) = call(&state, "PUT", &path, Some(&current), Some(rekeyed.clone())).await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (400, Some("invalid_client_metadata")),
        "{body}"
    );
    let mut with_secret = rekeyed;
    with_secret["client_secret"] = json!(secret);
    let (status, _, body) = call(&state, "PUT", &path, Some(&current), Some(with_secret)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_endpoint_auth_method"], "private_key_jwt");
    current = token_of(&body);

    // Ops disabling a client ends its registration token; enabling does not bring it back.
    let ops = change(issuer::db::unix_now());
    issuer::clients::set_enabled(&state.db, &id, false, &ops)
        .await
        .unwrap();
    issuer::clients::set_enabled(&state.db, &id, true, &ops)
        .await
        .unwrap();
    refused(&call(&state, "GET", &path, Some(&current), None).await);

    // Deregistered for good: never enabled again, its old secret dead either way.
    let gone = register(
        &state,
        &manager,
        json!({"client_name": "leaver", "scope": "read"}),
    )
    .await;
    let (gone_id, gone_secret) = (
        gone["client_id"].as_str().unwrap(),
        gone["client_secret"].as_str().unwrap(),
    );
    let (status, _, _) = call(
        &state,
        "DELETE",
        &path_of(&gone),
        Some(&token_of(&gone)),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _, body) = call(
        &state,
        "POST",
        &format!("/admin/clients/{gone_id}/enable"),
        Some(&manager),
        None,
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    let (status, _, _) = send_json(
        &state,
        token_request(
            "grant_type=client_credentials",
            Some((gone_id, gone_secret)),
        ),
    )
    .await;
    assert_eq!(status, 401);
}

/// RFC 9449 §5.2's `dpop_bound_access_tokens`: set at registration, read back, kept by an
/// update that leaves it out, and refused as a change by an update that names another value.
async fn dpop_binding_is_set_at_registration_and_kept_by_updates(backend: Backend) {
    let state = open(config(backend).await).await;
    let (_, manager) = admin(&state, "admin:clients").await;
    let registration = register(
        &state,
        &manager,
        json!({"client_name": "bound", "scope": "read", "dpop_bound_access_tokens": true}),
    )
    .await;
    assert_eq!(registration["dpop_bound_access_tokens"], true);
    let id = registration["client_id"].as_str().unwrap().to_owned();
    let path = path_of(&registration);
    let token = token_of(&registration);
    let unbind = json!({"client_id": id, "scope": "read", "dpop_bound_access_tokens": false});
    let (status, _, body) = call(&state, "PUT", &path, Some(&token), Some(unbind)).await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (400, Some("invalid_client_metadata")),
        "{body}"
    );
    let silent = json!({"client_id": id, "scope": "read", "client_name": "renamed"});
    let (status, _, body) = call(&state, "PUT", &path, Some(&token), Some(silent)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["dpop_bound_access_tokens"], true);
}
