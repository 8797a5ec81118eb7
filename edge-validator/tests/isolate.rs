//! The edge's logic, driven natively: each test plays the driver (answers every wait by
//! hand, verifies signatures with the pure-Rust backend where the Worker calls WebCrypto) and
//! moves an injected clock, so cooldowns, staleness, max-stale, revocation timing and limits
//! are checked at their boundaries in milliseconds, with no workerd and no sleeps.
// Test code: a panic is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "../../shared/tests/fixtures/mod.rs"]
mod fixtures;

use std::collections::HashMap;
use std::rc::Rc;

use edge_validator::isolate::{
    Added, Answer, Body, CachedCopy, Config, CopyToStore, Expect, FetchError, Fetched,
    ForwardError, Head, Io, Isolate, KeyName, Level, Next, Reply, Side, WaitId, HEALTH_PATH,
};
use serde_json::{json, Value};
use shared::dpop::Nonces;
use shared::{AssertionKey, AssertionVerifier, SignatureVerifier, UnixTime};

const JWKS_URL: &str = "https://issuer.test/jwks";
const BACKUP_JWKS_URL: &str = "https://backup.test/jwks";
const FEED_URL: &str = "https://issuer.test/revocations";
const SECRET: &str = "an assertion secret of at least 32 bytes";
const COPY_SECRET: &str = "a key-set copy secret of at least 32 bytes";

/// The settings every test starts from: two JWKS URLs, no feed, limits in the isolate.
fn settings() -> HashMap<&'static str, String> {
    HashMap::from([
        ("ISSUER", fixtures::ISSUER.to_owned()),
        ("AUDIENCE", fixtures::AUDIENCE.to_owned()),
        ("JWKS_URLS", format!("{JWKS_URL} {BACKUP_JWKS_URL}")),
        ("ORIGIN_URL", "https://origin.test".to_owned()),
        ("ASSERTION_KEY_ID", "edge-1".to_owned()),
        ("ASSERTION_SECRET", SECRET.to_owned()),
        ("RATE_LIMIT_MODE", "isolate".to_owned()),
        ("FETCH_TIMEOUT_MS", "1000".to_owned()),
    ])
}

/// A test's driver: the isolate, the clock, and every side effect so far.
struct Edge {
    isolate: Isolate<&'static str>,
    now: UnixTime,
    side: Vec<Side>,
    /// The points of the keys the driver imported, by name (verifies look them up).
    imported: HashMap<Named, [u8; 65]>,
    /// What the edge set on the last origin response it passed on.
    added: Option<Added>,
}

/// A [`KeyName`], owned: the driver's two namespaces of imported keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Named {
    Issuer(String),
    Proof(String),
}

impl Named {
    fn of(name: KeyName<'_>) -> Self {
        match name {
            KeyName::Issuer(kid) => Self::Issuer(kid.to_owned()),
            KeyName::Proof(jkt) => Self::Proof(jkt.to_owned()),
        }
    }
}

/// What a wait asks for, owned (so a test can hold it while it answers).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Asked {
    Fetch(String),
    ReadCopy,
    Sleep,
    Join { call: WaitId },
    Import { key: Named, point: [u8; 65] },
    Verify { key: Named, valid: bool },
    Limiter { name: String },
    Forward { target: String, assertion: String },
}

impl Edge {
    fn new() -> Self {
        Self::with(&[])
    }

    /// An edge with `changes` to the settings (an empty value removes one).
    fn with(changes: &[(&'static str, &str)]) -> Self {
        let mut vars = settings();
        for (name, value) in changes {
            if value.is_empty() {
                vars.remove(name);
            } else {
                vars.insert(name, (*value).to_owned());
            }
        }
        let config = Config::from_vars(&|name: &str| vars.get(name).cloned()).unwrap();
        Self {
            isolate: Isolate::new(config, 1),
            now: fixtures::now(),
            side: Vec::new(),
            imported: HashMap::new(),
            added: None,
        }
    }

    /// How many DPoP proof keys the driver holds imported.
    fn proof_keys_imported(&self) -> usize {
        let proof_keys = self.imported.keys();
        proof_keys
            .filter(|key| matches!(key, Named::Proof(_)))
            .count()
    }

    fn advance_ms(&mut self, ms: u64) {
        self.now = self.now.plus_millis(ms);
    }

    fn arrive(&mut self, head: Head, name: &'static str) -> Next<&'static str> {
        let next = self.isolate.arrive(head, name, self.now);
        self.take_side();
        next
    }

    /// The isolate's side effects so far, kept; a proof key it let go dropped from the
    /// imported keys, as the driver does.
    fn take_side(&mut self) {
        for side in self.isolate.take_side() {
            if let Side::ForgetProofKey { jkt } = &side {
                self.imported.remove(&Named::Proof(jkt.clone()));
            }
            self.side.push(side);
        }
    }

    /// `GET /orders/7` with `token` as its bearer token, from 203.0.113.9.
    fn request(&mut self, token: &str) -> Next<&'static str> {
        self.arrive(head(&format!("Bearer {token}")), "request")
    }

    fn answer(&mut self, id: WaitId, answer: Answer) -> Next<&'static str> {
        let next = self
            .isolate
            .resume(id, answer, self.now)
            .expect("a live wait");
        self.take_side();
        next
    }

    /// What wait `id` asks for (a verify is checked with the pure-Rust backend).
    fn asked(&self, id: WaitId) -> Asked {
        let (io, _) = self.isolate.io(id).expect("a live wait");
        match io {
            Io::Fetch { get, .. } => Asked::Fetch(get.url.clone()),
            Io::ReadCopy { .. } => Asked::ReadCopy,
            Io::Sleep { .. } => Asked::Sleep,
            Io::Join { call, .. } => Asked::Join { call },
            Io::Import { key, point } => Asked::Import {
                key: Named::of(key),
                point,
            },
            Io::Verify {
                key,
                signature,
                message,
            } => {
                // The key imported under that name, else (an issuer's) the fixture set's.
                let key = Named::of(key);
                let imported = self
                    .imported
                    .get(&key)
                    .and_then(|point| shared::Jwk::from_sec1_bytes("imported", point).ok());
                let jwks = fixtures::jwks();
                let valid = imported
                    .as_ref()
                    .or_else(|| match &key {
                        Named::Issuer(kid) => jwks.find(kid),
                        Named::Proof(_) => None,
                    })
                    .is_some_and(|key| {
                        shared::P256Verifier
                            .verify_es256(key, message, signature)
                            .unwrap_or(false)
                    });
                Asked::Verify { key, valid }
            }
            Io::AskLimiter { name, .. } => Asked::Limiter {
                name: name.to_owned(),
            },
            Io::Forward { target, assertion } => Asked::Forward {
                target: target.to_owned(),
                // A public route's request has none: "" here.
                assertion: assertion.unwrap_or_default().to_owned(),
            },
        }
    }

    /// Plays the runtime until the request is answered or forwarded: the key set from the
    /// issuer (`jwks` with `max-age=300`), imports done, signatures verified. Returns the
    /// last `Next` (a reply, or the wait for the origin) and the fetches made.
    fn drive(
        &mut self,
        mut next: Next<&'static str>,
        jwks: &Value,
    ) -> (Next<&'static str>, Vec<String>) {
        let mut fetched = Vec::new();
        loop {
            let Next::Wait(id) = next else {
                return (next, fetched);
            };
            let answer = match self.asked(id) {
                Asked::Fetch(url) if url.starts_with(FEED_URL) => feed(&[]),
                Asked::Fetch(url) => {
                    fetched.push(url);
                    keys(jwks, "max-age=300")
                }
                Asked::ReadCopy => Answer::Copy(None),
                Asked::Import { key, point } => {
                    self.imported.insert(key, point);
                    Answer::Imported(Ok(()))
                }
                Asked::Verify { valid, .. } => Answer::Verified(Ok(valid)),
                Asked::Sleep
                | Asked::Join { .. }
                | Asked::Limiter { .. }
                | Asked::Forward { .. } => return (Next::Wait(id), fetched),
            };
            next = self.answer(id, answer);
        }
    }

    /// A request with `token` through to its end: the edge's reply, or the origin's 200.
    fn status_of(&mut self, token: &str) -> u16 {
        let next = self.request(token);
        let (next, _) = self.drive(next, &fixtures::jwks_value());
        match next {
            Next::Reply(reply, _) => reply.status,
            Next::Wait(id) => {
                assert!(matches!(self.asked(id), Asked::Forward { .. }));
                match self.answer(id, Answer::Origin(Ok(200))) {
                    Next::PassOn(..) => 200,
                    other => panic!("{other:?}"),
                }
            }
            other => panic!("{other:?}"),
        }
    }

    /// The log lines so far, as JSON, with their level.
    fn logged(&self) -> Vec<(Level, Value)> {
        self.side
            .iter()
            .filter_map(|side| match side {
                Side::Log { level, line } => Some((*level, serde_json::from_str(line).unwrap())),
                _ => None,
            })
            .collect()
    }

    /// The first background job started so far.
    fn background(&self) -> Option<WaitId> {
        self.side.iter().find_map(|side| match side {
            Side::Background { id } => Some(*id),
            _ => None,
        })
    }

    /// A request with `token` that goes on to the origin while a pull of the feed it started
    /// runs behind it: that pull's wait.
    fn forwarded_with_pull_behind(&mut self, token: &str) -> WaitId {
        self.side.clear();
        let next = self.request(token);
        assert!(matches!(self.asked(wait_of(&next)), Asked::Forward { .. }));
        self.background().expect("a pull behind the request")
    }

    /// The first key-set copy stored so far.
    /// Drives `next` (the fixture set fetched, keys imported) to its WebCrypto verify: that
    /// wait, for the test to answer. (The `p256-verify` build has no such wait.)
    #[cfg(not(feature = "p256-verify"))]
    fn until_verify(&mut self, next: &Next<&'static str>) -> WaitId {
        let mut id = wait_of(next);
        while !matches!(self.asked(id), Asked::Verify { .. }) {
            let answer = match self.asked(id) {
                Asked::Import { key, point } => {
                    self.imported.insert(key, point);
                    Answer::Imported(Ok(()))
                }
                _ => keys(&fixtures::jwks_value(), "max-age=300"),
            };
            id = wait_of(&self.answer(id, answer));
        }
        id
    }

    fn stored_copy(&self) -> Option<CopyToStore> {
        self.side.iter().find_map(|side| match side {
            Side::StoreCopy(copy) => Some(copy.clone()),
            _ => None,
        })
    }

    fn events(&self, name: &str) -> usize {
        self.logged()
            .iter()
            .filter(|(_, line)| line["event"] == name)
            .count()
    }
}

fn head(authorization: &str) -> Head {
    Head {
        method: "GET".to_owned(),
        url: "https://edge.test/orders/7?x=1".to_owned(),
        authorization: Some(authorization.to_owned()),
        client_ip: Some("203.0.113.9".to_owned()),
        colo: Some("FRA".to_owned()),
        body: Body::None,
        dpop: None,
    }
}

/// The issuer's answer with `jwks` and `Cache-Control: cache_control`.
fn keys(jwks: &Value, cache_control: &str) -> Answer {
    Answer::Fetched(Ok(Fetched {
        status: 200,
        text: Some(jwks.to_string()),
        cache_control: Some(cache_control.to_owned()),
        etag: Some("\"v1\"".to_owned()),
    }))
}

fn down() -> Answer {
    Answer::Fetched(Err(FetchError::NoAnswer("connection refused".to_owned())))
}

/// A feed page revoking `entries` (kind, value).
fn feed(entries: &[(&str, &str)]) -> Answer {
    feed_page(1, false, entries)
}

/// A feed page revoking `entries`, with its `cursor` and whether the feed has `more`.
fn feed_page(cursor: u64, more: bool, entries: &[(&str, &str)]) -> Answer {
    let revocations: Vec<Value> = entries
        .iter()
        .map(|(kind, value)| {
            json!({"kind": kind, "value": value, "expires_at": fixtures::NOW_SECS + 3600})
        })
        .collect();
    let page = json!({"cursor": cursor, "more": more, "revocations": revocations});
    Answer::Fetched(Ok(Fetched {
        status: 200,
        text: Some(page.to_string()),
        ..Fetched::default()
    }))
}

fn wait_of(next: &Next<&'static str>) -> WaitId {
    match next {
        Next::Wait(id) => *id,
        other => panic!("expected a wait, got {other:?}"),
    }
}

/// An origin's verifier of the edge's assertions.
fn origin_verifier() -> AssertionVerifier {
    AssertionVerifier::new(
        vec![AssertionKey::new("edge-1", SECRET.as_bytes()).unwrap()],
        30_000,
    )
}

/// What an origin holding the edge's key reads of `assertion` for `GET /orders/7?x=1` at `now`.
fn origin_reads(assertion: &str, now: UnixTime) -> shared::EdgeIdentity {
    let verifier = origin_verifier();
    let line = shared::RequestLine {
        method: "GET",
        host: "origin.test",
        path: "/orders/7",
        query: Some("x=1"),
    };
    verifier.verify(Some(assertion), &line, now).unwrap()
}

fn reply_of(next: Next<&'static str>) -> Reply {
    match next {
        Next::Reply(reply, _) => reply,
        other => panic!("expected a reply, got {other:?}"),
    }
}

/// A token issued at `at` (a minute before), valid for five minutes, with its own `jti`.
fn token_at(at: UnixTime, jti: &str) -> String {
    let secs = at.as_millis() / 1000;
    fixtures::with_claims(|c| {
        c.insert("iat".into(), json!(secs - 60));
        c.insert("nbf".into(), json!(secs - 60));
        c.insert("exp".into(), json!(secs + 240));
        c.insert("jti".into(), json!(jti));
    })
}

/// A token signed by fixture key 1 with `kid` in its header.
fn token_with_kid(kid: &str) -> String {
    fixtures::with_header(|header| {
        header.insert("kid".to_owned(), json!(kid));
    })
}

#[test]
fn a_good_token_reaches_the_origin_with_an_assertion_the_origin_verifies() {
    let mut edge = Edge::new();
    let next = edge.request(&fixtures::good_token());
    let (next, fetched) = edge.drive(next, &fixtures::jwks_value());
    assert_eq!(fetched, [JWKS_URL], "one fetch, the first URL");
    let id = wait_of(&next);
    let Asked::Forward { target, assertion } = edge.asked(id) else {
        panic!("not forwarded");
    };
    assert_eq!(target, "https://origin.test/orders/7?x=1");
    let identity = origin_reads(&assertion, edge.now);
    assert_eq!(identity.client_id, "client-7");
    let Next::PassOn(
        Added {
            rate_limit: Some(headers),
            dpop_nonce: None,
        },
        "request",
    ) = edge.answer(id, Answer::Origin(Ok(201)))
    else {
        panic!("the origin's answer is passed on with the RateLimit headers");
    };
    assert!(headers.policy.contains("client"), "{headers:?}");
    let lines = edge.logged();
    let (_, line) = lines.last().unwrap();
    assert_eq!(line["outcome"], "forwarded");
    assert_eq!(line["status"], 201);
    assert_eq!(line["client"], "client-7");
    assert_eq!(line["cache_hit"], false);
}

#[test]
fn a_cached_token_needs_no_crypto_and_no_fetch() {
    let mut edge = Edge::new();
    assert_eq!(edge.status_of(&fixtures::good_token()), 200);
    let next = edge.request(&fixtures::good_token());
    let id = wait_of(&next);
    assert!(
        matches!(edge.asked(id), Asked::Forward { .. }),
        "straight to the origin"
    );
    edge.answer(id, Answer::Origin(Ok(200)));
    let lines = edge.logged();
    assert_eq!(lines.last().unwrap().1["cache_hit"], true);
}

#[test]
fn a_malformed_dpop_credential_is_challenged_as_dpop() {
    let mut edge = Edge::new();
    for authorization in ["DPoP a b", "DPoP", "dpop ===="] {
        let reply = reply_of(edge.arrive(head(authorization), "request"));
        let challenge = reply.challenge.unwrap_or_default();
        assert!(
            challenge.starts_with("DPoP algs=\"ES256\""),
            "{authorization}: {} {challenge}",
            reply.status
        );
    }
    // A malformed bearer credential keeps its Bearer challenge.
    let reply = reply_of(edge.arrive(head("Bearer a b"), "request"));
    assert!(reply.challenge.unwrap_or_default().starts_with("Bearer "));
}

#[test]
fn every_rejection_class_is_answered_by_the_edge_with_its_challenge() {
    // The failed-authentication plan is raised so every class is answered for itself.
    let mut edge = Edge::with(&[("FAILED_AUTH_PLAN", "1000/60s;burst=1000")]);
    for case in fixtures::edge_rejections(fixtures::NOW_SECS) {
        let head = Head {
            // Several Authorization headers reach the core joined, as `Headers.get` joins them.
            authorization: (!case.authorization.is_empty()).then(|| case.authorization.join(", ")),
            ..head("")
        };
        let next = edge.arrive(head, "request");
        let (next, _) = edge.drive(next, &fixtures::jwks_value());
        let reply = reply_of(next);
        assert_eq!(reply.status, case.status, "{}: {}", case.name, reply.body);
        let body: Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(body["error"].as_str(), case.error, "{}", case.name);
        assert!(body["error_description"].is_string(), "{}", case.name);
        let challenge = reply.challenge.unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer realm=\"edgeward\""),
            "{}: {challenge}",
            case.name
        );
        if let Some(error) = case.error {
            assert!(
                challenge.contains(&format!("error=\"{error}\"")),
                "{}: {challenge}",
                case.name
            );
        }
        // The request's log line gives the reason, and never the token.
        let (level, line) = edge.logged().pop().unwrap();
        assert_eq!(
            (line["reason"].as_str(), line["status"].as_u64()),
            (Some(case.reason), Some(u64::from(case.status))),
            "{}: {level:?} {line}",
            case.name
        );
        for value in &case.authorization {
            assert!(!line.to_string().contains(value.as_str()), "{}", case.name);
        }
    }
}

