//! The JSON reader for untrusted documents: the token header and claims, JWKS, the
//! revocation feed and the edge's rate-limit answers. Strict RFC 8259: UTF-8 only, no
//! trailing commas or content, escapes checked (no lone surrogates), at most [`MAX_DEPTH`]
//! levels. A test checks it against serde_json on generated documents; the one difference
//! is a number past `f64`'s range, refused there and an unusable [`Member::Number`] here.
//! Callers take the members they judge with [`Member::take_members`], which refuses a
//! judged member given twice (no two readers of one document can see different values)
//! and ignores the rest.
//!
//! Why by hand rather than through serde: serde's deserializers format their error texts
//! (`invalid type: floating point ...`), which links float formatting, and monomorphize a
//! visitor per type: for these five documents that was about a third of the edge's gzipped
//! wasm when it was measured (docs/performance-history.md). This reader is one small set of
//! non-generic functions. Documents are size-capped before they get
//! here (8 KiB token, 64 KiB key set, 1 MiB feed page). What we write is still `serde_json`.

/// Deepest nesting accepted (as serde_json's own limit).
pub const MAX_DEPTH: usize = 128;

/// Why a document was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JsonError {
    /// Not JSON (or not UTF-8) at this byte offset.
    #[error("invalid JSON at byte {at}")]
    Syntax {
        /// Offset of the first byte that does not fit.
        at: usize,
    },
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("JSON nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// A member the reader judges appears more than once in one object.
    #[error("member `{name}` appears more than once")]
    Repeated {
        /// The member's name.
        name: &'static str,
    },
    /// Valid JSON, but not the document's shape.
    #[error("JSON is not the expected shape: {expected}")]
    Shape {
        /// What was expected.
        expected: &'static str,
    },
}

/// A parsed JSON value, with numbers reduced to what the checks use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Member {
    /// `null` (present but empty: judged apart from absence where that matters).
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A string.
    Str(String),
    /// An integer that fits `u64` (what a `NumericDate` must be).
    UInt(u64),
    /// A negative integer that fits `i64`.
    Int(i64),
    /// Any other number (fraction, exponent, out of range): no check accepts one.
    Number,
    /// An array.
    Array(Vec<Member>),
    /// An object's members in document order (names may repeat; see [`Member::take_members`]).
    Object(Vec<(String, Member)>),
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

    /// The members named in `names` of this object, in that order; other members are
    /// ignored.
    ///
    /// # Errors
    /// [`JsonError::Shape`] if this is not an object, [`JsonError::Repeated`] if a named
    /// member appears twice.
    pub(crate) fn take_members<const N: usize>(
        self,
        names: [&'static str; N],
    ) -> Result<[Option<Member>; N], JsonError> {
        let mut out = [const { None }; N];
        self.take_into(&names, &mut out)?;
        Ok(out)
    }

    /// [`Member::take_members`]' work, once for every `N` (each `N` would otherwise be a copy
    /// of it in the edge's wasm).
    fn take_into(
        self,
        names: &[&'static str],
        out: &mut [Option<Member>],
    ) -> Result<(), JsonError> {
        let Self::Object(members) = self else {
            return Err(JsonError::Shape {
                expected: "an object",
            });
        };
        for (name, value) in members {
            let wanted = names
                .iter()
                .zip(out.iter_mut())
                .find(|(wanted, _)| **wanted == name);
            if let Some((wanted, slot)) = wanted {
                if slot.is_some() {
                    return Err(JsonError::Repeated { name: wanted });
                }
                *slot = Some(value);
            }
        }
        Ok(())
    }
}

/// Parses one JSON document (surrounding whitespace allowed, nothing else after it).
///
/// # Errors
/// [`JsonError::Syntax`] or [`JsonError::TooDeep`].
pub(crate) fn parse(bytes: &[u8]) -> Result<Member, JsonError> {
    let text = core::str::from_utf8(bytes).map_err(|err| JsonError::Syntax {
        at: err.valid_up_to(),
    })?;
    let mut reader = Reader { text, at: 0 };
    let value = reader.value(0)?;
    reader.skip_whitespace();
    if reader.at == text.len() {
        Ok(value)
    } else {
        Err(reader.syntax())
    }
}

/// A position in a document already checked to be UTF-8. It only ever stops on ASCII
/// bytes, so every slice it takes is on character boundaries.
struct Reader<'a> {
    text: &'a str,
    at: usize,
}

