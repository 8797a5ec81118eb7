//! DPoP (RFC 9449) at the token endpoint, on SQLite and PostgreSQL: a proof gets a bound
//! token, every bad proof is `invalid_dpop_proof`, a replay is refused across instances and
//! at the edge of its window (an injected clock), and nonces when they are required.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use axum::body::Body;
use base64ct::{Base64UrlUnpadded, Encoding};
use http::Request;
use p256::ecdsa::{signature::Signer, Signature, SigningKey};
use serde_json::{json, Value};
use shared::dpop::{ProofRules, PROOF_ALGS};
use shared::UnixTime;
use support::*;

on_both_databases!(
    a_proof_gets_a_token_bound_to_its_key,
    bad_proofs_are_invalid_dpop_proof,
    a_client_that_requires_dpop_gets_no_bearer_token,
    a_proof_is_good_once_across_instances,
    a_proof_is_remembered_to_the_end_of_its_window,
    a_request_refused_for_what_it_asks_does_not_spend_its_proof,
    nonces_when_required,
    a_kek_rotation_keeps_the_nonces_handed_out,
    the_admin_api_refuses_a_bound_token_as_bearer,
);

fn b64(bytes: &[u8]) -> String {
    Base64UrlUnpadded::encode_string(bytes)
}

/// A client's DPoP key and the proofs it makes.
struct Holder {
    key: SigningKey,
}

impl Holder {
    fn new() -> Self {
        Self {
            key: SigningKey::random(&mut rand_core::OsRng),
        }
    }

    fn jwk(&self) -> Value {
        let point = self.key.verifying_key().to_encoded_point(false);
        json!({ "kty": "EC", "crv": "P-256", "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap()) })
    }

    /// Its RFC 7638 thumbprint, by `shared`'s reading of its public key.
    fn jkt(&self) -> String {
        let point = self.key.verifying_key().to_encoded_point(false);
        let key = shared::Jwk::from_sec1_bytes("holder", point.as_bytes()).unwrap();
        shared::Jkt::of(&key).to_string()
    }

    /// A proof with `edit` applied to its header and claims.
    fn proof_with(&self, claims: Value, edit: impl FnOnce(&mut Value, &mut Value)) -> String {
        let mut header = json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk() });
        let mut claims = claims;
        edit(&mut header, &mut claims);
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature: Signature = self.key.sign(input.as_bytes());
        format!("{input}.{}", b64(&signature.to_bytes()))
    }

    /// A proof for the token endpoint of `state` at `iat`.
    fn proof(&self, state: &issuer::AppState, jti: &str, iat: u64) -> String {
        self.proof_with(token_claims(state, jti, iat), |_, _| {})
    }
}

/// A client with `scopes` for `audience`, made as the CLI makes one.
async fn client_of(
    state: &issuer::AppState,
    scopes: &str,
    audience: &str,
    require_dpop: bool,
) -> issuer::clients::Created {
    let new = issuer::clients::NewClient {
        name: format!("{scopes} client"),
        scopes: scopes.into(),
        audiences: vec![audience.into()],
        rate_plan: None,
        jwks: None,
        resource_server: false,
        require_dpop,
    };
    issuer::clients::create(&state.db, new, "cli", issuer::db::unix_now())
        .await
        .unwrap()
}

fn token_claims(state: &issuer::AppState, jti: &str, iat: u64) -> Value {
    json!({
        "jti": jti,
        "htm": "POST",
        "htu": format!("{}/oauth2/token", state.config().issuer_url),
        "iat": iat,
    })
}

fn now_secs() -> u64 {
    issuer::db::unix_now() as u64
}

/// `POST /oauth2/token` for the client with these `DPoP` header values.
async fn ask(
    state: &issuer::AppState,
    (id, secret): (&str, &str),
    proofs: &[&str],
) -> (http::StatusCode, http::HeaderMap, Value) {
    let mut request = token_request("grant_type=client_credentials", Some((id, secret)));
    for proof in proofs {
        request
            .headers_mut()
            .append("dpop", http::HeaderValue::from_str(proof).unwrap());
    }
    send_json(state, request).await
}

fn assert_refused(answer: &(http::StatusCode, http::HeaderMap, Value), error: &str, what: &str) {
    let (status, headers, body) = answer;
    assert_eq!(*status, 400, "{what}: {body}");
    assert_eq!(body["error"], error, "{what}: {body}");
    assert_eq!(headers["cache-control"], "no-store", "{what}");
}