#[test]
fn a_new_isolate_fetches_the_key_set_once_for_concurrent_requests() {
    let mut edge = Edge::new();
    let first = wait_of(&edge.request(&fixtures::good_token()));
    assert_eq!(edge.asked(first), Asked::Fetch(JWKS_URL.to_owned()));
    // A second request while the fetch runs polls on its own timer: no second fetch.
    let second = wait_of(&edge.request(&fixtures::good_token()));
    assert_eq!(edge.asked(second), Asked::Sleep);
    edge.advance_ms(5);
    let second = wait_of(&edge.answer(second, Answer::Timer));
    assert_eq!(
        edge.asked(second),
        Asked::Sleep,
        "still running: polls again"
    );
    // The fetch answers: the first request goes on to its import and verify.
    let next = edge.answer(first, keys(&fixtures::jwks_value(), "max-age=300"));
    let (next, fetched) = edge.drive(next, &fixtures::jwks_value());
    assert!(fetched.is_empty());
    assert!(matches!(edge.asked(wait_of(&next)), Asked::Forward { .. }));
    // The poller's next tick finds the job over and is served from the set (and the cache).
    edge.advance_ms(5);
    let next = edge.answer(second, Answer::Timer);
    let (next, fetched) = edge.drive(next, &fixtures::jwks_value());
    assert!(fetched.is_empty(), "single flight");
    assert!(matches!(edge.asked(wait_of(&next)), Asked::Forward { .. }));
}

#[test]
fn a_poller_stops_waiting_at_the_job_deadline() {
    let mut edge = Edge::new();
    let _first = wait_of(&edge.request(&fixtures::good_token()));
    let second = wait_of(&edge.request(&fixtures::good_token()));
    // Two URLs at 1000 ms each, plus one: the job counts as running for 3 s.
    edge.advance_ms(2_999);
    let second = wait_of(&edge.answer(second, Answer::Timer));
    assert_eq!(edge.asked(second), Asked::Sleep);
    edge.advance_ms(1);
    // Past the deadline the poller starts over; it has had its wait for keys: 503.
    let reply = reply_of(edge.answer(second, Answer::Timer));
    assert_eq!(reply.status, 503);
}

#[test]
fn the_url_list_fails_over_and_no_key_set_at_all_is_503() {
    let mut edge = Edge::new();
    let id = wait_of(&edge.request(&fixtures::good_token()));
    let id = wait_of(&edge.answer(id, down()));
    assert_eq!(edge.asked(id), Asked::Fetch(BACKUP_JWKS_URL.to_owned()));
    let reply = reply_of(edge.answer(id, down()));
    assert_eq!(reply.status, 503);
    assert!(reply.body.contains("temporarily_unavailable"));
    assert_eq!(edge.events("jwks_fetch_failed"), 2);
    assert_eq!(edge.events("jwks_unavailable"), 1);
    // Within the failure backoff a request is refused at once, without a fetch.
    let next = edge.request(&fixtures::good_token());
    assert_eq!(reply_of(next).status, 503);
}

#[test]
fn an_unknown_kid_refetches_once_per_cooldown() {
    let mut edge = Edge::new();
    assert_eq!(edge.status_of(&fixtures::good_token()), 200);
    let stranger = token_with_kid("fixture-9");
    // The first unknown kid refetches (a rotation's new key may be there)...
    let next = edge.request(&stranger);
    let (next, fetched) = edge.drive(next, &fixtures::jwks_value());
    assert_eq!(fetched, [JWKS_URL]);
    assert_eq!(reply_of(next).status, 401);
    // ...the next one within the cooldown does not...
    let cooldown = shared::jwks_refresh::RefreshPolicy::default().unknown_kid_cooldown_ms;
    edge.advance_ms(cooldown - 1);
    let next = edge.request(&token_with_kid("fixture-8"));
    let (next, fetched) = edge.drive(next, &fixtures::jwks_value());
    assert!(fetched.is_empty(), "within the cooldown: no fetch");
    assert_eq!(reply_of(next).status, 401);
    // ...and one at the cooldown's end does.
    edge.advance_ms(1);
    let next = edge.request(&token_with_kid("fixture-7"));
    let (_, fetched) = edge.drive(next, &fixtures::jwks_value());
    assert_eq!(fetched, [JWKS_URL]);
}

#[test]
fn a_rotated_key_is_found_by_the_unknown_kid_refetch() {
    let mut edge = Edge::new();
    let only_key_1 = json!({"keys": [fixtures::public_jwk(1)]});
    let next = edge.request(&fixtures::good_token());
    let (next, _) = edge.drive(next, &only_key_1);
    assert!(matches!(edge.asked(wait_of(&next)), Asked::Forward { .. }));
    // Key 2 appears at the issuer; a token signed by it makes the edge look again.
    let rotated = fixtures::sign_with(
        &json!({"alg": "ES256", "typ": "at+jwt", "kid": fixtures::kid(2)}),
        &fixtures::claims(),
        2,
    );
    let next = edge.request(&rotated);
    let (next, fetched) = edge.drive(next, &fixtures::jwks_value());
    assert_eq!(fetched, [JWKS_URL]);
    assert!(matches!(edge.asked(wait_of(&next)), Asked::Forward { .. }));
}

#[test]
fn a_stale_key_set_serves_while_it_refreshes_and_dies_at_max_stale() {
    let mut edge = Edge::with(&[("JWKS_MAX_STALE_SECS", "60")]);
    let next = edge.request(&fixtures::good_token());
    let (next, _) = edge.drive(next, &fixtures::jwks_value());
    wait_of(&next);
    // Fresh for max-age=300 s: a new token needs no fetch until then.
    edge.advance_ms(299_999);
    let next = edge.request(&token_at(edge.now, "jti-a"));
    assert_eq!(edge.background(), None, "fresh: no refresh");
    let (next, fetched) = edge.drive(next, &fixtures::jwks_value());
    assert!(fetched.is_empty());
    wait_of(&next);
    // Stale: served at once, with a refresh in the background (the issuer is down).
    edge.advance_ms(1);
    let next = edge.request(&token_at(edge.now, "jti-b"));
    let background = edge.background().expect("a background refresh");
    let (next, _) = edge.drive(next, &fixtures::jwks_value());
    assert!(
        matches!(edge.asked(wait_of(&next)), Asked::Forward { .. }),
        "served stale"
    );
    let background = wait_of(&edge.answer(background, down()));
    assert!(matches!(
        edge.answer(background, down()),
        Next::Idle("request")
    ));
    // Up to max-stale past freshness (inclusive) a new token still verifies against the
    // stale set...
    edge.advance_ms(60_000);
    assert_eq!(edge.status_of(&token_at(edge.now, "jti-c")), 200);
    // ...and past it the set is dead: nothing is verified with it, whatever the issuer does
    // (here it is down, and the refresh that last request started fails).
    let background: Vec<WaitId> = edge
        .side
        .iter()
        .filter_map(|s| match s {
            Side::Background { id } => Some(*id),
            _ => None,
        })
        .collect();
    for id in background {
        let mut next = Next::Wait(id);
        while let Next::Wait(id) = next {
            if edge.isolate.expects(id).is_none() {
                break;
            }
            next = edge.answer(id, down());
        }
    }
    edge.advance_ms(1);
    let mut next = edge.request(&token_at(edge.now, "jti-d"));
    while let Next::Wait(id) = next {
        match edge.asked(id) {
            Asked::Fetch(_) => next = edge.answer(id, down()),
            other => panic!("the dead set was used: {other:?}"),
        }
    }
    assert_eq!(reply_of(next).status, 503);
}

#[test]
fn past_max_stale_a_cached_token_is_refused_as_a_new_one_is() {
    let mut edge = Edge::with(&[("JWKS_MAX_STALE_SECS", "60")]);
    // A token that outlives the set's freshness and max-stale.
    let token = fixtures::with_claims(|claims| {
        claims.insert("exp".into(), json!(fixtures::NOW_SECS + 3_000));
    });
    assert_eq!(edge.status_of(&token), 200);
    // Stale: a cache hit is served, and it starts the refresh (the issuer is down).
    edge.advance_ms(300_000);
    edge.side.clear();
    let next = edge.request(&token);
    assert!(matches!(edge.asked(wait_of(&next)), Asked::Forward { .. }));
    let refresh = edge
        .background()
        .expect("a hit on a stale set refreshes it");
    let mut step = Next::Wait(refresh);
    while let Next::Wait(id) = step {
        step = edge.answer(id, down());
    }
    // At max-stale (inclusive) the cached token still passes...
    edge.advance_ms(60_000);
    edge.side.clear();
    let next = edge.request(&token);
    assert!(matches!(edge.asked(wait_of(&next)), Asked::Forward { .. }));
    let refresh = edge.background().expect("another refresh");
    let mut step = Next::Wait(refresh);
    while let Next::Wait(id) = step {
        step = edge.answer(id, down());
    }
    // ...and past it, the set it was verified with is not trusted: 503, as for a new token.
    edge.advance_ms(1);
    let mut next = edge.request(&token);
    while let Next::Wait(id) = next {
        match edge.asked(id) {
            Asked::Fetch(_) => next = edge.answer(id, down()),
            other => panic!("the cached token was served: {other:?}"),
        }
    }
    assert_eq!(reply_of(next).status, 503);
}

fn copy_edge() -> Edge {
    Edge::with(&[("KEYSET_COPY_SECRET", COPY_SECRET)])
}

/// The copy an edge with the copy secret stores after fetching the fixture set at `now`.
fn stored_copy() -> CachedCopy {
    stored_copy_of(&fixtures::jwks_value())
}

/// The copy an edge with the copy secret stores after fetching `jwks` at `now`.
fn stored_copy_of(jwks: &Value) -> CachedCopy {
    let mut edge = copy_edge();
    let next = edge.request(&fixtures::good_token());
    let id = wait_of(&next);
    assert_eq!(
        edge.asked(id),
        Asked::ReadCopy,
        "a new isolate reads the colo's copy first"
    );
    let next = edge.answer(id, Answer::Copy(None));
    edge.drive(next, jwks);
    let copy = edge.stored_copy().expect("the fetched set is stored");
    CachedCopy {
        text: copy.text,
        fetched_at: Some(copy.fetched_at_ms.to_string()),
        cache_control: copy.cache_control,
        etag: copy.etag,
        mac: Some(copy.mac),
    }
}

#[test]
fn a_new_isolate_from_the_copy_still_looks_for_a_rotated_key() {
    // The colo's copy has key 1 only (key 2 is new at the issuer, as after a revocation
    // with no key pending): a new isolate that starts from it must still refetch for key 2's
    // first token, not refuse it as unknown until the copy goes stale.
    let copy = stored_copy_of(&json!({"keys": [fixtures::public_jwk(1)]}));
    let mut edge = copy_edge();
    let rotated = fixtures::sign_with(
        &json!({"alg": "ES256", "typ": "at+jwt", "kid": fixtures::kid(2)}),
        &fixtures::claims(),
        2,
    );
    let id = wait_of(&edge.request(&rotated));
    assert_eq!(edge.asked(id), Asked::ReadCopy);
    let next = edge.answer(id, Answer::Copy(Some(copy)));
    let (next, fetched) = edge.drive(next, &fixtures::jwks_value());
    assert_eq!(fetched, [JWKS_URL], "one refetch for the unknown kid");
    assert!(matches!(edge.asked(wait_of(&next)), Asked::Forward { .. }));
}

#[test]
fn an_unknown_kid_refetches_once_per_request_while_the_issuer_is_down() {
    // Started from the copy, the issuer down and no cooldown: one refetch for the stranger's
    // request (both URLs tried), then its 401, not a refetch for every failed one.
    let copy = stored_copy_of(&json!({"keys": [fixtures::public_jwk(1)]}));
    let mut edge = Edge::with(&[
        ("KEYSET_COPY_SECRET", COPY_SECRET),
        ("UNKNOWN_KID_COOLDOWN_MS", "0"),
    ]);
    let id = wait_of(&edge.request(&token_with_kid(&fixtures::kid(2))));
    let mut next = edge.answer(id, Answer::Copy(Some(copy)));
    let mut fetches = 0;
    while let Next::Wait(id) = next {
        let answer = match edge.asked(id) {
            Asked::Fetch(url) if url.starts_with(FEED_URL) => feed(&[]),
            Asked::Fetch(_) => {
                fetches += 1;
                assert!(fetches <= 2, "a second round of refetches");
                edge.advance_ms(1_000);
                down()
            }
            other => panic!("{other:?}"),
        };
        next = edge.answer(id, answer);
    }
    assert_eq!(fetches, 2, "one refetch over the two URLs");
    assert_eq!(reply_of(next).status, 401);
}

#[test]
fn a_new_isolate_starts_from_a_tagged_copy_without_the_issuer() {
    let copy = stored_copy();
    let mut edge = copy_edge();
    let id = wait_of(&edge.request(&fixtures::good_token()));
    let next = edge.answer(id, Answer::Copy(Some(copy)));
    let (next, fetched) = edge.drive(next, &fixtures::jwks_value());
    assert!(fetched.is_empty(), "the copy was enough");
    assert!(matches!(edge.asked(wait_of(&next)), Asked::Forward { .. }));
}

#[test]
fn a_planted_or_edited_copy_is_refused() {
    let good = stored_copy();
    let planted = [
        CachedCopy {
            mac: Some("AAAA".to_owned()),
            ..good.clone()
        },
        CachedCopy {
            text: json!({"keys": [fixtures::public_jwk(2)]}).to_string(),
            ..good.clone()
        },
        // Its time moved later, to live longer.
        CachedCopy {
            fetched_at: Some((fixtures::now().as_millis() + 600_000).to_string()),
            ..good.clone()
        },
        CachedCopy { mac: None, ..good },
    ];
    for copy in planted {
        let mut edge = copy_edge();
        let id = wait_of(&edge.request(&fixtures::good_token()));
        let next = edge.answer(id, Answer::Copy(Some(copy)));
        assert_eq!(edge.events("jwks_copy_refused"), 1);
        assert_eq!(
            edge.asked(wait_of(&next)),
            Asked::Fetch(JWKS_URL.to_owned())
        );
    }
}

