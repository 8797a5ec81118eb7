//! Known-answer vectors for token validation: the good token and every rejection of the
//! RFC 9068 profile. The same file runs natively and in wasm (`wasm-pack test --node`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // tests may panic

mod fixtures;

use fixtures::*;
use p256::ecdsa::{signature::Signer, Signature};
use serde_json::json;
use shared::rejection::Segment;
use shared::{Rejection, UnixTime, Validation, Validator};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

fn verify(token: &str) -> Result<shared::VerifiedToken, Rejection> {
    validator().verify(token, &jwks(), now())
}

fn rejects(token: &str, expected: Rejection) {
    assert_eq!(verify(token).unwrap_err(), expected);
}

// ---- good tokens ----

#[test]
fn good_token_verifies_with_its_claims() {
    let verified = verify(&good_token()).unwrap();
    let claims = verified.claims();
    assert_eq!(verified.kid(), "fixture-1");
    assert_eq!(claims.sub, "user-42");
    assert_eq!(claims.client_id, "client-7");
    assert_eq!(claims.jti, "jti-0001");
    assert_eq!(claims.aud, vec![AUDIENCE.to_owned()]);
    assert_eq!(claims.exp, NOW_SECS + 300);
    assert!(claims.scope.contains("read") && claims.scope.contains("write"));
    assert_eq!(claims.scope.len(), 2);
    assert_eq!(claims.rate_plan.unwrap().to_string(), "1000/60s;burst=100");
}

#[test]
fn token_from_an_independent_signer_verifies() {
    let verified = verify(&jwt_compact_token()).unwrap();
    assert_eq!(verified.kid(), "fixture-2");
}

#[test]
fn audience_array_and_optional_claims() {
    let token = with_claims(|c| {
        c.insert("aud".into(), json!(["other", AUDIENCE]));
        c.remove("nbf");
        c.remove("scope");
        c.remove("rate_plan");
    });
    let verified = verify(&token).unwrap();
    assert!(verified.claims().scope.is_empty());
    assert!(verified.claims().rate_plan.is_none());
}

#[test]
fn application_prefixed_type_is_accepted() {
    verify(&with_header(|h| {
        h.insert("typ".into(), json!("application/at+jwt"));
    }))
    .unwrap();
}

#[test]
fn jwt_type_only_when_configured() {
    let token = with_header(|h| {
        h.insert("typ".into(), json!("JWT"));
    });
    rejects(&token, Rejection::WrongType);
    let mut validation = validation();
    validation.accept_jwt_type = true;
    Validator::new(validation)
        .verify(&token, &jwks(), now())
        .unwrap();
}

#[test]
fn within_leeway_is_accepted() {
    verify(&with_claims(|c| {
        c.insert("exp".into(), json!(NOW_SECS - 10));
    }))
    .unwrap();
    let token = with_claims(|c| {
        c.insert("nbf".into(), json!(NOW_SECS + 10));
        c.insert("iat".into(), json!(NOW_SECS + 10));
    });
    verify(&token).unwrap();
}

#[test]
fn scopes_are_checked_after_verification() {
    let verified = verify(&good_token()).unwrap();
    verified
        .require_scopes(&shared::Scopes::parse("read").unwrap())
        .unwrap();
    let err = verified
        .require_scopes(&shared::Scopes::parse("admin read").unwrap())
        .unwrap_err();
    assert_eq!(
        err,
        Rejection::InsufficientScope {
            required: "admin read".into()
        }
    );
    assert_eq!(err.status(), 403);
}

// ---- size and structure ----

#[test]
fn oversize_token() {
    let validation = Validation {
        max_token_bytes: 64,
        ..validation()
    };
    let err = Validator::new(validation)
        .verify(&good_token(), &jwks(), now())
        .unwrap_err();
    assert!(matches!(err, Rejection::TooLarge { max: 64, .. }));
    let huge = "a".repeat(100_000);
    assert!(matches!(
        verify(&huge).unwrap_err(),
        Rejection::TooLarge { .. }
    ));
}

#[test]
fn not_three_segments() {
    let token = good_token();
    for bad in ["", "abc", "a.b", "a.b.c.d", "..", "a..c", ".b.c", "a.b."] {
        rejects(bad, Rejection::MalformedStructure);
    }
    rejects(&format!("{token}.extra"), Rejection::MalformedStructure);
}

