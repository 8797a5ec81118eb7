//! The edge-to-origin assertion: the identity the edge verified, signed for the origin.
//!
//! After a token verifies, the edge strips every inbound `x-edgeward-*` header (so clients
//! cannot forge one) and adds one [`ASSERTION_HEADER`]:
//!
//! ```text
//! x-edgeward-assertion: v2.<key id>.<payload>.<mac>
//! ```
//!
//! `payload` is base64url JSON (`sub`, `client_id`, `scope`, `jti`, `exp`, `method`, `host`,
//! `path`, `query`, `ts` in milliseconds, and `route`: the id of the edge's route that let the
//! request in); `mac` is base64url HMAC-SHA256 over
//! `v2.<key id>.<payload>` under the secret named by the key id. The assertion binds the
//! whole request line the edge forwarded ([`RequestLine`]): method, the origin's host, the
//! path, and the query as the base64url SHA-256 of its exact text ([`query_hash`]), so it
//! cannot be replayed against another route, another origin or other parameters.
//!
//! Time: an origin accepts an assertion for [`DEFAULT_MAX_AGE_MS`] (its choice) after `ts`,
//! with [`FUTURE_LEEWAY_MS`] of clock skew, and never re-judges the token's expiry against
//! its own clock: `ts` is when the edge forwarded, and it accepted the token (with its
//! leeway) at most a few of its fetch timeouts before that, so the origin only checks that
//! `ts` is within [`MAX_LEEWAY_SECS`](crate::claims::MAX_LEEWAY_SECS) of `exp`. A request
//! the edge forwards is therefore never refused by the origin for time, as long as it
//! arrives within the assertion's age.
//!
//! `docs/origins.md` states the rules for origins in any language; the vectors in
//! `shared/tests/assertion-vectors.json` hold every verifier to them.
//!
//! Rollout from `v1` (method and path only, token expiry checked at the origin without
//! leeway): origins first accept both ([`AssertionVerifier::accept_v1`]), then the edge
//! switches to `v2`, then origins stop accepting `v1`. The key id lets the secret rotate the
//! same way: the origin accepts the old and new ids while the edge switches.

use base64ct::{Base64UrlUnpadded, Encoding};
use hmac::Mac;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::claims::{AccessClaims, Scopes, MAX_LEEWAY_SECS};
use crate::mac::{finish, keyed, HmacSha256};
use crate::time::UnixTime;

/// The request header that carries the assertion.
pub const ASSERTION_HEADER: &str = "x-edgeward-assertion";
/// Prefix of every header the edge owns; inbound headers with it are stripped.
pub const HEADER_PREFIX: &str = "x-edgeward-";
/// Shortest accepted secret, in bytes.
pub const MIN_SECRET_LEN: usize = 32;
/// Longest accepted assertion header, in bytes.
pub const MAX_ASSERTION_LEN: usize = 8 * 1024;
/// Longest key id; ids use `[A-Za-z0-9_-]`.
pub const MAX_KEY_ID_LEN: usize = 64;

/// How long an origin accepts an assertion by default: the edge signs it just before the
/// request leaves, so only the trip to the origin and clock skew need to fit.
pub const DEFAULT_MAX_AGE_MS: u64 = 10_000;
/// Clock skew tolerated for an assertion dated in the future.
pub const FUTURE_LEEWAY_MS: u64 = 5_000;
/// Largest `exp` and `ts`: 2^53 - 1, the largest integer every JSON reader holds exactly
/// (I-JSON, RFC 7493), so verifiers in every language read the same number.
pub const MAX_PAYLOAD_INTEGER: u64 = (1 << 53) - 1;
/// Deepest nesting of arrays and objects in a payload (the payload object is level 1), so
/// verifiers in every language refuse the same documents before their readers' own limits.
pub const MAX_PAYLOAD_DEPTH: usize = 32;

const VERSION: &str = "v2";
const VERSION_1: &str = "v1";