#[test]
fn revocations_take_effect_at_the_first_pull_after_the_interval() {
    let mut edge = Edge::with(&[
        ("REVOCATION_URLS", FEED_URL),
        ("REVOCATION_INTERVAL_MS", "5000"),
    ]);
    // A new isolate waits for its first pull.
    let next = edge.request(&fixtures::good_token());
    let id = wait_of(&next);
    assert_eq!(edge.asked(id), Asked::Fetch(format!("{FEED_URL}?since=0")));
    let next = edge.answer(id, feed(&[]));
    let (next, _) = edge.drive(next, &fixtures::jwks_value());
    edge.answer(wait_of(&next), Answer::Origin(Ok(200)));
    // The token is revoked at the issuer; within the interval the list is current.
    edge.advance_ms(4_999);
    assert_eq!(edge.status_of(&fixtures::good_token()), 200);
    // At the interval the request goes on, and the pull runs behind it...
    edge.advance_ms(1);
    let pull = edge.forwarded_with_pull_behind(&fixtures::good_token());
    assert_eq!(
        edge.asked(pull),
        Asked::Fetch(format!("{FEED_URL}?since=1")),
        "from the cursor"
    );
    assert!(matches!(
        edge.answer(pull, feed(&[("jti", "jti-0001")])),
        Next::Idle(_)
    ));
    // ...and from its answer on, the cached token is refused.
    let reply = reply_of(edge.request(&fixtures::good_token()));
    assert_eq!(reply.status, 401);
    assert!(reply.challenge.unwrap().contains("invalid_token"));
}

/// With `REVOCATION_FEED_TOKEN`, every feed pull carries it as a bearer token (at the issuer,
/// a budget of their own that no one without it can run down); a key-set fetch never does. A
/// token the issuer could not accept is a start-up error.
#[test]
fn feed_pulls_carry_the_feed_token_and_nothing_else_does() {
    let token = "an-edge-feed-token-0123456789abcdef";
    let mut edge = Edge::with(&[
        ("REVOCATION_URLS", FEED_URL),
        ("REVOCATION_FEED_TOKEN", token),
    ]);
    let fetch = |edge: &Edge, id| match edge.isolate.io(id) {
        Some((Io::Fetch { get, .. }, _)) => (get.url.clone(), get.authorization.clone()),
        other => panic!("a fetch, not {other:?}"),
    };
    let pull = wait_of(&edge.request(&fixtures::good_token()));
    let bearer = Some(Rc::from(format!("Bearer {token}")));
    assert_eq!(fetch(&edge, pull), (format!("{FEED_URL}?since=0"), bearer));
    let key_set = wait_of(&edge.answer(pull, feed(&[])));
    assert_eq!(fetch(&edge, key_set), (JWKS_URL.to_owned(), None));

    let too_long = "a".repeat(513);
    for bad in [
        "too-short",
        "an edge feed token with spaces 0123456789",
        &too_long,
    ] {
        let mut vars = settings();
        vars.insert("REVOCATION_FEED_TOKEN", bad.to_owned());
        let Err(err) = Config::from_vars(&|name: &str| vars.get(name).cloned()) else {
            panic!("{bad} is refused");
        };
        assert!(err.to_string().contains("REVOCATION_FEED_TOKEN"), "{err}");
    }
}

#[test]
fn an_isolate_that_sat_idle_waits_for_the_feed_unless_the_feed_is_down() {
    let mut edge = Edge::with(&[
        ("REVOCATION_URLS", FEED_URL),
        ("REVOCATION_INTERVAL_MS", "5000"),
        ("FETCH_TIMEOUT_MS", "2000"),
    ]);
    let id = wait_of(&edge.request(&fixtures::good_token()));
    let next = edge.answer(id, feed(&[]));
    let (next, _) = edge.drive(next, &fixtures::jwks_value());
    edge.answer(wait_of(&next), Answer::Origin(Ok(200)));
    // The list's bound is an interval and one fetch timeout from the start of the pull that
    // brought it. A millisecond inside it, the request goes on and the pull runs behind...
    edge.advance_ms(6_999);
    let pull = edge.forwarded_with_pull_behind(&fixtures::good_token());
    // ...and once the list crosses the bound with that pull still out, a request polls for it.
    edge.advance_ms(1);
    let poller = wait_of(&edge.request(&fixtures::good_token()));
    assert_eq!(edge.asked(poller), Asked::Sleep);
    assert!(matches!(edge.answer(pull, feed(&[])), Next::Idle(_)));
    let next = edge.answer(poller, Answer::Timer);
    assert!(matches!(edge.asked(wait_of(&next)), Asked::Forward { .. }));
    // At the bound (the isolate sat idle since), the request waits for a pull: the token
    // revoked meanwhile is refused, not served from the list it had.
    edge.advance_ms(6_999);
    let id = wait_of(&edge.request(&fixtures::good_token()));
    assert_eq!(edge.asked(id), Asked::Fetch(format!("{FEED_URL}?since=1")));
    let reply = reply_of(edge.answer(id, feed(&[("jti", "jti-0001")])));
    assert_eq!(reply.status, 401);
    // So does a request that arrives while that pull runs.
    edge.advance_ms(60_000);
    let token = token_at(edge.now, "jti-idle");
    let first = wait_of(&edge.request(&token));
    assert!(matches!(edge.asked(first), Asked::Fetch(url) if url.starts_with(FEED_URL)));
    let second = wait_of(&edge.request(&token));
    assert_eq!(edge.asked(second), Asked::Sleep, "it polls for the pull");
    // The feed is down: the request goes on with the list it has (logged), and for a while
    // (the excuse, below) nothing waits for the feed; a pull runs behind the requests each
    // interval.
    edge.side.clear();
    let next = edge.answer(first, down());
    let (next, _) = edge.drive(next, &fixtures::jwks_value());
    assert!(matches!(edge.asked(wait_of(&next)), Asked::Forward { .. }));
    assert_eq!(edge.events("revocation_feed_failed"), 1);
    let next = edge.answer(second, Answer::Timer);
    let (next, _) = edge.drive(next, &fixtures::jwks_value());
    assert!(matches!(edge.asked(wait_of(&next)), Asked::Forward { .. }));
    edge.advance_ms(4_999);
    edge.side.clear();
    assert_eq!(edge.status_of(&token), 200);
    assert_eq!(edge.background(), None, "no pull within the interval");
    edge.advance_ms(1);
    let pull = edge.forwarded_with_pull_behind(&token);
    // A failure excuses the list's age for an interval and a pull's budget after it (9 s
    // here): up to its last millisecond the request goes on, and a pull runs behind it...
    edge.answer(pull, down());
    edge.advance_ms(8_999);
    let pull = edge.forwarded_with_pull_behind(&token);
    // ...and after it, with that pull still out, requests poll for it (the feed is back).
    edge.advance_ms(1);
    let first = wait_of(&edge.request(&token));
    let second = wait_of(&edge.request(&token));
    assert_eq!(
        (edge.asked(first), edge.asked(second)),
        (Asked::Sleep, Asked::Sleep)
    );
    assert!(matches!(edge.answer(pull, feed(&[])), Next::Idle(_)));
    let next = edge.answer(first, Answer::Timer);
    assert!(matches!(edge.asked(wait_of(&next)), Asked::Forward { .. }));
    // Idle past the excuse of another failure: the request waits for its own pull, and so
    // does one that arrives while that pull runs.
    edge.advance_ms(5_000);
    let pull = edge.forwarded_with_pull_behind(&token);
    edge.answer(pull, down());
    edge.advance_ms(9_000);
    let own = wait_of(&edge.request(&token));
    assert!(matches!(edge.asked(own), Asked::Fetch(url) if url.starts_with(FEED_URL)));
    let other = wait_of(&edge.request(&token));
    assert_eq!(edge.asked(other), Asked::Sleep);
    let next = edge.answer(own, feed(&[]));
    assert!(matches!(edge.asked(wait_of(&next)), Asked::Forward { .. }));
}

#[test]
fn a_pull_reads_the_feed_to_its_end_or_its_deadline() {
    let mut edge = Edge::with(&[("REVOCATION_URLS", FEED_URL), ("FETCH_TIMEOUT_MS", "2000")]);
    // Twelve pages, the token's jti on the last: all are read before the request goes on.
    let mut next = edge.request(&fixtures::good_token());
    for page in 0..12 {
        let id = wait_of(&next);
        assert_eq!(
            edge.asked(id),
            Asked::Fetch(format!("{FEED_URL}?since={page}"))
        );
        let last = page == 11;
        let filler = format!("filler-{page}");
        let entry = if last { "jti-0001" } else { &filler };
        next = edge.answer(id, feed_page(page + 1, !last, &[("jti", entry)]));
    }
    let (next, _) = edge.drive(next, &fixtures::jwks_value());
    assert_eq!(reply_of(next).status, 401);

    // A feed whose pages outlast the pull's deadline (a fetch timeout per URL, and one
    // more): no page is asked for that could still be out at the deadline, so the pull
    // stops there (logged), and the request goes on with what was read.
    let mut edge = Edge::with(&[("REVOCATION_URLS", FEED_URL), ("FETCH_TIMEOUT_MS", "2000")]);
    let id = wait_of(&edge.request(&fixtures::good_token()));
    let id = wait_of(&edge.answer(id, feed_page(1, true, &[])));
    edge.advance_ms(1_999);
    let id = wait_of(&edge.answer(id, feed_page(2, true, &[])));
    assert_eq!(edge.asked(id), Asked::Fetch(format!("{FEED_URL}?since=2")));
    edge.advance_ms(1);
    let next = edge.answer(id, feed_page(3, true, &[]));
    let (next, _) = edge.drive(next, &fixtures::jwks_value());
    assert!(matches!(edge.asked(wait_of(&next)), Asked::Forward { .. }));
    let failed = edge.logged();
    let failed = failed
        .iter()
        .find(|(_, line)| line["event"] == "revocation_feed_failed")
        .expect("logged");
    assert!(failed.1["reason"].as_str().unwrap().contains("deadline"));
    // The next pull, an interval after the last began (and while that one's failure is
    // recent), runs behind the request from the cursor; a page that says "more" without
    // moving it ends the pull (logged) rather than be asked for again.
    edge.advance_ms(3_000);
    let pull = edge.forwarded_with_pull_behind(&fixtures::good_token());
    assert_eq!(
        edge.asked(pull),
        Asked::Fetch(format!("{FEED_URL}?since=3"))
    );
    assert!(matches!(
        edge.answer(pull, feed_page(3, true, &[])),
        Next::Idle(_)
    ));
    let logged = edge.logged();
    let stuck = logged
        .iter()
        .rev()
        .find(|(_, line)| line["event"] == "revocation_feed_failed");
    assert!(stuck.unwrap().1["reason"]
        .as_str()
        .unwrap()
        .contains("cursor"));
}

#[test]
fn a_revoked_key_leaves_the_set_the_token_cache_and_the_copy() {
    let mut edge = Edge::with(&[
        ("REVOCATION_URLS", FEED_URL),
        ("KEYSET_COPY_SECRET", COPY_SECRET),
    ]);
    let id = wait_of(&edge.request(&fixtures::good_token()));
    let next = edge.answer(id, feed(&[]));
    let id = wait_of(&next);
    let next = edge.answer(id, Answer::Copy(None));
    let (next, _) = edge.drive(next, &fixtures::jwks_value());
    edge.answer(wait_of(&next), Answer::Origin(Ok(200)));
    edge.advance_ms(5_000);
    edge.side.clear();
    let next = edge.request(&fixtures::good_token());
    let pull = edge.background().unwrap();
    edge.answer(wait_of(&next), Answer::Origin(Ok(200)));
    edge.side.clear();
    edge.answer(pull, feed(&[("kid", &fixtures::kid(1))]));
    let rewritten = edge
        .stored_copy()
        .map(|copy| copy.text)
        .expect("the copy is rewritten without the key");
    assert!(!rewritten.contains(&fixtures::kid(1)));
    assert_eq!(edge.events("keys_revoked"), 1);
    // The cached token is gone with its key, and its kid is refused as revoked without a
    // refetch (it must not spend the unknown-kid cooldown).
    let next = edge.request(&fixtures::good_token());
    let (next, fetched) = edge.drive(next, &fixtures::jwks_value());
    assert!(fetched.is_empty());
    let reply = reply_of(next);
    assert_eq!(reply.status, 401);
    let lines = edge.logged();
    assert_eq!(lines.last().unwrap().1["reason"], "revoked");
}

#[test]
fn the_client_plan_answers_429_at_its_count_with_rate_limit_headers() {
    let mut edge = Edge::new();
    // The fixture's plan: 1000/60s with a burst of 100.
    for n in 0..100 {
        assert_eq!(edge.status_of(&fixtures::good_token()), 200, "request {n}");
    }
    let reply = reply_of(edge.request(&fixtures::good_token()));
    assert_eq!(reply.status, 429);
    assert!(reply.retry_after.is_some());
    assert!(reply.rate_limit.unwrap().policy.contains("client"));
    // One emission interval (60 ms) later, one more passes.
    edge.advance_ms(60);
    assert_eq!(edge.status_of(&fixtures::good_token()), 200);
}

#[test]
fn failed_authentications_cost_the_client_network_its_budget() {
    let mut edge = Edge::with(&[("FAILED_AUTH_PLAN", "3/60s;burst=3")]);
    let bad = fixtures::sign_with(&fixtures::header(), &fixtures::claims(), 2);
    for _ in 0..3 {
        assert_eq!(edge.status_of(&bad), 401);
    }
    let next = edge.request(&bad);
    let (next, _) = edge.drive(next, &fixtures::jwks_value());
    let reply = reply_of(next);
    assert_eq!(reply.status, 429);
    assert!(reply.rate_limit.unwrap().policy.contains("failed-auth"));
    // A missing token is only challenged, at no cost.
    let reply = reply_of(edge.arrive(head("Basic x"), "request"));
    assert_eq!(reply.status, 401);
}

#[test]
fn an_address_over_its_failed_auth_budget_is_refused_before_any_wait() {
    let mut edge = Edge::with(&[
        ("RATE_LIMIT_MODE", "durable"),
        ("JWKS_MAX_STALE_SECS", "60"),
        ("REVOCATION_URLS", FEED_URL),
    ]);
    // A forged token; the address's object says its failed-auth budget is spent for 10 min.
    let bad = fixtures::sign_with(&fixtures::header(), &fixtures::claims(), 2);
    let next = edge.request(&bad);
    let (next, _) = edge.drive(next, &fixtures::jwks_value());
    let id = wait_of(&next);
    assert!(matches!(edge.asked(id), Asked::Limiter { .. }));
    let denied = r#"{"allowed":false,"limit":20,"remaining":0,"reset_after_ms":600000,"retry_after_ms":600000}"#;
    let reply = reply_of(edge.answer(id, Answer::Limit(Ok(denied.to_owned()))));
    assert_eq!(reply.status, 429);
    // The revocation list is past its bound and the key set past max-stale, so a token to
    // check would wait for a pull and a refresh: the address whose denial the isolate keeps
    // is refused first, with no fetch and no wait.
    edge.advance_ms(361_000);
    let reply = reply_of(edge.request(&token_at(edge.now, "jti-next")));
    assert_eq!(reply.status, 429);
}

#[test]
fn the_durable_object_decides_and_its_denial_is_kept_in_the_isolate() {
    let mut edge = Edge::with(&[("RATE_LIMIT_MODE", "durable")]);
    let next = edge.request(&fixtures::good_token());
    let (next, _) = edge.drive(next, &fixtures::jwks_value());
    let id = wait_of(&next);
    assert_eq!(
        edge.asked(id),
        Asked::Limiter {
            name: "FRA/client:client-7".to_owned()
        }
    );
    let denied = r#"{"allowed":false,"limit":100,"remaining":0,"reset_after_ms":2000,"retry_after_ms":2000}"#;
    let reply = reply_of(edge.answer(id, Answer::Limit(Ok(denied.to_owned()))));
    assert_eq!(reply.status, 429);
    assert_eq!(reply.retry_after.as_deref(), Some("2"));
    // Until then the isolate refuses the client without asking.
    edge.advance_ms(1_999);
    assert_eq!(reply_of(edge.request(&fixtures::good_token())).status, 429);
    edge.advance_ms(1);
    let next = edge.request(&fixtures::good_token());
    assert!(matches!(edge.asked(wait_of(&next)), Asked::Limiter { .. }));
}

