//! Fetches to the issuer (key set, revocation feed) with a timeout each. The fetch is one
//! call into `js/io.js` whose answer comes back into wasm by job number ([`crate::jobs`]);
//! what to do with it is decided by the job.

use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;

#[wasm_bindgen(module = "/js/io.js")]
extern "C" {
    /// An issuer's answer, as `fetchText` resolves it.
    pub type Fetched;
    #[wasm_bindgen(method, getter)]
    pub(crate) fn status(this: &Fetched) -> u16;
    /// The body of a 200 (`None` for any other status).
    #[wasm_bindgen(method, getter)]
    pub(crate) fn text(this: &Fetched) -> Option<String>;
    #[wasm_bindgen(method, getter, js_name = cacheControl)]
    pub(crate) fn cache_control(this: &Fetched) -> Option<String>;
    #[wasm_bindgen(method, getter)]
    pub(crate) fn etag(this: &Fetched) -> Option<String>;

    #[wasm_bindgen(js_name = fetchThen)]
    fn fetch_then(
        url: &str,
        accept: &str,
        if_none_match: Option<&str>,
        timeout_ms: f64,
        resume: &JsValue,
        id: u32,
    ) -> js_sys::Promise;
}

/// Why one fetch gave nothing usable (logged; the job tries the next URL).
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    /// No answer (timeout, connection, DNS or TLS failure), as the runtime describes it.
    #[error("{0}")]
    NoAnswer(String),
    /// An answer other than the ones the job can use.
    #[error("status {0}")]
    Status(u16),
    /// An answer that does not parse.
    #[error("{0}")]
    Unusable(String),
}

/// One `GET` a job asks for.
pub(crate) struct Get {
    pub(crate) url: String,
    pub(crate) accept: &'static str,
    /// Sent as `If-None-Match`.
    pub(crate) etag: Option<String>,
}

impl Get {
    /// Starts the fetch (aborted after `timeout_ms`, body included); its answer goes to
    /// `issuerAnswered(id, ...)` or `issuerUnanswered(id, ...)`.
    pub(crate) fn send(&self, timeout_ms: u64, id: u32) -> js_sys::Promise {
        // Whole milliseconds well below 2^53: exact as a JS number.
        crate::forward::with_resume(|resume| {
            fetch_then(
                &self.url,
                self.accept,
                self.etag.as_deref(),
                timeout_ms as f64,
                resume,
                id,
            )
        })
    }
}
