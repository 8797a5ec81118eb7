//! Prints the fixture JWKS, a good token and the rules as JSON, for the JS package's smoke
//! test (`js/smoke.cjs`): the same vectors the Rust tests use.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // dev tool: failing loudly is right

#[path = "../tests/fixtures/mod.rs"]
mod fixtures;

fn main() {
    let expired = fixtures::with_claims(|c| {
        c.insert("exp".into(), serde_json::json!(fixtures::NOW_SECS - 100));
    });
    let bound = fixtures::with_claims(|c| {
        c.insert(
            "cnf".into(),
            serde_json::json!({ "jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I" }),
        );
    });
    let out = serde_json::json!({
        "jwks": fixtures::jwks_value().to_string(),
        "token": fixtures::good_token(),
        "expired": expired,
        "bound": bound,
        "issuer": fixtures::ISSUER,
        "audience": fixtures::AUDIENCE,
        "now": fixtures::NOW_SECS,
    });
    println!("{out}");
}
