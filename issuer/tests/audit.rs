//! The audit trail's HMAC chain, on both databases: rows written by the issuer's own actions
//! verify; a row edited, deleted, moved or stripped of its MAC by hand is named by `verify`,
//! through the library and through the real `issuer audit verify`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use issuer::audit::{AuditError, Entry};
use support::*;

on_both_databases!(
    an_edited_deleted_moved_or_unsealed_audit_row_is_named,
    concurrent_writers_keep_one_chain,
    a_serving_instance_reports_a_broken_chain,
);

const BIN: &str = env!("CARGO_BIN_EXE_issuer");

/// `issuer audit ARGS` on the database and data dir (so the audit key) of `state`.
fn cli(state: &issuer::state::AppState, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let output = std::process::Command::new(BIN)
        .env_remove("ISSUER_KEK")
        .env_remove("ISSUER_AUDIT_KEY")
        .env("ISSUER_DATABASE_URL", &state.config().database_url)
        .env("ISSUER_DATA_DIR", &state.config().data_dir)
        .env("ISSUER_LOG_FORMAT", "pretty")
        .arg("audit")
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    (output.status.code(), json)
}

async fn sql(state: &issuer::state::AppState, statement: &str) {
    sqlx::query(statement)
        .execute(state.db.pool())
        .await
        .unwrap();
}

/// Rows `a` and `b` exchange everything but their ids.
async fn swap(state: &issuer::state::AppState, a: i64, b: i64) {
    use sqlx::Row as _;
    let read = |id: i64| async move {
        let row = sqlx::query(
            "SELECT at, actor, action, subject, detail, mac FROM audit_log WHERE id = $1",
        )
        .bind(id)
        .fetch_one(state.db.pool())
        .await
        .unwrap();
        (
            row.get::<i64, _>("at"),
            row.get::<String, _>("actor"),
            row.get::<String, _>("action"),
            row.get::<String, _>("subject"),
            row.get::<String, _>("detail"),
            row.get::<Vec<u8>, _>("mac"),
        )
    };
    let (first, second) = (read(a).await, read(b).await);
    for (id, (at, actor, action, subject, detail, mac)) in [(a, second), (b, first)] {
        sqlx::query(
            "UPDATE audit_log SET at = $1, actor = $2, action = $3, subject = $4, detail = $5, mac = $6 \
             WHERE id = $7",
        )
        .bind(at)
        .bind(actor)
        .bind(action)
        .bind(subject)
        .bind(detail)
        .bind(mac)
        .bind(id)
        .execute(state.db.pool())
        .await
        .unwrap();
    }
}

fn broken_at(result: Result<issuer::audit::Intact, AuditError>) -> i64 {
    match result {
        Err(AuditError::Broken { id } | AuditError::Unsealed { id }) => id,
        other => panic!("expected a broken chain, got {other:?}"),
    }
}