#[test]
fn non_canonical_base64() {
    let token = good_token();
    let parts: Vec<&str> = token.split('.').collect();
    let header_segment = Segment::Header;
    rejects(
        &format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
        Rejection::InvalidBase64 {
            segment: header_segment,
        },
    );
    rejects(
        &format!("{}+.{}.{}", parts[0], parts[1], parts[2]),
        Rejection::InvalidBase64 {
            segment: header_segment,
        },
    );
    // Standard-alphabet characters are not base64url.
    let std_alphabet = format!(
        "{}.{}.{}",
        parts[0].replacen('e', "+", 1),
        parts[1],
        parts[2]
    );
    rejects(
        &std_alphabet,
        Rejection::InvalidBase64 {
            segment: header_segment,
        },
    );
    // Same bytes, non-zero unused bits: must not verify under another spelling.
    let mut header_text = header().to_string();
    while header_text.len() % 3 == 0 {
        header_text.push(' ');
    }
    let header_b64 = b64(header_text.as_bytes());
    let payload_b64 = b64(claims().to_string().as_bytes());
    // The canonical spelling is fine, the non-canonical one is not.
    verify(&sign_segments(&header_b64, &payload_b64, 1)).unwrap();
    let token = sign_segments(&non_canonical(&header_b64), &payload_b64, 1);
    rejects(
        &token,
        Rejection::InvalidBase64 {
            segment: header_segment,
        },
    );
    let mut payload_text = claims().to_string();
    while payload_text.len() % 3 == 0 {
        payload_text.push(' ');
    }
    let token = sign_segments(
        &header_b64,
        &non_canonical(&b64(payload_text.as_bytes())),
        1,
    );
    rejects(
        &token,
        Rejection::InvalidBase64 {
            segment: Segment::Payload,
        },
    );
    let signature = parts[2];
    let token = format!("{}.{}.{}", parts[0], parts[1], non_canonical(signature));
    rejects(
        &token,
        Rejection::InvalidBase64 {
            segment: Segment::Signature,
        },
    );
}

#[test]
fn header_not_a_json_object() {
    let payload = b64(claims().to_string().as_bytes());
    for header in [
        "not json",
        r#"["ES256","at+jwt","fixture-1"]"#,
        "{",
        r#"{"alg":"ES256"} x"#,
    ] {
        let token = sign_segments(&b64(header.as_bytes()), &payload, 1);
        rejects(
            &token,
            Rejection::InvalidJson {
                segment: Segment::Header,
            },
        );
    }
    let duplicate = r#"{"alg":"ES256","alg":"none","typ":"at+jwt","kid":"fixture-1"}"#;
    let token = sign_segments(&b64(duplicate.as_bytes()), &payload, 1);
    rejects(
        &token,
        Rejection::InvalidJson {
            segment: Segment::Header,
        },
    );
}

// ---- header ----

#[test]
fn algorithms_other_than_es256() {
    for alg in [
        json!("none"),
        json!("HS256"),
        json!("RS256"),
        json!("ES384"),
        json!("PS256"),
        json!("es256"),
        json!("EdDSA"),
        json!(null),
        json!(["ES256"]),
    ] {
        rejects(
            &with_header(|h| {
                h.insert("alg".into(), alg.clone());
            }),
            Rejection::AlgorithmNotAllowed,
        );
    }
    rejects(
        &with_header(|h| {
            h.remove("alg");
        }),
        Rejection::AlgorithmNotAllowed,
    );
}

