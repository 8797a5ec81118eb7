//! JSON Web Key Sets (RFC 7517), reduced to what this system trusts: EC P-256 signing keys.
//!
//! The issuer publishes with [`Jwks::to_json`] and every verifier parses with
//! [`Jwks::parse`], so both sides agree on one format. Parsing keeps P-256 signing keys
//! (`kty` EC, `crv` P-256, `use` sig or absent, `alg` ES256 or absent, `key_ops` including
//! `verify` if present) and skips every other key without failing, because issuers may
//! publish keys for other consumers. A key that claims to be ours but is broken (bad
//! coordinates, a point off the curve, private material) fails the whole set: a corrupted
//! or tampered set must not half-load.

use base64ct::{Base64UrlUnpadded, Encoding};
use p256::elliptic_curve::ff::PrimeField;
use p256::elliptic_curve::sec1::FromEncodedPoint;
use p256::{AffinePoint, EncodedPoint, FieldElement, NistP256};
use primeorder::PrimeCurveParams;
use serde::Serialize;

use crate::json::{self, JsonError, Member};

/// Size and count caps for an untrusted key set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwksLimits {
    /// Largest accepted document, in bytes.
    pub max_bytes: usize,
    /// Most entries in the `keys` array (counted before skipping foreign keys).
    pub max_keys: usize,
}

impl Default for JwksLimits {
    /// 64 KiB and 64 keys: a rotating issuer publishes two or three.
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024,
            max_keys: 64,
        }
    }
}

/// Longest accepted `kid`, in bytes.
pub const MAX_KID_LEN: usize = 256;

/// Why a key set was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// The document exceeds [`JwksLimits::max_bytes`].
    #[error("key set of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Document length in bytes.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// Not a JSON object with a `keys` array of objects (each member of a key at most once).
    #[error("key set is not valid JWKS JSON")]
    Malformed(#[source] JsonError),
    /// More entries than [`JwksLimits::max_keys`].
    #[error("key set has {count} keys, more than the limit of {max}")]
    TooManyKeys {
        /// Entries in the `keys` array.
        count: usize,
        /// The configured maximum.
        max: usize,
    },
    /// Two keys share a `kid`, so lookups would be ambiguous.
    #[error("key id `{kid}` appears more than once")]
    DuplicateKid {
        /// The repeated key id.
        kid: String,
    },
    /// A P-256 key's `kid` is not a non-empty string of at most [`MAX_KID_LEN`] bytes.
    #[error("key at index {index} has an invalid key id")]
    InvalidKid {
        /// Position in the `keys` array.
        index: usize,
    },
    /// A coordinate is missing, not canonical base64url, or not exactly 32 bytes.
    #[error("key `{kid}` has an invalid `{coordinate}` coordinate")]
    InvalidCoordinate {
        /// The key id.
        kid: String,
        /// `x` or `y`.
        coordinate: &'static str,
    },
    /// The coordinates do not name a point on P-256 (invalid-curve attacks start here).
    #[error("key `{kid}` is not a point on P-256")]
    PointNotOnCurve {
        /// The key id.
        kid: String,
    },
    /// The key carries private material (`d`): a public set must never hold it.
    #[error("key `{kid}` contains private key material")]
    PrivateKeyMaterial {
        /// The key id.
        kid: String,
    },
}

/// One verified EC P-256 public key with its id.
#[derive(Clone)]
pub struct Jwk {
    kid: String,
    x: [u8; 32],
    y: [u8; 32],
    #[cfg(feature = "p256-backend")]
    verifying_key: p256::ecdsa::VerifyingKey,
}

impl core::fmt::Debug for Jwk {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Jwk")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Jwk {
    fn eq(&self, other: &Self) -> bool {
        self.kid == other.kid && self.x == other.x && self.y == other.y
    }
}
impl Eq for Jwk {}