#[test]
fn the_assertion_is_signed_when_the_request_leaves_not_before_its_waits() {
    let mut edge = Edge::with(&[("RATE_LIMIT_MODE", "durable")]);
    let next = edge.request(&fixtures::good_token());
    let (next, _) = edge.drive(next, &fixtures::jwks_value());
    let id = wait_of(&next);
    assert!(matches!(edge.asked(id), Asked::Limiter { .. }));
    // The object takes 1.5 s to answer: the origin must get an assertion of now, not of
    // when the token was checked (its max age is counted from `ts`).
    edge.advance_ms(1_500);
    let allowed =
        r#"{"allowed":true,"limit":100,"remaining":99,"reset_after_ms":600,"retry_after_ms":0}"#;
    let next = edge.answer(id, Answer::Limit(Ok(allowed.to_owned())));
    let Asked::Forward { assertion, .. } = edge.asked(wait_of(&next)) else {
        panic!("not forwarded");
    };
    assert_eq!(origin_reads(&assertion, edge.now).ts, edge.now.as_millis());
}

#[test]
fn an_unreachable_durable_object_leaves_the_decision_to_the_isolate() {
    let mut edge = Edge::with(&[("RATE_LIMIT_MODE", "durable")]);
    let next = edge.request(&fixtures::good_token());
    let (next, _) = edge.drive(next, &fixtures::jwks_value());
    let next = edge.answer(wait_of(&next), Answer::Limit(Err("status 500".to_owned())));
    assert!(matches!(edge.asked(wait_of(&next)), Asked::Forward { .. }));
    assert_eq!(edge.events("rate_limiter_unreachable"), 1);
    edge.answer(wait_of(&next), Answer::Origin(Ok(200)));
    let lines = edge.logged();
    assert_eq!(lines.last().unwrap().1["limit_source"], "fallback");
}

#[test]
fn an_unreachable_origin_is_502_and_an_unbuildable_request_500() {
    let mut edge = Edge::new();
    let next = edge.request(&fixtures::good_token());
    let (next, _) = edge.drive(next, &fixtures::jwks_value());
    let error = ForwardError::Unreachable("connection refused".to_owned());
    let reply = reply_of(edge.answer(wait_of(&next), Answer::Origin(Err(error))));
    assert_eq!(reply.status, 502);
    let next = edge.request(&fixtures::good_token());
    let error = ForwardError::Build("bad header".to_owned());
    let reply = reply_of(edge.answer(wait_of(&next), Answer::Origin(Err(error))));
    assert_eq!(reply.status, 500);
    assert!(
        !reply.body.contains("bad header"),
        "details are logged, not sent"
    );
}

#[test]
fn an_answer_for_another_instance_or_a_finished_wait_finds_nothing() {
    let mut edge = Edge::new();
    let id = wait_of(&edge.request(&fixtures::good_token()));
    // The same count under the instance before a trap.
    let old = WaitId(id.0 & (u32::MAX >> edge_validator::isolate::EPOCH_BITS));
    assert_eq!(edge.isolate.expects(old), None);
    assert!(edge
        .isolate
        .resume(old, Answer::Verified(Ok(true)), edge.now)
        .is_none());
    assert_eq!(edge.isolate.expects(id), Some(Expect::Fetched));
    edge.answer(id, keys(&fixtures::jwks_value(), "max-age=300"));
    assert!(edge.isolate.resume(id, down(), edge.now).is_none(), "once");
}

// (The `p256-verify` measurement build verifies in wasm: no import, no WebCrypto verify.)
#[cfg(not(feature = "p256-verify"))]
#[test]
fn a_failed_import_or_verify_is_unverifiable_not_accepted() {
    let mut edge = Edge::new();
    let id = wait_of(&edge.request(&fixtures::good_token()));
    let id = wait_of(&edge.answer(id, keys(&fixtures::jwks_value(), "max-age=300")));
    assert!(matches!(edge.asked(id), Asked::Import { .. }));
    let reply = reply_of(edge.answer(id, Answer::Imported(Err("NotSupportedError".into()))));
    assert_eq!(reply.status, 503, "{reply:?}");
    let mut edge = Edge::new();
    let next = edge.request(&fixtures::good_token());
    let id = edge.until_verify(&next);
    let reply = reply_of(edge.answer(id, Answer::Verified(Err("OperationError".into()))));
    assert_eq!(reply.status, 503);
    assert_eq!(edge.events("webcrypto_verify_failed"), 1);
}

// (The `p256-verify` build has no WebCrypto to fail.)
#[cfg(not(feature = "p256-verify"))]
#[test]
fn the_edges_own_verify_failure_costs_no_failed_auth_budget() {
    let mut edge = Edge::with(&[("FAILED_AUTH_PLAN", "3/60s;burst=3")]);
    for round in 0..5 {
        let jti = format!("jti-{round}");
        let next = edge.request(&token_at(edge.now, &jti));
        let id = edge.until_verify(&next);
        let reply = reply_of(edge.answer(id, Answer::Verified(Err("OperationError".into()))));
        assert_eq!(reply.status, 503, "round {round}: {reply:?}");
    }
    // WebCrypto is back: the address has its whole budget.
    assert_eq!(edge.status_of(&token_at(edge.now, "jti-after")), 200);
}

// (The `p256-verify` build verifies at once: no refresh can land during its check.)
#[cfg(not(feature = "p256-verify"))]
#[test]
fn a_token_verified_while_its_kid_came_to_name_another_key_is_not_kept() {
    let mut edge = Edge::new();
    let secs = edge.now.as_millis() / 1000;
    let token = fixtures::with_claims(|c| {
        c.insert("iat".into(), json!(secs - 60));
        c.insert("nbf".into(), json!(secs - 60));
        c.insert("exp".into(), json!(secs + 3_000));
        c.insert("jti".into(), json!("jti-swapped"));
    });
    let next = edge.request(&token);
    let id = edge.until_verify(&next);
    // While WebCrypto checks it, the set goes stale and the refresh another request starts
    // publishes key 2's point under key 1's kid.
    edge.advance_ms(300_000);
    edge.side.clear();
    let _other = edge.request(&token_at(edge.now, "jti-other"));
    let refresh = edge.background().expect("a background refresh");
    let mut replaced = fixtures::public_jwk(2);
    replaced["kid"] = json!(fixtures::kid(1));
    edge.answer(refresh, keys(&json!({"keys": [replaced]}), "max-age=300"));
    // The verdict on the old key arrives: this request is served...
    let next = edge.answer(id, Answer::Verified(Ok(true)));
    assert!(matches!(edge.asked(wait_of(&next)), Asked::Forward { .. }));
    // ...but the token was not kept: the next request with it is checked afresh.
    edge.side.clear();
    let next = edge.request(&token);
    assert!(
        !matches!(next, Next::Wait(id) if matches!(edge.asked(id), Asked::Forward { .. })),
        "served from the cache"
    );
}

#[test]
fn health_says_whether_tokens_can_be_verified() {
    let mut edge = Edge::new();
    let mut health = head("");
    health.url = format!("https://edge.test{HEALTH_PATH}");
    let reply = reply_of(edge.arrive(health.clone(), "health"));
    let body: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(
        (body["status"].as_str(), body["jwks"].as_str()),
        (Some("degraded"), Some("missing"))
    );
    assert_eq!(edge.status_of(&fixtures::good_token()), 200);
    let reply = reply_of(edge.arrive(health, "health"));
    let body: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(
        (body["status"].as_str(), body["jwks"].as_str()),
        (Some("ok"), Some("fresh"))
    );
}

#[test]
fn forwarded_lines_are_sampled_and_refusals_always_logged() {
    let mut edge = Edge::with(&[("LOG_FORWARDED_EVERY", "3")]);
    for _ in 0..6 {
        assert_eq!(edge.status_of(&fixtures::good_token()), 200);
    }
    edge.arrive(head("Basic x"), "request");
    let lines = edge.logged();
    let forwarded = lines
        .iter()
        .filter(|(_, l)| l["outcome"] == "forwarded")
        .count();
    let rejected = lines
        .iter()
        .filter(|(_, l)| l["outcome"] == "rejected")
        .count();
    assert_eq!((forwarded, rejected), (2, 1));
    for (_, line) in &lines {
        assert!(
            !line.to_string().contains(&fixtures::good_token()),
            "never the token"
        );
    }
}

#[test]
fn requests_coming_and_going_never_push_a_running_job_out() {
    let mut edge = Edge::with(&[("REVOCATION_URLS", FEED_URL)]);
    let pull = wait_of(&edge.request(&fixtures::good_token()));
    assert_eq!(
        edge.asked(pull),
        Asked::Fetch(format!("{FEED_URL}?since=0"))
    );
    // More requests than the table of suspended requests holds, while each job runs: they
    // poll for it (a tick waits again under the same id).
    let flood = |edge: &mut Edge| {
        let pollers: Vec<WaitId> = (0..20_000)
            .map(|_| wait_of(&edge.arrive(head("Bearer x.y.z"), "poller")))
            .collect();
        let last = *pollers.last().unwrap();
        assert_eq!(edge.asked(last), Asked::Sleep);
        assert_eq!(wait_of(&edge.answer(last, Answer::Timer)), last);
    };
    flood(&mut edge);
    // The pull's answer still lands (the request that started it was pushed out: a 500).
    edge.answer(pull, feed(&[("jti", "jti-0001")]));
    let keys_job = wait_of(&edge.arrive(head("Bearer x.y.z"), "keys"));
    assert_eq!(edge.asked(keys_job), Asked::Fetch(JWKS_URL.to_owned()));
    flood(&mut edge);
    // So does the key set's: the revocation holds, and the key set is there.
    edge.answer(keys_job, keys(&fixtures::jwks_value(), "max-age=300"));
    let next = edge.request(&fixtures::good_token());
    let (next, fetched) = edge.drive(next, &fixtures::jwks_value());
    assert!(fetched.is_empty(), "the key set came from the job");
    let reply = reply_of(next);
    assert_eq!(reply.status, 401);
    assert_eq!(edge.logged().last().unwrap().1["reason"], "revoked");
}

#[test]
fn the_path_is_forwarded_in_its_normal_spelling_or_refused() {
    let mut edge = Edge::new();
    let token = fixtures::good_token();
    let forwarded_to = |edge: &mut Edge, url: &str| {
        let mut request = head(&format!("Bearer {token}"));
        request.url = url.to_owned();
        let next = edge.arrive(request, "request");
        match edge.drive(next, &fixtures::jwks_value()).0 {
            Next::Wait(id) => match edge.asked(id) {
                Asked::Forward { target, .. } => Ok(target),
                other => panic!("{other:?}"),
            },
            Next::Reply(reply, _) => Err(Box::new(reply)),
            other => panic!("{other:?}"),
        }
    };
    for (url, target) in [
        ("https://edge.test//orders/./7?x=1", "/orders/7?x=1"),
        ("https://edge.test/public/../orders/%37", "/orders/7"),
        ("https://edge.test/%2e%2E/admin/", "/admin/"),
        ("https://edge.test/a%2fb", ""),
        ("https://edge.test/orders;jsessionid=1/7", ""),
        ("https://edge.test/%252e%252e/admin", ""),
        ("https://edge.test/x%00", ""),
    ] {
        match forwarded_to(&mut edge, url) {
            Ok(forwarded) => assert_eq!(forwarded, format!("https://origin.test{target}"), "{url}"),
            Err(reply) => {
                assert!(target.is_empty(), "{url} refused: {reply:?}");
                assert_eq!(reply.status, 400, "{url}");
                assert_eq!(reply.challenge, None, "not the token's fault");
                let body: Value = serde_json::from_str(&reply.body).unwrap();
                assert_eq!(body["error"], "invalid_request", "{url}");
            }
        }
    }
    let refused: Vec<Value> = edge
        .logged()
        .into_iter()
        .map(|(_, line)| line)
        .filter(|line| line["outcome"] == "bad_request")
        .collect();
    let reasons: Vec<&str> = refused
        .iter()
        .map(|line| line["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "encoded_separator",
            "parameter",
            "double_encoding",
            "control"
        ]
    );
}

/// A route table with one route of each kind (the fixture token has `read write` for
/// [`fixtures::AUDIENCE`]); no unmatched policy, so anything else is 404.
const ROUTES: &str = r#"{ "route": [
    { "id": "open", "path": "/public/**", "require": "public" },
    { "id": "orders", "path": "/orders/{id}", "methods": ["GET"], "scopes_all": ["read"] },
    { "id": "writes", "path": "/writes/**", "scopes_all": ["write"],
      "origin": "https://writes.test" },
    { "id": "admin", "path": "/admin/**", "scopes_any": ["admin", "ops"] },
    { "id": "gone", "path": "/admin/old", "require": "deny" },
    { "id": "billing", "path": "/billing/**", "audience": "billing" },
    { "id": "tight", "path": "/tight", "rate_plan": "2/60s" } ] }"#;

/// How the edge ended a request: forwarded (target, assertion), or its own reply.
#[derive(Debug)]
enum Outcome {
    Forwarded { target: String, assertion: String },
    Replied(Reply),
}

impl Edge {
    /// `method url` with `token` (if any) as its bearer token, played to its end.
    fn outcome(&mut self, method: &str, url: &str, token: Option<&str>) -> Outcome {
        let request = Head {
            method: method.to_owned(),
            url: url.to_owned(),
            authorization: token.map(|token| format!("Bearer {token}")),
            ..head("")
        };
        let next = self.arrive(request, "request");
        match self.drive(next, &fixtures::jwks_value()).0 {
            Next::Wait(id) => match self.asked(id) {
                Asked::Forward { target, assertion } => {
                    self.answer(id, Answer::Origin(Ok(200)));
                    Outcome::Forwarded { target, assertion }
                }
                other => panic!("{other:?}"),
            },
            Next::Reply(reply, _) => Outcome::Replied(reply),
            other => panic!("{other:?}"),
        }
    }

    /// The status the client sees (the origin answers 200).
    fn status(&mut self, method: &str, url: &str, token: Option<&str>) -> u16 {
        match self.outcome(method, url, token) {
            Outcome::Forwarded { .. } => 200,
            Outcome::Replied(reply) => reply.status,
        }
    }

    /// The `route` and `outcome` of the last request's log line.
    fn last_route(&self) -> (Value, Value) {
        let lines = self.logged();
        let (_, line) = lines.last().expect("a log line");
        (line["route"].clone(), line["outcome"].clone())
    }
}

