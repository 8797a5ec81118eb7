//! Key lifecycle on SQLite and PostgreSQL: scheduled and on-demand rotation without a window
//! where valid tokens fail, emergency revocation, restart with the same keys, a wrong KEK,
//! the lease that keeps two instances from rotating at once, and a KEK rotation.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use issuer::keys::{self, KeyEvent, KeyState};
use support::*;

on_both_databases!(
    rotation_publishes_before_signing_and_keeps_old_tokens_valid,
    emergency_revoke_withdraws_at_once,
    restart_keeps_keys_and_clients,
    wrong_kek_refuses_to_start,
    one_instance_holds_the_rotation_lease,
    kek_rotation_reseals_every_key,
);

/// An on-demand rotation at `now`: the new pending key's id.
async fn scheduled(state: &issuer::AppState, now: i64) -> String {
    match keys::rotate(&state.db, &state.kek, &state.config(), "test", now)
        .await
        .unwrap()
    {
        KeyEvent::Scheduled { kid, .. } => kid,
        other => panic!("{other:?}"),
    }
}

/// Revokes `kid` at `now`: the key signing afterwards, if it changed.
async fn revoked(state: &issuer::AppState, kid: &str, now: i64) -> Option<String> {
    match keys::revoke(&state.db, &state.kek, &state.config(), kid, "test", now)
        .await
        .unwrap()
    {
        KeyEvent::Revoked { successor, .. } => successor,
        other => panic!("{other:?}"),
    }
}

fn states(keys: &[keys::KeyInfo]) -> Vec<(String, KeyState)> {
    keys.iter().map(|k| (k.kid.clone(), k.state)).collect()
}

async fn rotation_publishes_before_signing_and_keeps_old_tokens_valid(backend: Backend) {
    let state = open(config(backend).await).await;
    let (id, secret) = client(&state).await;
    let first = state.keys().active.as_ref().unwrap().kid().to_owned();
    let old_token = token(&state, &id, &secret).await;

    // On demand: the new key is published now but does not sign yet.
    let now = issuer::db::unix_now();
    let next = scheduled(&state, now).await;
    issuer::refresh_keys(&state, "test").await;
    let published = jwks(&state).await;
    assert!(published.contains(&next) && published.contains(&first));
    let during = token(&state, &id, &secret).await;
    assert_eq!(verify(&state, &published, &during).unwrap().kid(), first);

    // After the publish lead (2 x JWKS max-age) it signs; the old key is retired, still published.
    let lead = state.config().key_publish_lead_secs() as i64;
    let events = keys::advance(&state.db, &state.kek, &state.config(), now + lead)
        .await
        .unwrap();
    assert!(
        events.contains(&KeyEvent::Activated {
            kid: next.clone(),
            retired: Some(first.clone())
        }),
        "{events:?}"
    );
    state.set_keys(
        issuer::keys::SigningKeys::load(&state.db, &state.kek)
            .await
            .unwrap(),
    );
    let published = jwks(&state).await;
    let after = token(&state, &id, &secret).await;
    assert_eq!(verify(&state, &published, &after).unwrap().kid(), next);
    assert_eq!(
        verify(&state, &published, &old_token).unwrap().kid(),
        first,
        "old tokens stay valid"
    );

    // Once every token the old key signed has expired, it leaves the JWKS.
    let later = now + lead + state.config().token_lifetime_secs as i64 + 61;
    keys::advance(&state.db, &state.kek, &state.config(), later)
        .await
        .unwrap();
    let all = states(&keys::list(&state.db).await.unwrap());
    assert!(all.contains(&(first.clone(), KeyState::Removed)), "{all:?}");
    assert!(all.contains(&(next.clone(), KeyState::Active)));

    // The schedule: once the active key is older than the interval, a pending key appears.
    let due = later + state.config().key_rotation_interval_secs as i64;
    let events = keys::advance(&state.db, &state.kek, &state.config(), due)
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, KeyEvent::Scheduled { .. })),
        "{events:?}"
    );
}