impl Jwk {
    /// A key from its affine coordinates (big-endian, 32 bytes each).
    ///
    /// # Errors
    /// [`JwksError::InvalidKid`] for an empty or overlong `kid`, [`JwksError::PointNotOnCurve`]
    /// if the coordinates are not a point on P-256.
    pub fn from_coordinates(kid: &str, x: [u8; 32], y: [u8; 32]) -> Result<Self, JwksError> {
        if kid.is_empty() || kid.len() > MAX_KID_LEN {
            return Err(JwksError::InvalidKid { index: 0 });
        }
        if !on_curve(&x, &y) {
            return Err(JwksError::PointNotOnCurve {
                kid: kid.to_owned(),
            });
        }
        #[cfg(feature = "p256-backend")]
        let verifying_key = {
            let encoded = EncodedPoint::from_affine_coordinates(&x.into(), &y.into(), false);
            Option::<AffinePoint>::from(AffinePoint::from_encoded_point(&encoded))
                .and_then(|point| p256::ecdsa::VerifyingKey::from_affine(point).ok())
                .ok_or_else(|| JwksError::PointNotOnCurve {
                    kid: kid.to_owned(),
                })?
        };
        Ok(Self {
            kid: kid.to_owned(),
            x,
            y,
            #[cfg(feature = "p256-backend")]
            verifying_key,
        })
    }

    /// A key from a SEC1 point (uncompressed or compressed), as `p256` encodes public keys.
    ///
    /// # Errors
    /// As [`Jwk::from_coordinates`]; a malformed encoding is [`JwksError::PointNotOnCurve`].
    pub fn from_sec1_bytes(kid: &str, sec1: &[u8]) -> Result<Self, JwksError> {
        let not_on_curve = || JwksError::PointNotOnCurve {
            kid: kid.to_owned(),
        };
        let encoded = EncodedPoint::from_bytes(sec1).map_err(|_| not_on_curve())?;
        let point = Option::<AffinePoint>::from(AffinePoint::from_encoded_point(&encoded))
            .ok_or_else(not_on_curve)?;
        let uncompressed =
            p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&point, false);
        let (Some(x), Some(y)) = (uncompressed.x(), uncompressed.y()) else {
            return Err(not_on_curve());
        };
        Self::from_coordinates(kid, (*x).into(), (*y).into())
    }

    /// The key id.
    #[must_use]
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The affine `x` coordinate, big-endian.
    #[must_use]
    pub fn x(&self) -> &[u8; 32] {
        &self.x
    }

    /// The affine `y` coordinate, big-endian.
    #[must_use]
    pub fn y(&self) -> &[u8; 32] {
        &self.y
    }

    /// The uncompressed SEC1 point `04 || x || y`, the form WebCrypto imports as `raw`.
    #[must_use]
    pub fn uncompressed_point(&self) -> [u8; 65] {
        let mut out = [0u8; 65];
        out[0] = 0x04;
        out[1..33].copy_from_slice(&self.x);
        out[33..].copy_from_slice(&self.y);
        out
    }

    /// The decoded key for the pure-Rust backend.
    #[cfg(feature = "p256-backend")]
    #[must_use]
    pub fn verifying_key(&self) -> &p256::ecdsa::VerifyingKey {
        &self.verifying_key
    }
}

/// Whether `(x, y)` is a point of P-256: both coordinates below the field's prime, and
/// y² = x³ + ax + b (SEC1 §3.2.2.1's check, the one p256's decoder makes of an uncompressed
/// point). Written out so the edge, which hands keys to WebCrypto, links the field arithmetic
/// alone and not the decoder, whose compressed-point half (a square root) it never needs.
fn on_curve(x: &[u8; 32], y: &[u8; 32]) -> bool {
    let field =
        |bytes: &[u8; 32]| Option::<FieldElement>::from(FieldElement::from_repr((*bytes).into()));
    let (Some(x), Some(y)) = (field(x), field(y)) else {
        return false;
    };
    y.square() == x.square() * x + NistP256::EQUATION_A * x + NistP256::EQUATION_B
}

