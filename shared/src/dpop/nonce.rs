//! A server's DPoP nonces (RFC 9449 §8 at the token endpoint, §9 at a resource), without
//! state: a nonce is the number of the time window it was made in and an HMAC of that number.
//! Every instance with the same key makes and accepts the same nonces, so a client may take
//! one from any of them. A nonce is accepted in its own window and the next, so it lives
//! between one and two lifetimes; within those, it is what bounds how long before its use a
//! proof could have been made (a proof's `iat` is the client's word).
//!
//! A rotation of the key takes no refusal: [`Nonces::also_accepting`] accepts a second key's
//! nonces without making any, the next key's before the switch and the previous one's after,
//! so instances on either side of a switch accept each other's nonces.

use base64ct::{Base64UrlUnpadded, Encoding};
use subtle::{Choice, ConstantTimeEq};

use crate::mac::{finish, keyed, HmacSha256};
use crate::time::UnixTime;

/// Shortest secret [`Nonces::from_edge_secret`] takes, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// Bytes of the nonce's MAC: 128 bits cannot be guessed within a window.
const MAC_LEN: usize = 16;

/// Names the key's purpose, so a secret shared with another use never makes its MACs, nor
/// the issuer's nonces (whose key the issuer derives from its KEK for a purpose of its own).
const LABEL: &[u8] = b"edgeward edge dpop nonce v1";

/// A secret too short to key nonces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NonceKeyError {
    /// The secret is shorter than [`MIN_SECRET_LEN`] bytes.
    #[error("the DPoP nonce secret must be at least {MIN_SECRET_LEN} bytes")]
    ShortSecret,
}

/// Makes and checks one server's nonces.
#[derive(Clone)]
pub struct Nonces {
    key: HmacSha256,
    /// During a rotation: the other key, whose nonces are accepted and never made.
    accepted_too: Option<HmacSha256>,
}

impl core::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Nonces(<redacted>)")
    }
}

impl Nonces {
    /// Nonces under `key` (the same on every instance).
    #[must_use]
    pub fn new(key: [u8; 32]) -> Self {
        Self {
            key: keyed(&key),
            accepted_too: None,
        }
    }

    /// These nonces, also accepting `other`'s (never making them): during a rotation, the
    /// next key's before instances switch to it and the previous key's after. One other key
    /// at a time: this replaces any set before, and `other`'s own second key is not taken.
    #[must_use]
    pub fn also_accepting(self, other: &Nonces) -> Self {
        Self {
            accepted_too: Some(other.key.clone()),
            ..self
        }
    }

