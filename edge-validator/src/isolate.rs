//! The edge's logic as a state machine with no I/O, no clock and no JS: one [`Isolate`] value
//! holds everything a Workers isolate keeps between requests (key set, verified-token cache,
//! revocation list, rate-limit counts, running jobs, suspended requests). The driver
//! (`crate::driver`, wasm only) hands it each event with the time, a request arriving
//! ([`Isolate::arrive`]) or a wait ending ([`Isolate::resume`]), and performs what it returns:
//! a [`Next`] for the event (answer now, wait for an [`Io`], pass the origin's answer on) and
//! the [`Side`] effects beside it (log lines, background fetches, the Cache API copy).
//!
//! A request's path: its path in normal spelling (`shared::path`) -> its route
//! (`shared::route`: deny, public, or a token's requirements; `config::ROUTES`) -> bearer or
//! DPoP token -> revocation list in sync -> token cache -> failed-auth budget -> key set ->
//! `shared` checks -> signature (WebCrypto, a wait) -> revocation -> the route's audience and
//! scopes -> for a DPoP-bound token, its proof (`shared::dpop`, the proof key's import and
//! WebCrypto verdict, its replay object: waits) -> rate limit (a Durable Object, a wait) -> the
//! route's origin with a signed identity (a wait); or the edge's own answer (400 for a path
//! with no one reading, 404, 411 and 413 for a route's body limit, RFC 6750's and RFC 9449's
//! 401 and 403, 429, 503). The origin is never contacted
//! for a refused request.
//! After a preparation wait (the first revocation pull and the key set of a new isolate, a
//! refetch for an unknown `kid`, a key import) the request starts over from [`Isolate::serve`]
//! with the wait marked, so it never waits twice for the same thing.
//!
//! Natively this runs in `cargo test -p edge-validator` with an injected clock (`tests/`).

pub mod config;
pub mod io;
mod keys;
mod leases;
mod limits;
mod local_table;
mod log;
mod proofs;
mod reply;
mod revocations;
pub mod url;
mod waits;

use std::sync::Arc;

use shared::dpop::{self, PendingProof, ProofRequest};
use shared::path::{NormalPath, PathError};
use shared::route::{Access, Policy};
use shared::{bearer, credentials, HttpUri, Jkt, ProofError, Rejection, Scheme, TokenKey};
use shared::{UnixTime, VerifiedToken};

pub use config::{Config, ConfigError, RateLimitMode, RateLimitScope, Vars};
pub use io::{
    Answer, CachedCopy, CopyToStore, Expect, FetchError, Fetched, ForwardError, Get, Io, KeyName,
    Level, Side,
};
pub use leases::object_answer;
pub use log::event_line;
pub use proofs::replay_entries;
pub use reply::{Added, EdgeError, RateLimitHeaders, Reply};
pub use waits::{WaitId, EPOCH_BITS};

use keys::{freshness_name, KeyEvent, KeySet, Keys, Refresh, RefreshStep};
use leases::{Answered, Ask, Leases, Take};
use limits::{Check, Limiter, Source, Subject};
use local_table::LocalTable;
use log::{Event, LeaseEvent, RequestLog, Sampler};
use proofs::{ReplayLines, Turn, Verdict};
use revocations::{Pull, PullStep, Revocations, Sync};
use url::RequestUrl;
use waits::Waits;

/// The Worker's own health endpoint (never forwarded).
pub const HEALTH_PATH: &str = "/.edge/health";

/// How often a request waiting for another's job looks again, in ms.
const POLL_MS: u64 = 5;
/// The longest a request waiting for another's lease ask sleeps between looks, in ms.
const LEASE_POLL_MAX_MS: u64 = 40;
/// Most DPoP proof keys an isolate keeps imported: every client brings its own, so the
/// table is bounded, least recently used first out (the driver drops their WebCrypto keys).
const PROOF_KEYS: usize = 1024;

/// What the runtime tells of an arriving request: all the core reads of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head {
    pub method: String,
    /// The absolute URL, as the runtime serialized it.
    pub url: String,
    /// The `Authorization` header (several are joined with `, `, which the bearer parser
    /// refuses).
    pub authorization: Option<String>,
    /// The `DPoP` header (several are joined with `, `, which no proof survives).
    pub dpop: Option<String>,
    /// `CF-Connecting-IP`.
    pub client_ip: Option<String>,
    /// `request.cf.colo`: read only when rate-limit objects are per location (where they
    /// live).
    pub colo: Option<String>,
    /// What the request says of its body (checked against a route's `max_body`).
    pub body: Body,
}

/// A request's body, as its headers tell it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Body {
    /// No body.
    #[default]
    None,
    /// `Content-Length`: HTTP framing holds the body to it.
    Declared(u64),
    /// A body without a usable `Content-Length` (chunked): its length is known only at its end.
    Unknown,
}

/// What the driver does to end an event. `T` is the driver's exchange (the request and its
/// context), given back when the request is done with.
#[derive(Debug)]
pub enum Next<T> {
    /// Answer with the edge's own response.
    Reply(Reply, T),
    /// Start [`Isolate::io`] of this wait; the event's answer is its promise.
    Wait(WaitId),
    /// Answer with the origin's response, with these headers set.
    PassOn(Added, T),
    /// Nothing to answer (a background job's step is over).
    Idle(T),
}

/// Everything an isolate keeps between requests.
pub struct Isolate<T> {
    config: Config,
    keys: KeySet,
    revocations: Revocations,
    limiter: Limiter,
    /// `lease` mode's leases.
    leases: Leases,
    /// The DPoP proof keys the driver holds imported, by thumbprint.
    proof_keys: LocalTable<()>,
    /// The requests waiting for each replay object, and whether a call to it is out.
    replays: ReplayLines,
    /// Until when each kind of job counts as running (0: not running).
    keys_busy_until: UnixTime,
    revocations_busy_until: UnixTime,
    /// Suspended requests.
    waits: Waits<Waiting<T>>,
    /// Running jobs (a table of their own: see `waits`).
    jobs: Waits<Waiting<T>>,
    /// The time of the event being handled (a request's own time can be earlier).
    event_now: UnixTime,
    sampler: Sampler,
    side: Vec<Side>,
}

/// An entry of the one table of waits.
enum Waiting<T> {
    /// A request, and what it waits for.
    Request { exchange: T, on: Suspended },
    /// A job between two steps (its `exchange` keeps its I/O alive: `waitUntil`).
    Job { exchange: T, job: Job },
    /// A lease renewal in the background (kept alive by the exchange that started it).
    Renewal {
        exchange: T,
        asking: Box<LeaseAsking>,
    },
    /// One call to a replay object for the requests `members` (kept alive by the exchange of
    /// the member whose event sent it): each finds its verdict when it wakes.
    Replays {
        exchange: T,
        name: String,
        url: String,
        members: Vec<WaitId>,
    },
}

/// What a suspended request waits for.
enum Suspended {
    /// A job (its own, or another request's, which it polls for until `deadline`); it
    /// starts over afterwards.
    Job {
        arrived: Box<Arrived>,
        kind: Kind,
        deadline: UnixTime,
    },
    /// A WebCrypto key import: a key of the set, or a DPoP proof's key (`proof`).
    Import {
        arrived: Box<Arrived>,
        kid: String,
        point: [u8; 65],
        proof: bool,
    },
    /// WebCrypto's verdict on a fresh token.
    Verify(Box<Verifying>),
    /// WebCrypto's verdict on a DPoP proof.
    Proof(Box<Proving>),
    /// Its replay object's verdict, brought by a call it shares with the proofs that verified
    /// meanwhile (`proofs::ReplayLines`), followed from its own event (`Io::Join`).
    Replay(Box<Replaying>),
    /// Its Durable Object's decision.
    Limit(Box<Asking>),
    /// Another request's lease ask for the same key (polled for on a timer).
    Lease(Box<LeaseWaiting>),
    /// The origin's answer.
    Origin(Box<Forwarded>),
}

/// A request as it arrived, with what it has already waited for.
struct Arrived {
    head: Head,
    /// `head.url`'s path and query, split once.
    url: RequestUrl,
    /// The path in its normal spelling: what the edge decides on and forwards.
    path: NormalPath,
    /// The route that took it (its place in the table), or `None`: the unmatched policy.
    route: Option<usize>,
    started: UnixTime,
    waited: Waited,
    /// When it began waiting for keys (a key-set job or an import), for the log's `jwks_ms`.
    keys_since: Option<UnixTime>,
    /// How its token was presented, as `serve` read it (on each pass) from `Authorization`.
    scheme: Scheme,
    /// The edge's DPoP nonce for the origin's answer to carry (nonces on, a DPoP request):
    /// it replaces any the origin sent, which the client would otherwise keep for the edge.
    dpop_nonce: Option<String>,
}

/// The preparation waits a request has had (each at most once).
#[derive(Debug, Clone, Copy, Default)]
struct Waited {
    revocations: bool,
    /// The Cache API copy of the key set (a new isolate).
    copy: bool,
    /// A key-set refresh (its own, or one another request ran).
    refresh: bool,
    /// The refetch its unknown `kid` started: one per request, whatever the issuer said.
    unknown_kid: bool,
    /// A WebCrypto key import.
    import: bool,
    /// A WebCrypto import of its DPoP proof's key.
    proof_import: bool,
}

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Refreshes the key set; `load_copy` starts from the Cache API copy (a new isolate).
    Keys { load_copy: bool },
    /// Pulls the revocation feed.
    Revocations,
}

/// A running job and the I/O it waits for.
struct Job {
    work: Work,
    kind: Kind,
    waiting_for: JobIo,
    /// The request to resume when it is over (none: a background job).
    then: Option<WaitId>,
}

enum Work {
    Keys(Refresh),
    Revocations(Pull),
}

enum JobIo {
    Fetch(Get),
    ReadCopy(String),
}