/// A parsed key set: only the P-256 signing keys, looked up by `kid`.
#[derive(Debug, Clone, Default)]
pub struct Jwks {
    keys: Vec<Jwk>,
    skipped: usize,
}

/// Two sets are equal when they hold the same keys in the same order; what was skipped
/// while parsing does not matter.
impl PartialEq for Jwks {
    fn eq(&self, other: &Self) -> bool {
        self.keys == other.keys
    }
}
impl Eq for Jwks {}

impl Jwks {
    /// A set from keys already in hand (the issuer's side).
    ///
    /// # Errors
    /// [`JwksError::DuplicateKid`] if two keys share an id.
    pub fn from_keys(keys: Vec<Jwk>) -> Result<Self, JwksError> {
        for (i, key) in keys.iter().enumerate() {
            if keys.iter().take(i).any(|other| other.kid == key.kid) {
                return Err(JwksError::DuplicateKid {
                    kid: key.kid.clone(),
                });
            }
        }
        Ok(Self { keys, skipped: 0 })
    }

    /// Parses an untrusted JWKS document with the default [`JwksLimits`].
    ///
    /// # Errors
    /// Any [`JwksError`]; see the module notes for which keys are skipped instead.
    pub fn parse(json: &str) -> Result<Self, JwksError> {
        Self::parse_with_limits(json, &JwksLimits::default())
    }

    /// Parses an untrusted JWKS document under explicit limits.
    ///
    /// # Errors
    /// Any [`JwksError`]; see the module notes for which keys are skipped instead.
    pub fn parse_with_limits(json: &str, limits: &JwksLimits) -> Result<Self, JwksError> {
        if json.len() > limits.max_bytes {
            return Err(JwksError::TooLarge {
                len: json.len(),
                max: limits.max_bytes,
            });
        }
        let entries = read_keys(json.as_bytes()).map_err(JwksError::Malformed)?;
        if entries.len() > limits.max_keys {
            return Err(JwksError::TooManyKeys {
                count: entries.len(),
                max: limits.max_keys,
            });
        }

        let mut seen_kids: Vec<&str> = Vec::with_capacity(entries.len());
        for entry in &entries {
            if let Some(kid) = entry.kid.as_ref().and_then(Member::as_str) {
                if seen_kids.contains(&kid) {
                    return Err(JwksError::DuplicateKid {
                        kid: kid.to_owned(),
                    });
                }
                seen_kids.push(kid);
            }
        }

        let mut keys = Vec::new();
        let mut skipped = 0;
        for (index, entry) in entries.iter().enumerate() {
            match parse_entry(index, entry)? {
                Some(key) => keys.push(key),
                None => skipped += 1,
            }
        }
        Ok(Self { keys, skipped })
    }

    /// The key with this id, if any.
    #[must_use]
    pub fn find(&self, kid: &str) -> Option<&Jwk> {
        self.keys.iter().find(|key| key.kid == kid)
    }

    /// Whether a key with this id is in the set.
    #[must_use]
    pub fn contains(&self, kid: &str) -> bool {
        self.find(kid).is_some()
    }

    /// The usable keys, in document order.
    #[must_use]
    pub fn keys(&self) -> &[Jwk] {
        &self.keys
    }

    /// How many entries parsing skipped as not ours (other key types, curves or uses).
    #[must_use]
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Removes every key whose id `revoked` names (a revoked key must not stay in a set that
    /// is kept stale or cached); returns how many went.
    pub fn remove_keys(&mut self, mut revoked: impl FnMut(&str) -> bool) -> usize {
        let before = self.keys.len();
        self.keys.retain(|key| !revoked(&key.kid));
        before - self.keys.len()
    }

    /// Whether the set holds no usable key.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The set as a JWKS document, each key with `kty`, `crv`, `kid`, `use`, `alg`, `x`, `y`.
    #[must_use]
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct PublicJwk<'a> {
            kty: &'static str,
            crv: &'static str,
            kid: &'a str,
            #[serde(rename = "use")]
            use_: &'static str,
            alg: &'static str,
            x: String,
            y: String,
        }
        #[derive(Serialize)]
        struct PublicSet<'a> {
            keys: Vec<PublicJwk<'a>>,
        }
        let set = PublicSet {
            keys: self
                .keys
                .iter()
                .map(|key| PublicJwk {
                    kty: "EC",
                    crv: "P-256",
                    kid: &key.kid,
                    use_: "sig",
                    alg: "ES256",
                    x: Base64UrlUnpadded::encode_string(&key.x),
                    y: Base64UrlUnpadded::encode_string(&key.y),
                })
                .collect(),
        };
        // Serializing plain strings into a String cannot fail.
        serde_json::to_string(&set).unwrap_or_default()
    }
}

