//! The token endpoint, discovery and health on SQLite and PostgreSQL: every grant and error
//! path, and tokens that the shared verifier accepts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use axum::body::Body;
use http::Request;
use support::*;

on_both_databases!(
    basic_and_post_grants_issue_verifiable_tokens,
    scope_and_resource_are_honoured,
    client_errors_follow_rfc6749,
    disabled_and_rotated_clients,
    discovery_is_cacheable,
    health_ready_and_metrics,
    token_endpoint_is_rate_limited,
    database_outage_is_503_not_500,
    forwarded_addresses_only_when_trusted,
    every_token_is_signed_in_low_s_form,
    ipv6_clients_share_a_failed_auth_budget_per_slash_64,
    metrics_can_have_a_private_listener_of_their_own,
    an_instance_that_cannot_reload_stops_signing_with_a_key_no_longer_active,
);

/// An instance that cannot reload its keys (here a row it cannot read; in life a KEK that
/// cannot open a key made since) keeps signing while its key is the active one, and stops
/// once the key is revoked or retired elsewhere: its tokens would be refused at every edge.
async fn an_instance_that_cannot_reload_stops_signing_with_a_key_no_longer_active(
    backend: Backend,
) {
    let state = open(config(backend).await).await;
    let (id, secret) = client(&state).await;
    let now = issuer::db::unix_now();
    let config = state.config();
    let signing = state.keys().active.as_ref().unwrap().kid().to_owned();
    let scheduled = issuer::keys::rotate(&state.db, &state.kek, &config, "test", now)
        .await
        .unwrap();
    let next = issuer::keys::list(&state.db)
        .await
        .unwrap()
        .into_iter()
        .find(|key| key.state == issuer::keys::KeyState::Pending)
        .unwrap_or_else(|| unreachable!("no key scheduled: {scheduled}"))
        .kid;
    sqlx::query("UPDATE signing_keys SET public_sec1 = $1 WHERE kid = $2")
        .bind(vec![0u8])
        .bind(&next)
        .execute(state.db.pool())
        .await
        .unwrap();
    let ready = |state: &issuer::AppState| {
        let state = state.clone();
        async move {
            let (status, _, body) =
                send_json(&state, Request::get("/readyz").body(Body::empty()).unwrap()).await;
            (status.as_u16(), body["signing_key"].as_bool())
        }
    };
    // The reload fails, but the key it signs with is still the active one: it goes on.
    issuer::refresh_keys(&state, "test").await;
    assert_eq!(ready(&state).await, (200, Some(true)));
    token(&state, &id, &secret).await;
    // Revoked by another instance (or the CLI): this one stops signing with it.
    issuer::keys::revoke(&state.db, &state.kek, &config, &signing, "test", now)
        .await
        .unwrap();
    issuer::refresh_keys(&state, "test").await;
    assert_eq!(ready(&state).await, (503, Some(false)));
    let (status, _, body) = send_json(
        &state,
        token_request("grant_type=client_credentials", Some((&id, &secret))),
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (503, Some("temporarily_unavailable")),
        "{body}"
    );
}