#[test]
fn each_route_decides_its_own_requests() {
    let mut edge = Edge::with(&[("ROUTES", ROUTES)]);
    let token = fixtures::good_token();
    let token = Some(token.as_str());

    // Public: no token needed, no assertion sent (a client's own is stripped by the driver).
    let Outcome::Forwarded { target, assertion } =
        edge.outcome("GET", "https://edge.test/public/a/b?q", None)
    else {
        panic!("a public route forwards");
    };
    assert_eq!(target, "https://origin.test/public/a/b?q");
    assert_eq!(assertion, "", "no identity on a public route");
    assert_eq!(edge.last_route(), (json!("open"), json!("forwarded")));

    // Scopes met: forwarded; to the route's own origin, with an assertion bound to its host.
    assert_eq!(edge.status("GET", "https://edge.test/orders/7", token), 200);
    let Outcome::Forwarded { target, assertion } =
        edge.outcome("PUT", "https://edge.test/writes/1", token)
    else {
        panic!("the write scope is there");
    };
    assert_eq!(target, "https://writes.test/writes/1");
    let verifier = origin_verifier();
    let line = shared::RequestLine {
        method: "PUT",
        host: "writes.test",
        path: "/writes/1",
        query: None,
    };
    let identity = verifier.verify(Some(&assertion), &line, edge.now).unwrap();
    assert_eq!(
        identity.route, "writes",
        "the origin can tell which rule let it in"
    );

    // Scopes missing: RFC 6750's 403 naming what would do, never the origin.
    let Outcome::Replied(reply) = edge.outcome("GET", "https://edge.test/admin/users", token)
    else {
        panic!("the token has neither admin nor ops");
    };
    assert_eq!(reply.status, 403);
    let challenge = reply.challenge.unwrap_or_default();
    assert!(
        challenge.contains("insufficient_scope") && challenge.contains(r#"scope="admin ops""#),
        "{challenge}"
    );
    assert_eq!(edge.last_route(), (json!("admin"), json!("rejected")));

    // Denied, unmatched (wrong method, unknown path): the same 404, token or not.
    for (method, url) in [
        ("GET", "https://edge.test/admin/old"),
        ("POST", "https://edge.test/orders/7"),
        ("GET", "https://edge.test/elsewhere"),
    ] {
        for token in [token, None] {
            let Outcome::Replied(reply) = edge.outcome(method, url, token) else {
                panic!("{method} {url} is not forwarded");
            };
            assert_eq!(
                (reply.status, reply.challenge),
                (404, None),
                "{method} {url}"
            );
        }
    }
    // The matched path is the normal one: no spelling reaches past a route.
    assert_eq!(
        edge.status("GET", "https://edge.test/public/../admin/old", token),
        404
    );
    assert_eq!(
        edge.status("GET", "https://edge.test/public/%2e%2e/admin/x", None),
        401
    );
}

/// `ASSERTION_KEYS = "per-origin"`: each origin's assertions verify with its own key (derived
/// from the edge's secret and its host), never with another origin's or the edge's secret;
/// cached tokens too. An unknown value is a start-up error.
#[test]
fn with_a_key_per_origin_each_origin_verifies_with_its_own() {
    let mut edge = Edge::with(&[("ROUTES", ROUTES), ("ASSERTION_KEYS", "per-origin")]);
    let token = fixtures::good_token();
    let origin_key = |host: &str| {
        let secret = shared::assertion::origin_secret(SECRET.as_bytes(), host);
        AssertionKey::new("edge-1", secret.as_bytes()).unwrap()
    };
    let verifier =
        |keys: Vec<AssertionKey>, host: &str| AssertionVerifier::new(keys, 30_000).for_host(host);
    for (url, host, path) in [
        ("https://edge.test/orders/7", "origin.test", "/orders/7"),
        ("https://edge.test/writes/1", "writes.test", "/writes/1"),
        ("https://edge.test/orders/8", "origin.test", "/orders/8"),
    ] {
        let Outcome::Forwarded { assertion, .. } = edge.outcome("GET", url, Some(&token)) else {
            panic!("{url} is forwarded");
        };
        let line = shared::RequestLine {
            method: "GET",
            host,
            path,
            query: None,
        };
        let other = if host == "origin.test" {
            "writes.test"
        } else {
            "origin.test"
        };
        assert!(
            verifier(vec![origin_key(host)], host)
                .verify(Some(&assertion), &line, edge.now)
                .is_ok(),
            "{url}: its origin's own key verifies it"
        );
        for keys in [
            vec![origin_key(other)],
            vec![AssertionKey::new("edge-1", SECRET.as_bytes()).unwrap()],
        ] {
            assert_eq!(
                verifier(keys, host).verify(Some(&assertion), &line, edge.now),
                Err(shared::assertion::AssertionError::BadSignature),
                "{url}: another origin's key, or the edge's secret, does not"
            );
        }
    }

    let mut vars = settings();
    vars.insert("ASSERTION_KEYS", "per-route".to_owned());
    let Err(err) = Config::from_vars(&|name: &str| vars.get(name).cloned()) else {
        panic!("an unknown ASSERTION_KEYS is refused");
    };
    assert!(err.to_string().contains("shared or per-origin"), "{err}");
}

#[test]
fn a_route_audience_is_checked_on_cache_hits_too() {
    let mut edge = Edge::with(&[("ROUTES", ROUTES)]);
    let billing = fixtures::with_claims(|claims| {
        claims.insert("aud".into(), json!(["billing"]));
    });
    let default = fixtures::good_token();
    assert_eq!(
        edge.status("GET", "https://edge.test/billing/1", Some(&billing)),
        200
    );
    // Now cached: still not a token for the default audience's routes, nor the reverse.
    assert_eq!(
        edge.status("GET", "https://edge.test/orders/7", Some(&billing)),
        401
    );
    assert_eq!(
        edge.status("GET", "https://edge.test/orders/7", Some(&default)),
        200
    );
    assert_eq!(
        edge.status("GET", "https://edge.test/billing/1", Some(&default)),
        401
    );
    let lines = edge.logged();
    let (_, line) = lines.last().unwrap();
    assert_eq!(line["reason"], "wrong_audience");
    assert_eq!(line["cache_hit"], true);
}

#[test]
fn a_route_plan_counts_apart_from_the_client_plan() {
    let mut edge = Edge::with(&[("ROUTES", ROUTES)]);
    let token = fixtures::good_token();
    let token = Some(token.as_str());
    assert_eq!(edge.status("GET", "https://edge.test/tight", token), 200);
    assert_eq!(edge.status("GET", "https://edge.test/tight", token), 200);
    let Outcome::Replied(reply) = edge.outcome("GET", "https://edge.test/tight", token) else {
        panic!("the third request in a minute is over the route's plan");
    };
    assert_eq!(reply.status, 429);
    let headers = reply.rate_limit.expect("RateLimit headers");
    assert!(
        headers.policy.starts_with("\"route\";q=2;w=60"),
        "{headers:?}"
    );
    // The client's own plan (1000/60s) is another count.
    assert_eq!(edge.status("GET", "https://edge.test/orders/7", token), 200);
}

#[test]
fn a_bad_route_table_is_a_configuration_error() {
    let vars = settings();
    for (table, expected) in [
        (
            r#"{"route":[{"id":"a","path":"/a","scope":["x"]}]}"#,
            "unknown setting `scope`",
        ),
        (
            r#"{"route":[{"id":"a","path":"/a"},{"id":"b","path":"/A/"}]}"#,
            "match the same",
        ),
    ] {
        let lookup = |name: &str| match name {
            "ROUTES" => Some(table.to_owned()),
            other => vars.get(other).cloned(),
        };
        let Err(err) = Config::from_vars(&lookup) else {
            panic!("{table} is refused");
        };
        assert!(err.to_string().contains(expected), "{err}");
    }
    for named in ["staging", ""] {
        let lookup = |name: &str| match name {
            "ROUTE_TABLE" => Some(named.to_owned()),
            other => vars.get(other).cloned(),
        };
        let Err(err) = Config::from_vars(&lookup) else {
            panic!("a named table the bundle lacks is refused, an empty name too");
        };
        assert!(err.to_string().contains("no such route table"), "{err}");
    }
}

#[test]
fn a_route_body_limit_and_the_unmatched_audience_hold() {
    let table = r#"{ "unmatched": { "audience": "billing" },
        "route": [ { "id": "upload", "path": "/upload", "max_body": 10 } ] }"#;
    let mut edge = Edge::with(&[("ROUTES", table)]);
    let token = fixtures::good_token();
    let billing = fixtures::with_claims(|claims| {
        claims.insert("aud".into(), json!(["billing"]));
    });
    // The unmatched policy's own audience, not AUDIENCE, fresh and cached.
    for _ in 0..2 {
        assert_eq!(
            edge.status("GET", "https://edge.test/any", Some(&billing)),
            200
        );
        assert_eq!(
            edge.status("GET", "https://edge.test/any", Some(&token)),
            401
        );
    }
    let mut post = |body: Body| {
        let request = Head {
            method: "POST".to_owned(),
            url: "https://edge.test/upload".to_owned(),
            body,
            ..head(&format!("Bearer {token}"))
        };
        let next = edge.arrive(request, "request");
        match edge.drive(next, &fixtures::jwks_value()).0 {
            Next::Reply(reply, _) => (reply.status, serde_json::from_str(&reply.body).unwrap()),
            Next::Wait(_) => (200, Value::Null),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(post(Body::Declared(10)).0, 200, "at the limit");
    assert_eq!(post(Body::None).0, 200);
    let (status, body) = post(Body::Declared(11));
    assert_eq!(
        (status, body["error"].as_str()),
        (413, Some("invalid_request"))
    );
    assert_eq!(
        post(Body::Unknown).0,
        411,
        "a chunked body's length is unknown"
    );
    let reasons: Vec<Value> = edge
        .logged()
        .into_iter()
        .map(|(_, line)| line["reason"].clone())
        .filter(|reason| reason == "body_too_large" || reason == "length_required")
        .collect();
    assert_eq!(reasons, [json!("body_too_large"), json!("length_required")]);
}

#[test]
fn hosts_origin_prefixes_and_the_unmatched_policy() {
    let table = r#"{ "unmatched": { "rate_plan": "1/60s" },
        "route": [
          { "id": "tenant", "host": "api.edge.test", "path": "/**", "scopes_all": ["read"],
            "origin": "https://internal.test/api" } ] }"#;
    let mut edge = Edge::with(&[("ROUTES", table)]);
    let token = fixtures::good_token();
    let verifier = origin_verifier();
    // The host in any spelling; the origin's prefix before the path, signed as sent.
    for url in ["https://API.edge.test.:8443/x", "https://api.edge.test/x"] {
        let Outcome::Forwarded { target, assertion } = edge.outcome("GET", url, Some(&token))
        else {
            panic!("{url} is the tenant route's");
        };
        assert_eq!(target, "https://internal.test/api/x");
        let line = shared::RequestLine {
            method: "GET",
            host: "internal.test",
            path: "/api/x",
            query: None,
        };
        let identity = verifier.verify(Some(&assertion), &line, edge.now).unwrap();
        assert_eq!(identity.route, "tenant");
    }
    // Another host: the unmatched policy, which names no route and has a plan of its own.
    let Outcome::Forwarded { target, assertion } =
        edge.outcome("GET", "https://other.test/x", Some(&token))
    else {
        panic!("the unmatched policy takes a valid token");
    };
    assert_eq!(target, "https://origin.test/x");
    let line = shared::RequestLine {
        method: "GET",
        host: "origin.test",
        path: "/x",
        query: None,
    };
    assert_eq!(
        verifier
            .verify(Some(&assertion), &line, edge.now)
            .unwrap()
            .route,
        ""
    );
    let Outcome::Replied(reply) = edge.outcome("GET", "https://other.test/x", Some(&token)) else {
        panic!("one a minute");
    };
    assert_eq!(reply.status, 429);
    assert!(reply
        .rate_limit
        .unwrap()
        .policy
        .starts_with("\"route\";q=1"));
}

#[test]
fn a_public_route_plan_counts_per_client_network() {
    let table = r#"{ "route": [
        { "id": "login", "path": "/login", "require": "public", "rate_plan": "2/60s" } ] }"#;
    let mut edge = Edge::with(&[("ROUTES", table)]);
    for _ in 0..2 {
        assert_eq!(edge.status("POST", "https://edge.test/login", None), 200);
    }
    let Outcome::Replied(reply) = edge.outcome("POST", "https://edge.test/login", None) else {
        panic!("the third in a minute from one network is over the route's plan");
    };
    assert_eq!(reply.status, 429);
    assert!(reply.retry_after.is_some());
    let headers = reply.rate_limit.expect("RateLimit headers");
    assert!(
        headers.policy.starts_with("\"route\";q=2;w=60"),
        "{headers:?}"
    );
    // Another address of the same IPv6 /64 is the same network; another network is not.
    let from = |edge: &mut Edge, ip: &str| {
        let request = Head {
            method: "POST".to_owned(),
            url: "https://edge.test/login".to_owned(),
            authorization: None,
            client_ip: Some(ip.to_owned()),
            ..head("")
        };
        let next = edge.arrive(request, "request");
        match edge.drive(next, &fixtures::jwks_value()).0 {
            Next::Wait(_) => 200,
            Next::Reply(reply, _) => reply.status,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(from(&mut edge, "198.51.100.7"), 200);
    assert_eq!(from(&mut edge, "2001:db8::1"), 200);
    assert_eq!(from(&mut edge, "2001:db8::2"), 200);
    assert_eq!(from(&mut edge, "2001:db8::3"), 429);
}

/// `lease` mode's Durable Object, played by the object's own decision code
/// (`object_answer`, what `js/rate-limiter.js` calls), with its storage and book in memory.
#[derive(Default)]
struct LeaseObject {
    state: Option<String>,
    book: Option<String>,
    calls: usize,
}

impl LeaseObject {
    /// The object's answer to the ask `url` at `now`.
    fn answer(&mut self, url: &str, now: UnixTime) -> Answer {
        self.calls += 1;
        let (body, state, book) = edge_validator::isolate::object_answer(
            url,
            self.state.as_deref(),
            self.book.as_deref(),
            now,
        )
        .expect("an ask the object reads");
        self.state = Some(state);
        self.book = Some(book);
        Answer::Limit(Ok(body))
    }
}

impl Edge {
    /// The URL of a limiter wait.
    fn limiter_url(&self, id: WaitId) -> String {
        match self.isolate.io(id).expect("a live wait").0 {
            Io::AskLimiter { url, .. } => url.to_owned(),
            other => panic!("not a limiter ask: {other:?}"),
        }
    }

    /// The background waits started since side effect `from`.
    fn background_since(&self, from: usize) -> Vec<WaitId> {
        self.side[from..]
            .iter()
            .filter_map(|side| match side {
                Side::Background { id } => Some(*id),
                _ => None,
            })
            .collect()
    }

    /// A request with the good token through to its end in `lease` mode, the object
    /// answering any ask of the request's own at once. Background renewals it started are
    /// returned, unanswered.
    fn leased_status(&mut self, object: &mut LeaseObject) -> (u16, Vec<WaitId>) {
        let from = self.side.len();
        let next = self.request(&fixtures::good_token());
        let (mut next, _) = self.drive(next, &fixtures::jwks_value());
        loop {
            match next {
                Next::Reply(reply, _) => return (reply.status, self.background_since(from)),
                Next::Wait(id) => match self.asked(id) {
                    Asked::Limiter { .. } => {
                        let url = self.limiter_url(id);
                        let answer = object.answer(&url, self.now);
                        next = self.answer(id, answer);
                    }
                    Asked::Forward { .. } => {
                        let passed = self.answer(id, Answer::Origin(Ok(200)));
                        assert!(
                            matches!(
                                passed,
                                Next::PassOn(
                                    Added {
                                        rate_limit: Some(_),
                                        ..
                                    },
                                    _
                                )
                            ),
                            "{passed:?}"
                        );
                        return (200, self.background_since(from));
                    }
                    other => panic!("{other:?}"),
                },
                other => panic!("{other:?}"),
            }
        }
    }
}

fn lease_edge(changes: &[(&'static str, &str)]) -> Edge {
    let mut vars = vec![
        ("RATE_LIMIT_MODE", "lease"),
        ("LEASE_MAX_PERMITS", "10"),
        ("LEASE_TTL_MS", "2000"),
    ];
    vars.extend_from_slice(changes);
    Edge::with(&vars)
}

#[test]
fn leases_are_spent_in_the_isolate_and_renewed_once_in_the_background() {
    let mut edge = lease_edge(&[]);
    let mut object = LeaseObject::default();
    // A new isolate asks for one permit, and (one spent in no time) renews for a full lease
    // at once, in the background.
    let (status, started) = edge.leased_status(&mut object);
    assert_eq!((status, started.len()), (200, 1));
    assert_eq!(object.calls, 1);
    assert_eq!(edge.events("lease_granted"), 1);
    let url = edge.limiter_url(started[0]);
    assert!(url.contains("want=10"), "{url}");
    let answer = object.answer(&url, edge.now);
    assert!(matches!(edge.answer(started[0], answer), Next::Idle(_)));
    assert_eq!(edge.events("lease_renewed"), 1);
    edge.advance_ms(1);
    // Ten permits: the fifth spent starts one renewal; the ones after start none.
    let mut renewals = Vec::new();
    for _ in 0..9 {
        let (status, started) = edge.leased_status(&mut object);
        assert_eq!(status, 200);
        renewals.extend(started);
    }
    assert_eq!(renewals.len(), 1, "single-flight");
    assert_eq!(object.calls, 2, "no call on the request path");
    let url = edge.limiter_url(renewals[0]);
    let answer = object.answer(&url, edge.now);
    assert!(matches!(edge.answer(renewals[0], answer), Next::Idle(_)));
    assert_eq!(edge.events("lease_renewed"), 2);
    // The renewal's permits follow on without a wait.
    for _ in 0..5 {
        assert_eq!(edge.leased_status(&mut object).0, 200);
    }
    assert_eq!(object.calls, 3);
    let line = edge.logged().last().unwrap().1.clone();
    assert_eq!(line["limit_source"], "lease");
}

#[test]
fn a_lease_denial_is_the_objects_exact_answer_and_is_kept_until_retry_after() {
    // The fixture's plan: 1000/60s, burst 100 (one every 60 ms).
    let mut edge = lease_edge(&[("LEASE_MAX_PERMITS", "100")]);
    let mut object = LeaseObject::default();
    let mut admitted = 0;
    let mut renewals = Vec::new();
    loop {
        let (status, started) = edge.leased_status(&mut object);
        // Renewals are answered at once, as a busy object would.
        for id in started {
            let answer = object.answer(&edge.limiter_url(id), edge.now);
            edge.answer(id, answer);
        }
        renewals.push(status);
        if status == 429 {
            break;
        }
        admitted += 1;
        assert!(admitted <= 100, "no more than the burst");
    }
    assert_eq!(admitted, 100, "the whole burst, no more");
    let calls = object.calls;
    // Until the object's Retry-After (60 ms) the isolate refuses without asking.
    edge.advance_ms(59);
    let reply = reply_of(edge.request(&fixtures::good_token()));
    assert_eq!(reply.status, 429);
    assert_eq!(reply.retry_after.as_deref(), Some("1"));
    assert_eq!(object.calls, calls);
    edge.advance_ms(1);
    assert_eq!(edge.leased_status(&mut object).0, 200);
    assert_eq!(object.calls, calls + 1);
    assert_eq!(edge.events("lease_denied"), 1);
}

#[test]
fn a_request_with_no_permit_waits_for_the_ask_already_out() {
    let mut edge = lease_edge(&[]);
    let mut object = LeaseObject::default();
    let first = edge.request(&fixtures::good_token());
    let (first, _) = edge.drive(first, &fixtures::jwks_value());
    let first = wait_of(&first);
    assert!(matches!(edge.asked(first), Asked::Limiter { .. }));
    // A second request finds the ask out: it polls instead of asking.
    let second = wait_of(&edge.request(&fixtures::good_token()));
    assert_eq!(edge.asked(second), Asked::Sleep);
    edge.advance_ms(5);
    let second = wait_of(&edge.answer(second, Answer::Timer));
    assert_eq!(edge.asked(second), Asked::Sleep, "still out");
    // The first's answer (one permit) serves the first, which renews at once. The second
    // found no permit left by the answer it waited for: rather than queue behind the
    // renewal (which requests arriving meanwhile would drain first), it asks for itself.
    let from = edge.side.len();
    let answer = object.answer(&edge.limiter_url(first), edge.now);
    let next = edge.answer(first, answer);
    assert!(matches!(edge.asked(wait_of(&next)), Asked::Forward { .. }));
    let renewal = edge.background_since(from)[0];
    let second = wait_of(&edge.answer(second, Answer::Timer));
    assert!(
        matches!(edge.asked(second), Asked::Limiter { .. }),
        "its own ask"
    );
    let answer = object.answer(&edge.limiter_url(renewal), edge.now);
    edge.answer(renewal, answer);
    let answer = object.answer(&edge.limiter_url(second), edge.now);
    let next = edge.answer(second, answer);
    assert!(matches!(edge.asked(wait_of(&next)), Asked::Forward { .. }));
    assert_eq!(object.calls, 3);
    assert_eq!(edge.events("lease_granted"), 2);
    assert_eq!(edge.events("lease_renewed"), 1);
}

#[test]
fn a_slowed_client_gives_back_what_its_lease_will_not_need() {
    let mut edge = lease_edge(&[]);
    let mut object = LeaseObject::default();
    let (_, started) = edge.leased_status(&mut object);
    let answer = object.answer(&edge.limiter_url(started[0]), edge.now);
    edge.answer(started[0], answer); // a lease of 10
    edge.advance_ms(1);
    edge.leased_status(&mut object); // one spent
                                     // Past half its life with one more spent: keep 2 x 2 + 1 = 5, give back 5.
    edge.advance_ms(1_000);
    let (status, started) = edge.leased_status(&mut object);
    assert_eq!(status, 200);
    let url = edge.limiter_url(started[0]);
    assert!(url.contains("&unused=5"), "{url}");
    let before = object.state.clone().unwrap();
    let answer = object.answer(&url, edge.now);
    edge.answer(started[0], answer);
    let returned: Vec<Value> = edge
        .logged()
        .into_iter()
        .map(|(_, line)| line)
        .filter(|line| line["event"] == "lease_returned")
        .collect();
    assert_eq!(returned.len(), 1);
    assert_eq!(returned[0]["permits"], 5);
    assert_ne!(
        object.state.unwrap(),
        before,
        "credited (the book's tests: once only)"
    );
}

#[test]
fn an_unreachable_object_leaves_a_lease_ask_to_the_isolate_count() {
    let mut edge = lease_edge(&[]);
    let next = edge.request(&fixtures::good_token());
    let (next, _) = edge.drive(next, &fixtures::jwks_value());
    let next = edge.answer(wait_of(&next), Answer::Limit(Err("status 500".to_owned())));
    assert!(matches!(edge.asked(wait_of(&next)), Asked::Forward { .. }));
    assert_eq!(edge.events("rate_limiter_unreachable"), 1);
    assert_eq!(edge.events("lease_ask_failed"), 1);
    edge.answer(wait_of(&next), Answer::Origin(Ok(200)));
    let lines = edge.logged();
    assert_eq!(lines.last().unwrap().1["limit_source"], "fallback");
    // The next request asks again: no ask is out.
    let next = edge.request(&fixtures::good_token());
    assert!(matches!(edge.asked(wait_of(&next)), Asked::Limiter { .. }));
}

#[test]
fn a_lease_ends_at_its_life_on_the_isolate_clock_and_the_scope_names_the_object() {
    let mut edge = lease_edge(&[("RATE_LIMIT_SCOPE", "global")]);
    let mut object = LeaseObject::default();
    let (_, started) = edge.leased_status(&mut object);
    let answer = object.answer(&edge.limiter_url(started[0]), edge.now);
    edge.answer(started[0], answer);
    edge.advance_ms(1);
    assert_eq!(edge.leased_status(&mut object).0, 200);
    assert_eq!(object.calls, 2);
    // The lease was asked for at this time: at its life's end it is not spent.
    edge.advance_ms(2_000);
    let next = edge.request(&fixtures::good_token());
    let id = wait_of(&next);
    assert_eq!(
        edge.asked(id),
        Asked::Limiter {
            name: "client:client-7".to_owned()
        },
        "one object worldwide"
    );
    assert!(Config::from_vars(&|name: &str| {
        let mut vars = settings();
        vars.insert("RATE_LIMIT_SCOPE", "planet".to_owned());
        vars.get(name).cloned()
    })
    .is_err());
}

#[test]
fn lease_rate_limit_headers_count_what_the_object_has_left_and_what_the_isolate_holds() {
    let mut edge = lease_edge(&[]);
    let mut object = LeaseObject::default();
    // One request through to the origin in `lease` mode: its `RateLimit` header.
    let header = |edge: &mut Edge, object: &mut LeaseObject| {
        let next = edge.request(&fixtures::good_token());
        let (mut next, _) = edge.drive(next, &fixtures::jwks_value());
        loop {
            let id = wait_of(&next);
            match edge.asked(id) {
                Asked::Limiter { .. } => {
                    let answer = object.answer(&edge.limiter_url(id), edge.now);
                    next = edge.answer(id, answer);
                }
                Asked::Forward { .. } => match edge.answer(id, Answer::Origin(Ok(200))) {
                    Next::PassOn(
                        Added {
                            rate_limit: Some(headers),
                            ..
                        },
                        _,
                    ) => return headers.rate_limit,
                    other => panic!("{other:?}"),
                },
                other => panic!("{other:?}"),
            }
        }
    };
    // The fixture's burst of 100: one spent, 99 left at the object.
    assert_eq!(header(&mut edge, &mut object), "\"client\";r=99;t=1");
    let renewal = edge.background().unwrap();
    let answer = object.answer(&edge.limiter_url(renewal), edge.now);
    edge.answer(renewal, answer);
    // Ten more leased here (89 left at the object), one of them spent: 98 in all, as exact
    // as one isolate can know.
    assert_eq!(header(&mut edge, &mut object), "\"client\";r=98;t=1");
    assert_eq!(header(&mut edge, &mut object), "\"client\";r=97;t=1");
}

#[test]
fn a_grant_that_outlived_its_lease_leaves_no_ask_out_and_the_next_request_asks() {
    let mut edge = lease_edge(&[("LEASE_TTL_MS", "100")]);
    let mut object = LeaseObject::default();
    let next = edge.request(&fixtures::good_token());
    let (next, _) = edge.drive(next, &fixtures::jwks_value());
    let id = wait_of(&next);
    // Answered 150 ms later: the lease (100 ms from the ask) is over on arrival.
    edge.advance_ms(150);
    let answer = object.answer(&edge.limiter_url(id), edge.now);
    let next = edge.answer(id, answer);
    assert!(matches!(edge.asked(wait_of(&next)), Asked::Forward { .. }));
    assert_eq!(edge.events("rate_limiter_unreachable"), 1);
    // No ask is left out: the next request asks at once instead of waiting for one.
    let next = edge.request(&fixtures::good_token());
    assert!(matches!(edge.asked(wait_of(&next)), Asked::Limiter { .. }));
}

#[test]
fn a_token_with_another_plan_never_spends_the_first_plans_leases() {
    let mut edge = lease_edge(&[]);
    let mut object = LeaseObject::default();
    let (_, started) = edge.leased_status(&mut object);
    let answer = object.answer(&edge.limiter_url(started[0]), edge.now);
    edge.answer(started[0], answer); // ten permits under the fixture's plan
    let stricter = fixtures::with_claims(|claims| {
        claims.insert("rate_plan".into(), json!("1/60s;burst=1"));
    });
    let next = edge.request(&stricter);
    let (next, _) = edge.drive(next, &fixtures::jwks_value());
    let id = wait_of(&next);
    let url = edge.limiter_url(id);
    assert!(
        url.contains("limit=1&period=60&burst=1"),
        "its own ask: {url}"
    );
    assert!(
        url.contains("&unused=10"),
        "the first plan's lease goes back: {url}"
    );
}

// ---- DPoP (RFC 9449): a bound token passes only with a fresh proof of its key ----

mod dpop {
    use std::collections::HashSet;

    use p256::ecdsa::{signature::Signer, Signature, SigningKey};

    use super::*;

    /// A client's DPoP key.
    pub(super) struct Holder(SigningKey);

    impl Holder {
        pub(super) fn new(n: u8) -> Self {
            Self(fixtures::signing_key(100 + n))
        }

        pub(super) fn from_key(key: SigningKey) -> Self {
            Self(key)
        }

        pub(super) fn jwk(&self) -> Value {
            let point = self.0.verifying_key().to_encoded_point(false);
            json!({ "kty": "EC", "crv": "P-256",
                    "x": fixtures::b64(point.x().unwrap()), "y": fixtures::b64(point.y().unwrap()) })
        }

        pub(super) fn jkt(&self) -> String {
            let point = self.0.verifying_key().to_encoded_point(false);
            shared::Jkt::of(&shared::Jwk::from_sec1_bytes("h", point.as_bytes()).unwrap())
                .to_string()
        }

        /// A proof for `GET https://edge.test/orders/7` with `token`, issued now, edited.
        pub(super) fn proof(
            &self,
            jti: &str,
            token: &str,
            edit: impl FnOnce(&mut Value, &mut Value),
        ) -> String {
            let mut header = json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk() });
            let mut claims = json!({
                "jti": jti, "htm": "GET", "htu": "https://edge.test/orders/7",
                "iat": fixtures::NOW_SECS, "ath": shared::dpop::token_hash(token),
            });
            edit(&mut header, &mut claims);
            self.sign(&header, &claims)
        }

        pub(super) fn sign(&self, header: &Value, claims: &Value) -> String {
            let input = format!(
                "{}.{}",
                fixtures::b64(header.to_string().as_bytes()),
                fixtures::b64(claims.to_string().as_bytes())
            );
            let signature: Signature = self.0.sign(input.as_bytes());
            format!("{input}.{}", fixtures::b64(&signature.to_bytes()))
        }
    }

    /// A token bound to `holder`'s key.
    pub(super) fn bound_token(holder: &Holder) -> String {
        fixtures::with_claims(|c| {
            c.insert("cnf".into(), json!({ "jkt": holder.jkt() }));
        })
    }

    /// How a request ended.
    #[derive(Debug)]
    pub(super) enum End {
        /// The edge answered.
        Reply(Reply),
        /// It went to the origin, with this assertion.
        Origin(String),
    }

    impl End {
        pub(super) fn reply(self) -> Reply {
            match self {
                Self::Reply(reply) => reply,
                Self::Origin(_) => panic!("reached the origin"),
            }
        }
    }

    impl Edge {
        /// A request with `authorization` and `proof` played to its end; replay objects are
        /// played by `seen` (the proofs they accepted, as `replay_entries` gives them).
        pub(super) fn dpop(
            &mut self,
            authorization: &str,
            proof: Option<&str>,
            seen: &mut HashSet<String>,
        ) -> End {
            let head = Head {
                dpop: proof.map(str::to_owned),
                ..head(authorization)
            };
            let mut next = self.arrive(head, "dpop");
            loop {
                let (stopped, _) = self.drive(next, &fixtures::jwks_value());
                let id = match stopped {
                    Next::Reply(reply, _) => return End::Reply(reply),
                    Next::Wait(id) => id,
                    other => panic!("{other:?}"),
                };
                let (io, _) = self.isolate.io(id).unwrap();
                let answer = match io {
                    Io::Forward { assertion, .. } => {
                        let assertion = assertion.unwrap_or_default().to_owned();
                        // The origin's 200 ends the request (and writes its log line).
                        let next = self.answer(id, Answer::Origin(Ok(200)));
                        let Next::PassOn(added, _) = next else {
                            panic!("{next:?}");
                        };
                        self.added = Some(added);
                        return End::Origin(assertion);
                    }
                    Io::Join { .. } => {
                        self.answer_replay_calls(seen);
                        Answer::Joined
                    }
                    other => panic!("unexpected {other:?}"),
                };
                next = self.answer(id, answer);
            }
        }

        /// A request with `authorization` and `proof` played up to its replay object: every
        /// check done, the request on its key's line.
        pub(super) fn up_to_replay_line(&mut self, authorization: &str, proof: String) -> WaitId {
            let head = Head {
                dpop: Some(proof),
                ..head(authorization)
            };
            let next = self.arrive(head, "dpop");
            let id = wait_of(&self.drive(next, &fixtures::jwks_value()).0);
            assert!(matches!(self.asked(id), Asked::Join { .. }));
            id
        }

        /// The replay calls out (started in the background, not yet answered), oldest first:
        /// their waits, objects and queries.
        pub(super) fn replay_calls(&self) -> Vec<(WaitId, String, String)> {
            self.side
                .iter()
                .filter_map(|side| match side {
                    Side::Background { id } => match self.isolate.io(*id) {
                        Some((Io::AskLimiter { name, url, .. }, _)) if name.contains("/dpop/") => {
                            Some((*id, name.to_owned(), url.to_owned()))
                        }
                        _ => None,
                    },
                    _ => None,
                })
                .collect()
        }

        /// Answers every replay call out, and those their answers send, as
        /// js/rate-limiter.js does with `seen` as its memory.
        pub(super) fn answer_replay_calls(&mut self, seen: &mut HashSet<String>) {
            while let Some((id, _, url)) = self.replay_calls().into_iter().next() {
                let answer = replay_object(&url, self.now, seen);
                let next = self.answer(id, Answer::Limit(Ok(answer)));
                assert!(matches!(next, Next::Idle(_)), "{next:?}");
            }
        }
    }

    /// A replay object's answer to the call `url` at `now`, `seen` being the proofs it
    /// accepted: one `1` (first use) or `0` per proof. As js/rate-limiter.js with nothing
    /// under its floor (it never started again): past a proof's last second it is "seen".
    /// (The object's floor and its `2` are js/rate-limiter.test.mjs's.)
    pub(super) fn replay_object(url: &str, now: UnixTime, seen: &mut HashSet<String>) -> String {
        let entries = edge_validator::isolate::replay_entries(url).unwrap();
        entries
            .split(' ')
            .map(|entry| {
                let until: u64 = entry.split(':').next().unwrap().parse().unwrap();
                let live = until * 1000 + 1000 > now.as_millis();
                if live && seen.insert(entry.to_owned()) {
                    '1'
                } else {
                    '0'
                }
            })
            .collect()
    }

    pub(super) fn challenge(reply: &Reply) -> (&str, String) {
        let challenge = reply.challenge.as_deref().unwrap_or_default();
        let body: Value = serde_json::from_str(&reply.body).unwrap();
        (
            challenge,
            body["error"].as_str().unwrap_or_default().to_owned(),
        )
    }
}

use dpop::{bound_token, Holder};

#[test]
fn a_bound_token_passes_with_each_fresh_proof_once() {
    let mut edge = Edge::new();
    let mut seen = std::collections::HashSet::new();
    let holder = Holder::new(1);
    let token = bound_token(&holder);
    let authorization = format!("DPoP {token}");
    let first = holder.proof("p1", &token, |_, _| {});
    let assertion = match edge.dpop(&authorization, Some(&first), &mut seen) {
        dpop::End::Origin(assertion) => assertion,
        other => panic!("{other:?}"),
    };
    // The origin learns the token was sender-constrained, and by which key.
    let identity = origin_reads(&assertion, edge.now);
    assert_eq!(identity.cnf_jkt, holder.jkt());
    assert_eq!(
        edge.proof_keys_imported(),
        1,
        "the proof's key was imported once"
    );
    // Under its thumbprint, apart from the issuer's kids (no kid can name it).
    assert!(edge.imported.contains_key(&Named::Proof(holder.jkt())));
    let line = edge.logged().last().unwrap().1.clone();
    assert_eq!(line["dpop_jkt"], holder.jkt());
    assert_eq!(line["status"], 200);

    // The same proof again: the replay object has it.
    let reply = edge.dpop(&authorization, Some(&first), &mut seen).reply();
    assert_eq!(reply.status, 401);
    let (challenge, error) = dpop::challenge(&reply);
    assert_eq!(error, "invalid_dpop_proof");
    assert!(challenge.starts_with("DPoP algs=\"ES256\""), "{challenge}");
    assert!(reply.body.contains("already used"), "{}", reply.body);

    // A new proof: no new import (the key is held by its thumbprint), through again.
    let second = holder.proof("p2", &token, |_, _| {});
    assert!(matches!(
        edge.dpop(&authorization, Some(&second), &mut seen),
        dpop::End::Origin(_)
    ));
    assert_eq!(edge.proof_keys_imported(), 1);
    // The replay objects are one per key, in the request's location.
    assert!(seen.len() == 2);
}

#[test]
fn edges_with_other_proof_ages_share_the_replay_entries() {
    // A canary with a longer DPOP_PROOF_MAX_AGE_SECS beside the rest, one location: a proof
    // used at one is a replay at the other, whichever took it first.
    let mut seen = std::collections::HashSet::new();
    let holder = Holder::new(4);
    let token = bound_token(&holder);
    let authorization = format!("DPoP {token}");
    let mut edges = [
        Edge::with(&[("DPOP_PROOF_MAX_AGE_SECS", "60")]),
        Edge::with(&[("DPOP_PROOF_MAX_AGE_SECS", "120")]),
    ];
    // The replays come at an age only the edge that sees them still accepts: 90 s at the
    // longer window (past the shorter one's), 30 s at the shorter.
    for (first, then, later_ms, jti) in [
        (0, 1, 90_000, "p-short-first"),
        (1, 0, 30_000, "p-long-first"),
    ] {
        let proof = holder.proof(jti, &token, |_, _| {});
        assert!(matches!(
            edges[first].dpop(&authorization, Some(&proof), &mut seen),
            dpop::End::Origin(_)
        ));
        edges[then].advance_ms(later_ms);
        let reply = edges[then]
            .dpop(&authorization, Some(&proof), &mut seen)
            .reply();
        assert_eq!(dpop::challenge(&reply).1, "invalid_dpop_proof", "{jti}");
        assert!(reply.body.contains("already used"), "{jti}: {}", reply.body);
    }
}

#[test]
fn attacks_on_dpop_never_reach_the_origin() {
    // Failed authentications are charged; the plan is raised so each case answers for itself.
    let mut edge = Edge::with(&[("FAILED_AUTH_PLAN", "1000/60s;burst=1000")]);
    let mut seen = std::collections::HashSet::new();
    let holder = Holder::new(1);
    let thief = Holder::new(2);
    let token = bound_token(&holder);
    let dpop = format!("DPoP {token}");
    let bearer_token = fixtures::good_token();
    let now = fixtures::NOW_SECS;
    let cases: Vec<(&str, String, Option<String>, &str)> = vec![
        (
            "a bound token as Bearer",
            format!("Bearer {token}"),
            None,
            "invalid_token",
        ),
        (
            "a bound token as Bearer, with a proof",
            format!("Bearer {token}"),
            Some(holder.proof("a", &token, |_, _| {})),
            "invalid_token",
        ),
        (
            "a DPoP token without a proof",
            dpop.clone(),
            None,
            "invalid_dpop_proof",
        ),
        (
            "a bearer token as DPoP",
            format!("DPoP {bearer_token}"),
            Some(holder.proof("b", &bearer_token, |_, _| {})),
            "invalid_token",
        ),
        (
            "htm for another method",
            dpop.clone(),
            Some(holder.proof("c", &token, |_, c| c["htm"] = json!("POST"))),
            "invalid_dpop_proof",
        ),
        (
            "htu for another route",
            dpop.clone(),
            Some(holder.proof("d", &token, |_, c| {
                c["htu"] = json!("https://edge.test/orders/8")
            })),
            "invalid_dpop_proof",
        ),
        (
            "a stale iat",
            dpop.clone(),
            Some(holder.proof("e", &token, |_, c| c["iat"] = json!(now - 66))),
            "invalid_dpop_proof",
        ),
        (
            "a future iat",
            dpop.clone(),
            Some(holder.proof("f", &token, |_, c| c["iat"] = json!(now + 6))),
            "invalid_dpop_proof",
        ),
        (
            "signed by another key, with the holder's jwk",
            dpop.clone(),
            Some({
                let claims = json!({ "jti": "g", "htm": "GET", "htu": "https://edge.test/orders/7",
                                 "iat": now, "ath": shared::dpop::token_hash(&token) });
                thief.sign(
                    &json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": holder.jwk() }),
                    &claims,
                )
            }),
            "invalid_dpop_proof",
        ),
        (
            "a proof of the thief's own key",
            dpop.clone(),
            Some(thief.proof("h", &token, |_, _| {})),
            "invalid_dpop_proof",
        ),
        (
            "no ath",
            dpop.clone(),
            Some(holder.proof("i", &token, |_, c| {
                c.as_object_mut().unwrap().remove("ath");
            })),
            "invalid_dpop_proof",
        ),
        (
            "ath of another token",
            dpop.clone(),
            Some(holder.proof("j", &token, |_, c| {
                c["ath"] = json!(shared::dpop::token_hash("x"))
            })),
            "invalid_dpop_proof",
        ),
        (
            "a private jwk",
            dpop.clone(),
            Some(holder.proof("k", &token, |h, _| {
                h["jwk"]["d"] = json!(fixtures::b64(&[1u8; 32]))
            })),
            "invalid_dpop_proof",
        ),
        (
            "alg none",
            dpop.clone(),
            Some({
                let proof = holder.proof("l", &token, |h, _| h["alg"] = json!("none"));
                let (input, _) = proof.rsplit_once('.').unwrap();
                format!("{input}.")
            }),
            "invalid_dpop_proof",
        ),
        (
            "alg HS256",
            dpop.clone(),
            Some(holder.proof("m", &token, |h, _| h["alg"] = json!("HS256"))),
            "invalid_dpop_proof",
        ),
        (
            "two proofs",
            dpop.clone(),
            Some(format!(
                "{}, {}",
                holder.proof("n", &token, |_, _| {}),
                holder.proof("o", &token, |_, _| {})
            )),
            "invalid_dpop_proof",
        ),
    ];
    for (name, authorization, proof, error) in cases {
        let reply = edge
            .dpop(&authorization, proof.as_deref(), &mut seen)
            .reply();
        assert_eq!(reply.status, 401, "{name}: {}", reply.body);
        let (challenge, got) = dpop::challenge(&reply);
        assert_eq!(got, error, "{name}: {}", reply.body);
        assert!(
            challenge.starts_with("DPoP algs=\"ES256\""),
            "{name}: {challenge}"
        );
    }
    // A proof without a token: no credentials at all, a bare challenge.
    let reply = edge
        .dpop("", Some(&holder.proof("p", &token, |_, _| {})), &mut seen)
        .reply();
    assert_eq!(
        (reply.status, reply.challenge.as_deref()),
        (401, Some("Bearer realm=\"edgeward\""))
    );
    assert!(seen.is_empty(), "no bad proof reached its replay object");
}

#[test]
fn with_nonces_on_a_proof_needs_one_of_the_edges_and_every_answer_hands_the_next() {
    // Windows of 100 s; the fixtures' clock is at the start of one.
    let secret = "edge-dpop-nonce-secret-0123456789abcdef";
    // A failed-auth budget of two: the refusals for want of a nonce must not spend it.
    let changes = [
        ("DPOP_NONCE_SECRET", secret),
        ("DPOP_NONCE_LIFETIME_SECS", "100"),
        ("FAILED_AUTH_PLAN", "2/60s;burst=2"),
    ];
    let mut edge = Edge::with(&changes);
    let mut seen = std::collections::HashSet::new();
    let holder = Holder::new(4);
    let token = bound_token(&holder);
    let authorization = format!("DPoP {token}");
    // A proof made `after` seconds past the fixtures' clock, with `nonce`.
    let proof = |jti: &str, nonce: &str, after: u64| {
        holder.proof(jti, &token, |_, claims| {
            claims["nonce"] = json!(nonce);
            claims["iat"] = json!(fixtures::NOW_SECS + after);
        })
    };
    assert_eq!(fixtures::NOW_SECS % 100, 0, "the test's windows");

    // No nonce: 401 use_dpop_nonce, with one to retry with; nothing charged, nothing asked.
    let first = holder.proof("n1", &token, |_, _| {});
    let reply = edge.dpop(&authorization, Some(&first), &mut seen).reply();
    assert_eq!(
        (reply.status, dpop::challenge(&reply).1.as_str()),
        (401, "use_dpop_nonce")
    );
    assert!(reply.challenge.as_deref().unwrap().starts_with("DPoP "));
    let nonce = reply
        .dpop_nonce
        .clone()
        .expect("a DPoP-Nonce to retry with");
    assert!(
        seen.is_empty(),
        "no replay call for a proof without a nonce"
    );
    assert_eq!(edge.proof_keys_imported(), 0, "nor an import of its key");

    // The retry with it passes, and the origin's answer carries the edge's nonce (the same
    // all through a window), in place of any the origin sent.
    assert!(matches!(
        edge.dpop(&authorization, Some(&proof("n2", &nonce, 0)), &mut seen),
        dpop::End::Origin(_)
    ));
    assert_eq!(edge.added.take().unwrap().dpop_nonce, Some(nonce.clone()));

    // Another server's nonce, an edited one: the same 401 as none, never charged (a budget
    // of two would have answered 429 by the last of these).
    let other = Nonces::from_edge_secret(b"another-servers-secret-0123456789abcdef").unwrap();
    let mut edited = nonce.clone().into_bytes();
    edited[3] = if edited[3] == b'A' { b'B' } else { b'A' };
    let bad = [
        other.issue(edge.now, 100),
        format!("{nonce}x"),
        String::from_utf8(edited).unwrap(),
    ];
    for (at, nonce) in bad.iter().enumerate() {
        let proof = proof(&format!("bad{at}"), nonce, 0);
        let reply = edge.dpop(&authorization, Some(&proof), &mut seen).reply();
        assert_eq!(dpop::challenge(&reply).1, "use_dpop_nonce", "{nonce}");
    }

    // In the next window: still good, and the origin's answer hands over that window's.
    edge.advance_ms(199_999);
    assert!(matches!(
        edge.dpop(&authorization, Some(&proof("n3", &nonce, 199)), &mut seen),
        dpop::End::Origin(_)
    ));
    let next = edge
        .added
        .take()
        .unwrap()
        .dpop_nonce
        .expect("the next window's nonce");
    assert_ne!(next, nonce);

    // The window after: the first nonce is dead at its first millisecond, the new one good.
    edge.advance_ms(1);
    let reply = edge
        .dpop(&authorization, Some(&proof("n4", &nonce, 200)), &mut seen)
        .reply();
    assert_eq!(dpop::challenge(&reply).1, "use_dpop_nonce");
    let newest = reply.dpop_nonce.unwrap();
    assert!(matches!(
        edge.dpop(&authorization, Some(&proof("n5", &next, 200)), &mut seen),
        dpop::End::Origin(_)
    ));
    assert_eq!(edge.added.take().unwrap().dpop_nonce, Some(newest));

    // Every refusal of a DPoP request carries the nonce to use next (here a replay).
    let reply = edge
        .dpop(&authorization, Some(&proof("n5", &next, 200)), &mut seen)
        .reply();
    assert_eq!(dpop::challenge(&reply).1, "invalid_dpop_proof");
    assert!(reply.dpop_nonce.is_some());
    // A bearer request's refusal carries none.
    let Next::Reply(bearer, _) = edge.request("not-a-token") else {
        panic!("a malformed bearer token is refused at once");
    };
    assert_eq!((bearer.status, bearer.dpop_nonce), (401, None));
}

#[test]
fn a_nonce_setting_out_of_range_or_a_short_secret_stops_the_edge() {
    let config = |changes: &[(&str, &str)]| {
        let mut vars = settings();
        for (name, value) in changes {
            vars.insert(name, (*value).to_owned());
        }
        Config::from_vars(&|name: &str| vars.get(name).cloned())
            .err()
            .map(|err| err.to_string())
    };
    let short = config(&[("DPOP_NONCE_SECRET", "too-short")]).unwrap();
    assert!(short.contains("DPOP_NONCE_SECRET"), "{short}");
    // The origins hold the assertion secret: it may not key the edge's nonces.
    let assertion = settings()["ASSERTION_SECRET"].clone();
    let shared = config(&[("DPOP_NONCE_SECRET", &assertion)]).unwrap();
    assert!(shared.contains("the edge's alone"), "{shared}");
    let both = [
        ("KEYSET_COPY_SECRET", COPY_SECRET),
        ("DPOP_NONCE_SECRET", COPY_SECRET),
    ];
    let shared = config(&both).unwrap();
    assert!(shared.contains("KEYSET_COPY_SECRET"), "{shared}");
    let window = config(&[("DPOP_NONCE_LIFETIME_SECS", "5")]).unwrap();
    assert!(window.contains("10 to 3600"), "{window}");
    assert!(config(&[("DPOP_NONCE_LIFETIME_SECS", "3600")]).is_none());

    // A rotation secret: with the secret, another one, long enough, the edge's alone.
    let alone_of = |other: &str| {
        format!("DPOP_NONCE_ROTATION_SECRET must be the edge's alone, not the same as {other}")
    };
    let secret = "edge-dpop-nonce-secret-0123456789abcdef";
    let alone = config(&[("DPOP_NONCE_ROTATION_SECRET", secret)]).unwrap();
    assert!(alone.contains("without DPOP_NONCE_SECRET"), "{alone}");
    // Beside a good DPOP_NONCE_SECRET, each of these is refused, and says why.
    let refusals = [
        (secret, "a rotation needs two secrets".to_owned()),
        (
            "too-short",
            "DPOP_NONCE_ROTATION_SECRET: the DPoP nonce secret must be at least".to_owned(),
        ),
        (" ", "DPOP_NONCE_ROTATION_SECRET is blank".to_owned()),
        (assertion.as_str(), alone_of("ASSERTION_SECRET")),
        (COPY_SECRET, alone_of("KEYSET_COPY_SECRET")),
    ];
    for (rotation, refusal) in refusals {
        let error = config(&[
            ("KEYSET_COPY_SECRET", COPY_SECRET),
            ("DPOP_NONCE_SECRET", secret),
            ("DPOP_NONCE_ROTATION_SECRET", rotation),
        ])
        .unwrap();
        assert!(error.contains(&refusal), "{rotation:?}: {error}");
    }
}

#[test]
fn a_nonce_secret_rotation_refuses_no_nonce_of_either_side() {
    let (old, new) = (
        "edge-dpop-nonce-secret-old-0123456789abcdef",
        "edge-dpop-nonce-secret-new-0123456789abcdef",
    );
    let release = |secret: &str, rotation: Option<&str>| {
        let mut changes = vec![("DPOP_NONCE_SECRET", secret)];
        changes.extend(rotation.map(|other| ("DPOP_NONCE_ROTATION_SECRET", other)));
        Edge::with(&changes)
    };
    // Each step of the runbook beside the one before it, as during a canary: before (the old
    // secret), the next secret accepted, the switch (the previous one accepted), after.
    let steps = [
        release(old, None),
        release(old, Some(new)),
        release(new, Some(old)),
        release(new, None),
    ];
    let holder = Holder::new(5);
    let token = bound_token(&holder);
    let authorization = format!("DPoP {token}");
    let mut seen = std::collections::HashSet::new();
    // A nonce handed out by `from` (to a proof without one), then used at `to`.
    let mut hand_over = |from: &mut Edge, to: &mut Edge, jti: &str| {
        let bare = holder.proof(&format!("{jti}-bare"), &token, |_, _| {});
        let nonce = from
            .dpop(&authorization, Some(&bare), &mut seen)
            .reply()
            .dpop_nonce
            .expect("a nonce to retry with");
        let proof = holder.proof(jti, &token, |_, claims| claims["nonce"] = json!(nonce));
        matches!(
            to.dpop(&authorization, Some(&proof), &mut seen),
            dpop::End::Origin(_)
        )
    };
    let mut steps = steps.into_iter().enumerate();
    let (_, mut before) = steps.next().unwrap();
    for (step, mut after) in steps {
        let forward = hand_over(&mut before, &mut after, &format!("forward{step}"));
        let back = hand_over(&mut after, &mut before, &format!("back{step}"));
        assert!(
            forward && back,
            "step {step} and the one before: {forward}, {back}"
        );
        before = after;
    }
    // Without the rotation secret, the old secret's nonces are gone.
    let mut after = release(new, None);
    let stale = Nonces::from_edge_secret(old.as_bytes())
        .unwrap()
        .issue(after.now, 300);
    let proof = holder.proof("stale", &token, |_, claims| claims["nonce"] = json!(stale));
    let reply = after.dpop(&authorization, Some(&proof), &mut seen).reply();
    assert_eq!(dpop::challenge(&reply).1, "use_dpop_nonce");
}

#[test]
fn a_proof_replayed_at_another_isolate_is_refused_by_its_object() {
    // Two isolates, one replay store: the object's, shared by the location.
    let mut seen = std::collections::HashSet::new();
    let holder = Holder::new(3);
    let token = bound_token(&holder);
    let proof = holder.proof("once", &token, |_, _| {});
    let authorization = format!("DPoP {token}");
    let mut first = Edge::new();
    let mut second = Edge::new();
    assert!(matches!(
        first.dpop(&authorization, Some(&proof), &mut seen),
        dpop::End::Origin(_)
    ));
    let reply = second.dpop(&authorization, Some(&proof), &mut seen).reply();
    assert_eq!(
        (reply.status, dpop::challenge(&reply).1.as_str()),
        (401, "invalid_dpop_proof")
    );
}

#[test]
fn proofs_of_one_key_at_once_share_a_replay_call_and_each_gets_its_own_verdict() {
    let mut edge = Edge::new();
    let mut seen = std::collections::HashSet::new();
    let holder = Holder::new(7);
    let token = bound_token(&holder);
    let authorization = format!("DPoP {token}");
    let at_line =
        |edge: &mut Edge, proof: &str| edge.up_to_replay_line(&authorization, proof.to_owned());
    let proofs: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|jti| holder.proof(jti, &token, |_, _| {}))
        .collect();
    let first = at_line(&mut edge, &proofs[0]);
    let calls = edge.replay_calls();
    assert_eq!(calls.len(), 1, "a lone proof sends its own call at once");
    let entries = |url: &str| edge_validator::isolate::replay_entries(url).unwrap();
    assert_eq!(entries(&calls[0].2).split(' ').count(), 1);
    // Three more while it is out, one of them the same proof twice: no new call.
    let queued = [
        at_line(&mut edge, &proofs[1]),
        at_line(&mut edge, &proofs[2]),
        at_line(&mut edge, &proofs[1]),
    ];
    assert_eq!(edge.replay_calls().len(), 1, "they wait for the call out");

    for &id in &queued {
        assert_eq!(edge.asked(id), Asked::Join { call: calls[0].0 });
    }

    // The first call answers. Each request wakes from its own event (a request never settles
    // another's promise), the first with its verdict.
    let answer = dpop::replay_object(&calls[0].2, edge.now, &mut seen);
    assert!(matches!(
        edge.answer(calls[0].0, Answer::Limit(Ok(answer))),
        Next::Idle(_)
    ));
    let forwarded = |edge: &mut Edge, id: WaitId| {
        let next = edge.answer(id, Answer::Joined);
        matches!(edge.asked(wait_of(&next)), Asked::Forward { .. })
    };
    assert!(forwarded(&mut edge, first));
    // The first queued to wake sends the three in one call, and waits again under its id;
    // the others, woken by the same answer, follow that call.
    assert_eq!(wait_of(&edge.answer(queued[0], Answer::Joined)), queued[0]);
    let calls = edge.replay_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(entries(&calls[0].2).split(' ').count(), 3);
    assert_eq!(calls[0].1, format!("FRA/dpop/{}", holder.jkt()));
    for &id in &queued[1..] {
        assert_eq!(wait_of(&edge.answer(id, Answer::Joined)), id);
    }
    for &id in &queued {
        assert_eq!(edge.asked(id), Asked::Join { call: calls[0].0 });
    }

    // The object judges each: the second of two equal proofs is a replay.
    let answer = dpop::replay_object(&calls[0].2, edge.now, &mut seen);
    assert_eq!(answer, "110");
    assert!(matches!(
        edge.answer(calls[0].0, Answer::Limit(Ok(answer))),
        Next::Idle(_)
    ));
    assert!(forwarded(&mut edge, queued[0]));
    assert!(forwarded(&mut edge, queued[1]));
    let reply = reply_of(edge.answer(queued[2], Answer::Joined));
    assert_eq!(reply.status, 401);
    assert!(reply.body.contains("already used"), "{}", reply.body);
    assert!(
        edge.replay_calls().is_empty(),
        "no one queued: the line closed"
    );

    // So the next proof sends its own call at once; an answer that does not count one
    // verdict per proof leaves it unchecked (503), never passed.
    let next = at_line(&mut edge, &holder.proof("d", &token, |_, _| {}));
    let calls = edge.replay_calls();
    assert_eq!(calls.len(), 1);
    let short = Answer::Limit(Ok(String::new()));
    assert!(matches!(edge.answer(calls[0].0, short), Next::Idle(_)));
    assert_eq!(reply_of(edge.answer(next, Answer::Joined)).status, 503);
}

