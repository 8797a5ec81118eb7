//! The key-compromise drill (deploy/runbooks/key-compromise.md): a thief holds an issuer
//! signing key (here read from the issuer's database and opened with its KEK, as a thief with
//! both would) and mints fresh tokens with it. After `issuer keys revoke`, the edge refuses
//! them at every step: a token it had cached, a new token on the live set, with the issuer
//! cut off (stale set), and in a new isolate that starts from the colo's Cache API copy with
//! the issuer still down. Each step's answer and the time the revocation took are printed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64ct::{Base64, Base64UrlUnpadded, Encoding};
use edgeward_tests::*;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::{json, Value};

/// What the thief took: the key id and the private key.
struct Stolen {
    kid: String,
    key: SigningKey,
}

/// Reads the sealed private key `kid` from the issuer's SQLite database in `dir` and opens it
/// with the development KEK beside it (`nonce || ciphertext || tag`, the kid as AAD).
async fn steal(dir: &Path, kid: &str) -> Stolen {
    use sqlx::Connection;
    let url = format!("sqlite://{}", dir.join("data/issuer.db").display());
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let sealed: Vec<u8> = sqlx::query_scalar("SELECT private_key FROM signing_keys WHERE kid = $1")
        .bind(kid)
        .fetch_one(&mut db)
        .await
        .unwrap();
    let kek = Base64::decode_vec(
        std::fs::read_to_string(dir.join("data/dev-kek"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let (nonce, ciphertext) = sealed.split_at(12);
    let nonce: [u8; 12] = nonce.try_into().unwrap();
    let secret = Aes256Gcm::new_from_slice(&kek)
        .unwrap()
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: ciphertext,
                aad: kid.as_bytes(),
            },
        )
        .unwrap();
    Stolen {
        kid: kid.to_owned(),
        key: SigningKey::from_slice(&secret).unwrap(),
    }
}

impl Stolen {
    /// A token minted now with the stolen key, with the claims of a real `template` token
    /// (issuer, audience, client) and a new `jti`.
    fn mint(&self, template: &str, jti: &str) -> String {
        let payload = template.split('.').nth(1).unwrap();
        let mut claims: Value =
            serde_json::from_slice(&Base64UrlUnpadded::decode_vec(payload).unwrap()).unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        claims["iat"] = json!(now);
        claims["nbf"] = json!(now);
        claims["exp"] = json!(now + 600);
        claims["jti"] = json!(jti);
        let header = json!({ "alg": "ES256", "typ": "at+jwt", "kid": self.kid });
        let b64 = |value: &Value| Base64UrlUnpadded::encode_string(value.to_string().as_bytes());
        let input = format!("{}.{}", b64(&header), b64(&claims));
        let signature: Signature = self.key.sign(input.as_bytes());
        let signature = signature.normalize_s().unwrap_or(signature);
        format!(
            "{input}.{}",
            Base64UrlUnpadded::encode_string(&signature.to_bytes())
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_signing_key_stays_dead_on_every_path() {
    let dir = temp_dir("key_compromise");
    let (_seen, origin_port) = origin(ASSERTION_KEY_ID, ASSERTION_SECRET).await;
    let (issuer, issuer_port) = issuer_with(&dir, &[("ISSUER_JWKS_MAX_AGE_SECS", "10")]).await;
    let client = Client::create(&dir, "compromise", &[]);
    let issuer_url = format!("http://127.0.0.1:{issuer_port}");
    let vars = EdgeSettings::new(issuer_port, origin_port)
        .set("REVOCATION_URLS", format!("{issuer_url}/revocations"))
        .set("REVOCATION_INTERVAL_MS", "1000")
        .set("FETCH_TIMEOUT_MS", "1000");
    let template = client.token(issuer_port).await;
    let thief = steal(&dir, &kid_of(&template)).await;

    let (edge_process, edge_port) = edge(&dir, &vars, ASSERTION_SECRET).await;
    let url = format!("http://127.0.0.1:{edge_port}/orders");

    // While the key is live, the thief's tokens pass: they are as good as the issuer's.
    let cached = thief.mint(&template, "stolen-cached");
    assert_eq!(
        get_with(&url, &cached).await.status,
        200,
        "the stolen key works before revocation"
    );

    let revoked_at = Instant::now();
    let answer = issuer_cli(&dir, &["keys", "revoke", &thief.kid]);
    assert_eq!(answer["revoked"], thief.kid.as_str());
    let mut n = 0;
    let refused_after = loop {
        n += 1;
        let reply = get_with(&url, &thief.mint(&template, &format!("stolen-{n}"))).await;
        if reply.status == 401 {
            break revoked_at.elapsed();
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(10),
            "still accepted: {}",
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "key compromise drill: fresh tokens of the revoked key refused {:.2} s after `keys revoke` (feed interval 1 s)",
        refused_after.as_secs_f64()
    );
    let reply = get_with(&url, &cached).await;
    assert_eq!(
        reply.status, 401,
        "a token the edge had cached: {}",
        reply.body
    );
    println!("key compromise drill: cached token -> {}", reply.status);

    // The issuer is cut off; past the key set's max-age the edge serves its stale set.
    drop(issuer);
    tokio::time::sleep(Duration::from_secs(11)).await;
    let health = format!("http://127.0.0.1:{edge_port}/.edge/health");
    assert_eq!(get(&health).await.json()["jwks"], "stale");
    let reply = get_with(&url, &thief.mint(&template, "stolen-stale")).await;
    assert_eq!(reply.status, 401, "stale set, issuer down: {}", reply.body);
    println!(
        "key compromise drill: fresh token, stale set, issuer down -> {}",
        reply.status
    );
    drop(edge_process);

    // A new isolate (same colo: the same local cache) with the issuer still down starts
    // from the Cache API copy, and knows nothing of the feed.
    let (_edge, edge_port) = edge(&dir, &vars, ASSERTION_SECRET).await;
    let url = format!("http://127.0.0.1:{edge_port}/orders");
    let health = format!("http://127.0.0.1:{edge_port}/.edge/health");
    assert_eq!(get(&health).await.json()["jwks"], "missing");
    let reply = get_with(&url, &thief.mint(&template, "stolen-new-isolate")).await;
    assert_eq!(
        reply.status, 401,
        "new isolate from the copy: {}",
        reply.body
    );
    let state = get(&health).await.json();
    assert_ne!(
        state["jwks"], "missing",
        "the new isolate read the copy: {state}"
    );
    println!(
        "key compromise drill: fresh token, new isolate from the Cache API copy, issuer down -> {} (key set {})",
        reply.status, state["jwks"]
    );
}
