//! Fetches to the issuer (key set, revocation feed) with a timeout each, trying an ordered
//! URL list: the geo-DNS name first, regional fallbacks after. The fetch itself is one call
//! into `js/io.js`; what to do with the answer is decided here and in the callers.

use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use crate::error::js_error_text;

#[wasm_bindgen(module = "/js/io.js")]
extern "C" {
    /// An issuer's answer, as `fetchText` resolves it.
    pub(crate) type Fetched;
    #[wasm_bindgen(method, getter)]
    pub(crate) fn status(this: &Fetched) -> u16;
    /// The body of a 200 (`None` for any other status).
    #[wasm_bindgen(method, getter)]
    pub(crate) fn text(this: &Fetched) -> Option<String>;
    #[wasm_bindgen(method, getter, js_name = cacheControl)]
    pub(crate) fn cache_control(this: &Fetched) -> Option<String>;
    #[wasm_bindgen(method, getter)]
    pub(crate) fn etag(this: &Fetched) -> Option<String>;

    #[wasm_bindgen(js_name = fetchText)]
    fn fetch_text(
        url: &str,
        accept: &str,
        if_none_match: Option<&str>,
        timeout_ms: f64,
    ) -> js_sys::Promise;
}

/// Why one fetch gave nothing usable (logged; the caller tries the next URL).
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    /// No answer (timeout, connection, DNS or TLS failure), as the runtime describes it.
    #[error("{0}")]
    NoAnswer(String),
    /// An answer other than the ones the caller can use.
    #[error("status {0}")]
    Status(u16),
    /// An answer that does not parse.
    #[error("{0}")]
    Unusable(String),
}

/// `GET url` accepting `accept` (conditional on `if_none_match` when given), body included,
/// aborted after `timeout_ms`.
pub(crate) async fn get(
    url: &str,
    accept: &str,
    if_none_match: Option<&str>,
    timeout_ms: u64,
) -> Result<Fetched, FetchError> {
    // Whole milliseconds well below 2^53: exact as a JS number.
    let promise = fetch_text(url, accept, if_none_match, timeout_ms as f64);
    JsFuture::from(promise)
        .await
        .map(JsCast::unchecked_into)
        .map_err(|reason| FetchError::NoAnswer(js_error_text(&reason)))
}
