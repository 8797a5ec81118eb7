//! The Worker's driver: the exports the entry (`js/entry.mjs`) calls, turning a request and
//! each settled promise into an event for the [`Isolate`], and performing what comes back
//! (each [`Io`] one JS call whose promise the entry's `settle` hands back to [`resume`]).
//! Every decision is the isolate's; here are only the crossings.
//!
//! No Rust futures: every `.await` on a JS promise in wasm-bindgen-futures costs two closures,
//! a task wake-up and a microtask, and the handler future itself another promise; measured
//! with `benches/run`, that glue was most of what the edge paid over the JavaScript floor.

mod js;
mod runtime;
mod webcrypto;

use std::cell::{Cell, RefCell};

use shared::assertion::{ASSERTION_HEADER, HEADER_PREFIX};
use shared::rate_limit::{POLICY_HEADER, RATE_LIMIT_HEADER};
use shared::UnixTime;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};

use crate::isolate::{
    event_line, Added, Answer, Body, CachedCopy, Config, ConfigError, EdgeError, Expect,
    FetchError, Fetched, ForwardError, Head, Io, Isolate, KeyName, Level, Next, Reply, Side,
    WaitId,
};
use runtime::Env;
use webcrypto::WebCrypto;

/// The Durable Object binding in wrangler.toml.
const LIMITER_BINDING: &str = "RATE_LIMITER";

/// What the driver keeps of a request while the isolate has it suspended.
#[derive(Clone)]
pub(crate) struct Exchange {
    request: web_sys::Request,
    env: Env,
    ctx: JsValue,
}

/// The instance's state: the isolate and the JS handles.
struct Driver {
    isolate: Isolate<Exchange>,
    crypto: WebCrypto,
    settle: js::Settle,
    names: Names,
    /// The background waits still out, by id: their promises, settled (what `Io::Join`
    /// follows). A few at a time: a list (a map's code would weigh more in the bundle).
    joinable: Vec<(u32, js_sys::Promise)>,
}

/// The fixed header names as JS strings, made once per instance: a `&str` argument is
/// decoded from wasm memory on every call.
struct Names {
    identity_prefix: JsValue,
    assertion: JsValue,
    policy: JsValue,
    rate_limit: JsValue,
}

thread_local! {
    /// This instance's number (set at start).
    static EPOCH: Cell<u32> = const { Cell::new(0) };
    /// Made at the first request (the settings come with it); a bad setting is kept as its
    /// error, and every request answers 500 with it logged.
    static DRIVER: RefCell<Option<Result<Driver, ConfigError>>> = const { RefCell::new(None) };
}

fn set_epoch(epoch: u32) {
    EPOCH.with(|cell| cell.set(epoch));
}

/// `Date.now()`: one crossing. (Workers only advance it across I/O.)
fn now() -> UnixTime {
    // A JS timestamp: whole milliseconds, non-negative; the cast saturates anyway.
    UnixTime::from_millis(js_sys::Date::now() as u64)
}

/// A request: a `Response`, or the promise of one. `settle` is the entry's.
#[wasm_bindgen]
pub fn handle(
    request: web_sys::Request,
    env: Env,
    ctx: JsValue,
    settle: JsValue,
) -> Result<JsValue, JsValue> {
    DRIVER.with(|cell| {
        let mut cell = cell.borrow_mut();
        let driver = cell.get_or_insert_with(|| {
            Config::from_vars(&env).map(|config| Driver {
                isolate: Isolate::new(config, EPOCH.with(Cell::get)),
                crypto: WebCrypto::default(),
                settle: settle.unchecked_into(),
                names: Names::new(),
                joinable: Vec::new(),
            })
        });
        let driver = match driver {
            Ok(driver) => driver,
            Err(err) => {
                let reason = err.to_string();
                log(Level::Error, &event_line("edge_misconfigured", &reason));
                return respond(
                    &Names::new(),
                    &Reply::of(&EdgeError::Internal(reason), false),
                );
            }
        };
        let with_colo = driver.isolate.config().objects_per_location();
        let head = read_head(&js::head(&request, with_colo));
        let exchange = Exchange { request, env, ctx };
        let next = driver.isolate.arrive(head, exchange, now());
        driver.run(next, None)
    })
}

