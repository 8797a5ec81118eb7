//! The token-endpoint limits in Redis decide as the memory backend does: the same plans and
//! the same requests at the same instants give the same decisions (the GCRA core in Rust
//! against its Lua port in Redis, on the machine's real Redis).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::net::IpAddr;
use std::time::Duration;

use issuer::limits::TokenLimits;
use shared::{RatePlan, UnixTime};

fn plans() -> (RatePlan, RatePlan, RatePlan) {
    (
        "5/1s;burst=3".parse().unwrap(),
        "7/60s;burst=4".parse().unwrap(),
        "3/1s;burst=2".parse().unwrap(),
    )
}

#[tokio::test]
async fn redis_decides_as_memory_does_request_for_request() {
    let url = std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let (per_address, per_client, feed) = plans();
    let memory = TokenLimits::new(per_address, per_client, feed);
    let fallbacks = prometheus_client::metrics::counter::Counter::default();
    let redis = TokenLimits::new(per_address, per_client, feed).in_redis(
        redis::Client::open(url.as_str()).unwrap(),
        Duration::from_secs(2),
        fallbacks.clone(),
    );
    // Keys no other run shares: a client id and an IPv6 /64 from this run's clock.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let client = format!("limits-test-{run}");
    let address: IpAddr = format!("2001:db8:{:x}:{:x}::1", (run >> 16) & 0xffff, run & 0xffff)
        .parse()
        .unwrap();
    let start = UnixTime::from_millis(u64::try_from(run / 1_000_000).unwrap());
    // Bursts, waits shorter and longer than the emission interval, failed authentications.
    let steps_ms = [
        0, 0, 0, 0, 10, 150, 199, 200, 201, 1_000, 0, 0, 3_000, 1, 1, 1,
    ];
    let mut at = start.as_millis();
    for (n, step) in steps_ms.iter().enumerate() {
        at += step;
        let now = UnixTime::from_millis(at);
        let failed = n % 5 == 4;
        assert_eq!(
            memory.address(address, now, failed).await,
            redis.address(address, now, failed).await,
            "address, request {n} at +{} ms",
            at - start.as_millis()
        );
        assert_eq!(
            memory.client(&client, now).await,
            redis.client(&client, now).await,
            "client, request {n}"
        );
    }
    assert_eq!(fallbacks.get(), 0, "every decision came from Redis");
}
