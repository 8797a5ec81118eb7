//! The edge-to-origin assertion: signing, verification, binding to the whole request line,
//! freshness and the edge's leeway, rotation, and `v1` during a rollout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // tests may panic

mod fixtures;

use fixtures::*;
use shared::assertion::{AssertionError, AssertionKeyError, DEFAULT_MAX_AGE_MS};
use shared::{
    AssertionKey, AssertionSigner, AssertionVerifier, EdgeIdentity, RequestLine, UnixTime,
};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const SECRET_A: &[u8] = b"edge assertion secret number one";
const SECRET_B: &[u8] = b"edge assertion secret number two";

/// The request the edge forwarded.
const LINE: RequestLine<'static> = RequestLine {
    method: "POST",
    host: "orders.internal:8443",
    path: "/orders/7",
    query: Some("expand=items&limit=5"),
};

fn key(id: &str, secret: &[u8]) -> AssertionKey {
    AssertionKey::new(id, secret).unwrap()
}

fn identity() -> EdgeIdentity {
    let verified = validator().verify(&good_token(), &jwks(), now()).unwrap();
    EdgeIdentity::new(verified.claims(), &LINE, now())
}

fn verifier() -> AssertionVerifier {
    AssertionVerifier::new(vec![key("a", SECRET_A)], DEFAULT_MAX_AGE_MS)
}

fn signed() -> String {
    AssertionSigner::new(key("a", SECRET_A)).sign(&identity())
}

fn verify(
    header: &str,
    line: &RequestLine<'_>,
    at: UnixTime,
) -> Result<EdgeIdentity, AssertionError> {
    verifier().verify(Some(header), line, at)
}

/// The edge signs from the claims without copying them: the same header as from an identity.
#[test]
fn signing_claims_matches_signing_their_identity() {
    let verified = validator().verify(&good_token(), &jwks(), now()).unwrap();
    let signer = AssertionSigner::new(key("a", SECRET_A));
    let from_claims = signer.sign_claims(verified.claims(), &LINE, "", now());
    assert_eq!(from_claims, signed());
    assert_eq!(verify(&from_claims, &LINE, now()).unwrap(), identity());
    // With the route that let the request in.
    let from_claims = signer.sign_claims(verified.claims(), &LINE, "orders-write", now());
    let routed = identity().with_route("orders-write");
    assert_eq!(from_claims, signer.sign(&routed));
    assert_eq!(verify(&from_claims, &LINE, now()).unwrap(), routed);
}

#[test]
fn round_trip() {
    let header = signed();
    assert!(header.starts_with("v2.a."));
    let identity = verify(&header, &LINE, now()).unwrap();
    assert_eq!(identity.sub, "user-42");
    assert_eq!(identity.client_id, "client-7");
    assert_eq!(identity.jti, "jti-0001");
    assert_eq!(identity.host, "orders.internal:8443");
    assert!(identity.scope.contains("write"));
}

#[test]
fn bound_to_the_whole_request_line() {
    let header = signed();
    let cases = [
        (
            RequestLine {
                method: "GET",
                ..LINE
            },
            AssertionError::MethodMismatch,
        ),
        (
            RequestLine {
                path: "/orders/8",
                ..LINE
            },
            AssertionError::PathMismatch,
        ),
        (
            RequestLine {
                host: "admin.internal:8443",
                ..LINE
            },
            AssertionError::HostMismatch,
        ),
        (
            RequestLine {
                query: Some("expand=items&limit=500"),
                ..LINE
            },
            AssertionError::QueryMismatch,
        ),
        (
            RequestLine {
                query: Some("limit=5&expand=items"),
                ..LINE
            },
            AssertionError::QueryMismatch,
        ),
        (
            RequestLine {
                query: None,
                ..LINE
            },
            AssertionError::QueryMismatch,
        ),
    ];
    for (line, expected) in cases {
        assert_eq!(verify(&header, &line, now()), Err(expected), "{line:?}");
    }
    // The host compares without regard to case; no query and an empty one are the same.
    verify(
        &header,
        &RequestLine {
            host: "Orders.Internal:8443",
            ..LINE
        },
        now(),
    )
    .unwrap();
    let bare = RequestLine {
        query: None,
        ..LINE
    };
    let signer = AssertionSigner::new(key("a", SECRET_A));
    let claims = validator().verify(&good_token(), &jwks(), now()).unwrap();
    let header = signer.sign_claims(claims.claims(), &bare, "", now());
    verify(
        &header,
        &RequestLine {
            query: Some(""),
            ..LINE
        },
        now(),
    )
    .unwrap();
}

