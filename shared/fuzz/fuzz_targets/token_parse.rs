//! Arbitrary bytes as a bearer header and as a token: every path must return, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::{bearer_token, Jwks, UnixTime, Validation, Validator};

/// The P-256 key of RFC 7517 appendix A.1.
const JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","use":"sig","alg":"ES256","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]}"#;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let jwks = Jwks::parse(JWKS).expect("the fixed JWKS parses");
    let mut validation = Validation::new("https://issuer.test", "api");
    validation.accept_jwt_type = data.first().is_some_and(|b| b & 1 == 1);
    let validator = Validator::new(validation);
    let _ = validator.verify(text, &jwks, UnixTime::from_secs(1_800_000_000));
    if let Ok(token) = bearer_token([text]) {
        let _ = validator.check(token, &jwks, UnixTime::from_secs(0));
    }
    if let Err(rejection) = validator.verify(text, &jwks, UnixTime::EPOCH) {
        let _ = (rejection.www_authenticate("r"), rejection.json_body(), rejection.status());
    }
    let _ = text.parse::<shared::RatePlan>();
});