/// Why an assertion key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AssertionKeyError {
    /// The id is empty, too long, or uses characters outside `[A-Za-z0-9_-]`.
    #[error("assertion key id must be 1-{MAX_KEY_ID_LEN} characters of [A-Za-z0-9_-]")]
    KeyId,
    /// The secret is shorter than [`MIN_SECRET_LEN`] bytes.
    #[error("assertion secret must be at least {MIN_SECRET_LEN} bytes")]
    ShortSecret,
}

/// Why an origin refused an assertion. Every variant means 401 at the origin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AssertionError {
    /// The request has no assertion header (it did not come through the edge).
    #[error("no edge assertion")]
    Missing,
    /// More than one assertion header, or one value holding several (frameworks join
    /// repeated headers with commas; an assertion never contains one).
    #[error("more than one edge assertion")]
    Duplicate,
    /// Wrong shape, version, encoding or payload.
    #[error("edge assertion is malformed")]
    Malformed,
    /// The key id is not one the origin accepts.
    #[error("edge assertion key id is not accepted")]
    UnknownKey,
    /// The MAC does not match.
    #[error("edge assertion signature is invalid")]
    BadSignature,
    /// Signed for another method.
    #[error("edge assertion is bound to another method")]
    MethodMismatch,
    /// Signed for another path.
    #[error("edge assertion is bound to another path")]
    PathMismatch,
    /// Signed for another origin host.
    #[error("edge assertion is bound to another host")]
    HostMismatch,
    /// Signed for another query string.
    #[error("edge assertion is bound to another query")]
    QueryMismatch,
    /// Older than the accepted maximum age, or dated in the future beyond the leeway.
    #[error("edge assertion is not fresh")]
    Stale,
    /// The access token behind it has expired.
    #[error("the access token behind the edge assertion has expired")]
    TokenExpired,
}

impl AssertionError {
    /// A stable short code for logs and metrics.
    #[must_use]
    pub const fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing_assertion",
            Self::Duplicate => "duplicate_assertion",
            Self::Malformed => "malformed_assertion",
            Self::UnknownKey => "unknown_assertion_key",
            Self::BadSignature => "bad_assertion_signature",
            Self::MethodMismatch => "assertion_method_mismatch",
            Self::PathMismatch => "assertion_path_mismatch",
            Self::HostMismatch => "assertion_host_mismatch",
            Self::QueryMismatch => "assertion_query_mismatch",
            Self::Stale => "stale_assertion",
            Self::TokenExpired => "expired",
        }
    }
}

/// A named HMAC secret shared by the edge and the origins.
#[derive(Clone)]
pub struct AssertionKey {
    id: String,
    /// HMAC already keyed with the secret: each MAC clones it instead of hashing the key
    /// into the inner and outer pads again (two SHA-256 blocks per assertion).
    keyed: HmacSha256,
}

impl core::fmt::Debug for AssertionKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AssertionKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl AssertionKey {
    /// A key with this id and secret.
    ///
    /// # Errors
    /// [`AssertionKeyError`] for a bad id or a short secret.
    pub fn new(id: &str, secret: &[u8]) -> Result<Self, AssertionKeyError> {
        let id_ok = !id.is_empty()
            && id.len() <= MAX_KEY_ID_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !id_ok {
            return Err(AssertionKeyError::KeyId);
        }
        if secret.len() < MIN_SECRET_LEN {
            return Err(AssertionKeyError::ShortSecret);
        }
        Ok(Self {
            id: id.to_owned(),
            keyed: keyed(secret),
        })
    }

    /// The key of the origin at `host`, under this key's id: its secret is [`origin_secret`]
    /// of this key's secret (the edge's).
    #[must_use]
    pub fn for_origin(&self, host: &str) -> Self {
        Self {
            id: self.id.clone(),
            keyed: keyed(derive_origin_secret(self.mac(), host).as_bytes()),
        }
    }

    /// The key id.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    fn mac(&self) -> HmacSha256 {
        self.keyed.clone()
    }
}

