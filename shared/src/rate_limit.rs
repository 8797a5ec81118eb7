//! Rate limits: the plan a token carries and the GCRA decision over stored state.
//!
//! GCRA (generic cell rate algorithm) keeps one number per client, the theoretical arrival
//! time (TAT), and answers exactly what a token bucket would: `burst` requests at once, then
//! one every `period / limit`. [`check`] is a pure function of the plan, the stored state and
//! `now`; the caller (a Durable Object at the edge) stores what it returns.
//!
//! A plan's text form, used in the `rate_plan` token claim and the issuer's CLI, is
//! `LIMIT/PERIOD[;burst=N]` with `PERIOD` as `[N]s`, `[N]m`, `[N]h` or `[N]d`, for example
//! `1000/60s;burst=100` or `10/s`. Without `burst`, the whole limit may come at once.

use core::fmt;
use core::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::json::{JsonError, Member};
use crate::time::UnixTime;

/// Largest limit or burst a plan may state.
pub const MAX_RATE: u32 = 1_000_000_000;
/// Longest period a plan may state: one day.
pub const MAX_PERIOD_SECS: u32 = 86_400;

const NANOS_PER_SEC: u64 = 1_000_000_000;
pub(crate) const NANOS_PER_MILLI: u64 = 1_000_000;

/// Why a plan was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RatePlanError {
    /// The text is not `LIMIT/PERIOD[;burst=N]`.
    #[error("rate plan must look like `1000/60s;burst=100`")]
    Syntax,
    /// Limit or burst is zero or above [`MAX_RATE`].
    #[error("rate plan limit and burst must be between 1 and {MAX_RATE}")]
    OutOfRange,
    /// The period is zero or longer than [`MAX_PERIOD_SECS`].
    #[error("rate plan period must be between 1 second and {MAX_PERIOD_SECS} seconds")]
    Period,
}

/// `limit` requests per `period_secs`, with up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RatePlan {
    limit: u32,
    period_secs: u32,
    burst: u32,
}

impl RatePlan {
    /// A checked plan.
    ///
    /// # Errors
    /// [`RatePlanError::OutOfRange`] or [`RatePlanError::Period`].
    pub fn new(limit: u32, period_secs: u32, burst: u32) -> Result<Self, RatePlanError> {
        if !(1..=MAX_RATE).contains(&limit) || !(1..=MAX_RATE).contains(&burst) {
            return Err(RatePlanError::OutOfRange);
        }
        if !(1..=MAX_PERIOD_SECS).contains(&period_secs) {
            return Err(RatePlanError::Period);
        }
        Ok(Self {
            limit,
            period_secs,
            burst,
        })
    }

    /// Requests allowed per period.
    #[must_use]
    pub const fn limit(&self) -> u32 {
        self.limit
    }

    /// The period in seconds.
    #[must_use]
    pub const fn period_secs(&self) -> u32 {
        self.period_secs
    }

    /// Requests allowed at once.
    #[must_use]
    pub const fn burst(&self) -> u32 {
        self.burst
    }

    /// Nanoseconds between requests at the sustained rate (at least 1).
    pub(crate) fn emission_interval(&self) -> u64 {
        (u64::from(self.period_secs) * NANOS_PER_SEC / u64::from(self.limit)).max(1)
    }
}

impl fmt::Display for RatePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}s;burst={}",
            self.limit, self.period_secs, self.burst
        )
    }
}

impl FromStr for RatePlan {
    type Err = RatePlanError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (rate, burst) = match text.split_once(';') {
            Some((rate, option)) => {
                let burst = option.strip_prefix("burst=").ok_or(RatePlanError::Syntax)?;
                (rate, Some(number(burst)?))
            }
            None => (text, None),
        };
        let (limit, period) = rate.split_once('/').ok_or(RatePlanError::Syntax)?;
        let limit = number(limit)?;
        let split = period
            .find(|c: char| !c.is_ascii_digit())
            .ok_or(RatePlanError::Syntax)?;
        let (count, unit) = period.split_at(split);
        let count = if count.is_empty() { 1 } else { number(count)? };
        let unit_secs: u32 = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(RatePlanError::Syntax),
        };
        let period_secs = count.checked_mul(unit_secs).ok_or(RatePlanError::Period)?;
        Self::new(limit, period_secs, burst.unwrap_or(limit))
    }
}

