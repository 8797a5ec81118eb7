//! Bearer credentials from the `Authorization` header (RFC 6750 §2.1), the only place the
//! edge accepts a token from.

use crate::rejection::Rejection;

/// The token from the request's `Authorization` header values.
///
/// No header, or a scheme other than `Bearer`, is [`Rejection::MissingToken`] (answer with a
/// bare challenge). Two or more headers, or a `Bearer` credential that is not one `b64token`,
/// is [`Rejection::MalformedRequest`].
///
/// # Errors
/// As above.
pub fn bearer_token<'a, I>(authorization_values: I) -> Result<&'a str, Rejection>
where
    I: IntoIterator<Item = &'a str>,
{
    let mut values = authorization_values.into_iter();
    let value = values.next().ok_or(Rejection::MissingToken)?;
    if values.next().is_some() {
        return Err(Rejection::MalformedRequest);
    }
    let value = value.trim_matches([' ', '\t']);
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Rejection::MissingToken);
    }
    let token = rest.trim_start_matches(' ');
    if is_b64token(token) {
        Ok(token)
    } else {
        Err(Rejection::MalformedRequest)
    }
}

/// `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| B64TOKEN_CHARS.get(usize::from(b)) == Some(&true))
}

/// The characters of a `b64token`, by byte: every request's token is checked byte by byte,
/// and one table load per byte replaces a chain of comparisons.
#[allow(clippy::indexing_slicing)] // `byte` stays below 256, and a const cannot call `get_mut`
const B64TOKEN_CHARS: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        table[byte] =
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        byte += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_one_bearer_credential() {
        assert_eq!(bearer_token(["Bearer abc.def.ghi"]), Ok("abc.def.ghi"));
        assert_eq!(bearer_token(["bearer  abc"]), Ok("abc"));
    }

    #[test]
    fn refuses_everything_else() {
        assert_eq!(bearer_token([]), Err(Rejection::MissingToken));
        assert_eq!(
            bearer_token(["Basic dXNlcjpwYXNz"]),
            Err(Rejection::MissingToken)
        );
        assert_eq!(
            bearer_token(["Bearer a", "Bearer b"]),
            Err(Rejection::MalformedRequest)
        );
        assert_eq!(bearer_token(["Bearer"]), Err(Rejection::MalformedRequest));
        assert_eq!(
            bearer_token(["Bearer a b"]),
            Err(Rejection::MalformedRequest)
        );
        assert_eq!(
            bearer_token(["Bearer =="]),
            Err(Rejection::MalformedRequest)
        );
        assert_eq!(
            bearer_token(["Bearer a,b"]),
            Err(Rejection::MalformedRequest)
        );
    }
}
