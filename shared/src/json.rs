//! How untrusted JSON members are read: each member a check judges is kept as a [`Member`],
//! the little of a JSON value those checks need, and everything else is skipped unread.
//!
//! Why not `serde_json::Value`: a `Value` keeps whole objects (a `BTreeMap` per object) and
//! every number kind, and deserializing into it links that map, its drop and clone code and
//! `Value`'s own visitor into every build. With this type (and no `Value` in the edge's
//! logs) the edge's wasm went from 138.7 to 131.7 KB gzip. The parser is still
//! `serde_json`; only the shape we keep is ours.

use core::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A JSON member's value as the checks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Member {
    /// `null` (present, but no value: judged apart from absence where that matters).
    Null,
    /// A string.
    Str(String),
    /// A non-negative integer that fits `u64` (what a `NumericDate` must be).
    UInt(u64),
    /// An array, each element read the same way.
    Array(Vec<Member>),
    /// Anything else: a boolean, a negative or fractional number, an object. Read and
    /// dropped; no check accepts it.
    Other,
}

impl Member {
    /// The string, if this is one.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(text) => Some(text),
            _ => None,
        }
    }

    /// The integer, if this is a non-negative one.
    pub(crate) fn as_u64(&self) -> Option<u64> {
        match self {
            Self::UInt(value) => Some(*value),
            _ => None,
        }
    }
}

impl<'de> de::Deserialize<'de> for Member {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(MemberVisitor)
    }
}

struct MemberVisitor;

impl<'de> Visitor<'de> for MemberVisitor {
    type Value = Member;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Member, E> {
        Ok(Member::Null)
    }

    fn visit_none<E>(self) -> Result<Member, E> {
        Ok(Member::Null)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Member, E> {
        Ok(Member::Other)
    }

    fn visit_u64<E>(self, value: u64) -> Result<Member, E> {
        Ok(Member::UInt(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Member, E> {
        // serde_json hands non-negative integers to `visit_u64`; this is a negative one.
        Ok(u64::try_from(value).map_or(Member::Other, Member::UInt))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Member, E> {
        Ok(Member::Other)
    }

    fn visit_str<E>(self, text: &str) -> Result<Member, E> {
        Ok(Member::Str(text.to_owned()))
    }

    fn visit_string<E>(self, text: String) -> Result<Member, E> {
        Ok(Member::Str(text))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Member, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Member::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Member, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Member::Other)
    }
}

/// Deserializes a member as `Some` whenever it is present, even as `null`, so that presence
/// and type are judged by the checks rather than silently dropped. Used with
/// `#[serde(default, deserialize_with = "crate::json::present")]`.
pub(crate) fn present<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Member>, D::Error> {
    de::Deserialize::deserialize(deserializer).map(Some)
}

/// Whether `bytes` (JSON text) starts with an object: a derived struct would also take an
/// array, field by position, and none of our documents has that form.
pub(crate) fn is_object(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> Member {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn keeps_what_the_checks_judge() {
        assert_eq!(read("null"), Member::Null);
        assert_eq!(read(r#""a\u00e9""#), Member::Str("a\u{e9}".into()));
        assert_eq!(read("18446744073709551615"), Member::UInt(u64::MAX));
        assert_eq!(
            read(r#"["a", 1, {"b": [2]}]"#),
            Member::Array(vec![
                Member::Str("a".into()),
                Member::UInt(1),
                Member::Other
            ])
        );
        for other in [
            "true",
            "-1",
            "1.0",
            "1e3",
            "18446744073709551616",
            r#"{"a": 1}"#,
        ] {
            assert_eq!(read(other), Member::Other, "{other}");
        }
    }

    #[test]
    fn objects_only() {
        assert!(is_object(b" \n{}"));
        assert!(!is_object(b"[]"));
        assert!(!is_object(b""));
    }
}