/// Plain decimal digits only (no sign, no spaces), fitting in `u32`.
fn number(text: &str) -> Result<u32, RatePlanError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RatePlanError::Syntax);
    }
    text.parse().map_err(|_| RatePlanError::OutOfRange)
}

impl Serialize for RatePlan {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RatePlan {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What GCRA stores per client: the theoretical arrival time, in nanoseconds since the
/// epoch. The default (zero) means "no recent requests".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GcraState {
    /// Theoretical arrival time of the next request at the sustained rate.
    pub tat_nanos: u64,
}

/// The answer for one request. Serializable so a limiter that holds the state elsewhere (the
/// edge's Durable Object) can send it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// The burst size: requests available when the client has been idle.
    pub limit: u32,
    /// Requests still available right now after this one.
    pub remaining: u32,
    /// Milliseconds until the full burst is available again.
    pub reset_after_ms: u64,
    /// For a denied request, milliseconds until one would be allowed; zero when allowed.
    pub retry_after_ms: u64,
}

impl Decision {
    /// Reads a decision as [`serde_json`] writes it (the edge's Durable Object answers with
    /// one). Unknown members are ignored.
    ///
    /// # Errors
    /// [`JsonError`] for anything but an object with the five members.
    pub fn from_json(json: &str) -> Result<Self, JsonError> {
        let members = crate::json::parse(json.as_bytes())?.take_members([
            "allowed",
            "limit",
            "remaining",
            "reset_after_ms",
            "retry_after_ms",
        ])?;
        Self::from_members(members)
    }

    /// The decision from its five members (`allowed`, `limit`, `remaining`,
    /// `reset_after_ms`, `retry_after_ms`), as an object that holds more reads them.
    pub(crate) fn from_members(
        [allowed, limit, remaining, reset_after_ms, retry_after_ms]: [Option<Member>; 5],
    ) -> Result<Self, JsonError> {
        let shape = |expected| JsonError::Shape { expected };
        let Some(Member::Bool(allowed)) = allowed else {
            return Err(shape("a boolean `allowed`"));
        };
        let number = |member: Option<Member>| member.as_ref().and_then(Member::as_u64);
        let small = |member: Option<Member>| number(member).and_then(|n| u32::try_from(n).ok());
        Ok(Self {
            allowed,
            limit: small(limit).ok_or(shape("a u32 `limit`"))?,
            remaining: small(remaining).ok_or(shape("a u32 `remaining`"))?,
            reset_after_ms: number(reset_after_ms).ok_or(shape("a u64 `reset_after_ms`"))?,
            retry_after_ms: number(retry_after_ms).ok_or(shape("a u64 `retry_after_ms`"))?,
        })
    }

    /// `reset_after_ms` in whole seconds, rounded up (for `RateLimit` headers).
    #[must_use]
    pub fn reset_after_secs(&self) -> u64 {
        self.reset_after_ms.div_ceil(1000)
    }

    /// `retry_after_ms` in whole seconds, rounded up and at least 1 when denied (for
    /// `Retry-After`).
    #[must_use]
    pub fn retry_after_secs(&self) -> u64 {
        if self.allowed {
            0
        } else {
            self.retry_after_ms.div_ceil(1000).max(1)
        }
    }
}

/// The IETF header carrying [`RatePlan::policy_header`] (lower case, as HTTP/2 sends it).
pub const POLICY_HEADER: &str = "ratelimit-policy";
/// The IETF header carrying [`Decision::rate_limit_header`].
pub const RATE_LIMIT_HEADER: &str = "ratelimit";

impl Decision {
    /// The IETF `RateLimit` header value (draft-ietf-httpapi-ratelimit-headers):
    /// `"<policy>";r=<remaining>;t=<seconds until the full burst is back>`.
    #[must_use]
    pub fn rate_limit_header(&self, policy: &str) -> String {
        format!(
            "\"{}\";r={};t={}",
            sf_string(policy),
            self.remaining,
            self.reset_after_secs()
        )
    }
}

