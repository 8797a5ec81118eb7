//! Rate limits on the token endpoint (and revocation and introspection, which authenticate
//! clients the same way), per source address and per client, with the GCRA core from
//! `shared`. A failed authentication costs [`FAILED_AUTH_COST`] requests more, so guessing
//! secrets runs out of budget fast.
//!
//! A request to the token, revocation or introspection endpoint is one decision, made after
//! client authentication: its address's charge, then at the token endpoint its client's
//! grant (or, when authentication failed, the failure's extra cost). A denial of an address
//! is kept until its retry-after ([`TokenLimits::known_denial`]): a flood from an address
//! over its budget is refused before its form is parsed or its client looked up, without
//! asking the state again. Such a denial holds that long whatever else is charged meanwhile
//! (charges only push it later; `KnownDenial` says what it does not survive). What a flood
//! still costs: once a denial ends, the requests that arrive before the next decision is
//! made (one authentication and one decision's time, each retry-after) are authenticated
//! before they are refused.
//!
//! State lives in this instance's memory (`limits_backend = "memory"`: N instances allow N
//! times a plan) or in Redis (`"redis"`: one state for every instance, one atomic script per
//! call, whatever its number of charges, and one call for the decisions that arrived while
//! the calls before were out: `RedisStore`; a busy key's decisions are mostly made from
//! leases of permits Redis charged ahead: `leases`). With Redis down or slow past
//! `redis_timeout_ms`, a decision falls back to this instance's memory: the limits fail open
//! to per-instance limits rather than refusing tokens, and each fallback is counted
//! (`issuer_limits_redis_fallbacks_total`) and logged.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use shared::lease::LeasePolicy;
use shared::rate_limit::{check_weighted, Decision, GcraState};
use shared::{RatePlan, UnixTime};
use tokio::sync::{mpsc, oneshot};

mod leases;
use leases::{Ask, Leases, Taken};

/// What a failed client authentication costs, in requests.
pub const FAILED_AUTH_COST: u32 = 5;
/// Entries kept per table before idle ones are swept.
const MAX_ENTRIES: usize = 100_000;
/// How long Redis counts as down after a failure (decisions come from memory meanwhile,
/// without trying it), and the least time between two fallback log lines.
const REDIS_RETRY: Duration = Duration::from_secs(1);

/// One GCRA table keyed by text (a network or a client id), bounded in size, with its plan: one lock for both, so a
/// reload that changes the plan and a decision never wait on each other in turn.
#[derive(Debug)]
struct Table {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The plan, which a configuration reload may change.
    plan: RatePlan,
    states: HashMap<String, GcraState>,
}