/// A wait ended: `ok` and the promise's value, or (not `ok`) the rejection as text.
#[wasm_bindgen]
pub fn resume(id: u32, ok: bool, value: JsValue) -> Result<JsValue, JsValue> {
    DRIVER.with(|cell| {
        let mut cell = cell.borrow_mut();
        let id = WaitId(id);
        let Some(Ok(driver)) = cell.as_mut() else {
            return passed_on_or_lost(ok, value);
        };
        if let Some(at) = driver.joinable.iter().position(|(out, _)| *out == id.0) {
            let _settled = driver.joinable.swap_remove(at);
        }
        let Some(expect) = driver.isolate.expects(id) else {
            return passed_on_or_lost(ok, value);
        };
        let answer = driver.read(id, expect, ok, &value);
        match driver.isolate.resume(id, answer, now()) {
            Some(next) => driver.run(next, Some(&value)),
            None => lost(),
        }
    })
}

/// The Durable Object's answer to the edge's query (`js/rate-limiter.js`): `[answer JSON,
/// state to store, lease book to keep]`, or nothing for a malformed query.
#[wasm_bindgen(js_name = rateLimiterAnswer)]
pub fn rate_limiter_answer(
    url: &str,
    stored: Option<String>,
    book: Option<String>,
) -> Option<js_sys::Array> {
    let (answer, state, book) =
        crate::isolate::object_answer(url, stored.as_deref(), book.as_deref(), now())?;
    Some(js_sys::Array::of3(
        &answer.into(),
        &state.into(),
        &book.into(),
    ))
}

/// The storage keys of a DPoP replay call's proofs, one space between two
/// (`js/rate-limiter.js`), or nothing for a malformed query.
#[wasm_bindgen(js_name = replayEntries)]
pub fn replay_entries(url: &str) -> Option<String> {
    crate::isolate::replay_entries(url)
}

/// The answer for a wait this instance does not have. The origin's answer to a request an
/// instance forwarded before it trapped still goes to its client (only its log line is
/// lost: the origin may have acted on it, and a 500 could make the client repeat it).
fn passed_on_or_lost(ok: bool, value: JsValue) -> Result<JsValue, JsValue> {
    if ok && value.is_instance_of::<web_sys::Response>() {
        return Ok(value);
    }
    lost()
}

/// The answer for a wait the isolate no longer has (evicted, or of a trapped instance).
fn lost() -> Result<JsValue, JsValue> {
    let error = EdgeError::Internal("an answer came for a wait that is gone".into());
    respond(&Names::new(), &Reply::of(&error, false))
}

impl Names {
    fn new() -> Self {
        Self {
            identity_prefix: JsValue::from_str(HEADER_PREFIX),
            assertion: JsValue::from_str(ASSERTION_HEADER),
            policy: JsValue::from_str(POLICY_HEADER),
            rate_limit: JsValue::from_str(RATE_LIMIT_HEADER),
        }
    }
}

impl Driver {
    /// Reads the settled `value` of wait `id` as the answer it expects.
    fn read(&mut self, id: WaitId, expect: Expect, ok: bool, value: &JsValue) -> Answer {
        let reason = || value.as_string().unwrap_or_default();
        match expect {
            Expect::Fetched if ok => {
                let fetched: &js::Fetched = value.unchecked_ref();
                Answer::Fetched(Ok(Fetched {
                    status: fetched.status(),
                    text: fetched.text(),
                    cache_control: fetched.cache_control(),
                    etag: fetched.etag(),
                }))
            }
            Expect::Fetched => Answer::Fetched(Err(FetchError::NoAnswer(reason()))),
            Expect::Copy if ok && !value.is_null() => {
                let copy: &js::CachedCopy = value.unchecked_ref();
                Answer::Copy(Some(CachedCopy {
                    text: copy.text(),
                    fetched_at: copy.fetched_at(),
                    cache_control: copy.cache_control(),
                    etag: copy.etag(),
                    mac: copy.mac(),
                }))
            }
            Expect::Copy => {
                if !ok {
                    log(Level::Warn, &event_line("jwks_cache_get_failed", &reason()));
                }
                Answer::Copy(None)
            }
            Expect::Timer => Answer::Timer,
            Expect::Joined => Answer::Joined,
            Expect::Imported if ok => {
                if let Some((Io::Import { key, .. }, _)) = self.isolate.io(id) {
                    self.crypto.keep(key, value.clone().unchecked_into());
                }
                Answer::Imported(Ok(()))
            }
            Expect::Imported => Answer::Imported(Err(reason())),
            Expect::Verified if ok => Answer::Verified(Ok(value.as_bool().unwrap_or(false))),
            Expect::Verified => Answer::Verified(Err(reason())),
            Expect::Limit if ok => Answer::Limit(Ok(reason())),
            Expect::Limit => Answer::Limit(Err(reason())),
            Expect::Origin if ok => Answer::Origin(Ok(js::status(value))),
            Expect::Origin => Answer::Origin(Err(ForwardError::Unreachable(reason()))),
        }
    }

