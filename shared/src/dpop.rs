//! DPoP proofs (RFC 9449): untrusted `DPoP` header in, [`VerifiedProof`] out.
//!
//! A proof is a JWS the client signs, for every request, with a key it holds. Its header
//! carries the public key (`jwk`); its claims name the request (`htm`, `htu`), the time
//! (`iat`), a one-time id (`jti`) and, at a resource, the hash of the access token (`ath`).
//! The token itself names the key it is bound to by its RFC 7638 thumbprint (`cnf.jkt`).
//!
//! Checking runs in two steps, as for tokens ([`crate::token`]): [`check`] does everything
//! cheap and returns a [`ProofCheck`]; only a signature backend's verdict turns it into a
//! [`VerifiedProof`]. What is left to the caller, because it is state: that the `jti` was not
//! seen before within [`ProofRules::replay_window_secs`] ([`VerifiedProof::replay_key`] and
//! [`VerifiedProof::remember_until`] say what to store and for how long), and a server nonce
//! where one is used ([`VerifiedProof::nonce`]).
//!
//! The profile, and why:
//! - `typ` is `dpop+jwt`, `alg` is ES256 (the only algorithm this system verifies; `none`,
//!   HMAC and RSA are refused before any key is read);
//! - `jwk` is an EC P-256 public key on the curve; private material (`d`) is refused, as are
//!   `crit`, `jku`, `x5u`, `x5c` and `cty`;
//! - a high-S signature is accepted: clients sign with WebCrypto, which does not normalise S,
//!   and replay is judged by `jti`, never by the signature's spelling;
//! - `htu` is compared after the normalisation the route table uses: scheme and host in lower
//!   case, the default port dropped, the path through [`NormalPath`], query and fragment
//!   ignored (RFC 9449 §4.3);
//! - `iat` at most [`ProofRules::max_age_secs`] plus the leeway in the past, and the leeway
//!   in the future;
//! - `jti` present, at most [`MAX_JTI_LEN`] bytes: it is what the replay store keeps.

use base64ct::{Base64UrlUnpadded, Encoding};
use sha2::{Digest, Sha256};

use crate::cache::TokenKey;
use crate::json::{self, Member};
use crate::jwks::Jwk;
use crate::path::NormalPath;
use crate::rejection::BearerErrorCode;
use crate::time::UnixTime;
use crate::token::SIGNATURE_LEN;
use crate::verifier::{AsyncSignatureVerifier, SignatureVerifier};

mod nonce;
pub use nonce::{NonceKeyError, Nonces, MIN_SECRET_LEN as MIN_NONCE_SECRET_LEN};

/// The algorithms a proof may use, as `WWW-Authenticate: DPoP algs="…"` and the issuer's
/// `dpop_signing_alg_values_supported` name them.
pub const PROOF_ALGS: &[&str] = &["ES256"];

/// Longest accepted proof, in bytes: several times what a P-256 proof with a token hash
/// needs, so a client's extra claims fit, and a junk header costs little to refuse.
pub const MAX_PROOF_BYTES: usize = 4 * 1024;

/// Longest accepted `jti`, in bytes: the replay store holds one per proof.
pub const MAX_JTI_LEN: usize = 128;

/// Longest accepted `nonce`, in bytes.
pub const MAX_NONCE_LEN: usize = 256;

/// Header parameters a proof may not carry: the key is the `jwk`, nothing else.
const FORBIDDEN_HEADERS: [&str; 5] = ["crit", "jku", "x5u", "x5c", "cty"];

/// The RFC 7638 SHA-256 thumbprint of a P-256 public key, as `cnf.jkt` carries it: 43
/// characters of unpadded base64url. Untrusted text becomes one only through [`Jkt::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Jkt(String);

impl Jkt {
    /// The thumbprint of the key with these affine coordinates (RFC 7638 §3: the required
    /// members in lexicographic order, no whitespace).
    #[must_use]
    pub fn of_coordinates(x: &[u8; 32], y: &[u8; 32]) -> Self {
        let (x, y) = (
            Base64UrlUnpadded::encode_string(x),
            Base64UrlUnpadded::encode_string(y),
        );
        let members = [
            r#"{"crv":"P-256","kty":"EC","x":""#,
            &x,
            r#"","y":""#,
            &y,
            r#""}"#,
        ]
        .concat();
        Self(Base64UrlUnpadded::encode_string(&Sha256::digest(
            members.as_bytes(),
        )))
    }