/// The members of one `keys` entry that decide whether and how it is used; the rest are
/// skipped. Each at most once: a repeated member fails the whole set (as a repeated `kid`
/// across entries does), so no two readers of the set can see different keys.
struct RawKey {
    kty: Option<Member>,
    crv: Option<Member>,
    use_: Option<Member>,
    alg: Option<Member>,
    key_ops: Option<Member>,
    kid: Option<Member>,
    x: Option<Member>,
    y: Option<Member>,
    d: Option<Member>,
}

/// The `keys` array of a key set document, each entry an object whose judged members
/// appear at most once.
fn read_keys(json: &[u8]) -> Result<Vec<RawKey>, JsonError> {
    let [keys] = json::parse(json)?.take_members(["keys"])?;
    let Some(Member::Array(entries)) = keys else {
        return Err(JsonError::Shape {
            expected: "a `keys` array",
        });
    };
    entries
        .into_iter()
        .map(|entry| {
            let [kty, crv, use_, alg, key_ops, kid, x, y, d] = entry
                .take_members(["kty", "crv", "use", "alg", "key_ops", "kid", "x", "y", "d"])?;
            Ok(RawKey {
                kty,
                crv,
                use_,
                alg,
                key_ops,
                kid,
                x,
                y,
                d,
            })
        })
        .collect()
}

/// One `keys` entry: `Ok(None)` when it is not a P-256 signing key (skipped).
fn parse_entry(index: usize, entry: &RawKey) -> Result<Option<Jwk>, JwksError> {
    fn text(member: &Option<Member>) -> Option<&str> {
        member.as_ref().and_then(Member::as_str)
    }
    let absent_or = |member: &Option<Member>, wanted: &str| match member {
        None => true,
        Some(value) => value.as_str() == Some(wanted),
    };
    let ours = text(&entry.kty) == Some("EC")
        && text(&entry.crv) == Some("P-256")
        && absent_or(&entry.use_, "sig")
        && absent_or(&entry.alg, "ES256")
        && match &entry.key_ops {
            None => true,
            Some(Member::Array(ops)) => ops.iter().any(|op| op.as_str() == Some("verify")),
            Some(_) => false,
        };
    if !ours {
        return Ok(None);
    }
    // Private material fails the whole set before anything else is judged: a key without
    // an id is skipped below, but one published with its `d` means the issuer leaked it.
    if entry.d.is_some() {
        // Named by its `kid` if that is a sane one (the error is logged).
        let kid = text(&entry.kid)
            .filter(|kid| kid.len() <= MAX_KID_LEN)
            .unwrap_or_default();
        return Err(JwksError::PrivateKeyMaterial {
            kid: kid.to_owned(),
        });
    }
    let Some(kid) = &entry.kid else {
        // A key without an id can never be selected (tokens must name their `kid`).
        return Ok(None);
    };
    let kid = kid
        .as_str()
        .filter(|kid| !kid.is_empty() && kid.len() <= MAX_KID_LEN)
        .ok_or(JwksError::InvalidKid { index })?;
    let coordinate = |name: &'static str, member: &Option<Member>| -> Result<[u8; 32], JwksError> {
        let invalid = || JwksError::InvalidCoordinate {
            kid: kid.to_owned(),
            coordinate: name,
        };
        let encoded = text(member).ok_or_else(invalid)?;
        let mut out = [0u8; 32];
        let decoded = Base64UrlUnpadded::decode(encoded, &mut out).map_err(|_| invalid())?;
        if decoded.len() != 32 {
            return Err(invalid());
        }
        Ok(out)
    };
    let x = coordinate("x", &entry.x)?;
    let y = coordinate("y", &entry.y)?;
    Jwk::from_coordinates(kid, x, y)
        .map(Some)
        .map_err(|err| match err {
            JwksError::InvalidKid { .. } => JwksError::InvalidKid { index },
            other => other,
        })
}

