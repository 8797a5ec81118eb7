//! The token-endpoint limits in Redis decide as the memory backend does: the same plans and
//! the same requests at the same instants give the same decisions (the GCRA core in Rust
//! against its Lua port in Redis, on the machine's real Redis).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::net::IpAddr;
use std::time::Duration;

use issuer::limits::TokenLimits;
use shared::{Decision, RatePlan, UnixTime};

fn plans() -> (RatePlan, RatePlan, RatePlan) {
    (
        "5/1s;burst=3".parse().unwrap(),
        "7/60s;burst=4".parse().unwrap(),
        "3/1s;burst=2".parse().unwrap(),
    )
}

#[tokio::test]
async fn redis_decides_as_memory_does_request_for_request() {
    same_decisions(plans()).await;
    // An address budget with room for a failed authentication's extra cost: the charge that
    // is spent only if it fits, spent.
    let (_, per_client, feed) = plans();
    same_decisions(("20/1s;burst=20".parse().unwrap(), per_client, feed)).await;
}

async fn same_decisions((per_address, per_client, feed): (RatePlan, RatePlan, RatePlan)) {
    let url = redis_url();
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
        .as_nanos()
        + u128::from(per_address.burst());
    let client = format!("limits-test-{run}");
    let address: IpAddr = format!("2001:db8:{:x}:{:x}::1", (run >> 16) & 0xffff, run & 0xffff)
        .parse()
        .unwrap();
    let start = UnixTime::from_millis(u64::try_from(run / 1_000_000).unwrap());
    // Bursts, waits shorter and longer than the emission interval, token requests granted
    // and refused (failed authentications among them), reads of the feed.
    let steps_ms = [
        0, 0, 0, 0, 10, 150, 199, 200, 201, 1_000, 0, 0, 3_000, 1, 1, 1,
    ];
    let mut at = start.as_millis();
    for (n, step) in steps_ms.iter().enumerate() {
        at += step;
        let now = UnixTime::from_millis(at);
        let elapsed = at - start.as_millis();
        assert_eq!(
            memory.known_denial(address, now),
            redis.known_denial(address, now),
            "known denial, request {n} at +{elapsed} ms"
        );
        let (from_memory, from_redis) = match n % 5 {
            4 => (
                memory.refused(address, now, true).await,
                redis.refused(address, now, true).await,
            ),
            3 => (
                memory.refused(address, now, false).await,
                redis.refused(address, now, false).await,
            ),
            _ => (
                memory.authenticated(address, Some(&client), now).await,
                redis.authenticated(address, Some(&client), now).await,
            ),
        };
        assert_eq!(
            from_memory, from_redis,
            "token request {n} at +{elapsed} ms"
        );
        assert_eq!(
            memory.authenticated(address, None, now).await,
            redis.authenticated(address, None, now).await,
            "revocation or introspection, request {n}"
        );
        // Polls without a feed token and with one (a budget of its own), alternately.
        let with_token = n % 2 == 0;
        assert_eq!(
            memory.feed(address, with_token, now).await,
            redis.feed(address, with_token, now).await,
            "feed, request {n} (with a token: {with_token})"
        );
    }
    assert_eq!(fallbacks.get(), 0, "every decision came from Redis");
}

/// The test Redis: `TEST_REDIS_URL`, else this machine's.
fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// `ms` into a test's clock.
fn at(ms: u64) -> UnixTime {
    UnixTime::from_millis(1_000_000_000 + ms)
}

