//! Writes the edge-assertion conformance vectors, `shared/tests/assertion-vectors.json`:
//!
//! ```text
//! cargo run -q -p shared --example assertion_vectors > shared/tests/assertion-vectors.json
//! ```
//!
//! Every verifier (Rust natively and in wasm, the JS package, the Python reference in
//! `examples/origin-python/`) runs the file and must give each vector's verdict and reason.
//! The expectations are written here by hand, from the rules in `docs/origins.md`; they are
//! not what the Rust verifier happens to answer. Headers are signed with `AssertionSigner`
//! (what the edge sends) or, for payloads no edge would sign, with HMAC-SHA256 directly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // a generator: a failure should stop it

use base64ct::{Base64UrlUnpadded, Encoding};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use shared::assertion::{query_hash, DEFAULT_MAX_AGE_MS, FUTURE_LEEWAY_MS};
use shared::claims::MAX_LEEWAY_SECS;
use shared::{AssertionKey, AssertionSigner};

/// The verifier's clock in every vector (2026-09-21T13:46:40Z).
const NOW_MS: u64 = 1_790_000_000_000;
const NOW_SECS: u64 = NOW_MS / 1000;
/// Keys the verifier holds: the current one and the one before it (a rotation in progress).
const CURRENT: (&str, &str) = ("edge-2026b", "current-assertion-secret-0123456789abcdef");
const PREVIOUS: (&str, &str) = ("edge-2026a", "previous-assertion-secret-0123456789abcdef");
/// A key the origins no longer hold (rotated out).
const RETIRED: (&str, &str) = ("edge-2025", "retired-assertion-secret-0123456789abcdef");
const HOST: &str = "api.example.com";

/// What the edge signs: the identity fields, `query` already hashed.
fn identity(method: &str, path: &str, query: Option<&str>, ts: u64) -> Value {
    json!({
        "sub": "user-42",
        "client_id": "client-7",
        "scope": "read write",
        "jti": "jti-0001",
        "exp": NOW_SECS + 300,
        "method": method,
        "host": HOST,
        "path": path,
        "query": query_hash(query),
        "ts": ts,
    })
}

fn good_identity() -> Value {
    identity("GET", "/orders/17", None, NOW_MS - 1_000)
}

/// The edge's header for `identity` under `key` (through `AssertionSigner`, so the file is
/// what an edge sends byte for byte).
fn sign(key: (&str, &str), identity: &Value) -> String {
    let signer = AssertionSigner::new(AssertionKey::new(key.0, key.1.as_bytes()).unwrap());
    signer.sign(&serde_json::from_value(identity.clone()).unwrap())
}

/// `version.key id.payload.mac` over any payload bytes, MAC'd under `secret`.
fn sign_raw(version: &str, key_id: &str, secret: &str, payload: &[u8]) -> String {
    let signed = format!(
        "{version}.{key_id}.{}",
        Base64UrlUnpadded::encode_string(payload)
    );
    mac_over(&signed, secret)
}

/// `signed` (`version.key id.payload` text) with its MAC under `secret` appended.
fn mac_over(signed: &str, secret: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(signed.as_bytes());
    let tag = Base64UrlUnpadded::encode_string(&mac.finalize().into_bytes());
    format!("{signed}.{tag}")
}

/// The request line the origin received.
fn request(method: &str, host: &str, path: &str, query: Option<&str>) -> Value {
    json!({ "method": method, "host": host, "path": path, "query": query })
}

fn good_request() -> Value {
    request("GET", HOST, "/orders/17", None)
}

/// The header's four parts.
fn parts(header: &str) -> Vec<String> {
    header.split('.').map(str::to_owned).collect()
}

struct Vectors(Vec<Value>);

impl Vectors {
    fn accept(
        &mut self,
        name: &str,
        why: &str,
        headers: &[impl AsRef<str>],
        request: &Value,
        now_ms: u64,
        identity: &Value,
    ) {
        self.push(
            name,
            why,
            headers,
            request,
            now_ms,
            json!({ "verdict": "accept", "identity": identity }),
        );
    }

    fn reject(
        &mut self,
        name: &str,
        why: &str,
        headers: &[impl AsRef<str>],
        request: &Value,
        now_ms: u64,
        reason: &str,
    ) {
        self.push(
            name,
            why,
            headers,
            request,
            now_ms,
            json!({ "verdict": "reject", "reason": reason }),
        );
    }