impl Table {
    fn new(plan: RatePlan) -> Self {
        Self {
            inner: Mutex::new(Inner {
                plan,
                states: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn plan(&self) -> RatePlan {
        self.lock().plan
    }

    /// A new plan starts every key afresh: state measured against the old plan (a debt
    /// run up under a strict one) would judge the new one wrongly.
    fn set_plan(&self, plan: RatePlan) {
        let mut inner = self.lock();
        if inner.plan != plan {
            inner.plan = plan;
            inner.states.clear();
        }
    }

    fn check(&self, key: &str, now: UnixTime, cost: u32) -> Decision {
        let mut inner = self.lock();
        let Inner { plan, states } = &mut *inner;
        if states.len() >= MAX_ENTRIES && !states.contains_key(key) {
            // Idle entries (TAT in the past) carry no information: a fresh state is the same.
            let now_nanos = now.as_millis().saturating_mul(1_000_000);
            states.retain(|_, state| state.tat_nanos > now_nanos);
        }
        let state = states.get(key).copied().unwrap_or_default();
        let (decision, next) = check_weighted(plan, state, now, cost);
        if states.len() < MAX_ENTRIES || states.contains_key(key) {
            states.insert(key.to_owned(), next);
        }
        decision
    }
}

/// The per-address and per-client limiters: the token endpoint's, which revocation and
/// introspection share (they authenticate clients the same way), and the feed's own.
#[derive(Debug)]
pub struct TokenLimits {
    /// Keyed by network (`shared::rate_limit::address_network`, as text).
    per_address: Table,
    per_client: Table,
    /// Keyed by network, and `token/<network>` for polls with a feed token.
    feed_per_address: Table,
    /// Networks whose per-address budget is known spent (`network_of`), until when.
    denied: Mutex<KnownDenials>,
    /// The shared state, when `limits_backend = "redis"`.
    redis: Option<RedisStore>,
    /// Decisions made from memory because Redis did not answer.
    fallbacks: Counter,
}

impl TokenLimits {
    /// Limiters with these plans, in memory.
    #[must_use]
    pub fn new(per_address: RatePlan, per_client: RatePlan, feed_per_address: RatePlan) -> Self {
        Self {
            per_address: Table::new(per_address),
            per_client: Table::new(per_client),
            feed_per_address: Table::new(feed_per_address),
            denied: Mutex::new(KnownDenials::default()),
            redis: None,
            fallbacks: Counter::default(),
        }
    }

    /// The same limits kept in Redis at `client`, each call waiting at most `timeout`;
    /// `fallbacks` counts the decisions made from memory instead.
    #[must_use]
    pub fn in_redis(
        mut self,
        client: redis::Client,
        timeout: Duration,
        fallbacks: Counter,
    ) -> Self {
        self.redis = Some(RedisStore::new(client, timeout));
        self.fallbacks = fallbacks;
        self
    }

    /// With Redis, leases of permits under `policy` (`leases`: the bound, and what it costs):
    /// a busy key's decisions are made here from permits Redis charged ahead, counted in
    /// `leased`. Without Redis, nothing changes.
    #[must_use]
    pub fn leasing(mut self, policy: LeasePolicy, leased: Counter) -> Self {
        if let Some(redis) = &mut self.redis {
            // An ask counts as out for as long as its decision may wait for Redis.
            let ask_for = redis.link.timeout.saturating_mul(2);
            redis.leases = Some((Leases::new(policy, ask_for), leased));
        }
        self
    }

    /// With Redis, one call of the limits script before serving, made at `now` as a
    /// decision would be (`RedisProbe`, `RedisRefused`: what passes, and what stops the
    /// start).
    ///
    /// # Errors
    /// [`RedisRefused`] when Redis answers with an error of its configuration.
    pub async fn probe_redis(&self, now: UnixTime) -> Result<RedisProbe, RedisRefused> {
        match &self.redis {
            Some(redis) => {
                // One decision of one charge of no requests (any plan: it charges nothing).
                let (answer, _) = oneshot::channel();
                let probe = Queued {
                    now_micros: now.as_millis().saturating_mul(1_000),
                    charges: vec![QueuedCharge {
                        key: PROBE_KEY.to_owned(),
                        plan: self.per_client.plan(),
                        signed_cost: 0,
                        extra: 0,
                    }],
                    answer,
                };
                redis.link.probe(&probe).await
            }
            None => Ok(RedisProbe::NotUsed),
        }
    }

    /// New plans (a configuration reload): a table whose plan changed starts afresh.
    pub fn set_plans(
        &self,
        per_address: RatePlan,
        per_client: RatePlan,
        feed_per_address: RatePlan,
    ) {
        self.per_address.set_plan(per_address);
        self.per_client.set_plan(per_client);
        self.feed_per_address.set_plan(feed_per_address);
        // A denial under the old plan may not hold under the new one.
        lock(&self.denied).entries.clear();
    }

    /// Charges one read of the revocation feed to `address`'s network: to the budget of polls
    /// with a feed token (`with_token`), which no one without one can run down, or to the
    /// other. Both budgets have the same plan.
    pub async fn feed(&self, address: IpAddr, with_token: bool, now: UnixTime) -> Decision {
        let key = if with_token {
            format!("token/{}", network(address))
        } else {
            network(address)
        };
        let charge = Charge::enforced(&self.feed_per_address, "feed", key, 1);
        self.decide(&charge, &[], now).await.decision
    }

    /// The retry-after, in seconds, of `address`'s network (the address for IPv4, its `/64`
    /// for IPv6: `shared::rate_limit::address_network`) when a request of it was denied
    /// until after `now`; `None` when none is known (the request is then decided in full,
    /// after authentication).
    pub fn known_denial(&self, address: IpAddr, now: UnixTime) -> Option<u64> {
        let network = shared::rate_limit::address_network(address);
        let mut denied = lock(&self.denied);
        let known = *denied.entries.get(&network)?;
        // Only while it holds: not past its end, not from before a clock stepped back, and
        // under the plan that denied it (a reload may race with the decision that made it).
        if now < known.since || now >= known.until || known.plan != self.per_address.plan() {
            denied.entries.remove(&network);
            return None;
        }
        Some(
            known
                .until
                .as_millis()
                .saturating_sub(now.as_millis())
                .div_ceil(1000),
        )
    }

    /// Charges a request whose client authenticated: one request to `address`'s network,
    /// then, at the token endpoint, one grant to `grant_to`. Denied by the first that does
    /// not fit (the address's charge stays when the client's is denied).
    pub async fn authenticated(
        &self,
        address: IpAddr,
        grant_to: Option<&str>,
        now: UnixTime,
    ) -> Decision {
        let request = Charge::enforced(&self.per_address, "address", network(address), 1);
        match grant_to {
            Some(client_id) => {
                let grant = Charge::enforced(&self.per_client, "client", client_id.to_owned(), 1);
                self.decide_request(address, &request, &[grant], now).await
            }
            None => self.decide_request(address, &request, &[], now).await,
        }
    }

    /// Charges a request refused before its client authenticated (a bad form, a failed or
    /// malformed authentication) to `address`'s network: one request, then, when the client
    /// failed to authenticate, [`FAILED_AUTH_COST`] more if they fit. Every guess at a
    /// secret costs at least one request, and more while the budget lasts.
    pub async fn refused(&self, address: IpAddr, now: UnixTime, failed_auth: bool) -> Decision {
        let network = network(address);
        let request = Charge::enforced(&self.per_address, "address", network.clone(), 1);
        if !failed_auth {
            return self.decide_request(address, &request, &[], now).await;
        }
        let failure = Charge {
            enforced: false,
            ..Charge::enforced(&self.per_address, "address", network, FAILED_AUTH_COST)
        };
        self.decide_request(address, &request, &[failure], now)
            .await
    }

    /// A request's decision (`request`: the address's charge), keeping a denial of the
    /// address for [`TokenLimits::known_denial`].
    async fn decide_request(
        &self,
        address: IpAddr,
        request: &Charge<'_>,
        then: &[Charge<'_>],
        now: UnixTime,
    ) -> Decision {
        let plan = self.per_address.plan();
        let verdict = self.decide(request, then, now).await;
        if !verdict.decision.allowed && verdict.by == 0 {
            let known = KnownDenial {
                since: now,
                until: now.plus_millis(verdict.decision.retry_after_ms),
                plan,
            };
            let network = shared::rate_limit::address_network(address);
            lock(&self.denied).insert(network, known, now);
        }
        verdict.decision
    }

    /// The decision on `first` (enforced), then `then`: from Redis (or the leases of permits
    /// it granted) when it is the backend and answers, else from memory.
    async fn decide(&self, first: &Charge<'_>, then: &[Charge<'_>], now: UnixTime) -> Verdict {
        let Some(redis) = &self.redis else {
            return decide_in_memory(first, then, now);
        };
        match redis.decide(first, then, now).await {
            Ok(verdict) => verdict,
            Err(err) => {
                self.fallbacks.inc();
                if redis.should_log() {
                    tracing::warn!(error = %err, "redis limits unavailable: this instance's own limits apply");
                }
                decide_in_memory(first, then, now)
            }
        }
    }
}

/// The networks known to be over their per-address budget, at most [`MAX_ENTRIES`]: when
/// full, the ended ones are swept out at most once a second (a sweep is a pass over all),
/// and a new one is not kept until there is room (its request is then decided in full).
#[derive(Debug, Default)]
struct KnownDenials {
    entries: HashMap<IpAddr, KnownDenial>,
    next_sweep: UnixTime,
}

/// A denial of a network's budget: it holds from `since` until `until` under `plan`, since
/// the GCRA state it was read from only moves later whatever else is charged meanwhile.
/// (What it does not survive, each for at most one retry-after: Redis losing its state, or
/// a decision falling back to memory while one from Redis is known, or the other way.)
#[derive(Debug, Clone, Copy)]
struct KnownDenial {
    since: UnixTime,
    until: UnixTime,
    plan: RatePlan,
}

impl KnownDenials {
    fn insert(&mut self, network: IpAddr, known: KnownDenial, now: UnixTime) {
        if self.entries.len() >= MAX_ENTRIES && now >= self.next_sweep {
            self.entries.retain(|_, held| now < held.until);
            self.next_sweep = now.plus_millis(1_000);
        }
        if self.entries.len() < MAX_ENTRIES || self.entries.contains_key(&network) {
            self.entries.insert(network, known);
        }
    }
}

/// `address`'s network, as the tables key it.
fn network(address: IpAddr) -> String {
    shared::rate_limit::address_network(address).to_string()
}

/// One charge of a decision: `cost` requests to `key` in `table` (named `name` in Redis). An
/// enforced charge that does not fit denies the decision, and the charges after it are not
/// made; one that is not enforced is spent if it fits and never denies. A decision's first
/// charge is enforced whatever it says.
struct Charge<'a> {
    table: &'a Table,
    name: &'static str,
    key: String,
    cost: u32,
    enforced: bool,
}

impl<'a> Charge<'a> {
    fn enforced(table: &'a Table, name: &'static str, key: String, cost: u32) -> Self {
        Self {
            table,
            name,
            key,
            cost,
            enforced: true,
        }
    }
}

/// A decision, and which charge made it (its index): the one denied, else the last enforced.
struct Verdict {
    decision: Decision,
    by: usize,
}

/// `first`, then `then`, in order against this instance's tables.
fn decide_in_memory(first: &Charge<'_>, then: &[Charge<'_>], now: UnixTime) -> Verdict {
    let mut verdict = Verdict {
        decision: first.table.check(&first.key, now, first.cost),
        by: 0,
    };
    for (by, charge) in (1..).zip(then) {
        if !verdict.decision.allowed {
            break;
        }
        let decision = charge.table.check(&charge.key, now, charge.cost);
        if charge.enforced {
            verdict = Verdict { decision, by };
        }
    }
    verdict
}

/// GCRA in Redis, the same arithmetic as `shared::rate_limit::check_weighted` in microseconds
/// (Lua numbers are doubles: nanoseconds since the epoch would not fit their 53 bits), over
/// one call's decisions, each one or more charges in order, as `decide_in_memory` does. Each
/// key holds the theoretical arrival time and expires when it passes (an idle key is the same
/// as none).
///
/// `KEYS` are the call's keys, each once. `ARGV[1]` holds the call's numbers, each a
/// little-endian double (one argument, unpacked in one `struct.unpack`, rather than one
/// argument of text per number for Redis to parse and the script to convert): the call's
/// plans (their number, then each plan's emission interval in microseconds and its burst),
/// then each key's plan (from 1), then, for each decision, its number of charges and its
/// time, then three per charge: its key (from 1), its cost in requests, negative when the
/// charge is not enforced, and the extra permits to charge with it if they fit at once (a
/// lease's ask: `leases`; 0 for none). A call of [`CALL_BATCH`] decisions of two charges
/// holds a few hundred numbers, far inside what one unpack may return (Lua's stack).
/// `struct` is one of the libraries Redis (and Valkey) load for scripts; a server without it
/// fails every call, and the limits fall back to memory, counted and logged with Redis's
/// error.
///
/// Each key is read once per call (one `MGET`), and each key whose state changed is written
/// once, at the end, with its last state and its last charge's expiry, as the last of
/// separate `SET`s would leave it. The script is atomic, so no one sees the states in
/// between, and the state is stored as text that reads back as the same double (`%.17g`),
/// so a call of many decides exactly as that many calls of one would. A flood from one
/// address or client puts many charges of one key in each call, and the call's reads and
/// writes then grow with its keys, not its charges. Plans and keys go once per call, and the
/// Lua locals below once per decision: the script's time is Redis's cost per call beyond the
/// round trip, and it grows with the keys a call writes (`issuer/benches/redis-call` prints
/// both).
///
/// Returns five numbers per decision: allowed (0/1), remaining, reset-after and retry-after
/// in ms, and the index (from 1) of the charge that decided: the one denied, else the last
/// enforced; then one per charge: the permits charged (0 when it was not, else 1 and the
/// extra ones granted, which the remaining and reset-after count in). (The keys of one call
/// are not in one Redis Cluster slot: the backend is one Redis, or a replicated one behind a
/// single endpoint.)
const GCRA_SCRIPT: &str = r"
local ceil, floor = math.ceil, math.floor
local last = #ARGV[1] / 8
local n = {struct.unpack('<' .. string.rep('d', last), ARGV[1])}
local units, bursts = {}, {}
local at = 2
for plan = 1, n[1] do
  units[plan] = n[at]
  bursts[plan] = n[at + 1]
  at = at + 2
end
local plans, tats, ttls = {}, redis.call('MGET', unpack(KEYS)), {}
for k = 1, #KEYS do
  plans[k] = n[at]
  tats[k] = tonumber(tats[k] or '0')
  at = at + 1
end
local out, o = {}, 0
while at < last do
  local count = n[at]
  local now = n[at + 1]
  at = at + 2
  local allowed, remaining, reset, retry, by = 1, 0, 0, 0, 0
  -- Each charge's permits go after the decision's five numbers.
  local permits = o + 5
  for i = 1, count do
    out[permits + i] = 0
    if allowed == 1 then
      local k = n[at]
      local cost = n[at + 1]
      local extra = n[at + 2]
      local enforced = cost > 0
      if not enforced then cost = -cost end
      local plan = plans[k]
      local unit, burst = units[plan], bursts[plan]
      local tat = tats[k]
      if tat < now then tat = now end
      local new_tat = tat + unit * cost
      local allow_at = new_tat - unit * burst
      if now < allow_at then
        if enforced then
          allowed, remaining, by = 0, 0, i
          reset, retry = ceil((tat - now) / 1000), ceil((allow_at - now) / 1000)
        end
      else
        local room = floor((now - allow_at) / unit)
        if room > burst - 1 then room = burst - 1 end
        if extra > room then extra = room end
        new_tat = new_tat + unit * extra
        out[permits + i] = 1 + extra
        local ttl = ceil((new_tat - now) / 1000)
        tats[k], ttls[k] = new_tat, ttl + 1
        if enforced then
          remaining = room - extra
          reset, retry, by = ttl, 0, i
        end
      end
    end
    at = at + 3
  end
  out[o + 1], out[o + 2], out[o + 3], out[o + 4], out[o + 5] = allowed, remaining, reset, retry, by
  o = permits + count
end
-- Each changed state, with its last charge's expiry.
for k, ttl in pairs(ttls) do
  redis.call('SET', KEYS[k], string.format('%.17g', tats[k]), 'PX', ttl)
end
return out
";

/// Key prefix of the limiter state in Redis.
const REDIS_PREFIX: &str = "edgeward:issuer:limit:";
/// The key of the start-up call (`RedisLink::probe`): under the prefix, so an ACL written for
/// the limits' keys covers it, and named by no request.
const PROBE_KEY: &str = "edgeward:issuer:limit:probe";
/// Most decisions one call carries.
const CALL_BATCH: usize = 64;
/// Most calls out at once. The next call goes out when none is, or when a whole batch waits:
/// near Redis, decisions under load share calls (one out at a time); a far Redis (a long
/// round trip) still takes more than one batch per round trip.
const CALLS_OUT: usize = 8;

/// The Redis side. Decisions go to Redis through one task of their own (`serve_calls`),
/// which has one call out at a time unless a whole batch waits: the decisions that arrive
/// while a call is out go together in the next (group commit). A call's fixed cost (a round
/// trip, the command, the script's start) is then shared under load, a lone decision waits
/// for no one, and a far Redis still takes up to [`CALLS_OUT`] batches per round trip. The
/// script still makes every decision of a call on its own, in order, atomically: a call of
/// many decides exactly as that many calls of one would (two calls out at once may reach
/// Redis in either order: a decision a moment late is judged at its own time, at worst a
/// little stricter). A decision waits for at most the calls out and its own.
/// After any failure Redis counts as down for [`REDIS_RETRY`]: decisions come from memory
/// at once, without waiting out a timeout each. With leases (`TokenLimits::leasing`), a
/// decision that leases cover makes no call at all.
struct RedisStore {
    link: Arc<RedisLink>,
    /// The task's queue, started with the first decision (inside the runtime), and again if
    /// the task is gone (its runtime shut down); the task ends when the store is dropped.
    calls: Mutex<Option<mpsc::Sender<Queued>>>,
    next_log: Mutex<Option<Instant>>,
    /// Leases of permits (`TokenLimits::leasing`), and the decisions made from them.
    leases: Option<(Leases, Counter)>,
}

/// What the calling task needs: how to reach Redis, and whether it is down.
struct RedisLink {
    client: redis::Client,
    timeout: Duration,
    script: redis::Script,
    /// Until when Redis counts as down after a failure (no call waits out another timeout
    /// until then).
    down_until: Mutex<Option<Instant>>,
    /// Set while the task connects: the decisions that arrive meanwhile are made from
    /// memory at once rather than queue behind the attempt.
    connecting: AtomicBool,
    /// Set when Redis answered a call with an error: the next call, after `REDIS_RETRY`,
    /// goes on a new connection. The manager reconnects by itself only after an I/O
    /// error, and a reconnect that Redis refused (a password changed, a user deleted) or a
    /// node that became a replica would otherwise fail every call until a restart.
    reopen: AtomicBool,
}

/// One decision waiting for a call: its time, its charges, and where its answer goes.
struct Queued {
    now_micros: u64,
    charges: Vec<QueuedCharge>,
    answer: oneshot::Sender<Result<Answered, RedisLimitError>>,
}

/// A decision as Redis made it: the verdict, and for each charge the permits charged with it
/// (0: not charged; else 1, and the extra permits its ask was granted).
struct Answered {
    verdict: Verdict,
    permits: Vec<u32>,
}

impl Queued {
    /// How many numbers the script returns for this decision: five, and one per charge.
    fn answer_len(&self) -> usize {
        5 + self.charges.len()
    }

    /// This decision as Redis made it, from the script's numbers for it. The limit is the
    /// burst of the plan its deciding charge went to Redis under (a reload meanwhile does not
    /// change what was decided); `None` for numbers that do not fit its charges.
    fn answered(&self, numbers: &[u64]) -> Option<Answered> {
        let (&[allowed, remaining, reset_after_ms, retry_after_ms, by], permits) =
            numbers.split_first_chunk::<5>()?;
        let by = usize::try_from(by.checked_sub(1)?).ok()?;
        let deciding = self.charges.get(by)?;
        if permits.len() != self.charges.len() {
            return None;
        }
        Some(Answered {
            verdict: Verdict {
                decision: Decision {
                    allowed: allowed == 1,
                    limit: deciding.plan.burst(),
                    remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
                    reset_after_ms,
                    retry_after_ms,
                },
                by,
            },
            permits: permits
                .iter()
                .map(|&permits| u32::try_from(permits).unwrap_or(u32::MAX))
                .collect(),
        })
    }
}

/// A charge as a call sends it (its key once per call, with the plan; its cost with each
/// charge).
struct QueuedCharge {
    key: String,
    plan: RatePlan,
    /// In requests, at least 1; negative when the charge is not enforced (the script reads
    /// the sign); 0 only in the start-up call (`TokenLimits::probe_redis`), which charges
    /// nothing.
    signed_cost: i64,
    /// Permits to charge beyond it, when they fit at once: a lease's ask (`leases`).
    extra: u32,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("timeout", &self.link.timeout)
            .finish_non_exhaustive()
    }
}

/// Why a decision could not come from Redis.
#[derive(Debug, Clone, thiserror::Error)]
enum RedisLimitError {
    #[error("no connection (retrying)")]
    Down,
    #[error("timed out")]
    Timeout,
    #[error("{0}")]
    Redis(String),
}

impl RedisStore {
    fn new(client: redis::Client, timeout: Duration) -> Self {
        Self {
            link: Arc::new(RedisLink {
                client,
                timeout,
                script: redis::Script::new(GCRA_SCRIPT),
                down_until: Mutex::new(None),
                connecting: AtomicBool::new(false),
                reopen: AtomicBool::new(false),
            }),
            calls: Mutex::new(None),
            next_log: Mutex::new(None),
            leases: None,
        }
    }

