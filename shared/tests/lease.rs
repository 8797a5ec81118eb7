//! The lease bound (`shared::lease` module docs) in a simulation: several isolates spend leases
//! of one client's limiter, with random request times and adversarial delays on every
//! message (asks, grants, refunds), and every window of admitted requests is held to
//! `burst + (w + ttl) / T + O`, `O` the permits outstanding at the window's start minus `ttl`.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use proptest::prelude::*;
use shared::lease::{grant, refund, Grant, Lease, LeasePolicy};
use shared::{GcraState, RatePlan, UnixTime};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// A request reaches isolate `.0`.
    Request(usize),
    /// Isolate `isolate`'s ask, sent at `asked_at`, reaches the limiter.
    Ask {
        isolate: usize,
        asked_at: u64,
        wanted: u32,
    },
    /// The limiter's answer reaches the isolate.
    Granted {
        isolate: usize,
        asked_at: u64,
        permits: u32,
        expires_at: u64,
    },
    /// A refund reaches the limiter.
    Refund { unused: u32, expires_at: u64 },
}

/// One limiter grant, for counting what is outstanding.
struct Granted {
    at: u64,
    expires_at: u64,
    permits: u32,
    /// When it was refunded, and how many (an accepted refund only).
    refunded: Option<(u64, u32)>,
}

struct Isolate {
    lease: Option<Lease>,
    asking: bool,
    waiting: usize,
}

struct Run {
    plan: RatePlan,
    policy: LeasePolicy,
    delays: Vec<u64>,
    next_delay: usize,
    /// What the isolates ask for, cycled: the bound must hold whatever they ask (the policy's
    /// own sizing, `Lease::wanted_next`, is one choice among these).
    wants: Vec<u32>,
    next_want: usize,
}

impl Run {
    /// The next adversarial delay (a message's time in flight), cycling through the list.
    fn delay(&mut self) -> u64 {
        let delay = self.delays[self.next_delay % self.delays.len()];
        self.next_delay += 1;
        delay
    }

    /// What the next ask wants, at least `least`.
    fn want(&mut self, least: u32) -> u32 {
        let want = self.wants[self.next_want % self.wants.len()];
        self.next_want += 1;
        want.max(least)
    }
}

/// Plays the requests (time in ms, isolate) and returns the admitted times and the grants.
fn simulate(run: &mut Run, requests: &[(u64, usize)], isolates: usize) -> (Vec<u64>, Vec<Granted>) {
    let mut queue = BinaryHeap::new();
    for (seq, &(at, isolate)) in requests.iter().enumerate() {
        queue.push(Reverse((at, seq, Event::Request(isolate % isolates))));
    }
    let mut seq = requests.len();
    let mut push = |queue: &mut BinaryHeap<_>, at: u64, event: Event| {
        seq += 1;
        queue.push(Reverse((at, seq, event)));
    };
    let mut state = GcraState::default();
    let mut grants: Vec<Granted> = Vec::new();
    let mut admitted = Vec::new();
    let mut isolates: Vec<Isolate> = (0..isolates)
        .map(|_| Isolate {
            lease: None,
            asking: false,
            waiting: 0,
        })
        .collect();
    while let Some(Reverse((now, _, event))) = queue.pop() {
        let at = UnixTime::from_millis(now);
        match event {
            Event::Request(index) => {
                let isolate = &mut isolates[index];
                let taken = isolate.lease.as_mut().is_some_and(|lease| lease.take(at));
                if taken {
                    admitted.push(now);
                } else {
                    isolate.waiting += 1;
                }
                let renew = isolate
                    .lease
                    .is_none_or(|lease| !taken || lease.should_renew(at));
                if renew && !isolate.asking {
                    isolate.asking = true;
                    let sized = isolate
                        .lease
                        .map_or(1, |lease| lease.wanted_next(at, &run.policy));
                    let wanted = run.want(sized.max(1 + isolate.waiting as u32));
                    let arrives = now + run.delay();
                    push(
                        &mut queue,
                        arrives,
                        Event::Ask {
                            isolate: index,
                            asked_at: now,
                            wanted,
                        },
                    );
                }
            }
            Event::Ask {
                isolate,
                asked_at,
                wanted,
            } => {
                let (granted, next) = grant(&run.plan, &run.policy, state, at, wanted);
                state = next;
                if granted.permits > 0 {
                    grants.push(Granted {
                        at: now,
                        expires_at: granted.expires_at.as_millis(),
                        permits: granted.permits,
                        refunded: None,
                    });
                }
                let arrives = now + run.delay();
                push(
                    &mut queue,
                    arrives,
                    Event::Granted {
                        isolate,
                        asked_at,
                        permits: granted.permits,
                        expires_at: granted.expires_at.as_millis(),
                    },
                );
            }
            Event::Granted {
                isolate: index,
                asked_at,
                permits,
                expires_at,
            } => {
                let as_granted = Grant {
                    permits,
                    expires_at: UnixTime::from_millis(expires_at),
                    decision: shared::rate_limit::check(&run.plan, GcraState::default(), at).0,
                };
                let mut lease =
                    Lease::new(&as_granted, UnixTime::from_millis(asked_at), &run.policy);
                let isolate = &mut isolates[index];
                isolate.asking = false;
                for _ in 0..std::mem::take(&mut isolate.waiting) {
                    // A waiting request gets a permit, or is denied (the limiter had none).
                    if lease.take(at) {
                        admitted.push(now);
                    }
                }
                if let Some(old) = isolate.lease.replace(lease) {
                    if old.unused() > 0 {
                        let arrives = now + run.delay();
                        let refund = Event::Refund {
                            unused: old.unused(),
                            expires_at: old.expires_at().as_millis(),
                        };
                        push(&mut queue, arrives, refund);
                    }
                }
            }
            Event::Refund { unused, expires_at } => {
                let before = state;
                state = refund(
                    &run.plan,
                    state,
                    at,
                    unused,
                    UnixTime::from_millis(expires_at),
                );
                if state != before || now < expires_at {
                    if let Some(granted) = grants.iter_mut().find(|g| {
                        g.expires_at == expires_at && g.refunded.is_none() && now < expires_at
                    }) {
                        granted.refunded = Some((now, unused));
                    }
                }
            }
        }
    }
    (admitted, grants)
}