/// A token request's address charge is made before its client's: a client over its
/// budget still spends its address's; a failed authentication spends one request and then
/// its extra cost while the budget lasts, so every guess costs at least one; a denial of
/// the address is known until its retry-after, and no longer.
#[tokio::test]
async fn a_token_request_is_one_decision_of_its_address_then_its_client() {
    let (per_address, per_client, feed) = plans();
    let limits = TokenLimits::new(per_address, per_client, feed);
    let address: IpAddr = "192.0.2.7".parse().unwrap();
    // 5/1s, burst 3: three at once, then one per 200 ms.
    for n in 0..3 {
        assert!(
            limits
                .authenticated(address, Some("c"), at(0))
                .await
                .allowed,
            "{n}"
        );
    }
    assert_eq!(limits.known_denial(address, at(0)), None);
    let denied = limits.authenticated(address, Some("c"), at(0)).await;
    assert!(!denied.allowed);
    assert_eq!(denied.retry_after_ms, 200);
    assert_eq!(
        limits.known_denial(address, at(0)),
        Some(1),
        "rounded up to a second"
    );
    assert_eq!(limits.known_denial(address, at(199)), Some(1));
    assert_eq!(
        limits.known_denial(address, at(200)),
        None,
        "no longer than its retry-after"
    );
    // A failed authentication at 200 ms: its one request fits, its extra cost does not (and
    // is not spent): the next request 200 ms later fits again.
    assert!(limits.refused(address, at(200), true).await.allowed);
    assert!(limits.refused(address, at(400), false).await.allowed);
    // The client's budget (7/60s, burst 4): one grant left after three; the address's
    // charge stays when the client's is denied.
    let other: IpAddr = "192.0.2.8".parse().unwrap();
    assert!(
        limits
            .authenticated(other, Some("c"), at(400))
            .await
            .allowed
    );
    let client_denied = limits.authenticated(other, Some("c"), at(400)).await;
    assert!(!client_denied.allowed);
    assert_eq!(client_denied.limit, 4, "the client's plan decided");
    assert_eq!(
        limits.known_denial(other, at(400)),
        None,
        "the address was not denied"
    );
    assert!(limits.refused(other, at(400), false).await.allowed);
    assert!(
        !limits.refused(other, at(400), false).await.allowed,
        "3 spent by then"
    );
}

/// A known denial is forgotten when the clock steps back past it or the address plan is
/// reloaded: it holds only on the state it was read from.
#[tokio::test]
async fn a_known_denial_does_not_outlive_its_clock_or_its_plan() {
    let (per_address, per_client, feed) = plans();
    let limits = TokenLimits::new(per_address, per_client, feed);
    let address: IpAddr = "192.0.2.9".parse().unwrap();
    let deny = || async {
        for _ in 0..4 {
            limits.authenticated(address, None, at(1_000)).await;
        }
    };
    deny().await;
    assert_eq!(limits.known_denial(address, at(1_000)), Some(1));
    assert_eq!(
        limits.known_denial(address, at(999)),
        None,
        "the clock stepped back"
    );
    assert_eq!(
        limits.known_denial(address, at(1_000)),
        None,
        "and it is gone"
    );
    deny().await;
    assert_eq!(limits.known_denial(address, at(1_000)), Some(1));
    limits.set_plans("50/1s;burst=3".parse().unwrap(), per_client, feed);
    assert_eq!(
        limits.known_denial(address, at(1_000)),
        None,
        "a reloaded plan"
    );
}

