//! `issuer backup` on SQLite: back up while serving, destroy the database, restore the copy,
//! and find clients, keys and revocations intact, with old tokens still verifying.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use support::*;

#[tokio::test]
async fn backup_destroy_restore_keeps_everything() {
    let config = config(Backend::Sqlite).await.unwrap();
    let state = open(config.clone()).await;
    let (id, secret) = client(&state).await;
    let old_token = token(&state, &id, &secret).await;
    let revoked = token(&state, &id, &secret).await;
    let revoked_jti = verify(&state, &jwks(&state).await, &revoked)
        .unwrap()
        .claims()
        .jti
        .clone();
    let form = format!("token={revoked}");
    let request = http::Request::post("/oauth2/revoke")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", basic(&id, &secret))
        .body(axum::body::Body::from(form))
        .unwrap();
    assert_eq!(send(&state, request).await.status(), 200);
    let kid = state.keys().active.as_ref().unwrap().kid().to_owned();

    let copy = config.data_dir.join("backup.db");
    state.db.backup(&copy).await.unwrap();
    assert!(state.db.backup(&copy).await.is_err(), "never overwrites");
    state.db.pool().close().await;
    drop(state);

    // Destroy the live database, then restore the copy in its place.
    let live = config
        .database_url
        .trim_start_matches("sqlite://")
        .to_owned();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{live}{suffix}"));
    }
    std::fs::copy(&copy, &live).unwrap();

    let restored = open(config).await;
    assert_eq!(restored.keys().active.as_ref().unwrap().kid(), kid);
    let published = jwks(&restored).await;
    assert_eq!(
        verify(&restored, &published, &old_token)
            .unwrap()
            .claims()
            .client_id,
        id
    );
    token(&restored, &id, &secret).await;
    let feed: Vec<String> = sqlx::query_scalar("SELECT value FROM revocations WHERE kind = 'jti'")
        .fetch_all(restored.db.pool())
        .await
        .unwrap();
    assert_eq!(feed, vec![revoked_jti]);
}

#[tokio::test]
async fn postgres_backup_points_to_pg_dump() {
    let Some(config) = config(Backend::Postgres).await else {
        return;
    };
    let state = open(config).await;
    let err = state.db.backup(&temp_dir().join("x.db")).await.unwrap_err();
    assert!(err.to_string().contains("pg_dump"));
}