async fn a_proof_gets_a_token_bound_to_its_key(backend: Backend) {
    let state = open(config(backend).await).await;
    let (id, secret) = client(&state).await;
    let holder = Holder::new();
    let (status, _, body) = ask(
        &state,
        (&id, &secret),
        &[&holder.proof(&state, "j1", now_secs())],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "DPoP");
    let token = body["access_token"].as_str().unwrap();
    let verified = verify(&state, &jwks(&state).await, token).unwrap();
    assert_eq!(
        verified.claims().cnf.as_ref().unwrap().jkt.as_str(),
        holder.jkt()
    );

    // Introspection (RFC 9449 §6.2) says so, with the key.
    let introspect = Request::post("/oauth2/introspect")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", basic(&id, &secret))
        .body(Body::from(format!("token={token}")))
        .unwrap();
    let (status, _, body) = send_json(&state, introspect).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["active"], true);
    assert_eq!(body["token_type"], "DPoP");
    assert_eq!(body["cnf"]["jkt"], holder.jkt());

    // A bearer request from the same client still gets a bearer token, without `cnf`.
    let (status, _, body) = ask(&state, (&id, &secret), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    let bearer = verify(
        &state,
        &jwks(&state).await,
        body["access_token"].as_str().unwrap(),
    )
    .unwrap();
    assert!(bearer.claims().cnf.is_none());

    // The metadata names the proof algorithms.
    let (_, _, metadata) = send_json(
        &state,
        Request::get("/.well-known/oauth-authorization-server")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(
        metadata["dpop_signing_alg_values_supported"],
        json!(PROOF_ALGS)
    );
}

async fn bad_proofs_are_invalid_dpop_proof(backend: Backend) {
    let state = open(config(backend).await).await;
    let (id, secret) = client(&state).await;
    let holder = Holder::new();
    let now = now_secs();
    let max_age = state.config().dpop_proof_max_age_secs;
    let other = Holder::new();
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("not a JWT", vec!["not-a-proof".into()]),
        (
            "two DPoP headers",
            vec![
                holder.proof(&state, "a", now),
                holder.proof(&state, "b", now),
            ],
        ),
        (
            "htm GET",
            vec![holder.proof_with(token_claims(&state, "c", now), |_, c| {
                c["htm"] = json!("GET")
            })],
        ),
        (
            "htu of another endpoint",
            vec![holder.proof_with(token_claims(&state, "d", now), |_, c| {
                c["htu"] = json!(format!("{}/oauth2/introspect", state.config().issuer_url))
            })],
        ),
        (
            "iat too old",
            vec![holder.proof(&state, "e", now - max_age - 10)],
        ),
        (
            "iat in the future",
            vec![holder.proof(&state, "f", now + 60)],
        ),
        (
            "a private jwk",
            vec![holder.proof_with(token_claims(&state, "g", now), |h, _| {
                h["jwk"]["d"] = json!(b64(&holder.key.to_bytes()))
            })],
        ),
        (
            "alg HS256",
            vec![holder.proof_with(token_claims(&state, "h", now), |h, _| {
                h["alg"] = json!("HS256")
            })],
        ),
        (
            "signed by another key",
            vec![other.proof_with(token_claims(&state, "i", now), |h, _| {
                h["jwk"] = holder.jwk()
            })],
        ),
        (
            "typ JWT",
            vec![holder.proof_with(token_claims(&state, "k", now), |h, _| {
                h["typ"] = json!("JWT")
            })],
        ),
        (
            "no jti",
            vec![holder.proof_with(token_claims(&state, "l", now), |_, c| {
                c.as_object_mut().unwrap().remove("jti");
            })],
        ),
    ];
    for (what, proofs) in cases {
        let proofs: Vec<&str> = proofs.iter().map(String::as_str).collect();
        let answer = ask(&state, (&id, &secret), &proofs).await;
        assert_refused(&answer, "invalid_dpop_proof", what);
    }
    // An unauthenticated request never gets as far as its proof: `invalid_client`.
    let (status, _, body) = ask(&state, (&id, "wrong"), &["not-a-proof"]).await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (401, Some("invalid_client"))
    );
}

