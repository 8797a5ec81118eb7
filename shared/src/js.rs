//! The JavaScript API of the wasm-pack package (feature `js`).
//!
//! ```js
//! const { Validator } = require("@edgeward/shared");
//! const v = new Validator(jwksJson, { issuer: "https://issuer.example", audience: "api" });
//! try {
//!   const claims = v.verify(token, Date.now() / 1000);
//! } catch (e) {
//!   // e.name === "TokenRejected"; e.code is the reason code; e.error the RFC 6750 code;
//!   // e.status the HTTP status to answer with.
//! }
//! ```

use serde::Deserialize;
use wasm_bindgen::prelude::*;

use crate::claims::Validation;
use crate::jwks::Jwks;
use crate::rejection::Rejection;
use crate::time::UnixTime;

/// Options accepted by the `Validator` constructor (camelCase in JS).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Options {
    issuer: String,
    audience: String,
    leeway_secs: Option<u64>,
    max_lifetime_secs: Option<u64>,
    max_token_bytes: Option<usize>,
    accept_jwt_type: Option<bool>,
}

/// Verifies ES256 access tokens against one key set and one set of rules.
#[wasm_bindgen]
pub struct Validator {
    validator: crate::Validator,
    jwks: Jwks,
}

#[wasm_bindgen]
impl Validator {
    /// Builds a validator from JWKS JSON and `{ issuer, audience, leewaySecs?,
    /// maxLifetimeSecs?, maxTokenBytes?, acceptJwtType? }`.
    ///
    /// # Errors
    /// Throws a `TypeError` for bad options and an `Error` naming the JWKS problem.
    #[wasm_bindgen(constructor)]
    pub fn new(jwks_json: &str, options: JsValue) -> Result<Validator, JsValue> {
        // Through JSON so that `deny_unknown_fields` sees every key: a misspelt option
        // must fail loudly, not fall back to a default.
        let options: Options = serde_wasm_bindgen::from_value::<serde_json::Value>(options)
            .map_err(|err| err.to_string())
            .and_then(|value| serde_json::from_value(value).map_err(|err| err.to_string()))
            .map_err(|err| js_sys::TypeError::new(&format!("invalid options: {err}")))?;
        let jwks = Jwks::parse(jwks_json).map_err(|err| js_sys::Error::new(&err.to_string()))?;
        let mut validation = Validation::new(options.issuer, options.audience);
        if let Some(leeway) = options.leeway_secs {
            validation.leeway_secs = leeway;
        }
        if let Some(max) = options.max_lifetime_secs {
            validation.max_lifetime_secs = max;
        }
        if let Some(max) = options.max_token_bytes {
            validation.max_token_bytes = max;
        }
        if let Some(accept) = options.accept_jwt_type {
            validation.accept_jwt_type = accept;
        }
        Ok(Self {
            validator: crate::Validator::new(validation),
            jwks,
        })
    }

    /// Verifies `token` at `nowSecs` (seconds since the epoch, e.g. `Date.now() / 1000`) and
    /// returns its claims.
    ///
    /// # Errors
    /// Throws a `TokenRejected` error with `code`, `error` and `status` properties.
    pub fn verify(&self, token: &str, now_secs: f64) -> Result<JsValue, JsValue> {
        if !now_secs.is_finite() || now_secs < 0.0 {
            return Err(js_sys::TypeError::new("nowSecs must be a non-negative number").into());
        }
        // Float to integer milliseconds; `as` saturates, which is what we want here.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let now = UnixTime::from_millis((now_secs * 1000.0) as u64);
        let verified = self
            .validator
            .verify(token, &self.jwks, now)
            .map_err(|rejection| rejected(&rejection))?;
        let serializer = serde_wasm_bindgen::Serializer::json_compatible();
        serde::Serialize::serialize(verified.claims(), &serializer)
            .map_err(|err| js_sys::Error::new(&err.to_string()).into())
    }

    /// The key ids in the set.
    #[wasm_bindgen(js_name = keyIds)]
    #[must_use]
    pub fn key_ids(&self) -> Vec<String> {
        self.jwks
            .keys()
            .iter()
            .map(|key| key.kid().to_owned())
            .collect()
    }
}

fn rejected(rejection: &Rejection) -> JsValue {
    let error = js_sys::Error::new(&rejection.to_string());
    error.set_name("TokenRejected");
    let object: &JsValue = error.as_ref();
    let code = rejection
        .error_code()
        .map_or(JsValue::NULL, |code| code.as_str().into());
    // Setting properties on a fresh Error object cannot fail.
    let _ = js_sys::Reflect::set(object, &"code".into(), &rejection.reason().into());
    let _ = js_sys::Reflect::set(object, &"error".into(), &code);
    let _ = js_sys::Reflect::set(object, &"status".into(), &rejection.status().into());
    error.into()
}
