//! Properties: no input panics the parsers, and what we publish we can read back.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // tests may panic

mod fixtures;

use fixtures::*;
use proptest::prelude::*;
use shared::{bearer_token, AssertionKey, AssertionVerifier, Jwks, RatePlan, Scopes, UnixTime};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_as_token_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let text = String::from_utf8_lossy(&bytes);
        let jwks = jwks();
        let _ = validator().verify(&text, &jwks, now());
        let _ = bearer_token([text.as_ref()]);
    }

    #[test]
    fn token_shaped_noise_never_panics(
        header in "[A-Za-z0-9_-]{0,80}",
        payload in "[A-Za-z0-9_-]{0,200}",
        signature in "[A-Za-z0-9_-]{0,100}",
        now_secs in any::<u64>(),
    ) {
        let token = format!("{header}.{payload}.{signature}");
        let _ = validator().verify(&token, &jwks(), UnixTime::from_secs(now_secs));
    }

    #[test]
    fn json_shaped_noise_in_segments_never_panics(
        header in proptest::collection::btree_map("[a-z]{1,4}", any_json(), 0..6),
        claims in proptest::collection::btree_map("[a-z_]{1,9}", any_json(), 0..12),
    ) {
        let header = serde_json::to_value(header).unwrap();
        let claims = serde_json::to_value(claims).unwrap();
        let _ = validator().verify(&sign(&header, &claims), &jwks(), now());
    }

    #[test]
    fn arbitrary_bytes_as_jwks_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = Jwks::parse(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn jwks_shaped_noise_never_panics(
        keys in proptest::collection::vec(
            proptest::collection::btree_map(
                prop_oneof![Just("kty".to_owned()), Just("crv".to_owned()), Just("kid".to_owned()),
                    Just("x".to_owned()), Just("y".to_owned()), Just("use".to_owned()),
                    Just("alg".to_owned()), Just("d".to_owned()), Just("key_ops".to_owned())],
                any_json(), 0..9),
            0..5),
    ) {
        let doc = serde_json::json!({ "keys": keys });
        let _ = Jwks::parse(&doc.to_string());
    }

    #[test]
    fn arbitrary_assertions_never_panic(header in ".{0,300}") {
        let key = AssertionKey::new("a", &[7; 32]).unwrap();
        let line = shared::RequestLine { method: "GET", host: "h", path: "/", query: None };
        let _ = AssertionVerifier::new(vec![key], 1000).accept_v1(true).verify(Some(&header), &line, now());
    }

    #[test]
    fn rate_plans_round_trip(limit in 1u32..=1_000_000_000, period in 1u32..=86_400, burst in 1u32..=1_000_000_000) {
        let plan = RatePlan::new(limit, period, burst).unwrap();
        prop_assert_eq!(plan.to_string().parse::<RatePlan>().unwrap(), plan);
    }

    #[test]
    fn rate_plan_text_never_panics(text in ".{0,40}") {
        let _ = text.parse::<RatePlan>();
    }

    #[test]
    fn gcra_never_allows_more_than_burst_plus_rate(
        limit in 1u32..1000, period in 1u32..120, burst in 1u32..50,
        gaps in proptest::collection::vec(0u64..2000, 1..200),
    ) {
        let plan = RatePlan::new(limit, period, burst).unwrap();
        let mut state = shared::GcraState::default();
        let start = 1_800_000_000_000u64;
        let mut now = start;
        let mut allowed = 0u64;
        for gap in gaps {
            now += gap;
            let (decision, next) = shared::rate_limit::check(&plan, state, UnixTime::from_millis(now));
            if decision.allowed { allowed += 1; } else { prop_assert!(decision.retry_after_ms > 0); }
            prop_assert!(decision.remaining < burst);
            state = next;
        }
        // Over any window, GCRA admits at most burst + window * rate.
        let elapsed_ms = u128::from(now - start);
        let bound = u128::from(burst) + elapsed_ms * u128::from(limit) / (u128::from(period) * 1000);
        prop_assert!(u128::from(allowed) <= bound, "allowed {} > bound {}", allowed, bound);
    }

    #[test]
    fn scopes_round_trip(scopes in proptest::collection::btree_set("[!#-\\[\\]-~]{1,12}", 0..10)) {
        let text = scopes.iter().cloned().collect::<Vec<_>>().join(" ");
        let parsed = Scopes::parse(&text).unwrap();
        prop_assert_eq!(parsed.to_string(), text);
    }

    /// Scopes are a set: any order and repeats parse to the same sorted set, and lookups
    /// agree with a `BTreeSet`'s.
    #[test]
    fn scopes_are_a_set(
        tokens in proptest::collection::vec("[a-e]{1,2}", 1..12),
        wanted in proptest::collection::btree_set("[a-e]{1,2}", 0..4),
    ) {
        let set: std::collections::BTreeSet<&str> = tokens.iter().map(String::as_str).collect();
        let parsed = Scopes::parse(&tokens.join(" ")).unwrap();
        prop_assert_eq!(parsed.iter().collect::<Vec<_>>(), set.iter().copied().collect::<Vec<_>>());
        prop_assert_eq!(parsed.len(), set.len());
        for scope in &wanted {
            prop_assert_eq!(parsed.contains(scope), set.contains(scope.as_str()));
        }
        let wanted_text = wanted.iter().cloned().collect::<Vec<_>>().join(" ");
        let all = wanted.iter().all(|scope| set.contains(scope.as_str()));
        prop_assert_eq!(parsed.contains_all(&Scopes::parse(&wanted_text).unwrap()), all);
    }
}

