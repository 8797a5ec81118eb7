//! DPoP (RFC 9449) end to end: the issuer process, the edge in workerd, an axum origin.
//!
//! - A client no one here wrote, panva's `oauth4webapi` (`tests/clients/dpop.mjs`), gets a
//!   DPoP-bound token with a key of its own and calls the API through the edge with a new
//!   proof each time; another client's plain bearer flow still works.
//! - Every attack is refused with RFC 9449's answer and never reaches the origin: a replayed
//!   proof (at the same isolate; at a new isolate after the edge restarted on the same state,
//!   a 503 to retry with a new proof, since the object keeps its floor, not its memory),
//!   `htm`/`htu` of another request, a stale or future `iat`, another key's
//!   signature, `ath` missing or wrong, a private `jwk`, `alg` none or HS256, a proof without
//!   a token, a token without a proof, and the token downgraded to `Bearer`.
//! - A proof replayed at another isolate alive at the same time (two edge Workers sharing one
//!   set of Durable Objects, in one workerd) is refused there too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Duration;

use base64ct::{Base64UrlUnpadded, Encoding};
use edgeward_tests::*;
use p256::ecdsa::{signature::Signer, Signature, SigningKey};
use serde_json::{json, Value};

fn b64(bytes: &[u8]) -> String {
    Base64UrlUnpadded::encode_string(bytes)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The test's own DPoP key (what an attacker who stole a token lacks).
struct Holder(SigningKey);

impl Holder {
    fn new(seed: &str) -> Self {
        let seed = <sha2::Sha256 as sha2::Digest>::digest(seed.as_bytes());
        Self(SigningKey::from_slice(&seed).unwrap())
    }

    fn jwk(&self) -> Value {
        let point = self.0.verifying_key().to_encoded_point(false);
        json!({ "kty": "EC", "crv": "P-256", "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap()) })
    }

    fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature: Signature = self.0.sign(input.as_bytes());
        format!("{input}.{}", b64(&signature.to_bytes()))
    }

    /// A proof for `method url`, with `token`'s hash unless there is none, edited.
    fn proof(
        &self,
        method: &str,
        url: &str,
        token: Option<&str>,
        edit: impl FnOnce(&mut Value, &mut Value),
    ) -> String {
        let mut header = json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk() });
        let mut claims = json!({
            "jti": format!("{:x}", rand_jti()), "htm": method, "htu": url, "iat": now_secs(),
        });
        if let Some(token) = token {
            claims["ath"] = json!(shared::dpop::token_hash(token));
        }
        edit(&mut header, &mut claims);
        self.sign(&header, &claims)
    }
}

/// A `jti` no two proofs of the test share.
fn rand_jti() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    (u128::from(now_secs()) << 64) | u128::from(NEXT.fetch_add(1, Ordering::SeqCst))
}

/// A client for this suite's audience.
const AUDIENCE_ARGS: [&str; 2] = ["--audience", AUDIENCE];

/// A client for this suite's audience that must use DPoP.
fn dpop_client(dir: &std::path::Path, settings: &[(&str, &str)], name: &str) -> Client {
    let extra = [&AUDIENCE_ARGS[..], &["--require-dpop"]].concat();
    Client::create_with(dir, settings, name, &extra)
}

