//! Tokens for `edge-validator/benches/run`: `bench_tokens jwks` prints the fixture JWKS;
//! `bench_tokens tokens N` prints N distinct access tokens (fixture key 1, valid for the next
//! hour from now, one `jti` each), one per line, so each benchmark request can carry a token
//! no cache has seen; `bench_tokens routes` prints the 200-route table of the route benchmark
//! with one route more, for the benchmark's own `GET /bench` (the `edge-hit-routes` row).
//! A dev tool: it reads the clock, which the core never does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // dev tool: failing loudly is right

#[path = "../tests/fixtures/mod.rs"]
mod fixtures;
#[path = "../benches/support/routes.rs"]
mod routes;

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

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
        _ => {
            eprintln!("usage: bench_tokens jwks | bench_tokens tokens N | bench_tokens routes");
            std::process::exit(2);
        }
    }
}