/// Decisions made at once go to Redis together (a call carries those that arrived while the
/// last was out), and each is still made exactly once: of many requests at one instant on one
/// key, as many are allowed as in memory. The calls mix plans: the address and client tables
/// share one plan (one plan of the call, two keys), the feed has its own, and failed
/// authentications carry a charge that is not enforced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_decisions_share_calls_and_each_is_made_once() {
    let url = redis_url();
    let shared: RatePlan = "100/60s;burst=50".parse().unwrap();
    let feed: RatePlan = "100/60s;burst=30".parse().unwrap();
    let fallbacks = prometheus_client::metrics::counter::Counter::default();
    let redis = std::sync::Arc::new(TokenLimits::new(shared, shared, feed).in_redis(
        redis::Client::open(url.as_str()).unwrap(),
        Duration::from_secs(2),
        fallbacks.clone(),
    ));
    let memory = std::sync::Arc::new(TokenLimits::new(shared, shared, feed));
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    // Three /64s of this run: token requests, feed reads, failed authentications.
    let address = move |n: u128| -> IpAddr {
        format!("2001:db8:c{n}:{:x}::1", run & 0xffff)
            .parse()
            .unwrap()
    };
    let client = format!("limits-burst-{run}");
    let now = UnixTime::from_millis(u64::try_from(run / 1_000_000).unwrap());
    // Connected first: decisions that arrive while the store connects are made from memory.
    redis.feed(address(9), false, now).await;
    let mut allowed_by = Vec::new();
    let started = std::time::Instant::now();
    for limits in [redis, memory] {
        let mut decisions = tokio::task::JoinSet::new();
        for n in 0..300 {
            let (limits, client) = (std::sync::Arc::clone(&limits), client.clone());
            decisions.spawn(async move {
                let decision = match n % 3 {
                    0 => limits.authenticated(address(0), Some(&client), now).await,
                    1 => limits.feed(address(1), false, now).await,
                    _ => limits.refused(address(2), now, true).await,
                };
                (n % 3, decision.allowed)
            });
        }
        let mut allowed = [0; 3];
        while let Some(decision) = decisions.join_next().await {
            let (kind, was_allowed) = decision.unwrap();
            allowed[kind] += usize::from(was_allowed);
        }
        allowed_by.push(allowed);
    }
    assert_eq!(allowed_by[0], allowed_by[1], "Redis, then memory");
    assert_eq!(
        allowed_by[0][0], 50,
        "the token requests: the shared plan's burst"
    );
    assert_eq!(fallbacks.get(), 0, "every decision came from Redis");

    // The client's key was charged many times in shared calls, and holds what its last
    // charge left: the plan's 50 grants at 600 ms apart from `now` (stored as the exact
    // double), expiring with them (not with the first charge, one interval on).
    let key = format!("edgeward:issuer:limit:client:{shared}:{client}");
    let mut connection = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let (stored, expires_in_ms): (f64, i64) = redis::pipe()
        .get(&key)
        .pttl(&key)
        .query_async(&mut connection)
        .await
        .unwrap();
    let now_micros = now.as_millis() * 1_000;
    assert_eq!(stored, (now_micros + 50 * 600_000) as f64, "the last state");
    // Set with 30,001 ms to live at most `started.elapsed()` ago.
    let since_set_at_most = i64::try_from(started.elapsed().as_millis()).unwrap() + 2;
    assert!(
        (30_001 - since_set_at_most..=30_001).contains(&expires_in_ms),
        "the last charge's expiry: {expires_in_ms} ms to live"
    );
}

/// A Redis far away (a long round trip) takes more than one call's decisions per round trip:
/// a burst of many calls' worth all comes from Redis, each decision within its timeout.
/// Holding a call back until the one out answered would take one round trip per batch of
/// 64: about 2 s for this burst, past the decisions' 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_at_a_far_redis_goes_out_in_calls_side_by_side() {
    let url = redis_url();
    let near = redis::Client::open(url.as_str()).unwrap();
    let delay = Duration::from_millis(20);
    let Some(far) = far_redis(near.get_connection_info(), delay).await else {
        eprintln!("skipped: the test Redis is not on TCP");
        return;
    };
    let plan: RatePlan = "1000000/1s;burst=1000000".parse().unwrap();
    let fallbacks = prometheus_client::metrics::counter::Counter::default();
    let limits = std::sync::Arc::new(TokenLimits::new(plan, plan, plan).in_redis(
        redis::Client::open(far).unwrap(),
        Duration::from_millis(500),
        fallbacks.clone(),
    ));
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let now = UnixTime::from_millis(u64::try_from(run / 1_000_000).unwrap());
    let address = move |n: u128| -> IpAddr {
        format!("2001:db8:fa{n:02x}:{:x}::1", run & 0xffff)
            .parse()
            .unwrap()
    };
    // Connected first: decisions that arrive while the store connects are made from memory.
    // The proxy holds it at least a round trip (else the test proves nothing).
    let started = std::time::Instant::now();
    limits.feed(address(255), false, now).await;
    assert!(started.elapsed() >= delay * 2, "the proxy delays");
    assert_eq!(fallbacks.get(), 0, "connected");
    let mut decisions = tokio::task::JoinSet::new();
    for n in 0..3_000 {
        let limits = std::sync::Arc::clone(&limits);
        decisions.spawn(async move { limits.authenticated(address(n % 64), None, now).await });
    }
    while let Some(decision) = decisions.join_next().await {
        decision.unwrap();
    }
    assert_eq!(fallbacks.get(), 0, "every decision came from Redis");
}

