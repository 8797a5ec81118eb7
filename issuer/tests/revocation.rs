//! Revocation (RFC 7009), introspection (RFC 7662) and the revocation feed, on both databases.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use axum::body::Body;
use http::Request;
use issuer::clock::Clock;
use issuer::revocations::{self, Revoked};
use support::*;

on_both_databases!(
    revoked_tokens_are_inactive_and_on_the_feed,
    revoke_and_introspect_errors,
    a_revoked_token_stays_listed_until_no_verifier_accepts_it,
    a_revoked_key_stays_listed_for_ever,
    a_key_revocation_is_one_transaction_with_its_feed_entry,
    the_feed_never_skips_an_entry_committed_late,
    only_resource_servers_introspect_and_only_their_own_audiences,
    a_disabled_clients_tokens_are_inactive,
    failed_authentication_at_revocation_and_introspection_costs_the_address,
    the_feed_is_limited_per_address,
    a_feed_token_has_a_budget_no_one_else_can_run_down,
    disabling_a_client_or_rotating_with_revoke_tokens_revokes_what_it_holds,
    a_restored_database_still_hands_edges_what_comes_after,
    a_token_read_before_a_revocation_commits_falls_under_it,
    revocations_at_one_instant_still_order_their_cutoffs,
    the_backfill_gives_clients_revoked_before_0009_their_cutoff,
);

/// Migration 0010 on a client revoked by a release before 0009 (a feed entry, and a row
/// with no cut-off): the row gets the entry's cut-off, so its new tokens are stamped with
/// it and stand. Played by writing the entry alone, then running the migration's SQL again.
async fn the_backfill_gives_clients_revoked_before_0009_their_cutoff(backend: Backend) {
    let state = open(config(backend).await).await;
    let (id, secret) = client(&state).await;
    let (never, _) = client(&state).await;
    let t = issuer::db::unix_now();
    let entry = Revoked::Client {
        issued_before: t - 100,
        token_lifetime_secs: 600,
    };
    let mut tx = state.db.pool().begin().await.unwrap();
    revocations::record(&mut tx, &state.db, entry, &id, t - 100)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let backfill = match backend {
        Backend::Sqlite => include_str!("../migrations/sqlite/0010_token_cutoff_backfill.sql"),
        Backend::Postgres => include_str!("../migrations/postgres/0010_token_cutoff_backfill.sql"),
    };
    sqlx::raw_sql(backfill)
        .execute(state.db.pool())
        .await
        .unwrap();
    let cutoff = |client: &str| {
        let (db, client) = (state.db.clone(), client.to_owned());
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT tokens_valid_after FROM clients WHERE client_id = $1",
            )
            .bind(client)
            .fetch_one(db.pool())
            .await
            .unwrap()
        }
    };
    assert_eq!((cutoff(&id).await, cutoff(&never).await), (t - 100, 0));
    let fresh = token(&state, &id, &secret).await;
    let fresh = verify(&state, &jwks(&state).await, &fresh).unwrap();
    assert!(issuer::clients::token_is_live(&state.db, &fresh)
        .await
        .unwrap());
}