/// What every origin's secret is derived under ([`origin_secret`]). Another label would give
/// every origin another secret.
const ORIGIN_SECRET_LABEL: &[u8] = b"edgeward-origin-key-v1\n";

/// The secret of the origin at `host`, derived from the edge's `edge_secret`: the unpadded
/// base64url of HMAC-SHA256, keyed by `edge_secret`, of `edgeward-origin-key-v1`, a line
/// feed, then `host`. It is 43 characters; an origin holds it as it would any secret (its
/// UTF-8 bytes are the HMAC key), so verifiers need no change.
///
/// `host` is what the origin's assertions carry as `host`: the authority of the origin's URL,
/// lower case, without a default port ([`crate::route::Origin::host`]).
///
/// An edge with a key per origin (`ASSERTION_KEYS = "per-origin"`) signs each origin's
/// assertions with that origin's secret. So an origin that leaks its secret lets its holder
/// mint assertions for that origin alone, and the edge's own secret never leaves the edge.
#[must_use]
pub fn origin_secret(edge_secret: &[u8], host: &str) -> String {
    derive_origin_secret(keyed(edge_secret), host)
}

/// [`origin_secret`] from an HMAC already keyed with the edge's secret (the edge derives from
/// its key, without hashing the secret into the pads again).
fn derive_origin_secret(keyed: HmacSha256, host: &str) -> String {
    Base64UrlUnpadded::encode_string(&finish(keyed, &[ORIGIN_SECRET_LABEL, host.as_bytes()]))
}

/// The request an assertion is for: as the edge forwards it, and as the origin receives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLine<'a> {
    /// The HTTP method.
    pub method: &'a str,
    /// The origin's host (`Host` at the origin: the authority of the origin URL the edge sent
    /// to, its route's or its `ORIGIN_URL`),
    /// compared case-insensitively.
    pub host: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// The query without `?`, exactly as sent (`None` and empty are the same).
    pub query: Option<&'a str>,
}

/// [`query_hash`] of no query: base64url SHA-256 of the empty string (most requests have no
/// query, and their assertion needs no hashing).
const EMPTY_QUERY_HASH: &str = "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU";

/// The base64url SHA-256 of a query's exact text (empty for none), as assertions carry it.
#[must_use]
pub fn query_hash(query: Option<&str>) -> std::borrow::Cow<'static, str> {
    use sha2::Digest;
    match query {
        None | Some("") => EMPTY_QUERY_HASH.into(),
        Some(query) => Base64UrlUnpadded::encode_string(&Sha256::digest(query.as_bytes())).into(),
    }
}

/// The identity an origin receives: who called, with which grant, for which request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EdgeIdentity {
    /// Token subject.
    pub sub: String,
    /// OAuth client id.
    pub client_id: String,
    /// Granted scopes.
    pub scope: Scopes,
    /// Token id.
    pub jti: String,
    /// Token expiry, seconds since the epoch.
    pub exp: u64,
    /// The HTTP method the edge forwarded.
    pub method: String,
    /// The origin host the edge forwarded to (empty in a `v1` assertion).
    #[serde(default)]
    pub host: String,
    /// The path the edge forwarded (no query string).
    pub path: String,
    /// [`query_hash`] of the query the edge forwarded (empty in a `v1` assertion).
    #[serde(default)]
    pub query: String,
    /// When the edge signed, milliseconds since the epoch.
    pub ts: u64,
    /// The id of the edge route that let the request in (empty when the edge has no route
    /// table, or the request matched none and the table's unmatched policy let it in; absent
    /// from assertions of edges older than route tables).
    #[serde(default)]
    pub route: String,
    /// The RFC 7638 thumbprint of the DPoP key the token is bound to, whose proof the edge
    /// checked on this request (RFC 9449): the token was sender-constrained. Empty for a
    /// bearer token (and absent from the signed payload then).
    #[serde(default)]
    pub cnf_jkt: String,
}

