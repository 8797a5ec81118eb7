//! `RATE_LIMIT_MODE=lease` across isolates: three edge Workers in one workerd process, each
//! its own isolate, spend leases of one client's budget from one real rate-limit Durable
//! Object (the first Worker's class; the others bind it by service name), in front of a real
//! issuer and origin. Concurrent clients hammer all three; the test holds the admitted
//! requests to the bound of `shared::lease` and counts the object's calls.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use edgeward_tests::*;

/// The route's plan: 20 a second, burst 20 (one every 50 ms).
const PLAN: &str = "20/1s;burst=20";
const BURST: f64 = 20.0;
const INTERVAL_MS: f64 = 50.0;
const LEASE_TTL_MS: u64 = 1_000;
const LEASE_MAX_PERMITS: u64 = 10;
const ISOLATES: usize = 3;

/// One request's outcome, timed from the test's start.
struct Outcome {
    sent_ms: f64,
    answered_ms: f64,
    status: u16,
    rate_limit: Option<String>,
    retry_after: Option<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_from_one_object_hold_a_client_to_the_bound_across_isolates() {
    let dir = temp_dir("edge_leases");
    let (issuer, issuer_port) = issuer(&dir).await;
    let (_seen, origin_port) = origin(ASSERTION_KEY_ID, ASSERTION_SECRET).await;
    let client = Client::create(&dir, "lease-client", &[]);
    let token = client.token(issuer_port).await;

    let routes = serde_json::json!({
        "route": [{ "id": "orders", "path": "/orders/**", "rate_plan": PLAN }],
    });
    let vars = EdgeSettings::new(issuer_port, origin_port)
        .set("ASSERTION_SECRET", ASSERTION_SECRET)
        .set("ROUTES", routes.to_string())
        .set("RATE_LIMIT_MODE", "lease")
        .set("RATE_LIMIT_SCOPE", "global")
        .set("LEASE_TTL_MS", LEASE_TTL_MS.to_string())
        .set("LEASE_MAX_PERMITS", LEASE_MAX_PERMITS.to_string())
        .set("BENCH_LIMITER_CALLS_PATH", "/.bench/limiter-calls");
    let ports: Vec<u16> = (0..ISOLATES).map(|_| free_port()).collect();
    let edges = workerd_isolates(&dir, &isolates_config(&ports, &vars, "edgeward-lease-test"));
    for port in &ports {
        let health = format!("http://127.0.0.1:{port}/.edge/health");
        wait_ready(&health, Duration::from_secs(30), &edges).await;
    }

    // Six clients per isolate for three seconds, all with the one token.
    let start = Instant::now();
    let run = Duration::from_secs(3);
    let mut tasks = Vec::new();
    for task in 0..ISOLATES * 6 {
        let url = format!("http://127.0.0.1:{}/orders/{task}", ports[task % ISOLATES]);
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let http = http();
            while start.elapsed() < run {
                let sent_ms = start.elapsed().as_secs_f64() * 1000.0;
                let reply = Reply::of(http.get(&url).bearer_auth(&token)).await;
                outcomes.push(Outcome {
                    sent_ms,
                    answered_ms: start.elapsed().as_secs_f64() * 1000.0,
                    status: reply.status,
                    rate_limit: reply.header("ratelimit").map(str::to_owned),
                    retry_after: reply.header("retry-after").map(str::to_owned),
                });
            }
            outcomes
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.extend(task.await.unwrap());
    }

    let admitted: Vec<&Outcome> = outcomes.iter().filter(|o| o.status == 200).collect();
    let refused = outcomes.iter().filter(|o| o.status == 429).count();
    assert_eq!(
        admitted.len() + refused,
        outcomes.len(),
        "only 200s and 429s"
    );
    // Every admission fell between the first send and the last answer: a window of `w`
    // with no lease before it (a new object), so the bound's `O` is 0.
    let first = outcomes.iter().map(|o| o.sent_ms).fold(f64::MAX, f64::min);
    let last = outcomes.iter().map(|o| o.answered_ms).fold(0.0, f64::max);
    let window = last - first;
    let plan_alone = BURST + window / INTERVAL_MS;
    let bound = BURST + (window + LEASE_TTL_MS as f64) / INTERVAL_MS;
    let calls: usize = {
        let url = format!("http://127.0.0.1:{}/.bench/limiter-calls", ports[0]);
        get(&url).await.body.trim().parse().unwrap()
    };
    println!(
        "{{\"requests\":{},\"admitted\":{},\"window_ms\":{window:.0},\"plan_alone\":{plan_alone:.1},\
         \"bound\":{bound:.1},\"object_calls\":{calls},\"calls_per_1000\":{:.1}}}",
        outcomes.len(),
        admitted.len(),
        calls as f64 * 1000.0 / outcomes.len() as f64,
    );
    assert!(
        (admitted.len() as f64) <= bound,
        "{} admitted, over the bound {bound:.1} (the plan alone: {plan_alone:.1})",
        admitted.len()
    );
    assert!(
        admitted.len() as f64 >= BURST,
        "at least the burst: {}",
        admitted.len()
    );
    // Every answer carries its limit: the headers on a 200, Retry-After on a 429.
    for outcome in &outcomes {
        match outcome.status {
            200 => assert!(outcome.rate_limit.is_some()),
            _ => assert!(outcome.retry_after.is_some()),
        }
    }
    // Each isolate logged its leases.
    let log = edges.log();
    assert!(log.contains("\"event\":\"lease_granted\""), "{log}");
    assert!(log.contains("\"event\":\"lease_renewed\""), "{log}");
    drop(issuer);
}
