//! One fetch of a kind at a time per isolate, without sharing a future across requests.
//!
//! In Workers every promise belongs to the request that created it: a request awaiting a
//! fetch another request started is cancelled by the runtime ("code had hung", a 500), which
//! an end-to-end drill hit with a shared in-flight future. So the first request fetches, and
//! the others wait on timers of their own until it is done (or a deadline passes), then read
//! the result from isolate memory.

use std::cell::Cell;
use std::future::Future;
use std::thread::LocalKey;

use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen_futures::JsFuture;

#[wasm_bindgen(module = "/js/io.js")]
extern "C" {
    fn sleep(ms: f64) -> js_sys::Promise;
}

/// How often a waiting request looks again.
const POLL_MS: f64 = 5.0;

/// Clears the flag however the fetch ends (done, or its request cancelled and dropped).
struct Running(&'static LocalKey<Cell<bool>>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.with(|busy| busy.set(false));
    }
}

/// Runs `work` unless a request of this isolate is already running it under `busy`. Then,
/// with `wait_ms` > 0, waits until that one finishes or `wait_ms` passes; with 0, returns at
/// once (a background refresh that is already happening).
pub(crate) async fn run(
    busy: &'static LocalKey<Cell<bool>>,
    wait_ms: u64,
    work: impl Future<Output = ()>,
) {
    if busy.with(Cell::get) {
        let deadline = crate::clock::now_millis().saturating_add(wait_ms);
        while busy.with(Cell::get) && crate::clock::now_millis() < deadline {
            // Resolves, never rejects.
            let _ = JsFuture::from(sleep(POLL_MS)).await;
        }
        return;
    }
    busy.with(|flag| flag.set(true));
    let _running = Running(busy);
    work.await;
}

/// How long a waiting request may wait for a fetch over `urls` URLs (one timeout each, plus
/// one for good measure); 0 when it should not wait at all.
pub(crate) fn wait_budget(wait: bool, fetch_timeout_ms: u64, urls: usize) -> u64 {
    if !wait {
        return 0;
    }
    let urls = u64::try_from(urls).unwrap_or(u64::MAX);
    fetch_timeout_ms.saturating_mul(urls.saturating_add(1))
}