    /// Performs `next` and the side effects before it; `settled` is the value the event
    /// began with (the origin's response, passed on).
    fn run(&mut self, next: Next<Exchange>, settled: Option<&JsValue>) -> Result<JsValue, JsValue> {
        let side = self.isolate.take_side();
        if !side.is_empty() {
            // The context of the exchange the event ends on keeps the copy's store alive.
            let ctx = match &next {
                Next::Wait(id) => self
                    .isolate
                    .io(*id)
                    .map(|(_, exchange)| exchange.ctx.clone()),
                Next::Reply(_, exchange) | Next::PassOn(_, exchange) | Next::Idle(exchange) => {
                    Some(exchange.ctx.clone())
                }
            };
            for effect in side {
                self.side(effect, ctx.as_ref());
            }
        }
        match next {
            Next::Reply(reply, _) => respond(&self.names, &reply),
            Next::PassOn(added, _) => {
                let response = settled.cloned().unwrap_or(JsValue::UNDEFINED);
                Ok(match added {
                    Added {
                        rate_limit: None,
                        dpop_nonce: None,
                    } => response,
                    Added {
                        rate_limit,
                        dpop_nonce,
                    } => {
                        let limited = rate_limit.as_ref();
                        js::with_headers(
                            &response,
                            &self.names.policy,
                            limited.map(|headers| headers.policy.as_str()),
                            &self.names.rate_limit,
                            limited.map(|headers| headers.rate_limit.as_str()),
                            dpop_nonce.as_deref(),
                        )
                    }
                })
            }
            Next::Idle(_) => Ok(JsValue::UNDEFINED),
            Next::Wait(id) => match self.start(id) {
                Some(Ok(promise)) => Ok(self.settle.settle(&promise, id.0)),
                // Failed at once (the outbound request could not be built...): the wait
                // ends here.
                Some(Err(answer)) => match self.isolate.resume(id, answer, now()) {
                    Some(next) => self.run(next, None),
                    None => lost(),
                },
                None => lost(),
            },
        }
    }

    /// Starts the I/O of wait `id`: its promise, or the answer when it failed at once
    /// (`None`: no such wait).
    fn start(&mut self, id: WaitId) -> Option<Result<js_sys::Promise, Answer>> {
        let Self {
            isolate,
            crypto,
            names,
            joinable,
            ..
        } = self;
        let (io, exchange) = isolate.io(id)?;
        // Whole milliseconds well below 2^53: exact as JS numbers.
        Some(Ok(match io {
            Io::Fetch { get, timeout_ms } => js::fetch_text(
                &get.url,
                get.accept,
                get.etag.as_deref(),
                get.authorization.as_deref(),
                timeout_ms as f64,
            ),
            Io::ReadCopy { key } => js::cache_get(key),
            Io::Sleep { ms } => js::sleep(ms as f64),
            Io::Join { call, timeout_ms } => {
                match joinable.iter().find(|(out, _)| *out == call.0) {
                    Some((_, promise)) => js::join(promise, timeout_ms as f64),
                    // Over already: the isolate looks again.
                    None => return Some(Err(Answer::Joined)),
                }
            }
            Io::Import { point, .. } => js::import_key(&point),
            Io::Verify {
                key: name,
                signature,
                message,
            } => {
                let Some(key) = crypto.key(name).cloned() else {
                    // By hand, not `{name:?}`: a Debug impl in the bundle for one message.
                    let reason = match name {
                        KeyName::Issuer(kid) => format!("no WebCrypto key for kid {kid}"),
                        KeyName::Proof(jkt) => format!("no WebCrypto key for DPoP key {jkt}"),
                    };
                    return Some(Err(Answer::Verified(Err(reason))));
                };
                let (subtle, algorithm) = match crypto.subtle() {
                    Ok(found) => found,
                    Err(err) => {
                        let reason = format!("webcrypto unavailable: {}", js::describe(&err));
                        return Some(Err(Answer::Verified(Err(reason))));
                    }
                };
                js::verify(subtle, algorithm, &key, signature, message)
            }
            Io::AskLimiter {
                name,
                url,
                timeout_ms,
            } => js::ask_object(&exchange.env, LIMITER_BINDING, name, url, timeout_ms as f64),
            Io::Forward { target, assertion } => {
                let forwarded = js::forward(
                    &exchange.request,
                    target,
                    &names.identity_prefix,
                    &names.assertion,
                    assertion,
                );
                match forwarded {
                    Ok(promise) => promise,
                    Err(err) => {
                        let detail = js::describe(&err);
                        return Some(Err(Answer::Origin(Err(ForwardError::Build(detail)))));
                    }
                }
            }
        }))
    }