fn any_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{json, Value};
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,20}".prop_map(Value::String),
        prop_oneof![
            Just("ES256"),
            Just("at+jwt"),
            Just("fixture-1"),
            Just("EC"),
            Just("P-256"),
            Just(ISSUER),
            Just(AUDIENCE)
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// Normalising twice changes nothing, whatever the input.
    #[test]
    fn a_normal_path_is_a_fixed_point(raw in path_noise()) {
        if let Ok(path) = shared::NormalPath::parse(&raw) {
            let again = shared::NormalPath::parse(path.as_str());
            prop_assert_eq!(again.as_ref(), Ok(&path));
        }
    }

    /// Spelling a path's unreserved characters as escapes, doubling its slashes or adding
    /// `./` and `x/../` never changes what it normalises to.
    #[test]
    fn equivalent_spellings_normalise_alike(
        segments in proptest::collection::vec("[A-Za-z0-9._~-]{1,6}", 0..6),
        trailing in any::<bool>(),
        noise in proptest::collection::vec(0u8..4, 0..6),
        encode_mask in any::<u64>(),
    ) {
        let mut plain = String::new();
        let mut spelled = String::new();
        for (index, segment) in segments.iter().enumerate() {
            plain.push('/');
            plain.push_str(segment);
            match noise.get(index).copied().unwrap_or(0) {
                1 => spelled.push_str("//"),
                2 => spelled.push_str("/./"),
                3 => spelled.push_str("/zz/../"),
                _ => spelled.push('/'),
            }
            for (at, byte) in segment.bytes().enumerate() {
                if encode_mask >> ((index * 7 + at) % 64) & 1 == 1 {
                    spelled.push_str(&format!("%{byte:02x}"));
                } else {
                    spelled.push(char::from(byte));
                }
            }
        }
        if trailing || plain.is_empty() {
            plain.push('/');
            spelled.push('/');
        }
        let left = shared::NormalPath::parse(&plain);
        let right = shared::NormalPath::parse(&spelled);
        prop_assert_eq!(left, right, "{} against {}", plain, spelled);
    }
}

/// Paths made mostly of the characters that matter to normalisation.
fn path_noise() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_owned()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just("%".to_owned()),
        Just("%2e".to_owned()),
        Just("%2E".to_owned()),
        Just("%25".to_owned()),
        Just("%2f".to_owned()),
        Just(";".to_owned()),
        "[a-f0-9]{1,2}",
        "[A-Za-z~_:@-]{1,3}",
        "%[0-9a-fA-F]{2}",
    ];
    proptest::collection::vec(piece, 0..12).prop_map(|pieces| format!("/{}", pieces.concat()))
}

/// A table of route patterns made of a few literals, `{name}` and `**`, without duplicates.
fn route_table(patterns: &[String]) -> shared::route::RouteTable {
    let mut seen = std::collections::HashSet::new();
    let routes: Vec<serde_json::Value> = patterns
        .iter()
        .filter(|pattern| seen.insert(pattern.to_ascii_lowercase().replace("{b}", "{a}")))
        .enumerate()
        .map(|(index, pattern)| serde_json::json!({ "id": format!("r{index}"), "path": pattern }))
        .collect();
    shared::route::RouteTable::from_json(&serde_json::json!({ "route": routes }).to_string())
        .unwrap()
}

fn route_pattern() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        Just("a".to_owned()),
        Just("B".to_owned()),
        Just("c".to_owned()),
        Just("{a}".to_owned()),
        Just("{b}".to_owned()),
    ];
    (proptest::collection::vec(segment, 0..4), any::<bool>()).prop_map(|(segments, rest)| {
        let mut pattern = format!("/{}", segments.join("/"));
        if rest {
            pattern = format!("{}/**", pattern.trim_end_matches('/'));
        }
        pattern
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// No two spellings of one path reach different routes: escapes of unreserved
    /// characters, merged slashes, dot-segments, letter case and a trailing slash.
    #[test]
    fn no_two_spellings_reach_different_routes(
        patterns in proptest::collection::vec(route_pattern(), 1..12),
        segments in proptest::collection::vec(prop_oneof![Just("a"), Just("b"), Just("c"), Just("x")], 0..5),
        spelling in proptest::collection::vec(0u8..6, 5),
    ) {
        let table = route_table(&patterns);
        let plain = format!("/{}", segments.join("/"));
        let mut spelled = String::new();
        for (segment, how) in segments.iter().zip(&spelling) {
            match how {
                0 => spelled.push_str(&format!("/{segment}")),
                1 => spelled.push_str(&format!("//{}", segment.to_ascii_uppercase())),
                2 => spelled.push_str(&format!("/./%{:02X}", segment.as_bytes()[0])),
                3 => spelled.push_str(&format!("/zz/%2e%2E/{segment}")),
                4 => spelled.push_str(&format!("/{segment}/")),
                _ => spelled.push_str(&format!("/%{:02x}", segment.as_bytes()[0])),
            }
        }
        if spelled.is_empty() {
            spelled.push('/');
        }
        let route = |raw: &str| {
            let path = shared::NormalPath::parse(raw).unwrap();
            table.route("h", "GET", &path).map(|route| route.id.clone())
        };
        prop_assert_eq!(route(&plain), route(&spelled), "{} against {}", plain, spelled);
    }
}
