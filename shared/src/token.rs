//! Compact JWS access tokens: untrusted text in, [`VerifiedToken`] out.
//!
//! Verification runs in two steps so that the expensive part comes last and can be async:
//! [`Validator::check`] parses and checks everything cheap (size, encoding, header, claims,
//! key lookup) and returns a [`SignatureCheck`]; only its `verify_with*` methods, given a
//! [`SignatureVerifier`] or [`AsyncSignatureVerifier`], produce a [`VerifiedToken`]. There is no
//! other way to build one, so claims cannot be used before the signature checks out.
//! The algorithm is pinned to ES256: the header's `alg` is only compared, never obeyed.

use base64ct::{Base64UrlUnpadded, Encoding};

use crate::claims::{self, AccessClaims, Scopes, Validation};
use crate::json::{self, Member};
use crate::jwks::{Jwk, Jwks, MAX_KID_LEN};
use crate::rejection::{Rejection, Segment};
use crate::time::UnixTime;
use crate::verifier::{AsyncSignatureVerifier, SignatureVerifier};

/// Length of a JWS ES256 signature: `R || S`, 32 bytes each (RFC 7518 §3.4).
pub const SIGNATURE_LEN: usize = 64;

/// Half the order of P-256, big-endian: the largest low-S value (`n = 2 * HALF_N + 1`).
const HALF_N: [u8; 32] = [
    0x7f, 0xff, 0xff, 0xff, 0x80, 0x00, 0x00, 0x00, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xde, 0x73, 0x7d, 0x56, 0xd3, 0x8b, 0xcf, 0x42, 0x79, 0xdc, 0xe5, 0x61, 0x7e, 0x31, 0x92, 0xa8,
];

/// Whether `S` of an `R || S` signature is above half the group order. Both halves of the
/// order verify, so without this rule every token would have a second valid spelling.
/// (Public data: no constant time needed.)
fn is_high_s(signature: &[u8; SIGNATURE_LEN]) -> bool {
    signature.get(32..).is_some_and(|s| s > HALF_N.as_slice())
}

/// Header parameters that would let the token choose its own key or change how it is
/// processed. Keys come only from the configured JWKS.
const FORBIDDEN_HEADERS: [&str; 6] = ["crit", "jku", "x5u", "x5c", "jwk", "cty"];

/// The protected header as sent: every member that matters, even when `null`.
struct RawHeader {
    alg: Option<Member>,
    kid: Option<Member>,
    typ: Option<Member>,
    /// [`FORBIDDEN_HEADERS`], in that order.
    forbidden: [Option<Member>; 6],
}

impl RawHeader {
    /// Reads the header's JSON (an object, each judged member at most once).
    fn parse(bytes: &[u8]) -> Option<Self> {
        let [alg, kid, typ, crit, jku, x5u, x5c, jwk, cty] = json::parse(bytes)
            .ok()?
            .take_members([
                "alg", "kid", "typ", "crit", "jku", "x5u", "x5c", "jwk", "cty",
            ])
            .ok()?;
        Some(Self {
            alg,
            kid,
            typ,
            forbidden: [crit, jku, x5u, x5c, jwk, cty],
        })
    }

    fn forbidden(&self) -> Option<&'static str> {
        FORBIDDEN_HEADERS
            .iter()
            .zip(&self.forbidden)
            .find_map(|(name, member)| member.is_some().then_some(*name))
    }
}

/// A compact token whose structure and header passed the cheap checks. Nothing in it is
/// trusted yet; its claims are not even exposed.
#[derive(Debug)]
pub struct UntrustedToken<'t> {
    signing_input: &'t str,
    kid: String,
    payload: Vec<u8>,
    signature: [u8; SIGNATURE_LEN],
}

