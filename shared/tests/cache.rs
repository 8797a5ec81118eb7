//! The verified-token cache: hits, lifetimes, eviction and invalidation. Native and wasm.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // tests may panic

mod fixtures;

use fixtures::*;
use serde_json::json;
use shared::{Jwks, TokenCache, UnixTime};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

fn token_expiring_in(secs: u64, jti: &str, key: u8) -> String {
    let mut header = header();
    header["kid"] = json!(kid(key));
    let mut claims = claims();
    claims["exp"] = json!(NOW_SECS + secs);
    claims["jti"] = json!(jti);
    sign_with(&header, &claims, key)
}

fn verified(token: &str) -> shared::VerifiedToken {
    validator().verify(token, &jwks(), now()).unwrap()
}

#[test]
fn hit_returns_the_verified_token_until_exp() {
    let mut cache = TokenCache::new(8);
    let token = token_expiring_in(100, "a", 1);
    assert!(cache.get(&token, now()).is_none());
    cache.insert(&token, verified(&token), now());
    let hit = cache.get(&token, now()).unwrap();
    assert_eq!(hit.claims().jti, "a");
    assert!(cache
        .get(&token, UnixTime::from_secs(NOW_SECS + 99))
        .is_some());
    assert!(cache
        .get(&token, UnixTime::from_secs(NOW_SECS + 100))
        .is_none());
    // A different token (even one character) misses.
    assert!(cache.get(&token_expiring_in(100, "b", 1), now()).is_none());
}

#[test]
fn max_ttl_shortens_entries() {
    let mut cache = TokenCache::with_max_ttl(8, 10);
    let token = token_expiring_in(100, "a", 1);
    cache.insert(&token, verified(&token), now());
    assert!(cache
        .get(&token, UnixTime::from_secs(NOW_SECS + 9))
        .is_some());
    assert!(cache
        .get(&token, UnixTime::from_secs(NOW_SECS + 10))
        .is_none());
}

#[test]
fn full_cache_evicts_the_soonest_expiring() {
    let mut cache = TokenCache::new(2);
    let long = token_expiring_in(300, "long", 1);
    let short = token_expiring_in(50, "short", 1);
    let third = token_expiring_in(200, "third", 1);
    cache.insert(&long, verified(&long), now());
    cache.insert(&short, verified(&short), now());
    cache.insert(&third, verified(&third), now());
    assert_eq!(cache.len(), 2);
    assert!(cache.get(&short, now()).is_none());
    assert!(cache.get(&long, now()).is_some() && cache.get(&third, now()).is_some());
}

#[test]
fn expired_entries_are_swept_on_insert() {
    let mut cache = TokenCache::new(2);
    let a = token_expiring_in(10, "a", 1);
    let b = token_expiring_in(20, "b", 1);
    cache.insert(&a, verified(&a), now());
    cache.insert(&b, verified(&b), now());
    let later = UnixTime::from_secs(NOW_SECS + 15);
    let c = token_expiring_in(100, "c", 1);
    let c_verified = validator().verify(&c, &jwks(), later).unwrap();
    cache.insert(&c, c_verified, later);
    assert!(
        cache.get(&b, later).is_some(),
        "the live entry stays; the dead one made room"
    );
    assert!(cache.get(&c, later).is_some());
}

#[test]
fn entries_leave_with_their_key_or_jti() {
    let mut cache = TokenCache::new(8);
    let one = token_expiring_in(100, "one", 1);
    let two = token_expiring_in(100, "two", 2);
    cache.insert(&one, verified(&one), now());
    cache.insert(&two, verified(&two), now());

    let only_two = Jwks::parse(&json!({ "keys": [public_jwk(2)] }).to_string()).unwrap();
    cache.retain_keys(&only_two);
    assert!(cache.get(&one, now()).is_none());
    assert!(cache.get(&two, now()).is_some());

    cache.remove_jti("two");
    assert!(cache.is_empty());

    cache.insert(&two, verified(&two), now());
    cache.remove_kid("fixture-2");
    assert!(cache.is_empty());
}

#[test]
fn entries_leave_when_their_kid_comes_to_name_another_key() {
    let mut cache = TokenCache::new(8);
    let one = token_expiring_in(100, "one", 1);
    cache.insert(&one, verified(&one), now());
    // The same set again keeps it.
    cache.retain_keys(&jwks());
    assert!(cache.get(&one, now()).is_some());
    // Key 1's id now names key 2's point (a replaced key): what key 1 signed is gone.
    let mut replaced = public_jwk(2);
    replaced["kid"] = json!(kid(1));
    let reused = Jwks::parse(&json!({ "keys": [replaced] }).to_string()).unwrap();
    cache.retain_keys(&reused);
    assert!(cache.get(&one, now()).is_none());
}

#[test]
fn zero_capacity_and_dead_tokens_store_nothing() {
    let token = token_expiring_in(100, "a", 1);
    let mut cache = TokenCache::new(0);
    cache.insert(&token, verified(&token), now());
    assert!(cache.is_empty());
    let mut cache = TokenCache::new(4);
    cache.insert(
        &token,
        verified(&token),
        UnixTime::from_secs(NOW_SECS + 100),
    );
    assert!(cache.is_empty());
}