async fn an_edited_deleted_moved_or_unsealed_audit_row_is_named(backend: Backend) {
    let state = open(config(backend).await).await;
    // Rows from the issuer's own actions (a client made and disabled, a key rotated), then
    // plain ones.
    let (id, _) = client(&state).await;
    issuer::clients::set_enabled(&state.db, &id, false, &change(issuer::db::unix_now()))
        .await
        .unwrap();
    for n in 0..6 {
        let subject = format!("subject-{n}");
        state
            .db
            .audit(&Entry {
                at: 1_790_000_000 + n,
                actor: "test",
                action: "test.write",
                subject: &subject,
                detail: "",
            })
            .await
            .unwrap();
    }
    let intact = state.db.verify_audit().await.unwrap();
    assert!(intact.chained >= 7, "{intact:?}");
    assert_eq!(intact.before_chain, 0);
    let (code, out) = cli(&state, &["verify"]);
    assert_eq!(
        (code, &out["intact"]),
        (Some(0), &serde_json::json!(true)),
        "{out}"
    );

    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM audit_log ORDER BY id")
        .fetch_all(state.db.pool())
        .await
        .unwrap();
    let (third, fourth) = (ids[2], ids[3]);

    // Edited: the row itself no longer matches its MAC.
    sql(
        &state,
        &format!("UPDATE audit_log SET detail = 'nothing happened' WHERE id = {third}"),
    )
    .await;
    assert_eq!(broken_at(state.db.verify_audit().await), third);
    let (code, out) = cli(&state, &["verify"]);
    assert_eq!(
        (code, &out["first_bad_row"]),
        (Some(1), &serde_json::json!(third)),
        "{out}"
    );
    sql(
        &state,
        &format!("UPDATE audit_log SET detail = '' WHERE id = {third}"),
    )
    .await;
    state.db.verify_audit().await.unwrap();

    // Moved: two rows swap places (everything but the id, MACs included): the first no
    // longer follows its predecessor. Swapped back, the chain holds again.
    swap(&state, third, fourth).await;
    assert_eq!(broken_at(state.db.verify_audit().await), third);
    swap(&state, third, fourth).await;
    state.db.verify_audit().await.unwrap();

    // Deleted: the row after it no longer follows.
    sql(
        &state,
        &format!("DELETE FROM audit_log WHERE id = {fourth}"),
    )
    .await;
    assert_eq!(broken_at(state.db.verify_audit().await), ids[4]);
    let (code, out) = cli(&state, &["verify"]);
    assert_eq!(
        (code, &out["first_bad_row"]),
        (Some(1), &serde_json::json!(ids[4])),
        "{out}"
    );

    // Unsealed: a row's MAC removed inside the chain.
    sql(
        &state,
        &format!("UPDATE audit_log SET mac = NULL WHERE id = {}", ids[1]),
    )
    .await;
    assert!(matches!(
        state.db.verify_audit().await,
        Err(AuditError::Unsealed { id }) if id == ids[1]
    ));

    // The export carries every row, MAC included, as JSON lines.
    let output = std::process::Command::new(BIN)
        .env_remove("ISSUER_KEK")
        .env_remove("ISSUER_AUDIT_KEY")
        .env("ISSUER_DATABASE_URL", &state.config().database_url)
        .env("ISSUER_DATA_DIR", &state.config().data_dir)
        .args(["audit", "export", "--after", &ids[4].to_string()])
        .output()
        .unwrap();
    assert!(output.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), ids.len() - 5);
    assert_eq!(lines[0]["id"], ids[5]);
    assert!(lines.iter().all(|line| line["mac"].is_string()));
}

/// Writers in parallel (each in its own transaction) still make one chain: each row chains
/// to the one committed before it.
async fn concurrent_writers_keep_one_chain(backend: Backend) {
    let state = open(config(backend).await).await;
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..4 {
        let db = state.db.clone();
        writers.spawn(async move {
            for n in 0..10 {
                let subject = format!("writer-{writer}-{n}");
                db.audit(&Entry {
                    at: 1_790_000_000,
                    actor: "test",
                    action: "test.parallel",
                    subject: &subject,
                    detail: "",
                })
                .await
                .unwrap();
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.unwrap();
    }
    let intact = state.db.verify_audit().await.unwrap();
    let rows: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'test.parallel'")
            .fetch_one(state.db.pool())
            .await
            .unwrap();
    assert_eq!(rows, 40);
    // Every row is in the chain (the issuer's own start-up rows too).
    let all: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
        .fetch_one(state.db.pool())
        .await
        .unwrap();
    assert_eq!(intact.chained, u64::try_from(all).unwrap());
}

/// A serving instance checks the chain on its own (`audit_verify_interval_secs`) and reports
/// a row edited behind its back through `issuer_audit_chain_intact` (the alert's input).
async fn a_serving_instance_reports_a_broken_chain(backend: Backend) {
    let mut config = config(backend).await;
    config.audit_verify_interval_secs = 1;
    let state = open(config).await;
    let watcher = tokio::spawn(issuer::watch_audit(state.clone()));
    let gauge = |state: &issuer::state::AppState| state.metrics.audit_chain_intact.get();
    let rows = |state: &issuer::state::AppState| state.metrics.audit_chain_rows.get();
    // The first check counts the start-up rows and finds them whole.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while rows(&state) == 0 {
        assert!(std::time::Instant::now() < deadline, "no audit check ran");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(gauge(&state), 1);
    sql(
        &state,
        "UPDATE audit_log SET detail = 'rewritten' WHERE id = (SELECT MIN(id) FROM audit_log)",
    )
    .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while gauge(&state) != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the broken chain was not reported"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    watcher.abort();
}
