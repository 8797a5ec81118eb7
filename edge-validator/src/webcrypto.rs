//! ES256 signature checks through WebCrypto (`crypto.subtle.verify`), about 10x cheaper in CPU
//! than pure-Rust p256 compiled to wasm. Imported keys are kept per isolate (the import is a
//! request's wait: `handler::prepare`; the verify another: `handler::fresh`).

use std::cell::RefCell;
use std::collections::HashMap;

use js_sys::{Object, Reflect};
use shared::{BackendError, Jwk};
use wasm_bindgen::{JsCast, JsValue};

thread_local! {
    /// Imported keys by kid, with the point each was imported from (a kid reused with
    /// another point re-imports, and the new key replaces the old). Looked up by `&str`, so
    /// a fresh token's lookup allocates nothing.
    static KEYS: RefCell<HashMap<String, ([u8; 65], web_sys::CryptoKey)>> = RefCell::new(HashMap::new());
    /// `crypto.subtle` and the verify algorithm object, looked up once per isolate: each
    /// lookup is a crossing of the wasm boundary, and a fresh token pays for every one.
    static SUBTLE: RefCell<Option<(web_sys::SubtleCrypto, Object)>> = const { RefCell::new(None) };
}

fn backend(err: JsValue) -> BackendError {
    BackendError {
        detail: format!("{err:?}"),
    }
}

/// `crypto.subtle` and `{name: "ECDSA", hash: "SHA-256"}`.
pub(crate) fn subtle() -> Result<(web_sys::SubtleCrypto, Object), BackendError> {
    if let Some(cached) = SUBTLE.with(|cell| cell.borrow().clone()) {
        return Ok(cached);
    }
    let scope: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let subtle = scope.crypto().map_err(backend)?.subtle();
    let algorithm = object(&[("name", "ECDSA"), ("hash", "SHA-256")])?;
    SUBTLE.with(|cell| *cell.borrow_mut() = Some((subtle.clone(), algorithm.clone())));
    Ok((subtle, algorithm))
}

fn object(pairs: &[(&str, &str)]) -> Result<Object, BackendError> {
    let object = Object::new();
    for (name, value) in pairs {
        Reflect::set(&object, &(*name).into(), &(*value).into()).map_err(backend)?;
    }
    Ok(object)
}

/// The key already imported for `jwk`, if any.
pub(crate) fn imported(jwk: &Jwk) -> Option<web_sys::CryptoKey> {
    KEYS.with(|keys| {
        let keys = keys.borrow();
        let (point, key) = keys.get(jwk.kid())?;
        (*point == jwk.uncompressed_point()).then(|| key.clone())
    })
}

/// Keeps `key`, imported for `kid` at `point`, for the isolate.
pub(crate) fn keep(kid: String, point: [u8; 65], key: web_sys::CryptoKey) {
    KEYS.with(|keys| keys.borrow_mut().insert(kid, (point, key)));
}
