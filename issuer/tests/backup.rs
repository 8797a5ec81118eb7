//! Backups that restore: `issuer backup` on SQLite and `pg_dump`/`pg_restore` on PostgreSQL.
//! Back up while serving, destroy the database, restore the copy, and find clients, keys and
//! revocations intact, with old tokens still verifying.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::process::Command;

use issuer::AppState;
use support::*;

/// What a restore must bring back: a client, a token signed before the backup, a revoked
/// token's `jti` and the active key.
struct BeforeBackup {
    id: String,
    secret: String,
    old_token: String,
    revoked_jti: String,
    kid: String,
}

async fn populate(state: &AppState) -> BeforeBackup {
    let (id, secret) = client(state).await;
    let old_token = token(state, &id, &secret).await;
    let revoked = token(state, &id, &secret).await;
    let revoked_jti = verify(state, &jwks(state).await, &revoked)
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
    assert_eq!(send(state, request).await.status(), 200);
    let kid = state.keys().active.as_ref().unwrap().kid().to_owned();
    BeforeBackup {
        id,
        secret,
        old_token,
        revoked_jti,
        kid,
    }
}

async fn assert_restored(restored: &AppState, before: &BeforeBackup) {
    assert_eq!(restored.keys().active.as_ref().unwrap().kid(), before.kid);
    let published = jwks(restored).await;
    assert_eq!(
        verify(restored, &published, &before.old_token)
            .unwrap()
            .claims()
            .client_id,
        before.id
    );
    token(restored, &before.id, &before.secret).await;
    let feed: Vec<String> = sqlx::query_scalar("SELECT value FROM revocations WHERE kind = 'jti'")
        .fetch_all(restored.db.pool())
        .await
        .unwrap();
    assert_eq!(feed, vec![before.revoked_jti.clone()]);
}

#[tokio::test]
async fn backup_destroy_restore_keeps_everything() {
    let config = config(Backend::Sqlite).await;
    let state = open(config.clone()).await;
    let before = populate(&state).await;

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

    assert_restored(&open(config).await, &before).await;
}

/// The PostgreSQL procedure of deploy/README.md, command for command: `pg_dump` while the
/// issuer serves, the database dropped, `pg_restore` into a new empty one, the issuer started.
#[tokio::test]
async fn postgres_dump_destroy_restore_keeps_everything() {
    let config = config(Backend::Postgres).await;
    let state = open(config.clone()).await;
    let before = populate(&state).await;

    let dump = config.data_dir.join("issuer.dump");
    run(Command::new("pg_dump")
        .arg("--format=custom")
        .arg(format!("--file={}", dump.display()))
        .arg(&config.database_url));
    state.db.pool().close().await;
    drop(state);

    let admin_url = postgres_admin_url();
    let (_, name) = config.database_url.rsplit_once('/').unwrap();
    let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin_url)
        .await
        .unwrap();
    for statement in [
        format!("DROP DATABASE {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        sqlx::query(&statement).execute(&mut admin).await.unwrap();
    }
    run(Command::new("pg_restore")
        .args(["--clean", "--if-exists", "--dbname"])
        .arg(&config.database_url)
        .arg(&dump));

    assert_restored(&open(config).await, &before).await;
}

/// Runs a PostgreSQL client tool (tests/setup.sh installs them), failing with its stderr.
fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("{command:?}: {err} (is postgresql-client installed?)"));
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn postgres_backup_points_to_pg_dump() {
    let config = config(Backend::Postgres).await;
    let state = open(config).await;
    let err = state.db.backup(&temp_dir().join("x.db")).await.unwrap_err();
    assert!(err.to_string().contains("pg_dump"));
}

/// Without `TEST_DATABASE_URL` a PostgreSQL test fails and says how to point it at a server:
/// it never counts as passed. (Runs this test binary again, filtered to one such test.)
#[test]
fn postgres_tests_without_a_server_fail_and_say_why() {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "postgres_backup_points_to_pg_dump"])
        .env_remove("TEST_DATABASE_URL")
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "{printed}");
    assert!(printed.contains("set TEST_DATABASE_URL"), "{printed}");
    assert!(printed.contains("0 passed; 1 failed"), "{printed}");
}
