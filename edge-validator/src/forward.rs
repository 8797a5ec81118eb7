//! Forwarding to the origin through two small JavaScript functions (`js/forward.js`): the
//! per-header work stays in JS, so a forwarded request crosses the wasm boundary twice
//! instead of once or more per header, and fixed header names cross once per isolate.

use shared::assertion::{ASSERTION_HEADER, HEADER_PREFIX};
use shared::rate_limit::{POLICY_HEADER, RATE_LIMIT_HEADER};
use std::cell::OnceCell;
use wasm_bindgen::prelude::wasm_bindgen;

use wasm_bindgen::JsValue;

#[wasm_bindgen(module = "/js/forward.js")]
extern "C" {
    #[cfg(not(feature = "p256-verify"))]
    #[wasm_bindgen(js_name = verifyThen)]
    fn verify_then_js(
        subtle: &web_sys::SubtleCrypto,
        algorithm: &js_sys::Object,
        key: &web_sys::CryptoKey,
        signature: &[u8],
        message: &[u8],
        resume: &JsValue,
        id: u32,
    ) -> js_sys::Promise;

    #[wasm_bindgen(js_name = forwardThen)]
    #[allow(clippy::too_many_arguments)] // one boundary crossing instead of several
    fn forward_then_js(
        request: &web_sys::Request,
        target: &str,
        prefix: &JsValue,
        name: &JsValue,
        value: &str,
        resume: &JsValue,
        id: u32,
        policy_name: &JsValue,
        policy: Option<&str>,
        rate_limit_name: &JsValue,
        rate_limit: Option<&str>,
    ) -> js_sys::Promise;
}

/// The fixed header names as JS strings, made once per isolate: a `&str` argument is
/// decoded from wasm memory on every call.
struct Names {
    identity_prefix: JsValue,
    assertion: JsValue,
    policy: JsValue,
    rate_limit: JsValue,
}

thread_local! {
    static NAMES: Names = Names {
        identity_prefix: JsValue::from_str(HEADER_PREFIX),
        assertion: JsValue::from_str(ASSERTION_HEADER),
        policy: JsValue::from_str(POLICY_HEADER),
        rate_limit: JsValue::from_str(RATE_LIMIT_HEADER),
    };
    /// The wasm exports the request path's promises call back by number
    /// (`js/plain-entry.mjs` makes the object; [`crate::handler::handle`] passes it in).
    static RESUME: OnceCell<JsValue> = const { OnceCell::new() };
}

/// Keeps the entry's `resume` object (the first one: it is the same on every request).
pub(crate) fn set_resume(resume: JsValue) {
    RESUME.with(|cell| {
        let _ = cell.set(resume);
    });
}

/// Calls `f` with the entry's `resume` object.
pub(crate) fn with_resume<T>(f: impl FnOnce(&JsValue) -> T) -> T {
    RESUME.with(|cell| f(cell.get().unwrap_or(&JsValue::UNDEFINED)))
}

/// `crypto.subtle.verify(...)`, then `tokenVerified(id, valid)` (or `tokenNotVerified`), as
/// one promise (the request's wait for a fresh token).
///
/// `signature` and `message` reach JS as views into wasm memory, not copies: WebCrypto
/// takes a copy of its input when called (the spec's "get a copy of the bytes held by"),
/// and workerd does the crypto itself before `verify` returns (its `crypto.c++`: "all of
/// our implementations perform the crypto synchronously"), so the views need only last the
/// call. That saves two `Uint8Array` copies, an ArrayBuffer allocation each.
#[cfg(not(feature = "p256-verify"))]
pub(crate) fn verify_then(
    subtle: &web_sys::SubtleCrypto,
    algorithm: &js_sys::Object,
    key: &web_sys::CryptoKey,
    signature: &[u8],
    message: &[u8],
    id: u32,
) -> js_sys::Promise {
    with_resume(|resume| verify_then_js(subtle, algorithm, key, signature, message, resume, id))
}

/// Why forwarding failed.
#[derive(Debug)]
pub(crate) enum ForwardError {
    /// Building the outbound request failed (a runtime error, not the client's).
    Build(String),
    /// The origin could not be reached (connection refused, DNS, TLS, reset).
    Unreachable(String),
}

/// Sends `request` (method, headers less the credential, `host` and every identity header,
/// streamed body) to `target`, with `assertion` as the edge's signed identity; then sets
/// `RateLimit-Policy`/`RateLimit` from `headers` if given, and calls `originAnswered(id,
/// status)` (or `originUnreachable`), as one promise (the request's wait for the origin).
pub(crate) fn forward_then(
    request: &web_sys::Request,
    target: &str,
    assertion: &str,
    headers: Option<&(String, String)>,
    id: u32,
) -> js_sys::Promise {
    NAMES.with(|names| {
        with_resume(|resume| {
            forward_then_js(
                request,
                target,
                &names.identity_prefix,
                &names.assertion,
                assertion,
                resume,
                id,
                &names.policy,
                headers.map(|(policy, _)| policy.as_str()),
                &names.rate_limit,
                headers.map(|(_, rate_limit)| rate_limit.as_str()),
            )
        })
    })
}
