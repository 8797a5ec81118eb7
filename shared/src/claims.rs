//! Access-token claims (RFC 9068 §2.2) and the rules they are checked against.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::dpop::Jkt;
use crate::json::Member;
use crate::rate_limit::RatePlan;
use crate::rejection::{Rejection, Segment};
use crate::time::UnixTime;

/// Longest accepted `sub`, `client_id` or `jti`, in bytes.
pub const MAX_ID_CLAIM_LEN: usize = 256;
/// Most scopes a token may carry.
pub const MAX_SCOPES: usize = 64;
/// Most entries in an `aud` array.
pub const MAX_AUDIENCES: usize = 16;
/// Largest leeway [`Validation`] accepts: a clock skew beyond this is an incident, not skew.
pub const MAX_LEEWAY_SECS: u64 = 300;

/// What a token must satisfy beyond its signature. Build with [`Validation::new`], which sets
/// strict defaults, then adjust the public fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validation {
    /// The exact `iss` expected.
    pub issuer: String,
    /// An audience that `aud` must contain.
    pub audience: String,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds (default 30, capped at
    /// [`MAX_LEEWAY_SECS`]).
    pub leeway_secs: u64,
    /// Longest accepted `exp - iat`, in seconds (default one hour).
    pub max_lifetime_secs: u64,
    /// Longest accepted compact token, in bytes (default 8 KiB).
    pub max_token_bytes: usize,
    /// Also accept `typ: JWT` besides `at+jwt` (default false), for issuers that predate
    /// RFC 9068.
    pub accept_jwt_type: bool,
}

impl Validation {
    /// Strict defaults for this issuer and audience.
    #[must_use]
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            leeway_secs: 30,
            max_lifetime_secs: 3600,
            max_token_bytes: 8 * 1024,
            accept_jwt_type: false,
        }
    }

    pub(crate) fn leeway(&self) -> u64 {
        self.leeway_secs.min(MAX_LEEWAY_SECS)
    }
}

/// A set of OAuth scopes (RFC 6749 §3.3), serialized as the space-separated `scope` string.
///
/// Held as that string, sorted and without repeats: one allocation per set rather than one
/// per scope and a tree node, and every verified token (and its cache entry) holds one.
/// Sets are small ([`MAX_SCOPES`]), so lookups walk the string.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Scopes(String);

/// Whether `token` is an RFC 6749 scope-token (`1*( %x21 / %x23-5B / %x5D-7E )`).
fn is_scope_token(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E))
}

impl Scopes {
    /// Parses a `scope` string: scope-tokens separated by single spaces. The empty string is
    /// the empty set. `None` if a scope-token is empty or uses characters outside RFC 6749's
    /// set, or there are more than [`MAX_SCOPES`]. Also available as `text.parse::<Scopes>()`.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        if text.is_empty() {
            return Some(Self::default());
        }
        let (mut count, mut ascending, mut previous) = (0, true, "");
        for token in text.split(' ') {
            if !is_scope_token(token) {
                return None;
            }
            count += 1;
            ascending &= count == 1 || token > previous;
            previous = token;
        }
        if ascending {
            // Already sorted, no repeats (the usual case: the issuer writes them so).
            return (count <= MAX_SCOPES).then(|| Self(text.to_owned()));
        }
        // Out of order or repeated: the distinct ones in order, each put in its place (at
        // most MAX_SCOPES of them, so the work stays bounded whatever the input).
        let mut sorted: Vec<&str> = Vec::with_capacity(count.min(MAX_SCOPES));
        for token in text.split(' ') {
            if let Err(at) = sorted.binary_search(&token) {
                if sorted.len() == MAX_SCOPES {
                    return None;
                }
                sorted.insert(at, token);
            }
        }
        let mut joined = String::with_capacity(text.len());
        for token in sorted {
            if !joined.is_empty() {
                joined.push(' ');
            }
            joined.push_str(token);
        }
        Some(Self(joined))
    }

    /// Whether `scope` is in the set.
    #[must_use]
    pub fn contains(&self, scope: &str) -> bool {
        self.iter().any(|have| have == scope)
    }

    /// Whether every scope of `other` is in this set.
    #[must_use]
    pub fn contains_all(&self, other: &Self) -> bool {
        // Both sorted: one walk over this set finds each of `other`'s in turn.
        let mut have = self.iter();
        other.iter().all(|wanted| have.any(|scope| scope == wanted))
    }

    /// The scopes in sorted order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.split(' ').filter(|scope| !scope.is_empty())
    }

    /// Number of scopes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a resource requires of a token's scopes: every one of `all`, and, unless `any` is
/// empty, one of `any`. The edge's route table and the origin's layer check through it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeRequirement {
    all: Scopes,
    any: Scopes,
}