#[test]
fn a_replay_call_that_never_answers_holds_its_line_only_until_the_fetch_timeout() {
    // The runtime may drop the request whose event sent a call: its answer never comes.
    let mut edge = Edge::new();
    let holder = Holder::new(8);
    let token = bound_token(&holder);
    let authorization = format!("DPoP {token}");
    let to_line = |edge: &mut Edge, jti: &str| {
        edge.up_to_replay_line(&authorization, holder.proof(jti, &token, |_, _| {}))
    };
    to_line(&mut edge, "lost");
    let waiting = to_line(&mut edge, "queued");
    assert_eq!(edge.replay_calls().len(), 1, "it waits for the call out");
    // FETCH_TIMEOUT_MS is 1000: the call out is waited for 1 s, no longer.
    edge.advance_ms(999);
    to_line(&mut edge, "still queued");
    assert_eq!(edge.replay_calls().len(), 1);
    edge.advance_ms(1);
    to_line(&mut edge, "sends");
    let calls = edge.replay_calls();
    assert_eq!(calls.len(), 2, "a new call, with everyone queued");
    let entries = edge_validator::isolate::replay_entries(&calls[1].2).unwrap();
    assert_eq!(entries.split(' ').count(), 3);
    assert_eq!(edge.asked(waiting), Asked::Join { call: calls[1].0 });
}

