//! Tokens for `edge-validator/benches/run`: `bench_tokens jwks` prints the fixture JWKS;
//! `bench_tokens tokens N` prints N distinct access tokens (fixture key 1, valid for the next
//! hour from now, one `jti` each), one per line, so each benchmark request can carry a token
//! no cache has seen; `bench_tokens routes` prints the 200-route table of the route benchmark
//! with one route more, for the benchmark's own `GET /bench` (the `edge-hit-routes` row);
//! `bench_tokens dpop-token` prints a token bound to the benchmark's DPoP key, and
//! `bench_tokens proofs N URL TOKEN [NONCE_SECRET]` N proofs of that key for `GET URL` with
//! `TOKEN`, issued now, one `jti` each (the `edge-fresh-dpop` row), each with the nonce an
//! edge keyed by `NONCE_SECRET` hands out now, at its default window (`edge-fresh-dpop-nonce`).
//! A dev tool: it reads the clock, which the core never does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // dev tool: failing loudly is right

#[path = "../tests/fixtures/mod.rs"]
mod fixtures;
#[path = "../benches/support/routes.rs"]
mod routes;

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// The benchmark client's DPoP key (fixture key 9), and its public half.
fn dpop_key() -> (p256::ecdsa::SigningKey, shared::Jwk) {
    let signing = fixtures::signing_key(9);
    let point = signing.verifying_key().to_encoded_point(false);
    let public = shared::Jwk::from_sec1_bytes("bench-dpop", point.as_bytes()).unwrap();
    (signing, public)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("jwks") => println!("{}", fixtures::jwks_value()),
        Some("routes") => {
            let mut table = routes::table_200();
            // The fixture token has `read write`: the bench request passes a scope check.
            table.push(serde_json::json!({
                "id": "bench", "path": "/bench", "methods": ["GET"], "scopes_all": ["read"]
            }));
            println!("{}", serde_json::json!({ "route": table }));
        }
        Some("tokens") => {
            let count: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(1000);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for n in 0..count {
                let mut claims = fixtures::claims();
                claims["iat"] = (now - 5).into();
                claims["nbf"] = (now - 5).into();
                claims["exp"] = (now + 3000).into();
                claims["jti"] = format!("bench-{n}").into();
                // The plan comes from the edge's default (set high), not a claim.
                claims.as_object_mut().unwrap().remove("rate_plan");
                writeln!(out, "{}", fixtures::sign(&fixtures::header(), &claims)).unwrap();
            }
        }
        Some("dpop-token") => {
            let jkt = shared::Jkt::of(&dpop_key().1);
            let now = now_secs();
            let mut claims = fixtures::claims();
            claims["iat"] = (now - 5).into();
            claims["nbf"] = (now - 5).into();
            claims["exp"] = (now + 3000).into();
            claims["cnf"] = serde_json::json!({ "jkt": jkt.as_str() });
            claims.as_object_mut().unwrap().remove("rate_plan");
            println!("{}", fixtures::sign(&fixtures::header(), &claims));
        }
        Some("proofs") => {
            let (count, url, token, secret) = match &args[1..] {
                [count, url, token] => (count, url, token, None),
                [count, url, token, secret] => (count, url, token, Some(secret)),
                _ => {
                    eprintln!("usage: bench_tokens proofs N URL TOKEN [NONCE_SECRET]");
                    std::process::exit(2);
                }
            };
            let count: usize = count.parse().unwrap();
            let (signing, public) = dpop_key();
            let header = serde_json::json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": {
                "kty": "EC", "crv": "P-256",
                "x": fixtures::b64(public.x()), "y": fixtures::b64(public.y()) } });
            let header = fixtures::b64(header.to_string().as_bytes());
            let (now, ath) = (now_secs(), shared::dpop::token_hash(token));
            // At the edge's default window (DPOP_NONCE_LIFETIME_SECS unset).
            let nonce = secret.map(|secret| {
                let nonces = shared::dpop::Nonces::from_edge_secret(secret.as_bytes()).unwrap();
                let lifetime = shared::dpop::DEFAULT_NONCE_LIFETIME_SECS;
                nonces.issue(shared::UnixTime::from_secs(now), lifetime)
            });
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for n in 0..count {
                let mut claims = serde_json::json!({
                    "jti": format!("bench-{now}-{n}"), "htm": "GET", "htu": url, "iat": now, "ath": ath,
                });
                if let Some(nonce) = &nonce {
                    claims["nonce"] = nonce.as_str().into();
                }
                let input = format!("{header}.{}", fixtures::b64(claims.to_string().as_bytes()));
                let signature: p256::ecdsa::Signature =
                    p256::ecdsa::signature::Signer::sign(&signing, input.as_bytes());
                writeln!(out, "{input}.{}", fixtures::b64(&signature.to_bytes())).unwrap();
            }
        }
        _ => {
            eprintln!(
                "usage: bench_tokens jwks | tokens N | routes | dpop-token | proofs N URL TOKEN [NONCE_SECRET]"
            );
            std::process::exit(2);
        }
    }
}