    fn push(
        &mut self,
        name: &str,
        why: &str,
        headers: &[impl AsRef<str>],
        request: &Value,
        now_ms: u64,
        expect: Value,
    ) {
        let headers: Vec<&str> = headers.iter().map(AsRef::as_ref).collect();
        self.0.push(json!({
            "name": name,
            "why": why,
            "headers": headers,
            "request": request,
            "now_ms": now_ms,
            "expect": expect,
        }));
    }
}

#[allow(clippy::too_many_lines)] // one list, read top to bottom
fn main() {
    let mut v = Vectors(Vec::new());
    let good = good_identity();
    let good_header = sign(CURRENT, &good);
    let good_request = good_request();

    // ---- accepted ----
    v.accept(
        "good",
        "a GET without a query, current key",
        &[&good_header],
        &good_request,
        NOW_MS,
        &good,
    );
    let with_query = identity("GET", "/orders", Some("status=open&page=2"), NOW_MS - 1_000);
    v.accept(
        "good_with_query",
        "the query is bound by the SHA-256 of its exact text",
        &[&sign(CURRENT, &with_query)],
        &request("GET", HOST, "/orders", Some("status=open&page=2")),
        NOW_MS,
        &with_query,
    );
    v.accept(
        "good_empty_query_is_no_query",
        "an empty query (a bare `?`) and no query hash alike",
        &[&good_header],
        &request("GET", HOST, "/orders/17", Some("")),
        NOW_MS,
        &good,
    );
    v.accept(
        "good_previous_key",
        "during a rotation the origin holds the previous key too",
        &[&sign(PREVIOUS, &good)],
        &good_request,
        NOW_MS,
        &good,
    );
    v.accept(
        "good_host_in_another_case",
        "hosts compare ASCII case-insensitively",
        &[&good_header],
        &request("GET", "API.Example.COM", "/orders/17", None),
        NOW_MS,
        &good,
    );
    let mut with_port = good.clone();
    with_port["host"] = json!("api.example.com:8443");
    v.accept(
        "good_host_with_port",
        "a non-default port is part of the host",
        &[&sign(CURRENT, &with_port)],
        &request("GET", "api.example.com:8443", "/orders/17", None),
        NOW_MS,
        &with_port,
    );
    v.accept(
        "good_at_max_age",
        "exactly the maximum age old",
        &[&good_header],
        &good_request,
        NOW_MS - 1_000 + DEFAULT_MAX_AGE_MS,
        &good,
    );
    let future = identity("GET", "/orders/17", None, NOW_MS + FUTURE_LEEWAY_MS);
    v.accept(
        "good_future_within_skew",
        "dated in the future by exactly the clock-skew allowance",
        &[&sign(CURRENT, &future)],
        &good_request,
        NOW_MS,
        &future,
    );
    let mut late = good.clone();
    late["exp"] = json!((NOW_MS - 1_000) / 1000 - (MAX_LEEWAY_SECS - 1));
    v.accept(
        "good_token_expired_within_leeway",
        "the edge may accept a token until exp plus the largest leeway; the origin judges exp against ts, not its own clock",
        &[&sign(CURRENT, &late)],
        &good_request,
        NOW_MS,
        &late,
    );
    let post = identity("POST", "/files/a%2Fb", None, NOW_MS - 1_000);
    v.accept(
        "good_post_encoded_path",
        "the path compares as sent, percent-encoding and all",
        &[&sign(CURRENT, &post)],
        &request("POST", HOST, "/files/a%2Fb", None),
        NOW_MS,
        &post,
    );
    let mut non_ascii = good.clone();
    non_ascii["sub"] = json!("us\u{e9}r-\u{1F600}");
    v.accept(
        "good_non_ascii_subject",
        "the payload is UTF-8 JSON",
        &[&sign(CURRENT, &non_ascii)],
        &good_request,
        NOW_MS,
        &non_ascii,
    );
    let mut extra = good.clone();
    extra["new_member"] = json!({ "from": "a later edge" });
    let mut extra_identity = good.clone();
    extra_identity.as_object_mut().unwrap().remove("new_member");
    v.accept(
        "good_unknown_member_ignored",
        "members a later edge adds are ignored",
        &[&sign_raw(
            "v2",
            CURRENT.0,
            CURRENT.1,
            extra.to_string().as_bytes(),
        )],
        &good_request,
        NOW_MS,
        &extra_identity,
    );

    // ---- how many headers ----
    v.reject(
        "missing",
        "no assertion header: not through the edge",
        &[] as &[&str],
        &good_request,
        NOW_MS,
        "missing_assertion",
    );
    v.reject(
        "duplicate",
        "two headers, even identical ones",
        &[&good_header, &good_header],
        &good_request,
        NOW_MS,
        "duplicate_assertion",
    );
    let joined = format!("{good_header}, {good_header}");
    v.reject(
        "duplicate_joined",
        "two headers as a framework joins them, with a comma",
        &[&joined],
        &good_request,
        NOW_MS,
        "duplicate_assertion",
    );

    // ---- malformed ----
    let p = parts(&good_header);
    let malformed: Vec<(&str, &str, String)> = vec![
        ("malformed_empty", "an empty value", String::new()),
        ("malformed_three_parts", "a part missing", p[..3].join(".")),
        (
            "malformed_five_parts",
            "a part too many",
            format!("{good_header}.x"),
        ),
        (
            "malformed_version",
            "an unknown version",
            good_header.replacen("v2.", "v3.", 1),
        ),
        (
            "malformed_tag_alphabet",
            "a MAC outside the base64url alphabet",
            format!("{}.{}", p[..3].join("."), "+".repeat(43)),
        ),
        (
            "malformed_tag_padded",
            "base64url with padding",
            format!("{good_header}="),
        ),
        (
            "malformed_tag_non_canonical",
            "the MAC's last character with its unused bits set",
            non_canonical(&good_header),
        ),
        (
            "malformed_oversized",
            "longer than 8192 bytes",
            sign(CURRENT, &{
                let mut big = good.clone();
                big["sub"] = json!("x".repeat(6_200));
                big
            }),
        ),
    ];
    for (name, why, header) in &malformed {
        v.reject(
            name,
            why,
            &[header],
            &good_request,
            NOW_MS,
            "malformed_assertion",
        );
    }
    // A v1 assertion (method and path only) under the current key: the reference verifiers
    // speak v2 only.
    let v1 = sign_raw(
        "v1",
        CURRENT.0,
        CURRENT.1,
        json!({ "sub": "user-42", "client_id": "client-7", "scope": "read write", "jti": "jti-0001",
                "exp": NOW_SECS + 300, "method": "GET", "path": "/orders/17", "ts": NOW_MS - 1_000 })
        .to_string()
        .as_bytes(),
    );
    v.reject(
        "malformed_v1",
        "v1 is no longer accepted",
        &[&v1],
        &good_request,
        NOW_MS,
        "malformed_assertion",
    );
    // Payloads with a valid MAC that no edge would sign: the MAC is checked first, then the
    // payload must be base64url of a JSON object with every member, of the right type.
    let bad_payloads: Vec<(&str, &str, String)> = vec![
        (
            "payload_not_base64url",
            "the payload is not base64url",
            mac_over(&format!("v2.{}.not*base64", CURRENT.0), CURRENT.1),
        ),
        (
            "payload_not_json",
            "the payload is not JSON",
            sign_raw("v2", CURRENT.0, CURRENT.1, b"sub=user-42"),
        ),
        (
            "payload_not_utf8",
            "the payload is not UTF-8",
            sign_raw("v2", CURRENT.0, CURRENT.1, b"{\"sub\":\"\xff\"}"),
        ),
        (
            "payload_array",
            "the payload is not an object",
            sign_raw("v2", CURRENT.0, CURRENT.1, b"[1,2]"),
        ),
        (
            "payload_missing_ts",
            "a member missing",
            sign_raw("v2", CURRENT.0, CURRENT.1, without(&good, "ts").as_bytes()),
        ),
        (
            "payload_missing_sub",
            "a member missing",
            sign_raw("v2", CURRENT.0, CURRENT.1, without(&good, "sub").as_bytes()),
        ),
        (
            "payload_ts_string",
            "ts is a string",
            sign_raw(
                "v2",
                CURRENT.0,
                CURRENT.1,
                with(&good, "ts", json!("1789999999000")).as_bytes(),
            ),
        ),
        (
            "payload_ts_float",
            "ts is not an integer",
            sign_raw(
                "v2",
                CURRENT.0,
                CURRENT.1,
                with(&good, "ts", json!(1_789_999_999_000.0_f64)).as_bytes(),
            ),
        ),
        (
            "payload_ts_negative",
            "ts is negative",
            sign_raw(
                "v2",
                CURRENT.0,
                CURRENT.1,
                with(&good, "ts", json!(-1)).as_bytes(),
            ),
        ),
        (
            "payload_exp_bool",
            "exp is a boolean",
            sign_raw(
                "v2",
                CURRENT.0,
                CURRENT.1,
                with(&good, "exp", json!(true)).as_bytes(),
            ),
        ),
        (
            "payload_exp_too_big",
            "exp is past 2^64 - 1",
            sign_raw(
                "v2",
                CURRENT.0,
                CURRENT.1,
                good.to_string()
                    .replace(
                        &format!("\"exp\":{}", NOW_SECS + 300),
                        "\"exp\":18446744073709551616",
                    )
                    .as_bytes(),
            ),
        ),
        (
            "payload_sub_number",
            "sub is not a string",
            sign_raw(
                "v2",
                CURRENT.0,
                CURRENT.1,
                with(&good, "sub", json!(42)).as_bytes(),
            ),
        ),
        (
            "payload_duplicate_member",
            "a member twice",
            sign_raw(
                "v2",
                CURRENT.0,
                CURRENT.1,
                good.to_string()
                    .replacen('{', "{\"sub\":\"admin\",", 1)
                    .as_bytes(),
            ),
        ),
    ];
    for (name, why, header) in &bad_payloads {
        v.reject(
            name,
            why,
            &[header],
            &good_request,
            NOW_MS,
            "malformed_assertion",
        );
    }

    // ---- keys and MACs ----
    v.reject(
        "unknown_key_retired",
        "signed with a key rotated out",
        &[&sign(RETIRED, &good)],
        &good_request,
        NOW_MS,
        "unknown_assertion_key",
    );
    v.reject(
        "unknown_key_case",
        "key ids compare exactly",
        &[&good_header.replacen(CURRENT.0, &CURRENT.0.to_ascii_uppercase(), 1)],
        &good_request,
        NOW_MS,
        "unknown_assertion_key",
    );
    v.reject(
        "wrong_secret",
        "the current key id, another secret",
        &[&sign(
            (CURRENT.0, "not-the-current-secret-0123456789abcdef"),
            &good,
        )],
        &good_request,
        NOW_MS,
        "bad_assertion_signature",
    );
    v.reject(
        "key_id_swapped",
        "signed with the previous key, labelled with the current one",
        &[&sign(PREVIOUS, &good).replacen(PREVIOUS.0, CURRENT.0, 1)],
        &good_request,
        NOW_MS,
        "bad_assertion_signature",
    );
    let mut forged = good.clone();
    forged["sub"] = json!("admin");
    let forged_payload = Base64UrlUnpadded::encode_string(forged.to_string().as_bytes());
    v.reject(
        "tampered_payload",
        "another subject under the original MAC",
        &[&format!("{}.{}.{}.{}", p[0], p[1], forged_payload, p[3])],
        &good_request,
        NOW_MS,
        "bad_assertion_signature",
    );
    v.reject(
        "tampered_mac",
        "one MAC character changed",
        &[&format!("{}.{}", p[..3].join("."), flip_first(&p[3]))],
        &good_request,
        NOW_MS,
        "bad_assertion_signature",
    );
    v.reject(
        "truncated_mac",
        "a MAC of 31 bytes",
        &[&format!("{}.{}", p[..3].join("."), {
            let tag = Base64UrlUnpadded::decode_vec(&p[3]).unwrap();
            Base64UrlUnpadded::encode_string(&tag[..31])
        })],
        &good_request,
        NOW_MS,
        "bad_assertion_signature",
    );

    // ---- the request line ----
    let line_cases: Vec<(&str, &str, Value, &str)> = vec![
        (
            "method_mismatch",
            "signed for GET, received as POST",
            request("POST", HOST, "/orders/17", None),
            "assertion_method_mismatch",
        ),
        (
            "method_case",
            "methods compare exactly",
            request("get", HOST, "/orders/17", None),
            "assertion_method_mismatch",
        ),
        (
            "path_mismatch",
            "another path",
            request("GET", HOST, "/orders/18", None),
            "assertion_path_mismatch",
        ),
        (
            "path_not_normalised",
            "paths compare as received, never normalised first",
            request("GET", HOST, "/orders/x/../17", None),
            "assertion_path_mismatch",
        ),
        (
            "path_trailing_slash",
            "a trailing slash is another path",
            request("GET", HOST, "/orders/17/", None),
            "assertion_path_mismatch",
        ),
        (
            "path_encoded",
            "percent-encoding is another path",
            request("GET", HOST, "/orders/%31%37", None),
            "assertion_path_mismatch",
        ),
        (
            "host_mismatch",
            "another origin",
            request("GET", "admin.example.com", "/orders/17", None),
            "assertion_host_mismatch",
        ),
        (
            "host_default_port",
            "the edge signs the host without a default port; a Host with one differs",
            request("GET", "api.example.com:443", "/orders/17", None),
            "assertion_host_mismatch",
        ),
        (
            "query_added",
            "a query the edge did not forward",
            request("GET", HOST, "/orders/17", Some("admin=1")),
            "assertion_query_mismatch",
        ),
    ];
    for (name, why, request, reason) in &line_cases {
        v.reject(name, why, &[&good_header], request, NOW_MS, reason);
    }
    let query_header = sign(CURRENT, &with_query);
    for (name, why, query) in [
        ("query_changed", "another value", Some("status=open&page=3")),
        (
            "query_reordered",
            "the same parameters in another order",
            Some("page=2&status=open"),
        ),
        ("query_removed", "no query at all", None),
    ] {
        v.reject(
            name,
            why,
            &[&query_header],
            &request("GET", HOST, "/orders", query),
            NOW_MS,
            "assertion_query_mismatch",
        );
    }
    let plus = identity("GET", "/search", Some("q=a+b"), NOW_MS - 1_000);
    v.reject(
        "query_reencoded",
        "the query compares as sent: a space as %20 is not the + the edge forwarded",
        &[&sign(CURRENT, &plus)],
        &request("GET", HOST, "/search", Some("q=a%20b")),
        NOW_MS,
        "assertion_query_mismatch",
    );
    let mut no_host = good.clone();
    no_host.as_object_mut().unwrap().remove("host");
    v.reject(
        "payload_without_host",
        "a payload without host binds the empty host (members host and query default to empty)",
        &[&sign_raw(
            "v2",
            CURRENT.0,
            CURRENT.1,
            no_host.to_string().as_bytes(),
        )],
        &good_request,
        NOW_MS,
        "assertion_host_mismatch",
    );

    // ---- time ----
    v.reject(
        "stale",
        "one millisecond past the maximum age",
        &[&good_header],
        &good_request,
        NOW_MS - 1_000 + DEFAULT_MAX_AGE_MS + 1,
        "stale_assertion",
    );
    let too_early = identity("GET", "/orders/17", None, NOW_MS + FUTURE_LEEWAY_MS + 1);
    v.reject(
        "from_the_future",
        "dated one millisecond past the clock-skew allowance",
        &[&sign(CURRENT, &too_early)],
        &good_request,
        NOW_MS,
        "stale_assertion",
    );
    let mut expired = good.clone();
    expired["exp"] = json!((NOW_MS - 1_000) / 1000 - MAX_LEEWAY_SECS);
    v.reject(
        "token_expired",
        "signed when no verifier would still accept the token (ts >= exp + the largest leeway)",
        &[&sign(CURRENT, &expired)],
        &good_request,
        NOW_MS,
        "expired",
    );

    let file = json!({
        "about": "Edge-assertion conformance vectors (x-edgeward-assertion v2). Written by \
                  `cargo run -p shared --example assertion_vectors`; the rules are in docs/origins.md. \
                  A verifier holds `keys` (secrets are the UTF-8 bytes of the text), accepts assertions \
                  at most `max_age_ms` old and `future_skew_ms` in the future, and for each vector is \
                  given every value of the header (`headers`, in order), the request line it received \
                  (`query` null when there was none) and the time `now_ms`.",
        "keys": [
            { "id": CURRENT.0, "secret": CURRENT.1 },
            { "id": PREVIOUS.0, "secret": PREVIOUS.1 },
        ],
        "max_age_ms": DEFAULT_MAX_AGE_MS,
        "future_skew_ms": FUTURE_LEEWAY_MS,
        "max_token_leeway_secs": MAX_LEEWAY_SECS,
        "vectors": v.0,
    });
    println!("{}", serde_json::to_string_pretty(&file).unwrap());
}

fn without(identity: &Value, member: &str) -> String {
    let mut identity = identity.clone();
    identity.as_object_mut().unwrap().remove(member);
    identity.to_string()
}

fn with(identity: &Value, member: &str, value: Value) -> String {
    let mut identity = identity.clone();
    identity[member] = value;
    identity.to_string()
}

/// `header` with the last MAC character's two unused low bits set (same bytes, other text).
fn non_canonical(header: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = header.as_bytes()[header.len() - 1];
    let index = ALPHABET.iter().position(|&c| c == last).unwrap();
    format!(
        "{}{}",
        &header[..header.len() - 1],
        ALPHABET[index | 0b11] as char
    )
}

/// `text` with its first character changed to another of the alphabet.
fn flip_first(text: &str) -> String {
    let first = if text.starts_with('A') { 'B' } else { 'A' };
    format!("{first}{}", &text[1..])
}
