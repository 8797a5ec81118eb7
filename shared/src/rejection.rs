//! Why a request's token was refused, and how each reason maps to RFC 6750 (and, for DPoP,
//! RFC 9449 §7.1).
//!
//! [`Rejection`] is the single enum every refusal goes through, from header parsing to the
//! signature check. Its variants carry only values from configuration or sizes, never the
//! token's contents, so they are safe to log and to send back. The mapping to an HTTP status,
//! an RFC 6750 error code and a `WWW-Authenticate` value lives here, once; each binary turns
//! that into its own response type in exactly one function.

use core::fmt::Write as _;

use crate::dpop::ProofError;

/// A JWS segment of a compact token, for errors that point at one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Segment {
    /// The protected header (first segment).
    Header,
    /// The claims (second segment).
    Payload,
    /// The signature (third segment).
    Signature,
}

impl Segment {
    /// Lower-case name for messages and reason codes.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Header => "header",
            Self::Payload => "payload",
            Self::Signature => "signature",
        }
    }
}

/// The RFC 6750 §3.1 error codes, and RFC 9449 §7.1's two for DPoP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BearerErrorCode {
    /// `invalid_request`: the request itself is malformed (400).
    InvalidRequest,
    /// `invalid_token`: the token is malformed, expired, revoked or otherwise invalid (401).
    InvalidToken,
    /// `insufficient_scope`: the token is good but lacks a required scope (403).
    InsufficientScope,
    /// `invalid_dpop_proof`: the DPoP proof is missing, malformed, for another request,
    /// stale, replayed or not by the token's key (401).
    InvalidDpopProof,
    /// `use_dpop_nonce`: the proof needs a fresh server nonce (401).
    UseDpopNonce,
}

impl BearerErrorCode {
    /// The code as it appears in `WWW-Authenticate` and JSON bodies.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope => "insufficient_scope",
            Self::InvalidDpopProof => "invalid_dpop_proof",
            Self::UseDpopNonce => "use_dpop_nonce",
        }
    }
}

