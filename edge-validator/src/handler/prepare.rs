//! The waits before a request can be decided: a job ([`crate::jobs`]: the first revocation
//! pull, the key set) and a WebCrypto key import. The request is parked by number; when the
//! wait is over it starts again from [`super::serve`], with the wait marked in
//! [`super::Waited`] so it is not repeated.
//!
//! A request that needs a job while another request runs it polls on its own timer until
//! that job is over or its deadline passes (see [`crate::jobs`] for why it does not share the
//! other request's promise).

use std::cell::RefCell;
use std::rc::Rc;

use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;

use super::{lost, serve, Arrived};
use crate::clock;
use crate::config::Config;
use crate::jobs::{self, Kind, Then};
use crate::parked::{self, Parked};

/// How often a request waiting for another's job looks again, in ms.
const POLL_MS: f64 = 5.0;

#[wasm_bindgen(module = "/js/io.js")]
extern "C" {
    #[wasm_bindgen(js_name = sleepThen)]
    fn sleep_then(ms: f64, resume: &JsValue, id: u32) -> js_sys::Promise;
    #[cfg(not(feature = "p256-verify"))]
    #[wasm_bindgen(js_name = importThen)]
    fn import_then(point: &js_sys::Uint8Array, resume: &JsValue, id: u32) -> js_sys::Promise;
}

/// A request waiting (parked in [`WAITING`]).
struct Waiting {
    arrived: Arrived,
    wait: Wait,
}

enum Wait {
    /// For a job of this kind, another request's until `deadline` (ms since the epoch).
    Job { kind: Kind, deadline: u64 },
    /// For the import of this key (kid and uncompressed point).
    #[cfg(not(feature = "p256-verify"))]
    Import { kid: String, point: [u8; 65] },
}

thread_local! {
    static WAITING: RefCell<Parked<Waiting>> = const { RefCell::new(Parked::new()) };
}

/// Parks `arrived` until a job of `kind` is over: its own, or (one is running) another's.
pub(super) fn wait_for(
    kind: Kind,
    config: &Rc<Config>,
    mut arrived: Arrived,
) -> Result<JsValue, JsValue> {
    let now = clock::now();
    if matches!(kind, Kind::Keys { .. }) {
        arrived.keys_since.get_or_insert(now);
    }
    let busy = jobs::busy(kind, now);
    let deadline = now
        .as_millis()
        .saturating_add(jobs::budget_ms(kind, config));
    let ctx = arrived.ctx.clone();
    let id = parked::park(
        &WAITING,
        Waiting {
            arrived,
            wait: Wait::Job { kind, deadline },
        },
    );
    if busy {
        Ok(poll(id).into())
    } else {
        jobs::start(kind, config, &ctx, Then::Request(id))
    }
}

fn poll(id: u32) -> js_sys::Promise {
    crate::forward::with_resume(|resume| sleep_then(POLL_MS, resume, id))
}

/// The job request `id` waited for is over: the request starts again.
pub(crate) fn prepared(id: u32) -> Result<JsValue, JsValue> {
    match parked::take(&WAITING, id) {
        Some(waiting) => serve(waiting.arrived),
        None => lost(),
    }
}

/// Request `id`'s poll timer fired: again, or (the job is over, or the deadline passed) on.
#[wasm_bindgen(js_name = waitOver)]
pub fn wait_over(id: u32) -> Result<JsValue, JsValue> {
    let Some(waiting) = parked::take(&WAITING, id) else {
        return lost();
    };
    let now = clock::now();
    let again = match waiting.wait {
        Wait::Job { kind, deadline } => jobs::busy(kind, now) && now.as_millis() < deadline,
        #[cfg(not(feature = "p256-verify"))]
        Wait::Import { .. } => false,
    };
    if again {
        let id = parked::park(&WAITING, waiting);
        return Ok(poll(id).into());
    }
    serve(waiting.arrived)
}

/// Parks `arrived` while WebCrypto imports the key `kid` (`point`, uncompressed).
#[cfg(not(feature = "p256-verify"))]
pub(super) fn import(
    mut arrived: Arrived,
    kid: String,
    point: [u8; 65],
) -> Result<JsValue, JsValue> {
    arrived.waited.import = true;
    arrived.keys_since.get_or_insert(clock::now());
    let raw = js_sys::Uint8Array::from(point.as_slice());
    let id = parked::park(
        &WAITING,
        Waiting {
            arrived,
            wait: Wait::Import { kid, point },
        },
    );
    Ok(crate::forward::with_resume(|resume| import_then(&raw, resume, id)).into())
}

/// WebCrypto imported request `id`'s key: kept for the isolate, and the request goes on.
#[cfg(not(feature = "p256-verify"))]
#[wasm_bindgen(js_name = keyImported)]
pub fn key_imported(id: u32, key: web_sys::CryptoKey) -> Result<JsValue, JsValue> {
    let Some(waiting) = parked::take(&WAITING, id) else {
        return lost();
    };
    if let Wait::Import { kid, point } = waiting.wait {
        crate::webcrypto::keep(kid, point, key);
    }
    serve(waiting.arrived)
}

/// WebCrypto could not import request `id`'s key (`reason`): logged; the request goes on
/// and is refused as unverifiable.
#[cfg(not(feature = "p256-verify"))]
#[wasm_bindgen(js_name = keyNotImported)]
pub fn key_not_imported(id: u32, reason: String) -> Result<JsValue, JsValue> {
    console_error!("webcrypto key import failed: {reason}");
    match parked::take(&WAITING, id) {
        Some(waiting) => serve(waiting.arrived),
        None => lost(),
    }
}