impl<'t> UntrustedToken<'t> {
    /// Parses a compact JWS and checks its header against the pinned profile: size, three
    /// canonical base64url segments, `alg` ES256, no forbidden parameters, an accepted `typ`,
    /// a `kid`, and a 64-byte signature.
    ///
    /// # Errors
    /// The first [`Rejection`] found, cheapest checks first.
    pub fn parse(token: &'t str, validation: &Validation) -> Result<Self, Rejection> {
        if token.len() > validation.max_token_bytes {
            return Err(Rejection::TooLarge {
                len: token.len(),
                max: validation.max_token_bytes,
            });
        }
        let mut segments = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return Err(Rejection::MalformedStructure);
        };
        if header.is_empty() || payload.is_empty() || signature.is_empty() {
            return Err(Rejection::MalformedStructure);
        }
        let signing_input = token
            .get(..header.len() + 1 + payload.len())
            .ok_or(Rejection::MalformedStructure)?;

        let header_bytes = decode(header, Segment::Header)?;
        let raw = RawHeader::parse(&header_bytes).ok_or(Rejection::InvalidJson {
            segment: Segment::Header,
        })?;
        if raw.alg.as_ref().and_then(Member::as_str) != Some("ES256") {
            return Err(Rejection::AlgorithmNotAllowed);
        }
        if let Some(name) = raw.forbidden() {
            return Err(Rejection::ForbiddenHeader { name });
        }
        let typ = raw
            .typ
            .as_ref()
            .and_then(Member::as_str)
            .ok_or(Rejection::WrongType)?;
        if !type_accepted(typ, validation.accept_jwt_type) {
            return Err(Rejection::WrongType);
        }
        let kid = match raw.kid {
            None | Some(Member::Null) => return Err(Rejection::MissingKeyId),
            Some(Member::Str(kid)) if !kid.is_empty() && kid.len() <= MAX_KID_LEN => kid,
            // Not a usable id: never `UnknownKeyId`, which would prompt a JWKS refresh.
            Some(_) => return Err(Rejection::MissingKeyId),
        };

        let signature_bytes = decode(signature, Segment::Signature)?;
        let signature =
            <[u8; SIGNATURE_LEN]>::try_from(signature_bytes.as_slice()).map_err(|_| {
                if looks_like_der(&signature_bytes) {
                    Rejection::DerSignature
                } else {
                    Rejection::SignatureLength {
                        len: signature_bytes.len(),
                    }
                }
            })?;
        if is_high_s(&signature) {
            return Err(Rejection::HighS);
        }
        let payload = decode(payload, Segment::Payload)?;

        Ok(Self {
            signing_input,
            kid,
            payload,
            signature,
        })
    }

    /// The `kid` the token names (unverified).
    #[must_use]
    pub fn kid(&self) -> &str {
        &self.kid
    }
}

/// `typ` per RFC 9068 §2.1, compared case-insensitively with or without the `application/`
/// prefix (RFC 7515 §4.1.9).
fn type_accepted(typ: &str, accept_jwt: bool) -> bool {
    let bare = match typ.get(..12) {
        Some(prefix) if prefix.eq_ignore_ascii_case("application/") => typ.get(12..).unwrap_or(""),
        _ => typ,
    };
    bare.eq_ignore_ascii_case("at+jwt") || (accept_jwt && bare.eq_ignore_ascii_case("jwt"))
}

/// An ASN.1 DER `SEQUENCE` of two integers is how other stacks encode ECDSA signatures.
fn looks_like_der(bytes: &[u8]) -> bool {
    matches!(bytes, [0x30, len, 0x02, ..] if usize::from(*len) + 2 == bytes.len())
}

fn decode(segment: &str, which: Segment) -> Result<Vec<u8>, Rejection> {
    Base64UrlUnpadded::decode_vec(segment).map_err(|_| Rejection::InvalidBase64 { segment: which })
}

/// Checks tokens against one [`Validation`]. Cheap to clone and to share.
///
/// A token bound to a DPoP key (`claims().cnf`, RFC 9449) verifies here like any other: what
/// makes it usable is a proof of that key on each request ([`crate::dpop`]). A caller that
/// checks no proof must refuse such a token ([`Rejection::BoundTokenAsBearer`]), as the edge,
/// the issuer's admin API and the JS package do.
#[derive(Debug, Clone)]
pub struct Validator {
    validation: Validation,
}