async fn a_client_that_requires_dpop_gets_no_bearer_token(backend: Backend) {
    let state = open(config(backend).await).await;
    let created = client_of(&state, "read", AUDIENCE, true).await;
    assert!(created.client.require_dpop);
    let credentials = (
        created.client.client_id.as_str(),
        created.client_secret.as_str(),
    );
    let answer = ask(&state, credentials, &[]).await;
    assert_refused(&answer, "invalid_dpop_proof", "no proof");
    let holder = Holder::new();
    let (status, _, body) = ask(
        &state,
        credentials,
        &[&holder.proof(&state, "m", now_secs())],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "DPoP");
    // Stored and shown as set.
    let shown = issuer::clients::show(&state.db, credentials.0)
        .await
        .unwrap();
    assert!(shown.require_dpop);

    // An admin with the clients power lets it have bearer tokens again, and back; audited.
    let (_, admin_token) = admin(&state, "admin:clients").await;
    let path = format!("/admin/clients/{}/require-dpop", credentials.0);
    let off = json!({ "required": false });
    let (status, _, body) = call(&state, "POST", &path, Some(&admin_token), Some(off)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["require_dpop"], false);
    let (status, _, body) = ask(&state, credentials, &[]).await;
    assert_eq!(
        (status.as_u16(), body["token_type"].as_str()),
        (200, Some("Bearer")),
        "{body}"
    );
    let on = json!({ "required": true });
    let (status, _, _) = call(&state, "POST", &path, Some(&admin_token), Some(on)).await;
    assert_eq!(status, 200);
    assert_refused(
        &ask(&state, credentials, &[]).await,
        "invalid_dpop_proof",
        "required again",
    );
    let bad = json!({ "on": 1 });
    let (status, _, body) = call(&state, "POST", &path, Some(&admin_token), Some(bad)).await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    let rows = issuer::audit::rows_after(state.db.pool(), 0).await.unwrap();
    let actions: Vec<&str> = rows.iter().map(|row| row.action.as_str()).collect();
    assert!(
        actions.ends_with(&["client.allow_bearer", "client.require_dpop"]),
        "{actions:?}"
    );
}

/// A request refused for its scope or resource has not used its proof: sent again with the
/// same proof and a scope its client has, it gets its token (and only then is the proof used).
async fn a_request_refused_for_what_it_asks_does_not_spend_its_proof(backend: Backend) {
    let state = open(config(backend).await).await;
    let created = client_of(&state, "read", "https://api.example", false).await;
    let credentials = (
        created.client.client_id.as_str(),
        created.client_secret.as_str(),
    );
    let holder = Holder::new();
    let proof = holder.proof(&state, "retried", now_secs());
    let with = |form: &str| {
        let mut request = token_request(form, Some(credentials));
        request
            .headers_mut()
            .append("dpop", http::HeaderValue::from_str(&proof).unwrap());
        send_json(&state, request)
    };
    let answer = with("grant_type=client_credentials&scope=write").await;
    assert_refused(&answer, "invalid_scope", "a scope the client lacks");
    let answer = with("grant_type=client_credentials&resource=https%3A%2F%2Fother.example").await;
    assert_refused(&answer, "invalid_target", "a resource the client lacks");
    let (status, _, body) = with("grant_type=client_credentials&scope=read").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "DPoP");
    let answer = with("grant_type=client_credentials&scope=read").await;
    assert_refused(
        &answer,
        "invalid_dpop_proof",
        "the same proof once it got a token",
    );
}

/// Two instances on one database, the same proof sent to both at once: one token.
async fn a_proof_is_good_once_across_instances(backend: Backend) {
    let config = config(backend).await;
    let first = open(config.clone()).await;
    let second = open(config).await;
    let (id, secret) = client(&first).await;
    let holder = Holder::new();
    for round in 0..5 {
        let proof = holder.proof(&first, &format!("race-{round}"), now_secs());
        let proofs = [proof.as_str()];
        let (a, b) = tokio::join!(
            ask(&first, (&id, &secret), &proofs),
            ask(&second, (&id, &secret), &proofs),
        );
        let won: Vec<u16> = [a.0.as_u16(), b.0.as_u16()].into();
        assert!(
            won == [200, 400] || won == [400, 200],
            "round {round}: {won:?} ({} / {})",
            a.2,
            b.2
        );
        let refused = if a.0 == 400 { &a } else { &b };
        assert_refused(refused, "invalid_dpop_proof", "the second use");
    }
}