#[test]
fn a_proof_is_good_to_the_last_second_of_its_window() {
    let holder = Holder::new(4);
    let token = bound_token(&holder);
    let authorization = format!("DPoP {token}");
    let proof = holder.proof("window", &token, |_, _| {});
    // 60 s of age and 5 of leeway: accepted 65 s after its iat, not 66.
    let mut edge = Edge::new();
    edge.advance_ms(65_000);
    let mut seen = std::collections::HashSet::new();
    assert!(matches!(
        edge.dpop(&authorization, Some(&proof), &mut seen),
        dpop::End::Origin(_)
    ));
    let mut edge = Edge::new();
    edge.advance_ms(66_000);
    let reply = edge
        .dpop(&authorization, Some(&proof), &mut Default::default())
        .reply();
    assert!(reply.body.contains("too old"), "{}", reply.body);
}

#[test]
fn a_route_may_require_dpop() {
    const DPOP_ROUTES: &str = r#"{ "route": [
        { "id": "pay", "path": "/orders/**", "dpop": "required" } ] }"#;
    let mut edge = Edge::with(&[("ROUTES", DPOP_ROUTES)]);
    let mut seen = std::collections::HashSet::new();
    let reply = edge
        .dpop(
            &format!("Bearer {}", fixtures::good_token()),
            None,
            &mut seen,
        )
        .reply();
    assert_eq!(reply.status, 401);
    assert_eq!(dpop::challenge(&reply).1, "invalid_token");
    assert!(
        reply.body.contains("requires a DPoP-bound"),
        "{}",
        reply.body
    );
    // No credentials at all: the challenge names DPoP.
    let reply = edge.dpop("", None, &mut seen).reply();
    assert_eq!(
        reply.challenge.as_deref(),
        Some("DPoP algs=\"ES256\", realm=\"edgeward\"")
    );
    let holder = Holder::new(5);
    let token = bound_token(&holder);
    let proof = holder.proof("r", &token, |_, _| {});
    assert!(matches!(
        edge.dpop(&format!("DPoP {token}"), Some(&proof), &mut seen),
        dpop::End::Origin(_)
    ));
}