impl Validator {
    /// A validator for these rules.
    #[must_use]
    pub fn new(validation: Validation) -> Self {
        Self { validation }
    }

    /// The rules in force.
    #[must_use]
    pub fn validation(&self) -> &Validation {
        &self.validation
    }

    /// Step one: every check but the signature, in order of cost. Claims are checked before
    /// the key lookup so that an expired token never triggers a JWKS refresh.
    ///
    /// # Errors
    /// The first [`Rejection`] found; [`Rejection::UnknownKeyId`] when the header and claims
    /// are fine but the key set lacks the `kid` (the caller may refresh its JWKS and retry).
    pub fn check<'t, 'k>(
        &self,
        token: &'t str,
        jwks: &'k Jwks,
        now: UnixTime,
    ) -> Result<SignatureCheck<'t, 'k>, Rejection> {
        let untrusted = UntrustedToken::parse(token, &self.validation)?;
        let claims = claims::validate(&untrusted.payload, &self.validation, now)?;
        let key = jwks.find(&untrusted.kid).ok_or(Rejection::UnknownKeyId)?;
        Ok(SignatureCheck {
            signing_input: untrusted.signing_input,
            signature: untrusted.signature,
            key,
            claims,
        })
    }

    /// Both steps with the pure-Rust P-256 backend.
    ///
    /// # Errors
    /// Any [`Rejection`] from [`Validator::check`], or [`Rejection::BadSignature`].
    #[cfg(feature = "p256-backend")]
    pub fn verify(
        &self,
        token: &str,
        jwks: &Jwks,
        now: UnixTime,
    ) -> Result<VerifiedToken, Rejection> {
        self.check(token, jwks, now)?
            .verify_with(&crate::verifier::P256Verifier)
    }
}

/// A token that passed every check but the signature. Its claims stay private until a
/// verifier accepts the signature.
#[derive(Debug)]
#[must_use = "a token is not verified until its signature is checked"]
pub struct SignatureCheck<'t, 'k> {
    signing_input: &'t str,
    signature: [u8; SIGNATURE_LEN],
    key: &'k Jwk,
    claims: AccessClaims,
}

impl<'t> SignatureCheck<'t, '_> {
    /// The key the signature must verify under.
    #[must_use]
    pub fn key(&self) -> &Jwk {
        self.key
    }

    /// The bytes that were signed (`header.payload`, ASCII): a slice of the token, so it
    /// outlives the check (an asynchronous backend can take it after `into_pending`).
    #[must_use]
    pub fn signing_input(&self) -> &'t [u8] {
        self.signing_input.as_bytes()
    }

    /// The raw `R || S` signature.
    #[must_use]
    pub fn signature(&self) -> &[u8; SIGNATURE_LEN] {
        &self.signature
    }

    /// Step two with a synchronous backend.
    ///
    /// # Errors
    /// [`Rejection::BadSignature`], or [`Rejection::VerifierUnavailable`] if the backend failed.
    pub fn verify_with<V: SignatureVerifier + ?Sized>(
        self,
        verifier: &V,
    ) -> Result<VerifiedToken, Rejection> {
        let outcome = verifier.verify_es256(self.key, self.signing_input(), &self.signature);
        self.conclude(outcome.map_err(|_| Rejection::VerifierUnavailable)?)
    }

    /// Step two with an asynchronous backend (WebCrypto at the edge).
    ///
    /// # Errors
    /// [`Rejection::BadSignature`], or [`Rejection::VerifierUnavailable`] if the backend failed.
    pub async fn verify_with_async<V: AsyncSignatureVerifier + ?Sized>(
        self,
        verifier: &V,
    ) -> Result<VerifiedToken, Rejection> {
        let outcome = verifier
            .verify_es256(self.key, self.signing_input(), &self.signature)
            .await;
        self.conclude(outcome.map_err(|_| Rejection::VerifierUnavailable)?)
    }

    /// Step two for a backend that answers outside Rust futures (the edge's JavaScript
    /// promise chain): read [`key`](Self::key), [`signing_input`](Self::signing_input) and
    /// [`signature`](Self::signature), hand them to the backend, and give its verdict to
    /// [`PendingSignature::conclude`]. Owned, so it can wait across the JS boundary.
    pub fn into_pending(self) -> PendingSignature {
        PendingSignature {
            kid: self.key.kid().to_owned(),
            signer: *self.key.x(),
            claims: self.claims,
        }
    }

    fn conclude(self, valid: bool) -> Result<VerifiedToken, Rejection> {
        self.into_pending().conclude(valid)
    }
}