/// A used proof is refused at every second it would otherwise be accepted, up to the last
/// (`iat + max_age + leeway`); after that it is stale. Its row outlives that, to the last
/// second any instance would accept it (`iat + MAX_PROOF_AGE_SECS + leeway`: another's max age
/// may be longer), so until then a new proof with the same `jti` is refused too; after it, a
/// client's counter that wrapped is taken again.
async fn a_proof_is_remembered_to_the_end_of_its_window(backend: Backend) {
    let start = now_secs();
    let (clock, time) = issuer::clock::Clock::manual(UnixTime::from_secs(start));
    let state = open(config(backend).await).await.with_clock(clock);
    let (id, secret) = client(&state).await;
    let holder = Holder::new();
    let rules = ProofRules {
        max_age_secs: state.config().dpop_proof_max_age_secs,
        leeway_secs: issuer::dpop::PROOF_LEEWAY_SECS,
    };
    let last = start + rules.max_age_secs + rules.leeway_secs;
    let kept = start + shared::dpop::MAX_PROOF_AGE_SECS + rules.leeway_secs;
    assert!(kept > last + 1, "the default max age is below the largest");
    let proof = holder.proof(&state, "once", start);
    assert_eq!(ask(&state, (&id, &secret), &[&proof]).await.0, 200);
    let already_used = |answer: &(http::StatusCode, http::HeaderMap, Value), at: u64| {
        assert_refused(
            answer,
            "invalid_dpop_proof",
            &format!("replay at +{}", at - start),
        );
        assert!(
            answer.2["error_description"]
                .as_str()
                .unwrap()
                .contains("already used"),
            "at +{}: {}",
            at - start,
            answer.2
        );
    };
    for at in [start, start + 1, last - 1, last] {
        time.set_secs(at as i64);
        already_used(&ask(&state, (&id, &secret), &[&proof]).await, at);
    }
    time.set_secs(last as i64 + 1);
    let answer = ask(&state, (&id, &secret), &[&proof]).await;
    assert!(
        answer.2["error_description"]
            .as_str()
            .unwrap()
            .contains("too old"),
        "{}",
        answer.2
    );
    // A new proof with the same jti, while the row is kept: refused, to its last second...
    for at in [last + 1, kept] {
        time.set_secs(at as i64);
        let early = holder.proof(&state, "once", at);
        already_used(&ask(&state, (&id, &secret), &[&early]).await, at);
    }
    // ...and after it the row (not yet pruned) is taken over.
    time.set_secs(kept as i64 + 1);
    let again = holder.proof(&state, "once", kept + 1);
    let (status, _, body) = ask(&state, (&id, &secret), &[&again]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        issuer::dpop::prune(&state.db, (kept + 1) as i64)
            .await
            .unwrap(),
        0
    );
    // Its row goes once its window and the pruning margin have passed (an instance whose
    // clock runs ahead prunes early by that much at most).
    let window = shared::dpop::MAX_PROOF_AGE_SECS + rules.leeway_secs;
    let row_until = (kept + 1 + window) as i64;
    let margin = issuer::dpop::PRUNE_MARGIN_SECS;
    let prune = |at: i64| issuer::dpop::prune(&state.db, at);
    assert_eq!(prune(row_until + margin).await.unwrap(), 0);
    assert_eq!(prune(row_until + margin + 1).await.unwrap(), 1);
}

