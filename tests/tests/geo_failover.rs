//! The region-failover drill: real gdnsd (deploy/geo-dns/, rendered onto loopback) answers
//! `issuer.edgeward.test` by client subnet, with HTTP monitors on each region's `/readyz`; two
//! issuer processes on 127.0.0.2 and 127.0.0.3 are the regions, sharing one PostgreSQL
//! database and KEK (so one JWKS). A client in the eu network resolves the name (EDNS client
//! subnet), gets tokens and calls the edge throughout; the eu region is killed, then brought
//! back. Printed: failover and recovery times, failed requests, and whether the edge's JWKS
//! URL list moved past the dead region.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgeward_tests::*;

/// One KEK for both regions: they must unseal the same keys.
const KEK: &str = "6b656b2d666f722d7468652d6661696c6f7665722d6472696c6c2d3031323334";
const EU: &str = "127.0.0.2";
const US: &str = "127.0.0.3";
/// A client in the eu network (the map sends 10.1.0.0/16 to eu first).
const EU_CLIENT_SUBNET: &str = "10.1.0.0/24";

/// Renders deploy/geo-dns into `dir` and starts gdnsd on `dns_port`.
fn gdnsd(dir: &Path, dns_port: u16, issuer_port: u16) -> Running {
    let source = root().join("deploy/geo-dns");
    std::fs::create_dir_all(dir.join("zones")).unwrap();
    for sub in ["run", "state"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let config = std::fs::read_to_string(source.join("config.template"))
        .unwrap()
        .replace("@LISTEN@", &format!("127.0.0.1:{dns_port}"))
        .replace("@RUN_DIR@", dir.join("run").to_str().unwrap())
        .replace("@STATE_DIR@", dir.join("state").to_str().unwrap())
        .replace("@ISSUER_PORT@", &issuer_port.to_string())
        .replace("@EU_ADDRESS@", EU)
        .replace("@US_ADDRESS@", US);
    std::fs::write(dir.join("config"), config).unwrap();
    std::fs::copy(
        source.join("zones/edgeward.test"),
        dir.join("zones/edgeward.test"),
    )
    .unwrap();
    let mut command = Command::new("gdnsd");
    command.args(["-c", dir.to_str().unwrap(), "start"]);
    Running::spawn(command, dir.join("gdnsd.log"))
}

/// The issuer address gdnsd gives a client in `subnet`, if it answers.
fn resolve(dns_port: u16, subnet: &str) -> Option<String> {
    let output = Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &dns_port.to_string(),
            "+short",
            "+tries=1",
            "+time=1",
            &format!("+subnet={subnet}"),
            "issuer.edgeward.test",
        ])
        .output()
        .ok()?;
    String::from_utf8(output.stdout)
        .ok()?
        .lines()
        .next()
        .map(str::to_owned)
}

async fn region(dir: &Path, address: &str, port: u16, database: &str) -> Running {
    let listen = format!("{address}:{port}");
    let (running, _) = issuer_with(
        dir,
        &[
            ("ISSUER_LISTEN", listen.as_str()),
            ("ISSUER_DATABASE_URL", database),
            ("ISSUER_KEK", KEK),
            ("ISSUER_JWKS_MAX_AGE_SECS", "10"),
        ],
    )
    .await;
    running
}