impl RatePlan {
    /// The IETF `RateLimit-Policy` header value: `"<policy>";q=<limit>;w=<period>`, plus the
    /// burst as an extension parameter.
    #[must_use]
    pub fn policy_header(&self, policy: &str) -> String {
        format!(
            "\"{}\";q={};w={};burst={}",
            sf_string(policy),
            self.limit,
            self.period_secs,
            self.burst
        )
    }
}

/// A structured-field string body: printable ASCII without `"` and `\\`.
fn sf_string(text: &str) -> String {
    text.chars()
        .filter(|c| matches!(c, ' ' | '!' | '#'..='[' | ']'..='~'))
        .collect()
}

/// Decides one request at `now` under `plan`, given the stored `state`; returns the decision
/// and the state to store (unchanged when denied).
#[must_use]
pub fn check(plan: &RatePlan, state: GcraState, now: UnixTime) -> (Decision, GcraState) {
    check_weighted(plan, state, now, 1)
}

/// As [`check`] for a request that counts as `cost` requests (at least 1), e.g. a failed
/// authentication charged more than a good one. A cost above the burst is always denied.
#[must_use]
pub fn check_weighted(
    plan: &RatePlan,
    state: GcraState,
    now: UnixTime,
    cost: u32,
) -> (Decision, GcraState) {
    let interval = plan
        .emission_interval()
        .saturating_mul(u64::from(cost.max(1)));
    let unit = plan.emission_interval();
    let tolerance = unit.saturating_mul(u64::from(plan.burst));
    let now_nanos = now.as_millis().saturating_mul(NANOS_PER_MILLI);
    let tat = state.tat_nanos.max(now_nanos);
    let new_tat = tat.saturating_add(interval);
    let allow_at = new_tat.saturating_sub(tolerance);
    let to_millis = |nanos: u64| nanos.div_ceil(NANOS_PER_MILLI);

    if now_nanos < allow_at {
        let decision = Decision {
            allowed: false,
            limit: plan.burst,
            remaining: 0,
            reset_after_ms: to_millis(tat - now_nanos),
            retry_after_ms: to_millis(allow_at - now_nanos),
        };
        return (decision, state);
    }
    let remaining = u32::try_from((now_nanos - allow_at) / unit).unwrap_or(u32::MAX);
    let decision = Decision {
        allowed: true,
        limit: plan.burst,
        remaining: remaining.min(plan.burst.saturating_sub(1)),
        reset_after_ms: to_millis(new_tat - now_nanos),
        retry_after_ms: 0,
    };
    (decision, GcraState { tat_nanos: new_tat })
}

/// The network a per-address budget is charged to: the address itself for IPv4, and the
/// `/64` for IPv6 (one subscriber's usual allocation: keyed by full address, a client with a
/// `/64` would take a fresh budget per address, 2^64 of them). An IPv4-mapped IPv6 address
/// counts as its IPv4 address.
#[must_use]
pub fn address_network(address: core::net::IpAddr) -> core::net::IpAddr {
    use core::net::IpAddr;
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(core::net::Ipv6Addr::from(prefix))
            }
        },
    }
}