    /// [`decide_in_memory`]'s decision, made by [`GCRA_SCRIPT`] in the next call, or from
    /// this instance's leases when they cover every charge.
    async fn decide(
        &self,
        first: &Charge<'_>,
        then: &[Charge<'_>],
        now: UnixTime,
    ) -> Result<Verdict, RedisLimitError> {
        let mut charges: Vec<QueuedCharge> = std::iter::once(first)
            .chain(then)
            .enumerate()
            .map(|(n, charge)| {
                let plan = charge.table.plan();
                let cost = i64::from(charge.cost.max(1));
                QueuedCharge {
                    // The plan is part of the key: a reloaded plan starts every key afresh,
                    // as in memory.
                    key: format!("{REDIS_PREFIX}{}:{plan}:{}", charge.name, charge.key),
                    plan,
                    signed_cost: if n == 0 || charge.enforced {
                        cost
                    } else {
                        -cost
                    },
                    extra: 0,
                }
            })
            .collect();
        // Only charges of one enforced request, of plans big enough to lease, are leased: the
        // rest is rare, or small, and exact.
        let leases = self.leases.as_ref().filter(|(leases, _)| {
            charges
                .iter()
                .all(|charge| charge.signed_cost == 1 && leases.leases(&charge.plan))
        });
        // The verdict of a decision its leases made: the last charge decided.
        let by = charges.len() - 1;
        let leased = |decision| Verdict { decision, by };
        let keys = || charges.iter().map(|charge| charge.key.as_str());
        let mut renewing = false;
        if let Some((leases, counted)) = leases {
            match leases.take_all(keys(), now, true) {
                Taken::Spent(decision) => {
                    counted.inc();
                    return Ok(leased(decision));
                }
                // Covered, but a lease is due for renewal: this decision asks Redis for its
                // successor, and comes back to the leases if Redis does not allow it.
                Taken::Renew => renewing = true,
                Taken::Uncovered => {}
            }
        }
        // The keys a renewing decision comes back to.
        let renewed: Vec<String> = if renewing {
            keys().map(str::to_owned).collect()
        } else {
            Vec::new()
        };
        // Back to the leases: the keys Redis did not charge (`charged`: the permits it charged
        // each; none when it did not answer) spend a permit of their lease each.
        let covered = |made: Result<Verdict, RedisLimitError>, charged: &[u32]| {
            let (Some((leases, counted)), true) = (leases, renewing) else {
                return made;
            };
            if made.as_ref().is_ok_and(|verdict| verdict.decision.allowed) {
                return made;
            }
            let uncharged = renewed
                .iter()
                .enumerate()
                .filter(|&(at, _)| charged.get(at).is_none_or(|&permits| permits == 0))
                .map(|(_, key)| key.as_str());
            match leases.take_all(uncharged, now, false) {
                Taken::Spent(decision) => {
                    counted.inc();
                    Ok(leased(decision))
                }
                _ => made,
            }
        };
        if is_down(&self.link.down_until) || self.link.connecting.load(Ordering::Relaxed) {
            return covered(Err(RedisLimitError::Down), &[]);
        }
        // The asks sent with this decision: the charge's place, its key, the ask.
        let mut asked: Vec<(usize, String, Ask)> = Vec::new();
        if let Some((leases, _)) = leases {
            for (at, charge) in charges.iter_mut().enumerate() {
                if let Some(ask) = leases.ask(&charge.key, &charge.plan, now) {
                    charge.extra = ask.extra;
                    asked.push((at, charge.key.clone(), ask));
                }
            }
        }
        let answered = self.call(charges, now).await;
        if let Some((leases, _)) = leases {
            for (at, key, ask) in asked {
                let granted = answered.as_ref().ok().map(|answered| {
                    let permits = answered.permits.get(at).copied().unwrap_or_default();
                    (permits, answered.verdict.decision)
                });
                leases.answered(&key, ask, now, granted);
            }
        }
        match answered {
            Ok(Answered { verdict, permits }) => covered(Ok(verdict), &permits),
            Err(err) => covered(Err(err), &[]),
        }
    }

    /// The decision of `charges` at `now`, in the next call.
    async fn call(
        &self,
        charges: Vec<QueuedCharge>,
        now: UnixTime,
    ) -> Result<Answered, RedisLimitError> {
        let (answer, answered) = oneshot::channel();
        let queued = Queued {
            now_micros: now.as_millis().saturating_mul(1_000),
            charges,
            answer,
        };
        let calls = {
            let mut calls = lock(&self.calls);
            match calls.as_ref() {
                Some(running) if !running.is_closed() => running.clone(),
                _ => {
                    let (sender, queue) = mpsc::channel(CALL_BATCH * 16);
                    tokio::spawn(serve_calls(Arc::clone(&self.link), queue));
                    calls.insert(sender).clone()
                }
            }
        };
        // The calls out, then this one's: each waits at most the timeout.
        let waited = tokio::time::timeout(self.link.timeout.saturating_mul(2), async {
            calls
                .send(queued)
                .await
                .map_err(|_| RedisLimitError::Down)?;
            answered.await.map_err(|_| RedisLimitError::Down)?
        })
        .await;
        waited.unwrap_or(Err(RedisLimitError::Timeout))
    }

    /// Whether a fallback may be logged now (at most once per [`REDIS_RETRY`]).
    fn should_log(&self) -> bool {
        due(&self.next_log, REDIS_RETRY)
    }
}

/// The calling task: takes what is queued (at most [`CALL_BATCH`]) into a call, and again,
/// until the store is dropped: a call goes out when none is out, or when a whole batch waits
/// (at most [`CALLS_OUT`] at once); each call answers its own decisions. The connection is
/// made for the first call and reconnects by itself once made.
async fn serve_calls(link: Arc<RedisLink>, mut queue: mpsc::Receiver<Queued>) {
    let mut connection = None;
    let mut waiting = Vec::with_capacity(CALL_BATCH);
    let mut out = tokio::task::JoinSet::new();
    let mut open = true;
    loop {
        // A decision whose request stopped waiting is not made.
        waiting.retain(|queued: &Queued| !queued.answer.is_closed());
        if !waiting.is_empty()
            // Down: told at once (by `connection`), not after the calls out.
            && (is_down(&link.down_until)
                || (out.len() < CALLS_OUT && (out.is_empty() || waiting.len() >= CALL_BATCH)))
        {
            let batch: Vec<Queued> = waiting.drain(..waiting.len().min(CALL_BATCH)).collect();
            match link.connection(&mut connection).await {
                Ok(made) => {
                    let link = Arc::clone(&link);
                    out.spawn(async move {
                        let answers = link.call(made, &batch).await;
                        answer(batch, &answers);
                    });
                }
                Err(err) => answer(batch, &Err(err)),
            }
            continue;
        }
        if !open && waiting.is_empty() && out.is_empty() {
            return;
        }
        tokio::select! {
            received = queue.recv_many(&mut waiting, CALL_BATCH), if open && waiting.len() < CALL_BATCH => {
                open = received > 0;
            }
            Some(_) = out.join_next(), if !out.is_empty() => {}
            else => return,
        }
    }
}

/// Tells each decision of `batch` what Redis made of it, from its numbers of `answers`
/// (`Queued::answer_len` each, in order), or the call's error.
fn answer(batch: Vec<Queued>, answers: &Result<Vec<u64>, RedisLimitError>) {
    let mut at = 0;
    for queued in batch {
        let len = queued.answer_len();
        let answer = match answers {
            Ok(answers) => answers
                .get(at..at + len)
                .and_then(|numbers| queued.answered(numbers))
                .ok_or_else(|| {
                    RedisLimitError::Redis("an answer that does not fit its call".to_owned())
                }),
            Err(err) => Err(err.clone()),
        };
        at += len;
        // The request may have stopped waiting meanwhile: nothing to tell it.
        let _ = queued.answer.send(answer);
    }
}

impl RedisLink {
    /// The connection for the next call (a handle onto one multiplexed connection), made
    /// once, and again after Redis answered a call with an error; none while Redis counts
    /// as down.
    async fn connection(
        &self,
        connection: &mut Option<redis::aio::ConnectionManager>,
    ) -> Result<redis::aio::ConnectionManager, RedisLimitError> {
        if is_down(&self.down_until) {
            return Err(RedisLimitError::Down);
        }
        if self.reopen.swap(false, Ordering::Relaxed) {
            *connection = None;
        }
        match connection {
            Some(made) => Ok(made.clone()),
            None => Ok(connection.insert(self.connect().await?).clone()),
        }
    }