async fn nonces_when_required(backend: Backend) {
    let mut config = config(backend).await;
    config.dpop_require_nonce = true;
    config.dpop_nonce_lifetime_secs = 60;
    let start = now_secs();
    let (clock, time) = issuer::clock::Clock::manual(UnixTime::from_secs(start));
    let state = open(config).await.with_clock(clock);
    let (id, secret) = client(&state).await;
    let holder = Holder::new();

    let (status, headers, body) = ask(
        &state,
        (&id, &secret),
        &[&holder.proof(&state, "n1", start)],
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (400, Some("use_dpop_nonce")),
        "{body}"
    );
    let nonce = headers["dpop-nonce"].to_str().unwrap().to_owned();

    let with_nonce = |jti: &str, iat: u64, nonce: &str| {
        let nonce = nonce.to_owned();
        holder.proof_with(token_claims(&state, jti, iat), move |_, c| {
            c["nonce"] = json!(nonce)
        })
    };
    let (status, headers, body) =
        ask(&state, (&id, &secret), &[&with_nonce("n2", start, &nonce)]).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        headers.contains_key("dpop-nonce"),
        "a fresh nonce with every answer"
    );

    let answer = ask(
        &state,
        (&id, &secret),
        &[&with_nonce("n3", start, "forged-nonce")],
    )
    .await;
    assert_refused(&answer, "use_dpop_nonce", "a forged nonce");

    // Two lifetimes on, the nonce is gone; the proof is fresh, the nonce is not.
    time.set_secs((start + 120) as i64);
    let answer = ask(
        &state,
        (&id, &secret),
        &[&with_nonce("n4", start + 120, &nonce)],
    )
    .await;
    assert_refused(&answer, "use_dpop_nonce", "an old nonce");
    let fresh = answer.1["dpop-nonce"].to_str().unwrap().to_owned();
    let (status, _, body) = ask(
        &state,
        (&id, &secret),
        &[&with_nonce("n5", start + 120, &fresh)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// Instances restarted with a new KEK (and the old one as previous) accept the nonces that
/// instances not yet restarted hand out, and hand out their own; once the previous KEK is
/// gone, its nonces are too (`deploy/runbooks/kek-rotation.md`).
async fn a_kek_rotation_keeps_the_nonces_handed_out(backend: Backend) {
    let mut config = config(backend).await;
    config.dpop_require_nonce = true;
    let start = now_secs();
    let before = open(config.clone()).await;
    let (id, secret) = client(&before).await;
    let holder = Holder::new();
    let nonce_of = |answer: &(http::StatusCode, http::HeaderMap, Value)| {
        answer.1["dpop-nonce"].to_str().unwrap().to_owned()
    };
    // The token endpoint of `state`, asked with a proof carrying `nonce`.
    let ask_with = |state: &issuer::AppState, jti: &str, nonce: &str| {
        let nonce = nonce.to_owned();
        let proof = holder.proof_with(token_claims(state, jti, start), move |_, c| {
            c["nonce"] = json!(nonce)
        });
        let (state, id, secret) = (state.clone(), id.clone(), secret.clone());
        async move { ask(&state, (&id, &secret), &[&proof]).await }
    };
    // An instance started on the same database with `kek`.
    let restarted = |kek: issuer::keys::Kek| {
        let (config, db) = (config.clone(), before.db.clone());
        async move {
            let signing = issuer::keys::SigningKeys::load(&db, &kek).await.unwrap();
            issuer::AppState::new(config, db, kek, signing)
        }
    };
    let answer = ask(
        &before,
        (&id, &secret),
        &[&holder.proof(&before, "k1", start)],
    )
    .await;
    assert_refused(&answer, "use_dpop_nonce", "no nonce");
    let old_nonce = nonce_of(&answer);

    // Restarted with the new KEK and the old one as previous: the old instance's nonce is
    // good, and the answer hands over the new KEK's.
    let old_kek = || issuer::keys::Kek::load(&config).unwrap().0;
    let new_kek = || issuer::keys::Kek::parse(&"b2".repeat(32)).unwrap();
    let during = restarted(new_kek().with_previous(old_kek())).await;
    let answer = ask_with(&during, "k2", &old_nonce).await;
    assert_eq!(answer.0, 200, "{}", answer.2);
    let new_nonce = nonce_of(&answer);
    assert_ne!(new_nonce, old_nonce, "its own nonces, under the new KEK");

    // After the rotation (keys resealed, the previous KEK removed): the new KEK's nonces only.
    let resealed = issuer::keys::rewrap(&during.db, &new_kek().with_previous(old_kek())).await;
    assert!(resealed.unwrap() > 0);
    let after = restarted(new_kek()).await;
    let answer = ask_with(&after, "k3", &old_nonce).await;
    assert_refused(
        &answer,
        "use_dpop_nonce",
        "the previous KEK's nonce, once it is gone",
    );
    let answer = ask_with(&after, "k4", &new_nonce).await;
    assert_eq!(answer.0, 200, "{}", answer.2);
}

/// RFC 9449 §7.2: a DPoP-bound token sent as `Bearer` is a copy without its key.
async fn the_admin_api_refuses_a_bound_token_as_bearer(backend: Backend) {
    let state = open(config(backend).await).await;
    let created = client_of(
        &state,
        "admin:audit",
        &state.config().admin_audience(),
        false,
    )
    .await;
    let holder = Holder::new();
    let credentials = (
        created.client.client_id.as_str(),
        created.client_secret.as_str(),
    );
    let (status, _, body) = ask(
        &state,
        credentials,
        &[&holder.proof(&state, "adm", now_secs())],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let bound = body["access_token"].as_str().unwrap();
    let (status, _, body) = call(&state, "GET", "/admin/audit", Some(bound), None).await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (401, Some("invalid_token")),
        "{body}"
    );
    let (_, _, body) = ask(&state, credentials, &[]).await;
    let (status, _, body) = call(
        &state,
        "GET",
        "/admin/audit",
        body["access_token"].as_str(),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
}