#[test]
fn alg_none_without_signature() {
    let header = b64(br#"{"alg":"none","typ":"at+jwt","kid":"fixture-1"}"#);
    let payload = b64(claims().to_string().as_bytes());
    rejects(
        &format!("{header}.{payload}."),
        Rejection::MalformedStructure,
    );
    rejects(
        &format!("{header}.{payload}.AAAA"),
        Rejection::AlgorithmNotAllowed,
    );
}

#[test]
fn hs256_signed_with_the_public_key_is_refused() {
    // The classic key-confusion attack: HMAC keyed with the public key's bytes.
    use hmac::{Hmac, Mac};
    let header = b64(br#"{"alg":"HS256","typ":"at+jwt","kid":"fixture-1"}"#);
    let payload = b64(claims().to_string().as_bytes());
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(public_jwk(1).to_string().as_bytes()).unwrap();
    mac.update(format!("{header}.{payload}").as_bytes());
    let token = format!("{header}.{payload}.{}", b64(&mac.finalize().into_bytes()));
    rejects(&token, Rejection::AlgorithmNotAllowed);
}

#[test]
fn forbidden_header_parameters() {
    let cases = [
        ("crit", json!(["exp"])),
        ("jku", json!("https://evil.example/jwks.json")),
        ("x5u", json!("https://evil.example/cert.pem")),
        ("x5c", json!(["MIIB"])),
        ("jwk", public_jwk(1)),
        ("cty", json!("JWT")),
    ];
    for (name, value) in cases {
        rejects(
            &with_header(|h| {
                h.insert(name.into(), value.clone());
            }),
            Rejection::ForbiddenHeader { name },
        );
        // Present as null still counts.
        rejects(
            &with_header(|h| {
                h.insert(name.into(), json!(null));
            }),
            Rejection::ForbiddenHeader { name },
        );
    }
}

#[test]
fn wrong_or_missing_type() {
    rejects(
        &with_header(|h| {
            h.remove("typ");
        }),
        Rejection::WrongType,
    );
    for typ in [
        json!("jwt+at"),
        json!("at+jwt2"),
        json!(""),
        json!(1),
        json!(null),
    ] {
        rejects(
            &with_header(|h| {
                h.insert("typ".into(), typ.clone());
            }),
            Rejection::WrongType,
        );
    }
}

#[test]
fn missing_or_unusable_kid() {
    rejects(
        &with_header(|h| {
            h.remove("kid");
        }),
        Rejection::MissingKeyId,
    );
    for kid in [json!(null), json!(7), json!(""), json!("k".repeat(300))] {
        rejects(
            &with_header(|h| {
                h.insert("kid".into(), kid.clone());
            }),
            Rejection::MissingKeyId,
        );
    }
}

#[test]
fn unknown_kid() {
    rejects(
        &with_header(|h| {
            h.insert("kid".into(), json!("fixture-9"));
        }),
        Rejection::UnknownKeyId,
    );
    // Foreign keys that were skipped cannot be selected either.
    rejects(
        &with_header(|h| {
            h.insert("kid".into(), json!("enc-1"));
        }),
        Rejection::UnknownKeyId,
    );
}

// ---- signature ----

#[test]
fn der_encoded_signature() {
    let token = good_token();
    let (input, _) = token.rsplit_once('.').unwrap();
    let signature: Signature = signing_key(1).sign(input.as_bytes());
    rejects(
        &with_signature(&token, &der(&signature)),
        Rejection::DerSignature,
    );
}

#[test]
fn high_s_mirror_of_a_valid_signature_is_refused() {
    let token = good_token();
    let (input, _) = token.rsplit_once('.').unwrap();
    let signature: Signature = signing_key(1).sign(input.as_bytes());
    // Both forms verify as ECDSA; only the low-S one is the token.
    verify(&with_signature(&token, &low_s(signature).to_bytes())).unwrap();
    rejects(
        &with_signature(&token, &high_s(signature).to_bytes()),
        Rejection::HighS,
    );
}

/// The low-S rule agrees with `p256`'s own normalisation on many signatures: exactly the
/// ones it would change are refused.
#[test]
fn low_s_rule_matches_p256_normalisation() {
    let token = good_token();
    let (input, _) = token.rsplit_once('.').unwrap();
    let mut refused = 0;
    for n in 0..64 {
        let message = format!("{input}{n}");
        let signature: Signature = signing_key(1).sign(message.as_bytes());
        let verdict = verify(&with_signature(&token, &signature.to_bytes()));
        if signature.normalize_s().is_some() {
            refused += 1;
            assert_eq!(verdict.unwrap_err(), Rejection::HighS, "{n}");
        } else {
            assert_ne!(
                verdict.unwrap_err(),
                Rejection::HighS,
                "{n}: low-S reaches the signature check"
            );
        }
    }
    assert!(
        (1..64).contains(&refused),
        "both forms were drawn: {refused}"
    );
}

#[test]
fn wrong_length_signature() {
    let token = good_token();
    rejects(
        &with_signature(&token, &[7u8; 63]),
        Rejection::SignatureLength { len: 63 },
    );
    rejects(
        &with_signature(&token, &[7u8; 65]),
        Rejection::SignatureLength { len: 65 },
    );
    rejects(
        &with_signature(&token, &[7u8; 1]),
        Rejection::SignatureLength { len: 1 },
    );
}

#[test]
fn signature_that_does_not_verify() {
    // Signed by key 2 but naming key 1.
    rejects(&sign_with(&header(), &claims(), 2), Rejection::BadSignature);
    // Zero R and S, and R at or above the group order (S there is refused as high-S).
    let token = good_token();
    rejects(&with_signature(&token, &[0u8; 64]), Rejection::BadSignature);
    rejects(&with_signature(&token, &[0xFFu8; 64]), Rejection::HighS);
    let mut big_r = [0xFFu8; 64];
    big_r[32..].fill(0x01);
    rejects(&with_signature(&token, &big_r), Rejection::BadSignature);
    // A payload swapped after signing.
    let other = with_claims(|c| {
        c.insert("sub".into(), json!("admin"));
    });
    let (_, signature) = token.rsplit_once('.').unwrap();
    let (other_input, _) = other.rsplit_once('.').unwrap();
    rejects(
        &format!("{other_input}.{signature}"),
        Rejection::BadSignature,
    );
    // One flipped bit in the signature.
    let (input, signature) = token.rsplit_once('.').unwrap();
    let mut bytes =
        <base64ct::Base64UrlUnpadded as base64ct::Encoding>::decode_vec(signature).unwrap();
    bytes[40] ^= 1;
    rejects(&format!("{input}.{}", b64(&bytes)), Rejection::BadSignature);
}

// ---- claims ----

#[test]
fn payload_not_a_json_object() {
    let header = b64(header().to_string().as_bytes());
    for payload in ["[]", "null", "\"x\"", "{", r#"{"sub":"a","sub":"b"}"#] {
        let token = sign_segments(&header, &b64(payload.as_bytes()), 1);
        rejects(
            &token,
            Rejection::InvalidJson {
                segment: Segment::Payload,
            },
        );
    }
}

#[test]
fn required_claims() {
    for claim in ["iss", "sub", "aud", "exp", "iat", "jti", "client_id"] {
        rejects(
            &with_claims(|c| {
                c.remove(claim);
            }),
            Rejection::MissingClaim { claim },
        );
    }
}

#[test]
fn claims_of_the_wrong_shape() {
    let cases = [
        ("sub", json!("")),
        ("sub", json!(5)),
        ("sub", json!("s".repeat(257))),
        ("client_id", json!(null)),
        ("jti", json!(["a"])),
        ("iss", json!(1)),
        ("aud", json!([])),
        ("aud", json!([1])),
        ("aud", json!("")),
        ("aud", json!({})),
        ("exp", json!("1800000300")),
        ("exp", json!(1_800_000_300.5)),
        ("exp", json!(-1)),
        ("iat", json!(null)),
        ("nbf", json!("0")),
        ("scope", json!(["read"])),
        ("scope", json!("read  write")),
        ("scope", json!("re\"ad")),
        ("rate_plan", json!("fast")),
        ("rate_plan", json!(10)),
    ];
    for (claim, value) in cases {
        let token = with_claims(|c| {
            c.insert(claim.into(), value.clone());
        });
        rejects(&token, Rejection::InvalidClaim { claim });
    }
}

#[test]
fn issuer_must_match_exactly() {
    for iss in [
        "https://issuer.edgeward.test/",
        "https://ISSUER.edgeward.test",
        "https://evil.test",
    ] {
        rejects(
            &with_claims(|c| {
                c.insert("iss".into(), json!(iss));
            }),
            Rejection::IssuerMismatch,
        );
    }
}

#[test]
fn audience_must_contain_ours() {
    rejects(
        &with_claims(|c| {
            c.insert("aud".into(), json!("https://other.test"));
        }),
        Rejection::AudienceMismatch,
    );
    rejects(
        &with_claims(|c| {
            c.insert("aud".into(), json!(["a", "b"]));
        }),
        Rejection::AudienceMismatch,
    );
}

#[test]
fn expired() {
    rejects(
        &with_claims(|c| {
            c.insert("exp".into(), json!(NOW_SECS - 30));
        }),
        Rejection::Expired,
    );
    rejects(
        &with_claims(|c| {
            c.insert("exp".into(), json!(NOW_SECS - 3000));
        }),
        Rejection::Expired,
    );
    // Accepted now, refused once the clock passes exp + leeway: time is only an argument.
    let token = good_token();
    validator()
        .verify(&token, &jwks(), UnixTime::from_secs(NOW_SECS + 329))
        .unwrap();
    let later = validator().verify(&token, &jwks(), UnixTime::from_secs(NOW_SECS + 330));
    assert_eq!(later.unwrap_err(), Rejection::Expired);
}

#[test]
fn not_yet_valid() {
    rejects(
        &with_claims(|c| {
            c.insert("nbf".into(), json!(NOW_SECS + 31));
        }),
        Rejection::NotYetValid,
    );
}

#[test]
fn issued_in_the_future() {
    let token = with_claims(|c| {
        c.insert("iat".into(), json!(NOW_SECS + 31));
        c.insert("nbf".into(), json!(NOW_SECS));
    });
    rejects(&token, Rejection::IssuedInFuture);
}

#[test]
fn lifetime_too_long_or_inverted() {
    let max = Rejection::LifetimeTooLong { max_secs: 3600 };
    rejects(
        &with_claims(|c| {
            c.insert("exp".into(), json!(NOW_SECS - 60 + 3601));
        }),
        max.clone(),
    );
    rejects(
        &with_claims(|c| {
            c.insert("iat".into(), json!(NOW_SECS + 300));
            c.insert("nbf".into(), json!(NOW_SECS));
            c.insert("exp".into(), json!(NOW_SECS + 20));
        }),
        Rejection::IssuedInFuture,
    );
    rejects(
        &with_claims(|c| {
            c.insert("iat".into(), json!(NOW_SECS + 5));
            c.insert("exp".into(), json!(NOW_SECS + 5));
        }),
        max,
    );
}

#[test]
fn cheap_checks_come_before_key_lookup() {
    // An expired token naming an unknown key is "expired": no JWKS refresh for it.
    let token = sign(
        &json!({ "alg": "ES256", "typ": "at+jwt", "kid": "fixture-9" }),
        &json!({ "exp": NOW_SECS - 1000, "iat": NOW_SECS - 1100, "iss": ISSUER, "aud": AUDIENCE,
                 "sub": "s", "jti": "j", "client_id": "c" }),
    );
    rejects(&token, Rejection::Expired);
}

#[test]
fn rejections_never_echo_token_content() {
    let secretish = "SENSITIVE-VALUE-123";
    let tokens = [
        with_claims(|c| {
            c.insert("iss".into(), json!(secretish));
        }),
        with_claims(|c| {
            c.insert("sub".into(), json!([secretish]));
        }),
        with_header(|h| {
            h.insert("alg".into(), json!(secretish));
        }),
        with_header(|h| {
            h.insert("kid".into(), json!(secretish));
        }),
    ];
    for token in tokens {
        let err = verify(&token).unwrap_err();
        for text in [
            err.to_string(),
            format!("{err:?}"),
            err.json_body(),
            err.www_authenticate("r").unwrap(),
        ] {
            assert!(!text.contains(secretish), "{text}");
        }
    }
}

#[test]
fn every_rejection_maps_to_rfc6750() {
    let token_errors = [
        verify("a.b").unwrap_err(),
        verify(&with_claims(|c| {
            c.remove("sub");
        }))
        .unwrap_err(),
    ];
    for err in token_errors {
        assert_eq!(err.status(), 401);
        let challenge = err.www_authenticate("edgeward").unwrap();
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
        let body: serde_json::Value = serde_json::from_str(&err.json_body()).unwrap();
        assert_eq!(body["error"], "invalid_token");
    }
}