/// A proxy to the Redis of `near` that holds every chunk, each way, for `delay` (chunks
/// behind it are not held longer), and its address; none for a Redis not on TCP.
async fn far_redis(near: &redis::ConnectionInfo, delay: Duration) -> Option<redis::ConnectionInfo> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

    async fn held(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
        let (chunks, mut due) = tokio::sync::mpsc::unbounded_channel::<(_, Vec<u8>)>();
        tokio::spawn(async move {
            while let Some((at, chunk)) = due.recv().await {
                tokio::time::sleep_until(at).await;
                if to.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        });
        let mut buffer = vec![0; 64 * 1024];
        while let Ok(read @ 1..) = from.read(&mut buffer).await {
            let at = tokio::time::Instant::now() + delay;
            if chunks.send((at, buffer[..read].to_vec())).is_err() {
                return;
            }
        }
    }

    let redis::ConnectionAddr::Tcp(host, port) = near.addr.clone() else {
        return None;
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut far = near.clone();
    far.addr =
        redis::ConnectionAddr::Tcp("127.0.0.1".into(), listener.local_addr().unwrap().port());
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            // A Redis that does not answer: the client's connection closes, and the test's
            // decisions fall back (its assertion says so).
            let Ok(server) = tokio::net::TcpStream::connect((host.as_str(), port)).await else {
                continue;
            };
            // Calls side by side are written at once, not held for an earlier one's ACK.
            for socket in [&client, &server] {
                socket.set_nodelay(true).unwrap();
            }
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(held(client_read, server_write, delay));
            tokio::spawn(held(server_read, client_write, delay));
        }
    });
    Some(far)
}

/// Two instances' limits on one Redis, leasing under `policy`, each with its count of the
/// decisions it made from a lease; connected (the first decision of a store that is still
/// connecting is made from memory).
async fn leasing_pair(
    plan: RatePlan,
    policy: shared::lease::LeasePolicy,
) -> [(TokenLimits, prometheus_client::metrics::counter::Counter); 2] {
    let url = redis_url();
    let pair = [(); 2].map(|()| {
        let leased = prometheus_client::metrics::counter::Counter::default();
        let limits = TokenLimits::new(plan, plan, plan)
            .in_redis(
                redis::Client::open(url.as_str()).unwrap(),
                Duration::from_secs(2),
                prometheus_client::metrics::counter::Counter::default(),
            )
            .leasing(policy, leased.clone());
        (limits, leased)
    });
    for (limits, _) in &pair {
        limits
            .feed("192.0.2.250".parse().unwrap(), false, at(0))
            .await;
    }
    pair
}

/// A key and a time of this run's own (the keys in Redis live on between runs).
fn run_keys(tag: &str) -> (IpAddr, String, u64) {
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let address = format!("2001:db8:{:x}:{:x}::1", (run >> 16) & 0xffff, run & 0xffff)
        .parse()
        .unwrap();
    let start = u64::try_from(run / 1_000_000).unwrap();
    (address, format!("{tag}-{run}"), start)
}

/// Two leasing instances, A and B, on one Redis, under a plan of 64 at once and then one an
/// hour (nothing comes back within a test; a lease holds at most an eighth of it, 8), with
/// leases of `ttl_ms`; a client and an address of this run's own; and A's token requests at
/// each millisecond from 0 to `through_ms`, all allowed. A's leases then go 1 at 0 ms, 2 at
/// 1 ms, and, each asked for once the one before is half spent, 4 at 2 ms (spent from 4 ms)
/// and 8 at 5 ms (spent from 8 ms).
struct Ramp {
    a: TokenLimits,
    leased_a: prometheus_client::metrics::counter::Counter,
    b: TokenLimits,
    leased_b: prometheus_client::metrics::counter::Counter,
    address: IpAddr,
    client: String,
    start: u64,
}

impl Ramp {
    async fn new(tag: &str, ttl_ms: u64, through_ms: u64) -> Self {
        let plan: RatePlan = "1/3600s;burst=64".parse().unwrap();
        let policy = shared::lease::LeasePolicy {
            ttl_ms,
            max_permits: 16,
        };
        let [(a, leased_a), (b, leased_b)] = leasing_pair(plan, policy).await;
        let (address, client, start) = run_keys(tag);
        let ramp = Self {
            a,
            leased_a,
            b,
            leased_b,
            address,
            client,
            start,
        };
        for ms in 0..=through_ms {
            assert!(ramp.token(&ramp.a, ms).await.allowed, "{ms}");
        }
        ramp
    }

    /// `ms` into the test's clock.
    fn at(&self, ms: u64) -> UnixTime {
        UnixTime::from_millis(self.start + ms)
    }

    /// A token request of the client from the address, at `ms`.
    async fn token(&self, limits: &TokenLimits, ms: u64) -> Decision {
        limits
            .authenticated(self.address, Some(&self.client), self.at(ms))
            .await
    }
}