/// A fresh token waiting for WebCrypto.
struct Verifying {
    arrived: Arrived,
    key: TokenKey,
    client_ip: String,
    signature: shared::PendingSignature,
    raw_signature: [u8; 64],
    /// The signing input's length: the token's first bytes.
    message_len: usize,
    log: RequestLog,
    started: UnixTime,
}

/// A bound token's request whose proof passed every check but its signature.
struct Proving {
    arrived: Arrived,
    verified: Arc<VerifiedToken>,
    proof: PendingProof,
    /// The proof key's thumbprint: the name the driver keeps it imported under.
    jkt: String,
    raw_signature: [u8; 64],
    /// The proof's signing input's length: the `DPoP` header's first bytes.
    message_len: usize,
    log: RequestLog,
    started: UnixTime,
}

/// A request whose proof verified, waiting for the replay object.
struct Replaying {
    arrived: Arrived,
    verified: Arc<VerifiedToken>,
    /// Its replay object, and its part of the call (`proofs::replay_pair`).
    name: String,
    pair: String,
    /// The object's verdict, set when its call answers.
    verdict: Option<Verdict>,
    /// The call it went in, once it has.
    call: Option<WaitId>,
    /// The wait it follows: its call, or the last one out before it; and until when.
    follows: WaitId,
    follows_until: UnixTime,
    /// When it joined the line: it waits until twice the fetch timeout after, no longer.
    since: UnixTime,
    log: RequestLog,
    started: UnixTime,
}

/// A request waiting for its Durable Object.
struct Asking {
    log: RequestLog,
    pending: Pending,
    then: Then,
    /// The request's time (as on the general path, every decision uses it).
    now: UnixTime,
    /// When the object was asked, for the log's `limit_ms`.
    asked_at: UnixTime,
}

/// What a request asked its Durable Object.
enum Pending {
    /// A decision for this request (`durable` mode), from the object `name` by `url`.
    Decision {
        check: Check,
        name: String,
        url: String,
    },
    /// A lease (`lease` mode), and what the request is limited by.
    Lease { ask: LeaseAsking, limited: Limited },
}

/// A lease ask on its way: the object it goes to and what it says.
struct LeaseAsking {
    ask: Ask,
    name: String,
    url: String,
}

/// What a request is limited by: its key, the plan, the policy name.
#[derive(Clone)]
struct Limited {
    key: String,
    plan: shared::RatePlan,
    policy: &'static str,
    /// The request's Cloudflare location (for its object, when limits are per location).
    colo: Option<String>,
}

impl Limited {
    /// What `arrived` is limited by: `subject` under `plan` (its location taken along).
    fn of(subject: Subject<'_>, plan: shared::RatePlan, arrived: &mut Arrived) -> Self {
        Self {
            key: subject.key(),
            plan,
            policy: subject.policy(),
            colo: arrived.head.colo.take(),
        }
    }
}

/// A request waiting for another's lease ask.
struct LeaseWaiting {
    log: RequestLog,
    limited: Limited,
    then: Then,
    polled: Polled,
}

/// How long a request has polled for a lease ask, and how often.
#[derive(Debug, Clone, Copy)]
struct Polled {
    /// When it began waiting.
    since: UnixTime,
    /// Timers so far: each waits twice the last, from `POLL_MS` to `LEASE_POLL_MAX_MS`, so a
    /// slow object (a far `global` one) costs a waiting request a few wake-ups, not hundreds.
    times: u32,
}

impl Polled {
    fn sleep_ms(self) -> u64 {
        POLL_MS
            .saturating_mul(1 << self.times.min(8))
            .min(LEASE_POLL_MAX_MS)
    }
}

/// A request waiting for the origin.
struct Forwarded {
    log: RequestLog,
    started: UnixTime,
    headers: Added,
    target: String,
    /// `None` for a public route.
    assertion: Option<String>,
}

/// What a request does once the rate limit allows it.
// It lives in a boxed `Asking` or briefly on the stack: boxing `Forward` would cost every
// forwarded request an allocation for nothing.
#[allow(clippy::large_enum_variant)]
enum Then {
    /// To the origin: a verified token's request, or a public route's (`None`).
    Forward {
        arrived: Arrived,
        verified: Option<Arc<VerifiedToken>>,
    },
    /// A refused token whose failed authentication was charged: its RFC 6750 answer.
    Refuse(Rejection),
}

