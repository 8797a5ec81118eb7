//! The edge-to-origin assertion: signing, verification, binding, freshness, rotation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // tests may panic

mod fixtures;

use fixtures::*;
use shared::assertion::{AssertionError, AssertionKeyError};
use shared::{AssertionKey, AssertionSigner, AssertionVerifier, EdgeIdentity, UnixTime};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const SECRET_A: &[u8] = b"edge assertion secret number one";
const SECRET_B: &[u8] = b"edge assertion secret number two";

fn key(id: &str, secret: &[u8]) -> AssertionKey {
    AssertionKey::new(id, secret).unwrap()
}

fn identity() -> EdgeIdentity {
    let verified = validator().verify(&good_token(), &jwks(), now()).unwrap();
    EdgeIdentity::new(verified.claims(), "POST", "/orders/7", now())
}

fn verifier() -> AssertionVerifier {
    AssertionVerifier::new(vec![key("a", SECRET_A)], 30_000)
}

fn signed() -> String {
    AssertionSigner::new(key("a", SECRET_A)).sign(&identity())
}

/// The edge signs from the claims without copying them: the same header as from an identity.
#[test]
fn signing_claims_matches_signing_their_identity() {
    let verified = validator().verify(&good_token(), &jwks(), now()).unwrap();
    let signer = AssertionSigner::new(key("a", SECRET_A));
    let from_claims = signer.sign_claims(verified.claims(), "POST", "/orders/7", now());
    assert_eq!(from_claims, signed());
    let identity = verifier()
        .verify(Some(&from_claims), "POST", "/orders/7", now())
        .unwrap();
    assert_eq!(identity, self::identity());
}

#[test]
fn round_trip() {
    let header = signed();
    assert!(header.starts_with("v1.a."));
    let identity = verifier()
        .verify(Some(&header), "POST", "/orders/7", now())
        .unwrap();
    assert_eq!(identity.sub, "user-42");
    assert_eq!(identity.client_id, "client-7");
    assert_eq!(identity.jti, "jti-0001");
    assert!(identity.scope.contains("write"));
}

#[test]
fn bound_to_method_and_path() {
    let header = signed();
    assert_eq!(
        verifier().verify(Some(&header), "GET", "/orders/7", now()),
        Err(AssertionError::MethodMismatch)
    );
    assert_eq!(
        verifier().verify(Some(&header), "POST", "/orders/8", now()),
        Err(AssertionError::PathMismatch)
    );
}

#[test]
fn freshness() {
    let header = signed();
    let later = UnixTime::from_millis(now().as_millis() + 30_001);
    assert_eq!(
        verifier().verify(Some(&header), "POST", "/orders/7", later),
        Err(AssertionError::Stale)
    );
    let earlier = UnixTime::from_millis(now().as_millis() - 5_001);
    assert_eq!(
        verifier().verify(Some(&header), "POST", "/orders/7", earlier),
        Err(AssertionError::Stale)
    );
    let mut old_token = identity();
    old_token.exp = NOW_SECS;
    let header = AssertionSigner::new(key("a", SECRET_A)).sign(&old_token);
    assert_eq!(
        verifier().verify(Some(&header), "POST", "/orders/7", now()),
        Err(AssertionError::TokenExpired)
    );
}

#[test]
fn tampering_and_wrong_keys() {
    let header = signed();
    let parts: Vec<&str> = header.split('.').collect();
    let mut forged = identity();
    forged.sub = "admin".into();
    let forged_payload = b64(&serde_json::to_vec(&forged).unwrap());
    let swapped = format!("v1.a.{forged_payload}.{}", parts[3]);
    assert_eq!(
        verifier().verify(Some(&swapped), "POST", "/orders/7", now()),
        Err(AssertionError::BadSignature)
    );

    let other_secret = AssertionSigner::new(key("a", SECRET_B)).sign(&identity());
    assert_eq!(
        verifier().verify(Some(&other_secret), "POST", "/orders/7", now()),
        Err(AssertionError::BadSignature)
    );

    let unknown = AssertionSigner::new(key("b", SECRET_B)).sign(&identity());
    assert_eq!(
        verifier().verify(Some(&unknown), "POST", "/orders/7", now()),
        Err(AssertionError::UnknownKey)
    );
}

#[test]
fn rotation_accepts_old_and_new_ids() {
    let both = AssertionVerifier::new(vec![key("a", SECRET_A), key("b", SECRET_B)], 30_000);
    for signer in [
        AssertionSigner::new(key("a", SECRET_A)),
        AssertionSigner::new(key("b", SECRET_B)),
    ] {
        both.verify(Some(&signer.sign(&identity())), "POST", "/orders/7", now())
            .unwrap();
    }
}

#[test]
fn malformed_headers() {
    let v = verifier();
    assert_eq!(
        v.verify(None, "POST", "/", now()),
        Err(AssertionError::Missing)
    );
    let header = signed();
    let long = "a".repeat(9000);
    for bad in [
        "",
        "v1",
        "v1.a.b",
        "v2.a.b.c",
        "v1.a.b.c.d",
        long.as_str(),
        &header.replace("v1.", "v2."),
    ] {
        let err = v.verify(Some(bad), "POST", "/orders/7", now()).unwrap_err();
        assert!(
            matches!(err, AssertionError::Malformed | AssertionError::UnknownKey),
            "{err:?}"
        );
    }
    // A valid MAC over a payload that is not JSON is still malformed.
    let mac_only = {
        use hmac::{Hmac, Mac};
        let signed = format!("v1.a.{}", b64(b"not json"));
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET_A).unwrap();
        mac.update(signed.as_bytes());
        format!("{signed}.{}", b64(&mac.finalize().into_bytes()))
    };
    assert_eq!(
        v.verify(Some(&mac_only), "POST", "/orders/7", now()),
        Err(AssertionError::Malformed)
    );
}

#[test]
fn keys_are_checked() {
    assert_eq!(
        AssertionKey::new("a", b"short").unwrap_err(),
        AssertionKeyError::ShortSecret
    );
    for id in ["", "a.b", "a b", &"k".repeat(65)] {
        assert_eq!(
            AssertionKey::new(id, SECRET_A).unwrap_err(),
            AssertionKeyError::KeyId
        );
    }
    assert!(!format!("{:?}", key("a", SECRET_A)).contains("secret number"));
}