/// A lease's permits are spent in its instance up to its ttl, counted from the decision that
/// asked, and not a millisecond after: then the instance asks Redis, which has nothing left
/// once the other instance spent the rest of the burst (the permits left in the lease never
/// come back). Both instances together admit at most the burst: leases are charged up front.
#[tokio::test]
async fn a_lease_is_spent_only_within_its_ttl_and_the_burst_holds_across_instances() {
    // A key first seen asks for its own charge alone; seen again at once, for a lease, each
    // at most twice the last (1 + 2 + 4 + 8 charged by 8 ms). A minute's leases: on the
    // monotonic clock, which ends them too, they outlive the test on any machine.
    let ramp = Ramp::new("lease-ttl", 60_000, 7).await;
    let (a, b) = (&ramp.a, &ramp.b);
    assert_eq!(ramp.leased_a.get(), 4, "at 3, 4, 6 and 7 ms");
    let last = ramp.token(a, 8).await;
    assert_eq!(ramp.leased_a.get(), 5);
    assert_eq!(last.remaining, 6, "8 granted at 5 ms, 2 spent");
    // The other instance spends everything else: 64 less A's 15.
    let mut admitted_b = 0;
    for ms in 9..300 {
        if ramp.token(b, ms).await.allowed {
            admitted_b += 1;
        }
    }
    assert_eq!(admitted_b, 64 - 15);
    assert!(ramp.leased_b.get() > 0, "B spent leases too");
    // A's lease, asked at 5 ms, lives until 60,005 ms (not included). Due for renewal (half
    // its life gone): the decision asks Redis, which refuses, and the lease decides.
    assert!(ramp.token(a, 60_004).await.allowed, "still within its ttl");
    assert_eq!(ramp.leased_a.get(), 6);
    let after = ramp.token(a, 60_005).await;
    assert!(
        !after.allowed,
        "ended: Redis decides, and the burst is spent"
    );
    assert_eq!(ramp.leased_a.get(), 6);
    assert!(after.retry_after_ms > 0);
}

/// Under a steady hammer from two instances, leases cut the calls, and the plan holds with
/// leases' bound: in any window of `w`, at most `burst + (w + ttl) / T` admitted (`T` the
/// interval between requests); and no fewer than the plan's own `burst + w / T`, less what
/// each instance's last lease may hold unspent.
#[tokio::test]
async fn two_leasing_instances_admit_the_plan_within_the_lease_bound() {
    // T = 100 ms, burst 80: leases of at most 10. A lease is spent within milliseconds of
    // the decisions' clock; once the burst is spent, each holds one permit, spent by the
    // decision that asked: a slow machine (leases ending early on the monotonic clock) only
    // sees fewer decisions leased.
    let plan: RatePlan = "600/60s;burst=80".parse().unwrap();
    let policy = shared::lease::LeasePolicy {
        ttl_ms: 500,
        max_permits: 64,
    };
    let [(a, leased_a), (b, leased_b)] = leasing_pair(plan, policy).await;
    let (address, client, start) = run_keys("lease-bound");
    let mut admitted = Vec::new();
    let span_ms = 3_000;
    for ms in 0..span_ms {
        let limits = if ms % 2 == 0 { &a } else { &b };
        let now = UnixTime::from_millis(start + ms);
        if limits
            .authenticated(address, Some(&client), now)
            .await
            .allowed
        {
            admitted.push(ms);
        }
    }
    let leased = leased_a.get() + leased_b.get();
    assert!(
        leased * 2 > admitted.len() as u64,
        "most decisions came from leases: {leased} of {}",
        admitted.len()
    );
    for w in [1, 100, 250, 500, 1_000, span_ms] {
        let most = admitted
            .iter()
            .map(|&from| {
                admitted
                    .iter()
                    .filter(|&&ms| (from..from + w).contains(&ms))
                    .count()
            })
            .max()
            .unwrap_or_default() as u64;
        let bound = 80 + (w + policy.ttl_ms).div_ceil(100);
        assert!(
            most <= bound,
            "{most} admitted within {w} ms, bound {bound}"
        );
    }
    let plan_alone = 80 + span_ms / 100;
    let total = admitted.len() as u64;
    assert!(
        total + 2 * 10 >= plan_alone,
        "{total} admitted, the plan alone {plan_alone}"
    );
}