impl<T: Clone> Isolate<T> {
    /// A new isolate's state; `epoch` numbers the wasm instance (see [`WaitId`]).
    pub fn new(config: Config, epoch: u32) -> Self {
        Self {
            keys: KeySet::new(&config),
            leases: Leases::new(config.lease_policy, config.fetch_timeout_ms),
            proof_keys: LocalTable::new(PROOF_KEYS),
            // A call settles within the fetch timeout (the driver gives it up then), unless
            // the runtime dropped the request that carried it.
            replays: ReplayLines::new(config.fetch_timeout_ms),
            config,
            revocations: Revocations::default(),
            limiter: Limiter::new(),
            keys_busy_until: UnixTime::from_millis(0),
            revocations_busy_until: UnixTime::from_millis(0),
            waits: Waits::new(epoch, false),
            jobs: Waits::new(epoch, true),
            event_now: UnixTime::from_millis(0),
            sampler: Sampler::default(),
            side: Vec::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A request arrived at `now`; `exchange` is what the driver needs to perform its I/O.
    pub fn arrive(&mut self, head: Head, exchange: T, now: UnixTime) -> Next<T> {
        self.event_now = now;
        let url = RequestUrl::parse(&head.url);
        let path = match NormalPath::parse(url.path()) {
            Ok(path) => path,
            Err(error) => return self.refuse_path(&head.method, &url, error, exchange, now),
        };
        let route = self
            .config
            .routes
            .position(url::authority(&head.url), &head.method, &path);
        let arrived = Arrived {
            url,
            path,
            route,
            head,
            started: now,
            waited: Waited::default(),
            keys_since: None,
            scheme: Scheme::Bearer,
            dpop_nonce: None,
        };
        self.serve(arrived, exchange, now)
    }

    /// A path the edge will not decide on (an ambiguous or malformed spelling): 400, before
    /// any token is read. Apart from `arrive` so the common path stays small.
    #[cold]
    fn refuse_path(
        &mut self,
        method: &str,
        url: &RequestUrl,
        error: PathError,
        exchange: T,
        now: UnixTime,
    ) -> Next<T> {
        let log = RequestLog::start(method.to_owned(), url.path(), now);
        self.reply(exchange, Some(log), &EdgeError::BadPath(error), now)
    }

    /// Which answer the wait `id` expects (`None`: no such wait, e.g. one of an instance
    /// that trapped, or one evicted from the table).
    pub fn expects(&self, id: WaitId) -> Option<Expect> {
        Some(match self.table(id).get(id)? {
            Waiting::Job { job, .. } => match job.waiting_for {
                JobIo::Fetch(_) => Expect::Fetched,
                JobIo::ReadCopy(_) => Expect::Copy,
            },
            Waiting::Renewal { .. } | Waiting::Replays { .. } => Expect::Limit,
            Waiting::Request { on, .. } => match on {
                Suspended::Job { .. } => Expect::Timer,
                Suspended::Import { .. } => Expect::Imported,
                Suspended::Verify(_) | Suspended::Proof(_) => Expect::Verified,
                Suspended::Limit(_) => Expect::Limit,
                Suspended::Replay(_) => Expect::Joined,
                Suspended::Lease(_) => Expect::Timer,
                Suspended::Origin(_) => Expect::Origin,
            },
        })
    }

    /// The table `id` belongs to.
    fn table(&self, id: WaitId) -> &Waits<Waiting<T>> {
        if self.jobs.owns(id) {
            &self.jobs
        } else {
            &self.waits
        }
    }

    /// The I/O the wait `id` is for, and the exchange it belongs to.
    pub fn io(&self, id: WaitId) -> Option<(Io<'_>, &T)> {
        Some(match self.table(id).get(id)? {
            Waiting::Job { exchange, job } => {
                let io = match &job.waiting_for {
                    JobIo::Fetch(get) => Io::Fetch {
                        get,
                        timeout_ms: self.config.fetch_timeout_ms,
                    },
                    JobIo::ReadCopy(key) => Io::ReadCopy { key },
                };
                (io, exchange)
            }
            Waiting::Renewal { exchange, asking } => {
                let io = Io::AskLimiter {
                    name: &asking.name,
                    url: &asking.url,
                    timeout_ms: self.config.fetch_timeout_ms,
                };
                (io, exchange)
            }
            Waiting::Replays {
                exchange,
                name,
                url,
                ..
            } => {
                let io = Io::AskLimiter {
                    name,
                    url,
                    timeout_ms: self.config.fetch_timeout_ms,
                };
                (io, exchange)
            }
            Waiting::Request { exchange, on } => {
                let io = match on {
                    Suspended::Job { .. } => Io::Sleep { ms: POLL_MS },
                    Suspended::Lease(waiting) => Io::Sleep {
                        ms: waiting.polled.sleep_ms(),
                    },
                    Suspended::Import {
                        kid, point, proof, ..
                    } => Io::Import {
                        key: if *proof {
                            KeyName::Proof(kid)
                        } else {
                            KeyName::Issuer(kid)
                        },
                        point: *point,
                    },
                    Suspended::Proof(proving) => Io::Verify {
                        key: KeyName::Proof(&proving.jkt),
                        signature: &proving.raw_signature,
                        message: proving
                            .arrived
                            .head
                            .dpop
                            .as_deref()
                            .and_then(|proof| dpop::proof_header(Some(proof)).ok())
                            .and_then(|proof| proof.as_bytes().get(..proving.message_len))
                            .unwrap_or_default(),
                    },
                    Suspended::Replay(replaying) => Io::Join {
                        call: replaying.follows,
                        timeout_ms: self
                            .replay_deadline(replaying)
                            .min(replaying.follows_until)
                            .millis_since(self.event_now)
                            .max(1),
                    },
                    Suspended::Verify(verifying) => {
                        let token = presented_token(&verifying.arrived.head);
                        Io::Verify {
                            key: KeyName::Issuer(verifying.signature.kid()),
                            signature: &verifying.raw_signature,
                            message: token
                                .as_bytes()
                                .get(..verifying.message_len)
                                .unwrap_or_default(),
                        }
                    }
                    Suspended::Limit(asking) => match &asking.pending {
                        Pending::Decision { name, url, .. }
                        | Pending::Lease {
                            ask: LeaseAsking { name, url, .. },
                            ..
                        } => Io::AskLimiter {
                            name,
                            url,
                            timeout_ms: self.config.fetch_timeout_ms,
                        },
                    },
                    Suspended::Origin(forwarded) => Io::Forward {
                        target: &forwarded.target,
                        assertion: forwarded.assertion.as_deref(),
                    },
                };
                (io, exchange)
            }
        })
    }

    /// The side effects of the last event (log lines, background fetches, the copy to store),
    /// in order. The driver takes them after each event.
    pub fn take_side(&mut self) -> Vec<Side> {
        std::mem::take(&mut self.side)
    }

    /// The wait `id` ended with `answer` at `now`. `None`: no such wait (an answer for an
    /// instance that trapped, or for an entry evicted from the table).
    pub fn resume(&mut self, id: WaitId, answer: Answer, now: UnixTime) -> Option<Next<T>> {
        self.event_now = now;
        // A request whose proof has no verdict yet, in time, waits again under the same id
        // (it is queued, or a member of a call, under it).
        if self.replay_waits_again(id, now) {
            return Some(Next::Wait(id));
        }
        // A poller whose job still runs waits again under the same id: re-parking it every
        // tick would churn the table.
        if let Some(Waiting::Request {
            on: Suspended::Job { kind, deadline, .. },
            ..
        }) = self.waits.get(id)
        {
            let (kind, deadline) = (*kind, *deadline);
            if self.busy(kind, now) && now < deadline {
                return Some(Next::Wait(id));
            }
        }
        let waiting = if self.jobs.owns(id) {
            self.jobs.take(id)
        } else {
            self.waits.take(id)
        };
        Some(match waiting? {
            Waiting::Job { exchange, job } => self.job_answered(exchange, job, answer, now),
            Waiting::Renewal { exchange, asking } => {
                if let Answer::Limit(answer) = answer {
                    self.lease_answered(&asking, answer, now);
                }
                Next::Idle(exchange)
            }
            Waiting::Replays {
                exchange,
                name,
                members,
                ..
            } => {
                let answer = match &answer {
                    Answer::Limit(answer) => answer.as_deref().map_err(String::as_str),
                    _ => Err("a call answered as something else"),
                };
                self.replays_answered(&name, id, &members, answer);
                Next::Idle(exchange)
            }
            Waiting::Request { exchange, on } => match (on, answer) {
                (
                    Suspended::Job {
                        arrived,
                        kind,
                        deadline,
                        ..
                    },
                    _,
                ) => {
                    if self.busy(kind, now) && now < deadline {
                        let on = Suspended::Job {
                            arrived,
                            kind,
                            deadline,
                        };
                        self.park_request(exchange, on)
                    } else {
                        self.serve(*arrived, exchange, now)
                    }
                }
                (
                    Suspended::Import {
                        arrived,
                        kid,
                        point,
                        proof,
                    },
                    Answer::Imported(result),
                ) => {
                    match result {
                        Ok(()) if proof => self.proof_key_imported(kid),
                        Ok(()) => self.keys.imported(kid, point),
                        Err(reason) => {
                            self.failed(Level::Error, "webcrypto_import_failed", &reason)
                        }
                    }
                    self.serve(*arrived, exchange, now)
                }
                (Suspended::Verify(verifying), Answer::Verified(verdict)) => {
                    self.verified(*verifying, exchange, verdict, now)
                }
                (Suspended::Proof(proving), Answer::Verified(verdict)) => {
                    self.proved(*proving, exchange, verdict, now)
                }
                (Suspended::Replay(replaying), Answer::Joined) => {
                    self.replays.leave(&replaying.name, id);
                    self.replay_answered(*replaying, exchange, now)
                }
                (Suspended::Limit(asking), Answer::Limit(answer)) => {
                    let Asking {
                        log,
                        pending,
                        then,
                        now: request_now,
                        asked_at,
                        ..
                    } = *asking;
                    let limit_ms = now.millis_since(asked_at);
                    match pending {
                        Pending::Decision { check, .. } => {
                            let answer = Some(answer);
                            self.concluded(
                                exchange,
                                log,
                                check,
                                answer,
                                limit_ms,
                                then,
                                request_now,
                            )
                        }
                        Pending::Lease { ask, limited } => {
                            let answered = self.lease_answered(&ask, answer, now);
                            let mut log = log;
                            log.limit_ms = Some(limit_ms);
                            self.leased(exchange, log, limited, answered, then, now)
                        }
                    }
                }
                (Suspended::Lease(waiting), Answer::Timer) => {
                    let LeaseWaiting {
                        mut log,
                        limited,
                        then,
                        polled,
                    } = *waiting;
                    log.limit_ms = Some(now.millis_since(polled.since));
                    if now.millis_since(polled.since) >= self.config.fetch_timeout_ms {
                        // Waited as long as an ask may take: the isolate's own count decides,
                        // as for an ask that failed.
                        let why = Answered::Failed("waited past the ask timeout".to_owned());
                        return Some(self.leased(exchange, log, limited, why, then, now));
                    }
                    let polled = Polled {
                        times: polled.times.saturating_add(1),
                        ..polled
                    };
                    self.lease(exchange, log, limited, then, polled, now)
                }
                (Suspended::Origin(forwarded), Answer::Origin(status)) => {
                    self.origin_answered(exchange, *forwarded, status, now)
                }
                (_, answer) => {
                    // The driver read the answer as `expects` said: not reached. (Only the
                    // kind is named: the answer may hold what a client sent.)
                    let reason = format!("a {:?} answer does not fit its wait", answer.kind());
                    self.reply(exchange, None, &EdgeError::Internal(reason), now)
                }
            },
        })
    }

    /// Decides `arrived` from the start: an answer now, or a wait.
    fn serve(&mut self, mut arrived: Arrived, exchange: T, now: UnixTime) -> Next<T> {
        let path = arrived.path.as_str();
        if path == HEALTH_PATH {
            return Next::Reply(self.health(now), exchange);
        }
        if self.config.test_trap_path.as_deref() == Some(path) {
            trap();
        }
        let mut log = RequestLog::start(arrived.head.method.clone(), path, arrived.started);
        log.route = self.config.route_id(arrived.route).cloned();
        let admitted = match self.config.policy(arrived.route) {
            Some(Policy {
                access: Access::Token(_),
                max_body,
                ..
            }) => Some((false, *max_body)),
            Some(Policy {
                access: Access::Public,
                max_body,
                ..
            }) => Some((true, *max_body)),
            // A route that says deny, no route and no unmatched policy, or a kind of access
            // this edge does not know: 404, as if nothing were there.
            Some(_) | None => None,
        };
        let Some((public, max_body)) = admitted else {
            return self.reply(exchange, Some(log), &EdgeError::NoRoute, now);
        };
        // Before any token work: an oversized body never leaves the edge.
        let too_large = match (max_body, arrived.head.body) {
            (Some(max), Body::Declared(length)) if length > max => {
                Some(EdgeError::BodyTooLarge { max })
            }
            (Some(_), Body::Unknown) => Some(EdgeError::LengthRequired),
            _ => None,
        };
        if let Some(error) = too_large {
            return self.reply(exchange, Some(log), &error, now);
        }
        if public {
            return self.public(arrived, exchange, log, now);
        }
        // A DPoP request, or one to a route that requires DPoP, is challenged as DPoP.
        let dpop_required = self
            .config
            .policy(arrived.route)
            .is_some_and(|policy| policy.dpop_required);
        let token = match credentials(arrived.head.authorization.as_deref()) {
            Ok((scheme, token)) => {
                log.dpop_challenge = dpop_required || scheme == Scheme::Dpop;
                arrived.scheme = scheme;
                token
            }
            // No token, or a malformed header: the challenge, at no cost to the IP's budget
            // (as `DPoP` when the header named that scheme, whatever followed it).
            Err(rejection) => {
                let scheme = arrived
                    .head
                    .authorization
                    .as_deref()
                    .and_then(bearer::scheme);
                log.dpop_challenge = dpop_required || scheme == Some(Scheme::Dpop);
                return self.reply(exchange, Some(log), &rejection.into(), now);
            }
        };
        let key = TokenKey::of(token);
        let lookup = match self.keys.tokens.get_key(&key, now) {
            Some(verified) => Lookup::Hit(verified),
            // Only a token that needs checking can cost its IP failed-auth budget, and one
            // over it is refused before anything waits.
            None => {
                let ip = client_network(&arrived.head);
                let plan = self.config.failed_auth_plan;
                let failed_auth = Subject::FailedAuth(&ip);
                if let Some(denied) = self.limiter.locally_denied(failed_auth, &plan, now) {
                    return self.denied(exchange, log, denied, plan, failed_auth, now);
                }
                Lookup::Miss { ip }
            }
        };
        // The revocation list, current before any token is trusted (a hit is checked
        // against it on the verified path; a wait starts `serve` over).
        match self.revocations.sync(&self.config, now) {
            Sync::Current => {}
            Sync::PullBehind => self.background(Kind::Revocations, &exchange, now),
            Sync::Wait if !arrived.waited.revocations => {
                arrived.waited.revocations = true;
                return self.wait_for(Kind::Revocations, arrived, exchange, now);
            }
            Sync::Wait => {}
        }
        // The key set, for a cached token too: it is only as good as the set it was verified
        // with, so past max-stale it waits for a refresh as a new one does (and is 503
        // without one), and a cache hit keeps a stale set refreshing.
        let waited = arrived.waited;
        let jwks = match self.keys.decide(now, waited.copy, waited.refresh) {
            Keys::Ready(jwks) => jwks,
            Keys::RefreshBehind(jwks) => {
                self.background(Kind::Keys { load_copy: false }, &exchange, now);
                jwks
            }
            Keys::Wait { load_copy } => {
                arrived.waited.copy |= load_copy;
                arrived.waited.refresh = true;
                return self.wait_for(Kind::Keys { load_copy }, arrived, exchange, now);
            }
            Keys::Unavailable => return self.reply(exchange, Some(log), &EdgeError::NoKeys, now),
        };
        match lookup {
            Lookup::Hit(verified) => {
                log.cache_hit = true;
                self.verified_path(arrived, exchange, verified, key, log, now)
            }
            Lookup::Miss { ip } => self.fresh(arrived, exchange, &jwks, key, ip, log, now),
        }
    }

    /// A token the cache does not hold: every check but the signature, then a wait for
    /// WebCrypto (or first a refetch for an unknown `kid`, a key import).
    #[allow(clippy::too_many_arguments)] // the request's parts, as `serve` took them apart
    fn fresh(
        &mut self,
        arrived: Arrived,
        exchange: T,
        jwks: &shared::Jwks,
        key: TokenKey,
        ip: String,
        log: RequestLog,
        now: UnixTime,
    ) -> Next<T> {
        let token = presented_token(&arrived.head);
        let audience = self
            .config
            .policy(arrived.route)
            .and_then(|policy| policy.audience.as_deref());
        let check = match self.config.validator_for(audience).check(token, jwks, now) {
            Ok(check) => check,
            // A revoked key has left the set: its tokens are revoked, not unknown, and must
            // not spend the unknown-kid refetch that a rotation's new key needs.
            Err(Rejection::UnknownKeyId) if self.kid_revoked(token) => {
                return self.reject(arrived, exchange, &ip, Rejection::Revoked, log, now);
            }
            // A kid the set does not have: refetch once if the cooldown allows (a
            // rotation's new key), else it is refused like any bad token.
            Err(Rejection::UnknownKeyId)
                if !arrived.waited.unknown_kid
                    && self.keys.unknown_kid(arrived.waited.refresh, now) =>
            {
                let mut arrived = arrived;
                arrived.waited.refresh = true;
                arrived.waited.unknown_kid = true;
                let kind = Kind::Keys { load_copy: false };
                return self.wait_for(kind, arrived, exchange, now);
            }
            Err(rejection) => return self.reject(arrived, exchange, &ip, rejection, log, now),
        };
        #[cfg(feature = "p256-verify")]
        {
            // The measurement build: the signature in wasm, no wait.
            let mut log = log;
            log.jwks_ms = Some(now.millis_since(arrived.keys_since.unwrap_or(now)));
            return match check.verify_with(&shared::P256Verifier) {
                Ok(verified) => {
                    let verified = self.keys.keep(key, verified, now);
                    self.verified_path(arrived, exchange, verified, key, log, now)
                }
                Err(rejection) => self.reject(arrived, exchange, &ip, rejection, log, now),
            };
        }
        #[cfg_attr(feature = "p256-verify", allow(unreachable_code))]
        if !self.keys.is_imported(check.key()) {
            if arrived.waited.import {
                // The import failed (logged): the token cannot be verified now.
                let rejection = Rejection::VerifierUnavailable;
                return self.reject(arrived, exchange, &ip, rejection, log, now);
            }
            let (kid, point) = (
                check.key().kid().to_owned(),
                check.key().uncompressed_point(),
            );
            let mut arrived = arrived;
            arrived.waited.import = true;
            arrived.keys_since.get_or_insert(now);
            return self.park_request(
                exchange,
                Suspended::Import {
                    arrived: Box::new(arrived),
                    kid,
                    point,
                    proof: false,
                },
            );
        }
        let raw_signature = *check.signature();
        let message_len = check.signing_input().len();
        let verifying = Verifying {
            key,
            client_ip: ip,
            signature: check.into_pending(),
            raw_signature,
            message_len,
            log,
            started: now,
            arrived,
        };
        self.park_request(exchange, Suspended::Verify(Box::new(verifying)))
    }

    /// WebCrypto's verdict on a fresh token.
    fn verified(
        &mut self,
        verifying: Verifying,
        exchange: T,
        verdict: Result<bool, String>,
        now: UnixTime,
    ) -> Next<T> {
        let Verifying {
            arrived,
            key,
            client_ip,
            signature,
            mut log,
            started,
            ..
        } = verifying;
        log.jwks_ms = Some(now.millis_since(arrived.keys_since.unwrap_or(started)));
        let outcome = match verdict {
            Ok(valid) => signature.conclude(valid),
            Err(reason) => {
                self.failed(Level::Error, "webcrypto_verify_failed", &reason);
                Err(Rejection::VerifierUnavailable)
            }
        };
        // The rest of the path keeps the request's own time, as it did before the wait.
        match outcome {
            Ok(verified) => {
                let verified = self.keys.keep(key, verified, started);
                self.verified_path(arrived, exchange, verified, key, log, started)
            }
            Err(rejection) => self.reject(arrived, exchange, &client_ip, rejection, log, started),
        }
    }

    /// A DPoP-bound token's request: its proof checked against the request, the token (hashed
    /// as `token`) and the key `jkt` (a refusal is charged like a bad token's), then a wait
    /// for WebCrypto (first an import of the proof's key, if the isolate does not hold it).
    #[allow(clippy::too_many_arguments)] // the request's parts, as `verified_path` has them
    fn prove(
        &mut self,
        arrived: Arrived,
        exchange: T,
        verified: Arc<VerifiedToken>,
        token: &TokenKey,
        jkt: &Jkt,
        log: RequestLog,
        now: UnixTime,
    ) -> Next<T> {
        let head = &arrived.head;
        let checked = dpop::proof_header(head.dpop.as_deref()).and_then(|proof| {
            let uri = HttpUri::parse(&head.url).ok_or(ProofError::UriMismatch)?;
            let request = ProofRequest {
                method: &head.method,
                uri: &uri,
                access_token: Some(token),
                bound_to: Some(jkt),
            };
            let check = dpop::check(proof, &request, &self.config.dpop_rules, now)?;
            let next_nonce = self.judge_nonce(check.nonce(), now)?;
            let message_len = check.signing_input().len();
            let key = check.key().uncompressed_point();
            Ok((
                message_len,
                *check.signature(),
                key,
                check.into_pending(),
                next_nonce,
            ))
        });
        let (message_len, raw_signature, point, proof, next_nonce) = match checked {
            Ok(checked) => checked,
            Err(ProofError::UseNonce) => {
                // Not charged as a failed authentication: the token and the proof's form
                // passed, and every client meets this at its first request and after a
                // pause. It costs the edge an HMAC or two, less than a charge would.
                let challenge = Rejection::Dpop(ProofError::UseNonce);
                return self.reply(exchange, Some(log), &challenge.into(), now);
            }
            Err(error) => {
                let ip = client_network(head);
                return self.reject(arrived, exchange, &ip, Rejection::Dpop(error), log, now);
            }
        };
        let mut arrived = arrived;
        arrived.dpop_nonce = next_nonce;
        let jkt = jkt.as_str().to_owned();
        if self.proof_keys.get(&jkt).is_none() {
            if arrived.waited.proof_import {
                // The import failed (logged): the proof cannot be verified now.
                let unavailable = Rejection::Dpop(ProofError::VerifierUnavailable);
                return self.reply(exchange, Some(log), &unavailable.into(), now);
            }
            arrived.waited.proof_import = true;
            let on = Suspended::Import {
                arrived: Box::new(arrived),
                kid: jkt,
                point,
                proof: true,
            };
            return self.park_request(exchange, on);
        }
        let proving = Proving {
            arrived,
            verified,
            proof,
            jkt,
            raw_signature,
            message_len,
            log,
            started: now,
        };
        self.park_request(exchange, Suspended::Proof(Box::new(proving)))
    }

    /// The edge's judgement of a proof's `nonce` (RFC 9449 §9), when it requires them: the
    /// nonce for the origin's answer to hand the client (the current one: a client's may be
    /// in its last window), or [`ProofError::UseNonce`] if the proof has no good one. `None`
    /// when nonces are off.
    fn judge_nonce(
        &self,
        nonce: Option<&str>,
        now: UnixTime,
    ) -> Result<Option<String>, ProofError> {
        let Some((nonces, lifetime)) = &self.config.dpop_nonces else {
            return Ok(None);
        };
        if !nonce.is_some_and(|nonce| nonces.accepts(nonce, now, *lifetime)) {
            return Err(ProofError::UseNonce);
        }
        Ok(self.current_nonce(now))
    }

    /// The edge's DPoP nonce for now, when it requires them.
    fn current_nonce(&self, now: UnixTime) -> Option<String> {
        let (nonces, lifetime) = self.config.dpop_nonces.as_ref()?;
        Some(nonces.issue(now, *lifetime))
    }

    /// The driver imported the proof key for thumbprint `jkt`: kept, and the keys it pushed
    /// out of the table dropped by the driver too.
    fn proof_key_imported(&mut self, jkt: String) {
        let ((), evicted) = self.proof_keys.update_evicting(jkt, |()| ());
        self.side
            .extend(evicted.into_iter().map(|jkt| Side::ForgetProofKey { jkt }));
    }

    /// WebCrypto's verdict on a proof; a good one goes to its replay object (one per key,
    /// in the request's location or worldwide: `DPOP_REPLAY_SCOPE`).
    fn proved(
        &mut self,
        proving: Proving,
        exchange: T,
        verdict: Result<bool, String>,
        now: UnixTime,
    ) -> Next<T> {
        let Proving {
            arrived,
            verified,
            proof,
            mut log,
            started,
            ..
        } = proving;
        let outcome = match verdict {
            Ok(valid) => proof.conclude(valid),
            Err(reason) => {
                self.failed(Level::Error, "webcrypto_verify_failed", &reason);
                Err(ProofError::VerifierUnavailable)
            }
        };
        let proof = match outcome {
            Ok(proof) => proof,
            Err(ProofError::VerifierUnavailable) => {
                let unavailable = Rejection::Dpop(ProofError::VerifierUnavailable);
                return self.reply(exchange, Some(log), &unavailable.into(), now);
            }
            Err(error) => {
                let ip = client_network(&arrived.head);
                return self.reject(arrived, exchange, &ip, Rejection::Dpop(error), log, started);
            }
        };
        let key = ["dpop/", proof.jkt().as_str()].concat();
        let scope = self.config.dpop_replay_scope;
        let name = object_name(scope, &key, arrived.head.colo.as_deref());
        log.dpop_jkt = Some(proof.jkt().clone());
        let replaying = Replaying {
            arrived,
            verified,
            name: name.clone(),
            pair: proofs::replay_pair(&proof),
            verdict: None,
            call: None,
            follows: WaitId(0),
            follows_until: self.event_now,
            since: self.event_now,
            log,
            started,
        };
        let (id, _) = self.waits.park(Waiting::Request {
            exchange: exchange.clone(),
            on: Suspended::Replay(Box::new(replaying)),
        });
        let turn = self.replays.join(&name, id, self.event_now);
        let follows = self.follow_line(name, exchange, turn);
        self.replay_follows(id, follows);
        Next::Wait(id)
    }

    /// The wait a request on the line `name` follows after `turn`: a call out still known
    /// (one over already, its answer lost with an evicted entry, is taken off the line), or
    /// the call it sends now from its own event (`exchange`'s).
    fn follow_line(
        &mut self,
        name: String,
        exchange: T,
        mut turn: Turn,
    ) -> Option<(WaitId, UnixTime)> {
        loop {
            match turn {
                Turn::Wait(call, until) if self.jobs.get(call).is_some() => {
                    return Some((call, until))
                }
                Turn::Wait(call, _) => {
                    self.replays.answered(&name, call);
                    turn = self.replays.again(&name, self.event_now);
                }
                Turn::Send => return self.call_replays(name, exchange),
            }
        }
    }

    /// The request waiting under `id` for its replay verdict, if it still is.
    fn replaying(&mut self, id: WaitId) -> Option<&mut Replaying> {
        match self.waits.get_mut(id)? {
            Waiting::Request {
                on: Suspended::Replay(replaying),
                ..
            } => Some(replaying),
            _ => None,
        }
    }

    /// Until when a request waits for its replay verdict, in all.
    fn replay_deadline(&self, replaying: &Replaying) -> UnixTime {
        replaying
            .since
            .plus_millis(self.config.fetch_timeout_ms.saturating_mul(2))
    }

    /// Whether the request waiting under `id` for its replay verdict, woken at `now` with
    /// none, waits again: for its call, still out and not given up; or, still queued, for
    /// the last call out, or for the call it sends now from its own event. Not past its
    /// deadline.
    fn replay_waits_again(&mut self, id: WaitId, now: UnixTime) -> bool {
        let Some(Waiting::Request {
            exchange,
            on: Suspended::Replay(replaying),
        }) = self.waits.get(id)
        else {
            return false;
        };
        if replaying.verdict.is_some() || now >= self.replay_deadline(replaying) {
            return false;
        }
        let follows = match replaying.call {
            Some(call) => return self.jobs.get(call).is_some() && now < replaying.follows_until,
            None => {
                let (name, exchange) = (replaying.name.clone(), exchange.clone());
                let turn = self.replays.again(&name, now);
                self.follow_line(name, exchange, turn)
            }
        };
        self.replay_follows(id, follows)
    }

    /// Points the request waiting under `id` at the wait it follows (`None`: there is none
    /// to follow, and it is answered when it wakes). Whether it has one.
    fn replay_follows(&mut self, id: WaitId, follows: Option<(WaitId, UnixTime)>) -> bool {
        if let Some(replaying) = self.replaying(id) {
            if let Some((follows, until)) = follows {
                replaying.follows = follows;
                replaying.follows_until = until;
                return true;
            }
            // Following itself: the driver finds no such background wait and it wakes at once.
            replaying.follows = id;
        }
        false
    }

    /// Sends the next call to the replay object `name` for the requests queued on its line,
    /// from the event of `exchange` (a request among them, waiting for it: its context keeps
    /// the call alive); the call and when it is given up, or `None` when no one queued is
    /// left. A queued id whose wait is gone, or is now another request's (ids come round
    /// again), is left out.
    fn call_replays(&mut self, name: String, exchange: T) -> Option<(WaitId, UnixTime)> {
        loop {
            let queued = self.replays.next_call(&name);
            if queued.is_empty() {
                self.replays.close_if_idle(&name);
                return None;
            }
            let mut members = Vec::with_capacity(queued.len());
            let mut pairs = Vec::with_capacity(queued.len());
            for id in queued {
                if let Some(Waiting::Request {
                    on: Suspended::Replay(replaying),
                    ..
                }) = self.waits.get(id)
                {
                    // Once each (a stale id can be queued twice, a later request holding it).
                    if replaying.name == name && replaying.call.is_none() && !members.contains(&id)
                    {
                        pairs.push(replaying.pair.as_str());
                        members.push(id);
                    }
                }
            }
            if members.is_empty() {
                continue;
            }
            let url = proofs::replay_url(pairs);
            let (call, _) = self.jobs.park(Waiting::Replays {
                exchange,
                name: name.clone(),
                url,
                members: members.clone(),
            });
            let until = self.replays.sent(&name, call, self.event_now);
            for id in members {
                if let Some(replaying) = self.replaying(id) {
                    replaying.call = Some(call);
                    replaying.follows = call;
                    replaying.follows_until = until;
                }
            }
            self.side.push(Side::Background { id: call });
            return Some((call, until));
        }
    }

    /// The answer of replay call `call`: each member finds its verdict when it wakes (it
    /// follows the call from its own event).
    fn replays_answered(
        &mut self,
        name: &str,
        call: WaitId,
        members: &[WaitId],
        answer: Result<&str, &str>,
    ) {
        self.replays.answered(name, call);
        let verdicts = proofs::verdicts(answer, members.len());
        for (&id, verdict) in members.iter().zip(verdicts) {
            // Only a member of this call (not another request under a reused id).
            if let Some(replaying) = self.replaying(id).filter(|r| r.call == Some(call)) {
                replaying.verdict = Some(verdict);
            }
        }
    }

    /// The replay object's verdict: a first use goes on, a replay is refused (and charged);
    /// an undecided proof, or no verdict, is a 503 that costs no budget (a proof is never
    /// taken unchecked, and the client did nothing wrong).
    fn replay_answered(&mut self, replaying: Replaying, exchange: T, now: UnixTime) -> Next<T> {
        let Replaying {
            arrived,
            verified,
            verdict,
            mut log,
            started,
            ..
        } = replaying;
        log.dpop_ms = Some(now.millis_since(started));
        let reason = match verdict {
            Some(Verdict::Fresh) => {
                return self.admitted(arrived, exchange, verified, log, started)
            }
            Some(Verdict::Seen) => {
                let ip = client_network(&arrived.head);
                let replayed = Rejection::Dpop(ProofError::Replayed);
                return self.reject(arrived, exchange, &ip, replayed, log, started);
            }
            Some(Verdict::Undecided) => {
                let undecided = Rejection::Dpop(ProofError::ReplayUndecided);
                return self.reply(exchange, Some(log), &undecided.into(), now);
            }
            Some(Verdict::Unchecked(reason)) => reason,
            None => "no verdict before its wait ran out".to_owned(),
        };
        self.failed(Level::Error, "dpop_replay_unchecked", &reason);
        let unchecked = Rejection::Dpop(ProofError::ReplayUnchecked);
        self.reply(exchange, Some(log), &unchecked.into(), now)
    }

    /// Whether `token` names a key on the revocation list (read again: only on the rare
    /// path of a `kid` the set lacks).
    fn kid_revoked(&self, token: &str) -> bool {
        shared::UntrustedToken::parse(token, self.config.validator.validation())
            .is_ok_and(|untrusted| self.revocations.is_key_revoked(untrusted.kid()))
    }

    /// A verified token (cached or just verified), hashed as `key`: revocation, rate limit,
    /// then the origin.
    fn verified_path(
        &mut self,
        arrived: Arrived,
        exchange: T,
        verified: Arc<VerifiedToken>,
        key: TokenKey,
        mut log: RequestLog,
        now: UnixTime,
    ) -> Next<T> {
        log.verified = Some(Arc::clone(&verified));
        if self.revocations.is_revoked(&verified) {
            return self.reply(exchange, Some(log), &Rejection::Revoked.into(), now);
        }
        // The token cache holds what was verified whatever the route: the route's audience
        // and scopes are checked on every request, a cache hit's too.
        let claims = verified.claims();
        let policy = self.config.policy(arrived.route);
        let allowed = match policy.map(|policy| (&policy.access, policy.audience.as_deref())) {
            Some((Access::Token(required), audience)) => {
                let audience = audience.unwrap_or(&self.config.validator.validation().audience);
                if claims.is_for(audience) {
                    required.check(&claims.scope).map_err(EdgeError::from)
                } else {
                    Err(Rejection::AudienceMismatch.into())
                }
            }
            // `serve` answers every other route before a token is read; were that to change,
            // they still never reach the origin with an identity.
            _ => Err(EdgeError::NoRoute),
        };
        if let Err(error) = allowed {
            return self.reply(exchange, Some(log), &error, now);
        }
        let Some(dpop_required) = policy.map(|policy| policy.dpop_required) else {
            return self.reply(exchange, Some(log), &EdgeError::NoRoute, now);
        };
        // RFC 9449 §7: a bound token is good only with a proof of its key, on every route;
        // a route may take bound tokens only.
        let refused = match (arrived.scheme, claims.cnf.as_ref()) {
            (Scheme::Dpop, Some(cnf)) => {
                let jkt = cnf.jkt.clone();
                return self.prove(arrived, exchange, verified, &key, &jkt, log, now);
            }
            (Scheme::Bearer, None) if !dpop_required => None,
            (Scheme::Bearer, None) => Some(Rejection::DpopRequired),
            (Scheme::Bearer, Some(_)) => Some(Rejection::BoundTokenAsBearer),
            (Scheme::Dpop, None) => Some(Rejection::UnboundTokenAsDpop),
        };
        if let Some(rejection) = refused {
            let ip = client_network(&arrived.head);
            return self.reject(arrived, exchange, &ip, rejection, log, now);
        }
        self.admitted(arrived, exchange, verified, log, now)
    }

    /// A request whose token (and proof) passed: the rate limit, then the origin.
    fn admitted(
        &mut self,
        arrived: Arrived,
        exchange: T,
        verified: Arc<VerifiedToken>,
        log: RequestLog,
        now: UnixTime,
    ) -> Next<T> {
        let claims = verified.claims();
        let Some(policy) = self.config.policy(arrived.route) else {
            return self.reply(exchange, Some(log), &EdgeError::NoRoute, now);
        };
        if self.config.rate_limit_mode == RateLimitMode::Off {
            return self.forward(arrived, exchange, Some(&verified), log, None, now);
        }
        // A route's own plan has its own count per client, apart from the token's plan.
        let route_plan = policy.rate_plan.map(|plan| {
            let route = self.config.route_id(arrived.route).cloned();
            (plan, route)
        });
        let (plan, subject) = match &route_plan {
            Some((plan, route)) => (
                *plan,
                Subject::ClientOnRoute {
                    client: &claims.client_id,
                    route: route.as_deref(),
                },
            ),
            None => (
                claims.rate_plan.unwrap_or(self.config.default_plan),
                Subject::Client(&claims.client_id),
            ),
        };
        let mut arrived = arrived;
        let limited = Limited::of(subject, plan, &mut arrived);
        let then = Then::Forward {
            arrived,
            verified: Some(verified),
        };
        self.limit(exchange, log, limited, then, now)
    }

    /// The rate limit of a request that passed every other check, then `then`: from a lease
    /// in `lease` mode, else the isolate's count and (`durable`) the object's decision.
    fn limit(
        &mut self,
        exchange: T,
        log: RequestLog,
        limited: Limited,
        then: Then,
        now: UnixTime,
    ) -> Next<T> {
        if self.config.rate_limit_mode == RateLimitMode::Lease {
            // A lease is spent at the time it is spent: a request back from WebCrypto keeps
            // its own time for its token, but a lease that ended while it waited is over.
            let now = self.event_now;
            let polled = Polled {
                since: now,
                times: 0,
            };
            return self.lease(exchange, log, limited, then, polled, now);
        }
        let Limited {
            key,
            plan,
            policy,
            colo,
        } = limited;
        let check = match self.limiter.begin_key(key, policy, &plan, 1, now) {
            Ok(check) => check,
            Err(decision) => {
                let mut log = log;
                log.limit_ms = Some(0);
                log.limit_source = Some(Source::Isolate);
                let error = EdgeError::RateLimited {
                    decision,
                    plan,
                    policy,
                };
                return self.reply(exchange, Some(log), &error, now);
            }
        };
        self.decide(exchange, log, check, colo, then, now)
    }

    /// `lease` mode: a permit from a lease held here (renewed in the background when due),
    /// the object's denial, or a wait: for this request's own ask, or for another's.
    /// `polled`: how long it has waited for another's ask (since its own time, unless it
    /// polled).
    #[allow(clippy::too_many_arguments)] // the request's parts
    fn lease(
        &mut self,
        exchange: T,
        mut log: RequestLog,
        limited: Limited,
        then: Then,
        polled: Polled,
        now: UnixTime,
    ) -> Next<T> {
        let waited_since = (polled.times > 0).then_some(polled.since);
        match self
            .leases
            .take(&limited.key, &limited.plan, now, waited_since)
        {
            Take::Spent { decision, renew } => {
                self.renew(renew, &exchange, &limited);
                log.limit_ms.get_or_insert(0);
                log.limit_source = Some(Source::Lease);
                self.limited(exchange, log, decision, &limited, then, now)
            }
            Take::Denied(decision) => {
                log.limit_ms.get_or_insert(0);
                log.limit_source = Some(Source::Lease);
                self.limited(exchange, log, decision, &limited, then, now)
            }
            Take::Ask(ask) => {
                let asking = Asking {
                    log,
                    pending: Pending::Lease {
                        ask: self.lease_asking(ask, limited.colo.as_deref()),
                        limited,
                    },
                    then,
                    now,
                    asked_at: self.event_now,
                };
                self.park_request(exchange, Suspended::Limit(Box::new(asking)))
            }
            Take::Wait => {
                let waiting = LeaseWaiting {
                    log,
                    limited,
                    then,
                    polled,
                };
                self.park_request(exchange, Suspended::Lease(Box::new(waiting)))
            }
        }
    }

    /// Sends `renew`, if there is one, in the background (kept alive by `exchange`).
    fn renew(&mut self, renew: Option<Ask>, exchange: &T, limited: &Limited) {
        let Some(ask) = renew else { return };
        let asking = self.lease_asking(ask, limited.colo.as_deref());
        let (id, _) = self.jobs.park(Waiting::Renewal {
            exchange: exchange.clone(),
            asking: Box::new(asking),
        });
        self.side.push(Side::Background { id });
    }

    /// The object and query for a lease ask.
    fn lease_asking(&self, ask: Ask, colo: Option<&str>) -> LeaseAsking {
        LeaseAsking {
            name: self.object_name(ask.key(), colo),
            url: ask.object_url(self.leases.policy()),
            ask,
        }
    }

    /// The object that counts `key` (`RATE_LIMIT_SCOPE`).
    fn object_name(&self, key: &str, colo: Option<&str>) -> String {
        object_name(self.config.rate_limit_scope, key, colo)
    }

    /// A lease ask's answer, kept and logged.
    fn lease_answered(
        &mut self,
        asking: &LeaseAsking,
        answer: Result<String, String>,
        now: UnixTime,
    ) -> Answered {
        let answered = self.leases.answered(&asking.ask, answer, now);
        let ask = &asking.ask;
        let key = Some(ask.key());
        let (level, event) = match &answered {
            Answered::Granted(grant) if grant.permits == 0 => (
                Level::Log,
                Event {
                    retry_after_ms: Some(grant.decision.retry_after_ms),
                    ..Event::of(LeaseEvent::Denied.name())
                },
            ),
            Answered::Granted(grant) => {
                let event = if ask.renewal {
                    LeaseEvent::Renewed
                } else {
                    LeaseEvent::Granted
                };
                let event = Event {
                    lease: Some(grant.lease.to_string()),
                    permits: Some(grant.permits),
                    ..Event::of(event.name())
                };
                (Level::Log, event)
            }
            Answered::Failed(reason) => (
                Level::Warn,
                Event {
                    reason: Some(reason),
                    ..Event::of(LeaseEvent::AskFailed.name())
                },
            ),
        };
        self.event(level, &Event { key, ..event });
        if let (Some((lease, permits)), Answered::Granted(_)) = (ask.returning(), &answered) {
            let returned = Event {
                key,
                lease: Some(lease.to_string()),
                permits: Some(permits),
                ..Event::of(LeaseEvent::Returned.name())
            };
            self.event(Level::Log, &returned);
        }
        answered
    }

    /// A request's own lease ask was answered: its permit from the new lease, the object's
    /// denial, or (no usable answer) the isolate's own count, as in `durable` mode.
    fn leased(
        &mut self,
        exchange: T,
        mut log: RequestLog,
        limited: Limited,
        answered: Answered,
        then: Then,
        now: UnixTime,
    ) -> Next<T> {
        let reason = match answered {
            Answered::Granted(_) => {
                match self.leases.take(&limited.key, &limited.plan, now, None) {
                    Take::Spent { decision, renew } => {
                        // A first lease of one permit is due for renewal at once.
                        self.renew(renew, &exchange, &limited);
                        log.limit_source = Some(Source::Object);
                        return self.limited(exchange, log, decision, &limited, then, now);
                    }
                    Take::Denied(decision) => {
                        log.limit_source = Some(Source::Object);
                        return self.limited(exchange, log, decision, &limited, then, now);
                    }
                    // Granted, yet nothing to spend: the answer came after the lease's life. The
                    // ask `take` just made is not sent.
                    Take::Ask(ask) => {
                        self.leases.abandon(&ask);
                        "the lease ended before its grant arrived".to_owned()
                    }
                    Take::Wait => "the lease ended before its grant arrived".to_owned(),
                }
            }
            Answered::Failed(reason) => reason,
        };
        self.failed(Level::Warn, "rate_limiter_unreachable", &reason);
        log.limit_source = Some(Source::Fallback);
        let Limited {
            key, plan, policy, ..
        } = &limited;
        let decision = self.limiter.fallback(key, plan, policy, now);
        self.limited(exchange, log, decision, &limited, then, now)
    }

    /// `then`, or the 429, as `decision` says.
    fn limited(
        &mut self,
        exchange: T,
        log: RequestLog,
        decision: shared::Decision,
        limited: &Limited,
        then: Then,
        now: UnixTime,
    ) -> Next<T> {
        self.proceed(
            exchange,
            log,
            decision,
            limited.plan,
            limited.policy,
            then,
            now,
        )
    }

    /// A public route's request: its route's plan per client network, if it has one, then
    /// the origin, with no identity.
    fn public(&mut self, arrived: Arrived, exchange: T, log: RequestLog, now: UnixTime) -> Next<T> {
        let plan = self
            .config
            .policy(arrived.route)
            .and_then(|policy| policy.rate_plan);
        let (Some(plan), false) = (plan, self.config.rate_limit_mode == RateLimitMode::Off) else {
            return self.forward(arrived, exchange, None, log, None, now);
        };
        let network = client_network(&arrived.head);
        let route = self.config.route_id(arrived.route).cloned();
        let subject = Subject::NetworkOnRoute {
            network: &network,
            route: route.as_deref(),
        };
        let mut arrived = arrived;
        let limited = Limited::of(subject, plan, &mut arrived);
        let then = Then::Forward {
            arrived,
            verified: None,
        };
        self.limit(exchange, log, limited, then, now)
    }

    /// A refused token costs its IP one unit of the failed-auth budget; over budget, the
    /// answer is 429 instead (and later requests from the IP that need crypto are refused
    /// at once).
    fn reject(
        &mut self,
        arrived: Arrived,
        exchange: T,
        ip: &str,
        rejection: Rejection,
        log: RequestLog,
        now: UnixTime,
    ) -> Next<T> {
        // The edge's own failure (WebCrypto, an import) is no fault of the client's: a 503
        // that costs no budget, or an outage would turn into 429s that outlast it.
        if self.config.rate_limit_mode == RateLimitMode::Off
            || rejection == Rejection::VerifierUnavailable
        {
            return self.reply(exchange, Some(log), &rejection.into(), now);
        }
        let subject = Subject::FailedAuth(ip);
        let plan = self.config.failed_auth_plan;
        let check = match self.limiter.begin(subject, &plan, 1, now) {
            Ok(check) => check,
            Err(denied) => return self.denied(exchange, log, denied, plan, subject, now),
        };
        if rejection.is_malformed() {
            // Not a token at all: the isolate's count decides, with no Durable Object call,
            // so junk costs the abuser its budget and the edge no round trip.
            return self.concluded(exchange, log, check, None, 0, Then::Refuse(rejection), now);
        }
        let colo = arrived.head.colo;
        self.decide(exchange, log, check, colo, Then::Refuse(rejection), now)
    }

    /// Over the limit by the isolate's own table: the 429 at once.
    fn denied(
        &mut self,
        exchange: T,
        mut log: RequestLog,
        decision: shared::Decision,
        plan: shared::RatePlan,
        subject: Subject<'_>,
        now: UnixTime,
    ) -> Next<T> {
        log.limit_ms = Some(0);
        log.limit_source = Some(Source::Isolate);
        let error = EdgeError::rate_limited(decision, plan, subject);
        self.reply(exchange, Some(log), &error, now)
    }

    /// Step two of `check`: its Durable Object in `durable` mode (a wait), else the
    /// isolate's own count; then `then`. The objects live in the request's Cloudflare
    /// location (`colo`, e.g. `FRA`; `local` when absent, as in local workerd).
    fn decide(
        &mut self,
        exchange: T,
        log: RequestLog,
        check: Check,
        colo: Option<String>,
        then: Then,
        now: UnixTime,
    ) -> Next<T> {
        // In `lease` mode too, failed authentications ask the object each time (after the
        // isolate's own pre-check): they are the abuse path, and a lease would hand an
        // abuser's network a stock of permits to spend.
        if !matches!(
            self.config.rate_limit_mode,
            RateLimitMode::Durable | RateLimitMode::Lease
        ) {
            return self.concluded(exchange, log, check, None, 0, then, now);
        }
        let asking = Asking {
            log,
            pending: Pending::Decision {
                name: self.object_name(check.key(), colo.as_deref()),
                url: check.object_url(),
                check,
            },
            then,
            now,
            asked_at: self.event_now,
        };
        self.park_request(exchange, Suspended::Limit(Box::new(asking)))
    }

    /// The decision (logged with where it came from and the `limit_ms` it took): the 429,
    /// or `then` with the `RateLimit` headers.
    #[allow(clippy::too_many_arguments)] // a suspended request's parts
    fn concluded(
        &mut self,
        exchange: T,
        mut log: RequestLog,
        check: Check,
        answer: Option<Result<String, String>>,
        limit_ms: u64,
        then: Then,
        now: UnixTime,
    ) -> Next<T> {
        let (plan, policy) = (check.plan(), check.policy());
        let concluded = self.limiter.conclude(check, answer, now);
        if let Some(reason) = &concluded.unreachable {
            self.failed(Level::Warn, "rate_limiter_unreachable", reason);
        }
        log.limit_ms = Some(limit_ms);
        log.limit_source = Some(concluded.source);
        self.proceed(exchange, log, concluded.decision, plan, policy, then, now)
    }

    /// The limit's `decision` for a request: the 429, or `then` with the `RateLimit`
    /// headers.
    #[allow(clippy::too_many_arguments)] // a limited request's parts
    fn proceed(
        &mut self,
        exchange: T,
        log: RequestLog,
        decision: shared::Decision,
        plan: shared::RatePlan,
        policy: &'static str,
        then: Then,
        now: UnixTime,
    ) -> Next<T> {
        if !decision.allowed {
            let error = EdgeError::RateLimited {
                decision,
                plan,
                policy,
            };
            return self.reply(exchange, Some(log), &error, now);
        }
        let headers = RateLimitHeaders {
            policy: plan.policy_header(policy),
            rate_limit: decision.rate_limit_header(policy),
        };
        match then {
            Then::Forward { arrived, verified } => {
                let verified = verified.as_deref();
                self.forward(arrived, exchange, verified, log, Some(headers), now)
            }
            Then::Refuse(rejection) => self.reply(exchange, Some(log), &rejection.into(), now),
        }
    }

    /// Sends a request to its route's origin (a wait): a verified one with the signed
    /// assertion, one of a public route (`verified` is `None`) with none.
    fn forward(
        &mut self,
        arrived: Arrived,
        exchange: T,
        verified: Option<&VerifiedToken>,
        log: RequestLog,
        headers: Option<RateLimitHeaders>,
        now: UnixTime,
    ) -> Next<T> {
        let (url, path) = (&arrived.url, arrived.path.as_str());
        let origin = self
            .config
            .policy(arrived.route)
            .and_then(|policy| policy.origin.as_ref())
            .unwrap_or(&self.config.origin);
        // The origin gets, and the assertion binds, the path the edge decided on, after the
        // origin URL's own prefix if it has one.
        let sent: std::borrow::Cow<'_, str> = match origin.prefix() {
            "" => path.into(),
            prefix => [prefix, path].concat().into(),
        };
        let line = shared::RequestLine {
            method: log.method(),
            host: origin.host(),
            path: &sent,
            query: url.query(),
        };
        let route = self.config.route_id(arrived.route).map_or("", |id| id);
        let assertion = verified.map(|verified| {
            let claims = verified.claims();
            self.config
                .signer(origin)
                // Signed with this event's time: `now` can be the time the token was
                // checked, before waits for a replay or limiter object, and an origin
                // counts the assertion's age from it.
                .sign_claims(claims, &line, route, self.event_now)
        });
        let forwarded = Forwarded {
            target: [origin.url(), path, url.query_part()].concat(),
            assertion,
            log,
            started: now,
            headers: Added {
                rate_limit: headers,
                dpop_nonce: arrived.dpop_nonce,
            },
        };
        self.park_request(exchange, Suspended::Origin(Box::new(forwarded)))
    }

    /// The origin answered (its status), or was not reached.
    fn origin_answered(
        &mut self,
        exchange: T,
        forwarded: Forwarded,
        status: Result<u16, ForwardError>,
        now: UnixTime,
    ) -> Next<T> {
        let Forwarded {
            mut log,
            headers,
            started,
            ..
        } = forwarded;
        log.origin_ms = Some(now.millis_since(started));
        match status {
            Ok(status) => {
                self.finish(log, status, now);
                Next::PassOn(headers, exchange)
            }
            Err(error) => self.reply(exchange, Some(log), &error.into(), now),
        }
    }

    /// The edge's own answer for `error`, logged (with the request's line when there is one).
    fn reply(
        &mut self,
        exchange: T,
        log: Option<RequestLog>,
        error: &EdgeError,
        now: UnixTime,
    ) -> Next<T> {
        match error {
            EdgeError::Internal(detail) => self.failed(Level::Error, "edge_internal_error", detail),
            EdgeError::OriginUnreachable(detail) => {
                self.failed(Level::Error, "origin_unreachable", detail)
            }
            _ => {}
        }
        let dpop = log.as_ref().is_some_and(|log| log.dpop_challenge);
        let mut reply = Reply::of(error, dpop);
        if dpop {
            // Every answer of the edge's own to a DPoP request, from its token's check on,
            // carries the nonce to make the next proof with, `use_dpop_nonce` above all
            // (RFC 9449 §9), as the issuer's do.
            reply.dpop_nonce = self.current_nonce(now);
        }
        if let Some(mut log) = log {
            log.failed(error);
            self.finish(log, reply.status, now);
        }
        Next::Reply(reply, exchange)
    }
}

impl<T: Clone> Isolate<T> {
    /// `/.edge/health`: whether the edge can verify tokens, and how old its revocation list
    /// is.
    fn health(&self, now: UnixTime) -> Reply {
        #[derive(serde::Serialize)]
        struct Health {
            status: &'static str,
            jwks: &'static str,
            revocations_age_ms: Option<u64>,
        }
        let freshness = self.keys.freshness(now);
        let ok = matches!(
            freshness,
            shared::jwks_refresh::Freshness::Fresh | shared::jwks_refresh::Freshness::Stale
        );
        let health = Health {
            status: if ok { "ok" } else { "degraded" },
            jwks: freshness_name(freshness),
            revocations_age_ms: self.revocations.age_ms(now),
        };
        Reply::json(200, serde_json::to_string(&health).unwrap_or_default())
    }

