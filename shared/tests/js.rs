//! The wasm-bindgen API as JS sees it (runs under `wasm-pack test --node -- --features js`).
#![cfg(all(target_arch = "wasm32", feature = "js"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // tests may panic

mod fixtures;

use fixtures::*;
use serde_json::json;
use shared::js::Validator;
use wasm_bindgen::JsValue;
use wasm_bindgen_test::wasm_bindgen_test as test;

/// A plain JS object, as a JS caller would pass (not a `Map`).
fn object(value: &serde_json::Value) -> JsValue {
    serde::Serialize::serialize(value, &serde_wasm_bindgen::Serializer::json_compatible()).unwrap()
}

fn options() -> JsValue {
    object(&json!({ "issuer": ISSUER, "audience": AUDIENCE, "leewaySecs": 30 }))
}

fn property(value: &JsValue, name: &str) -> JsValue {
    js_sys::Reflect::get(value, &name.into()).unwrap()
}

#[test]
fn verify_returns_the_claims() {
    let validator = Validator::new(&jwks_value().to_string(), options()).unwrap();
    let claims = validator.verify(&good_token(), NOW_SECS as f64).unwrap();
    assert_eq!(property(&claims, "sub").as_string().unwrap(), "user-42");
    assert_eq!(
        property(&claims, "scope").as_string().unwrap(),
        "read write"
    );
    assert_eq!(
        property(&claims, "exp").as_f64().unwrap(),
        (NOW_SECS + 300) as f64
    );
    assert_eq!(
        validator.key_ids(),
        vec!["fixture-1".to_owned(), "fixture-2".to_owned()]
    );
}

#[test]
fn rejection_throws_a_typed_error() {
    let validator = Validator::new(&jwks_value().to_string(), options()).unwrap();
    let expired = with_claims(|c| {
        c.insert("exp".into(), json!(NOW_SECS - 100));
    });
    let thrown = validator.verify(&expired, NOW_SECS as f64).unwrap_err();
    assert_eq!(
        property(&thrown, "name").as_string().unwrap(),
        "TokenRejected"
    );
    assert_eq!(property(&thrown, "code").as_string().unwrap(), "expired");
    assert_eq!(
        property(&thrown, "error").as_string().unwrap(),
        "invalid_token"
    );
    assert_eq!(property(&thrown, "status").as_f64().unwrap(), 401.0);
    assert!(validator.verify(&good_token(), f64::NAN).is_err());
}

#[test]
fn bad_construction_throws() {
    assert!(Validator::new("{}", options()).is_err());
    let unknown = object(&json!({ "issuer": "i", "audience": "a", "leeway": 1 }));
    assert!(Validator::new(&jwks_value().to_string(), unknown).is_err());
    assert!(Validator::new(&jwks_value().to_string(), JsValue::NULL).is_err());
}