/// `GET url` with `authorization` and `DPoP` headers, as given.
async fn call(url: &str, authorization: Option<&str>, proof: Option<&str>) -> Reply {
    let mut request = http().get(url);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    if let Some(proof) = proof {
        request = request.header("dpop", proof);
    }
    Reply::of(request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth4webapi_gets_a_dpop_token_and_every_attack_is_refused_at_the_edge() {
    let dir = temp_dir("dpop_interop");
    // The metadata must name the address clients use (it is the proofs' `htu`).
    let address = OwnAddress::new();
    let (issuer_url, settings) = (address.url.clone(), address.settings(&[]));
    let (_issuer, issuer_port) = issuer_with(&dir, &settings).await;
    let dpop_client = dpop_client(&dir, &settings, "dpop client");
    let bearer_client = Client::create_with(&dir, &settings, "bearer client", &AUDIENCE_ARGS);

    let (seen, origin_port) = origin(ASSERTION_KEY_ID, ASSERTION_SECRET).await;
    // This issuer's `iss` is its own address, not `ISSUER_URL`.
    let vars = EdgeSettings::new(issuer_port, origin_port)
        .set("ISSUER", issuer_url.clone())
        // Failed authentications are charged per client address: every attack below comes
        // from this one, and each must be answered for itself.
        .set("FAILED_AUTH_PLAN", "1000/60s;burst=1000");
    let (mut edge_process, edge_port) = edge(&dir, &vars, ASSERTION_SECRET).await;
    // Clients reach the edge at one address that outlives its process (a proof names the URL
    // it is for): a forwarder, moved to the new process when the edge restarts.
    let mut front = TcpProxy::start(([127, 0, 0, 1], edge_port).into()).await;
    let front_port = front.port;
    let api = format!("http://127.0.0.1:{front_port}/orders/7");

    // ---- the third-party client ----
    let got = node_client(
        "dpop.mjs",
        &[
            &issuer_url,
            &api,
            &dpop_client.id,
            &dpop_client.secret,
            &bearer_client.id,
            &bearer_client.secret,
        ],
    );
    let dpop = &got["dpop"];
    assert!(
        dpop["token_type"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case("dpop"),
        "{got}"
    );
    for call in ["first", "second"] {
        assert_eq!(dpop[call]["status"], 200, "{call}: {got}");
        // The origin heard the token was sender-constrained, by the client's key, and got
        // no proof to replay.
        assert_eq!(dpop[call]["body"]["cnf_jkt"], dpop["jkt"], "{call}: {got}");
        assert_eq!(dpop[call]["body"]["dpop_header"], false, "{call}");
    }
    let bearer = &got["bearer"];
    assert!(
        bearer["token_type"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case("bearer"),
        "{got}"
    );
    assert_eq!(bearer["call"]["status"], 200, "{got}");
    assert_eq!(bearer["call"]["body"]["cnf_jkt"], "", "{got}");

    // A client that requires DPoP gets nothing without a proof.
    let refused = dpop_client.request_token(issuer_port).await;
    assert_eq!(
        (refused.status, refused.json()["error"].as_str()),
        (400, Some("invalid_dpop_proof"))
    );

    // ---- the attacks: a token of our own key, then every way to misuse it ----
    let holder = Holder::new("dpop interop holder");
    let thief = Holder::new("dpop interop thief");
    let token_endpoint = format!("{issuer_url}/oauth2/token");
    let granted = Reply::of(
        http()
            .post(&token_endpoint)
            .basic_auth(&dpop_client.id, Some(&dpop_client.secret))
            .header(
                "dpop",
                holder.proof("POST", &token_endpoint, None, |_, _| {}),
            )
            .form(&[("grant_type", "client_credentials"), ("scope", "read")]),
    )
    .await;
    assert_eq!(granted.status, 200, "{}", granted.body);
    let token = granted.json()["access_token"].as_str().unwrap().to_owned();
    let as_dpop = format!("DPoP {token}");
    let good = holder.proof("GET", &api, Some(&token), |_, _| {});
    let reached = seen.lock().unwrap().len();
    let first = call(&api, Some(&as_dpop), Some(&good)).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(seen.lock().unwrap().len(), reached + 1);
    let reached = reached + 1;

    let now = now_secs();
    let other_route = format!("http://127.0.0.1:{front_port}/orders/8");
    let attacks: Vec<(&str, Option<String>, Option<String>, &str)> = vec![
        (
            "the same proof again, at the same isolate",
            Some(as_dpop.clone()),
            Some(good.clone()),
            "invalid_dpop_proof",
        ),
        (
            "the token downgraded to Bearer",
            Some(format!("Bearer {token}")),
            None,
            "invalid_token",
        ),
        (
            "the token as Bearer, with a proof",
            Some(format!("Bearer {token}")),
            Some(holder.proof("GET", &api, Some(&token), |_, _| {})),
            "invalid_token",
        ),
        (
            "a token without a proof",
            Some(as_dpop.clone()),
            None,
            "invalid_dpop_proof",
        ),
        (
            "htm of another method",
            Some(as_dpop.clone()),
            Some(holder.proof("POST", &api, Some(&token), |_, _| {})),
            "invalid_dpop_proof",
        ),
        (
            "htu of another route",
            Some(as_dpop.clone()),
            Some(holder.proof("GET", &other_route, Some(&token), |_, _| {})),
            "invalid_dpop_proof",
        ),
        (
            "a stale iat",
            Some(as_dpop.clone()),
            Some(holder.proof("GET", &api, Some(&token), |_, c| {
                c["iat"] = json!(now - 300)
            })),
            "invalid_dpop_proof",
        ),
        (
            "a future iat",
            Some(as_dpop.clone()),
            Some(holder.proof("GET", &api, Some(&token), |_, c| {
                c["iat"] = json!(now + 300)
            })),
            "invalid_dpop_proof",
        ),
        (
            "signed by another key",
            Some(as_dpop.clone()),
            Some({
                let mut claims = json!({ "jti": "thief-1", "htm": "GET", "htu": api, "iat": now,
                                     "ath": shared::dpop::token_hash(&token) });
                claims["jti"] = json!(format!("{:x}", rand_jti()));
                thief.sign(
                    &json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": holder.jwk() }),
                    &claims,
                )
            }),
            "invalid_dpop_proof",
        ),
        (
            "a proof of the thief's own key",
            Some(as_dpop.clone()),
            Some(thief.proof("GET", &api, Some(&token), |_, _| {})),
            "invalid_dpop_proof",
        ),
        (
            "ath missing",
            Some(as_dpop.clone()),
            Some(holder.proof("GET", &api, None, |_, _| {})),
            "invalid_dpop_proof",
        ),
        (
            "ath of another token",
            Some(as_dpop.clone()),
            Some(holder.proof("GET", &api, Some("another.token"), |_, _| {})),
            "invalid_dpop_proof",
        ),
        (
            "a private jwk",
            Some(as_dpop.clone()),
            Some(holder.proof("GET", &api, Some(&token), |h, _| {
                h["jwk"]["d"] = json!(b64(&holder.0.to_bytes()));
            })),
            "invalid_dpop_proof",
        ),
        (
            "alg none",
            Some(as_dpop.clone()),
            Some({
                let proof =
                    holder.proof("GET", &api, Some(&token), |h, _| h["alg"] = json!("none"));
                format!("{}.", proof.rsplit_once('.').unwrap().0)
            }),
            "invalid_dpop_proof",
        ),
        (
            "alg HS256",
            Some(as_dpop.clone()),
            Some(holder.proof("GET", &api, Some(&token), |h, _| h["alg"] = json!("HS256"))),
            "invalid_dpop_proof",
        ),
    ];
    for (name, authorization, proof, error) in &attacks {
        let reply = call(&api, authorization.as_deref(), proof.as_deref()).await;
        assert_eq!(reply.status, 401, "{name}: {}", reply.body);
        assert_eq!(reply.json()["error"], *error, "{name}: {}", reply.body);
        let challenge = reply.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("DPoP algs=\"ES256\""),
            "{name}: {challenge}"
        );
    }
    // A proof without a token: no credentials, a bare challenge.
    let reply = call(
        &api,
        None,
        Some(&holder.proof("GET", &api, Some(&token), |_, _| {})),
    )
    .await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(
        seen.lock().unwrap().len(),
        reached,
        "no attack reached the origin"
    );

    // ---- a replay at a new isolate: the edge restarted on the same state ----
    let replayed_later = holder.proof("GET", &api, Some(&token), |_, _| {});
    let proof_second = now_secs();
    assert_eq!(
        call(&api, Some(&as_dpop), Some(&replayed_later))
            .await
            .status,
        200
    );
    edge_process.kill_hard();
    drop(edge_process);
    front.cut();
    // A new workerd on the same local state: new isolates, the same replay objects' storage.
    let (edge_again, port_again) = edge(&dir, &vars, ASSERTION_SECRET).await;
    let _front = TcpProxy::start_on(front_port, ([127, 0, 0, 1], port_again).into()).await;
    // The object started again with its floor, not its memory: it cannot tell this proof from
    // one of the same second it never saw, so it refuses it as a pause (503, Retry-After).
    let reply = call(&api, Some(&as_dpop), Some(&replayed_later)).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.json()["error"], "temporarily_unavailable");
    assert!(
        reply.body.contains("retry with a new proof"),
        "{}",
        reply.body
    );
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(seen.lock().unwrap().len(), reached + 1);
    // The client's next proof, a second on, is judged: fresh once, then a replay.
    while now_secs() <= proof_second {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let next = holder.proof("GET", &api, Some(&token), |_, _| {});
    assert_eq!(call(&api, Some(&as_dpop), Some(&next)).await.status, 200);
    let reply = call(&api, Some(&as_dpop), Some(&next)).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert!(reply.body.contains("already used"), "{}", reply.body);
    assert_eq!(seen.lock().unwrap().len(), reached + 2);
    drop(edge_again);
}

/// Two edge isolates alive at once in one workerd, sharing one set of Durable Objects (as the
/// isolates of a Cloudflare location do): a proof accepted by one is refused by the other,
/// and a fresh proof for the same URL passes there (so the refusal is the replay object's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_replayed_at_another_live_isolate_is_refused() {
    let dir = temp_dir("dpop_isolates");
    let (_issuer, issuer_port) = issuer(&dir).await;
    let client = Client::create(&dir, "dpop isolates", &[]);
    let (seen, origin_port) = origin(ASSERTION_KEY_ID, ASSERTION_SECRET).await;
    let holder = Holder::new("dpop isolates holder");
    // The issuer checks a proof against the token endpoint its metadata names.
    let token_endpoint = format!("{ISSUER_URL}/oauth2/token");
    let granted = Reply::of(
        http()
            .post(format!("http://127.0.0.1:{issuer_port}/oauth2/token"))
            .basic_auth(&client.id, Some(&client.secret))
            .header(
                "dpop",
                holder.proof("POST", &token_endpoint, None, |_, _| {}),
            )
            .form(&[("grant_type", "client_credentials")]),
    )
    .await;
    assert_eq!(granted.status, 200, "{}", granted.body);
    let token = granted.json()["access_token"].as_str().unwrap().to_owned();

    let vars = EdgeSettings::new(issuer_port, origin_port)
        .set("ASSERTION_SECRET", ASSERTION_SECRET)
        .set("RATE_LIMIT_MODE", "isolate");
    let ports = [free_port(), free_port()];
    let edges = workerd_isolates(&dir, &isolates_config(&ports, &vars, "edgeward-dpop-test"));
    for port in ports {
        let health = format!("http://127.0.0.1:{port}/.edge/health");
        wait_ready(&health, Duration::from_secs(30), &edges).await;
    }
    // Both isolates are reached under one name (as a location's isolates are): the proof's
    // `htu`, and the `Host` every request carries.
    let host = format!("127.0.0.1:{}", ports[0]);
    let url = format!("http://{host}/orders/7");
    let at = |port: u16, proof: &str| {
        http()
            .get(format!("http://127.0.0.1:{port}/orders/7"))
            .header("host", &host)
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", proof)
    };
    let proof = holder.proof("GET", &url, Some(&token), |_, _| {});
    let first = Reply::of(at(ports[0], &proof)).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let replayed = Reply::of(at(ports[1], &proof)).await;
    assert_eq!(replayed.status, 401, "{}", replayed.body);
    assert_eq!(replayed.json()["error"], "invalid_dpop_proof");
    assert!(replayed.body.contains("already used"), "{}", replayed.body);
    let fresh = holder.proof("GET", &url, Some(&token), |_, _| {});
    let second = Reply::of(at(ports[1], &fresh)).await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "the replay never reached the origin"
    );

    // A burst at one isolate: proofs verified while its replay call is out wait for the next
    // call, together (src/isolate/proofs.rs: each follows the call out from its own event).
    // Each is still judged on its own: the two sent twice pass once.
    let proofs: Vec<String> = (0..12)
        .map(|_| holder.proof("GET", &url, Some(&token), |_, _| {}))
        .collect();
    let mut burst = tokio::task::JoinSet::new();
    for proof in proofs.iter().chain(&proofs[..2]) {
        burst.spawn(Reply::of(at(ports[0], proof)));
    }
    let mut statuses = Vec::new();
    while let Some(reply) = burst.join_next().await {
        let reply = reply.unwrap();
        if reply.status != 200 {
            let log = edges.log();
            assert!(reply.body.contains("already used"), "{}\n{log}", reply.body);
        }
        statuses.push(reply.status);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [[200; 12].as_slice(), &[401; 2]].concat());
    assert_eq!(
        seen.lock().unwrap().len(),
        14,
        "replays never reach the origin"
    );
}

/// An edge with `DPOP_NONCE_SECRET` (RFC 9449 §9): oauth4webapi meets its `use_dpop_nonce`,
/// keeps the nonce and calls again, as its documentation says to; a proof without a nonce,
/// or with another server's, never reaches the origin. (Nonce windows, to the millisecond, are
/// the native tests' `with_nonces_on_a_proof_needs_one_of_the_edges_and_every_answer_hands_the_next`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_that_requires_nonces_hands_oauth4webapi_one() {
    let dir = temp_dir("dpop_nonce");
    let address = OwnAddress::new();
    // The issuer's own nonces too: the library keeps one per server.
    let settings = address.settings(&[("ISSUER_DPOP_REQUIRE_NONCE", "true")]);
    let issuer_url = address.url.clone();
    let (_issuer, issuer_port) = issuer_with(&dir, &settings).await;
    let client = dpop_client(&dir, &settings, "dpop nonce client");
    let (seen, origin_port) = origin(ASSERTION_KEY_ID, ASSERTION_SECRET).await;
    let vars = EdgeSettings::new(issuer_port, origin_port)
        .set("ISSUER", issuer_url.clone())
        .set(
            "DPOP_NONCE_SECRET",
            "edge-dpop-nonce-secret-0123456789abcdef",
        );
    let (_edge, edge_port) = edge(&dir, &vars, ASSERTION_SECRET).await;
    let api = format!("http://127.0.0.1:{edge_port}/orders/7");

    let got = node_client(
        "dpop-nonce.mjs",
        &[&issuer_url, &api, &client.id, &client.secret],
    );
    let calls = got["calls"].as_array().unwrap();
    assert!(calls.iter().all(|call| call["status"] == 200), "{got}");
    assert_eq!(
        calls[0]["tries"], 2,
        "the first call is asked for a nonce: {got}"
    );
    assert!(
        calls[1..].iter().all(|call| call["tries"] == 1),
        "then the library has one: {got}"
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        3,
        "each call reached the origin once"
    );

    // By hand: a token of our own key, a proof without a nonce, then with the edge's.
    let holder = Holder::new("dpop nonce holder");
    let token_endpoint = format!("{issuer_url}/oauth2/token");
    let token_request = |nonce: Option<&str>| {
        let proof = holder.proof("POST", &token_endpoint, None, |_, claims| {
            if let Some(nonce) = nonce {
                claims["nonce"] = json!(nonce);
            }
        });
        http()
            .post(&token_endpoint)
            .basic_auth(&client.id, Some(&client.secret))
            .header("dpop", proof)
            .form(&[("grant_type", "client_credentials"), ("scope", "read")])
    };
    let asked = Reply::of(token_request(None)).await;
    let issuer_nonce = asked.header("dpop-nonce").unwrap().to_owned();
    let granted = Reply::of(token_request(Some(&issuer_nonce))).await;
    assert_eq!(granted.status, 200, "{}", granted.body);
    let token = granted.json()["access_token"].as_str().unwrap().to_owned();
    let as_dpop = format!("DPoP {token}");

    let reached = seen.lock().unwrap().len();
    let bare = holder.proof("GET", &api, Some(&token), |_, _| {});
    let refused = call(&api, Some(&as_dpop), Some(&bare)).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert_eq!(refused.json()["error"], "use_dpop_nonce");
    let challenge = refused.header("www-authenticate").unwrap();
    assert!(
        challenge.starts_with("DPoP ") && challenge.contains("error=\"use_dpop_nonce\""),
        "{challenge}"
    );
    let nonce = refused
        .header("dpop-nonce")
        .expect("a nonce to retry with")
        .to_owned();
    // The issuer's nonce is not the edge's: each server keys its own.
    let with = |nonce: &str| {
        holder.proof("GET", &api, Some(&token), |_, claims| {
            claims["nonce"] = json!(nonce)
        })
    };
    let foreign = call(&api, Some(&as_dpop), Some(&with(&issuer_nonce))).await;
    assert_eq!(
        foreign.json()["error"],
        "use_dpop_nonce",
        "{}",
        foreign.body
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        reached,
        "no refused proof reached the origin"
    );

    // With the edge's nonce it passes, and the origin's answer carries the edge's nonce in
    // place of the one the origin sent (the client keeps one per server).
    let passed = Reply::of(
        http()
            .get(&api)
            .header("authorization", &as_dpop)
            .header("dpop", with(&nonce))
            .header("x-origin-dpop-nonce", "the-origins-own"),
    )
    .await;
    assert_eq!(passed.status, 200, "{}", passed.body);
    let nonces: Vec<&str> = passed
        .headers
        .iter()
        .filter(|(name, _)| name == "dpop-nonce")
        .map(|(_, value)| value.as_str())
        .collect();
    assert_eq!(nonces, [nonce.as_str()]);
    assert_eq!(seen.lock().unwrap().len(), reached + 1);
    // A bearer client's refusal says nothing of nonces.
    let bearer = call(&api, Some("Bearer not-a-token"), None).await;
    assert_eq!((bearer.status, bearer.header("dpop-nonce")), (401, None));
}