/// A reloaded plan starts every key afresh, leases included: permits charged under the old
/// plan are not spent under the new one.
#[tokio::test]
async fn a_reloaded_plan_spends_no_lease_of_the_old_one() {
    // At 3 ms the lease of 2 is spent, and the one of 4 waits.
    let ramp = Ramp::new("lease-reload", 60_000, 3).await;
    assert_eq!(ramp.leased_a.get(), 1);
    let stricter: RatePlan = "1/3600s;burst=1".parse().unwrap();
    ramp.a.set_plans(stricter, stricter, stricter);
    assert!(ramp.token(&ramp.a, 4).await.allowed);
    assert!(
        !ramp.token(&ramp.a, 5).await.allowed,
        "the new plan's burst of 1, not the old lease's permits"
    );
    assert_eq!(
        ramp.leased_a.get(),
        1,
        "no decision from the old plan's lease"
    );
}

/// Decisions reach the limits a little out of order (each is stamped when its request came
/// in, before its client was authenticated): one stamped just before its key's lease was
/// asked for goes to Redis alone, and the lease is kept, not thrown away for a new one.
#[tokio::test]
async fn a_decision_stamped_before_the_lease_keeps_the_lease() {
    // At 3 ms the lease of 2 is spent, and the one of 4, asked at 2 ms, waits.
    let ramp = Ramp::new("lease-order", 60_000, 3).await;
    assert_eq!(ramp.leased_a.get(), 1);
    let late = ramp.token(&ramp.a, 1).await;
    assert!(late.allowed);
    assert_eq!(ramp.leased_a.get(), 1, "decided in Redis");
    assert_eq!(late.remaining, 64 - 1 - 2 - 4 - 1, "its charge alone");
    let next = ramp.token(&ramp.a, 4).await;
    assert_eq!(ramp.leased_a.get(), 2, "from the lease asked at 2 ms");
    assert_eq!(next.remaining, 2, "4 granted, 2 spent");
}

/// A lease ends on the monotonic clock too, `ttl` after its ask left: a decision stamped
/// inside the lease's life but made later than that (its request waited, or the wall clock
/// stepped back) goes to Redis.
#[tokio::test]
async fn a_lease_ends_on_the_monotonic_clock_too() {
    // The lease of 2, asked at 1 ms, has 1 permit left.
    let ramp = Ramp::new("lease-monotonic", 50, 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let later = ramp.token(&ramp.a, 2).await;
    assert!(later.allowed);
    assert_eq!(
        ramp.leased_a.get(),
        0,
        "decided in Redis: the lease had ended"
    );
    assert_eq!(later.remaining, 64 - 1 - 2 - 4, "with a new lease of 4");
}

/// A decision whose lease is due for renewal asks Redis; refused there on its client (whose
/// budget another instance spent) but charged on its address, it is decided by the client's
/// lease alone: the address pays once, in Redis, not again from its lease.
#[tokio::test]
async fn a_refused_renewal_spends_only_the_leases_redis_did_not_charge() {
    // At 4 ms the lease of 4 has 2 left, on the address and on the client alike (7 of each
    // charged).
    let ramp = Ramp::new("lease-renewal", 60_000, 4).await;
    let (other_address, _, _) = run_keys("lease-renewal-other");
    assert_ne!(other_address, ramp.address);
    // The other instance spends the client's budget from another address: 64 less 7.
    let mut admitted_b = 0;
    for ms in 10..300 {
        let decision = ramp
            .b
            .authenticated(other_address, Some(&ramp.client), ramp.at(ms))
            .await;
        admitted_b += usize::from(decision.allowed);
    }
    assert_eq!(admitted_b, 64 - 7);
    // Half spent: due for renewal. Redis charges the address (and grants it a new lease) and
    // refuses the client; the client's lease decides.
    let leased = ramp.leased_a.get();
    assert!(ramp.token(&ramp.a, 301).await.allowed);
    assert_eq!(ramp.leased_a.get(), leased + 1);
    // The address's lease of 4 still holds 2, less this decision's 1: it was not spent twice.
    let address_only = ramp.a.authenticated(ramp.address, None, ramp.at(302)).await;
    assert!(address_only.allowed);
    assert_eq!(address_only.remaining, 1);
}
