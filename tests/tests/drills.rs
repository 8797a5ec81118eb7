//! Journeys under load and faults, with the real processes: a key rotation while fresh tokens
//! stream through the edge, the issuer SIGKILLed under load and restarted on the same
//! database, and PostgreSQL cut off and restored under a running issuer. Each prints what it
//! measured. Loads are bounded in count and time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgeward_tests::*;

fn edge_vars(issuer_port: u16, origin_port: u16) -> EdgeSettings {
    EdgeSettings::new(issuer_port, origin_port)
        .set("FETCH_TIMEOUT_MS", "1000")
        .set("DEFAULT_RATE_PLAN", "100000/60s;burst=100000")
}

/// Statuses seen, by code.
type Tally = Arc<Mutex<BTreeMap<u16, usize>>>;

fn count(tally: &Tally, status: u16) {
    *tally.lock().unwrap().entry(status).or_default() += 1;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_under_load_rejects_no_valid_request() {
    let dir = temp_dir("drill_rotation");
    let (_seen, origin_port) = origin(ASSERTION_KEY_ID, ASSERTION_SECRET).await;
    // A 10 s JWKS max-age: the new key is published 20 s (twice that) before it signs.
    // The token endpoint's own limits are raised: this load is one client on one address.
    let (_issuer, issuer_port) = issuer_with(
        &dir,
        &[
            ("ISSUER_JWKS_MAX_AGE_SECS", "10"),
            ("ISSUER_TOKEN_RATE_PER_CLIENT", "100000/60s;burst=100000"),
            ("ISSUER_TOKEN_RATE_PER_ADDRESS", "100000/60s;burst=100000"),
        ],
    )
    .await;
    let client = Client::create(&dir, "rotation", &[]);
    let vars = edge_vars(issuer_port, origin_port);
    let (_edge, edge_port) = edge(&dir, &vars, ASSERTION_SECRET).await;
    let url = format!("http://127.0.0.1:{edge_port}/rotation");

    let kids: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let tally: Tally = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (client, url, kids, tally, stop) = (
                client.clone(),
                url.clone(),
                kids.clone(),
                tally.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    // A fresh token for every request: each is verified, none is cached.
                    let token = client.token(issuer_port).await;
                    let status = get_with(&url, &token).await.status;
                    count(&tally, status);
                    *kids.lock().unwrap().entry(kid_of(&token)).or_default() += 1;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The CLI schedules with its own configuration: the same max-age as the server's.
    let rotated = tokio::task::block_in_place(|| {
        issuer_cli_with(
            &dir,
            &[("ISSUER_JWKS_MAX_AGE_SECS", "10")],
            &["keys", "rotate"],
        )
    });
    let new_kid = rotated["kid"].as_str().unwrap().to_owned();
    // Until a few seconds after the new key starts signing (20 s, plus the issuer's 5 s key
    // refresh), bounded at 40 s.
    let deadline = Instant::now() + Duration::from_secs(40);
    while kids.lock().unwrap().get(&new_kid).copied().unwrap_or(0) < 50 {
        assert!(
            Instant::now() < deadline,
            "the new key never signed: {kids:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await.unwrap();
    }
    let tally = tally.lock().unwrap().clone();
    println!(
        "key rotation under load: statuses {tally:?}, tokens by kid {:?}",
        kids.lock().unwrap()
    );
    assert_eq!(
        tally.keys().copied().collect::<Vec<_>>(),
        [200],
        "every valid request passed: {tally:?}"
    );
    assert!(
        kids.lock().unwrap().len() >= 2,
        "tokens from both keys went through"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_keeps_validating_when_the_issuer_is_killed_and_the_restart_loses_nothing() {
    let dir = temp_dir("drill_kill");
    let (_seen, origin_port) = origin(ASSERTION_KEY_ID, ASSERTION_SECRET).await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let settings = [("ISSUER_LISTEN", listen.as_str())];
    let (mut issuer, issuer_port) = issuer_with(&dir, &settings).await;
    let clients: Vec<Client> = (0..3)
        .map(|n| Client::create(&dir, &format!("kill-{n}"), &[]))
        .collect();
    let vars = edge_vars(issuer_port, origin_port);
    let (_edge, edge_port) = edge(&dir, &vars, ASSERTION_SECRET).await;
    let url = format!("http://127.0.0.1:{edge_port}/kill");
    let issuer_url = format!("http://127.0.0.1:{issuer_port}");

    // Before the crash: tokens for the load (each new to the edge), one revoked token, and
    // what a restart must keep.
    let mut tokens = Vec::new();
    for n in 0..150 {
        tokens.push(clients[n % 3].token(issuer_port).await);
    }
    assert_eq!(get_with(&url, &tokens[0]).await.status, 200);
    let revoked = clients[0].token(issuer_port).await;
    let reply = clients[0].revoke_at(&issuer_url, &revoked).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let jwks_before = get(&format!("{issuer_url}/.well-known/jwks.json"))
        .await
        .json();

    // Load through the edge; the issuer dies (SIGKILL) a third of the way in.
    let tally: Tally = Arc::default();
    let started = Instant::now();
    for (n, token) in tokens.iter().enumerate().skip(1) {
        if n == 50 {
            issuer.kill_hard();
        }
        count(&tally, get_with(&url, token).await.status);
    }
    let tally = tally.lock().unwrap().clone();
    println!(
        "issuer SIGKILLed under load: edge statuses {tally:?} over {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        tally.keys().copied().collect::<Vec<_>>(),
        [200],
        "{tally:?}"
    );
    assert_eq!(
        get(&format!("{issuer_url}/readyz")).await.status,
        0,
        "the issuer is really down"
    );

    // Restart on the same database and port: same keys, clients and revocations.
    let (_issuer, again) = issuer_with(&dir, &settings).await;
    assert_eq!(again, issuer_port);
    let jwks_after = get(&format!("{issuer_url}/.well-known/jwks.json"))
        .await
        .json();
    assert_eq!(jwks_after, jwks_before, "the same published keys");
    let listed = issuer_cli(&dir, &["--json", "client", "list"]);
    for client in &clients {
        assert!(
            listed
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["client_id"] == client.id.as_str()),
            "client {} kept",
            client.id
        );
    }
    let resource_server = Client::create(&dir, "kill-api", &["--resource-server"]);
    let request = http()
        .post(format!("{issuer_url}/oauth2/introspect"))
        .basic_auth(&resource_server.id, Some(&resource_server.secret))
        .form(&[("token", &revoked)]);
    let introspected = Reply::of(request).await.json();
    assert_eq!(
        introspected["active"], false,
        "the revocation survived: {introspected}"
    );
    for client in &clients {
        let token = client.token(issuer_port).await;
        assert_eq!(get_with(&url, &token).await.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cut_off_and_back_turns_readiness_and_the_token_endpoint_off_and_on() {
    let dir = temp_dir("drill_postgres");
    let server = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let upstream = server
        .rsplit_once('@')
        .and_then(|(_, rest)| rest.split('/').next())
        .unwrap()
        .parse()
        .unwrap();
    let mut proxy = TcpProxy::start(upstream).await;
    let database = tokio::task::block_in_place(|| postgres_database("drill", Some(proxy.port)));
    let settings = [("ISSUER_DATABASE_URL", database.as_str())];
    let (issuer, issuer_port) = issuer_with(&dir, &settings).await;
    let pg_client = tokio::task::block_in_place(|| Client::create_with(&dir, &settings, "pg", &[]));
    let readyz = format!("http://127.0.0.1:{issuer_port}/readyz");
    let ready = async || get(&readyz).await.status;
    assert_eq!(ready().await, 200);
    let _ = pg_client.token(issuer_port).await;

    proxy.cut();
    let cut = Instant::now();
    let not_ready_after = loop {
        if ready().await != 200 {
            break cut.elapsed();
        }
        assert!(
            cut.elapsed() < Duration::from_secs(30),
            "/readyz stayed 200"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let refused = pg_client.request_token(issuer_port).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(
        refused.json()["error"],
        "temporarily_unavailable",
        "{}",
        refused.body
    );

    proxy.restore().await;
    let restored = Instant::now();
    let ready_after = loop {
        if ready().await == 200 {
            break restored.elapsed();
        }
        assert!(
            restored.elapsed() < Duration::from_secs(60),
            "/readyz never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = pg_client.token(issuer_port).await;
    println!(
        "PostgreSQL cut: /readyz false after {:.2} s, token endpoint 503; restored: ready after {:.2} s",
        not_ready_after.as_secs_f64(),
        ready_after.as_secs_f64()
    );
    assert!(!issuer.log().contains("panicked"), "{}", issuer.log());
}
