//! The Worker's clock: `Date.now()`, one call across the wasm boundary. (`worker::Date::now()`
//! builds a JS `Date` object, reads it and frees it: three crossings, and the request path
//! reads the clock about ten times.) Workers only advance it across I/O.

use shared::UnixTime;

/// Milliseconds since the Unix epoch.
pub(crate) fn now_millis() -> u64 {
    // A JS timestamp: whole milliseconds, non-negative; the cast saturates anyway.
    js_sys::Date::now() as u64
}

/// The current time for `shared`'s checks.
pub(crate) fn now() -> UnixTime {
    UnixTime::from_millis(now_millis())
}