    /// The request's log line for an answer with `status`: always for the edge's own
    /// answers, one in `LOG_FORWARDED_EVERY` for forwarded requests.
    fn finish(&mut self, log: RequestLog, status: u16, now: UnixTime) {
        if log.forwarded() && !self.sampler.sampled(self.config.log_forwarded_every) {
            return;
        }
        let jwks = freshness_name(self.keys.freshness(now));
        let line = log.line(status, now, jwks, self.revocations.age_ms(now));
        self.side.push(Side::Log {
            level: Level::Log,
            line,
        });
    }

    /// An operational line at `level`: `event` failed for `reason`.
    fn failed(&mut self, level: Level, event: &'static str, reason: &str) {
        self.side.push(Side::Log {
            level,
            line: log::event_line(event, reason),
        });
    }

    /// A warning: the fetch of `url` failed for `reason` (the next URL or pull is tried).
    fn fetch_failed(&mut self, event: &'static str, url: &str, reason: &str) {
        self.event(
            Level::Warn,
            &Event {
                event,
                url: Some(url),
                reason: Some(reason),
                ..Event::default()
            },
        );
    }

    /// An operational line at `level`.
    fn event(&mut self, level: Level, event: &Event<'_>) {
        self.side.push(Side::Log {
            level,
            line: event.line(),
        });
    }