/// Why a token (or the request carrying it, or its DPoP proof) was refused.
///
/// `Display` gives a short lower-case sentence without any token content; [`Rejection::reason`]
/// gives a stable code for metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// No `Authorization: Bearer` or `DPoP` credentials at all. RFC 6750 §3.1: answer 401
    /// with a bare challenge and no error code.
    #[error("no bearer token in the request")]
    MissingToken,

    /// The `Authorization` header is malformed, repeated, or its `Bearer` or `DPoP` scheme is
    /// not followed by a syntactically valid token (RFC 6750 §2.1, RFC 9449 §7.1).
    #[error("malformed authorization header")]
    MalformedRequest,

    /// The compact token is longer than the configured cap; nothing else was looked at.
    #[error("token of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Length of the presented token in bytes.
        len: usize,
        /// The configured maximum.
        max: usize,
    },

    /// Not three non-empty dot-separated base64url segments.
    #[error("token is not a compact JWS")]
    MalformedStructure,

    /// A segment is not canonical unpadded base64url (RFC 7515 §2).
    #[error("token {} is not canonical base64url", segment.as_str())]
    InvalidBase64 {
        /// The offending segment.
        segment: Segment,
    },

    /// The header or payload is not a JSON object of the expected shape (wrong types,
    /// duplicate members, trailing data).
    #[error("token {} is not valid JSON of the expected shape", segment.as_str())]
    InvalidJson {
        /// The offending segment.
        segment: Segment,
    },

    /// `alg` is anything but `ES256` (including `none`, HMAC and RSA algorithms). The verifier
    /// pins ES256; the header never chooses the algorithm.
    #[error("token algorithm is not allowed (only ES256 is)")]
    AlgorithmNotAllowed,

    /// The header carries a parameter this verifier refuses to honour: `crit`, `jku`, `x5u`,
    /// `x5c`, `jwk` or `cty`. Keys come only from the configured JWKS.
    #[error("token header parameter `{name}` is not allowed")]
    ForbiddenHeader {
        /// The parameter name (a constant, not token content).
        name: &'static str,
    },

    /// `typ` is missing or not one of the accepted types (`at+jwt` per RFC 9068 §2.1).
    #[error("token type is not accepted")]
    WrongType,

    /// The header has no `kid`; keys are selected by id only.
    #[error("token header has no key id")]
    MissingKeyId,

    /// The `kid` is not in the current key set. The edge may refresh its JWKS (rate-limited).
    #[error("token key id is not in the key set")]
    UnknownKeyId,

    /// The signature is DER-encoded instead of the 64-byte JWS `R || S` form (RFC 7518 §3.4).
    #[error("token signature is DER-encoded, not raw R||S")]
    DerSignature,

    /// The signature is not exactly 64 bytes.
    #[error("token signature is {len} bytes, not 64")]
    SignatureLength {
        /// Decoded signature length.
        len: usize,
    },

    /// The signature's `S` is in the upper half of the curve order: the mirror image
    /// (`n - S`) of a signature. ECDSA verifies both; this verifier takes only the low-S form
    /// (the issuer signs in it), so a token has exactly one valid spelling and one
    /// verified-token cache entry.
    #[error("token signature is not in low-S form")]
    HighS,

    /// The signature does not verify under the key named by `kid`.
    #[error("token signature is invalid")]
    BadSignature,

    /// A required claim is absent.
    #[error("token has no `{claim}` claim")]
    MissingClaim {
        /// The claim name.
        claim: &'static str,
    },

    /// A claim has the wrong type, is empty, too long, or badly formatted.
    #[error("token claim `{claim}` is invalid")]
    InvalidClaim {
        /// The claim name.
        claim: &'static str,
    },

    /// `iss` is not the configured issuer.
    #[error("token issuer does not match")]
    IssuerMismatch,

    /// `aud` does not contain the configured audience.
    #[error("token audience does not match")]
    AudienceMismatch,

    /// `exp` has passed (beyond the leeway).
    #[error("token has expired")]
    Expired,

    /// `nbf` is still in the future (beyond the leeway).
    #[error("token is not yet valid")]
    NotYetValid,

    /// `iat` is in the future (beyond the leeway).
    #[error("token was issued in the future")]
    IssuedInFuture,

    /// `exp - iat` exceeds the configured maximum lifetime, or `exp` is not after `iat`.
    #[error("token lifetime is not within {max_secs} seconds")]
    LifetimeTooLong {
        /// The configured maximum lifetime.
        max_secs: u64,
    },

    /// The token's `jti` or its signing key has been revoked.
    #[error("token has been revoked")]
    Revoked,

    /// The token is valid but lacks a scope the resource requires.
    #[error("token lacks the required scope")]
    InsufficientScope {
        /// The space-separated scopes the resource requires (from configuration).
        required: String,
    },

    /// The signature backend could not run (for example WebCrypto threw). Not the client's
    /// fault: answer 503 and let the client retry.
    #[error("token verification is unavailable")]
    VerifierUnavailable,

    /// The token is bound to a DPoP key (`cnf.jkt`) but came as `Bearer`: a copy without
    /// its key, or a client that forgot the proof (RFC 9449 §7.2). Never taken as bearer.
    #[error("a DPoP-bound token came as a bearer token")]
    BoundTokenAsBearer,

    /// The resource takes DPoP-bound tokens only, and this one is not bound or came as
    /// `Bearer`.
    #[error("this resource requires a DPoP-bound token")]
    DpopRequired,

    /// `Authorization: DPoP` with a token that is not bound to a key: a bearer token dressed
    /// as a bound one.
    #[error("the token is not DPoP-bound")]
    UnboundTokenAsDpop,

    /// The DPoP proof was refused (RFC 9449 §7.1: `invalid_dpop_proof` or `use_dpop_nonce`;
    /// 503 when it could not be checked).
    #[error("{0}")]
    Dpop(ProofError),
}

