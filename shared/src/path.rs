//! Request paths, normalised once: the edge routes on the result and forwards the same
//! string, so a gateway and the origin behind it can never read one request two ways
//! (`/public/..%2fadmin`, `//admin`, `%2e%2e`, `;` parameters).
//!
//! [`NormalPath::parse`] is the one checker. What it does, in order:
//! - percent-encoded unreserved characters (RFC 3986 §2.3: letters, digits, `-._~`) are
//!   decoded, and every other escape is written with upper-case hex (§6.2.2.1);
//! - runs of `/` become one `/` (servers such as nginx merge them; a gateway that did not could
//!   route `//admin` as something other than `/admin`);
//! - dot-segments are resolved (§5.2.4), after the decoding, so `%2e%2e` is `..`; `..` at the
//!   root stays at the root, as the RFC says;
//! - a trailing `/` is kept (routes match with or without it: [`NormalPath::segments`]).
//!
//! What it refuses ([`PathError`]), because some server behind a gateway reads it as something
//! else: an encoded `/` or `\`, a raw `\`, `;` (Tomcat and Jetty cut path parameters off
//! before routing), encoded or raw control characters and NUL, an escape of an escape (`%252e`:
//! an origin that decodes twice sees `%2e`), a malformed escape, and raw bytes outside
//! printable ASCII (the runtime percent-encodes those; one that did not is not a request a
//! browser or HTTP library sends).
//!
//! Written here rather than taken from the `url` crate: WHATWG parsing resolves dot-segments
//! but keeps encoded slashes, empty segments and `;` as they are (it is a browser's parser,
//! not a gateway's), and no crate refuses the ambiguous spellings above.

use core::fmt;

/// The longest path accepted, in bytes (before normalisation). Runtimes cap the whole URL
/// near this; a route table never needs more.
pub const MAX_PATH_LEN: usize = 8 * 1024;

/// A request path in its one normal spelling: it starts with `/`, holds no empty, `.` or `..`
/// segment, and every escape in it is one a server must not decode into a delimiter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NormalPath(String);

/// Why a path was refused (400 `invalid_request` at the edge).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The path does not start with `/`.
    #[error("the path does not start with /")]
    NotAbsolute,
    /// The path is longer than [`MAX_PATH_LEN`].
    #[error("the path is longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    /// A `%` not followed by two hex digits.
    #[error("a malformed percent-encoding")]
    BadEscape,
    /// `%2F` or `%5C`: a separator that some servers decode and some do not.
    #[error("an encoded / or \\")]
    EncodedSeparator,
    /// A raw `\`, which some servers read as `/`.
    #[error("a backslash")]
    Backslash,
    /// A `;`: path parameters, which some servers cut off before routing.
    #[error("a ; (path parameters)")]
    Parameter,
    /// `%25` followed by two hex digits: an escape of an escape.
    #[error("a double percent-encoding")]
    DoubleEncoding,
    /// NUL or another control character, raw or encoded.
    #[error("a control character")]
    Control,
    /// A raw byte outside printable ASCII, or `?`/`#` (which end a path, never sit in one).
    #[error("a character a path cannot hold unencoded")]
    Character,
}

impl PathError {
    /// A stable lower-case code for logs and the vector file.
    #[must_use]
    pub const fn reason(self) -> &'static str {
        match self {
            Self::NotAbsolute => "not_absolute",
            Self::TooLong => "too_long",
            Self::BadEscape => "bad_escape",
            Self::EncodedSeparator => "encoded_separator",
            Self::Backslash => "backslash",
            Self::Parameter => "parameter",
            Self::DoubleEncoding => "double_encoding",
            Self::Control => "control",
            Self::Character => "character",
        }
    }
}

impl NormalPath {
    /// The normal spelling of `raw` (a path as sent, without query or fragment).
    ///
    /// # Errors
    /// A [`PathError`] for a path that some server could read differently (module docs).
    pub fn parse(raw: &str) -> Result<Self, PathError> {
        if raw.len() > MAX_PATH_LEN {
            return Err(PathError::TooLong);
        }
        if !raw.starts_with('/') {
            return Err(PathError::NotAbsolute);
        }
        let decoded = decode_unreserved(raw.as_bytes())?;
        Ok(Self(resolve_segments(&decoded)))
    }

    /// The path, e.g. `/orders/7`.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The segments between the slashes, without a trailing empty one: `/a/b/` and `/a/b` both
    /// give `a`, `b`; `/` gives none.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|segment| !segment.is_empty())
    }
}

impl fmt::Display for NormalPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for NormalPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Pass one: escapes checked, unreserved ones decoded, the rest upper-cased; raw characters
/// checked. The result is ASCII. (Bytes, not `char`s, throughout: the edge is to run this on every
/// request, and in its wasm the `char` encoding paths and a vectorised search cost bundle
/// size for nothing here.)
fn decode_unreserved(raw: &[u8]) -> Result<String, PathError> {
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    // The escaped bytes above 0x7f since the last other character: together they must be
    // UTF-8. An overlong form (`%C0%AE` for `.`, `%C0%AF` for `/`) or a stray byte is what
    // a lax decoder behind the edge reads as a dot segment or a separator.
    let mut high: Vec<u8> = Vec::new();
    let mut at = 0;
    while let Some(&byte) = raw.get(at) {
        let escape = match byte {
            b'%' => Some(escaped(raw, at).ok_or(PathError::BadEscape)?),
            _ => None,
        };
        if !matches!(escape, Some(0x80..=0xff)) {
            end_of_high_escapes(&mut high)?;
        }
        match escape {
            Some(value) => {
                match value {
                    0x00..=0x1f | 0x7f => return Err(PathError::Control),
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    _ if is_unreserved(value) => out.push(value),
                    _ => {
                        if value >= 0x80 {
                            high.push(value);
                        }
                        out.extend_from_slice(&[
                            b'%',
                            hex_digit(value >> 4),
                            hex_digit(value & 0x0f),
                        ]);
                    }
                }
                at += 3;
            }
            None => match byte {
                b'\\' => return Err(PathError::Backslash),
                b';' => return Err(PathError::Parameter),
                0x00..=0x1f | 0x7f => return Err(PathError::Control),
                b'?' | b'#' | b' ' | 0x80..=0xff => return Err(PathError::Character),
                _ => {
                    out.push(byte);
                    at += 1;
                }
            },
        }
    }
    end_of_high_escapes(&mut high)?;
    // An escape of an escape (`%252e`), however its digits are spelled (`%25%32%65`): what
    // matters is the decoded text, so look there.
    let doubled = out.windows(5).any(|window| {
        matches!(window, [b'%', b'2', b'5', high, low] if high.is_ascii_hexdigit() && low.is_ascii_hexdigit())
    });
    if doubled {
        return Err(PathError::DoubleEncoding);
    }
    // Only ASCII was pushed.
    String::from_utf8(out).map_err(|_| PathError::Character)
}