impl Reader<'_> {
    fn syntax(&self) -> JsonError {
        JsonError::Syntax { at: self.at }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Result<(), JsonError> {
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.syntax())
        }
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<Member, JsonError> {
        self.skip_whitespace();
        match self.peek() {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().map(Member::Str),
            Some(b't') => self.literal("true", Member::Bool(true)),
            Some(b'f') => self.literal("false", Member::Bool(false)),
            Some(b'n') => self.literal("null", Member::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.syntax()),
        }
    }

    fn nested(depth: usize) -> Result<usize, JsonError> {
        if depth >= MAX_DEPTH {
            Err(JsonError::TooDeep)
        } else {
            Ok(depth + 1)
        }
    }

    fn object(&mut self, depth: usize) -> Result<Member, JsonError> {
        let depth = Self::nested(depth)?;
        self.expect(b'{')?;
        let mut members = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(Member::Object(members));
        }
        loop {
            self.skip_whitespace();
            let name = self.string()?;
            self.skip_whitespace();
            self.expect(b':')?;
            let value = self.value(depth)?;
            members.push((name, value));
            self.skip_whitespace();
            match self.next() {
                Some(b',') => {}
                Some(b'}') => return Ok(Member::Object(members)),
                _ => {
                    return Err(JsonError::Syntax {
                        at: self.at.saturating_sub(1),
                    })
                }
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Member, JsonError> {
        let depth = Self::nested(depth)?;
        self.expect(b'[')?;
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(Member::Array(items));
        }
        loop {
            items.push(self.value(depth)?);
            self.skip_whitespace();
            match self.next() {
                Some(b',') => {}
                Some(b']') => return Ok(Member::Array(items)),
                _ => {
                    return Err(JsonError::Syntax {
                        at: self.at.saturating_sub(1),
                    })
                }
            }
        }
    }

    fn literal(&mut self, word: &str, value: Member) -> Result<Member, JsonError> {
        let end = self.at + word.len();
        if self.text.get(self.at..end) == Some(word) {
            self.at = end;
            Ok(value)
        } else {
            Err(self.syntax())
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        self.at - start
    }

    fn number(&mut self) -> Result<Member, JsonError> {
        let start = self.at;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.at += 1;
        }
        match self.peek() {
            // A leading zero stands alone.
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.syntax()),
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return Err(self.syntax());
            }
            integer = false;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if self.digits() == 0 {
                return Err(self.syntax());
            }
            integer = false;
        }
        let text = self.text.get(start..self.at).unwrap_or_default();
        Ok(match (integer, negative) {
            (true, false) => text.parse().map_or(Member::Number, Member::UInt),
            (true, true) => text.parse().map_or(Member::Number, Member::Int),
            (false, _) => Member::Number,
        })
    }

    fn string(&mut self) -> Result<String, JsonError> {
        self.expect(b'"')?;
        let mut out = String::new();
        loop {
            let start = self.at;
            while matches!(self.peek(), Some(byte) if byte != b'"' && byte != b'\\' && byte >= 0x20)
            {
                self.at += 1;
            }
            out.push_str(self.text.get(start..self.at).unwrap_or_default());
            match self.next() {
                Some(b'"') => return Ok(out),
                Some(b'\\') => out.push(self.escape()?),
                // A control character, or the end of the document.
                _ => {
                    return Err(JsonError::Syntax {
                        at: self.at.saturating_sub(1),
                    })
                }
            }
        }
    }

    /// The character of an escape sequence, after its backslash.
    fn escape(&mut self) -> Result<char, JsonError> {
        Ok(match self.next() {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                let unit = self.hex4()?;
                let code = match unit {
                    // A UTF-16 surrogate pair: the low half must follow at once.
                    0xD800..=0xDBFF => {
                        if self.next() != Some(b'\\') || self.next() != Some(b'u') {
                            return Err(self.syntax());
                        }
                        let low = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return Err(self.syntax());
                        }
                        0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                    }
                    0xDC00..=0xDFFF => return Err(self.syntax()),
                    unit => unit,
                };
                char::from_u32(code).ok_or_else(|| self.syntax())?
            }
            _ => {
                return Err(JsonError::Syntax {
                    at: self.at.saturating_sub(1),
                })
            }
        })
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let end = self.at + 4;
        let digits = self.text.get(self.at..end).ok_or_else(|| self.syntax())?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(self.syntax());
        }
        self.at = end;
        u32::from_str_radix(digits, 16).map_err(|_| self.syntax())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> Result<Member, JsonError> {
        parse(json.as_bytes())
    }

    #[test]
    fn reads_values() {
        assert_eq!(read(" null "), Ok(Member::Null));
        assert_eq!(read("true"), Ok(Member::Bool(true)));
        assert_eq!(
            read(r#""a\u00e9\"\\\/\n\ud83d\ude00""#),
            Ok(Member::Str("a\u{e9}\"\\/\n\u{1f600}".into()))
        );
        assert_eq!(read("18446744073709551615"), Ok(Member::UInt(u64::MAX)));
        assert_eq!(read("-5"), Ok(Member::Int(-5)));
        for number in [
            "1.0",
            "1e3",
            "1E-3",
            "-0.5",
            "18446744073709551616",
            "-9223372036854775809",
        ] {
            assert_eq!(read(number), Ok(Member::Number), "{number}");
        }
        assert_eq!(
            read(r#"{"a": [1, {"b": []}], "a": "x"}"#),
            Ok(Member::Object(vec![
                (
                    "a".into(),
                    Member::Array(vec![
                        Member::UInt(1),
                        Member::Object(vec![("b".into(), Member::Array(vec![]))])
                    ])
                ),
                ("a".into(), Member::Str("x".into())),
            ]))
        );
    }

    #[test]
    fn refuses_what_is_not_json() {
        for bad in [
            "",
            " ",
            "nul",
            "tru",
            "01",
            "-",
            "1.",
            ".5",
            "1e",
            "+1",
            "0x1",
            "[1,]",
            "{\"a\":1,}",
            "{a:1}",
            "{\"a\" 1}",
            "[1 2]",
            "\"abc",
            "\"a\u{1}\"",
            "\"\\x\"",
            "\"\\u12\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800\\u0041\"",
            "{} {}",
            "[] x",
            "'a'",
            "NaN",
        ] {
            assert!(
                matches!(read(bad), Err(JsonError::Syntax { .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse(b"\"\xff\""),
            Err(JsonError::Syntax { at: 1 })
        ));
    }

    #[test]
    fn depth_is_capped() {
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(read(&ok).is_ok());
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(read(&deep), Err(JsonError::TooDeep));
    }

    #[test]
    fn takes_named_members_once() {
        let object = read(r#"{"b": 2, "x": {}, "a": "1", "x": []}"#).unwrap();
        let [a, b, c] = object.take_members(["a", "b", "c"]).unwrap();
        assert_eq!(
            (a, b, c),
            (Some(Member::Str("1".into())), Some(Member::UInt(2)), None)
        );
        let repeated = read(r#"{"a": 1, "a": 1}"#).unwrap();
        assert_eq!(
            repeated.take_members(["a"]),
            Err(JsonError::Repeated { name: "a" })
        );
        assert!(matches!(
            read("[]").unwrap().take_members(["a"]),
            Err(JsonError::Shape { .. })
        ));
    }

    /// The same documents are JSON to this reader and to serde_json (a differential check
    /// over strings built from JSON's own pieces).
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn agrees_with_serde_json() {
        use proptest::prelude::*;
        let piece = prop::sample::select(vec![
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            " ",
            "\"a\"",
            "\"\\u00e9\"",
            "\"\\ud83d\\ude00\"",
            "\"\\ud800\"",
            "\"\\n\"",
            "\"\\q\"",
            "0",
            "-1",
            "12",
            "1.5",
            "1e9",
            "-",
            ".",
            "e",
            "01",
            "true",
            "false",
            "null",
            "\"",
            "\\",
            "\u{1}",
            "\u{e9}",
        ]);
        let documents = prop::collection::vec(piece, 0..12);
        proptest!(ProptestConfig::with_cases(20_000), |(pieces in documents)| {
            let text = pieces.concat();
            let ours = parse(text.as_bytes()).is_ok();
            let theirs = serde_json::from_str::<serde_json::Value>(&text);
            // serde_json refuses a number past f64's range; here it is a `Number` that no
            // check accepts, so that difference changes no verdict.
            let out_of_range = |err: &serde_json::Error| err.to_string().starts_with("number out");
            if theirs.as_ref().is_err_and(out_of_range) {
                return Ok(());
            }
            prop_assert_eq!(ours, theirs.is_ok(), "{:?}", text);
        });
    }
}