async fn emergency_revoke_withdraws_at_once(backend: Backend) {
    let state = open(config(backend).await).await;
    let (id, secret) = client(&state).await;
    let compromised = state.keys().active.as_ref().unwrap().kid().to_owned();
    let leaked = token(&state, &id, &secret).await;
    let now = issuer::db::unix_now();
    let successor = revoked(&state, &compromised, now).await.unwrap();
    issuer::refresh_keys(&state, "test").await;
    let published = jwks(&state).await;
    assert!(!published.contains(&compromised));
    assert_eq!(
        verify(&state, &published, &leaked).unwrap_err(),
        shared::Rejection::UnknownKeyId
    );
    let fresh = token(&state, &id, &secret).await;
    assert_eq!(verify(&state, &published, &fresh).unwrap().kid(), successor);
    let feed: Vec<(String, String)> = sqlx::query_as("SELECT kind, value FROM revocations")
        .fetch_all(state.db.pool())
        .await
        .unwrap();
    assert_eq!(feed, vec![("kid".to_owned(), compromised.clone())]);
    assert!(
        keys::revoke(
            &state.db,
            &state.kek,
            &state.config(),
            &compromised,
            "test",
            now
        )
        .await
        .is_err(),
        "twice"
    );

    // With a pending key already published, revoking the active one promotes it.
    let pending = scheduled(&state, now).await;
    let took_over = revoked(&state, &successor, now).await;
    assert_eq!(took_over.as_deref(), Some(pending.as_str()));
}

async fn restart_keeps_keys_and_clients(backend: Backend) {
    let config = config(backend).await;
    let state = open(config.clone()).await;
    let (id, secret) = client(&state).await;
    let kid = state.keys().active.as_ref().unwrap().kid().to_owned();
    let old = token(&state, &id, &secret).await;
    drop(state);

    let restarted = open(config).await;
    assert_eq!(restarted.keys().active.as_ref().unwrap().kid(), kid);
    let published = jwks(&restarted).await;
    assert_eq!(verify(&restarted, &published, &old).unwrap().kid(), kid);
    token(&restarted, &id, &secret).await;
}

async fn wrong_kek_refuses_to_start(backend: Backend) {
    let config = config(backend).await;
    drop(open(config.clone()).await);
    let other_dir = temp_dir();
    let err = issuer::open(issuer::Config {
        data_dir: other_dir,
        ..config
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("does not decrypt"), "{err}");
}

async fn one_instance_holds_the_rotation_lease(backend: Backend) {
    let config = config(backend).await;
    let a = open(config.clone()).await;
    let b = open(config).await;
    let now = issuer::db::unix_now();
    assert!(a.db.try_lease("key-rotation", "a", now, 15).await.unwrap());
    assert!(
        a.db.try_lease("key-rotation", "a", now + 5, 15)
            .await
            .unwrap(),
        "renewal"
    );
    assert!(!b
        .db
        .try_lease("key-rotation", "b", now + 5, 15)
        .await
        .unwrap());
    assert!(
        b.db.try_lease("key-rotation", "b", now + 21, 15)
            .await
            .unwrap(),
        "after expiry"
    );
    assert!(!a
        .db
        .try_lease("key-rotation", "a", now + 22, 15)
        .await
        .unwrap());

    // Both instances refreshing during a rotation end up agreeing on one active key.
    scheduled(&a, now).await;
    issuer::refresh_keys(&a, "a").await;
    issuer::refresh_keys(&b, "b").await;
    let active = |s: &issuer::AppState| s.keys().active.as_ref().unwrap().kid().to_owned();
    assert_eq!(active(&a), active(&b));
    assert_eq!(jwks(&a).await, jwks(&b).await);
    let actives = keys::list(&a.db)
        .await
        .unwrap()
        .iter()
        .filter(|k| k.state == KeyState::Active)
        .count();
    assert_eq!(actives, 1);
}

async fn kek_rotation_reseals_every_key(backend: Backend) {
    let config = config(backend).await;
    let state = open(config.clone()).await;
    let (id, secret) = client(&state).await;
    let old_token = token(&state, &id, &secret).await;
    let now = issuer::db::unix_now();
    scheduled(&state, now).await;

    // Instances run with the new KEK and the old one as previous; then the rewrap.
    let (old, _) = keys::Kek::load(&config).unwrap();
    let new_hex = "a1".repeat(32);
    let both = keys::Kek::parse(&new_hex).unwrap().with_previous(old);
    assert!(both.has_previous());
    assert_eq!(keys::rewrap(&state.db, &both).await.unwrap(), 2);

    // The new KEK alone now opens every key; the old one alone opens none.
    let new = keys::Kek::parse(&new_hex).unwrap();
    let loaded = keys::SigningKeys::load(&state.db, &new).await.unwrap();
    let published = loaded.jwks_json.clone();
    let (old_again, _) = keys::Kek::load(&config).unwrap();
    let err = keys::SigningKeys::load(&state.db, &old_again)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not decrypt"), "{err}");
    // Tokens signed before the rotation still verify: the public keys did not change.
    let jwks = shared::Jwks::parse(&published).unwrap();
    assert!(verify(&state, &jwks, &old_token).is_ok());
}
