//! The WebCrypto keys the isolate has had imported (`Io::Import`), by name, and
//! `crypto.subtle` with the verify algorithm object, looked up once per instance: each lookup
//! is a crossing of the wasm boundary, and a fresh token would pay for every one. (Which keys
//! are imported, from which point, is the isolate's to decide; here are only the handles.)

use std::collections::HashMap;

use js_sys::{Object, Reflect};
use wasm_bindgen::{JsCast, JsValue};

use crate::isolate::KeyName;

/// The instance's WebCrypto handles.
#[derive(Default)]
pub(super) struct WebCrypto {
    /// The issuer's keys, by kid.
    issuer_keys: HashMap<String, web_sys::CryptoKey>,
    /// DPoP proof keys, by thumbprint: a map of their own, so no kid can name one.
    proof_keys: HashMap<String, web_sys::CryptoKey>,
    subtle: Option<(web_sys::SubtleCrypto, Object)>,
}

impl WebCrypto {
    /// `crypto.subtle` and `{name: "ECDSA", hash: "SHA-256"}`.
    pub(super) fn subtle(&mut self) -> Result<&(web_sys::SubtleCrypto, Object), JsValue> {
        if self.subtle.is_none() {
            let scope: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
            let subtle = scope.crypto()?.subtle();
            let algorithm = Object::new();
            Reflect::set(&algorithm, &"name".into(), &"ECDSA".into())?;
            Reflect::set(&algorithm, &"hash".into(), &"SHA-256".into())?;
            self.subtle = Some((subtle, algorithm));
        }
        self.subtle.as_ref().ok_or(JsValue::UNDEFINED)
    }

    /// The key imported as `name`.
    pub(super) fn key(&self, name: KeyName<'_>) -> Option<&web_sys::CryptoKey> {
        match name {
            KeyName::Issuer(kid) => self.issuer_keys.get(kid),
            KeyName::Proof(jkt) => self.proof_keys.get(jkt),
        }
    }

    /// Keeps `key`, imported as `name` (replacing one imported from an older point).
    pub(super) fn keep(&mut self, name: KeyName<'_>, key: web_sys::CryptoKey) {
        match name {
            KeyName::Issuer(kid) => self.issuer_keys.insert(kid.to_owned(), key),
            KeyName::Proof(jkt) => self.proof_keys.insert(jkt.to_owned(), key),
        };
    }

    /// Drops the proof key imported for thumbprint `jkt` (out of the isolate's table).
    pub(super) fn forget_proof_key(&mut self, jkt: &str) {
        self.proof_keys.remove(jkt);
    }
}
