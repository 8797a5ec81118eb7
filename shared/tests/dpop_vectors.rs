//! The DPoP proof vectors (`dpop-vectors.json`) against `shared::dpop`, with the pure-Rust
//! signature backend. The same file runs natively and in wasm (`wasm-pack test --node`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // tests may panic

use serde_json::{json, Value};
use shared::dpop::{self, HttpUri, Jkt, ProofRequest, ProofRules};
use shared::{P256Verifier, TokenKey, UnixTime};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const VECTORS: &str = include_str!("dpop-vectors.json");

/// What the checker says of one vector, in the file's shape.
fn verdict(rules: &ProofRules, vector: &Value) -> Value {
    let request = &vector["request"];
    let uri = HttpUri::parse(request["uri"].as_str().unwrap()).unwrap();
    let bound_to = request["bound_to"]
        .as_str()
        .map(|jkt| Jkt::parse(jkt).unwrap());
    let access_token = request["access_token"].as_str().map(TokenKey::of);
    let request = ProofRequest {
        method: request["method"].as_str().unwrap(),
        uri: &uri,
        access_token: access_token.as_ref(),
        bound_to: bound_to.as_ref(),
    };
    let now = UnixTime::from_secs(vector["now"].as_u64().unwrap());
    let proof = vector["proof"].as_str().unwrap();
    match dpop::check(proof, &request, rules, now)
        .and_then(|check| check.verify_with(&P256Verifier))
    {
        Ok(proof) => json!({
            "verdict": "accept",
            "jkt": proof.jkt().as_str(),
            "jti": proof.jti(),
            "remember_until": proof.remember_until(),
        }),
        Err(error) => json!({ "verdict": "reject", "reason": error.reason() }),
    }
}

#[test]
fn every_vector_gets_its_verdict_and_reason() {
    let file: Value = serde_json::from_str(VECTORS).unwrap();
    let rules = ProofRules {
        max_age_secs: file["max_age_secs"].as_u64().unwrap(),
        leeway_secs: file["leeway_secs"].as_u64().unwrap(),
    };
    let vectors = file["vectors"].as_array().unwrap();
    let wrong: Vec<String> = vectors
        .iter()
        .filter_map(|vector| {
            let got = verdict(&rules, vector);
            (got != vector["expect"]).then(|| {
                format!(
                    "{}: expected {}, got {got}",
                    vector["name"], vector["expect"]
                )
            })
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} vectors failed:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert!(
        vectors.len() >= 40,
        "the file holds {} vectors",
        vectors.len()
    );
}

#[test]
fn what_a_replay_store_keeps_does_not_depend_on_the_servers_max_age() {
    // Servers whose max age differs (a canary, a rollout) share one store: a proof's entry
    // must be the same whoever wrote it, or one could miss the other's.
    let file: Value = serde_json::from_str(VECTORS).unwrap();
    let leeway_secs = file["leeway_secs"].as_u64().unwrap();
    let mut compared = 0;
    for vector in file["vectors"].as_array().unwrap() {
        let expected = &vector["expect"]["remember_until"];
        if expected.is_null() {
            continue;
        }
        for max_age_secs in [5, 60, 120, dpop::MAX_PROOF_AGE_SECS] {
            let rules = ProofRules {
                max_age_secs,
                leeway_secs,
            };
            let got = verdict(&rules, vector);
            if got["verdict"] == "accept" {
                assert_eq!(&got["remember_until"], expected, "{}", vector["name"]);
                compared += 1;
            }
        }
    }
    assert!(compared >= 20, "{compared} comparisons");
}

#[test]
fn the_token_hash_is_rfc_9449s() {
    // RFC 9449 §7.1, Figure 12: the token of Figure 11 and its `ath`.
    assert_eq!(
        dpop::token_hash("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"),
        "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
    );
}