    /// The thumbprint of `key`.
    #[must_use]
    pub fn of(key: &Jwk) -> Self {
        Self::of_coordinates(key.x(), key.y())
    }

    /// A thumbprint as sent (a token's `cnf.jkt`): `None` unless it is the canonical
    /// base64url of 32 bytes.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        let decoded = Base64UrlUnpadded::decode(text, &mut bytes).ok()?;
        (decoded.len() == 32).then(|| Self(text.to_owned()))
    }

    /// The thumbprint's text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl core::fmt::Display for Jkt {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `ath`: the unpadded base64url SHA-256 of the access token's ASCII (RFC 9449 §4.2).
#[must_use]
pub fn token_hash(access_token: &str) -> String {
    ath(&TokenKey::of(access_token))
}

/// `ath` for the token hashed as `token` (its SHA-256, unpadded base64url).
fn ath(token: &TokenKey) -> String {
    Base64UrlUnpadded::encode_string(token.digest())
}

/// An HTTP(S) URI in the form `htu` is compared in: `scheme://host[:port]/normal/path`,
/// without query or fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUri(String);

impl HttpUri {
    /// Normalises an absolute `http` or `https` URI (RFC 3986 §6.2.2 and §6.2.3): scheme and
    /// host lower-cased, a default port dropped, the path through [`NormalPath`] (an empty
    /// one is `/`), query and fragment cut off. `None` for anything else: another scheme,
    /// user information, an empty host, a bad port, or a path [`NormalPath`] refuses.
    #[must_use]
    pub fn parse(uri: &str) -> Option<Self> {
        let end = uri.find(['?', '#']).unwrap_or(uri.len());
        let (scheme, rest) = uri.get(..end)?.split_once("://")?;
        let default_port = if scheme.eq_ignore_ascii_case("https") {
            "443"
        } else if scheme.eq_ignore_ascii_case("http") {
            "80"
        } else {
            return None;
        };
        let (authority, path) = rest.find('/').map_or((rest, "/"), |at| rest.split_at(at));
        // A host is a name, or one bracketed IPv6 literal; then, at most, `:` and a port.
        let (host, port) = match authority.strip_prefix('[') {
            Some(literal) => {
                let close = literal.find(']')? + 1;
                let (host, port) = authority.split_at(close + 1);
                let port = match port {
                    "" => None,
                    port => Some(port.strip_prefix(':')?),
                };
                let inside = host.get(1..host.len() - 1)?;
                if inside.is_empty()
                    || !inside
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
                {
                    return None;
                }
                (host, port)
            }
            None => {
                let (host, port) = match authority.split_once(':') {
                    Some((host, port)) => (host, Some(port)),
                    None => (authority, None),
                };
                let name = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_');
                if host.is_empty() || !host.bytes().all(name) {
                    return None;
                }
                (host, port)
            }
        };
        // The port as written, without leading zeros; the scheme's default is left out.
        let port = match port {
            None | Some("") => None,
            Some(port) if port.bytes().all(|b| b.is_ascii_digit()) => {
                let digits = port.trim_start_matches('0');
                // At most 65535, compared as text (same length, so the order is numeric).
                if digits.len() > 5 || (digits.len() == 5 && digits > "65535") {
                    return None;
                }
                (digits != default_port).then_some(digits)
            }
            Some(_) => return None,
        };
        let path = NormalPath::parse(path).ok()?;
        let mut normal = String::with_capacity(uri.len());
        normal.push_str(scheme);
        normal.push_str("://");
        normal.push_str(host);
        normal.make_ascii_lowercase();
        if let Some(port) = port {
            normal.push(':');
            normal.push_str(if port.is_empty() { "0" } else { port });
        }
        normal.push_str(path.as_str());
        Some(Self(normal))
    }

