//! Arbitrary bytes as an edge assertion header at the origin: never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::{AssertionKey, AssertionVerifier, RequestLine, UnixTime};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(key) = AssertionKey::new("k1", b"0123456789abcdef0123456789abcdef") else { return };
    let verifier = AssertionVerifier::new(vec![key], 30_000).accept_v1(true);
    let line = RequestLine { method: "GET", host: "origin.test", path: "/", query: None };
    let _ = verifier.verify(Some(text), &line, UnixTime::from_secs(1_800_000_000));
});