impl Rejection {
    /// A stable short code for metrics labels and log fields.
    #[must_use]
    pub const fn reason(&self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::MalformedRequest => "malformed_request",
            Self::TooLarge { .. } => "too_large",
            Self::MalformedStructure => "malformed",
            Self::InvalidBase64 { .. } => "bad_base64",
            Self::InvalidJson { .. } => "bad_json",
            Self::AlgorithmNotAllowed => "alg_not_allowed",
            Self::ForbiddenHeader { .. } => "forbidden_header",
            Self::WrongType => "wrong_typ",
            Self::MissingKeyId => "missing_kid",
            Self::UnknownKeyId => "unknown_kid",
            Self::DerSignature => "der_signature",
            Self::SignatureLength { .. } => "signature_length",
            Self::HighS => "high_s_signature",
            Self::BadSignature => "bad_signature",
            Self::MissingClaim { .. } => "missing_claim",
            Self::InvalidClaim { .. } => "invalid_claim",
            Self::IssuerMismatch => "wrong_issuer",
            Self::AudienceMismatch => "wrong_audience",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::IssuedInFuture => "issued_in_future",
            Self::LifetimeTooLong { .. } => "lifetime_too_long",
            Self::Revoked => "revoked",
            Self::InsufficientScope { .. } => "insufficient_scope",
            Self::VerifierUnavailable => "verifier_unavailable",
            Self::BoundTokenAsBearer => "bound_token_as_bearer",
            Self::DpopRequired => "dpop_required",
            Self::UnboundTokenAsDpop => "unbound_token_as_dpop",
            Self::Dpop(error) => error.reason(),
        }
    }

    /// Whether the refusal is about DPoP: its challenge is `DPoP` whatever the scheme used.
    #[must_use]
    pub const fn is_dpop(&self) -> bool {
        matches!(
            self,
            Self::BoundTokenAsBearer
                | Self::DpopRequired
                | Self::UnboundTokenAsDpop
                | Self::Dpop(_)
        )
    }

    /// Whether the token failed before any claim or key was looked at: not a well-formed
    /// token of the pinned profile at all (size, encoding, header, signature form). Such a
    /// refusal costs the verifier almost nothing, so the edge charges it to the client's
    /// failed-auth budget in the isolate alone, with no round trip to shared state.
    #[must_use]
    pub const fn is_malformed(&self) -> bool {
        matches!(
            self,
            Self::TooLarge { .. }
                | Self::MalformedStructure
                | Self::InvalidBase64 { .. }
                | Self::InvalidJson { .. }
                | Self::AlgorithmNotAllowed
                | Self::ForbiddenHeader { .. }
                | Self::WrongType
                | Self::MissingKeyId
                | Self::DerSignature
                | Self::SignatureLength { .. }
                | Self::HighS
                | Self::Dpop(
                    ProofError::TooLarge
                        | ProofError::Malformed
                        | ProofError::WrongType
                        | ProofError::AlgorithmNotAllowed
                        | ProofError::ForbiddenHeader { .. }
                )
        )
    }

    /// The RFC 6750 error code, or `None` where the RFC says to send none (no token
    /// presented) or the failure is the server's.
    #[must_use]
    pub const fn error_code(&self) -> Option<BearerErrorCode> {
        match self {
            Self::MissingToken | Self::VerifierUnavailable => None,
            Self::Dpop(error) => error.error_code(),
            Self::MalformedRequest => Some(BearerErrorCode::InvalidRequest),
            Self::InsufficientScope { .. } => Some(BearerErrorCode::InsufficientScope),
            _ => Some(BearerErrorCode::InvalidToken),
        }
    }

    /// The HTTP status to answer with.
    #[must_use]
    pub const fn status(&self) -> u16 {
        if self.is_server_side() {
            return 503;
        }
        match self.error_code() {
            Some(BearerErrorCode::InvalidRequest) => 400,
            Some(BearerErrorCode::InsufficientScope) => 403,
            _ => 401,
        }
    }

    /// Whether the failure is the server's (a backend that could not run): 503, no challenge.
    #[must_use]
    pub const fn is_server_side(&self) -> bool {
        match self {
            Self::VerifierUnavailable => true,
            Self::Dpop(error) => error.error_code().is_none(),
            _ => false,
        }
    }

    /// A fixed, client-safe description for `error_description` (RFC 6750 §3: printable
    /// ASCII without `"` or `\`).
    #[must_use]
    pub const fn description(&self) -> &'static str {
        match self {
            Self::MissingToken => "a bearer token is required",
            Self::MalformedRequest => "the Authorization header must be a single Bearer credential",
            Self::TooLarge { .. } => "the access token is too large",
            Self::MalformedStructure
            | Self::InvalidBase64 { .. }
            | Self::InvalidJson { .. }
            | Self::DerSignature
            | Self::SignatureLength { .. }
            | Self::HighS => "the access token is malformed",
            Self::AlgorithmNotAllowed => "the access token algorithm is not allowed",
            Self::ForbiddenHeader { .. } => "the access token header is not allowed",
            Self::WrongType => "the access token type is not accepted",
            Self::MissingKeyId | Self::UnknownKeyId => "the access token signing key is unknown",
            Self::BadSignature => "the access token signature is invalid",
            Self::MissingClaim { .. } | Self::InvalidClaim { .. } => {
                "the access token claims are invalid"
            }
            Self::IssuerMismatch => "the access token issuer is not trusted",
            Self::AudienceMismatch => "the access token is not for this audience",
            Self::Expired => "the access token expired",
            Self::NotYetValid => "the access token is not yet valid",
            Self::IssuedInFuture => "the access token was issued in the future",
            Self::LifetimeTooLong { .. } => "the access token lifetime is too long",
            Self::Revoked => "the access token has been revoked",
            Self::InsufficientScope { .. } => "the access token lacks the required scope",
            Self::VerifierUnavailable => "token verification is temporarily unavailable",
            Self::BoundTokenAsBearer => {
                "the access token is DPoP-bound: send it with the DPoP scheme and a proof"
            }
            Self::DpopRequired => "this resource requires a DPoP-bound access token",
            Self::UnboundTokenAsDpop => "the access token is not DPoP-bound",
            Self::Dpop(error) => error.description(),
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750 §3), or `None` for a server-side failure.
    ///
    /// `realm` comes from configuration; characters that would break the quoted string are
    /// dropped.
    #[must_use]
    pub fn www_authenticate(&self, realm: &str) -> Option<String> {
        self.challenge(realm, false)
    }

    /// The challenge for a request that used the `DPoP` scheme, or reached a resource that
    /// requires it (`dpop`), or for a DPoP refusal: RFC 9449 §7.1's `DPoP` scheme with the
    /// proof algorithms; otherwise RFC 6750's `Bearer`. `None` for a server-side failure.
    #[must_use]
    pub fn challenge(&self, realm: &str, dpop: bool) -> Option<String> {
        if self.is_server_side() {
            return None;
        }
        let mut value = String::with_capacity(128);
        if dpop || self.is_dpop() {
            value.push_str("DPoP algs=\"");
            value.push_str(&crate::dpop::PROOF_ALGS.join(" "));
            value.push_str("\", realm=\"");
        } else {
            value.push_str("Bearer realm=\"");
        }
        push_quoted_safe(&mut value, realm);
        value.push('"');
        if let Some(code) = self.error_code() {
            let _ = write!(
                value,
                ", error=\"{}\", error_description=\"{}\"",
                code.as_str(),
                self.description()
            );
        }
        if let Self::InsufficientScope { required } = self {
            value.push_str(", scope=\"");
            push_quoted_safe(&mut value, required);
            value.push('"');
        }
        Some(value)
    }

    /// The JSON error body (`{"error": ..., "error_description": ...}`), as RFC 6749 §5.2
    /// shapes it; `error` is absent when there is no code.
    #[must_use]
    pub fn json_body(&self) -> String {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            error: Option<&'a str>,
            error_description: &'a str,
        }
        let error = match self.error_code() {
            Some(code) => Some(code.as_str()),
            None if self.is_server_side() => Some("temporarily_unavailable"),
            None => None,
        };
        let body = Body {
            error,
            error_description: self.description(),
        };
        // Plain strings into a String: cannot fail.
        serde_json::to_string(&body).unwrap_or_default()
    }
}