    /// The normal form.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How old and how far ahead a proof's `iat` may be. Build with [`ProofRules::default`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProofRules {
    /// How long after its `iat` a proof is accepted, in seconds (default 60). RFC 9449 §11.1
    /// asks for "seconds or minutes": clients make a proof per request, so a minute covers a
    /// slow network and a retry.
    pub max_age_secs: u64,
    /// How far in the future `iat` may be, and how far past the age limit, for clock skew
    /// (default 5 seconds).
    pub leeway_secs: u64,
}

/// [`ProofRules::leeway_secs`]' default: the issuer and the edge tolerate the same skew.
pub const DEFAULT_LEEWAY_SECS: u64 = 5;

/// The longest [`ProofRules::max_age_secs`] a server of this system is configured with (the
/// issuer's and the edge's configs refuse more). [`VerifiedProof::remember_until`] reaches
/// this far past `iat` whatever one server's rules, so servers whose rules differ (a canary,
/// the overlap of a rollout) can share a replay store and still accept each proof once.
pub const MAX_PROOF_AGE_SECS: u64 = 300;

/// The default window of a server's [`Nonces`], in seconds, at the issuer and the edge alike:
/// a nonce is good in its window and the next.
pub const DEFAULT_NONCE_LIFETIME_SECS: u64 = 300;

impl Default for ProofRules {
    fn default() -> Self {
        Self {
            max_age_secs: 60,
            leeway_secs: DEFAULT_LEEWAY_SECS,
        }
    }
}

impl ProofRules {
    /// The longest span of server time over which one proof is accepted under these rules:
    /// `iat - leeway ..= iat + max_age + leeway`. A replay store used by servers of these
    /// rules alone may remember each `jti` for this long after first seeing it; one shared
    /// by servers whose rules may differ keeps it until [`VerifiedProof::remember_until`].
    #[must_use]
    pub const fn replay_window_secs(&self) -> u64 {
        self.max_age_secs
            .saturating_add(self.leeway_secs.saturating_mul(2))
    }
}

/// The request a proof must be for.
#[derive(Debug, Clone, Copy)]
pub struct ProofRequest<'a> {
    /// The request's method, compared exactly (RFC 9110 methods are case-sensitive).
    pub method: &'a str,
    /// The request's URI as the server was reached (normalised before comparing).
    pub uri: &'a HttpUri,
    /// The SHA-256 of the access token presented with the proof (`TokenKey::of`), if any:
    /// then `ath` must state it. At the token endpoint there is none, and a proof's `ath` is
    /// not looked at.
    pub access_token: Option<&'a TokenKey>,
    /// The thumbprint the token is bound to (`cnf.jkt`), checked before the signature.
    pub bound_to: Option<&'a Jkt>,
}