#[test]
fn no_answer_from_the_replay_object_is_503_never_a_pass() {
    let mut edge = Edge::new();
    let holder = Holder::new(6);
    let token = bound_token(&holder);
    let proof = holder.proof("lost", &token, |_, _| {});
    let id = edge.up_to_replay_line(&format!("DPoP {token}"), proof);
    let [(call, name, _)] = &edge.replay_calls()[..] else {
        panic!("one call out")
    };
    assert_eq!(edge.asked(id), Asked::Join { call: *call });
    assert_eq!(name, &format!("FRA/dpop/{}", holder.jkt()));
    let lost = Answer::Limit(Err("no answer within 1000 ms".into()));
    assert!(matches!(edge.answer(*call, lost), Next::Idle(_)));
    let reply = reply_of(edge.answer(id, Answer::Joined));
    assert_eq!(reply.status, 503);
    assert_eq!(reply.retry_after.as_deref(), Some("1"));
    assert!(reply.challenge.is_none());
    assert_eq!(edge.events("dpop_replay_unchecked"), 1);
}

#[test]
fn an_undecided_proof_is_503_with_retry_after_at_no_cost_and_the_next_proof_passes() {
    // The object started again within the proof's window and cannot tell (`2`): the proof
    // is refused, as a pause, not as a replay; the client's budget stays whole.
    let mut edge = Edge::with(&[("FAILED_AUTH_PLAN", "2/60s;burst=2")]);
    let holder = Holder::new(8);
    let token = bound_token(&holder);
    let authorization = format!("DPoP {token}");
    for round in 0..4 {
        let proof = holder.proof(&format!("maybe-{round}"), &token, |_, _| {});
        let id = edge.up_to_replay_line(&authorization, proof);
        let [(call, _, _)] = &edge.replay_calls()[..] else {
            panic!("one call out")
        };
        assert!(matches!(
            edge.answer(*call, Answer::Limit(Ok("2".into()))),
            Next::Idle(_)
        ));
        let reply = reply_of(edge.answer(id, Answer::Joined));
        assert_eq!(reply.status, 503, "round {round}: {reply:?}");
        assert_eq!(reply.retry_after.as_deref(), Some("1"));
        assert!(reply.challenge.is_none());
        assert!(
            reply.body.contains("retry with a new proof"),
            "{}",
            reply.body
        );
        edge.side.clear();
    }
    assert_eq!(
        edge.events("dpop_replay_unchecked"),
        0,
        "not the object's failure"
    );
    // A new proof the object can tell passes: no failed-auth budget was spent.
    let mut seen = std::collections::HashSet::new();
    let proof = holder.proof("after", &token, |_, _| {});
    assert!(matches!(
        edge.dpop(&authorization, Some(&proof), &mut seen),
        dpop::End::Origin(_)
    ));
}

#[test]
fn proof_keys_held_are_bounded_and_the_driver_drops_the_rest() {
    // One client's tokens, each bound to a key of its own: no rate limit in the way.
    let mut edge = Edge::with(&[("RATE_LIMIT_MODE", "off")]);
    let mut seen = std::collections::HashSet::new();
    for n in 0..1100u32 {
        use sha2::Digest;
        let seed = sha2::Sha256::digest(n.to_be_bytes());
        let key = p256::ecdsa::SigningKey::from_slice(&seed).unwrap();
        let holder = dpop::Holder::from_key(key);
        let token = bound_token(&holder);
        let proof = holder.proof("k", &token, |_, _| {});
        assert!(matches!(
            edge.dpop(&format!("DPoP {token}"), Some(&proof), &mut seen),
            dpop::End::Origin(_)
        ));
    }
    let forgotten: Vec<&str> = edge
        .side
        .iter()
        .filter_map(|side| match side {
            Side::ForgetProofKey { jkt } => Some(jkt.as_str()),
            _ => None,
        })
        .collect();
    assert!(forgotten.len() >= 1100 - 1024, "{}", forgotten.len());
    // The driver's keys (what the harness keeps, less what it was told to forget) are the
    // isolate's table: as many, and a client whose key was let go is imported again.
    assert!(
        edge.proof_keys_imported() <= 1024,
        "{}",
        edge.proof_keys_imported()
    );
    let first = dpop::Holder::from_key({
        use sha2::Digest;
        let seed = sha2::Sha256::digest(0u32.to_be_bytes());
        p256::ecdsa::SigningKey::from_slice(&seed).unwrap()
    });
    assert!(!edge.imported.contains_key(&Named::Proof(first.jkt())));
    let token = bound_token(&first);
    let proof = first.proof("again", &token, |_, _| {});
    assert!(matches!(
        edge.dpop(&format!("DPoP {token}"), Some(&proof), &mut seen),
        dpop::End::Origin(_)
    ));
    assert!(edge.imported.contains_key(&Named::Proof(first.jkt())));
}