    /// Performs one side effect; `ctx` keeps the copy's store alive past the response.
    fn side(&mut self, effect: Side, ctx: Option<&JsValue>) {
        match effect {
            Side::Log { level, line } => log(level, &line),
            Side::Background { id } => {
                // A background job's I/O never fails at once (fetches and cache reads).
                if let Some(Ok(promise)) = self.start(id) {
                    let promise = self.settle.settle(&promise, id.0);
                    // Its own exchange's context keeps it alive.
                    if let Some((_, exchange)) = self.isolate.io(id) {
                        js::keep(&exchange.ctx, &promise);
                    }
                    // An id comes round again: an entry left by a call that never settled
                    // must not stand for this one.
                    self.joinable.retain(|(out, _)| *out != id.0);
                    self.joinable.push((id.0, promise.unchecked_into()));
                }
            }
            Side::ForgetProofKey { jkt } => self.crypto.forget_proof_key(&jkt),
            Side::StoreCopy(copy) => {
                if let Some(ctx) = ctx {
                    js::cache_put(
                        ctx,
                        &copy.key,
                        &copy.text,
                        copy.keep_secs as f64,
                        copy.fetched_at_ms as f64,
                        copy.cache_control.as_deref(),
                        copy.etag.as_deref(),
                        &copy.mac,
                    );
                }
            }
        }
    }
}

/// The request's head from `js::head`'s lines.
fn read_head(text: &str) -> Head {
    let mut lines = text.splitn(7, '\n');
    let mut next = || lines.next().map(str::to_owned);
    let method = next().unwrap_or_default();
    let url = next().unwrap_or_default();
    let client_ip = next().filter(|ip| !ip.is_empty());
    let colo = next().filter(|colo| !colo.is_empty());
    let body = match next().as_deref() {
        None | Some("") => Body::None,
        Some(length) => length.parse().map_or(Body::Unknown, Body::Declared),
    };
    let dpop = next().filter(|proof| !proof.is_empty());
    Head {
        method,
        url,
        client_ip,
        colo,
        body,
        dpop,
        authorization: next(),
    }
}

fn respond(names: &Names, reply: &Reply) -> Result<JsValue, JsValue> {
    let limited = reply.rate_limit.as_ref();
    Ok(js::respond(
        reply.status,
        &reply.body,
        reply.challenge.as_deref(),
        reply.retry_after.as_deref(),
        &names.policy,
        limited.map(|headers| headers.policy.as_str()),
        &names.rate_limit,
        limited.map(|headers| headers.rate_limit.as_str()),
        reply.dpop_nonce.as_deref(),
    )?
    .into())
}

fn log(level: Level, line: &str) {
    let line = JsValue::from_str(line);
    match level {
        Level::Log => web_sys::console::log_1(&line),
        Level::Warn => web_sys::console::warn_1(&line),
        Level::Error => web_sys::console::error_1(&line),
    }
}