/// Two revocations of one client at the same instant (or from a clock behind the last one's)
/// still get cut-offs one above the other, so a token stamped with the first is covered by
/// the second, and one issued after both stands everywhere.
async fn revocations_at_one_instant_still_order_their_cutoffs(backend: Backend) {
    use issuer::clients::CUTOFF_MARGIN_SECS as MARGIN;
    let t = issuer::db::unix_now();
    let (clock, time) = Clock::manual(shared::UnixTime::from_secs(t as u64));
    let state = open(config(backend).await).await.with_clock(clock);
    let (id, _) = client(&state).await;
    issuer::clients::rotate_secret(&state.db, &id, true, &change(t))
        .await
        .unwrap();
    let secret = issuer::clients::rotate_secret(&state.db, &id, true, &change(t))
        .await
        .unwrap();
    let (list, feed) = edge_list(&state, t).await;
    let cutoffs: Vec<i64> = feed["revocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["issued_before"].as_i64().unwrap())
        .collect();
    assert_eq!(cutoffs, [t + MARGIN, t + MARGIN + 1]);
    time.set_secs(t + MARGIN + 2);
    let fresh = token(&state, &id, &secret).await;
    let fresh = verify(&state, &jwks(&state).await, &fresh).unwrap();
    assert_eq!(
        fresh.claims().client_cutoff,
        Some(u64::try_from(t + MARGIN + 1).unwrap())
    );
    assert!(!list.is_revoked(&fresh));
    assert!(issuer::clients::token_is_live(&state.db, &fresh)
        .await
        .unwrap());
}

/// A token request reads the client's row, then signs. One that read the row just before a
/// revocation committed (the old secret still good) signs after the revocation's own clock
/// reading: its token must be covered all the same, and a request that reads the new row
/// must not get a token its client's revocation covers. At the boundaries, with the issuer's
/// clock standing still: the revocation's clock reads `t`, the old row's token is stamped
/// `t + margin`, the new row's first token `t + margin + 1`.
async fn a_token_read_before_a_revocation_commits_falls_under_it(backend: Backend) {
    use issuer::clients::CUTOFF_MARGIN_SECS as MARGIN;
    let t = issuer::db::unix_now();
    let (clock, time) = Clock::manual(shared::UnixTime::from_secs(t as u64));
    let state = open(config(backend).await).await.with_clock(clock);
    let (id, secret) = client(&state).await;
    // The old row's last token, stamped at the end of the margin (a request that started
    // then and read the row before the commit).
    time.set_secs(t + MARGIN);
    let late = token(&state, &id, &secret).await;
    let new_secret = issuer::clients::rotate_secret(&state.db, &id, true, &change(t))
        .await
        .unwrap();
    let (list, _) = edge_list(&state, t).await;
    let jwks = jwks(&state).await;
    let late = verify(&state, &jwks, &late).unwrap();
    assert!(list.is_revoked(&late), "the old secret's token is covered");
    // The new secret, within the cut-off: a token now would be covered, so none yet.
    let (status, headers, body) = send_json(
        &state,
        token_request("grant_type=client_credentials", Some((&id, &new_secret))),
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (503, Some("temporarily_unavailable")),
        "{body}"
    );
    assert_eq!(headers["retry-after"], "1");
    // From the next second, tokens again, and the revocation does not cover them.
    time.set_secs(t + MARGIN + 1);
    let fresh = token(&state, &id, &new_secret).await;
    let fresh = verify(&state, &jwks, &fresh).unwrap();
    assert!(!list.is_revoked(&fresh));
}

/// A restore from a backup forgets the entries written after it, but edges keep the cursor
/// they reached: the entries written after the restore must number above it, or no edge
/// would ever read them. (The restore is played by deleting the entries the backup lacks.)
async fn a_restored_database_still_hands_edges_what_comes_after(backend: Backend) {
    let state = open(config(backend).await).await;
    let now = issuer::db::unix_now();
    let exp = now + 600;
    let record = |value: &'static str, at: i64| {
        let db = state.db.clone();
        async move {
            let mut tx = db.pool().begin().await.unwrap();
            revocations::record(&mut tx, &db, Revoked::Token { exp }, value, at)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    };
    record("kept", now).await;
    record("lost-1", now).await;
    record("lost-2", now).await;
    let (seen, edge_cursor) = feed_after(&state, 0).await;
    assert_eq!(seen.len(), 3);
    sqlx::query("DELETE FROM revocations WHERE value LIKE 'lost-%'")
        .execute(state.db.pool())
        .await
        .unwrap();
    record("after", now + 1).await;
    let (seen, _) = feed_after(&state, edge_cursor).await;
    assert_eq!(seen, [("jti".to_owned(), "after".to_owned())]);
}

/// Disabling a client puts a `client` entry on the feed (its tokens issued so far), in one
/// transaction with the audit row; so does a secret rotation with `revoke_tokens`, and a
/// routine rotation does not. The edge's list refuses exactly those tokens.
async fn disabling_a_client_or_rotating_with_revoke_tokens_revokes_what_it_holds(backend: Backend) {
    let state = open(config(backend).await).await;
    let (id, secret) = client(&state).await;
    let held = token(&state, &id, &secret).await;
    let (_, start) = feed_after(&state, 0).await;
    let now = issuer::db::unix_now();
    issuer::clients::rotate_secret(&state.db, &id, false, &change(now))
        .await
        .unwrap();
    assert!(
        feed_after(&state, start).await.0.is_empty(),
        "a routine rotation"
    );
    issuer::clients::set_enabled(&state.db, &id, false, &change(now))
        .await
        .unwrap();
    let (_, _, page) = send_json(
        &state,
        Request::get(format!("/revocations?since={start}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let entry = &page["revocations"][0];
    assert_eq!(
        (entry["kind"].as_str(), entry["value"].as_str()),
        (Some("client"), Some(id.as_str()))
    );
    // Its time and the margin that covers requests that read the row before it committed.
    assert_eq!(
        entry["issued_before"],
        now + issuer::clients::CUTOFF_MARGIN_SECS
    );
    let mut list = shared::RevocationList::new();
    list.apply(
        shared::FeedPage::parse(&page.to_string()).unwrap(),
        shared::UnixTime::from_secs(now as u64),
    );
    assert!(list.is_revoked(&verify(&state, &jwks(&state).await, &held).unwrap()));
    let audited: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'client.disable'")
            .fetch_one(state.db.pool())
            .await
            .unwrap();
    assert_eq!(audited, 1);

    issuer::clients::set_enabled(&state.db, &id, true, &change(now))
        .await
        .unwrap();
    issuer::clients::rotate_secret(&state.db, &id, true, &change(now + 1))
        .await
        .unwrap();
    let (entries, _) = feed_after(&state, start).await;
    assert_eq!(
        entries.iter().filter(|(kind, _)| kind == "client").count(),
        2
    );
}

/// Introspection is for resource servers (`--resource-server`), and shows them only tokens
/// addressed to one of their own audiences.
async fn only_resource_servers_introspect_and_only_their_own_audiences(backend: Backend) {
    let state = open(config(backend).await).await;
    let (id, secret) = client_with(&state, false).await;
    let token = token(&state, &id, &secret).await;
    let (status, _, body) = send_json(&state, introspect(&token, &id, &secret)).await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (403, Some("unauthorized_client")),
        "{body}"
    );

    // A resource server of another API: the token is not addressed to it.
    let other = issuer::clients::create(
        &state.db,
        issuer::clients::NewClient {
            name: "other api".into(),
            scopes: String::new(),
            audiences: vec!["https://elsewhere.test".into()],
            rate_plan: None,
            jwks: None,
            resource_server: true,
            require_dpop: false,
        },
        "test",
        issuer::db::unix_now(),
    )
    .await
    .unwrap();
    let (status, _, body) = send_json(
        &state,
        introspect(&token, &other.client.client_id, &other.client_secret),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, serde_json::json!({ "active": false }));

    // A resource server of the token's audience sees it.
    let (rs_id, rs_secret) = client_with(&state, true).await;
    let (_, _, body) = send_json(&state, introspect(&token, &rs_id, &rs_secret)).await;
    assert_eq!(body["active"], true, "{body}");
}

/// Once its client is disabled, a token is inactive at introspection even before it expires.
async fn a_disabled_clients_tokens_are_inactive(backend: Backend) {
    let state = open(config(backend).await).await;
    let (id, secret) = client_with(&state, false).await;
    let (rs_id, rs_secret) = client_with(&state, true).await;
    let token = token(&state, &id, &secret).await;
    let ask = || introspect(&token, &rs_id, &rs_secret);
    assert_eq!(send_json(&state, ask()).await.2["active"], true);
    issuer::clients::set_enabled(&state.db, &id, false, &change(issuer::db::unix_now()))
        .await
        .unwrap();
    assert_eq!(
        send_json(&state, ask()).await.2,
        serde_json::json!({ "active": false })
    );
}

/// Guessing secrets through revocation or introspection runs out of the address's budget as
/// fast as through the token endpoint (each failure costs 1 + 5).
async fn failed_authentication_at_revocation_and_introspection_costs_the_address(backend: Backend) {
    let mut config = config(backend).await;
    config.token_rate_per_address = "100/60s;burst=12".parse().unwrap();
    let state = open(config).await;
    let (id, _) = client(&state).await;
    let path = |n: usize| ["/oauth2/revoke", "/oauth2/introspect"][n % 2];
    assert_eq!(
        send(&state, form_request(path(0), "token=x", &id, "wrong"))
            .await
            .status(),
        401
    );
    assert_eq!(
        send(&state, form_request(path(1), "token=x", &id, "wrong"))
            .await
            .status(),
        401
    );
    let (status, headers, body) =
        send_json(&state, form_request(path(0), "token=x", &id, "wrong")).await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (429, Some("too_many_requests"))
    );
    assert!(headers.contains_key("retry-after"));
}

/// The feed answers 429 past its per-address plan.
async fn the_feed_is_limited_per_address(backend: Backend) {
    let mut config = config(backend).await;
    config.feed_rate_per_address = "3/60s;burst=3".parse().unwrap();
    let state = open(config).await;
    let get = || Request::get("/revocations").body(Body::empty()).unwrap();
    for _ in 0..3 {
        assert_eq!(send(&state, get()).await.status(), 200);
    }
    let (status, headers, _) = send_json(&state, get()).await;
    assert_eq!(status, 429);
    assert!(headers.contains_key("retry-after"));
}

/// Polls with a feed token are charged to a budget of their own: polls from the same address
/// without one (a noisy neighbour on shared egress) cannot run it down. A wrong token is 401
/// with an RFC 6750 challenge, charged as a poll without one. `feed_requires_token` without
/// a token is refused at start.
async fn a_feed_token_has_a_budget_no_one_else_can_run_down(backend: Backend) {
    const TOKEN: &str = "an-edge-feed-token-0123456789abcdef";
    let mut config = config(backend).await;
    config.feed_rate_per_address = "3/60s;burst=3".parse().unwrap();
    let mut state = open(config.clone()).await;
    state.feed_tokens = std::sync::Arc::new(issuer::feed_tokens::FeedTokens::parse(TOKEN).unwrap());
    let get = |authorization: Option<&str>| {
        let request = Request::get("/revocations");
        let request = match authorization {
            Some(value) => request.header("authorization", value),
            None => request,
        };
        request.body(Body::empty()).unwrap()
    };
    // A wrong token: 401, and it costs the budget without a token.
    let (status, headers, body) = send_json(&state, get(Some("Bearer not-the-feed-token"))).await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (401, Some("invalid_token"))
    );
    assert_eq!(
        headers["www-authenticate"],
        r#"Bearer realm="edgeward-feed", error="invalid_token""#
    );
    for _ in 0..2 {
        assert_eq!(send(&state, get(None)).await.status(), 200);
    }
    assert_eq!(send(&state, get(None)).await.status(), 429);
    assert_eq!(send(&state, get(Some("Bearer x"))).await.status(), 429);
    // The token's budget is untouched, and has the same plan.
    for _ in 0..3 {
        let response = send(&state, get(Some(&format!("Bearer {TOKEN}")))).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["cache-control"], "public, max-age=1");
    }
    assert_eq!(
        send(&state, get(Some(&format!("Bearer {TOKEN}"))))
            .await
            .status(),
        429
    );

    // An issuer without feed tokens reads no `Authorization` on the feed, as before.
    let without_tokens = open(config.clone()).await;
    assert_eq!(
        send(&without_tokens, get(Some("Bearer anything")))
            .await
            .status(),
        200
    );

    config.feed_requires_token = true;
    let refused = issuer::open(config).await.unwrap_err().to_string();
    assert!(refused.contains("feed_requires_token"), "{refused}");
}