impl EdgeIdentity {
    /// The identity of verified `claims` for `request` at `now`.
    #[must_use]
    pub fn new(claims: &AccessClaims, request: &RequestLine<'_>, now: UnixTime) -> Self {
        Self {
            sub: claims.sub.clone(),
            client_id: claims.client_id.clone(),
            scope: claims.scope.clone(),
            jti: claims.jti.clone(),
            exp: claims.exp,
            method: request.method.to_owned(),
            host: request.host.to_ascii_lowercase(),
            path: request.path.to_owned(),
            query: query_hash(request.query).into_owned(),
            ts: now.as_millis(),
            route: String::new(),
            cnf_jkt: claims
                .cnf
                .as_ref()
                .map(|cnf| cnf.jkt.to_string())
                .unwrap_or_default(),
        }
    }

    /// This identity, let in by the route `route`.
    #[must_use]
    pub fn with_route(self, route: &str) -> Self {
        Self {
            route: route.to_owned(),
            ..self
        }
    }
}

/// [`EdgeIdentity`] as borrowed fields, serialized to the same JSON: the edge signs from the
/// verified claims without copying them first (every forwarded request signs once). Its
/// fields must stay those of `EdgeIdentity`, in the same order; the test
/// `signing_claims_matches_signing_their_identity` fails if they drift apart.
#[derive(Serialize)]
struct IdentityFields<'a> {
    sub: &'a str,
    client_id: &'a str,
    scope: &'a Scopes,
    jti: &'a str,
    exp: u64,
    method: &'a str,
    host: &'a str,
    path: &'a str,
    query: &'a str,
    ts: u64,
    route: &'a str,
    /// Left out when empty: a bearer token's assertion is as it was before DPoP.
    #[serde(skip_serializing_if = "str::is_empty")]
    cnf_jkt: &'a str,
}

/// Base64url length of an HMAC-SHA256 tag (32 bytes, unpadded).
const TAG_TEXT_LEN: usize = 43;

/// Signs identities at the edge.
#[derive(Debug, Clone)]
pub struct AssertionSigner {
    key: AssertionKey,
}

impl AssertionSigner {
    /// A signer with the current key.
    #[must_use]
    pub fn new(key: AssertionKey) -> Self {
        Self { key }
    }

    /// The header value asserting `identity`.
    #[must_use]
    pub fn sign(&self, identity: &EdgeIdentity) -> String {
        self.sign_fields(&IdentityFields {
            sub: &identity.sub,
            client_id: &identity.client_id,
            scope: &identity.scope,
            jti: &identity.jti,
            exp: identity.exp,
            method: &identity.method,
            host: &identity.host,
            path: &identity.path,
            query: &identity.query,
            ts: identity.ts,
            route: &identity.route,
            cnf_jkt: &identity.cnf_jkt,
        })
    }

    /// The header value asserting the identity of verified `claims` for `request`, let in by
    /// `route` (empty: none), at `now`: the same as [`AssertionSigner::sign`] of
    /// [`EdgeIdentity::new`] with that route, without the copy. `request.host` must already be
    /// lower case (the edge's configured origin host).
    #[must_use]
    pub fn sign_claims(
        &self,
        claims: &AccessClaims,
        request: &RequestLine<'_>,
        route: &str,
        now: UnixTime,
    ) -> String {
        let query = query_hash(request.query);
        self.sign_fields(&IdentityFields {
            sub: &claims.sub,
            client_id: &claims.client_id,
            scope: &claims.scope,
            jti: &claims.jti,
            exp: claims.exp,
            method: request.method,
            host: request.host,
            path: request.path,
            query: &query,
            ts: now.as_millis(),
            route,
            cnf_jkt: claims.cnf.as_ref().map_or("", |cnf| cnf.jkt.as_str()),
        })
    }

