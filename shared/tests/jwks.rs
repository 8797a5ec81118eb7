//! Key-set vectors: what is kept, what is skipped, what fails the set. Native and wasm.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // tests may panic

mod fixtures;

use fixtures::*;
use serde_json::{json, Value};
use shared::jwks::{JwksError, JwksLimits};
use shared::Jwks;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

fn parse(value: &Value) -> Result<Jwks, JwksError> {
    Jwks::parse(&value.to_string())
}

fn set(keys: Vec<Value>) -> Value {
    json!({ "keys": keys })
}

#[test]
fn keeps_p256_signing_keys_and_skips_the_rest() {
    let jwks = jwks();
    let kids: Vec<&str> = jwks.keys().iter().map(|k| k.kid()).collect();
    assert_eq!(kids, ["fixture-1", "fixture-2"]);
    assert_eq!(jwks.skipped(), 3);
    assert!(jwks.find("fixture-2").is_some());
    assert!(jwks.find("rsa-1").is_none());
    assert!(jwks.find("enc-1").is_none());
}

#[test]
fn skips_foreign_uses_algs_ops_and_kidless_keys() {
    let mut sign_only = public_jwk(3);
    sign_only["key_ops"] = json!(["sign"]);
    let mut verify_ops = public_jwk(4);
    verify_ops["key_ops"] = json!(["verify"]);
    let mut es384 = public_jwk(5);
    es384["alg"] = json!("ES384");
    let mut no_kid = public_jwk(6);
    no_kid.as_object_mut().unwrap().remove("kid");
    let mut bare = public_jwk(7);
    bare.as_object_mut().unwrap().remove("use");
    bare.as_object_mut().unwrap().remove("alg");
    let jwks = parse(&set(vec![sign_only, verify_ops, es384, no_kid, bare])).unwrap();
    let kids: Vec<&str> = jwks.keys().iter().map(|k| k.kid()).collect();
    assert_eq!(kids, ["fixture-4", "fixture-7"]);
    assert_eq!(jwks.skipped(), 3);
}

#[test]
fn empty_set_is_valid_but_empty() {
    assert!(parse(&json!({ "keys": [] })).unwrap().is_empty());
}

#[test]
fn duplicate_kids_fail_the_set() {
    let err = parse(&set(vec![public_jwk(1), public_jwk(1)])).unwrap_err();
    assert!(matches!(err, JwksError::DuplicateKid { ref kid } if kid == "fixture-1"));
    // Also across key types: lookups by kid must never be ambiguous.
    let rsa = json!({ "kty": "RSA", "kid": "fixture-1", "n": "AQAB", "e": "AQAB" });
    assert!(matches!(
        parse(&set(vec![public_jwk(1), rsa])).unwrap_err(),
        JwksError::DuplicateKid { .. }
    ));
}

#[test]
fn points_off_the_curve_fail_the_set() {
    let mut key = public_jwk(1);
    let mut y = base64ct_decode(key["y"].as_str().unwrap());
    y[31] ^= 1;
    key["y"] = json!(b64(&y));
    assert!(matches!(
        parse(&set(vec![key])).unwrap_err(),
        JwksError::PointNotOnCurve { .. }
    ));
    // A coordinate at or above the field prime is not a field element.
    let mut key = public_jwk(1);
    key["x"] = json!(b64(&[0xFF; 32]));
    assert!(matches!(
        parse(&set(vec![key])).unwrap_err(),
        JwksError::PointNotOnCurve { .. }
    ));
    // All zeros: not on P-256.
    let mut key = public_jwk(1);
    key["x"] = json!(b64(&[0; 32]));
    key["y"] = json!(b64(&[0; 32]));
    assert!(matches!(
        parse(&set(vec![key])).unwrap_err(),
        JwksError::PointNotOnCurve { .. }
    ));
}

#[test]
fn bad_coordinates_fail_the_set() {
    let x = public_jwk(1)["x"].as_str().unwrap().to_owned();
    let cases = [
        json!(b64(&[1; 31])),   // too short (leading zero trimmed)
        json!(b64(&[1; 33])),   // too long
        json!(format!("{x}=")), // padded
        json!(x.replacen(|c: char| c.is_ascii_alphabetic(), "+", 1)), // standard alphabet
        json!(non_canonical(&x)), // non-zero unused bits
        json!(42),
        json!(null),
    ];
    for bad in cases {
        let mut key = public_jwk(1);
        key["x"] = bad.clone();
        let err = parse(&set(vec![key])).unwrap_err();
        assert!(
            matches!(
                err,
                JwksError::InvalidCoordinate {
                    coordinate: "x",
                    ..
                }
            ),
            "{bad}: {err:?}"
        );
    }
    let mut key = public_jwk(1);
    key.as_object_mut().unwrap().remove("y");
    assert!(matches!(
        parse(&set(vec![key])).unwrap_err(),
        JwksError::InvalidCoordinate {
            coordinate: "y",
            ..
        }
    ));
}

