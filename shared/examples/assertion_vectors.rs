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
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)] // a generator: a failure should stop it

use base64ct::{Base64UrlUnpadded, Encoding};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use shared::assertion::{
    origin_secret, query_hash, DEFAULT_MAX_AGE_MS, FUTURE_LEEWAY_MS, MAX_PAYLOAD_DEPTH,
    MAX_PAYLOAD_INTEGER,
};
use shared::claims::{MAX_LEEWAY_SECS, MAX_SCOPES};
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
        "route": "",
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

/// A v2 header under the current key over any payload bytes (what no edge would sign).
fn sign_current(payload: &[u8]) -> String {
    sign_raw("v2", CURRENT.0, CURRENT.1, payload)
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
        // Every verifier gives the whole identity: `cnf_jkt` reads as empty when absent (a
        // bearer token's assertion has none).
        let mut identity = identity.clone();
        if let Some(members) = identity.as_object_mut() {
            members.entry("cnf_jkt").or_insert(json!(""));
        }
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

    /// Makes the last vector's verifier bound to `host` (the origin's own name, configured):
    /// the request's `Host` header no longer counts.
    fn for_origin_host(&mut self, host: &str) {
        self.0.last_mut().unwrap()["origin_host"] = json!(host);
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
        &[&sign_current(extra.to_string().as_bytes())],
        &good_request,
        NOW_MS,
        &extra_identity,
    );

    let mut routed = good.clone();
    routed["route"] = json!("orders-read");
    v.accept(
        "good_with_route",
        "the id of the edge route that let the request in",
        &[&sign(CURRENT, &routed)],
        &good_request,
        NOW_MS,
        &routed,
    );
    let mut bound = good.clone();
    bound["cnf_jkt"] = json!("0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I");
    v.accept(
        "good_sender_constrained",
        "a DPoP-bound token whose proof the edge checked: cnf_jkt names the key",
        &[&sign(CURRENT, &bound)],
        &good_request,
        NOW_MS,
        &bound,
    );
    let mut no_route = good.clone();
    no_route.as_object_mut().unwrap().remove("route");
    v.accept(
        "good_without_route",
        "an edge before route tables sends no route: it reads as empty",
        &[&sign_current(no_route.to_string().as_bytes())],
        &good_request,
        NOW_MS,
        &good,
    );

    let (at_limit, at_limit_identity) = sized(&good, 8_192);
    v.accept(
        "good_at_longest",
        "exactly 8192 bytes",
        &[&at_limit],
        &good_request,
        NOW_MS,
        &at_limit_identity,
    );
    let mut largest = good.clone();
    largest["exp"] = json!((1_u64 << 53) - 1);
    v.accept(
        "good_exp_largest",
        "exp at 2^53 - 1, the largest accepted",
        &[&sign(CURRENT, &largest)],
        &good_request,
        NOW_MS,
        &largest,
    );
    v.accept(
        "good_nested_member_at_depth_limit",
        "an unknown member nested 32 levels deep, counting the payload, is ignored",
        &[&sign_current(
            with(&good, "x", nested(MAX_PAYLOAD_DEPTH - 1)).as_bytes(),
        )],
        &good_request,
        NOW_MS,
        &good,
    );
    let mut unsorted = good.clone();
    unsorted["scope"] = json!("write read write");
    v.accept(
        "good_scope_normalised",
        "scopes out of order and repeated read as the sorted set",
        &[&sign_current(unsorted.to_string().as_bytes())],
        &good_request,
        NOW_MS,
        &good,
    );
    v.accept(
        "good_origin_host_configured",
        "an origin configured with its own host ignores the Host header",
        &[&good_header],
        &request("GET", "whatever.example", "/orders/17", None),
        NOW_MS,
        &good,
    );
    v.for_origin_host("API.example.com");

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
            set_unused_bits(&good_header, 32 % 3),
        ),
        (
            "malformed_oversized",
            "8193 bytes: one past the longest accepted",
            sized(&good, 8_193).0,
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
            sign_current(b"sub=user-42"),
        ),
        (
            "payload_not_utf8",
            "a byte that is not UTF-8 in sub",
            sign_current(&edited(&good, "\"user-42\"", b"\"\xff\"")),
        ),
        (
            "payload_array",
            "every member's value, in order, in an array instead of an object",
            sign_current(as_array(&good).as_bytes()),
        ),
        (
            "payload_unknown_member_twice",
            "an unknown member named twice",
            sign_current(&edited(&good, "{", b"{\"x\":1,\"x\":1,")),
        ),
        (
            "payload_unknown_member_not_utf8",
            "a byte that is not UTF-8 in an unknown member",
            sign_current(&edited(&good, "{", b"{\"x\":\"\xff\",")),
        ),
        (
            "payload_lone_surrogate",
            "sub holds a lone UTF-16 surrogate escape",
            sign_current(&edited(&good, "\"user-42\"", b"\"\\ud800\"")),
        ),
        (
            "payload_ts_negative_zero",
            "ts is -0",
            sign_current(&edited(
                &good,
                &format!("\"ts\":{}", NOW_MS - 1_000),
                b"\"ts\":-0",
            )),
        ),
        (
            "payload_exp_past_2_53",
            "exp is 2^53, past the largest integer every JSON reader holds exactly",
            sign_current(with(&good, "exp", json!(1_u64 << 53)).as_bytes()),
        ),
        (
            "payload_number_out_of_range",
            "an unknown member holds a number no float holds",
            sign_current(&edited(&good, "{", b"{\"x\":1e400,")),
        ),
        (
            "payload_integer_out_of_range",
            "an unknown member holds an integer no float holds",
            sign_current(&edited(
                &good,
                "{",
                ["{\"x\":1", &"0".repeat(309), ","].concat().as_bytes(),
            )),
        ),
        (
            "payload_too_deep",
            "an unknown member nested 33 levels deep, counting the payload",
            sign_current(with(&good, "x", nested(MAX_PAYLOAD_DEPTH)).as_bytes()),
        ),
        (
            "payload_scope_double_space",
            "scope-tokens are separated by one space",
            sign_current(with(&good, "scope", json!("read  write")).as_bytes()),
        ),
        (
            "payload_scope_bad_character",
            "a quote is not a scope-token character (RFC 6749 3.3)",
            sign_current(with(&good, "scope", json!("read\"x")).as_bytes()),
        ),
        (
            "payload_scope_too_many",
            "more distinct scopes than the core holds",
            sign_current(
                with(
                    &good,
                    "scope",
                    json!((0..=MAX_SCOPES)
                        .map(|i| format!("s{i:03}"))
                        .collect::<Vec<_>>()
                        .join(" ")),
                )
                .as_bytes(),
            ),
        ),
        (
            "payload_standard_base64",
            "the payload in base64 with + and /, not base64url",
            lax_payload(&good, Lax::StandardAlphabet),
        ),
        (
            "payload_padded",
            "the payload with = padding",
            lax_payload(&good, Lax::Padded),
        ),
        (
            "payload_non_canonical",
            "the payload's last character with its unused bits set",
            lax_payload(&good, Lax::NonCanonical),
        ),
        (
            "malformed_tag_standard_alphabet",
            "a MAC written with + and / instead of - and _",
            standard_alphabet_tag(),
        ),
        (
            "payload_missing_ts",
            "a member missing",
            sign_current(without(&good, "ts").as_bytes()),
        ),
        (
            "payload_missing_sub",
            "a member missing",
            sign_current(without(&good, "sub").as_bytes()),
        ),
        (
            "payload_ts_string",
            "ts is a string",
            sign_current(with(&good, "ts", json!("1789999999000")).as_bytes()),
        ),
        (
            "payload_ts_float",
            "ts is not an integer",
            sign_current(with(&good, "ts", json!(1_789_999_999_000.0_f64)).as_bytes()),
        ),
        (
            "payload_ts_negative",
            "ts is negative",
            sign_current(with(&good, "ts", json!(-1)).as_bytes()),
        ),
        (
            "payload_exp_bool",
            "exp is a boolean",
            sign_current(with(&good, "exp", json!(true)).as_bytes()),
        ),
        (
            "payload_exp_too_big",
            "exp is past 2^64 - 1",
            sign_current(
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
            sign_current(with(&good, "sub", json!(42)).as_bytes()),
        ),
        (
            "payload_route_number",
            "route is not a string",
            sign_current(with(&good, "route", json!(7)).as_bytes()),
        ),
        (
            "payload_duplicate_member",
            "a member twice",
            sign_current(
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
        &[&sign_current(no_host.to_string().as_bytes())],
        &good_request,
        NOW_MS,
        "assertion_host_mismatch",
    );

    v.reject(
        "host_forged_at_another_origin",
        "an origin configured as another host refuses, even with the signed host as Host",
        &[&good_header],
        &good_request,
        NOW_MS,
        "assertion_host_mismatch",
    );
    v.for_origin_host("admin.example.com");

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
                  (`query` null when there was none) and the time `now_ms`. A vector with \
                  `origin_host` is for a verifier configured with that host, which compares the \
                  signed host with it instead of with the request's. `origin_secrets`: for an \
                  edge with a key per origin, the host each origin URL's assertions carry and the \
                  secret that origin holds, derived from the edge's `edge_secret` \
                  (deploy/edge/origin-secret).",
        "keys": [
            { "id": CURRENT.0, "secret": CURRENT.1 },
            { "id": PREVIOUS.0, "secret": PREVIOUS.1 },
        ],
        "max_age_ms": DEFAULT_MAX_AGE_MS,
        "max_payload_integer": MAX_PAYLOAD_INTEGER,
        "max_payload_depth": MAX_PAYLOAD_DEPTH,
        "future_skew_ms": FUTURE_LEEWAY_MS,
        "max_token_leeway_secs": MAX_LEEWAY_SECS,
        "vectors": v.0,
        "origin_secrets": origin_secrets(),
    });
    println!("{}", serde_json::to_string_pretty(&file).unwrap());
}