    fn sign_fields(&self, identity: &IdentityFields<'_>) -> String {
        // Room for a typical identity, so the buffer does not grow while it is written.
        let mut json = Vec::with_capacity(512);
        // Serializing strings and integers into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut json, identity);
        let mut value = String::with_capacity(
            VERSION.len()
                + self.key.id.len()
                + Base64UrlUnpadded::encoded_len(&json)
                + TAG_TEXT_LEN
                + 3,
        );
        value.push_str(VERSION);
        value.push('.');
        value.push_str(&self.key.id);
        value.push('.');
        value.push_str(&Base64UrlUnpadded::encode_string(&json));
        let tag = finish(self.key.mac(), &[value.as_bytes()]);
        let mut tag_text = [0u8; TAG_TEXT_LEN];
        value.push('.');
        // 32 bytes always fit in 43 characters.
        value.push_str(Base64UrlUnpadded::encode(&tag, &mut tag_text).unwrap_or_default());
        value
    }
}

/// Checks assertions at the origin.
#[derive(Debug, Clone)]
pub struct AssertionVerifier {
    keys: Vec<AssertionKey>,
    max_age_ms: u64,
    accept_v1: bool,
    /// The origin's own host, lower case: when set, assertions must name it, whatever `Host`
    /// the request carries.
    host: Option<String>,
}

impl AssertionVerifier {
    /// Accepts `v2` assertions signed by any of `keys` (current and previous during a
    /// rotation) and at most `max_age_ms` old ([`DEFAULT_MAX_AGE_MS`] unless the origin has
    /// a reason); [`FUTURE_LEEWAY_MS`] of clock skew into the future is tolerated.
    #[must_use]
    pub fn new(keys: Vec<AssertionKey>, max_age_ms: u64) -> Self {
        Self {
            keys,
            max_age_ms,
            accept_v1: false,
            host: None,
        }
    }

    /// Binds assertions to this origin's own `host` (the authority of the origin URL the edge
    /// sends to: a route's `origin`, else `ORIGIN_URL`) instead of the request's `Host` header. A `Host` header is whatever the
    /// sender wrote: without this, an assertion captured on its way to one origin is good at
    /// any other origin that holds the same key, given the first one's name as `Host`.
    #[must_use]
    pub fn for_host(mut self, host: &str) -> Self {
        self.host = Some(host.to_ascii_lowercase());
        self
    }

    /// Also accepts `v1` assertions (method and path only; the token's `exp` checked
    /// against this clock without leeway), while the edge rolls out `v2`. Turn it off once
    /// every edge signs `v2`: `v1` does not bind the host or the query.
    #[must_use]
    pub fn accept_v1(mut self, accept: bool) -> Self {
        self.accept_v1 = accept;
        self
    }

