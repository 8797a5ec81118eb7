//! The edge's fetches from the issuer: a key-set refresh ([`jwks_cache::Refresh`]) and a
//! revocation pull ([`revocations::Pull`]), each a short sequence of steps (a `GET`, or the
//! Cache API copy) that the job decides one answer at a time. Each step is a JS promise whose
//! answer comes back into wasm by job number, like the request path's waits; no Rust future
//! is involved (see `handler`).
//!
//! One job of a kind runs at a time per isolate. A request that needs one while it runs polls
//! on a timer of its own ([`crate::handler`]'s `prepare`), and does not await the other
//! request's promise: in Workers, a promise belongs to the request that created it, and a
//! request awaiting another's fetch is cancelled by the runtime ("code had hung", a 500), as
//! an end-to-end drill once showed. A job whose request went away (a cancelled client) stops
//! at its next step; the kind counts as running only until its deadline (one fetch timeout
//! per URL, plus one), so nothing stays stuck.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::thread::LocalKey;

use shared::UnixTime;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;

use crate::clock;
use crate::config::Config;
use crate::issuer::{FetchError, Fetched, Get};
use crate::jwks_cache::{self, CachedCopy};
use crate::parked::{self, Parked};
use crate::revocations;

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Refreshes the key set; `load_copy` starts from the Cache API copy (a new isolate).
    Keys { load_copy: bool },
    /// Pulls the revocation feed.
    Revocations,
}

impl Kind {
    /// Until when a job of this kind counts as running.
    fn busy_until(self) -> &'static LocalKey<Cell<u64>> {
        match self {
            Self::Keys { .. } => &KEYS_BUSY_UNTIL,
            Self::Revocations => &REVOCATIONS_BUSY_UNTIL,
        }
    }
}

/// What a job asks for next.
pub(crate) enum Step {
    /// A fetch from the issuer.
    Get(Get),
    /// The Cache API copy under this key.
    CacheCopy(String),
    /// Nothing: the job is over.
    Done,
}

/// Who goes on when a job is over.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Then {
    /// The request parked under this number (`handler::prepare`).
    Request(u32),
    /// Nobody: a background job, kept alive by `ctx.waitUntil`.
    Background,
}

enum Job {
    Keys(jwks_cache::Refresh),
    Revocations(revocations::Pull),
}

/// A job between two steps (parked in [`RUNNING`]).
struct Running {
    job: Job,
    kind: Kind,
    config: Rc<Config>,
    /// The request's `ctx`, for `waitUntil` (the Cache API copy is stored in the background).
    ctx: JsValue,
    then: Then,
}

thread_local! {
    static RUNNING: RefCell<Parked<Running>> = const { RefCell::new(Parked::new()) };
    /// Until when each kind counts as running (milliseconds since the epoch; 0: not running).
    static KEYS_BUSY_UNTIL: Cell<u64> = const { Cell::new(0) };
    static REVOCATIONS_BUSY_UNTIL: Cell<u64> = const { Cell::new(0) };
}

/// Whether a job of `kind` is running at `now`.
pub(crate) fn busy(kind: Kind, now: UnixTime) -> bool {
    kind.busy_until().with(Cell::get) > now.as_millis()
}

/// How long a job of `kind` may run: one fetch timeout per URL, plus one.
pub(crate) fn budget_ms(kind: Kind, config: &Config) -> u64 {
    let urls = match kind {
        Kind::Keys { .. } => config.jwks_urls.len(),
        Kind::Revocations => config.revocation_urls.len(),
    };
    let urls = u64::try_from(urls).unwrap_or(u64::MAX);
    config
        .fetch_timeout_ms
        .saturating_mul(urls.saturating_add(1))
}