/// Appends `text` keeping only RFC 6750 quoted-string-safe characters.
fn push_quoted_safe(out: &mut String, text: &str) {
    out.extend(
        text.chars()
            .filter(|c| matches!(c, ' ' | '!' | '#'..='[' | ']'..='~')),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_carries_code_and_description() {
        let value = Rejection::Expired.www_authenticate("api").unwrap();
        assert_eq!(
            value,
            "Bearer realm=\"api\", error=\"invalid_token\", error_description=\"the access token expired\""
        );
        assert_eq!(
            Rejection::MissingToken.www_authenticate("api").unwrap(),
            "Bearer realm=\"api\""
        );
        assert!(Rejection::VerifierUnavailable
            .www_authenticate("api")
            .is_none());
    }

    #[test]
    fn scope_and_realm_are_sanitised() {
        let rejection = Rejection::InsufficientScope {
            required: "read \"write\"".into(),
        };
        let value = rejection.www_authenticate("a\"b\\c").unwrap();
        assert!(value.starts_with("Bearer realm=\"abc\""));
        assert!(value.ends_with("scope=\"read write\""));
        assert_eq!(rejection.status(), 403);
    }

    #[test]
    fn dpop_refusals_challenge_with_dpop() {
        let replayed = Rejection::Dpop(ProofError::Replayed);
        assert_eq!(replayed.status(), 401);
        assert_eq!(
            replayed.www_authenticate("api").unwrap(),
            "DPoP algs=\"ES256\", realm=\"api\", error=\"invalid_dpop_proof\", error_description=\"the DPoP proof was already used\""
        );
        let nonce = Rejection::Dpop(ProofError::UseNonce);
        assert!(nonce.json_body().contains("use_dpop_nonce"));
        let unchecked = Rejection::Dpop(ProofError::ReplayUnchecked);
        assert_eq!(unchecked.status(), 503);
        assert!(unchecked.www_authenticate("api").is_none());
        assert!(unchecked.json_body().contains("temporarily_unavailable"));
        let undecided = Rejection::Dpop(ProofError::ReplayUndecided);
        assert_eq!(undecided.status(), 503);
        assert!(undecided.www_authenticate("api").is_none());
        assert!(undecided.json_body().contains("retry with a new proof"));
        // An ordinary refusal of a DPoP request is challenged as DPoP too.
        assert!(Rejection::Expired
            .challenge("api", true)
            .unwrap()
            .starts_with("DPoP algs=\"ES256\", realm=\"api\", error=\"invalid_token\""));
        assert_eq!(
            Rejection::BoundTokenAsBearer.error_code(),
            Some(BearerErrorCode::InvalidToken)
        );
    }

    #[test]
    fn statuses() {
        assert_eq!(Rejection::MalformedRequest.status(), 400);
        assert_eq!(Rejection::BadSignature.status(), 401);
        assert_eq!(Rejection::VerifierUnavailable.status(), 503);
        assert_eq!(
            Rejection::Expired.json_body(),
            r#"{"error":"invalid_token","error_description":"the access token expired"}"#
        );
    }
}