/// Why a DPoP proof (or the lack of one) was refused. Every variant but
/// [`ProofError::UseNonce`] is RFC 9449's `invalid_dpop_proof`; none carries the proof's
/// contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// No `DPoP` header where one is required.
    #[error("a DPoP proof is required")]
    Missing,
    /// More than one `DPoP` header (RFC 9449 §4.3 check 1).
    #[error("more than one DPoP header")]
    Repeated,
    /// Longer than [`MAX_PROOF_BYTES`].
    #[error("the DPoP proof is too large")]
    TooLarge,
    /// Not a compact JWS of canonical base64url segments holding JSON objects.
    #[error("the DPoP proof is not a well-formed JWT")]
    Malformed,
    /// `typ` is not `dpop+jwt`.
    #[error("the DPoP proof type is not dpop+jwt")]
    WrongType,
    /// `alg` is not one of [`PROOF_ALGS`] (`none`, HMAC and RSA included).
    #[error("the DPoP proof algorithm is not allowed")]
    AlgorithmNotAllowed,
    /// The header carries `crit`, `jku`, `x5u`, `x5c` or `cty`.
    #[error("the DPoP proof header parameter `{name}` is not allowed")]
    ForbiddenHeader {
        /// The parameter (a constant, not proof content).
        name: &'static str,
    },
    /// `jwk` is missing, not an EC P-256 key, or not a point on the curve.
    #[error("the DPoP proof key is not a P-256 public key")]
    BadKey,
    /// `jwk` carries private key material (`d`).
    #[error("the DPoP proof key holds private material")]
    PrivateKey,
    /// The signature is not 64 bytes, or does not verify under the proof's own key.
    #[error("the DPoP proof signature is invalid")]
    BadSignature,
    /// A required claim is absent.
    #[error("the DPoP proof has no `{claim}` claim")]
    MissingClaim {
        /// The claim name.
        claim: &'static str,
    },
    /// A claim has the wrong type, is empty or too long.
    #[error("the DPoP proof claim `{claim}` is invalid")]
    InvalidClaim {
        /// The claim name.
        claim: &'static str,
    },
    /// `htm` is not the request's method.
    #[error("the DPoP proof is for another method")]
    MethodMismatch,
    /// `htu` is not the request's URI (after normalisation), or not an HTTP(S) URI.
    #[error("the DPoP proof is for another URI")]
    UriMismatch,
    /// `iat` is older than [`ProofRules::max_age_secs`] (and the leeway).
    #[error("the DPoP proof is too old")]
    Stale,
    /// `iat` is ahead of the server's clock by more than the leeway.
    #[error("the DPoP proof was issued in the future")]
    IssuedInFuture,
    /// `ath` is absent, or not the hash of the access token presented.
    #[error("the DPoP proof does not match the access token")]
    TokenHashMismatch,
    /// The proof's key is not the one the token is bound to (`cnf.jkt`).
    #[error("the DPoP proof key is not the one the token is bound to")]
    KeyMismatch,
    /// This proof's `jti` was already accepted within the window (a replay).
    #[error("the DPoP proof was already used")]
    Replayed,
    /// The server requires a nonce, and the proof has none or a stale one: RFC 9449's
    /// `use_dpop_nonce`, answered with a fresh `DPoP-Nonce`.
    #[error("a fresh DPoP nonce is required")]
    UseNonce,
    /// The signature backend could not run (not the client's fault: 503).
    #[error("DPoP proof verification is unavailable")]
    VerifierUnavailable,
    /// The replay store could not say whether the proof is fresh: it is not accepted
    /// unchecked (503, and the client retries with a new proof).
    #[error("the DPoP replay check is unavailable")]
    ReplayUnchecked,
    /// The replay store cannot tell whether it saw the proof: it started again, or forgot its
    /// oldest proofs, within the proof's window. Not accepted (503); the client's next proof,
    /// made a second later, can be told.
    #[error("the DPoP replay store cannot tell whether the proof was used")]
    ReplayUndecided,
}

impl ProofError {
    /// The RFC 9449 error code, or `None` for a server-side failure.
    #[must_use]
    pub const fn error_code(&self) -> Option<BearerErrorCode> {
        match self {
            Self::UseNonce => Some(BearerErrorCode::UseDpopNonce),
            Self::VerifierUnavailable | Self::ReplayUnchecked | Self::ReplayUndecided => None,
            _ => Some(BearerErrorCode::InvalidDpopProof),
        }
    }