/// A checked token waiting for a signature backend's verdict ([`SignatureCheck::into_pending`]).
#[derive(Debug)]
#[must_use = "a token is not verified until its signature is checked"]
pub struct PendingSignature {
    kid: String,
    signer: [u8; 32],
    claims: AccessClaims,
}

impl PendingSignature {
    /// The `kid` of the key the signature must verify under.
    #[must_use]
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The verdict of an ES256 backend on the check's key, signing input and signature.
    ///
    /// # Errors
    /// [`Rejection::BadSignature`] when `valid` is false.
    pub fn conclude(self, valid: bool) -> Result<VerifiedToken, Rejection> {
        if !valid {
            return Err(Rejection::BadSignature);
        }
        Ok(VerifiedToken {
            kid: self.kid,
            signer: self.signer,
            claims: self.claims,
        })
    }
}

/// A token whose signature verified under a key of the set and whose claims passed the
/// [`Validation`] at the time given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    kid: String,
    /// The `x` of the key it verified under: an issuer may publish another key under the
    /// same `kid`, and a token is only as good as the key that checked it. (`x` alone names
    /// the point but for `y`'s sign, which no two honest keys share by chance.)
    signer: [u8; 32],
    claims: AccessClaims,
}

impl VerifiedToken {
    /// The id of the key that signed it.
    #[must_use]
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Whether `key` is the key it verified under: the same `kid` with the same point.
    #[must_use]
    pub fn verified_under(&self, key: &crate::jwks::Jwk) -> bool {
        key.kid() == self.kid && key.x() == &self.signer
    }

    /// The verified claims.
    #[must_use]
    pub fn claims(&self) -> &AccessClaims {
        &self.claims
    }

    /// Consumes the token for its claims.
    #[must_use]
    pub fn into_claims(self) -> AccessClaims {
        self.claims
    }

    /// Checks that the token grants every scope in `required`.
    ///
    /// # Errors
    /// [`Rejection::InsufficientScope`] naming the required scopes.
    pub fn require_scopes(&self, required: &Scopes) -> Result<(), Rejection> {
        if self.claims.scope.contains_all(required) {
            Ok(())
        } else {
            Err(Rejection::InsufficientScope {
                required: required.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typ_forms() {
        assert!(type_accepted("at+jwt", false));
        assert!(type_accepted("AT+JWT", false));
        assert!(type_accepted("application/at+jwt", false));
        assert!(!type_accepted("JWT", false));
        assert!(type_accepted("JWT", true));
        assert!(!type_accepted("application/", true));
        assert!(!type_accepted("at+jwt ", false));
    }

    #[test]
    fn low_s_boundary() {
        let with_s = |s: [u8; 32]| {
            let mut signature = [1u8; SIGNATURE_LEN];
            signature[32..].copy_from_slice(&s);
            signature
        };
        assert!(!is_high_s(&with_s(HALF_N)), "n/2 itself is low");
        let mut above = HALF_N;
        above[31] += 1;
        assert!(is_high_s(&with_s(above)));
        assert!(is_high_s(&with_s([0xff; 32])));
        assert!(!is_high_s(&with_s([0; 32])));
    }

    #[test]
    fn der_shape() {
        let mut der = vec![0x30, 68, 0x02, 32];
        der.extend([1u8; 32]);
        der.extend([0x02, 32]);
        der.extend([1u8; 32]);
        assert!(looks_like_der(&der));
        assert!(!looks_like_der(&[0x30, 5, 0x02]));
    }
}