    /// The edge's nonces, under a key derived from its secret for that purpose alone (the
    /// issuer derives its own from its KEK: a nonce of one is never the other's).
    ///
    /// # Errors
    /// [`NonceKeyError::ShortSecret`] for a secret under [`MIN_SECRET_LEN`] bytes.
    pub fn from_edge_secret(secret: &[u8]) -> Result<Self, NonceKeyError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(NonceKeyError::ShortSecret);
        }
        Ok(Self::new(finish(keyed(secret), &[LABEL])))
    }

    fn mac(key: &HmacSha256, window: u64) -> [u8; MAC_LEN] {
        let full = finish(key.clone(), &[&window.to_be_bytes()]);
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(full.get(..MAC_LEN).unwrap_or(&[0; MAC_LEN]));
        out
    }

    /// A nonce for the window of `lifetime_secs` that `now` falls in.
    #[must_use]
    pub fn issue(&self, now: UnixTime, lifetime_secs: u64) -> String {
        let window = now.as_secs() / lifetime_secs.max(1);
        let mut bytes = [0u8; 8 + MAC_LEN];
        let (number, mac) = bytes.split_at_mut(8);
        number.copy_from_slice(&window.to_be_bytes());
        mac.copy_from_slice(&Self::mac(&self.key, window));
        Base64UrlUnpadded::encode_string(&bytes)
    }

    /// Whether an instance with this key (or the key [`Nonces::also_accepting`] added) made
    /// `nonce` in the window `now` falls in or the one before.
    #[must_use]
    pub fn accepts(&self, nonce: &str, now: UnixTime, lifetime_secs: u64) -> bool {
        let mut bytes = [0u8; 8 + MAC_LEN];
        let Ok(decoded) = Base64UrlUnpadded::decode(nonce, &mut bytes) else {
            return false;
        };
        let Some((window, mac)) = decoded.split_first_chunk::<8>() else {
            return false;
        };
        let window = u64::from_be_bytes(*window);
        let current = now.as_secs() / lifetime_secs.max(1);
        let in_time = window == current || window.checked_add(1) == Some(current);
        if mac.len() != MAC_LEN || !in_time {
            return false;
        }
        // Both keys' MACs are always compared, so the time taken says nothing of which matched.
        let made_under = |key| Self::mac(key, window).as_slice().ct_eq(mac);
        let other = self
            .accepted_too
            .as_ref()
            .map_or(Choice::from(0), made_under);
        bool::from(made_under(&self.key) | other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> UnixTime {
        UnixTime::from_secs(secs)
    }

    #[test]
    fn a_nonce_lives_its_window_and_the_next() {
        let nonces = Nonces::new([7; 32]);
        let nonce = nonces.issue(at(1_000), 100);
        for now in [1_000, 1_099, 1_100, 1_199] {
            assert!(nonces.accepts(&nonce, at(now), 100), "{now}");
        }
        assert!(!nonces.accepts(&nonce, at(1_200), 100));
        assert!(
            !nonces.accepts(&nonce, at(999), 100),
            "not before its window"
        );
        assert!(!Nonces::new([8; 32]).accepts(&nonce, at(1_000), 100));
        assert!(!nonces.accepts("", at(1_000), 100));
        assert!(!nonces.accepts(&format!("{nonce}A"), at(1_000), 100));
        let mut forged = Base64UrlUnpadded::decode_vec(&nonce).unwrap();
        forged[7] += 1;
        let forged = Base64UrlUnpadded::encode_string(&forged);
        assert!(!nonces.accepts(&forged, at(1_100), 100));
    }

    #[test]
    fn a_secret_keys_nonces_for_this_purpose_alone() {
        assert_eq!(
            Nonces::from_edge_secret(&[1; 31]).err(),
            Some(NonceKeyError::ShortSecret)
        );
        let derived = Nonces::from_edge_secret(&[1; 32]).unwrap();
        let nonce = derived.issue(at(500), 60);
        assert!(derived.accepts(&nonce, at(500), 60));
        assert!(
            !Nonces::new([1; 32]).accepts(&nonce, at(500), 60),
            "the secret is not the key"
        );
        // The issuer derives its key for its own purpose string (`issuer::dpop::
        // NONCE_KEY_PURPOSE`): from one secret, its nonces are never the edge's.
        let issuer = Nonces::new(finish(keyed(&[1; 32]), &[b"edgeward dpop nonce v1"]));
        assert!(!derived.accepts(&issuer.issue(at(500), 60), at(500), 60));
    }

    #[test]
    fn a_rotation_accepts_both_keys_nonces_and_makes_one_keys() {
        let (old, new) = (Nonces::new([1; 32]), Nonces::new([2; 32]));
        // Before the switch, with the next key; after it, with the previous one.
        let before = old.clone().also_accepting(&new);
        let after = new.clone().also_accepting(&old);
        let (made_old, made_new) = (old.issue(at(500), 60), new.issue(at(500), 60));
        assert_eq!(before.issue(at(500), 60), made_old, "makes its own key's");
        assert_eq!(after.issue(at(500), 60), made_new);
        for nonces in [&before, &after] {
            assert!(nonces.accepts(&made_old, at(500), 60));
            assert!(nonces.accepts(&made_new, at(500), 60));
            // The second key's nonces keep their window, the next included: no longer life
            // for being the other's, and no shorter.
            assert!(nonces.accepts(&made_old, at(560), 60));
            assert!(nonces.accepts(&made_new, at(560), 60));
            assert!(!nonces.accepts(&made_old, at(620), 60));
            assert!(!nonces.accepts(&made_new, at(620), 60));
            assert!(!nonces.accepts(&Nonces::new([3; 32]).issue(at(500), 60), at(500), 60));
        }
        assert!(
            !old.accepts(&made_new, at(500), 60),
            "without it, one key's alone"
        );
    }
}