    /// A stable short code for metrics labels, logs and the vector file.
    #[must_use]
    pub const fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "dpop_missing",
            Self::Repeated => "dpop_repeated",
            Self::TooLarge => "dpop_too_large",
            Self::Malformed => "dpop_malformed",
            Self::WrongType => "dpop_wrong_typ",
            Self::AlgorithmNotAllowed => "dpop_alg_not_allowed",
            Self::ForbiddenHeader { .. } => "dpop_forbidden_header",
            Self::BadKey => "dpop_bad_key",
            Self::PrivateKey => "dpop_private_key",
            Self::BadSignature => "dpop_bad_signature",
            Self::MissingClaim { .. } => "dpop_missing_claim",
            Self::InvalidClaim { .. } => "dpop_invalid_claim",
            Self::MethodMismatch => "dpop_wrong_method",
            Self::UriMismatch => "dpop_wrong_uri",
            Self::Stale => "dpop_stale",
            Self::IssuedInFuture => "dpop_issued_in_future",
            Self::TokenHashMismatch => "dpop_wrong_ath",
            Self::KeyMismatch => "dpop_wrong_key",
            Self::Replayed => "dpop_replayed",
            Self::UseNonce => "dpop_nonce_required",
            Self::VerifierUnavailable => "dpop_verifier_unavailable",
            Self::ReplayUnchecked => "dpop_replay_unchecked",
            Self::ReplayUndecided => "dpop_replay_undecided",
        }
    }

    /// A fixed, client-safe `error_description` (printable ASCII without `"` or `\\`).
    #[must_use]
    pub const fn description(&self) -> &'static str {
        match self {
            Self::Missing => "a DPoP proof is required",
            Self::Repeated => "more than one DPoP proof",
            Self::TooLarge
            | Self::Malformed
            | Self::WrongType
            | Self::ForbiddenHeader { .. }
            | Self::MissingClaim { .. }
            | Self::InvalidClaim { .. } => "the DPoP proof is malformed",
            Self::AlgorithmNotAllowed => "the DPoP proof algorithm is not allowed",
            Self::BadKey | Self::PrivateKey => "the DPoP proof key is not an EC P-256 public key",
            Self::BadSignature => "the DPoP proof signature is invalid",
            Self::MethodMismatch | Self::UriMismatch => "the DPoP proof is for another request",
            Self::Stale => "the DPoP proof is too old",
            Self::IssuedInFuture => "the DPoP proof was issued in the future",
            Self::TokenHashMismatch => "the DPoP proof is not for this access token",
            Self::KeyMismatch => "the DPoP proof key is not the one the token is bound to",
            Self::Replayed => "the DPoP proof was already used",
            Self::UseNonce => "a fresh DPoP nonce is required",
            Self::VerifierUnavailable | Self::ReplayUnchecked => {
                "DPoP proof checking is temporarily unavailable"
            }
            Self::ReplayUndecided => "the DPoP proof could not be checked; retry with a new proof",
        }
    }
}

/// The proof from the request's `DPoP` header values: exactly one, trimmed.
///
/// # Errors
/// [`ProofError::Missing`] with none, [`ProofError::Repeated`] with more than one.
pub fn proof_header<'a, I>(values: I) -> Result<&'a str, ProofError>
where
    I: IntoIterator<Item = &'a str>,
{
    let mut values = values.into_iter();
    let value = values.next().ok_or(ProofError::Missing)?;
    if values.next().is_some() {
        return Err(ProofError::Repeated);
    }
    Ok(value.trim_matches([' ', '\t']))
}