#[test]
fn no_query_hashes_as_the_empty_string() {
    use sha2::Digest;
    let empty = b64(&sha2::Sha256::digest(b""));
    assert_eq!(shared::assertion::query_hash(None), empty);
    assert_eq!(shared::assertion::query_hash(Some("")), empty);
    assert_ne!(shared::assertion::query_hash(Some("a=1")), empty);
}

#[test]
fn freshness() {
    let header = signed();
    let later = UnixTime::from_millis(now().as_millis() + DEFAULT_MAX_AGE_MS + 1);
    assert_eq!(verify(&header, &LINE, later), Err(AssertionError::Stale));
    let earlier = UnixTime::from_millis(now().as_millis() - 5_001);
    assert_eq!(verify(&header, &LINE, earlier), Err(AssertionError::Stale));
}

/// The edge accepts a token until `exp` plus its leeway, and the origin must not refuse
/// what the edge forwarded for time: an assertion signed one second before the most lenient
/// edge would stop accepting the token is good at the origin, even after `exp` by its clock.
#[test]
fn the_origin_agrees_with_the_edge_on_the_tokens_time() {
    let max_leeway = shared::claims::MAX_LEEWAY_SECS;
    let mut forwarded = identity();
    forwarded.ts = (forwarded.exp + max_leeway - 1) * 1000;
    let header = AssertionSigner::new(key("a", SECRET_A)).sign(&forwarded);
    let arrived = UnixTime::from_millis(forwarded.ts + 500);
    assert!(
        arrived.as_secs() > forwarded.exp,
        "past exp by the origin's clock"
    );
    verify(&header, &LINE, arrived).unwrap();

    // Signed when no edge could have accepted the token: refused.
    forwarded.ts = (forwarded.exp + max_leeway) * 1000;
    let header = AssertionSigner::new(key("a", SECRET_A)).sign(&forwarded);
    let arrived = UnixTime::from_millis(forwarded.ts + 500);
    assert_eq!(
        verify(&header, &LINE, arrived),
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
    let swapped = format!("v2.a.{forged_payload}.{}", parts[3]);
    assert_eq!(
        verify(&swapped, &LINE, now()),
        Err(AssertionError::BadSignature)
    );

    let other_secret = AssertionSigner::new(key("a", SECRET_B)).sign(&identity());
    assert_eq!(
        verify(&other_secret, &LINE, now()),
        Err(AssertionError::BadSignature)
    );

    let unknown = AssertionSigner::new(key("b", SECRET_B)).sign(&identity());
    assert_eq!(
        verify(&unknown, &LINE, now()),
        Err(AssertionError::UnknownKey)
    );
}

#[test]
fn rotation_accepts_old_and_new_ids() {
    let both = AssertionVerifier::new(
        vec![key("a", SECRET_A), key("b", SECRET_B)],
        DEFAULT_MAX_AGE_MS,
    );
    for signer in [
        AssertionSigner::new(key("a", SECRET_A)),
        AssertionSigner::new(key("b", SECRET_B)),
    ] {
        both.verify(Some(&signer.sign(&identity())), &LINE, now())
            .unwrap();
    }
}

/// A `v1` assertion, as edges before the `v2` release signed it: method and path only.
fn v1_header(secret: &[u8], identity: &serde_json::Value) -> String {
    use hmac::{Hmac, Mac};
    let signed = format!("v1.a.{}", b64(identity.to_string().as_bytes()));
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(signed.as_bytes());
    format!("{signed}.{}", b64(&mac.finalize().into_bytes()))
}

/// During a rollout the origin accepts `v1` only when told to, with `v1`'s rules.
#[test]
fn v1_only_while_the_origin_accepts_it() {
    let old = serde_json::json!({
        "sub": "user-42", "client_id": "client-7", "scope": "read", "jti": "j1",
        "exp": NOW_SECS + 300, "method": "POST", "path": "/orders/7", "ts": now().as_millis(),
    });
    let header = v1_header(SECRET_A, &old);
    assert_eq!(
        verify(&header, &LINE, now()),
        Err(AssertionError::Malformed)
    );
    let rollout = verifier().accept_v1(true);
    let identity = rollout.verify(Some(&header), &LINE, now()).unwrap();
    assert_eq!(identity.sub, "user-42");
    assert_eq!(
        rollout.verify(
            Some(&header),
            &RequestLine {
                path: "/other",
                ..LINE
            },
            now()
        ),
        Err(AssertionError::PathMismatch)
    );
    // The v2 header still verifies with v1 accepted.
    rollout.verify(Some(&signed()), &LINE, now()).unwrap();
}

#[test]
fn malformed_headers() {
    let v = verifier();
    assert_eq!(v.verify(None, &LINE, now()), Err(AssertionError::Missing));
    let header = signed();
    let long = "a".repeat(9000);
    for bad in [
        "",
        "v2",
        "v2.a.b",
        "v3.a.b.c",
        "v2.a.b.c.d",
        long.as_str(),
        &header.replace("v2.", "v3."),
    ] {
        let err = v.verify(Some(bad), &LINE, now()).unwrap_err();
        assert!(
            matches!(err, AssertionError::Malformed | AssertionError::UnknownKey),
            "{err:?}"
        );
    }
    // A valid MAC over a payload that is not JSON is still malformed.
    let mac_only = {
        use hmac::{Hmac, Mac};
        let signed = format!("v2.a.{}", b64(b"not json"));
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET_A).unwrap();
        mac.update(signed.as_bytes());
        format!("{signed}.{}", b64(&mac.finalize().into_bytes()))
    };
    assert_eq!(
        v.verify(Some(&mac_only), &LINE, now()),
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

/// A key per origin: each origin's secret is derived from the edge's and its host (pinned
/// here as Python's `hmac` computes it, the recipe docs/origins.md gives), the origin
/// verifies with it as with any secret, and it is no use at another origin.
#[test]
fn an_origin_key_is_good_at_its_own_origin_only() {
    use shared::assertion::origin_secret;
    assert_eq!(
        origin_secret(SECRET_A, "orders.internal:8443"),
        "hrT69mHGQSf327fNd7m3_OkNvfYwBL6NF20rqBT0MP0"
    );
    assert_eq!(
        origin_secret(SECRET_A, "reports.internal"),
        "PrUkb68v2FjH_Z5d_KYP-IJa5UERsslGpx-Z-N9WoxQ"
    );
    let orders_secret = origin_secret(SECRET_A, LINE.host);
    let signer = AssertionSigner::new(key("a", SECRET_A).for_origin(LINE.host));
    let header = signer.sign(&identity());
    let orders =
        AssertionVerifier::new(vec![key("a", orders_secret.as_bytes())], DEFAULT_MAX_AGE_MS)
            .for_host(LINE.host);
    assert_eq!(orders.verify(Some(&header), &LINE, now()), Ok(identity()));
    // The edge's own secret no longer verifies it.
    assert_eq!(
        verify(&header, &LINE, now()),
        Err(AssertionError::BadSignature)
    );

    // Whoever holds the orders' secret signs for the reports origin: refused there.
    let reports_line = RequestLine {
        host: "reports.internal",
        ..LINE
    };
    let reports = AssertionVerifier::new(
        vec![key(
            "a",
            origin_secret(SECRET_A, "reports.internal").as_bytes(),
        )],
        DEFAULT_MAX_AGE_MS,
    )
    .for_host("reports.internal");
    let verified = validator().verify(&good_token(), &jwks(), now()).unwrap();
    let forged = signer.sign(&EdgeIdentity::new(verified.claims(), &reports_line, now()));
    assert_eq!(
        reports.verify(Some(&forged), &reports_line, now()),
        Err(AssertionError::BadSignature)
    );
}