    /// One call of [`GCRA_SCRIPT`] for `batch`: `Queued::answer_len` numbers per decision,
    /// in order.
    async fn call(
        &self,
        mut connection: redis::aio::ConnectionManager,
        batch: &[Queued],
    ) -> Result<Vec<u64>, RedisLimitError> {
        let invocation = self.invocation(batch);
        match tokio::time::timeout(self.timeout, invocation.invoke_async(&mut connection)).await {
            Ok(Ok(answers)) => Ok(answers),
            // A Redis that stopped answering costs one timeout, not one per request: the
            // next calls until REDIS_RETRY decide from memory at once.
            Ok(Err(err)) => {
                mark_down(&self.down_until);
                self.reopen.store(true, Ordering::Relaxed);
                Err(RedisLimitError::Redis(err.to_string()))
            }
            Err(_) => {
                mark_down(&self.down_until);
                Err(RedisLimitError::Timeout)
            }
        }
    }

    /// [`GCRA_SCRIPT`]'s call for `batch`, its keys and numbers as the script reads them.
    fn invocation<'a>(&'a self, batch: &'a [Queued]) -> redis::ScriptInvocation<'a> {
        // The batch's plans, each once (a handful: one per limit table), and its keys, each
        // once, with their plans; each charge names its key as the script numbers them (from
        // 1). A key names its plan (`RedisStore::decide`), so one key has one plan.
        let mut plans: Vec<RatePlan> = Vec::new();
        let mut keys: Vec<(&str, usize)> = Vec::new();
        let mut key_at: HashMap<&str, usize> = HashMap::new();
        let mut key_of = Vec::new();
        for charge in batch.iter().flat_map(|queued| &queued.charges) {
            let at = *key_at.entry(&charge.key).or_insert_with(|| {
                let plan = match plans.iter().position(|plan| *plan == charge.plan) {
                    Some(plan) => plan,
                    None => {
                        plans.push(charge.plan);
                        plans.len() - 1
                    }
                };
                keys.push((&charge.key, plan + 1));
                keys.len()
            });
            key_of.push(at);
        }
        // The numbers as GCRA_SCRIPT reads them, each a little-endian double: the same
        // doubles the script read when they went as text (times in microseconds since the
        // epoch, counts, and the emission interval, which may be fractional).
        let mut packed = Vec::with_capacity(
            8 * (1 + 2 * plans.len() + keys.len() + 2 * batch.len() + 3 * key_of.len()),
        );
        let mut push = |number: f64| packed.extend_from_slice(&number.to_le_bytes());
        push(plans.len() as f64);
        for plan in &plans {
            push(f64::from(plan.period_secs()) * 1e6 / f64::from(plan.limit()));
            push(f64::from(plan.burst()));
        }
        let mut invocation = self.script.prepare_invoke();
        for (key, plan) in keys {
            invocation.key(key);
            push(plan as f64);
        }
        let mut key_of = key_of.into_iter();
        for queued in batch {
            push(queued.charges.len() as f64);
            push(queued.now_micros as f64);
            for charge in &queued.charges {
                // As many as the charges: a 0 (never) would fail the call, not pick a key.
                push(key_of.next().unwrap_or_default() as f64);
                push(charge.signed_cost as f64);
                push(f64::from(charge.extra));
            }
        }
        invocation.arg(packed);
        invocation
    }