#[test]
fn private_material_fails_the_set() {
    let mut key = public_jwk(1);
    key["d"] = json!(b64(&[9; 32]));
    assert!(matches!(
        parse(&set(vec![key.clone()])).unwrap_err(),
        JwksError::PrivateKeyMaterial { .. }
    ));
    // Without its id as well: skipped as unselectable otherwise, but a leak all the same.
    key.as_object_mut().unwrap().remove("kid");
    assert!(matches!(
        parse(&set(vec![key, public_jwk(2)])).unwrap_err(),
        JwksError::PrivateKeyMaterial { .. }
    ));
}

#[test]
fn bad_kids_fail_the_set() {
    for kid in [json!(""), json!(5), json!("k".repeat(257))] {
        let mut key = public_jwk(1);
        key["kid"] = kid;
        assert!(matches!(
            parse(&set(vec![key])).unwrap_err(),
            JwksError::InvalidKid { index: 0 }
        ));
    }
}

#[test]
fn size_and_count_caps() {
    let limits = JwksLimits {
        max_bytes: 100,
        max_keys: 2,
    };
    let big = jwks_value().to_string();
    assert!(matches!(
        Jwks::parse_with_limits(&big, &limits).unwrap_err(),
        JwksError::TooLarge { max: 100, .. }
    ));
    let limits = JwksLimits {
        max_bytes: 1 << 20,
        max_keys: 2,
    };
    assert!(matches!(
        Jwks::parse_with_limits(&big, &limits).unwrap_err(),
        JwksError::TooManyKeys { count: 5, max: 2 }
    ));
    let huge = format!("{{\"keys\":[],\"pad\":\"{}\"}}", "a".repeat(70_000));
    assert!(matches!(
        Jwks::parse(&huge).unwrap_err(),
        JwksError::TooLarge { .. }
    ));
}

#[test]
fn malformed_documents() {
    for doc in [
        "",
        "[]",
        "{}",
        "{\"keys\":{}}",
        "{\"keys\":[1]}",
        // A key is an object: not an array read by position, and each member once.
        "{\"keys\":[[\"EC\",\"P-256\"]]}",
        "{\"keys\":[{\"kty\":\"EC\",\"kty\":\"EC\"}]}",
        "[[]]",
        "{\"keys\":[]} x",
        "nul",
    ] {
        assert!(
            matches!(Jwks::parse(doc).unwrap_err(), JwksError::Malformed(_)),
            "{doc}"
        );
    }
}

#[test]
fn publishing_round_trips() {
    let jwks = jwks();
    let published = jwks.to_json();
    let reparsed = Jwks::parse(&published).unwrap();
    assert_eq!(reparsed, jwks);
    assert_eq!(reparsed.skipped(), 0);
    let first: Value = serde_json::from_str::<Value>(&published).unwrap()["keys"][0].clone();
    assert_eq!(first, public_jwk(1));
}

#[test]
fn keys_from_sec1_points_and_uncompressed_form() {
    let point = signing_key(1).verifying_key().to_encoded_point(true);
    let key = shared::Jwk::from_sec1_bytes("k", point.as_bytes()).unwrap();
    assert_eq!(key.x(), jwks().find("fixture-1").unwrap().x());
    let raw = key.uncompressed_point();
    assert_eq!(raw[0], 4);
    assert_eq!(&raw[1..33], key.x());
    assert!(shared::Jwk::from_sec1_bytes("k", &[4, 1, 2]).is_err());
    let dup = vec![key.clone(), key];
    assert!(matches!(
        Jwks::from_keys(dup).unwrap_err(),
        JwksError::DuplicateKid { .. }
    ));
}

fn base64ct_decode(text: &str) -> Vec<u8> {
    <base64ct::Base64UrlUnpadded as base64ct::Encoding>::decode_vec(text).unwrap()
}
