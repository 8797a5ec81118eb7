//! The WebCrypto keys the isolate has had imported (`Io::Import`), by kid, and
//! `crypto.subtle` with the verify algorithm object, looked up once per instance: each lookup
//! is a crossing of the wasm boundary, and a fresh token would pay for every one. (Which keys
//! are imported, from which point, is the isolate's to decide; here are only the handles.)

use std::collections::HashMap;

use js_sys::{Object, Reflect};
use wasm_bindgen::{JsCast, JsValue};

/// The instance's WebCrypto handles.
#[derive(Default)]
pub(super) struct WebCrypto {
    keys: HashMap<String, web_sys::CryptoKey>,
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

    /// The key imported for `kid`.
    pub(super) fn key(&self, kid: &str) -> Option<&web_sys::CryptoKey> {
        self.keys.get(kid)
    }

    /// Keeps `key`, imported for `kid` (replacing one imported from an older point).
    pub(super) fn keep(&mut self, kid: &str, key: web_sys::CryptoKey) {
        self.keys.insert(kid.to_owned(), key);
    }

    /// Drops the key imported for `kid` (a DPoP proof key out of the isolate's table).
    pub(super) fn forget(&mut self, kid: &str) {
        self.keys.remove(kid);
    }
}