/// Step one: every check but the signature and the replay store, cheapest first.
///
/// # Errors
/// The first [`ProofError`] found.
pub fn check<'p>(
    proof: &'p str,
    request: &ProofRequest<'_>,
    rules: &ProofRules,
    now: UnixTime,
) -> Result<ProofCheck<'p>, ProofError> {
    if proof.len() > MAX_PROOF_BYTES {
        return Err(ProofError::TooLarge);
    }
    let mut segments = proof.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(ProofError::Malformed);
    };
    let signing_input = proof
        .get(..header.len() + 1 + payload.len())
        .ok_or(ProofError::Malformed)?;
    let decode =
        |segment: &str| Base64UrlUnpadded::decode_vec(segment).map_err(|_| ProofError::Malformed);

    let [typ, alg, jwk, crit, jku, x5u, x5c, cty] = json::parse(&decode(header)?)
        .and_then(|header| {
            header.take_members(["typ", "alg", "jwk", "crit", "jku", "x5u", "x5c", "cty"])
        })
        .map_err(|_| ProofError::Malformed)?;
    if !typ
        .as_ref()
        .and_then(Member::as_str)
        .is_some_and(|typ| typ.eq_ignore_ascii_case("dpop+jwt"))
    {
        return Err(ProofError::WrongType);
    }
    let alg = alg.as_ref().and_then(Member::as_str);
    if !alg.is_some_and(|alg| PROOF_ALGS.contains(&alg)) {
        return Err(ProofError::AlgorithmNotAllowed);
    }
    if let Some(name) = FORBIDDEN_HEADERS
        .iter()
        .zip([crit, jku, x5u, x5c, cty])
        .find_map(|(name, member)| member.is_some().then_some(*name))
    {
        return Err(ProofError::ForbiddenHeader { name });
    }
    let (key, jkt) = proof_key(jwk.ok_or(ProofError::BadKey)?)?;
    if request.bound_to.is_some_and(|bound| *bound != jkt) {
        return Err(ProofError::KeyMismatch);
    }

    let signature = decode(signature)?;
    let signature = <[u8; SIGNATURE_LEN]>::try_from(signature.as_slice())
        .map_err(|_| ProofError::BadSignature)?;

    let claims = ProofClaims::parse(&decode(payload)?)?;
    if claims.htm != request.method {
        return Err(ProofError::MethodMismatch);
    }
    if HttpUri::parse(&claims.htu).as_ref() != Some(request.uri) {
        return Err(ProofError::UriMismatch);
    }
    let now = now.as_secs();
    if claims.iat > now.saturating_add(rules.leeway_secs) {
        return Err(ProofError::IssuedInFuture);
    }
    if now > claims.accepted_until(rules) {
        return Err(ProofError::Stale);
    }
    if let Some(token) = request.access_token {
        let expected = ath(token);
        // Public values (the token's hash): no constant-time comparison needed.
        if claims.ath.as_deref() != Some(expected.as_str()) {
            return Err(ProofError::TokenHashMismatch);
        }
    }

    let remember_until = claims.remember_until(rules);
    Ok(ProofCheck {
        signing_input,
        signature,
        key,
        verified: VerifiedProof {
            jkt,
            jti: claims.jti,
            nonce: claims.nonce,
            remember_until,
        },
    })
}

/// The proof's `jwk` as a key (its `kid` is its thumbprint, so the signature backends and
/// their key caches take it as they take a key-set key) and its thumbprint.
fn proof_key(jwk: Member) -> Result<(Jwk, Jkt), ProofError> {
    let [kty, crv, x, y, d] = jwk
        .take_members(["kty", "crv", "x", "y", "d"])
        .map_err(|_| ProofError::BadKey)?;
    if d.is_some() {
        return Err(ProofError::PrivateKey);
    }
    if kty.as_ref().and_then(Member::as_str) != Some("EC")
        || crv.as_ref().and_then(Member::as_str) != Some("P-256")
    {
        return Err(ProofError::BadKey);
    }
    let coordinate = |value: Option<Member>| {
        let mut bytes = [0u8; 32];
        let text = value
            .as_ref()
            .and_then(Member::as_str)
            .ok_or(ProofError::BadKey)?;
        match Base64UrlUnpadded::decode(text, &mut bytes) {
            Ok(decoded) if decoded.len() == 32 => Ok(bytes),
            _ => Err(ProofError::BadKey),
        }
    };
    let (x, y) = (coordinate(x)?, coordinate(y)?);
    let jkt = Jkt::of_coordinates(&x, &y);
    let key = Jwk::from_coordinates(jkt.as_str(), x, y).map_err(|_| ProofError::BadKey)?;
    Ok((key, jkt))
}

/// The claims of a proof, read but not yet judged against the request.
struct ProofClaims {
    jti: String,
    htm: String,
    htu: String,
    iat: u64,
    ath: Option<String>,
    nonce: Option<String>,
}