/// Polls until `resolve` gives `want`; returns the seconds it took.
fn seconds_until(dns_port: u16, want: &str, limit: Duration) -> f64 {
    let started = Instant::now();
    while resolve(dns_port, EU_CLIENT_SUBNET).as_deref() != Some(want) {
        assert!(started.elapsed() < limit, "gdnsd never answered {want}");
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_a_region_moves_its_clients_and_costs_the_edge_nothing() {
    let dir = temp_dir("geo_failover");
    let (_seen, origin_port) = origin(ASSERTION_KEY_ID, ASSERTION_SECRET).await;
    let issuer_port = free_port();
    let dns_port = free_port();
    let database = tokio::task::block_in_place(|| postgres_database("geo", None));
    let (eu_dir, us_dir) = (dir.join("eu"), dir.join("us"));
    std::fs::create_dir_all(&eu_dir).unwrap();
    std::fs::create_dir_all(&us_dir).unwrap();
    let mut eu = region(&eu_dir, EU, issuer_port, &database).await;
    let _us = region(&us_dir, US, issuer_port, &database).await;
    let client = tokio::task::block_in_place(|| {
        Client::create_with(
            &eu_dir,
            &[("ISSUER_DATABASE_URL", &database), ("ISSUER_KEK", KEK)],
            "geo",
            &[],
        )
    });
    let _dns = tokio::task::block_in_place(|| gdnsd(&dir.join("gdnsd"), dns_port, issuer_port));
    tokio::task::block_in_place(|| {
        seconds_until(dns_port, EU, Duration::from_secs(30));
        assert_eq!(
            resolve(dns_port, "10.2.0.0/24").as_deref(),
            Some(US),
            "us clients go to us"
        );
    });

    // The edge lists the regions in order (workerd resolves names with the system resolver,
    // so the drill gives it the regions' addresses; production lists the geo-DNS name first).
    let urls =
        |path: &str| format!("http://{EU}:{issuer_port}{path} http://{US}:{issuer_port}{path}");
    let vars = EdgeSettings::new(issuer_port, origin_port)
        .set("JWKS_URLS", urls("/.well-known/jwks.json"))
        .set("REVOCATION_URLS", urls("/revocations"))
        .set("FETCH_TIMEOUT_MS", "500")
        .set("DEFAULT_RATE_PLAN", "100000/60s;burst=100000");
    let (_edge, edge_port) = edge(&dir, &vars, ASSERTION_SECRET).await;
    let edge_url = format!("http://127.0.0.1:{edge_port}/geo");

    // The client loop: resolve, get a token from the answered region, call the edge.
    let outcomes: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let early_tokens: Arc<Mutex<Vec<String>>> = Arc::default();
    let worker = {
        let (outcomes, stop, early_tokens, client, edge_url) = (
            outcomes.clone(),
            stop.clone(),
            early_tokens.clone(),
            client.clone(),
            edge_url.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let resolved = tokio::task::block_in_place(|| resolve(dns_port, EU_CLIENT_SUBNET));
                let outcome = match resolved {
                    None => "dns_failed".to_owned(),
                    Some(address) => {
                        let request = http()
                            .post(format!("http://{address}:{issuer_port}/oauth2/token"))
                            .timeout(Duration::from_secs(2))
                            .basic_auth(&client.id, Some(&client.secret))
                            .form(&[("grant_type", "client_credentials")]);
                        let reply = Reply::of(request).await;
                        if reply.status == 200 {
                            let token = reply.json()["access_token"].as_str().unwrap().to_owned();
                            if address == EU {
                                early_tokens.lock().unwrap().push(token.clone());
                            }
                            let status = get_with(&edge_url, &token).await.status;
                            format!("token from {address}, edge {status}")
                        } else {
                            format!("token request to {address} failed ({})", reply.status)
                        }
                    }
                };
                *outcomes.lock().unwrap().entry(outcome).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The eu region dies.
    eu.kill_hard();
    let failover =
        tokio::task::block_in_place(|| seconds_until(dns_port, US, Duration::from_secs(60)));
    // Past the key set's max-age (10 s): the edge must refresh, its first URL is dead.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let health = get(&format!("http://127.0.0.1:{edge_port}/.edge/health"))
        .await
        .json();

    // Tokens the dead region issued still pass the edge.
    let early = early_tokens.lock().unwrap().clone();
    let mut early_statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for token in early.iter().rev().take(20) {
        let status = get_with(&edge_url, token).await.status;
        *early_statuses.entry(status).or_default() += 1;
    }

    // The eu region comes back on the same database.
    let eu_back = region(&eu_dir, EU, issuer_port, &database).await;
    let recovery =
        tokio::task::block_in_place(|| seconds_until(dns_port, EU, Duration::from_secs(60)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    worker.await.unwrap();
    drop(eu_back);

    let outcomes = outcomes.lock().unwrap().clone();
    let failed: usize = outcomes
        .iter()
        .filter(|(outcome, _)| !outcome.ends_with("edge 200"))
        .map(|(_, n)| n)
        .sum();
    let total: usize = outcomes.values().sum();
    println!(
        "geo-DNS failover drill: eu clients answered with us {failover:.2} s after eu died, \
         with eu again {recovery:.2} s after it returned; {failed} of {total} client iterations \
         failed: {outcomes:?}; eu-issued tokens at the edge after the failover: \
         {early_statuses:?}; edge key set after its refresh with eu dead: {}",
        health["jwks"]
    );
    assert!(failover < 30.0, "failover took {failover:.2} s");
    assert_eq!(
        early_statuses.keys().copied().collect::<Vec<_>>(),
        [200],
        "no token from the dead region is rejected at the edge"
    );
    assert_eq!(
        health["jwks"], "fresh",
        "the edge refreshed from the us URL: {health}"
    );
    assert!(
        outcomes
            .keys()
            .all(|outcome| !outcome.contains("edge 4") && !outcome.contains("edge 5")),
        "the edge refused no valid token: {outcomes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_on_a_read_only_replica_still_issues_tokens() {
    let dir = temp_dir("read_only_region");
    let database = tokio::task::block_in_place(|| postgres_database("read_only", None));
    let settings = [
        ("ISSUER_DATABASE_URL", database.as_str()),
        ("ISSUER_KEK", KEK),
    ];
    // The primary's region sets the database up: schema, first key, a client.
    let (client, kid) = {
        let (_primary, port) = issuer_with(&dir, &settings).await;
        let client = Client::create_with(&dir, &settings, "replica", &[]);
        let kid = kid_of(&client.token(port).await);
        (client, kid)
    };

    // The same database, read-only (as a streaming replica is): the region still starts.
    let server = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let name = database.rsplit('/').next().unwrap();
    let sql = format!("ALTER DATABASE \"{name}\" SET default_transaction_read_only = on");
    assert!(Command::new("psql")
        .args([server.as_str(), "-qc", &sql])
        .status()
        .unwrap()
        .success());
    let (replica, port) = issuer_with(&dir, &settings).await;
    let ready = get(&format!("http://127.0.0.1:{port}/readyz")).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.json()["read_only"], true, "{}", ready.body);
    // Tokens, signed with the key the primary scheduled.
    let token = client.token(port).await;
    assert_eq!(kid_of(&token), kid);
    // Writes need the primary: a clear 503, not a 500.
    let reply = client
        .revoke_at(&format!("http://127.0.0.1:{port}"), &token)
        .await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(
        reply.json()["error"],
        "temporarily_unavailable",
        "{}",
        reply.body
    );
    assert!(!replica.log().contains("panicked"), "{}", replica.log());
}
