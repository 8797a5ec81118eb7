//! Writes the DPoP proof vectors, `shared/tests/dpop-vectors.json`:
//!
//! ```text
//! cargo run -q -p shared --example dpop_vectors > shared/tests/dpop-vectors.json
//! ```
//!
//! `shared/tests/dpop_vectors.rs` runs the file natively and in wasm. The expectations are
//! written here by hand from RFC 9449 and the profile in `shared::dpop`; they are not what
//! the checker happens to answer. Proofs are signed with `p256` directly so that every bad
//! variant can be made; one vector is RFC 9449's own example (Figure 2), signed by no code
//! of ours.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)] // a generator: a failure should stop it

use base64ct::{Base64UrlUnpadded, Encoding};
use hmac::{Hmac, Mac};
use p256::ecdsa::{signature::Signer, Signature, SigningKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use shared::dpop::{
    token_hash, ProofRules, DEFAULT_LEEWAY_SECS, MAX_JTI_LEN, MAX_PROOF_AGE_SECS, MAX_PROOF_BYTES,
};

/// The checker's clock in every vector but RFC 9449's (2026-09-21T13:46:40Z).
const NOW: u64 = 1_790_000_000;
const URI: &str = "https://api.example.com/orders/7";
const TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ2ZWN0b3IifQ.c2lnbmF0dXJl";

fn b64(bytes: &[u8]) -> String {
    Base64UrlUnpadded::encode_string(bytes)
}

fn key(n: u8) -> SigningKey {
    let seed = Sha256::digest(format!("edgeward dpop vector key {n}").as_bytes());
    SigningKey::from_slice(&seed).unwrap()
}

fn public_jwk(n: u8) -> Value {
    let point = key(n).verifying_key().to_encoded_point(false);
    json!({ "kty": "EC", "crv": "P-256", "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap()) })
}

/// RFC 7638, computed here without the checker's code.
fn thumbprint(n: u8) -> String {
    let jwk = public_jwk(n);
    let members = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        jwk["x"].as_str().unwrap(),
        jwk["y"].as_str().unwrap()
    );
    b64(&Sha256::digest(members.as_bytes()))
}

fn header() -> Value {
    json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk(1) })
}

fn claims() -> Value {
    json!({ "jti": "e1j3V_bKic8-LAEB", "htm": "GET", "htu": URI, "iat": NOW, "ath": token_hash(TOKEN) })
}

fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

/// A proof signed by key `signer` (whatever key the header carries).
fn signed_by(signer: u8, header: &Value, claims: &Value) -> String {
    let input = signing_input(header, claims);
    let signature: Signature = key(signer).sign(input.as_bytes());
    format!("{input}.{}", b64(&signature.to_bytes()))
}

fn proof(edit: impl FnOnce(&mut Value, &mut Value)) -> String {
    let (mut header, mut claims) = (header(), claims());
    edit(&mut header, &mut claims);
    signed_by(1, &header, &claims)
}

/// The same proof with `S` replaced by `n - S`: as valid, spelled the other way.
fn high_s(proof: &str) -> String {
    let (input, signature) = proof.rsplit_once('.').unwrap();
    let signature =
        Signature::from_slice(&Base64UrlUnpadded::decode_vec(signature).unwrap()).unwrap();
    let (r, s) = signature.split_scalars();
    let flipped = Signature::from_scalars(r, -*s).unwrap();
    let low = flipped.normalize_s().is_some();
    assert!(low, "the flipped signature must be the high-S one");
    format!("{input}.{}", b64(&flipped.to_bytes()))
}

/// The request every vector is checked against unless it says otherwise: `GET` of [`URI`]
/// with [`TOKEN`], bound to key 1.
fn resource_request() -> Value {
    json!({ "method": "GET", "uri": URI, "access_token": TOKEN, "bound_to": thumbprint(1) })
}

fn accept(name: &str, proof: String, jti: &str, iat: u64) -> Value {
    accept_for(
        name,
        proof,
        resource_request(),
        NOW,
        &thumbprint(1),
        jti,
        iat,
    )
}

