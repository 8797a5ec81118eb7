//! DPoP replay checks: what the edge asks a proof's replay object, what the object answers,
//! and how the object stores a proof.
//!
//! One object per proof key (`dpop/<jkt>`): per location by default, or one worldwide
//! (`DPOP_REPLAY_SCOPE`). The object keeps each proof it accepted in its durable storage under
//! `<until>:<replay key>`, `until` being the last second the proof would be accepted,
//! zero-padded so that the keys sort by it and expired ones go by range, in batches. Its
//! input gate holds other requests between the read and the write, so of two isolates
//! sending one proof, exactly one hears "fresh".
//!
//! The bound: with per-location objects, a proof is accepted at most once per location
//! within its window (`ProofRules::replay_window_secs`); with one object worldwide, once.

use shared::VerifiedProof;

use super::url::RequestUrl;

/// The object's path for a replay check.
const REPLAY_PATH: &str = "/dpop";
/// The object's two answers (`JSON.stringify({ fresh })` in `js/rate-limiter.js`).
const FRESH: &str = r#"{"fresh":true}"#;
const SEEN: &str = r#"{"fresh":false}"#;
/// Digits of `until` in a storage key: seconds since the epoch fit in 12 until the year
/// 33658.
const UNTIL_DIGITS: usize = 12;

/// The ask for `proof`: its replay key and the last second it would be accepted.
pub(crate) fn replay_url(proof: &VerifiedProof) -> String {
    let until = proof.remember_until().to_string();
    let key = proof.replay_key();
    [
        "https://rate-limiter.internal",
        REPLAY_PATH,
        "?until=",
        &until,
        "&key=",
        &key,
    ]
    .concat()
}

/// The object's answer read: `Some(true)` for a first use, `Some(false)` for a replay,
/// `None` for anything else.
pub(crate) fn first_use(answer: &str) -> Option<bool> {
    match answer {
        FRESH => Some(true),
        SEEN => Some(false),
        _ => None,
    }
}

/// For the object (`js/rate-limiter.js`): the storage key of a replay ask `url`, or `None`
/// when `url` is not one (another path, a query not exactly `until` then a 43-character
/// base64url `key`).
#[must_use]
pub fn replay_entry(url: &str) -> Option<String> {
    let parsed = RequestUrl::parse(url);
    if parsed.path() != REPLAY_PATH {
        return None;
    }
    let query = parsed.query()?;
    let (until, key) = query.split_once('&')?;
    let until: u64 = until.strip_prefix("until=")?.parse().ok()?;
    let key = key.strip_prefix("key=")?;
    let base64url = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    if key.len() != 43 || !key.bytes().all(base64url) {
        return None;
    }
    let until = until.to_string();
    let padding = "0".repeat(UNTIL_DIGITS.saturating_sub(until.len()));
    Some([padding.as_str(), &until, ":", key].concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_sort_by_their_last_second() {
        let key = "A".repeat(43);
        let early = replay_entry(&format!("https://o/dpop?until=99&key={key}")).unwrap();
        let late = replay_entry(&format!("https://o/dpop?until=1800000000&key={key}")).unwrap();
        assert_eq!(early, format!("000000000099:{key}"));
        assert!(early < late);
        for bad in [
            format!("https://o/lease?until=9&key={key}"),
            format!("https://o/dpop?key={key}&until=9"),
            format!("https://o/dpop?until=x&key={key}"),
            "https://o/dpop?until=9&key=short".to_owned(),
            format!("https://o/dpop?until=9&key={}", "+".repeat(43)),
            format!("https://o/dpop?until=9&key={key}&more=1"),
        ] {
            assert_eq!(replay_entry(&bad), None, "{bad}");
        }
        assert_eq!(first_use(r#"{"fresh":true}"#), Some(true));
        assert_eq!(first_use(r#"{"fresh":false}"#), Some(false));
        assert_eq!(first_use("{}"), None);
    }
}