/// For an edge with a key per origin, with the current key's secret as the edge's: each origin
/// URL's host (the edge's own reading of it) and the secret that origin holds.
fn origin_secrets() -> Value {
    let urls = [
        "https://api.example.com",
        "https://API.Example.COM:443/v1/",
        "https://api.example.com:8443",
        "http://orders.internal:80",
        "http://orders.internal:8080/api",
        "http://127.0.0.1:9090",
        "https://[::1]:8443",
    ];
    let secrets: Vec<Value> = urls
        .iter()
        .map(|url| {
            let host = shared::route::Origin::parse(url).unwrap().host().to_owned();
            let secret = origin_secret(CURRENT.1.as_bytes(), &host);
            json!({ "origin_url": url, "host": host, "secret": secret })
        })
        .collect();
    json!({ "edge_secret": CURRENT.1, "origins": secrets })
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

/// `text` with its first character changed to another of the alphabet.
fn flip_first(text: &str) -> String {
    let first = if text.starts_with('A') { 'B' } else { 'A' };
    format!("{first}{}", &text[1..])
}

/// `identity`'s compact JSON with the first `find` replaced by the bytes `with`.
fn edited(identity: &Value, find: &str, with: &[u8]) -> Vec<u8> {
    let text = identity.to_string();
    let at = text.find(find).unwrap();
    let bytes = text.as_bytes();
    [&bytes[..at], with, &bytes[at + find.len()..]].concat()
}

/// The values of `identity`'s members, in the order the edge writes them, as a JSON array.
fn as_array(identity: &Value) -> String {
    let order = [
        "sub",
        "client_id",
        "scope",
        "jti",
        "exp",
        "method",
        "host",
        "path",
        "query",
        "ts",
        "route",
    ];
    Value::Array(order.iter().map(|name| identity[*name].clone()).collect()).to_string()
}

/// Arrays nested `levels` deep.
fn nested(levels: usize) -> Value {
    (0..levels).fold(json!(0), |inner, _| json!([inner]))
}

/// A header of exactly `len` bytes for `identity` with `sub` padded, and the identity.
/// (Base64url takes every length but those of 1 past a multiple of 4; the lengths used here
/// are not.)
fn sized(identity: &Value, len: usize) -> (String, Value) {
    let mut padded = identity.clone();
    for pad in 0.. {
        padded["sub"] = json!(format!("user-42{}", "x".repeat(pad)));
        let header = sign(CURRENT, &padded);
        if header.len() >= len {
            assert_eq!(header.len(), len, "no header of {len} bytes");
            return (header, padded);
        }
    }
    unreachable!()
}

/// The ways a lax base64 decoder reads what a strict one refuses.
enum Lax {
    StandardAlphabet,
    Padded,
    NonCanonical,
}

/// `identity`, padded with an unknown member until its base64url shows the trait `lax`
/// needs, written the lax way and MAC'd as written (so only the payload's decoding fails).
fn lax_payload(identity: &Value, lax: Lax) -> String {
    for pad in 0..64 {
        let text = with(identity, "x", json!("~".repeat(pad)));
        let strict = Base64UrlUnpadded::encode_string(text.as_bytes());
        let payload = match lax {
            Lax::StandardAlphabet if strict.contains(['-', '_']) => {
                strict.replace('-', "+").replace('_', "/")
            }
            Lax::Padded if text.len() % 3 != 0 => {
                format!("{strict}{}", "=".repeat(3 - text.len() % 3))
            }
            Lax::NonCanonical if text.len() % 3 != 0 => set_unused_bits(&strict, text.len() % 3),
            _ => continue,
        };
        return mac_over(&format!("v2.{}.{payload}", CURRENT.0), CURRENT.1);
    }
    panic!("no payload shows the trait")
}

/// `text` (base64url of a length with `rest` bytes past a multiple of 3) with the unused low
/// bits of its last character set.
fn set_unused_bits(text: &str, rest: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mask = if rest == 1 { 0b1111 } else { 0b11 };
    let last = text.as_bytes()[text.len() - 1];
    let index = ALPHABET.iter().position(|&c| c == last).unwrap();
    format!(
        "{}{}",
        &text[..text.len() - 1],
        ALPHABET[index | mask] as char
    )
}

/// The good assertion (at some signing time) whose MAC has a `-` or `_`, written with the
/// standard alphabet's `+` and `/` instead.
fn standard_alphabet_tag() -> String {
    (0..1_000)
        .map(|back| {
            sign(
                CURRENT,
                &identity("GET", "/orders/17", None, NOW_MS - 1_000 - back),
            )
        })
        .find_map(|header| {
            let (signed, tag) = header.rsplit_once('.').unwrap();
            tag.contains(['-', '_'])
                .then(|| format!("{signed}.{}", tag.replace('-', "+").replace('_', "/")))
        })
        .unwrap()
}