    fn park_request(&mut self, exchange: T, on: Suspended) -> Next<T> {
        let (id, _) = self.waits.park(Waiting::Request { exchange, on });
        Next::Wait(id)
    }

    fn busy_until(&mut self, kind: Kind) -> &mut UnixTime {
        match kind {
            Kind::Keys { .. } => &mut self.keys_busy_until,
            Kind::Revocations => &mut self.revocations_busy_until,
        }
    }

    /// Whether a job of `kind` is running at `now`.
    fn busy(&mut self, kind: Kind, now: UnixTime) -> bool {
        *self.busy_until(kind) > now
    }

    /// How long a job of `kind` may run: one fetch timeout per URL, plus one. (A job whose
    /// request went away stops at its next step; the kind counts as running only until its
    /// deadline, so nothing stays stuck.)
    fn budget_ms(&self, kind: Kind) -> u64 {
        let urls = match kind {
            Kind::Keys { .. } => self.config.jwks_urls.len(),
            Kind::Revocations => self.config.revocation_urls.len(),
        };
        let urls = u64::try_from(urls).unwrap_or(u64::MAX);
        self.config
            .fetch_timeout_ms
            .saturating_mul(urls.saturating_add(1))
    }

    /// Suspends `arrived` until a job of `kind` is over: its own, or (one is running)
    /// another's, which it polls for on a timer of its own. It does not wait on the other
    /// request's promise: in Workers a promise belongs to the request that created it, and a
    /// request awaiting another's fetch is cancelled by the runtime ("code had hung", a 500).
    fn wait_for(
        &mut self,
        kind: Kind,
        mut arrived: Arrived,
        exchange: T,
        now: UnixTime,
    ) -> Next<T> {
        if matches!(kind, Kind::Keys { .. }) {
            arrived.keys_since.get_or_insert(now);
        }
        let deadline = now.plus_millis(self.budget_ms(kind));
        let busy = self.busy(kind, now);
        let for_job = exchange.clone();
        let on = Suspended::Job {
            arrived: Box::new(arrived),
            kind,
            deadline,
        };
        let (id, _) = self.waits.park(Waiting::Request { exchange, on });
        if busy {
            return Next::Wait(id);
        }
        self.start_job(kind, for_job, Some(id), now)
    }

