//! The JS functions the driver calls (`js/io.js`, `js/forward.js`): each is one crossing of
//! the wasm boundary, and each that starts a wait returns its promise.

use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;

use super::runtime::Env;

#[wasm_bindgen(module = "/js/routes.js")]
extern "C" {
    /// The bundled route table `name`, as JSON.
    #[wasm_bindgen(js_name = routeTable)]
    pub(super) fn route_table(name: &str) -> Option<String>;
}

#[wasm_bindgen(module = "/js/io.js")]
extern "C" {
    /// Method, URL, client IP, colo, the body's declared length (empty: no body; `?`: none
    /// declared) and authorization, one per line.
    pub(super) fn head(request: &web_sys::Request, with_colo: bool) -> String;
    #[wasm_bindgen(js_name = fetchText)]
    pub(super) fn fetch_text(
        url: &str,
        accept: &str,
        if_none_match: Option<&str>,
        authorization: Option<&str>,
        timeout_ms: f64,
    ) -> js_sys::Promise;
    #[wasm_bindgen(js_name = cacheGet)]
    pub(super) fn cache_get(key: &str) -> js_sys::Promise;
    /// Stores the copy, kept alive by `ctx.waitUntil` (a failure is logged in JS).
    #[wasm_bindgen(js_name = cachePut)]
    #[allow(clippy::too_many_arguments)] // one boundary crossing
    pub(super) fn cache_put(
        ctx: &JsValue,
        key: &str,
        text: &str,
        keep_secs: f64,
        fetched_at: f64,
        cache_control: Option<&str>,
        etag: Option<&str>,
        mac: &str,
    );
    pub(super) fn sleep(ms: f64) -> js_sys::Promise;
    /// `promise` settled, or a timer after `timeout_ms`.
    pub(super) fn join(promise: &js_sys::Promise, timeout_ms: f64) -> js_sys::Promise;
    pub(super) fn keep(ctx: &JsValue, promise: &JsValue);
    #[wasm_bindgen(js_name = importKey)]
    pub(super) fn import_key(point: &[u8]) -> js_sys::Promise;
    pub(super) fn verify(
        subtle: &web_sys::SubtleCrypto,
        algorithm: &js_sys::Object,
        key: &web_sys::CryptoKey,
        signature: &[u8],
        message: &[u8],
    ) -> js_sys::Promise;
    #[wasm_bindgen(js_name = askObject)]
    pub(super) fn ask_object(
        env: &Env,
        binding: &str,
        name: &str,
        url: &str,
        timeout_ms: f64,
    ) -> js_sys::Promise;
    /// The origin response's status.
    pub(super) fn status(response: &JsValue) -> u16;
    #[wasm_bindgen(js_name = nextInstance)]
    pub(super) fn next_instance() -> u32;
    #[allow(clippy::too_many_arguments)] // one boundary crossing for the whole answer
    #[wasm_bindgen(catch)]
    pub(super) fn respond(
        status: u16,
        body: &str,
        challenge: Option<&str>,
        retry_after: Option<&str>,
        policy_name: &JsValue,
        policy: Option<&str>,
        rate_limit_name: &JsValue,
        rate_limit: Option<&str>,
        dpop_nonce: Option<&str>,
    ) -> Result<web_sys::Response, JsValue>;

    /// The Cache API copy, as `cacheGet` resolves it.
    pub(super) type CachedCopy;
    #[wasm_bindgen(method, getter)]
    pub(super) fn text(this: &CachedCopy) -> String;
    #[wasm_bindgen(method, getter, js_name = fetchedAt)]
    pub(super) fn fetched_at(this: &CachedCopy) -> Option<String>;
    #[wasm_bindgen(method, getter, js_name = cacheControl)]
    pub(super) fn cache_control(this: &CachedCopy) -> Option<String>;
    #[wasm_bindgen(method, getter)]
    pub(super) fn etag(this: &CachedCopy) -> Option<String>;
    #[wasm_bindgen(method, getter)]
    pub(super) fn mac(this: &CachedCopy) -> Option<String>;

    /// An issuer's answer, as `fetchText` resolves it.
    pub(super) type Fetched;
    #[wasm_bindgen(method, getter)]
    pub(super) fn status(this: &Fetched) -> u16;
    /// The body of a 200 (`None` for any other status).
    #[wasm_bindgen(method, getter)]
    pub(super) fn text(this: &Fetched) -> Option<String>;
    #[wasm_bindgen(method, getter, js_name = cacheControl)]
    pub(super) fn cache_control(this: &Fetched) -> Option<String>;
    #[wasm_bindgen(method, getter)]
    pub(super) fn etag(this: &Fetched) -> Option<String>;
}

#[wasm_bindgen(module = "/js/forward.js")]
extern "C" {
    /// The request to `target` without the credential and forgeable identity headers, with
    /// `name: value` (the assertion; none for a public route); throws if the runtime refuses
    /// to build it.
    #[wasm_bindgen(catch)]
    pub(super) fn forward(
        request: &web_sys::Request,
        target: &str,
        prefix: &JsValue,
        name: &JsValue,
        value: Option<&str>,
    ) -> Result<js_sys::Promise, JsValue>;
    /// `response` with the headers given values set: the two rate-limit headers, named,
    /// and `DPoP-Nonce`.
    #[wasm_bindgen(js_name = withHeaders)]
    pub(super) fn with_headers(
        response: &JsValue,
        name1: &JsValue,
        value1: Option<&str>,
        name2: &JsValue,
        value2: Option<&str>,
        dpop_nonce: Option<&str>,
    ) -> JsValue;
}

#[wasm_bindgen]
extern "C" {
    /// The entry's `settle(promise, id)`: the promise of what `resume(id, ...)` answers.
    pub(super) type Settle;
    #[wasm_bindgen(method, js_name = call)]
    fn call2(this: &Settle, context: &JsValue, promise: &js_sys::Promise, id: u32) -> JsValue;
}

impl Settle {
    /// `promise`'s outcome goes back to wasm as wait `id`.
    pub(super) fn settle(&self, promise: &js_sys::Promise, id: u32) -> JsValue {
        self.call2(&JsValue::UNDEFINED, promise, id)
    }
}

/// A thrown JS value as text: a string as it is, an `Error` by its message. (Not `{:?}`: the
/// Debug formatting machinery it pulls in weighs more in the bundle than this function.)
pub(super) fn describe(value: &JsValue) -> String {
    use wasm_bindgen::JsCast;
    if let Some(text) = value.as_string() {
        return text;
    }
    value.dyn_ref::<js_sys::Error>().map_or_else(
        || "a thrown value that is not an Error".to_owned(),
        |error| String::from(error.message()),
    )
}
