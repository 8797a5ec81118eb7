//! The JavaScript API of the wasm-pack package (feature `js`).
//!
//! Tokens, for a service that checks them itself:
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
//!
//! Edge assertions, for an origin behind the edge (`examples/origin-node/`, `docs/origins.md`):
//!
//! ```js
//! const { AssertionVerifier } = require("@edgeward/shared");
//! const origin = new AssertionVerifier([{ id: "edge-2026b", secret }],
//!   { maxAgeMs: 10000, host: "api.internal.example" });
//! try {
//!   // Every value of the header (Node: req.headersDistinct["x-edgeward-assertion"]).
//!   const identity = origin.verify(values, { method, host, path, query }, Date.now());
//! } catch (e) {
//!   // e.name === "AssertionRejected"; e.reason is the reason code; e.status is 401.
//! }
//! ```

use serde::Deserialize;
use wasm_bindgen::prelude::*;

use crate::assertion::{AssertionKey, RequestLine, DEFAULT_MAX_AGE_MS};
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
        let options: Options = from_js(options, "options")?;
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

    /// Verifies the bearer token `token` at `nowSecs` (seconds since the epoch, e.g.
    /// `Date.now() / 1000`) and returns its claims. A DPoP-bound token (`cnf`) is refused
    /// (`bound_token_as_bearer`): this checks no proof, so it must not take one as a bearer
    /// token.
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
        if verified.claims().cnf.is_some() {
            return Err(rejected(&Rejection::BoundTokenAsBearer));
        }
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

/// One key of the `AssertionVerifier` constructor: `{ id, secret }` (the secret's UTF-8 bytes:
/// the edge's `ASSERTION_SECRET`, or the origin's own with a key per origin).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyOption {
    id: String,
    secret: String,
}

/// Options of the `AssertionVerifier` constructor (camelCase in JS).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AssertionOptions {
    max_age_ms: Option<u64>,
    /// This origin's own host (the authority of the edge's `ORIGIN_URL`); without it the
    /// request's `host` stands in (see `AssertionVerifier::for_host`).
    host: Option<String>,
}

/// The request line an origin received: `{ method, host, path, query }`, `query` without
/// `?` (`null` or absent when there was none).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestOption {
    method: String,
    host: String,
    path: String,
    query: Option<String>,
}

/// `value` as JSON, then as `T`: `deny_unknown_fields` sees every key, so a misspelt option
/// fails loudly instead of falling back to a default.
fn from_js<T: serde::de::DeserializeOwned>(value: JsValue, what: &str) -> Result<T, JsValue> {
    serde_wasm_bindgen::from_value::<serde_json::Value>(value)
        .map_err(|err| err.to_string())
        .and_then(|value| serde_json::from_value(value).map_err(|err| err.to_string()))
        .map_err(|err| js_sys::TypeError::new(&format!("invalid {what}: {err}")).into())
}

/// Checks the edge's `x-edgeward-assertion` at an origin (see `docs/origins.md`).
#[wasm_bindgen]
pub struct AssertionVerifier {
    verifier: crate::AssertionVerifier,
}

#[wasm_bindgen]
impl AssertionVerifier {
    /// A verifier for assertions signed by any of `keys` (`[{ id, secret }]`: the current
    /// key, and the previous one during a rotation), with `{ maxAgeMs?, host? }` (default
    /// 10 s; `host`: this origin's own, which the signed host must name).
    ///
    /// # Errors
    /// Throws a `TypeError` for bad keys or options.
    #[wasm_bindgen(constructor)]
    pub fn new(keys: JsValue, options: JsValue) -> Result<AssertionVerifier, JsValue> {
        let keys: Vec<KeyOption> = from_js(keys, "keys")?;
        let options: AssertionOptions = if options.is_undefined() || options.is_null() {
            AssertionOptions::default()
        } else {
            from_js(options, "options")?
        };
        let keys = keys
            .iter()
            .map(|key| AssertionKey::new(&key.id, key.secret.as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| js_sys::TypeError::new(&format!("invalid keys: {err}")))?;
        let verifier =
            crate::AssertionVerifier::new(keys, options.max_age_ms.unwrap_or(DEFAULT_MAX_AGE_MS));
        Ok(Self {
            verifier: match options.host {
                Some(host) => verifier.for_host(&host),
                None => verifier,
            },
        })
    }

    /// Verifies the header's `values` (`undefined`, one string, or an array of every value
    /// received) for `request` (`{ method, host, path, query }`) at `nowMs` (e.g.
    /// `Date.now()`), and returns the identity (`sub`, `client_id`, `scope`, `jti`, `exp`,
    /// `method`, `host`, `path`, `query`, `ts`).
    ///
    /// # Errors
    /// Throws an `AssertionRejected` error with `reason` and `status` (401) properties, or a
    /// `TypeError` for arguments of the wrong shape.
    pub fn verify(
        &self,
        values: JsValue,
        request: JsValue,
        now_ms: f64,
    ) -> Result<JsValue, JsValue> {
        if !now_ms.is_finite() || now_ms < 0.0 {
            return Err(js_sys::TypeError::new("nowMs must be a non-negative number").into());
        }
        let values: Vec<String> = if values.is_undefined() || values.is_null() {
            Vec::new()
        } else if let Some(value) = values.as_string() {
            vec![value]
        } else {
            from_js(values, "header values")?
        };
        let request: RequestOption = from_js(request, "request")?;
        let line = RequestLine {
            method: &request.method,
            host: &request.host,
            path: &request.path,
            query: request.query.as_deref(),
        };
        // Float to integer milliseconds; `as` saturates, which is what we want here.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let now = UnixTime::from_millis(now_ms as u64);
        let identity = self
            .verifier
            .verify_values(values.iter().map(String::as_str), &line, now)
            .map_err(|error| {
                let rejected = js_sys::Error::new(&error.to_string());
                rejected.set_name("AssertionRejected");
                let object: &JsValue = rejected.as_ref();
                // Setting properties on a fresh Error object cannot fail.
                let _ = js_sys::Reflect::set(object, &"reason".into(), &error.reason().into());
                let _ = js_sys::Reflect::set(object, &"status".into(), &401.into());
                JsValue::from(rejected)
            })?;
        let serializer = serde_wasm_bindgen::Serializer::json_compatible();
        serde::Serialize::serialize(&identity, &serializer)
            .map_err(|err| js_sys::Error::new(&err.to_string()).into())
    }
}
