//! Fetches to the issuer (key set, revocation feed) with a timeout each, trying an ordered
//! URL list: the geo-DNS name first, regional fallbacks after.

use std::time::Duration;

use futures_util::future::{select, Either};
use worker::{AbortController, Delay, Fetch, Headers, Method, Request, RequestInit, Response};

/// Why one fetch gave nothing usable (logged; the caller tries the next URL).
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    /// No answer within the timeout; the request was aborted.
    #[error("no answer within {0} ms")]
    Timeout(u64),
    /// The request could not be built or sent.
    #[error("{0}")]
    Failed(String),
    /// An answer other than 200 or 304.
    #[error("status {0}")]
    Status(u16),
}

impl From<worker::Error> for FetchError {
    fn from(err: worker::Error) -> Self {
        Self::Failed(err.to_string())
    }
}

/// `GET url` with `headers`, aborted after `timeout_ms`.
pub(crate) async fn get(
    url: &str,
    headers: &[(&str, &str)],
    timeout_ms: u64,
) -> Result<Response, FetchError> {
    let request_headers = Headers::new();
    for (name, value) in headers {
        request_headers.set(name, value)?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Get).with_headers(request_headers);
    let request = Request::new_with_init(url, &init)?;
    let controller = AbortController::default();
    let signal = controller.signal();
    let fetch = Fetch::Request(request);
    let sending = Box::pin(fetch.send_with_signal(&signal));
    let timer = Box::pin(Delay::from(Duration::from_millis(timeout_ms)));
    let outcome = match select(sending, timer).await {
        Either::Left((response, _)) => Some(response),
        Either::Right(((), _)) => None,
    };
    match outcome {
        Some(response) => Ok(response?),
        None => {
            controller.abort();
            Err(FetchError::Timeout(timeout_ms))
        }
    }
}

/// A text body read with the same kind of bound.
pub(crate) async fn text(mut response: Response, timeout_ms: u64) -> Result<String, FetchError> {
    let reading = Box::pin(response.text());
    let timer = Box::pin(Delay::from(Duration::from_millis(timeout_ms)));
    let outcome = match select(reading, timer).await {
        Either::Left((text, _)) => Some(text),
        Either::Right(((), _)) => None,
    };
    outcome.map_or(Err(FetchError::Timeout(timeout_ms)), |text| Ok(text?))
}