impl ScopeRequirement {
    /// Every scope of `all`, and one of `any` (no condition when `any` is empty).
    #[must_use]
    pub fn new(all: Scopes, any: Scopes) -> Self {
        Self { all, any }
    }

    /// Whether `granted` meets it.
    ///
    /// # Errors
    /// [`Rejection::InsufficientScope`] naming the scopes that would have let it in (all of
    /// `all`, and those of `any`): RFC 6750's 403 with `scope="…"`.
    pub fn check(&self, granted: &Scopes) -> Result<(), Rejection> {
        let has_any = self.any.is_empty() || self.any.iter().any(|scope| granted.contains(scope));
        if granted.contains_all(&self.all) && has_any {
            return Ok(());
        }
        let needed: Vec<&str> = self.all.iter().chain(self.any.iter()).collect();
        let needed = Scopes::parse(&needed.join(" ")).unwrap_or_default();
        Err(Rejection::InsufficientScope {
            required: needed.to_string(),
        })
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A `scope` string that is not RFC 6749 scope-tokens separated by single spaces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid scope string (RFC 6749 scope-tokens separated by single spaces, at most {MAX_SCOPES})"
)]
pub struct InvalidScope;

impl std::str::FromStr for Scopes {
    type Err = InvalidScope;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text).ok_or(InvalidScope)
    }
}

impl Serialize for Scopes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Scopes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).ok_or_else(|| serde::de::Error::custom("invalid scope string"))
    }
}

/// The claims of a verified access token. Only reachable through
/// [`crate::VerifiedToken`], so holding one means the signature checked out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AccessClaims {
    /// Issuer (equal to [`Validation::issuer`]).
    pub iss: String,
    /// Subject: the resource owner, or the client itself for `client_credentials`.
    pub sub: String,
    /// Audiences (a single string in the token becomes one entry).
    pub aud: Vec<String>,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issued-at, seconds since the epoch.
    pub iat: u64,
    /// Not-before, seconds since the epoch, if present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Unique token id (revocation is by `jti`).
    pub jti: String,
    /// The OAuth client the token was issued to.
    pub client_id: String,
    /// Granted scopes (empty when the claim is absent).
    pub scope: Scopes,
    /// The client's rate plan (private claim `rate_plan`, e.g. `1000/60s;burst=100`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_plan: Option<RatePlan>,
    /// The key the token is bound to (RFC 9449 §6.1), if it is a DPoP token: then every use
    /// needs a proof signed by that key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
    /// The cut-off of its client's latest revocation when it was issued (private claim
    /// `client_cutoff`; 0 for a client never revoked; absent from an older issuer): a later
    /// revocation covers it whatever its `iat`, so a token issued from a copy of the client
    /// that had not yet seen the revocation (a lagging replica, a skewed clock) is covered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cutoff: Option<u64>,
}

/// A token's `cnf` claim (RFC 7800) in the one form this system can check: a DPoP key
/// thumbprint and nothing else. A token bound any other way (a certificate, `x5t#S256`) is
/// refused, never taken as a bearer token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Confirmation {
    /// The RFC 7638 thumbprint of the client's DPoP key.
    pub jkt: Jkt,
}

impl Confirmation {
    fn parse(value: Member) -> Option<Self> {
        let Member::Object(members) = value else {
            return None;
        };
        match members.as_slice() {
            [(name, Member::Str(jkt))] if name == "jkt" => Jkt::parse(jkt).map(|jkt| Self { jkt }),
            _ => None,
        }
    }
}

impl AccessClaims {
    /// Whether `aud` names `audience` (the rule [`Validation::audience`] is checked by, and
    /// the edge's per-route audiences).
    #[must_use]
    pub fn is_for(&self, audience: &str) -> bool {
        self.aud.iter().any(|aud| aud == audience)
    }
}