    /// A new connection, within twice the timeout; a failure marks Redis down. Decisions
    /// made meanwhile come from memory (`connecting`).
    async fn connect(&self) -> Result<redis::aio::ConnectionManager, RedisLimitError> {
        self.connecting.store(true, Ordering::Relaxed);
        let made = self.try_connect().await;
        self.connecting.store(false, Ordering::Relaxed);
        made
    }

    async fn try_connect(&self) -> Result<redis::aio::ConnectionManager, RedisLimitError> {
        let made = match self.open().await {
            Some(made) => made.map_err(|err| RedisLimitError::Redis(err.to_string())),
            None => Err(RedisLimitError::Timeout),
        };
        if made.is_err() {
            mark_down(&self.down_until);
        }
        made
    }

    /// A new connection, or Redis's error; `None` when there is neither within twice the
    /// timeout.
    async fn open(&self) -> Option<Result<redis::aio::ConnectionManager, redis::RedisError>> {
        // No retry inside the attempt: the manager's retry first waits out a backoff longer
        // than the attempt's own limit, so it would only hide Redis's error behind a timeout
        // (the next attempt comes after `REDIS_RETRY` anyway).
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout)
            .set_number_of_retries(0);
        tokio::time::timeout(
            self.timeout.saturating_mul(2),
            redis::aio::ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await
        .ok()
    }