/// With `metrics_listen`, `/metrics` is not on the public listener, only on its own.
async fn metrics_can_have_a_private_listener_of_their_own(backend: Backend) {
    let mut config = config(backend).await;
    config.metrics_listen = Some("127.0.0.1:9464".parse().unwrap());
    let state = open(config).await;
    let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();
    assert_eq!(send(&state, get("/metrics")).await.status(), 404);
    assert_eq!(send(&state, get("/readyz")).await.status(), 200);
    let private = issuer::metrics_app(state.clone());
    let response = tower::ServiceExt::oneshot(private.clone(), get("/metrics"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = tower::ServiceExt::oneshot(private, get("/oauth2/token"))
        .await
        .unwrap();
    assert_eq!(response.status(), 404, "only metrics there");
}

/// Failed authentications from addresses of one IPv6 `/64` draw on one budget: a client
/// cannot take a fresh budget with each of its 2^64 addresses.
async fn ipv6_clients_share_a_failed_auth_budget_per_slash_64(backend: Backend) {
    let mut config = config(backend).await;
    config.trust_forwarded_for = true;
    config.token_rate_per_address = "100/60s;burst=12".parse().unwrap();
    let state = open(config).await;
    let (id, _) = client(&state).await;
    let from = |address: &str| {
        let mut request = token_request("grant_type=client_credentials", Some((&id, "wrong")));
        let value = http::HeaderValue::from_str(address).unwrap();
        request.headers_mut().insert("x-forwarded-for", value);
        request
    };
    // Each failure costs 1 + 5 of the burst of 12: the second address of the /64 is over.
    assert_eq!(send(&state, from("2001:db8:7:7::1")).await.status(), 401);
    assert_eq!(send(&state, from("2001:db8:7:7::2")).await.status(), 401);
    assert_eq!(
        send(&state, from("2001:db8:7:7:ffff::3")).await.status(),
        429
    );
    assert_eq!(
        send(&state, from("2001:db8:7:8::1")).await.status(),
        401,
        "another /64 has its own budget"
    );
}

/// Verifiers take only low-S signatures (one valid spelling per token); `ring` signs with a
/// random nonce and leaves S in either half, so the issuer must normalise every signature.
/// Without it, each of these tokens would be refused as high-S with probability 1/2.
async fn every_token_is_signed_in_low_s_form(backend: Backend) {
    let state = open(config(backend).await).await;
    let (id, secret) = client(&state).await;
    let published = jwks(&state).await;
    for _ in 0..64 {
        let token = token(&state, &id, &secret).await;
        verify(&state, &published, &token).unwrap();
    }
}

async fn forwarded_addresses_only_when_trusted(backend: Backend) {
    let from = |address: &str, id: &str, secret: &str| {
        let mut request = token_request("grant_type=client_credentials", Some((id, secret)));
        let value = http::HeaderValue::from_str(&format!("203.0.113.9, {address}")).unwrap();
        request.headers_mut().insert("x-forwarded-for", value);
        request
    };
    for trusted in [true, false] {
        let mut config = config(backend).await;
        config.trust_forwarded_for = trusted;
        config.token_rate_per_address = "1/60s;burst=1".parse().unwrap();
        let state = open(config).await;
        let (id, secret) = client(&state).await;
        assert_eq!(
            send(&state, from("198.51.100.1", &id, &secret))
                .await
                .status(),
            200
        );
        assert_eq!(
            send(&state, from("198.51.100.1", &id, &secret))
                .await
                .status(),
            429
        );
        // A different proxy-appended address is a different caller only behind a trusted proxy.
        let other = send(&state, from("198.51.100.2", &id, &secret))
            .await
            .status();
        assert_eq!(
            other.as_u16(),
            if trusted { 200 } else { 429 },
            "trusted = {trusted}"
        );
    }
}

async fn database_outage_is_503_not_500(backend: Backend) {
    let state = open(config(backend).await).await;
    let (id, secret) = client(&state).await;
    token(&state, &id, &secret).await;
    state.db.pool().close().await;
    let (status, headers, body) = send_json(
        &state,
        token_request("grant_type=client_credentials", Some((&id, &secret))),
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (503, Some("temporarily_unavailable"))
    );
    assert_eq!(headers["retry-after"], "5");
    let (status, _, body) =
        send_json(&state, Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!(
        (status.as_u16(), body["database"].as_bool()),
        (503, Some(false))
    );
    // Keys are in memory: edges can still fetch the JWKS.
    assert_eq!(
        send(
            &state,
            Request::get("/.well-known/jwks.json")
                .body(Body::empty())
                .unwrap()
        )
        .await
        .status(),
        200
    );
}

async fn token_endpoint_is_rate_limited(backend: Backend) {
    let mut config = config(backend).await;
    config.token_rate_per_client = "3/60s;burst=3".parse().unwrap();
    config.token_rate_per_address = "100/60s;burst=12".parse().unwrap();
    let state = open(config).await;
    let (id, secret) = client(&state).await;
    let (other_id, other_secret) = client(&state).await;
    for _ in 0..3 {
        token(&state, &id, &secret).await;
    }
    let (status, headers, body) = send_json(
        &state,
        token_request("grant_type=client_credentials", Some((&id, &secret))),
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (429, Some("too_many_requests"))
    );
    assert_eq!(headers["retry-after"], "20");
    token(&state, &other_id, &other_secret).await;

    // The address has used 5 of 12; a failed authentication costs 1 + 5: 11, then 12.
    let wrong = || token_request("grant_type=client_credentials", Some((&other_id, "wrong")));
    assert_eq!(send(&state, wrong()).await.status(), 401);
    assert_eq!(send(&state, wrong()).await.status(), 401);
    let (status, headers, _) = send_json(&state, wrong()).await;
    assert_eq!(
        status, 429,
        "failed authentications exhaust the address budget"
    );
    assert!(headers.contains_key("retry-after"));
}

async fn basic_and_post_grants_issue_verifiable_tokens(backend: Backend) {
    let state = open(config(backend).await).await;
    let (id, secret) = client(&state).await;
    let (status, headers, body) = send_json(
        &state,
        token_request("grant_type=client_credentials", Some((&id, &secret))),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 600);
    assert_eq!(body["scope"], "read write");
    let jwks = jwks(&state).await;
    let verified = verify(&state, &jwks, body["access_token"].as_str().unwrap()).unwrap();
    let claims = verified.claims();
    assert_eq!(claims.sub, id);
    assert_eq!(claims.client_id, id);
    assert_eq!(claims.aud, vec![AUDIENCE.to_owned()]);
    assert_eq!(claims.exp - claims.iat, 600);
    assert_eq!(claims.rate_plan.unwrap().to_string(), "100/60s;burst=10");

    let form = format!("grant_type=client_credentials&client_id={id}&client_secret={secret}");
    let (status, _, body) = send_json(&state, token_request(&form, None)).await;
    assert_eq!(status, 200, "{body}");
    let second = verify(&state, &jwks, body["access_token"].as_str().unwrap()).unwrap();
    assert_ne!(second.claims().jti, verified.claims().jti);
}

async fn scope_and_resource_are_honoured(backend: Backend) {
    let state = open(config(backend).await).await;
    let (id, secret) = client(&state).await;
    let form = "grant_type=client_credentials&scope=read&resource=https%3A%2F%2Fother.test";
    let (status, _, body) = send_json(&state, token_request(form, Some((&id, &secret)))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "read");
    let validator = shared::Validator::new(shared::Validation::new(
        state.config().issuer_url.clone(),
        "https://other.test",
    ));
    let now = shared::UnixTime::from_secs(issuer::db::unix_now() as u64);
    let verified = validator
        .verify(
            body["access_token"].as_str().unwrap(),
            &jwks(&state).await,
            now,
        )
        .unwrap();
    assert!(verified.claims().scope.contains("read") && !verified.claims().scope.contains("write"));

    for (form, error) in [
        ("grant_type=client_credentials&scope=admin", "invalid_scope"),
        (
            "grant_type=client_credentials&scope=read%20%20write",
            "invalid_scope",
        ),
        (
            "grant_type=client_credentials&resource=https%3A%2F%2Fevil.test",
            "invalid_target",
        ),
    ] {
        let (status, _, body) = send_json(&state, token_request(form, Some((&id, &secret)))).await;
        assert_eq!(
            (status.as_u16(), body["error"].as_str().unwrap()),
            (400, error),
            "{form}"
        );
    }
}

async fn client_errors_follow_rfc6749(backend: Backend) {
    let state = open(config(backend).await).await;
    let (id, secret) = client(&state).await;
    let grant = "grant_type=client_credentials";
    let cases: Vec<(Request<Body>, u16, &str)> = vec![
        (
            token_request(grant, Some((&id, "wrong"))),
            401,
            "invalid_client",
        ),
        (
            token_request(grant, Some(("c_unknown", &secret))),
            401,
            "invalid_client",
        ),
        (token_request(grant, None), 401, "invalid_client"),
        (
            Request::post("/oauth2/token")
                .header("content-type", "application/x-www-form-urlencoded")
                .header("authorization", "Basic !!!not-base64")
                .body(Body::from(grant))
                .unwrap(),
            401,
            "invalid_client",
        ),
        (
            token_request(
                &format!("{grant}&client_id={id}&client_secret={secret}"),
                Some((&id, &secret)),
            ),
            400,
            "invalid_request",
        ),
        (
            token_request(&format!("{grant}&client_secret={secret}"), None),
            400,
            "invalid_request",
        ),
        (
            token_request(
                &format!("{grant}&scope=read&scope=write"),
                Some((&id, &secret)),
            ),
            400,
            "invalid_request",
        ),
        (
            token_request("scope=read", Some((&id, &secret))),
            400,
            "invalid_request",
        ),
        (
            token_request(
                "grant_type=password&username=a&password=b",
                Some((&id, &secret)),
            ),
            400,
            "unsupported_grant_type",
        ),
        (
            token_request("grant_type=authorization_code&code=x", Some((&id, &secret))),
            400,
            "unsupported_grant_type",
        ),
        (
            Request::post("/oauth2/token")
                .header("content-type", "application/json")
                .header("authorization", basic(&id, &secret))
                .body(Body::from(r#"{"grant_type":"client_credentials"}"#))
                .unwrap(),
            400,
            "invalid_request",
        ),
        (
            Request::post("/oauth2/token")
                .header("authorization", basic(&id, &secret))
                .body(Body::from(grant))
                .unwrap(),
            400,
            "invalid_request",
        ),
        (
            token_request(
                &format!("{grant}&pad={}", "x".repeat(20_000)),
                Some((&id, &secret)),
            ),
            413,
            "invalid_request",
        ),
        (
            token_request(
                "%ff%fe=%00&grant_type=client_credentials",
                Some((&id, "\u{0}")),
            ),
            401,
            "invalid_client",
        ),
    ];
    for (i, (request, status, error)) in cases.into_iter().enumerate() {
        let (got, headers, body) = send_json(&state, request).await;
        assert_eq!(got.as_u16(), status, "case {i}: {body}");
        assert_eq!(body["error"], error, "case {i}");
        assert_eq!(headers["cache-control"], "no-store", "case {i}");
        if status == 401 {
            assert!(
                headers["www-authenticate"]
                    .to_str()
                    .unwrap()
                    .starts_with("Basic"),
                "case {i}"
            );
        }
    }
    let (status, _, body) =
        send_json(&state, Request::get("/nope").body(Body::empty()).unwrap()).await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str().unwrap()),
        (404, "not_found")
    );
}

async fn disabled_and_rotated_clients(backend: Backend) {
    let now = issuer::db::unix_now();
    let (clock, time) = issuer::clock::Clock::manual(shared::UnixTime::from_secs(now as u64));
    let state = open(config(backend).await).await.with_clock(clock);
    let (id, secret) = client(&state).await;
    issuer::clients::set_enabled(&state.db, &id, false, &change(now))
        .await
        .unwrap();
    let (status, _, _) = send_json(
        &state,
        token_request("grant_type=client_credentials", Some((&id, &secret))),
    )
    .await;
    assert_eq!(status, 401);
    issuer::clients::set_enabled(&state.db, &id, true, &change(now))
        .await
        .unwrap();
    // Enabled again at once: no token the disable still covers (its cut-off is a few
    // seconds on), then tokens as before.
    let (status, _, _) = send_json(
        &state,
        token_request("grant_type=client_credentials", Some((&id, &secret))),
    )
    .await;
    assert_eq!(status, 503);
    // Counted apart from server errors (the ratio that pages counts temporarily_unavailable).
    let metrics = send(
        &state,
        Request::get("/metrics").body(Body::empty()).unwrap(),
    )
    .await;
    let body = axum::body::to_bytes(metrics.into_body(), 1 << 20)
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&body).contains("outcome=\"revoked_moments_ago\""));
    time.set_secs(now + issuer::clients::CUTOFF_MARGIN_SECS + 1);
    token(&state, &id, &secret).await;
    let new_secret = issuer::clients::rotate_secret(&state.db, &id, false, &change(now))
        .await
        .unwrap();
    let (status, _, _) = send_json(
        &state,
        token_request("grant_type=client_credentials", Some((&id, &secret))),
    )
    .await;
    assert_eq!(status, 401);
    token(&state, &id, &new_secret).await;
}

async fn discovery_is_cacheable(backend: Backend) {
    let state = open(config(backend).await).await;
    for path in [
        "/.well-known/jwks.json",
        "/.well-known/oauth-authorization-server",
    ] {
        let response = send(&state, Request::get(path).body(Body::empty()).unwrap()).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["cache-control"], "public, max-age=300");
        let etag = response.headers()["etag"].to_str().unwrap().to_owned();
        let again = Request::get(path)
            .header("if-none-match", &etag)
            .body(Body::empty())
            .unwrap();
        let response = send(&state, again).await;
        assert_eq!(response.status(), 304, "{path}");
        assert_eq!(response.headers()["etag"], etag.as_str());
        let stale = Request::get(path)
            .header("if-none-match", "\"other\"")
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(&state, stale).await.status(), 200);
    }
    let (_, _, metadata) = send_json(
        &state,
        Request::get("/.well-known/oauth-authorization-server")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(metadata["issuer"], state.config().issuer_url.as_str());
    assert_eq!(
        metadata["token_endpoint"],
        format!("{}/oauth2/token", state.config().issuer_url)
    );
    assert_eq!(metadata["grant_types_supported"][0], "client_credentials");
}

async fn health_ready_and_metrics(backend: Backend) {
    let state = open(config(backend).await).await;
    let (id, secret) = client(&state).await;
    token(&state, &id, &secret).await;
    assert_eq!(
        send(
            &state,
            Request::get("/healthz").body(Body::empty()).unwrap()
        )
        .await
        .status(),
        200
    );
    let (status, _, body) =
        send_json(&state, Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!(
        (status.as_u16(), body["ready"].as_bool()),
        (200, Some(true))
    );
    let response = send(
        &state,
        Request::get("/metrics").body(Body::empty()).unwrap(),
    )
    .await;
    let text = String::from_utf8(
        axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains(&format!(
            "issuer_tokens_total{{client_id=\"{id}\",outcome=\"issued\"}} 1"
        )),
        "{text}"
    );
    assert!(text.contains("issuer_request_duration_seconds_bucket"));
    assert!(text.contains("issuer_active_key_age_seconds"));
    // The pool's size as configured (the default, within SQLite's cap of 8), which the
    // saturation alert divides by.
    let max = state.config().database_max_connections;
    assert!(
        text.contains(&format!("issuer_db_max_connections {max}\n")),
        "{text}"
    );
}