/// [`address_network`] on an address's text, as a limiter key: an IPv4 address as it is,
/// an IPv6 address as its `/64` (`2001:0db8:0001:0002::/64`, four-digit groups), an
/// IPv4-mapped one as its IPv4 address; `None` for anything else. Written by hand for the
/// edge: the standard library's address parser and formatter add several KiB to its wasm.
#[must_use]
pub fn network_key(text: &str) -> Option<String> {
    let text = text.trim();
    if !text.contains(':') {
        return is_ipv4(text).then(|| text.to_owned());
    }
    let address = text.split('%').next().unwrap_or(text);
    if let Some(v4) = address
        .strip_prefix("::ffff:")
        .or_else(|| address.strip_prefix("::FFFF:"))
    {
        if v4.contains('.') {
            return is_ipv4(v4).then(|| v4.to_owned());
        }
    }
    // The groups before and after a `::`, each at most eight.
    let (head, tail) = match address.split_once("::") {
        Some((head, tail)) => (head, Some(tail)),
        None => (address, None),
    };
    let mut groups = [0u16; 8];
    let head_len = read_groups(head, &mut groups)?;
    match tail {
        None if head_len == 8 => {}
        Some(tail) => {
            let mut tail_groups = [0u16; 8];
            let tail_len = read_groups(tail, &mut tail_groups)?;
            if head_len + tail_len > 7 {
                return None;
            }
            for (at, group) in tail_groups.iter().take(tail_len).enumerate() {
                *groups.get_mut(8 - tail_len + at)? = *group;
            }
        }
        None => return None,
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut key = String::with_capacity(24);
    for group in groups.iter().take(4) {
        for shift in [12, 8, 4, 0] {
            key.push(char::from(*HEX.get(usize::from(group >> shift & 0xf))?));
        }
        key.push(':');
    }
    key.push_str(":/64");
    Some(key)
}

/// Reads `a:b:c` hex groups (1-4 digits each) into `out`; how many, or `None`.
fn read_groups(text: &str, out: &mut [u16; 8]) -> Option<usize> {
    if text.is_empty() {
        return Some(0);
    }
    let mut count = 0;
    for group in text.split(':') {
        if group.is_empty() || group.len() > 4 {
            return None;
        }
        let mut value = 0u16;
        for digit in group.bytes() {
            value = value << 4 | u16::try_from(char::from(digit).to_digit(16)?).ok()?;
        }
        *out.get_mut(count)? = value;
        count += 1;
    }
    Some(count)
}

fn is_ipv4(text: &str) -> bool {
    let mut parts = 0;
    for part in text.split('.') {
        parts += 1;
        let digits = part.bytes().all(|b| b.is_ascii_digit());
        if !digits || part.is_empty() || part.len() > 3 || part.parse::<u8>().is_err() {
            return false;
        }
    }
    parts == 4
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The edge's hand-written key and the issuer's `address_network` agree.
    #[test]
    fn network_keys_agree_with_address_network() {
        use core::net::IpAddr;
        for text in [
            "203.0.113.9",
            "2001:db8:1:2:aaaa::1",
            "2001:db8:1:2:ffff::ffff",
            "2001:0db8:0001:0002:0000:0000:0000:0001",
            "::1",
            "::",
            "fe80::1:2:3:4",
            "1:2:3:4:5:6:7:8",
            "1::",
            "::ffff:203.0.113.9",
        ] {
            let parsed: IpAddr = text.parse().unwrap_or(IpAddr::from([0; 4]));
            let expected = match address_network(parsed) {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(v6) => {
                    let s = v6.segments();
                    format!("{:04x}:{:04x}:{:04x}:{:04x}::/64", s[0], s[1], s[2], s[3])
                }
            };
            assert_eq!(network_key(text), Some(expected), "{text}");
        }
        for bad in [
            "",
            "unknown",
            "1.2.3",
            "256.1.1.1",
            "1:2:3",
            ":::",
            "1::2::3",
            "12345::",
            "1:2:3:4:5:6:7:8:9",
            "::ffff:1.2.3",
        ] {
            assert_eq!(network_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn ipv6_clients_share_their_slash_64() {
        let net =
            |text: &str| address_network(text.parse().unwrap_or(core::net::IpAddr::from([0; 4])));
        assert_eq!(net("203.0.113.9").to_string(), "203.0.113.9");
        assert_eq!(net("2001:db8:1:2:aaaa::1"), net("2001:db8:1:2:ffff::ffff"));
        assert_eq!(net("2001:db8:1:2:aaaa::1").to_string(), "2001:db8:1:2::");
        assert_ne!(net("2001:db8:1:2::1"), net("2001:db8:1:3::1"));
        assert_eq!(net("::ffff:203.0.113.9").to_string(), "203.0.113.9");
    }

    #[test]
    fn decisions_round_trip_through_json() {
        let plan: RatePlan = "5/1s;burst=2".parse().unwrap();
        let (decision, _) = check(&plan, GcraState::default(), UnixTime::from_millis(1_000));
        let text = serde_json::to_string(&decision).unwrap();
        assert_eq!(Decision::from_json(&text), Ok(decision));
        assert!(Decision::from_json(r#"{"allowed":true}"#).is_err());
        assert!(Decision::from_json("[]").is_err());
    }

    #[test]
    fn plan_text_round_trips() {
        let plan: RatePlan = "1000/60s;burst=100".parse().unwrap();
        assert_eq!(
            (plan.limit(), plan.period_secs(), plan.burst()),
            (1000, 60, 100)
        );
        assert_eq!(plan.to_string().parse::<RatePlan>().unwrap(), plan);
        let plan: RatePlan = "10/m".parse().unwrap();
        assert_eq!(
            (plan.limit(), plan.period_secs(), plan.burst()),
            (10, 60, 10)
        );
        assert_eq!("5/2h".parse::<RatePlan>().unwrap().period_secs(), 7200);
    }

    #[test]
    fn plan_text_is_strict() {
        for bad in [
            "",
            "10",
            "10/",
            "/s",
            "10/x",
            "+10/s",
            "10/s;",
            "10/s;burst=",
            "10/s;b=1",
            "10 /s",
            "0/s",
            "10/0s",
            "10/2d",
            "10/s;burst=0",
            "99999999999/s",
            "1/4294967295s",
        ] {
            assert!(bad.parse::<RatePlan>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn burst_then_sustained_rate() {
        let plan = RatePlan::new(60, 60, 3).unwrap(); // one per second, three at once
        let t0 = UnixTime::from_secs(1_000);
        let mut state = GcraState::default();
        for expected_remaining in [2, 1, 0] {
            let (decision, next) = check(&plan, state, t0);
            assert!(decision.allowed);
            assert_eq!(decision.remaining, expected_remaining);
            state = next;
        }
        let (denied, same) = check(&plan, state, t0);
        assert!(!denied.allowed);
        assert_eq!(same, state);
        assert_eq!(denied.retry_after_ms, 1000);
        assert_eq!(denied.reset_after_ms, 3000);
        assert_eq!(denied.retry_after_secs(), 1);
        let (later, _) = check(&plan, state, t0.plus_millis(1000));
        assert!(later.allowed);
        assert_eq!(later.remaining, 0);
    }

    #[test]
    fn weighted_requests_use_more_of_the_burst() {
        let plan = RatePlan::new(60, 60, 10).unwrap();
        let now = UnixTime::from_secs(100);
        let (first, state) = check_weighted(&plan, GcraState::default(), now, 4);
        assert!(first.allowed);
        assert_eq!(first.remaining, 6);
        let (second, state) = check_weighted(&plan, state, now, 4);
        assert_eq!(second.remaining, 2);
        let (third, _) = check_weighted(&plan, state, now, 4);
        assert!(!third.allowed);
        assert_eq!(third.retry_after_ms, 2000);
        assert!(
            !check_weighted(&plan, GcraState::default(), now, 11)
                .0
                .allowed
        );
    }

    #[test]
    fn headers_follow_the_ietf_draft() {
        let plan = RatePlan::new(1000, 60, 100).unwrap();
        assert_eq!(
            plan.policy_header("client"),
            "\"client\";q=1000;w=60;burst=100"
        );
        let (decision, _) = check(&plan, GcraState::default(), UnixTime::from_secs(10));
        assert_eq!(
            decision.rate_limit_header("cl\"ient"),
            "\"client\";r=99;t=1"
        );
    }

    #[test]
    fn idle_client_gets_full_burst_back() {
        let plan = RatePlan::new(10, 1, 5).unwrap();
        let (first, state) = check(&plan, GcraState::default(), UnixTime::from_secs(50));
        assert_eq!(first.remaining, 4);
        let (later, _) = check(&plan, state, UnixTime::from_secs(60));
        assert_eq!(later.remaining, 4);
    }
}
