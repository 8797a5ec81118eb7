//! ES256 signing alone, the issuer's per-token floor: pure-Rust `p256` (what jwt-compact's
//! ES256 uses) against `ring` (what the issuer signs with), same key and a token-sized input,
//! side by side in one run. Run: `cargo bench -p issuer --bench signer`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: failing loudly is right

use std::hint::black_box;
use std::time::Instant;

use p256::ecdsa::signature::Signer;
use rand_core::OsRng;

fn per_op_micros(rounds: u32, mut op: impl FnMut()) -> f64 {
    for _ in 0..rounds / 10 {
        op();
    }
    let started = Instant::now();
    for _ in 0..rounds {
        op();
    }
    started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds)
}

fn main() {
    // Under `cargo test --benches` run one round of each only.
    let rounds = if std::env::args().any(|a| a == "--bench") {
        20_000
    } else {
        10
    };
    let message = vec![b'e'; 420];
    let p256_key = p256::ecdsa::SigningKey::random(&mut OsRng);
    let rng = ring::rand::SystemRandom::new();
    let public = p256_key.verifying_key().to_encoded_point(false);
    let ring_key = ring::signature::EcdsaKeyPair::from_private_key_and_public_key(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &p256_key.to_bytes(),
        public.as_bytes(),
        &rng,
    )
    .expect("same key in ring");

    let p256 = per_op_micros(rounds, || {
        let signature: p256::ecdsa::Signature = p256_key.sign(black_box(&message));
        black_box(signature);
    });
    let ring = per_op_micros(rounds, || {
        black_box(ring_key.sign(&rng, black_box(&message)).expect("sign"));
    });
    println!("ES256 sign, 420-byte input, {rounds} rounds each:");
    println!("  p256 (pure Rust)  {p256:8.1} µs");
    println!("  ring              {ring:8.1} µs");
    println!("  ratio             {:8.1}x", p256 / ring);
}