    /// One call of [`GCRA_SCRIPT`] on a connection of its own, as the decisions will make
    /// it (the same user, commands and library): the script loaded (`SCRIPT LOAD`, which a
    /// decision sends after Redis restarts or fails over), then one decision of one charge of
    /// no requests (`EVALSHA`), on [`PROBE_KEY`], which the script then keeps for a
    /// millisecond. It leaves `down_until` alone: the decisions find out for themselves.
    async fn probe(&self, probe: &Queued) -> Result<RedisProbe, RedisRefused> {
        let mut connection = match self.open().await {
            Some(Ok(connection)) => connection,
            Some(Err(err)) => return judged(&err),
            None => return Ok(RedisProbe::Unreachable("no connection in time".to_owned())),
        };
        match tokio::time::timeout(self.timeout, self.script.load_async(&mut connection)).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => return judged(&err),
            Err(_) => return Ok(RedisProbe::Unreachable("no answer in time".to_owned())),
        }
        let batch = std::slice::from_ref(probe);
        let answer = tokio::time::timeout(
            self.timeout,
            self.invocation(batch)
                .invoke_async::<Vec<u64>>(&mut connection),
        )
        .await;
        match answer {
            // No charge of it is enforced, so none decides: its length is what there is to check.
            Ok(Ok(answer)) if answer.len() == probe.answer_len() => Ok(RedisProbe::Ready),
            Ok(Ok(answer)) => Err(RedisRefused(format!(
                "an answer of {} numbers, not one decision's",
                answer.len()
            ))),
            Ok(Err(err)) => judged(&err),
            Err(_) => Ok(RedisProbe::Unreachable("no answer in time".to_owned())),
        }
    }
}

/// What one call of the limits script at start found (`TokenLimits::probe_redis`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisProbe {
    /// No Redis in the configuration: the limits are in memory.
    NotUsed,
    /// Redis ran the script.
    Ready,
    /// Redis did not answer now (down, starting, loading, full, busy): the limits fail open
    /// to this instance's memory until it does, as when Redis goes down while serving.
    Unreachable(String),
}

