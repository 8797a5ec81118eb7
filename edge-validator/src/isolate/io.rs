//! The isolate's vocabulary with its driver: what it asks the runtime to do ([`Io`], and the
//! [`Side`] effects that need no answer) and what comes back ([`Answer`]). Plain data: the
//! driver turns each `Io` into one JS call and each settled promise into one `Answer`.

use super::waits::WaitId;

use std::rc::Rc;

/// One `GET` to the issuer (key set or revocation feed). Its `Debug` leaves the feed token out.
#[derive(Clone, PartialEq, Eq)]
pub struct Get {
    pub url: String,
    pub accept: &'static str,
    /// Sent as `If-None-Match`.
    pub etag: Option<String>,
    /// Sent as `Authorization` (the feed token's `Bearer`).
    pub authorization: Option<Rc<str>>,
}

impl core::fmt::Debug for Get {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Get")
            .field("url", &self.url)
            .field("accept", &self.accept)
            .field("etag", &self.etag)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The issuer's answer to a [`Get`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetched {
    pub status: u16,
    /// The body of a 200 (`None` for any other status).
    pub text: Option<String>,
    pub cache_control: Option<String>,
    pub etag: Option<String>,
}

/// Why one fetch gave nothing usable (logged; the job tries the next URL).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
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

/// The Cache API copy of the key set, as stored (every part untrusted until its tag
/// verifies: the cache is shared with every script on the zone).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CachedCopy {
    pub text: String,
    /// Milliseconds since the epoch, as the header's text.
    pub fetched_at: Option<String>,
    /// The issuer's `Cache-Control` when it was fetched.
    pub cache_control: Option<String>,
    pub etag: Option<String>,
    /// The copy's HMAC tag (`shared::keyset_copy`).
    pub mac: Option<String>,
}

/// The copy to store in the Cache API (kept alive past the response).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyToStore {
    pub key: String,
    pub text: String,
    pub keep_secs: u64,
    pub fetched_at_ms: u64,
    pub cache_control: Option<String>,
    pub etag: Option<String>,
    pub mac: String,
}

/// What a wait asks the runtime for; its outcome comes back as the [`Answer`] of the same
/// name, to [`super::Isolate::resume`] under the wait's id.
#[derive(Debug, PartialEq, Eq)]
pub enum Io<'a> {
    /// A fetch from the issuer, aborted after `timeout_ms` (body included):
    /// [`Answer::Fetched`].
    Fetch { get: &'a Get, timeout_ms: u64 },
    /// The Cache API copy under this key: [`Answer::Copy`].
    ReadCopy { key: &'a str },
    /// A timer (a request polling for another's job): [`Answer::Timer`].
    Sleep { ms: u64 },
    /// The end of the wait `call`, a background one that another request started (a replay
    /// call this request's proof goes in, or the one out before it): the driver waits on
    /// that wait's promise from this request's own event, never settling one request's
    /// promise from another's (the runtime runs a continuation in the request that settled
    /// its promise, and I/O started there would be that request's). Or a timer after
    /// `timeout_ms`, the request's own, which also keeps it from looking hung to the runtime.
    /// [`Answer::Joined`] either way, and at once when `call` is over.
    Join { call: WaitId, timeout_ms: u64 },
    /// A WebCrypto import of the P-256 key `key` (uncompressed `point`); the driver keeps
    /// it under that name: [`Answer::Imported`].
    Import { key: KeyName<'a>, point: [u8; 65] },
    /// `crypto.subtle.verify` of `signature` over `message` with the key imported as
    /// `key`: [`Answer::Verified`].
    Verify {
        key: KeyName<'a>,
        signature: &'a [u8; 64],
        message: &'a [u8],
    },
    /// `GET url` on the rate-limit Durable Object named `name`, given up after
    /// `timeout_ms` (so every ask settles, a background renewal's too): [`Answer::Limit`].
    AskLimiter {
        name: &'a str,
        url: &'a str,
        timeout_ms: u64,
    },
    /// The request (less the credential and every identity header the client could forge)
    /// to `target`, with `assertion` as the edge's signed identity (none for a public
    /// route): [`Answer::Origin`].
    Forward {
        target: &'a str,
        assertion: Option<&'a str>,
    },
}

/// The name a WebCrypto key is imported under. The issuer's keys and the clients' DPoP keys
/// are apart: no `kid` in a key set can name a key that a client brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyName<'a> {
    /// A key of the issuer's key set, by `kid`.
    Issuer(&'a str),
    /// A DPoP proof key, by its RFC 7638 thumbprint.
    Proof(&'a str),
}

/// How a wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Answer {
    /// An issuer fetch: its answer, or why there was none.
    Fetched(Result<Fetched, FetchError>),
    /// The Cache API copy (`None`: there was none, or it could not be read).
    Copy(Option<CachedCopy>),
    /// The timer fired.
    Timer,
    /// The wait joined ended (or the timer fired).
    Joined,
    /// The key import: done (the driver holds the key), or why not.
    Imported(Result<(), String>),
    /// WebCrypto's verdict, or why it gave none.
    Verified(Result<bool, String>),
    /// The Durable Object's JSON decision, or why it could not be asked.
    Limit(Result<String, String>),
    /// The origin's status, or why it was not reached.
    Origin(Result<u16, ForwardError>),
}

impl Answer {
    /// Which wait this answer is for.
    #[must_use]
    pub fn kind(&self) -> Expect {
        match self {
            Self::Fetched(_) => Expect::Fetched,
            Self::Copy(_) => Expect::Copy,
            Self::Timer => Expect::Timer,
            Self::Joined => Expect::Joined,
            Self::Imported(_) => Expect::Imported,
            Self::Verified(_) => Expect::Verified,
            Self::Limit(_) => Expect::Limit,
            Self::Origin(_) => Expect::Origin,
        }
    }
}

/// Which [`Answer`] a wait expects (the driver reads the settled JS value accordingly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Fetched,
    Copy,
    Timer,
    Joined,
    Imported,
    Verified,
    Limit,
    Origin,
}

/// Why forwarding failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForwardError {
    /// Building the outbound request failed (a runtime error, not the client's).
    Build(String),
    /// The origin could not be reached (connection refused, DNS, TLS, reset).
    Unreachable(String),
}

/// How loud a log line is (the console method, so Workers Logs keeps the level).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Log,
    Warn,
    Error,
}

/// What the driver does beside the event's answer, with no answer to wait for.
#[derive(Debug, PartialEq, Eq)]
pub enum Side {
    /// Writes one JSON line.
    Log { level: Level, line: String },
    /// Starts the I/O of the background job waiting under `id` ([`super::Isolate::io`]),
    /// kept alive by the event's `waitUntil`; its answer comes back under `id` like any
    /// other.
    Background { id: WaitId },
    /// Stores the key set's copy (kept alive by the event's `waitUntil`; a failure is logged
    /// by the driver: only the next isolate misses the copy).
    StoreCopy(CopyToStore),
    /// Drops the DPoP proof key imported for thumbprint `jkt` (the isolate's bounded table
    /// let it go).
    ForgetProofKey { jkt: String },
}