/// Ends a run of escaped bytes above 0x7f: they must spell UTF-8 (no overlong form, no
/// surrogate, no stray byte).
fn end_of_high_escapes(high: &mut Vec<u8>) -> Result<(), PathError> {
    if high.is_empty() {
        return Ok(());
    }
    let valid = core::str::from_utf8(high).is_ok();
    high.clear();
    if valid {
        Ok(())
    } else {
        Err(PathError::Character)
    }
}

/// The byte escaped at `raw[at..at + 3]` (`%XY`), if that is an escape.
fn escaped(raw: &[u8], at: usize) -> Option<u8> {
    match raw.get(at..at + 3)? {
        [b'%', high, low] => Some(hex_value(*high)? << 4 | hex_value(*low)?),
        _ => None,
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

fn hex_digit(value: u8) -> u8 {
    b"0123456789ABCDEF"
        .get(usize::from(value))
        .copied()
        .unwrap_or(b'0')
}

/// RFC 3986 §2.3.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// Pass two: empty segments dropped, `.` and `..` resolved; a trailing `/` kept when the
/// path ended in one or in a dot-segment (RFC 3986 §5.2.4: `/a/b/..` is `/a/`).
fn resolve_segments(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut trailing = false;
    for segment in path.split('/').skip(1) {
        trailing = matches!(segment, "" | "." | "..");
        match segment {
            "" | "." => {}
            ".." => out.truncate(out.bytes().rposition(|b| b == b'/').unwrap_or(0)),
            _ => {
                out.push('/');
                out.push_str(segment);
            }
        }
    }
    if out.is_empty() || trailing {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{NormalPath, PathError};

    fn normal(raw: &str) -> Result<String, PathError> {
        NormalPath::parse(raw).map(|path| path.as_str().to_owned())
    }

    #[test]
    fn the_classic_confusions_resolve_or_are_refused() {
        assert_eq!(normal("//admin"), Ok("/admin".into()));
        assert_eq!(normal("/public/%2e%2e/admin"), Ok("/admin".into()));
        assert_eq!(normal("/public/.%2E/admin/"), Ok("/admin/".into()));
        assert_eq!(
            normal("/public/..%2fadmin"),
            Err(PathError::EncodedSeparator)
        );
        assert_eq!(normal("/admin;x=1"), Err(PathError::Parameter));
        assert_eq!(normal("/a%252e%252e/b"), Err(PathError::DoubleEncoding));
        assert_eq!(normal("/a%25%32%65"), Err(PathError::DoubleEncoding));
        assert_eq!(normal("/a%00"), Err(PathError::Control));
        assert_eq!(normal("/a\\b"), Err(PathError::Backslash));
    }

    #[test]
    fn unreserved_escapes_decode_and_others_upper_case() {
        assert_eq!(normal("/%61%7e%2D"), Ok("/a~-".into()));
        assert_eq!(normal("/a%3ab%20c"), Ok("/a%3Ab%20c".into()));
        assert_eq!(normal("/x%25y"), Ok("/x%25y".into()));
    }

    #[test]
    fn escaped_bytes_above_ascii_must_spell_utf8() {
        assert_eq!(normal("/caf%C3%A9"), Ok("/caf%C3%A9".into()));
        assert_eq!(normal("/%e2%82%ac/x"), Ok("/%E2%82%AC/x".into()));
        assert_eq!(normal("/caf%C3%A9%41"), Ok("/caf%C3%A9A".into()));
        // Overlong dots and slash, a stray continuation byte, a surrogate, a sequence cut
        // by a plain character.
        for overlong in [
            "/public/%C0%AE%C0%AE/admin",
            "/x%C0%AFadmin",
            "/a/%80",
            "/%E0%80%AE",
            "/%ED%A0%80",
            "/%C3x%A9",
            "/%C3%41",
            "/%C3%20",
            "/%C3",
        ] {
            assert_eq!(normal(overlong), Err(PathError::Character), "{overlong}");
        }
    }

    #[test]
    fn dot_segments_stop_at_the_root_and_keep_the_trailing_slash() {
        assert_eq!(normal("/../../a"), Ok("/a".into()));
        assert_eq!(normal("/a/b/.."), Ok("/a/".into()));
        assert_eq!(normal("/a/."), Ok("/a/".into()));
        assert_eq!(normal("/"), Ok("/".into()));
        assert_eq!(normal("/.."), Ok("/".into()));
        let path = NormalPath::parse("/a/b/").unwrap();
        assert_eq!(path.segments().collect::<Vec<_>>(), ["a", "b"]);
    }
}
