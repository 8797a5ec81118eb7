//! Arbitrary bytes as a JWKS document: parse must return, and a parsed set must re-publish
//! and re-parse to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::Jwks;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(jwks) = Jwks::parse(text) {
        let published = jwks.to_json();
        let reparsed = Jwks::parse(&published);
        assert!(reparsed.is_ok_and(|again| again == jwks), "publish/parse round trip broke");
    }
});