/// Parses and checks the decoded payload against `validation` at `now`.
pub(crate) fn validate(
    payload: &[u8],
    validation: &Validation,
    now: UnixTime,
) -> Result<AccessClaims, Rejection> {
    let invalid_json = Rejection::InvalidJson {
        segment: Segment::Payload,
    };
    // An object, each judged member at most once (no parser-differential tricks).
    let [iss, sub, aud, exp, nbf, iat, jti, client_id, scope, rate_plan, cnf, client_cutoff] =
        crate::json::parse(payload)
            .and_then(|claims| {
                claims.take_members([
                    "iss",
                    "sub",
                    "aud",
                    "exp",
                    "nbf",
                    "iat",
                    "jti",
                    "client_id",
                    "scope",
                    "rate_plan",
                    "cnf",
                    "client_cutoff",
                ])
            })
            .map_err(|_| invalid_json)?;

    let iss = required_string("iss", iss, usize::MAX)?;
    let sub = required_string("sub", sub, MAX_ID_CLAIM_LEN)?;
    let aud = audiences(aud)?;
    let exp = required_time("exp", exp)?;
    let iat = required_time("iat", iat)?;
    let nbf = nbf.map(|value| time_value("nbf", &value)).transpose()?;
    let jti = required_string("jti", jti, MAX_ID_CLAIM_LEN)?;
    let client_id = required_string("client_id", client_id, MAX_ID_CLAIM_LEN)?;
    let scope = match scope {
        None => Scopes::default(),
        Some(value) => value
            .as_str()
            .and_then(Scopes::parse)
            .ok_or(Rejection::InvalidClaim { claim: "scope" })?,
    };
    let rate_plan = rate_plan
        .map(|value| {
            value
                .as_str()
                .and_then(|text| text.parse::<RatePlan>().ok())
                .ok_or(Rejection::InvalidClaim { claim: "rate_plan" })
        })
        .transpose()?;
    let cnf = cnf
        .map(|value| Confirmation::parse(value).ok_or(Rejection::InvalidClaim { claim: "cnf" }))
        .transpose()?;
    // Exact as a JS number (the npm package hands claims to JavaScript).
    let client_cutoff = client_cutoff
        .map(|value| {
            time_value("client_cutoff", &value)
                .ok()
                .filter(|cutoff| *cutoff < 1 << 53)
                .ok_or(Rejection::InvalidClaim {
                    claim: "client_cutoff",
                })
        })
        .transpose()?;

    if iss != validation.issuer {
        return Err(Rejection::IssuerMismatch);
    }
    if !aud.contains(&validation.audience) {
        return Err(Rejection::AudienceMismatch);
    }
    let now = now.as_secs();
    let leeway = validation.leeway();
    if now >= exp.saturating_add(leeway) {
        return Err(Rejection::Expired);
    }
    if let Some(nbf) = nbf {
        if nbf > now.saturating_add(leeway) {
            return Err(Rejection::NotYetValid);
        }
    }
    if iat > now.saturating_add(leeway) {
        return Err(Rejection::IssuedInFuture);
    }
    if exp <= iat || exp - iat > validation.max_lifetime_secs {
        return Err(Rejection::LifetimeTooLong {
            max_secs: validation.max_lifetime_secs,
        });
    }

    Ok(AccessClaims {
        iss,
        sub,
        aud,
        exp,
        iat,
        nbf,
        jti,
        client_id,
        scope,
        rate_plan,
        cnf,
        client_cutoff,
    })
}

fn required_string(
    claim: &'static str,
    value: Option<Member>,
    max_len: usize,
) -> Result<String, Rejection> {
    match value {
        None => Err(Rejection::MissingClaim { claim }),
        Some(Member::Str(text)) if !text.is_empty() && text.len() <= max_len => Ok(text),
        Some(_) => Err(Rejection::InvalidClaim { claim }),
    }
}

fn required_time(claim: &'static str, value: Option<Member>) -> Result<u64, Rejection> {
    let value = value.ok_or(Rejection::MissingClaim { claim })?;
    time_value(claim, &value)
}

/// A `NumericDate` as a non-negative integer number of seconds.
fn time_value(claim: &'static str, value: &Member) -> Result<u64, Rejection> {
    value.as_u64().ok_or(Rejection::InvalidClaim { claim })
}

fn audiences(value: Option<Member>) -> Result<Vec<String>, Rejection> {
    const CLAIM: &str = "aud";
    match value {
        None => Err(Rejection::MissingClaim { claim: CLAIM }),
        Some(Member::Str(aud)) if !aud.is_empty() => Ok(vec![aud]),
        Some(Member::Array(items)) if !items.is_empty() && items.len() <= MAX_AUDIENCES => items
            .into_iter()
            .map(|item| match item {
                Member::Str(aud) if !aud.is_empty() => Ok(aud),
                _ => Err(Rejection::InvalidClaim { claim: CLAIM }),
            })
            .collect(),
        Some(_) => Err(Rejection::InvalidClaim { claim: CLAIM }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_strictly() {
        assert_eq!(Scopes::parse("b a a").unwrap().to_string(), "a b");
        assert!(Scopes::parse("").unwrap().is_empty());
        assert!(Scopes::parse("a  b").is_none());
        assert!(Scopes::parse(" a").is_none());
        assert!(Scopes::parse("a\"b").is_none());
        assert!(Scopes::parse("caf\u{e9}").is_none());
        let many = (0..=MAX_SCOPES)
            .map(|i| format!("s{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        assert!(Scopes::parse(&many).is_none());
        // The limit is on distinct scopes: repeats collapse first.
        let repeated = vec!["a"; MAX_SCOPES + 1].join(" ");
        assert_eq!(Scopes::parse(&repeated).unwrap().len(), 1);
    }

    #[test]
    fn leeway_is_capped() {
        let mut validation = Validation::new("i", "a");
        validation.leeway_secs = 10_000;
        assert_eq!(validation.leeway(), MAX_LEEWAY_SECS);
    }
}