/// Starts a job of `kind` (the caller checked [`busy`]): the promise of its first step, or
/// what `then` returns when it needs none.
pub(crate) fn start(
    kind: Kind,
    config: &Rc<Config>,
    ctx: &JsValue,
    then: Then,
) -> Result<JsValue, JsValue> {
    let now = clock::now();
    let deadline = now.as_millis().saturating_add(budget_ms(kind, config));
    kind.busy_until().set(deadline);
    let (job, step) = match kind {
        Kind::Keys { load_copy } => {
            let (refresh, step) = jwks_cache::Refresh::start(config, load_copy);
            (Job::Keys(refresh), step)
        }
        Kind::Revocations => {
            let (pull, step) = revocations::Pull::start(config, now);
            (Job::Revocations(pull), step)
        }
    };
    let running = Running {
        job,
        kind,
        config: config.clone(),
        ctx: ctx.clone(),
        then,
    };
    next(running, step)
}

/// Starts a job of `kind` in the background, unless one is running.
pub(crate) fn background(kind: Kind, config: &Rc<Config>, ctx: &JsValue) {
    if busy(kind, clock::now()) {
        return;
    }
    match start(kind, config, ctx, Then::Background) {
        Ok(promise) => keep(ctx, &promise),
        Err(err) => console_error!(
            "background fetch failed to start: {}",
            crate::error::js_error_text(&err)
        ),
    }
}

#[wasm_bindgen(module = "/js/io.js")]
extern "C" {
    fn keep(ctx: &JsValue, promise: &JsValue);
    #[wasm_bindgen(js_name = cacheGetThen)]
    fn cache_get_then(key: &str, resume: &JsValue, id: u32) -> js_sys::Promise;
}

/// Takes `step` for `running`: parks it until the answer, or ends the job.
fn next(running: Running, step: Step) -> Result<JsValue, JsValue> {
    match step {
        Step::Get(get) => {
            let timeout_ms = running.config.fetch_timeout_ms;
            let id = parked::park(&RUNNING, running);
            Ok(get.send(timeout_ms, id).into())
        }
        Step::CacheCopy(key) => {
            let id = parked::park(&RUNNING, running);
            let promise = crate::forward::with_resume(|resume| cache_get_then(&key, resume, id));
            Ok(promise.into())
        }
        Step::Done => {
            running.kind.busy_until().set(0);
            match running.then {
                Then::Request(id) => crate::handler::prepared(id),
                Then::Background => Ok(JsValue::UNDEFINED),
            }
        }
    }
}

/// The issuer answered job `id`'s fetch.
#[wasm_bindgen(js_name = issuerAnswered)]
pub fn issuer_answered(id: u32, answer: Fetched) -> Result<JsValue, JsValue> {
    answered(id, Ok(answer))
}

/// Job `id`'s fetch got no answer (`reason`).
#[wasm_bindgen(js_name = issuerUnanswered)]
pub fn issuer_unanswered(id: u32, reason: String) -> Result<JsValue, JsValue> {
    answered(id, Err(FetchError::NoAnswer(reason)))
}

fn answered(id: u32, answer: Result<Fetched, FetchError>) -> Result<JsValue, JsValue> {
    let Some(mut running) = parked::take(&RUNNING, id) else {
        return crate::handler::lost();
    };
    let step = match &mut running.job {
        Job::Keys(refresh) => refresh.answered(&running.config, &running.ctx, answer),
        Job::Revocations(pull) => pull.answered(&running.config, &running.ctx, answer),
    };
    next(running, step)
}

/// The Cache API copy for job `id` (`None`: there was none, or it could not be read).
#[wasm_bindgen(js_name = copyAnswered)]
pub fn copy_answered(id: u32, copy: Option<CachedCopy>) -> Result<JsValue, JsValue> {
    let Some(mut running) = parked::take(&RUNNING, id) else {
        return crate::handler::lost();
    };
    let step = match &mut running.job {
        Job::Keys(refresh) => refresh.copy_answered(&running.config, copy),
        Job::Revocations(_) => Step::Done,
    };
    next(running, step)
}
