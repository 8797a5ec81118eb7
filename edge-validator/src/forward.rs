//! Forwarding to the origin through three small JavaScript functions (`js/forward.js`): the
//! per-header work stays in JS, so a forwarded request crosses the wasm boundary a handful of
//! times instead of once or more per header. (`benches/run` put the gain within its noise, a
//! few µs; the code is no longer than the web-sys version, so it stays.)

use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

#[wasm_bindgen(module = "/js/forward.js")]
extern "C" {
    #[wasm_bindgen(js_name = forwardedHeaders, catch)]
    fn forwarded_headers(
        headers: &web_sys::Headers,
        prefix: &str,
    ) -> Result<web_sys::Headers, JsValue>;

    #[wasm_bindgen(js_name = forwardTo, catch)]
    fn forward_to(
        request: &web_sys::Request,
        target: &str,
        headers: &web_sys::Headers,
    ) -> Result<js_sys::Promise, JsValue>;

    #[wasm_bindgen(js_name = withHeaders, catch)]
    fn with_headers(
        response: &web_sys::Response,
        name1: &str,
        value1: &str,
        name2: &str,
        value2: &str,
    ) -> Result<web_sys::Response, JsValue>;
}

/// Why forwarding failed.
#[derive(Debug)]
pub(crate) enum ForwardError {
    /// Building the outbound request failed (a runtime error, not the client's).
    Build(String),
    /// The origin could not be reached (connection refused, DNS, TLS, reset).
    Unreachable(String),
}

fn detail(err: &JsValue) -> String {
    err.as_string()
        .or_else(|| {
            err.dyn_ref::<js_sys::Error>()
                .map(|e| String::from(e.message()))
        })
        .unwrap_or_else(|| format!("{err:?}"))
}

/// The request's headers minus the credential, `host` and every `prefix*` name.
pub(crate) fn headers_without(
    request: &web_sys::Request,
    prefix: &str,
) -> Result<web_sys::Headers, ForwardError> {
    forwarded_headers(&request.headers(), prefix).map_err(|e| ForwardError::Build(detail(&e)))
}

/// Sends `request` (method, streamed body) to `target` with `headers`.
pub(crate) async fn send(
    request: &web_sys::Request,
    target: &str,
    headers: &web_sys::Headers,
) -> Result<web_sys::Response, ForwardError> {
    let promise =
        forward_to(request, target, headers).map_err(|e| ForwardError::Build(detail(&e)))?;
    let response = JsFuture::from(promise)
        .await
        .map_err(|e| ForwardError::Unreachable(detail(&e)))?;
    Ok(response.unchecked_into())
}

/// `response` with two more headers.
pub(crate) fn add_headers(
    response: &web_sys::Response,
    (name1, value1): (&str, &str),
    (name2, value2): (&str, &str),
) -> Result<web_sys::Response, ForwardError> {
    with_headers(response, name1, value1, name2, value2)
        .map_err(|e| ForwardError::Build(detail(&e)))
}
