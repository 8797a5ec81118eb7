//! The revocation feed's readers with a budget of their own: edges that present one of the
//! feed tokens (`ISSUER_FEED_TOKENS`) as a bearer token.
//!
//! The feed is limited per source address, and edges poll it from addresses they share with
//! every other Worker of the platform. Anyone who ran down that budget from one of them
//! would delay every revocation for the edges behind it (they keep their last list, fail
//! open). A poll with a feed token is charged to a budget of the same size that only token
//! holders reach, so no one without a token can run it down.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The secret environment variable: the accepted tokens, separated by whitespace (two during
/// a rotation). Not a setting: it never goes in the configuration file.
pub const FEED_TOKENS_VAR: &str = "ISSUER_FEED_TOKENS";
pub use shared::revocations::{MAX_FEED_TOKEN_LEN, MIN_FEED_TOKEN_LEN};

/// Why the feed tokens were refused (at start-up).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FeedTokenError {
    /// A token is shorter than [`MIN_FEED_TOKEN_LEN`] or longer than [`MAX_FEED_TOKEN_LEN`]
    /// bytes.
    #[error(
        "{FEED_TOKENS_VAR}: each token must be {MIN_FEED_TOKEN_LEN} to {MAX_FEED_TOKEN_LEN} bytes"
    )]
    Length,
    /// A token holds a character a bearer token cannot (RFC 6750 `b64token`).
    #[error("{FEED_TOKENS_VAR}: tokens use only A-Z a-z 0-9 - . _ ~ + / and trailing =")]
    Characters,
}

/// The accepted feed tokens, kept as their SHA-256 digests (compared in constant time).
#[derive(Clone, Default)]
pub struct FeedTokens(Vec<[u8; 32]>);

impl core::fmt::Debug for FeedTokens {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "FeedTokens({} accepted)", self.0.len())
    }
}

impl FeedTokens {
    /// The tokens in `text`, separated by whitespace (none: no token is accepted).
    ///
    /// # Errors
    /// [`FeedTokenError`] for a short token or one a bearer token cannot carry.
    pub fn parse(text: &str) -> Result<Self, FeedTokenError> {
        text.split_whitespace()
            .map(|token| {
                if !(MIN_FEED_TOKEN_LEN..=MAX_FEED_TOKEN_LEN).contains(&token.len()) {
                    return Err(FeedTokenError::Length);
                }
                if !shared::revocations::is_feed_token(token) {
                    return Err(FeedTokenError::Characters);
                }
                Ok(Sha256::digest(token.as_bytes()).into())
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// The tokens of [`FEED_TOKENS_VAR`] (unset: none).
    ///
    /// # Errors
    /// As [`FeedTokens::parse`].
    pub fn from_env() -> Result<Self, FeedTokenError> {
        Self::parse(&std::env::var(FEED_TOKENS_VAR).unwrap_or_default())
    }

    /// The tokens of [`FEED_TOKENS_VAR`] as `config` needs them: `feed_requires_token`
    /// refuses to start without one. What `issuer::open` and `check-config` check.
    ///
    /// # Errors
    /// [`crate::config::ConfigError::Invalid`] naming the variable or the setting.
    pub fn for_config(config: &crate::config::Config) -> Result<Self, crate::config::ConfigError> {
        let tokens = Self::from_env().map_err(|err| crate::config::ConfigError::Invalid {
            setting: FEED_TOKENS_VAR,
            reason: err.to_string(),
        })?;
        if config.feed_requires_token && tokens.is_empty() {
            return Err(crate::config::ConfigError::Invalid {
                setting: "feed_requires_token",
                reason: format!("needs {FEED_TOKENS_VAR}"),
            });
        }
        Ok(tokens)
    }

    /// Whether no token is accepted.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `presented` is one of the tokens (every one compared, in constant time). One
    /// longer than any token is refused unhashed: a flood of long ones costs no hashing.
    #[must_use]
    pub fn accepts(&self, presented: &str) -> bool {
        if presented.len() > MAX_FEED_TOKEN_LEN {
            return false;
        }
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.0
            .iter()
            .fold(subtle::Choice::from(0), |found, token| {
                found | token.ct_eq(&digest)
            })
            .into()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests may panic

    use super::*;

    #[test]
    fn only_the_tokens_given_are_accepted() {
        let current = "current-feed-token-0123456789abcdef";
        let previous = "previous-feed-token-0123456789abcdef";
        let tokens = FeedTokens::parse(&format!(" {current}\n{previous} ")).unwrap();
        assert!(tokens.accepts(current) && tokens.accepts(previous));
        assert!(!tokens.accepts("current-feed-token-0123456789abcdeF"));
        assert!(!tokens.accepts(""));
        assert!(FeedTokens::parse("").unwrap().is_empty());
        assert!(!FeedTokens::parse("").unwrap().accepts(""));
        assert_eq!(
            FeedTokens::parse("short").unwrap_err(),
            FeedTokenError::Length
        );
        assert_eq!(
            FeedTokens::parse("a-token-with-a-comma,0123456789abcdef").unwrap_err(),
            FeedTokenError::Characters
        );
    }
}
