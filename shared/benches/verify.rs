//! Verifying one ES256 access token three ways, side by side in one run:
//!
//! - `edgeward_p256_cold`: this crate, full parse + claims + signature (pure-Rust p256);
//! - `edgeward_cache_hit`: this crate's verified-token cache (hash + lookup);
//! - `jsonwebtoken_es256`: the `jsonwebtoken` crate (RustCrypto backend), same token and rules;
//!
//! plus `edgeward_check_only` (everything but the signature) to show where the time goes.
//! After criterion's own report it prints a table of means and ratios against jsonwebtoken.
//! Run: `cargo bench -p shared --bench verify`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // dev tool: failing loudly is right

#[path = "../tests/fixtures/mod.rs"]
mod fixtures;
#[path = "support/criterion.rs"]
mod support;

use std::hint::black_box;
use std::time::{SystemTime, UNIX_EPOCH};

use criterion::Criterion;
use fixtures::*;
use serde_json::json;
use shared::{TokenCache, UnixTime};

const GROUP: &str = "verify_es256";
const CASES: [&str; 4] = [
    "jsonwebtoken_es256",
    "edgeward_p256_cold",
    "edgeward_check_only",
    "edgeward_cache_hit",
];

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct PeerClaims {
    iss: String,
    sub: String,
    aud: String,
    exp: u64,
    iat: u64,
    jti: String,
    client_id: String,
    scope: String,
}

fn main() {
    // jsonwebtoken reads the system clock, so the token is fresh for the real now.
    let now_secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let now = UnixTime::from_secs(now_secs);
    let mut claims = claims();
    claims["iat"] = json!(now_secs);
    claims["nbf"] = json!(now_secs);
    claims["exp"] = json!(now_secs + 600);
    let token = sign(&header(), &claims);
    let jwks = jwks();
    let validator = validator();
    validator
        .verify(&token, &jwks, now)
        .expect("bench token verifies");

    let jwk = public_jwk(1);
    let peer_key = jsonwebtoken::DecodingKey::from_ec_components(
        jwk["x"].as_str().unwrap_or_default(),
        jwk["y"].as_str().unwrap_or_default(),
    )
    .expect("peer key");
    let mut peer_rules = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    peer_rules.set_issuer(&[ISSUER]);
    peer_rules.set_audience(&[AUDIENCE]);
    peer_rules.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    peer_rules.leeway = 30;
    jsonwebtoken::decode::<PeerClaims>(&token, &peer_key, &peer_rules).expect("peer verifies");

    let mut cache = TokenCache::new(10_000);
    let verified = validator.verify(&token, &jwks, now).expect("verifies");
    cache.insert(&token, verified, now);

    let mut criterion = Criterion::default().configure_from_args();
    {
        let mut group = criterion.benchmark_group(GROUP);
        group.bench_function(CASES[0], |b| {
            b.iter(|| jsonwebtoken::decode::<PeerClaims>(black_box(&token), &peer_key, &peer_rules))
        });
        group.bench_function(CASES[1], |b| {
            b.iter(|| validator.verify(black_box(&token), &jwks, now))
        });
        group.bench_function(CASES[2], |b| {
            b.iter(|| {
                validator
                    .check(black_box(&token), &jwks, now)
                    .map(|check| check.key().kid().len())
            })
        });
        group.bench_function(CASES[3], |b| b.iter(|| cache.get(black_box(&token), now)));
        group.finish();
    }
    criterion.final_summary();
    print_ratios();
}

/// Reads criterion's estimates for this run and prints them against the peer.
fn print_ratios() {
    let Some(dir) = support::criterion_dir() else {
        return;
    };
    let mean = |case: &str| support::mean_ns(&dir, GROUP, case);
    let Some(peer) = mean(CASES[0]) else {
        println!(
            "(no estimates found under {}; run without --test)",
            dir.display()
        );
        return;
    };
    println!("\n{:<24} {:>14} {:>18}", "case", "mean", "vs jsonwebtoken");
    for case in CASES {
        let Some(ns) = mean(case) else { continue };
        let shown = if ns >= 1000.0 {
            format!("{:.2} µs", ns / 1000.0)
        } else {
            format!("{ns:.0} ns")
        };
        println!("{case:<24} {shown:>14} {:>17.2}x", peer / ns);
    }
    println!("(ratio = jsonwebtoken mean / case mean; above 1 is faster than jsonwebtoken)");
}