/// Permits outstanding at `t`: granted at or before it, not expired, not refunded by then.
fn outstanding(grants: &[Granted], t: u64) -> u64 {
    grants
        .iter()
        .filter(|g| g.at <= t && t < g.expires_at)
        .map(|g| match g.refunded {
            Some((when, unused)) if when <= t => u64::from(g.permits - unused),
            _ => u64::from(g.permits),
        })
        .sum()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn no_window_admits_more_than_the_bound(
        limit in 1u32..40,
        burst in 1u32..20,
        ttl_ms in 50u64..2000,
        max_permits in 1u32..30,
        isolates in 1usize..6,
        delays in proptest::collection::vec(0u64..1500, 1..16),
        wants in proptest::collection::vec(0u32..40, 1..8),
        // Bursts (gaps of a few ms) and pauses (up to 3 s), spread over the isolates.
        gaps in proptest::collection::vec(
            (prop_oneof![12 => 0u64..3, 1 => 0u64..3000], prop_oneof![3 => Just(0usize), 1 => 0usize..6]),
            20..400,
        ),
    ) {
        let plan = RatePlan::new(limit, 1, burst).unwrap();
        let policy = LeasePolicy { ttl_ms, max_permits };
        let mut run = Run { plan, policy, delays, next_delay: 0, wants, next_want: 0 };
        let mut now = 0u64;
        let requests: Vec<(u64, usize)> = gaps
            .iter()
            .map(|&(gap, isolate)| {
                now += gap;
                (now, isolate)
            })
            .collect();
        let (admitted, grants) = simulate(&mut run, &requests, isolates);
        let interval_ms = 1000.0 / f64::from(limit);
        for (i, &start) in admitted.iter().enumerate() {
            let held = outstanding(&grants, start.saturating_sub(ttl_ms));
            for (j, &end) in admitted.iter().enumerate().skip(i) {
                let count = (j - i + 1) as f64;
                let w = (end - start) as f64;
                let bound = f64::from(burst) + ((w + ttl_ms as f64) / interval_ms).floor() + held as f64 + 1.0;
                prop_assert!(
                    count <= bound,
                    "{} admitted in [{}, {}] ms, bound {} (outstanding {})", count, start, end, bound, held
                );
            }
        }
    }
}

/// One isolate at a steady rate renews in the background: no request waits on the limiter
/// after the first, and the limiter is asked far less than once per request.
#[test]
fn a_steady_client_rarely_asks() {
    let plan = RatePlan::new(100, 1, 100).unwrap();
    let policy = LeasePolicy {
        ttl_ms: 1000,
        max_permits: 50,
    };
    let mut run = Run {
        plan,
        policy,
        delays: vec![5],
        next_delay: 0,
        wants: vec![0],
        next_want: 0,
    };
    let requests: Vec<(u64, usize)> = (0..2000).map(|n| (n * 20, 0)).collect();
    let (admitted, grants) = simulate(&mut run, &requests, 1);
    assert_eq!(
        admitted.len(),
        requests.len(),
        "50 a second is within 100 a second"
    );
    assert!(
        grants.len() * 10 < requests.len(),
        "{} grants for {} requests",
        grants.len(),
        requests.len()
    );
}