fn accept_for(
    name: &str,
    proof: String,
    request: Value,
    now: u64,
    jkt: &str,
    jti: &str,
    iat: u64,
) -> Value {
    let rules = ProofRules::default();
    json!({
        "name": name, "proof": proof, "request": request, "now": now,
        "expect": {
            "verdict": "accept", "jkt": jkt, "jti": jti,
            "remember_until": iat + MAX_PROOF_AGE_SECS.max(rules.max_age_secs) + rules.leeway_secs.max(DEFAULT_LEEWAY_SECS),
        },
    })
}

fn reject(name: &str, proof: String, reason: &str) -> Value {
    reject_for(name, proof, resource_request(), reason)
}

fn reject_for(name: &str, proof: String, request: Value, reason: &str) -> Value {
    json!({
        "name": name, "proof": proof, "request": request, "now": NOW,
        "expect": { "verdict": "reject", "reason": reason },
    })
}

fn main() {
    let rules = ProofRules::default();
    let good = proof(|_, _| {});
    let jti = "e1j3V_bKic8-LAEB";
    let oldest = NOW - rules.max_age_secs - rules.leeway_secs;
    let latest = NOW + rules.leeway_secs;
    let mut vectors = vec![
        accept("a proof for this request, token and key", good.clone(), jti, NOW),
        accept("the same proof with a high-S signature", high_s(&good), jti, NOW),
        accept_for(
            "at the token endpoint: no token, so ath is not looked at",
            proof(|_, c| {
                c["htm"] = json!("POST");
                c["htu"] = json!("https://issuer.example.com/oauth2/token");
                c.as_object_mut().unwrap().remove("ath");
            }),
            json!({ "method": "POST", "uri": "https://issuer.example.com/oauth2/token" }),
            NOW,
            &thumbprint(1),
            jti,
            NOW,
        ),
        accept_for(
            "RFC 9449 Figure 2, with the thumbprint Figure 9 publishes",
            "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ.2-GxA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg".into(),
            json!({ "method": "POST", "uri": "https://server.example.com/token" }),
            1_562_262_616,
            "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I",
            "-BwC3ESc6acc2lTc",
            1_562_262_616,
        ),
        accept(
            "htu spelled differently: case, default port, dot-segments, query and fragment",
            proof(|_, c| c["htu"] = json!("HTTPS://API.example.COM:443/orders/x/../7?page=2#top")),
            jti,
            NOW,
        ),
        accept(
            "iat at the oldest second accepted",
            proof(|_, c| c["iat"] = json!(oldest)),
            jti,
            oldest,
        ),
        accept(
            "iat at the latest second accepted",
            proof(|_, c| c["iat"] = json!(latest)),
            jti,
            latest,
        ),
        accept(
            "a jti of the longest length",
            proof(|_, c| c["jti"] = json!("j".repeat(MAX_JTI_LEN))),
            &"j".repeat(MAX_JTI_LEN),
            NOW,
        ),
        accept(
            "a kid and other key members are ignored by the thumbprint",
            proof(|h, _| {
                h["jwk"]["kid"] = json!("client-key");
                h["jwk"]["use"] = json!("sig");
            }),
            jti,
            NOW,
        ),
        // Structure.
        reject("two segments", "eyJhIjoxfQ.eyJhIjoxfQ".into(), "dpop_malformed"),
        reject("four segments", format!("{good}.x"), "dpop_malformed"),
        reject("padded base64url", format!("{}=", good), "dpop_malformed"),
        reject(
            "larger than the limit",
            proof(|_, c| c["pad"] = json!("p".repeat(MAX_PROOF_BYTES))),
            "dpop_too_large",
        ),
        reject(
            "a header member given twice",
            {
                let jwk = public_jwk(1).to_string();
                let header = format!(r#"{{"typ":"dpop+jwt","alg":"ES256","alg":"ES256","jwk":{jwk}}}"#);
                let input = format!("{}.{}", b64(header.as_bytes()), b64(claims().to_string().as_bytes()));
                let signature: Signature = key(1).sign(input.as_bytes());
                format!("{input}.{}", b64(&signature.to_bytes()))
            },
            "dpop_malformed",
        ),
        // Header.
        reject("typ JWT", proof(|h, _| h["typ"] = json!("JWT")), "dpop_wrong_typ"),
        reject("typ at+jwt", proof(|h, _| h["typ"] = json!("at+jwt")), "dpop_wrong_typ"),
        reject(
            "no typ",
            proof(|h, _| {
                h.as_object_mut().unwrap().remove("typ");
            }),
            "dpop_wrong_typ",
        ),
        reject(
            "alg none, no signature",
            {
                let mut h = header();
                h["alg"] = json!("none");
                format!("{}.", signing_input(&h, &claims()))
            },
            "dpop_alg_not_allowed",
        ),
        reject(
            "alg HS256, keyed with the public key's x",
            {
                let mut h = header();
                h["alg"] = json!("HS256");
                let input = signing_input(&h, &claims());
                let mut mac = Hmac::<Sha256>::new_from_slice(h["jwk"]["x"].as_str().unwrap().as_bytes()).unwrap();
                mac.update(input.as_bytes());
                format!("{input}.{}", b64(&mac.finalize().into_bytes()))
            },
            "dpop_alg_not_allowed",
        ),
        reject("alg RS256", proof(|h, _| h["alg"] = json!("RS256")), "dpop_alg_not_allowed"),
        reject("crit", proof(|h, _| h["crit"] = json!(["exp"])), "dpop_forbidden_header"),
        reject("x5c", proof(|h, _| h["x5c"] = json!(["MIIB"])), "dpop_forbidden_header"),
        reject(
            "no jwk",
            proof(|h, _| {
                h.as_object_mut().unwrap().remove("jwk");
            }),
            "dpop_bad_key",
        ),
        reject(
            "a private jwk (d)",
            proof(|h, _| h["jwk"]["d"] = json!(b64(&key(1).to_bytes()))),
            "dpop_private_key",
        ),
        reject(
            "an RSA jwk",
            proof(|h, _| h["jwk"] = json!({ "kty": "RSA", "n": "sXch", "e": "AQAB" })),
            "dpop_bad_key",
        ),
        reject(
            "a P-384 jwk",
            proof(|h, _| h["jwk"]["crv"] = json!("P-384")),
            "dpop_bad_key",
        ),
        reject(
            "a point off the curve",
            proof(|h, _| h["jwk"]["y"] = public_jwk(2)["y"].clone()),
            "dpop_bad_key",
        ),
        reject(
            "a short coordinate",
            proof(|h, _| h["jwk"]["x"] = json!(b64(&[7u8; 31]))),
            "dpop_bad_key",
        ),
        // Signature.
        reject(
            "signed by another key than the jwk",
            signed_by(2, &header(), &claims()),
            "dpop_bad_signature",
        ),
        reject(
            "claims changed after signing",
            {
                let (input, signature) = good.rsplit_once('.').unwrap();
                let (h, _) = input.split_once('.').unwrap();
                let mut c = claims();
                c["htm"] = json!("GET");
                c["jti"] = json!("another");
                format!("{h}.{}.{signature}", b64(c.to_string().as_bytes()))
            },
            "dpop_bad_signature",
        ),
        reject(
            "a signature one byte short",
            {
                let (input, signature) = good.rsplit_once('.').unwrap();
                let bytes = Base64UrlUnpadded::decode_vec(signature).unwrap();
                format!("{input}.{}", b64(&bytes[..63]))
            },
            "dpop_bad_signature",
        ),
        // The request.
        reject("htm POST for a GET", proof(|_, c| c["htm"] = json!("POST")), "dpop_wrong_method"),
        reject("htm in lower case", proof(|_, c| c["htm"] = json!("get")), "dpop_wrong_method"),
        reject(
            "htu for another route",
            proof(|_, c| c["htu"] = json!("https://api.example.com/orders/8")),
            "dpop_wrong_uri",
        ),
        reject(
            "htu for another host",
            proof(|_, c| c["htu"] = json!("https://evil.example.com/orders/7")),
            "dpop_wrong_uri",
        ),
        reject(
            "htu over http",
            proof(|_, c| c["htu"] = json!("http://api.example.com/orders/7")),
            "dpop_wrong_uri",
        ),
        reject(
            "htu with an encoded slash",
            proof(|_, c| c["htu"] = json!("https://api.example.com/orders%2F7")),
            "dpop_wrong_uri",
        ),
        reject(
            "htu not a URI",
            proof(|_, c| c["htu"] = json!("/orders/7")),
            "dpop_wrong_uri",
        ),
        // Time.
        reject(
            "iat a second too old",
            proof(|_, c| c["iat"] = json!(oldest - 1)),
            "dpop_stale",
        ),
        reject(
            "iat a second too far ahead",
            proof(|_, c| c["iat"] = json!(latest + 1)),
            "dpop_issued_in_future",
        ),
        reject(
            "iat as a string",
            proof(|_, c| c["iat"] = json!(NOW.to_string())),
            "dpop_invalid_claim",
        ),
        reject(
            "iat with a fraction",
            proof(|_, c| c["iat"] = json!(NOW as f64 + 0.5)),
            "dpop_invalid_claim",
        ),
        reject(
            "no iat",
            proof(|_, c| {
                c.as_object_mut().unwrap().remove("iat");
            }),
            "dpop_missing_claim",
        ),
        // jti.
        reject(
            "no jti",
            proof(|_, c| {
                c.as_object_mut().unwrap().remove("jti");
            }),
            "dpop_missing_claim",
        ),
        reject("an empty jti", proof(|_, c| c["jti"] = json!("")), "dpop_invalid_claim"),
        reject(
            "a jti a byte too long",
            proof(|_, c| c["jti"] = json!("j".repeat(MAX_JTI_LEN + 1))),
            "dpop_invalid_claim",
        ),
        // The token.
        reject(
            "no ath with a token",
            proof(|_, c| {
                c.as_object_mut().unwrap().remove("ath");
            }),
            "dpop_wrong_ath",
        ),
        reject(
            "ath of another token",
            proof(|_, c| c["ath"] = json!(token_hash("another.token.here"))),
            "dpop_wrong_ath",
        ),
        reject(
            "a token bound to another key",
            signed_by(
                2,
                &{
                    let mut h = header();
                    h["jwk"] = public_jwk(2);
                    h
                },
                &claims(),
            ),
            "dpop_wrong_key",
        ),
    ];
    vectors.push(reject_for(
        "a proof from another key for a token bound to key 1, at a request without a token",
        signed_by(
            2,
            &{
                let mut h = header();
                h["jwk"] = public_jwk(2);
                h
            },
            &claims(),
        ),
        json!({ "method": "GET", "uri": URI, "bound_to": thumbprint(1) }),
        "dpop_wrong_key",
    ));

    let file = json!({
        "about": "DPoP proof vectors (RFC 9449). Written by `cargo run -p shared --example dpop_vectors`; the profile is in shared/src/dpop.rs and docs/edge.md. A checker accepts a proof at most `max_age_secs` after its iat and `leeway_secs` before or beyond that, and for each vector is given the proof, the request (method, URI as reached, the access token presented if any, the thumbprint the token is bound to if any) and the time `now` in seconds. An accepted proof yields its key's RFC 7638 thumbprint, its jti, and the last second any server of the system would accept it, whatever its own max age (at most 300 s): what a replay store must remember it until.",
        "max_age_secs": rules.max_age_secs,
        "leeway_secs": rules.leeway_secs,
        "vectors": vectors,
    });
    println!("{}", serde_json::to_string_pretty(&file).unwrap());
}
