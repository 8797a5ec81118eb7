//! The edge-assertion conformance vectors (`assertion-vectors.json`, shared with the JS
//! package and the Python reference verifier) against the Rust verifier. The same file runs
//! natively and in wasm (`wasm-pack test --node`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // tests may panic

use serde_json::Value;
use shared::{AssertionKey, AssertionVerifier, RequestLine, UnixTime};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const VECTORS: &str = include_str!("assertion-vectors.json");

/// What the Rust verifier says of one vector: `accept` with the identity, or `reject` with
/// the reason, in the file's shape.
fn verdict(verifier: &AssertionVerifier, vector: &Value) -> Value {
    let headers: Vec<&str> = vector["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|header| header.as_str().unwrap())
        .collect();
    let request = &vector["request"];
    let line = RequestLine {
        method: request["method"].as_str().unwrap(),
        host: request["host"].as_str().unwrap(),
        path: request["path"].as_str().unwrap(),
        query: request["query"].as_str(),
    };
    let now = UnixTime::from_millis(vector["now_ms"].as_u64().unwrap());
    match verifier.verify_values(headers, &line, now) {
        Ok(identity) => serde_json::json!({
            "verdict": "accept",
            "identity": serde_json::to_value(identity).unwrap(),
        }),
        Err(error) => serde_json::json!({ "verdict": "reject", "reason": error.reason() }),
    }
}

#[test]
fn every_vector_gets_its_verdict_and_reason() {
    let file: Value = serde_json::from_str(VECTORS).unwrap();
    let keys = file["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| {
            AssertionKey::new(
                key["id"].as_str().unwrap(),
                key["secret"].as_str().unwrap().as_bytes(),
            )
            .unwrap()
        })
        .collect();
    let verifier = AssertionVerifier::new(keys, file["max_age_ms"].as_u64().unwrap());
    let vectors = file["vectors"].as_array().unwrap();
    let wrong: Vec<String> = vectors
        .iter()
        .filter_map(|vector| {
            let got = match vector["origin_host"].as_str() {
                Some(host) => verdict(&verifier.clone().for_host(host), vector),
                None => verdict(&verifier, vector),
            };
            (got != vector["expect"]).then(|| {
                format!(
                    "{}: expected {}, got {got}",
                    vector["name"], vector["expect"]
                )
            })
        })
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Every reason an origin can give is covered.
    for reason in [
        "missing_assertion",
        "duplicate_assertion",
        "malformed_assertion",
        "unknown_assertion_key",
        "bad_assertion_signature",
        "assertion_method_mismatch",
        "assertion_path_mismatch",
        "assertion_host_mismatch",
        "assertion_query_mismatch",
        "stale_assertion",
        "expired",
    ] {
        assert!(
            vectors.iter().any(|v| v["expect"]["reason"] == reason),
            "no vector for {reason}"
        );
    }
}