/// `POST /oauth2/introspect` of `token` by the client `id`.
fn introspect(token: &str, id: &str, secret: &str) -> Request<Body> {
    form_request("/oauth2/introspect", &format!("token={token}"), id, secret)
}

fn form_request(path: &str, form: &str, id: &str, secret: &str) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", basic(id, secret))
        .body(Body::from(form.to_owned()))
        .unwrap()
}

async fn revoked_tokens_are_inactive_and_on_the_feed(backend: Backend) {
    let state = open(config(backend).await).await;
    let (id, secret) = client(&state).await;
    let token = token(&state, &id, &secret).await;
    let jti = verify(&state, &jwks(&state).await, &token)
        .unwrap()
        .claims()
        .jti
        .clone();

    let (status, _, body) = send_json(&state, introspect(&token, &id, &secret)).await;
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
    let (_, _, body) = send_json(&state, introspect(&token, &id, &secret)).await;
    assert_eq!(body, serde_json::json!({ "active": false }));

    let (_, headers, feed) = send_json(
        &state,
        Request::get(format!("/revocations?since={start}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(headers["cache-control"], "public, max-age=1");
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
        &state.config(),
        &kid,
        "test",
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
    let state = open(config(backend).await).await;
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
    let (_, _, body) = send_json(&state, introspect(&token, &id, &secret)).await;
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

/// The feed's entries after `since` at the state's time: (kind, value) pairs and the cursor.
/// What an edge's list holds after pulling the whole feed from `state` at `at` (seconds), and
/// the page it pulled.
async fn edge_list(
    state: &issuer::AppState,
    at: i64,
) -> (shared::RevocationList, serde_json::Value) {
    let (_, _, feed) = send_json(
        state,
        Request::get("/revocations?since=0")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let mut list = shared::RevocationList::new();
    list.apply(
        shared::FeedPage::parse(&feed.to_string()).unwrap(),
        shared::UnixTime::from_secs(at as u64),
    );
    (list, feed)
}

async fn feed_after(state: &issuer::AppState, since: i64) -> (Vec<(String, String)>, i64) {
    let (status, _, feed) = send_json(
        state,
        Request::get(format!("/revocations?since={since}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{feed}");
    let entries = feed["revocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (entries, feed["cursor"].as_i64().unwrap())
}

/// A `jti` entry outlives its token's `exp` by the largest leeway any verifier may use, so
/// the entry cannot vanish while a verifier still accepts the token (an edge accepts until
/// `exp` plus its leeway). Checked at the boundary with the issuer's clock standing still.
async fn a_revoked_token_stays_listed_until_no_verifier_accepts_it(backend: Backend) {
    let start = issuer::db::unix_now();
    let (clock, time) = Clock::manual(shared::UnixTime::from_secs(start as u64));
    let state = open(config(backend).await).await.with_clock(clock);
    let (id, secret) = client(&state).await;
    let token = token(&state, &id, &secret).await;
    let verified = verify(&state, &jwks(&state).await, &token).unwrap();
    let (jti, exp) = (verified.claims().jti.clone(), verified.claims().exp as i64);
    let response = send(
        &state,
        form_request("/oauth2/revoke", &format!("token={token}"), &id, &secret),
    )
    .await;
    assert_eq!(response.status(), 200);

    // The most lenient verifier the core allows still accepts the token one second before
    // the entry's end: the entry must still be there.
    let mut lenient = shared::Validation::new(state.config().issuer_url.clone(), AUDIENCE);
    lenient.leeway_secs = shared::claims::MAX_LEEWAY_SECS;
    let last_accepted = exp + shared::claims::MAX_LEEWAY_SECS as i64 - 1;
    let at = |secs: i64| shared::UnixTime::from_secs(secs as u64);
    let jwks = jwks(&state).await;
    assert!(shared::Validator::new(lenient.clone())
        .verify(&token, &jwks, at(last_accepted))
        .is_ok());
    time.set_secs(last_accepted);
    let listed = ("jti".to_owned(), jti.clone());
    assert!(feed_after(&state, 0).await.0.contains(&listed));

    // From the first second no verifier accepts the token, the entry may go.
    let first_refused = last_accepted + 1;
    assert!(shared::Validator::new(lenient)
        .verify(&token, &jwks, at(first_refused))
        .is_err());
    time.set_secs(first_refused);
    assert!(!feed_after(&state, 0).await.0.contains(&listed));
    assert_eq!(
        Revoked::Token { exp }.expires_at(),
        first_refused,
        "the bound the module documents"
    );
}

/// A revoked signing key's entry never leaves the feed: a thief can mint fresh tokens with
/// the key, and an edge may still hold a stale or cached key set that contains it.
async fn a_revoked_key_stays_listed_for_ever(backend: Backend) {
    let (clock, time) = Clock::manual(shared::UnixTime::from_secs(issuer::db::unix_now() as u64));
    let state = open(config(backend).await).await.with_clock(clock);
    let kid = state.keys().active.as_ref().unwrap().kid().to_owned();
    let now = state.clock.unix_secs();
    issuer::keys::revoke(&state.db, &state.kek, &state.config(), &kid, "test", now)
        .await
        .unwrap();
    // Well past every max-age, max-stale and cache keep time an edge may be configured with.
    for later in [now + 86_400, now + 400 * 86_400, now + 50 * 365 * 86_400] {
        time.set_secs(later);
        assert!(
            feed_after(&state, 0)
                .await
                .0
                .contains(&("kid".to_owned(), kid.clone())),
            "gone at {later}"
        );
    }
}

/// A fault of the database's between a key revocation's statements (here: the feed refuses
/// inserts) leaves nothing half done: the key is not marked revoked while missing from the
/// feed, and no audit row claims it was.
async fn a_key_revocation_is_one_transaction_with_its_feed_entry(backend: Backend) {
    let state = open(config(backend).await).await;
    let kid = state.keys().active.as_ref().unwrap().kid().to_owned();
    let pool = state.db.pool();
    let statements: &[&str] = match backend {
        Backend::Sqlite => &["CREATE TRIGGER fail_feed BEFORE INSERT ON revocations \
             BEGIN SELECT RAISE(ABORT, 'feed unavailable'); END"],
        Backend::Postgres => &[
            "CREATE FUNCTION fail_feed() RETURNS trigger AS $$ \
             BEGIN RAISE EXCEPTION 'feed unavailable'; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER fail_feed BEFORE INSERT ON revocations \
             FOR EACH ROW EXECUTE FUNCTION fail_feed()",
        ],
    };
    for statement in statements {
        sqlx::query(statement).execute(pool).await.unwrap();
    }
    let now = issuer::db::unix_now();
    let err = issuer::keys::revoke(&state.db, &state.kek, &state.config(), &kid, "test", now)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("feed unavailable"), "{err}");
    let after = issuer::keys::list(&state.db).await.unwrap();
    let target = after.iter().find(|k| k.kid == kid).unwrap();
    assert_eq!(target.state, issuer::keys::KeyState::Active, "rolled back");
    assert_eq!(after.len(), 1, "no successor created");
    let audited: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'key.revoke'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(audited, 0);

    // With the feed back, the same revocation goes through whole.
    sqlx::query("DROP TRIGGER fail_feed ON revocations")
        .execute(pool)
        .await
        .or(sqlx::query("DROP TRIGGER fail_feed").execute(pool).await)
        .unwrap();
    issuer::keys::revoke(&state.db, &state.kek, &state.config(), &kid, "test", now)
        .await
        .unwrap();
    assert!(feed_after(&state, 0)
        .await
        .0
        .contains(&("kid".to_owned(), kid)));
}

/// Two revocations in concurrent transactions, the first to draw its `seq` committing last:
/// a poller reading between the commits must not move its cursor past the slower one's
/// entry. (Without ordering, on PostgreSQL the second commits at once with the higher `seq`,
/// the poll moves past both, and the first is never read.)
async fn the_feed_never_skips_an_entry_committed_late(backend: Backend) {
    let state = open(config(backend).await).await;
    let (_, start) = feed_after(&state, 0).await;
    let now = issuer::db::unix_now();
    let exp = now + 600;

    let mut slow = state.db.pool().begin().await.unwrap();
    revocations::record(&mut slow, &state.db, Revoked::Token { exp }, "slow", now)
        .await
        .unwrap();
    let db = state.db.clone();
    let mut fast = tokio::spawn(async move {
        let mut tx = db.pool().begin().await.unwrap();
        revocations::record(&mut tx, &db, Revoked::Token { exp }, "fast", now)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    });
    // Let the fast one commit if nothing holds it back (a bound, not a timing assertion:
    // the check below holds whether or not it finished).
    let _ = tokio::time::timeout(std::time::Duration::from_millis(500), &mut fast).await;

    let (mut seen, cursor) = feed_after(&state, start).await;
    slow.commit().await.unwrap();
    fast.await.unwrap();
    let (later, _) = feed_after(&state, cursor).await;
    seen.extend(later);
    for value in ["slow", "fast"] {
        assert!(
            seen.contains(&("jti".to_owned(), value.to_owned())),
            "{value} never reached the poller: {seen:?}"
        );
    }
}

/// A region's replica that has not yet applied a revocation still issues from the old row,
/// at any time after it: the token is stamped with the cut-off that row had, and the
/// revocation covers it at every edge whatever its `iat`. (The replica is played by a copy
/// of the database taken before the revocation, on SQLite.)
#[tokio::test]
async fn a_token_from_a_replica_behind_a_revocation_falls_under_it() {
    let config = config(Backend::Sqlite).await;
    let primary = open(config.clone()).await;
    let (id, secret) = client(&primary).await;
    let copy = config.data_dir.join("replica.db");
    primary.db.backup(&copy).await.unwrap();
    let t = issuer::db::unix_now();
    issuer::clients::rotate_secret(&primary.db, &id, true, &change(t))
        .await
        .unwrap();
    // Long past the revocation's cut-off, the replica still knows the old secret.
    let late = t + issuer::clients::CUTOFF_MARGIN_SECS + 60;
    let (clock, _) = Clock::manual(shared::UnixTime::from_secs(late as u64));
    let replica = open(issuer::config::Config {
        database_url: format!("sqlite://{}", copy.display()),
        ..config
    })
    .await
    .with_clock(clock);
    let from_replica = token(&replica, &id, &secret).await;
    let (list, _) = edge_list(&primary, t).await;
    let verified = shared::Validator::new(shared::Validation::new(
        primary.config().issuer_url.clone(),
        AUDIENCE,
    ))
    .verify(
        &from_replica,
        &jwks(&primary).await,
        shared::UnixTime::from_secs(late as u64),
    )
    .unwrap();
    assert!(verified.claims().iat > u64::try_from(t).unwrap() + 60);
    assert!(
        list.is_revoked(&verified),
        "covered by its stamp, not its iat"
    );
    // And the issuer's own answer (introspection, the admin API) agrees.
    assert!(!issuer::clients::token_is_live(&primary.db, &verified)
        .await
        .unwrap());
}