impl ProofClaims {
    fn parse(payload: &[u8]) -> Result<Self, ProofError> {
        let [jti, htm, htu, iat, ath, nonce] = json::parse(payload)
            .and_then(|claims| claims.take_members(["jti", "htm", "htu", "iat", "ath", "nonce"]))
            .map_err(|_| ProofError::Malformed)?;
        let string = |claim: &'static str, value: Option<Member>, max_len: usize| match value {
            None => Err(ProofError::MissingClaim { claim }),
            Some(Member::Str(text)) if !text.is_empty() && text.len() <= max_len => Ok(text),
            Some(_) => Err(ProofError::InvalidClaim { claim }),
        };
        let optional = |claim: &'static str, value: Option<Member>, max_len: usize| {
            value
                .map(|value| string(claim, Some(value), max_len))
                .transpose()
        };
        Ok(Self {
            jti: string("jti", jti, MAX_JTI_LEN)?,
            htm: string("htm", htm, 32)?,
            htu: string("htu", htu, MAX_PROOF_BYTES)?,
            iat: match iat {
                None => return Err(ProofError::MissingClaim { claim: "iat" }),
                Some(value) => value
                    .as_u64()
                    .ok_or(ProofError::InvalidClaim { claim: "iat" })?,
            },
            ath: optional("ath", ath, 64)?,
            nonce: optional("nonce", nonce, MAX_NONCE_LEN)?,
        })
    }

    /// The last second (server time) at which this proof is still accepted under `rules`.
    fn accepted_until(&self, rules: &ProofRules) -> u64 {
        self.iat
            .saturating_add(rules.max_age_secs)
            .saturating_add(rules.leeway_secs)
    }

    /// The last second at which any server of this system would accept this proof: under
    /// `rules`, or under rules of the longest age and the default leeway, whichever is later.
    /// A store keyed or pruned by it does not depend on the rules of the server that wrote.
    fn remember_until(&self, rules: &ProofRules) -> u64 {
        self.iat
            .saturating_add(rules.max_age_secs.max(MAX_PROOF_AGE_SECS))
            .saturating_add(rules.leeway_secs.max(DEFAULT_LEEWAY_SECS))
    }
}

/// A proof that passed every check but its signature (and the replay store).
#[derive(Debug)]
#[must_use = "a proof is not verified until its signature is checked"]
pub struct ProofCheck<'p> {
    signing_input: &'p str,
    signature: [u8; SIGNATURE_LEN],
    key: Jwk,
    verified: VerifiedProof,
}

impl<'p> ProofCheck<'p> {
    /// The proof's own key; its `kid` is its thumbprint.
    #[must_use]
    pub fn key(&self) -> &Jwk {
        &self.key
    }

    /// The bytes that were signed (`header.payload`).
    #[must_use]
    pub fn signing_input(&self) -> &'p [u8] {
        self.signing_input.as_bytes()
    }

    /// The raw `R || S` signature.
    #[must_use]
    pub fn signature(&self) -> &[u8; SIGNATURE_LEN] {
        &self.signature
    }

    /// The proof's `nonce`, if it carries one: a server that judges nonces ([`Nonces`]) can
    /// refuse a proof before its signature is checked.
    #[must_use]
    pub fn nonce(&self) -> Option<&str> {
        self.verified.nonce()
    }

    /// Step two with a synchronous backend.
    ///
    /// # Errors
    /// [`ProofError::BadSignature`], or [`ProofError::VerifierUnavailable`].
    pub fn verify_with<V: SignatureVerifier + ?Sized>(
        self,
        verifier: &V,
    ) -> Result<VerifiedProof, ProofError> {
        let outcome = verifier.verify_es256(&self.key, self.signing_input(), &self.signature);
        self.into_pending()
            .conclude(outcome.map_err(|_| ProofError::VerifierUnavailable)?)
    }

    /// Step two with an asynchronous backend.
    ///
    /// # Errors
    /// [`ProofError::BadSignature`], or [`ProofError::VerifierUnavailable`].
    pub async fn verify_with_async<V: AsyncSignatureVerifier + ?Sized>(
        self,
        verifier: &V,
    ) -> Result<VerifiedProof, ProofError> {
        let outcome = verifier
            .verify_es256(&self.key, self.signing_input(), &self.signature)
            .await;
        self.into_pending()
            .conclude(outcome.map_err(|_| ProofError::VerifierUnavailable)?)
    }

    /// Step two for a backend that answers outside Rust futures: read [`key`](Self::key),
    /// [`signing_input`](Self::signing_input) and [`signature`](Self::signature), and give the
    /// verdict to [`PendingProof::conclude`].
    pub fn into_pending(self) -> PendingProof {
        PendingProof(self.verified)
    }
}

/// A checked proof waiting for a signature backend's verdict.
#[derive(Debug)]
#[must_use = "a proof is not verified until its signature is checked"]
pub struct PendingProof(VerifiedProof);