#[cfg(test)]
mod tests {
    use p256::elliptic_curve::sec1::{FromEncodedPoint, ToEncodedPoint};
    use p256::{AffinePoint, EncodedPoint, ProjectivePoint, Scalar};

    use super::on_curve;

    /// p256's own decoder of an uncompressed point: the reference `on_curve` must agree with.
    fn decodes(x: &[u8; 32], y: &[u8; 32]) -> bool {
        let encoded = EncodedPoint::from_affine_coordinates(&(*x).into(), &(*y).into(), false);
        AffinePoint::from_encoded_point(&encoded).is_some().into()
    }

    #[test]
    fn on_curve_agrees_with_the_p256_decoder() {
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
        let mut noise = || {
            let mut bytes = [0u8; 32];
            for chunk in bytes.chunks_mut(8) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                chunk.copy_from_slice(&seed.to_be_bytes());
            }
            bytes
        };
        for k in 1..=64u64 {
            let point = (ProjectivePoint::GENERATOR
                * Scalar::from(k)
                * Scalar::from(noise()[0] as u64 + 1))
            .to_affine()
            .to_encoded_point(false);
            let (Some(x), Some(y)) = (point.x(), point.y()) else {
                panic!("an uncompressed point has coordinates");
            };
            let (x, mut y): ([u8; 32], [u8; 32]) = ((*x).into(), (*y).into());
            assert!(on_curve(&x, &y) && decodes(&x, &y), "k = {k}");
            y[31] ^= 1;
            assert!(!on_curve(&x, &y) && !decodes(&x, &y), "k = {k}, y changed");
            let (x, y) = (noise(), noise());
            assert_eq!(on_curve(&x, &y), decodes(&x, &y), "noise");
        }
        for (x, y) in [
            ([0xFF; 32], [0; 32]),
            ([0; 32], [0; 32]),
            ([0; 32], [0xFF; 32]),
        ] {
            assert!(!on_curve(&x, &y) && !decodes(&x, &y));
        }
    }

    /// A coordinate at or past the prime is refused even when, reduced, it is a point's: the
    /// only case where the range check matters (x = x₀ + p fits in 32 bytes for a small x₀).
    #[test]
    fn an_unreduced_coordinate_is_not_on_the_curve() {
        use p256::elliptic_curve::bigint::Encoding;
        use p256::elliptic_curve::ff::PrimeField;
        use p256::{FieldElement, NistP256, U256};
        use primeorder::PrimeCurveParams;

        let point = (1..64u64).find_map(|small| {
            let x = FieldElement::from_u64(small);
            let rhs = x.square() * x + NistP256::EQUATION_A * x + NistP256::EQUATION_B;
            Option::<FieldElement>::from(rhs.sqrt()).map(|y| (small, y))
        });
        let (small, y) = point.expect("about half of all x are on the curve");
        let y: [u8; 32] = y.to_repr().into();
        let x: [u8; 32] = U256::from_u64(small).to_be_bytes();
        assert!(on_curve(&x, &y) && decodes(&x, &y));
        let p =
            U256::from_be_hex("ffffffff00000001000000000000000000000000ffffffffffffffffffffffff");
        let unreduced: [u8; 32] = U256::from_u64(small).wrapping_add(&p).to_be_bytes();
        assert!(!on_curve(&unreduced, &y) && !decodes(&unreduced, &y));
    }
}