    /// Starts a job of `kind` in the background (kept alive by `exchange`'s `waitUntil`),
    /// unless one is running.
    fn background(&mut self, kind: Kind, exchange: &T, now: UnixTime) {
        if self.busy(kind, now) {
            return;
        }
        match self.start_job(kind, exchange.clone(), None, now) {
            Next::Wait(id) => self.side.push(Side::Background { id }),
            // Over at once (nothing to fetch).
            Next::Reply(..) | Next::PassOn(..) | Next::Idle(_) => {}
        }
    }

    /// Starts a job of `kind` (the caller checked [`Self::busy`]); `then` is the request it
    /// resumes when over.
    fn start_job(
        &mut self,
        kind: Kind,
        exchange: T,
        then: Option<WaitId>,
        now: UnixTime,
    ) -> Next<T> {
        let deadline = now.plus_millis(self.budget_ms(kind));
        *self.busy_until(kind) = deadline;
        let mut events = Vec::new();
        let (work, step) = match kind {
            Kind::Keys { load_copy } => {
                let (refresh, step) =
                    Refresh::start(&mut self.keys, &self.config, load_copy, now, &mut events);
                (Work::Keys(refresh), step)
            }
            Kind::Revocations => {
                let (pull, step) = self.revocations.start(&self.config, now, deadline);
                (Work::Revocations(pull), pull_step(step))
            }
        };
        self.key_events(events);
        self.job_step(exchange, work, kind, then, step, now)
    }