    /// Verifies the request's [`ASSERTION_HEADER`] values (all of them, in any number, as
    /// the server received them) for `request`, at `now`: exactly one value without a
    /// comma, then [`AssertionVerifier::verify`]. This is the rule every origin follows
    /// (`shared/tests/assertion-vectors.json`).
    ///
    /// # Errors
    /// [`AssertionError::Missing`] for none, [`AssertionError::Duplicate`] for several,
    /// otherwise as [`AssertionVerifier::verify`].
    pub fn verify_values<'h>(
        &self,
        values: impl IntoIterator<Item = &'h str>,
        request: &RequestLine<'_>,
        now: UnixTime,
    ) -> Result<EdgeIdentity, AssertionError> {
        let mut values = values.into_iter();
        match (values.next(), values.next()) {
            (None, _) => Err(AssertionError::Missing),
            (Some(value), None) if !value.contains(',') => self.verify(Some(value), request, now),
            _ => Err(AssertionError::Duplicate),
        }
    }

    /// Verifies the header value for `request`, at `now` (the caller has made sure there
    /// was only one: see [`AssertionVerifier::verify_values`]).
    ///
    /// # Errors
    /// Any [`AssertionError`].
    pub fn verify(
        &self,
        header: Option<&str>,
        request: &RequestLine<'_>,
        now: UnixTime,
    ) -> Result<EdgeIdentity, AssertionError> {
        let header = header.ok_or(AssertionError::Missing)?;
        if header.len() > MAX_ASSERTION_LEN {
            return Err(AssertionError::Malformed);
        }
        let mut parts = header.split('.');
        let (Some(version), Some(key_id), Some(payload), Some(tag), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(AssertionError::Malformed);
        };
        let v1 = match version {
            VERSION => false,
            VERSION_1 if self.accept_v1 => true,
            _ => return Err(AssertionError::Malformed),
        };
        let key = self
            .keys
            .iter()
            .find(|key| key.id == key_id)
            .ok_or(AssertionError::UnknownKey)?;
        let signed = header
            .get(..header.len() - tag.len() - 1)
            .ok_or(AssertionError::Malformed)?;
        let tag = Base64UrlUnpadded::decode_vec(tag).map_err(|_| AssertionError::Malformed)?;
        let mut mac = key.mac();
        mac.update(signed.as_bytes());
        mac.verify_slice(&tag)
            .map_err(|_| AssertionError::BadSignature)?;

        let json = Base64UrlUnpadded::decode_vec(payload).map_err(|_| AssertionError::Malformed)?;
        let identity = parse_payload(&json)?;
        if identity.method != request.method {
            return Err(AssertionError::MethodMismatch);
        }
        if identity.path != request.path {
            return Err(AssertionError::PathMismatch);
        }
        if !v1 {
            let host = self.host.as_deref().unwrap_or(request.host);
            if !identity.host.eq_ignore_ascii_case(host) {
                return Err(AssertionError::HostMismatch);
            }
            if identity.query != *query_hash(request.query) {
                return Err(AssertionError::QueryMismatch);
            }
        }
        let now_ms = now.as_millis();
        let too_old = now_ms.saturating_sub(identity.ts) > self.max_age_ms;
        let from_future = identity.ts > now_ms.saturating_add(FUTURE_LEEWAY_MS);
        if too_old || from_future {
            return Err(AssertionError::Stale);
        }
        let expired = if v1 {
            now.as_secs() >= identity.exp
        } else {
            // The edge accepted the token at `ts` within its leeway; no verifier's leeway
            // goes past MAX_LEEWAY_SECS.
            identity.ts / 1000 >= identity.exp.saturating_add(MAX_LEEWAY_SECS)
        };
        if expired {
            return Err(AssertionError::TokenExpired);
        }
        Ok(identity)
    }
}

/// The identity in a payload whose MAC verified: one JSON object (not the array form a struct
/// also reads from), no member twice, every string valid UTF-8 without lone surrogates, at
/// most [`MAX_PAYLOAD_DEPTH`] deep, the members of [`EdgeIdentity`] of their types, `exp` and
/// `ts` at most [`MAX_PAYLOAD_INTEGER`]. Members it does not know are ignored. Each rule is
/// one that every verifier (`docs/origins.md`) applies the same way.
fn parse_payload(json: &[u8]) -> Result<EdgeIdentity, AssertionError> {
    let Members(members) = serde_json::from_slice(json).map_err(|_| AssertionError::Malformed)?;
    if members
        .values()
        .any(|value| depth(value) >= MAX_PAYLOAD_DEPTH)
    {
        return Err(AssertionError::Malformed);
    }
    let identity: EdgeIdentity = serde_json::from_value(serde_json::Value::Object(members))
        .map_err(|_| AssertionError::Malformed)?;
    if identity.exp > MAX_PAYLOAD_INTEGER || identity.ts > MAX_PAYLOAD_INTEGER {
        return Err(AssertionError::Malformed);
    }
    Ok(identity)
}

/// Levels of arrays and objects in `value` (0 for a scalar).
fn depth(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(members) => 1 + members.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// A JSON object's members, refusing one named twice (`serde_json::Value` keeps the last).
struct Members(serde_json::Map<String, serde_json::Value>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Members;

            fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Members, A::Error> {
                let mut members = serde_json::Map::new();
                while let Some(name) = map.next_key::<String>()? {
                    let value = map.next_value()?;
                    if members.insert(name, value).is_some() {
                        return Err(serde::de::Error::custom("a member named twice"));
                    }
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}