impl PendingProof {
    /// The verdict of an ES256 backend.
    ///
    /// # Errors
    /// [`ProofError::BadSignature`] when `valid` is false.
    pub fn conclude(self, valid: bool) -> Result<VerifiedProof, ProofError> {
        if valid {
            Ok(self.0)
        } else {
            Err(ProofError::BadSignature)
        }
    }
}

/// A proof signed by the key it carries, for this request, at an acceptable time. Whether it
/// is fresh (its `jti` unseen) is the replay store's to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedProof {
    jkt: Jkt,
    jti: String,
    nonce: Option<String>,
    remember_until: u64,
}

impl VerifiedProof {
    /// The thumbprint of the proof's key: what a token issued on it is bound to.
    #[must_use]
    pub fn jkt(&self) -> &Jkt {
        &self.jkt
    }

    /// The proof's `jti`.
    #[must_use]
    pub fn jti(&self) -> &str {
        &self.jti
    }

    /// The proof's `nonce`, if it carries one.
    #[must_use]
    pub fn nonce(&self) -> Option<&str> {
        self.nonce.as_deref()
    }

    /// What a replay store keys this proof by: the SHA-256 of the key's thumbprint and the
    /// `jti`, unpadded base64url (43 bytes whatever the `jti`). Scoped by key so one client
    /// cannot burn another's ids.
    #[must_use]
    pub fn replay_key(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(self.jkt.as_str().as_bytes());
        hash.update(b"\n");
        hash.update(self.jti.as_bytes());
        Base64UrlUnpadded::encode_string(&hash.finalize())
    }

    /// The last second (server time, seconds since the epoch) at which any server of this
    /// system would accept this proof, whatever its rules ([`MAX_PROOF_AGE_SECS`]): a replay
    /// store must remember its key until then, and may forget it after. It depends on the
    /// proof alone (for rules within the bounds), so an entry written by a server with a
    /// shorter window is still there when one with a longer window looks.
    #[must_use]
    pub fn remember_until(&self) -> u64 {
        self.remember_until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_normalise_as_routes_do() {
        let normal = |uri: &str| HttpUri::parse(uri).map(|uri| uri.0);
        assert_eq!(
            normal("HTTPS://API.Example.com:443/a/./b/../c?x=1#f").as_deref(),
            Some("https://api.example.com/a/c")
        );
        assert_eq!(normal("http://h:80").as_deref(), Some("http://h/"));
        assert_eq!(
            normal("http://h:8080/%7euser").as_deref(),
            Some("http://h:8080/~user")
        );
        assert_eq!(
            normal("https://[::1]:8443/x").as_deref(),
            Some("https://[::1]:8443/x")
        );
        assert_eq!(
            normal("https://[::1]/x").as_deref(),
            Some("https://[::1]/x")
        );
        for bad in [
            "ftp://h/",
            "https:///x",
            "https://user@h/",
            "https://h:99999/",
            "https://h:x/",
            "https://h:8443:443/x",
            "https://[::1/x",
            "https://[::1]x/",
            "https://[]/x",
            "https://h/a%2fb",
            "/relative",
            "https://h h/",
        ] {
            assert_eq!(normal(bad), None, "{bad}");
        }
    }

    #[test]
    fn thumbprints_parse_only_canonically() {
        let jkt = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";
        assert_eq!(Jkt::parse(jkt).unwrap().as_str(), jkt);
        assert!(Jkt::parse(&jkt[1..]).is_none());
        assert!(Jkt::parse(&format!("{jkt}=")).is_none());
        assert!(Jkt::parse("").is_none());
    }

    #[test]
    fn the_replay_window_covers_every_acceptable_second() {
        let rules = ProofRules::default();
        assert_eq!(rules.replay_window_secs(), 70);
    }

    #[test]
    fn one_header_only() {
        assert_eq!(proof_header([" a.b.c "]), Ok("a.b.c"));
        assert_eq!(proof_header([]), Err(ProofError::Missing));
        assert_eq!(proof_header(["a", "b"]), Err(ProofError::Repeated));
    }
}
