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

/// A disabled client: its tokens issued up to the disabling are revoked, later ones are not.
#[test]
fn a_client_entry_revokes_its_tokens_issued_up_to_its_time() {
    let verified = validator().verify(&good_token(), &jwks(), now()).unwrap();
    let iat = verified.claims().iat;
    let entry = |issued_before: u64| {
        page(json!({ "cursor": 4, "more": false, "revocations": [
            { "kind": "client", "value": "client-7", "expires_at": NOW_SECS + 900, "issued_before": issued_before },
        ]}))
    };
    let mut list = RevocationList::new();
    list.apply(entry(iat), now());
    assert!(
        list.is_revoked(&verified),
        "issued at the disabling's second"
    );
    let mut later = RevocationList::new();
    later.apply(entry(iat - 1), now());
    assert!(!later.is_revoked(&verified), "issued after it (re-enabled)");
    let mut other = RevocationList::new();
    other.apply(
        page(json!({ "cursor": 4, "more": false, "revocations": [
            { "kind": "client", "value": "client-8", "expires_at": NOW_SECS + 900, "issued_before": iat },
        ]})),
        now(),
    );
    assert!(!other.is_revoked(&verified), "another client's entry");
}

/// A token issued from a copy of its client that had not seen a revocation (a lagging
/// replica) is stamped with the earlier cut-off: the revocation covers it whatever its `iat`.
/// One stamped with the revocation's own cut-off was issued after it.
#[test]
fn a_client_entry_revokes_tokens_issued_under_an_earlier_cutoff() {
    let with_cutoff = |cutoff: u64| {
        let token = with_claims(|claims| {
            claims.insert("client_cutoff".into(), json!(cutoff));
        });
        validator().verify(&token, &jwks(), now()).unwrap()
    };
    let iat = with_cutoff(0).claims().iat;
    // The revocation's cut-off is before the token's `iat`: only the stamp can tell.
    let cutoff = iat - 10;
    let mut list = RevocationList::new();
    list.apply(
        page(json!({ "cursor": 4, "more": false, "revocations": [
            { "kind": "client", "value": "client-7", "expires_at": NOW_SECS + 900, "issued_before": cutoff },
        ]})),
        now(),
    );
    assert!(
        list.is_revoked(&with_cutoff(cutoff - 1)),
        "issued from the row before it"
    );
    assert!(
        !list.is_revoked(&with_cutoff(cutoff)),
        "issued from the row after it"
    );
    // Past what a JS number holds exactly, the claim is refused (the token with it).
    let huge = with_claims(|claims| {
        claims.insert("client_cutoff".into(), json!(1_u64 << 53));
    });
    assert!(validator().verify(&huge, &jwks(), now()).is_err());
    // A token without the claim (an older issuer) is judged by its `iat` alone.
    assert!(!list.is_revoked(&validator().verify(&good_token(), &jwks(), now()).unwrap()));
}

/// A kind this version does not know is skipped and counted, so a newer issuer cannot stop
/// an older edge's feed; the entries it does know still apply.
#[test]
fn unknown_kinds_are_skipped_not_fatal() {
    let parsed = page(json!({ "cursor": 5, "more": false, "revocations": [
        { "kind": "session", "value": "s1", "expires_at": NOW_SECS + 60 },
        { "kind": "jti", "value": "jti-0001", "expires_at": NOW_SECS + 300 },
    ]}));
    assert_eq!((parsed.revocations.len(), parsed.skipped), (1, 1));
}

#[test]
fn malformed_or_huge_pages_are_refused() {
    for bad in ["", "[]", "{\"cursor\":1}", "{\"cursor\":1,\"more\":false,\"revocations\":[{\"kind\":\"client\",\"value\":\"x\",\"expires_at\":1}]}", "{\"cursor\":1,\"more\":false,\"revocations\":[{\"kind\":7,\"value\":\"x\",\"expires_at\":1}]}"] {
        assert!(matches!(FeedPage::parse(bad), Err(FeedError::Malformed(_))), "{bad}");
    }
    let huge = format!("{{\"pad\":\"{}\"}}", "a".repeat(1024 * 1024));
    assert!(matches!(
        FeedPage::parse(&huge),
        Err(FeedError::TooLarge { .. })
    ));
}