/// Redis answered the limits script at start with an error that its configuration causes
/// (an ACL without scripts, a wrong password, a server whose scripts lack `struct`): serving
/// anyway would fall back to memory on every decision, so the issuer does not start.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "limits_backend = \"redis\": Redis refused the limits script: {0} (redis_url must name a \
     user that may run EVALSHA, SCRIPT LOAD, MGET and SET on edgeward:issuer:limit:*, on a \
     server whose scripts have the struct library)"
)]
pub struct RedisRefused(String);

/// Whether a Redis error at start comes from its configuration (the issuer does not start)
/// or from its state now (it starts, and the limits fail open until Redis answers). What
/// may pass in a Redis incident passes: an issuer that will not start then (a deploy, a
/// node drained) would take the token endpoint down, where failing open keeps it up.
fn judged(err: &redis::RedisError) -> Result<RedisProbe, RedisRefused> {
    use redis::ErrorKind;
    // Writes refused for now: out of memory (past `maxmemory`), a snapshot that failed, too
    // few replicas (`min-replicas-to-write`), a node that a failover just made a replica (or
    // a name not yet moved to the new primary); or another script running too long.
    const FOR_NOW: [&str; 5] = ["OOM", "MISCONF", "NOREPLICAS", "READONLY", "BUSY"];
    let now = match err.kind() {
        ErrorKind::IoError
        | ErrorKind::BusyLoadingError
        | ErrorKind::TryAgain
        | ErrorKind::ClusterDown
        | ErrorKind::MasterDown
        | ErrorKind::ReadOnly => true,
        ErrorKind::ExtensionError => err.code().is_some_and(|code| FOR_NOW.contains(&code)),
        // Before Redis 7 an error inside a script comes back as a plain `ERR` that quotes
        // it (`ERR Error running script ... -OOM ...`).
        ErrorKind::ResponseError => err.detail().is_some_and(|detail| {
            FOR_NOW
                .iter()
                .any(|code| detail.contains(&format!("-{code} ")))
        }),
        _ => false,
    };
    if now {
        Ok(RedisProbe::Unreachable(err.to_string()))
    } else {
        Err(RedisRefused(err.to_string()))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Counts Redis as down for [`REDIS_RETRY`] from now.
fn mark_down(until: &Mutex<Option<Instant>>) {
    *lock(until) = Some(Instant::now() + REDIS_RETRY);
}

/// Whether Redis still counts as down.
fn is_down(until: &Mutex<Option<Instant>>) -> bool {
    lock(until).is_some_and(|until| Instant::now() < until)
}

/// Whether the instant in `next` has come (or was never set); if so, moves it `every` on.
fn due(next: &Mutex<Option<Instant>>, every: Duration) -> bool {
    let mut next = lock(next);
    let now = Instant::now();
    if next.is_some_and(|at| now < at) {
        return false;
    }
    *next = Some(now + every);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::{ErrorKind, RedisError};

    /// What Redis says at start decides whether the issuer starts: its configuration stops
    /// it, its state now does not (the limits then fail open, as when it goes down later).
    #[test]
    fn a_redis_error_at_start_stops_it_only_when_configuration_causes_it() {
        let refused = [
            RedisError::from((
                ErrorKind::ResponseError,
                "script",
                "user_script:3: Script attempted to access nonexistent global variable 'struct'"
                    .to_owned(),
            )),
            RedisError::from((
                ErrorKind::AuthenticationFailed,
                "Password authentication failed",
            )),
            redis::make_extension_error(
                "NOPERM".to_owned(),
                Some("this user has no permissions to run the 'evalsha' command".to_owned()),
            ),
        ];
        for err in refused {
            assert!(judged(&err).is_err(), "{err}");
        }
        let passing = [
            RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
            RedisError::from((ErrorKind::BusyLoadingError, "loading")),
            RedisError::from((
                ErrorKind::ReadOnly,
                "You can't write against a read only replica.",
            )),
            RedisError::from((
                ErrorKind::ResponseError,
                "script",
                "Error running script (call to f_0123): @user_script:20: -OOM command not allowed"
                    .to_owned(),
            )),
            redis::make_extension_error("OOM".to_owned(), None),
            redis::make_extension_error("MISCONF".to_owned(), None),
            redis::make_extension_error("BUSY".to_owned(), None),
        ];
        for err in passing {
            assert!(
                matches!(judged(&err), Ok(RedisProbe::Unreachable(_))),
                "{err}"
            );
        }
    }
}
