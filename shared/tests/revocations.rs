//! The edge's revocation list fed from the issuer's feed pages. Native and wasm.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // tests may panic

mod fixtures;

use fixtures::*;
use serde_json::json;
use shared::revocations::FeedError;
use shared::{FeedPage, RevocationList, UnixTime};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

fn page(value: serde_json::Value) -> FeedPage {
    FeedPage::parse(&value.to_string()).unwrap()
}

#[test]
fn revoked_jti_and_kid_are_refused_until_they_expire() {
    let verified = validator().verify(&good_token(), &jwks(), now()).unwrap();
    let mut list = RevocationList::new();
    assert!(!list.is_revoked(&verified));

    let new_kids = list.apply(
        page(json!({ "cursor": 7, "more": false, "revocations": [
            { "kind": "jti", "value": "jti-0001", "expires_at": NOW_SECS + 300 },
            { "kind": "jti", "value": "already-dead", "expires_at": NOW_SECS - 1 },
        ]})),
        now(),
    );
    assert!(new_kids.is_empty());
    assert!(list.is_revoked(&verified));
    assert_eq!((list.cursor(), list.len()), (7, 1));

    let mut by_key = RevocationList::new();
    let new_kids = by_key.apply(
        page(json!({ "cursor": 9, "more": false, "revocations": [
            { "kind": "kid", "value": "fixture-1", "expires_at": NOW_SECS + 600 },
        ]})),
        now(),
    );
    assert_eq!(new_kids, vec!["fixture-1".to_owned()]);
    assert!(by_key.is_revoked(&verified));

    // A cursor never goes back; entries leave once they no longer matter.
    by_key.apply(
        page(json!({ "cursor": 3, "more": false, "revocations": [] })),
        now(),
    );
    assert_eq!(by_key.cursor(), 9);
    by_key.prune(UnixTime::from_secs(NOW_SECS + 600));
    assert!(by_key.is_empty());
}

#[test]
fn malformed_or_huge_pages_are_refused() {
    for bad in ["", "[]", "{\"cursor\":1}", "{\"cursor\":1,\"more\":false,\"revocations\":[{\"kind\":\"user\",\"value\":\"x\",\"expires_at\":1}]}"] {
        assert!(matches!(FeedPage::parse(bad), Err(FeedError::Malformed(_))), "{bad}");
    }
    let huge = format!("{{\"pad\":\"{}\"}}", "a".repeat(1024 * 1024));
    assert!(matches!(
        FeedPage::parse(&huge),
        Err(FeedError::TooLarge { .. })
    ));
}