    /// A job's fetch or copy read came back.
    fn job_answered(&mut self, exchange: T, job: Job, answer: Answer, now: UnixTime) -> Next<T> {
        let Job {
            mut work,
            kind,
            then,
            ..
        } = job;
        let mut events = Vec::new();
        let revocations = &self.revocations;
        let revoked = |kid: &str| revocations.is_key_revoked(kid);
        let step = match (&mut work, answer) {
            (Work::Keys(refresh), Answer::Fetched(answer)) => refresh.answered(
                &mut self.keys,
                &self.config,
                answer,
                &revoked,
                now,
                &mut events,
            ),
            (Work::Keys(refresh), Answer::Copy(copy)) => refresh.copy_answered(
                &mut self.keys,
                &self.config,
                copy,
                &revoked,
                now,
                &mut events,
            ),
            (Work::Revocations(pull), Answer::Fetched(answer)) => {
                let mut failed = Vec::new();
                let (kids, step) = pull.answered(
                    &mut self.revocations,
                    &self.config,
                    answer,
                    now,
                    &mut failed,
                );
                for (url, reason) in failed {
                    self.fetch_failed("revocation_feed_failed", &url, &reason);
                }
                if !kids.is_empty() {
                    if let Some(copy) = self.keys.drop_revoked(&self.config, &kids, now) {
                        self.side.push(Side::StoreCopy(copy));
                    }
                    self.event(
                        Level::Log,
                        &Event {
                            event: "keys_revoked",
                            kids: Some(&kids),
                            ..Event::default()
                        },
                    );
                }
                pull_step(step)
            }
            // A job only waits for the answers above (`expects`).
            _ => RefreshStep::Done(None),
        };
        self.key_events(events);
        self.job_step(exchange, work, kind, then, step, now)
    }

    /// Takes a job's next step: suspends it for its I/O, or ends it (storing the copy it
    /// made, resuming the request that waited for it).
    fn job_step(
        &mut self,
        exchange: T,
        work: Work,
        kind: Kind,
        then: Option<WaitId>,
        step: RefreshStep,
        now: UnixTime,
    ) -> Next<T> {
        let waiting_for = match step {
            RefreshStep::Get(get) => JobIo::Fetch(get),
            RefreshStep::ReadCopy(key) => JobIo::ReadCopy(key),
            RefreshStep::Done(copy) => {
                *self.busy_until(kind) = UnixTime::from_millis(0);
                if let Some(copy) = copy {
                    self.side.push(Side::StoreCopy(copy));
                }
                let Some(request) = then else {
                    return Next::Idle(exchange);
                };
                return match self.waits.take(request) {
                    Some(Waiting::Request {
                        exchange,
                        on: Suspended::Job { arrived, .. },
                    }) => self.serve(*arrived, exchange, now),
                    // Evicted from the table before the job was over.
                    _ => {
                        let lost = "a suspended request was evicted before its job was over";
                        self.reply(exchange, None, &EdgeError::Internal(lost.into()), now)
                    }
                };
            }
        };
        let job = Job {
            work,
            kind,
            waiting_for,
            then,
        };
        let (id, _) = self.jobs.park(Waiting::Job { exchange, job });
        Next::Wait(id)
    }

    fn key_events(&mut self, events: Vec<KeyEvent>) {
        for event in events {
            match event {
                KeyEvent::FetchFailed { url, reason } => {
                    self.fetch_failed("jwks_fetch_failed", &url, &reason)
                }
                KeyEvent::Unavailable { urls, state } => self.event(
                    Level::Error,
                    &Event {
                        event: "jwks_unavailable",
                        urls: Some(urls),
                        state: Some(freshness_name(state)),
                        ..Event::default()
                    },
                ),
                KeyEvent::CopyRefused(reason) => {
                    self.failed(Level::Warn, "jwks_copy_refused", &reason)
                }
            }
        }
    }
}

/// The token the request presents (`Bearer` or `DPoP`), or `""`: read again after a wait,
/// from the head the request keeps.
fn presented_token(head: &Head) -> &str {
    credentials(head.authorization.as_deref()).map_or("", |(_, token)| token)
}

/// The object for `key` in `scope`: per location (`local` when the runtime names none, as in
/// local workerd), or one worldwide.
fn object_name(scope: RateLimitScope, key: &str, colo: Option<&str>) -> String {
    match scope {
        RateLimitScope::Global => key.to_owned(),
        RateLimitScope::Location => {
            let location = colo.filter(|colo| !colo.is_empty()).unwrap_or("local");
            format!("{location}/{key}")
        }
    }
}

/// A token in the token cache, or not (and then its client's network, for the failed-auth
/// budget it may cost).
enum Lookup {
    Hit(Arc<VerifiedToken>),
    Miss { ip: String },
}

/// The network a client's per-address budgets are charged to (`rate_limit::network_key`:
/// IPv6 by `/64`), from the platform's `CF-Connecting-IP`.
fn client_network(head: &Head) -> String {
    head.client_ip
        .as_deref()
        .and_then(shared::rate_limit::network_key)
        .unwrap_or_else(|| "unknown".to_owned())
}

fn pull_step(step: PullStep) -> RefreshStep {
    match step {
        PullStep::Get(get) => RefreshStep::Get(get),
        PullStep::Done => RefreshStep::Done(None),
    }
}

/// A panic on purpose (`TEST_TRAP_PATH`): with `panic = "abort"` the instance traps, as it
/// would on any bug.
#[allow(clippy::panic, reason = "the point: tests/ force a trap")]
fn trap() -> ! {
    panic!("{} requested", config::TEST_TRAP_PATH)
}
