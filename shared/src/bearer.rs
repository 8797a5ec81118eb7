//! Access tokens from the `Authorization` header: `Bearer` (RFC 6750 §2.1) and `DPoP`
//! (RFC 9449 §7.1), the only place the edge accepts a token from.

use crate::rejection::Rejection;

/// How a token was presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `Authorization: Bearer`: whoever holds the token may use it.
    Bearer,
    /// `Authorization: DPoP`, with a proof of the key the token is bound to in `DPoP`.
    Dpop,
}

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
    match credentials(authorization_values)? {
        (Scheme::Bearer, token) => Ok(token),
        (Scheme::Dpop, _) => Err(Rejection::MissingToken),
    }
}

/// The scheme and token from the request's `Authorization` header values: `Bearer` or `DPoP`
/// (case-insensitive, RFC 9110 §11.1), then one `token68` (the same characters as RFC 6750's
/// `b64token`).
///
/// # Errors
/// As [`bearer_token`], with `DPoP` accepted as well.
pub fn credentials<'a, I>(authorization_values: I) -> Result<(Scheme, &'a str), Rejection>
where
    I: IntoIterator<Item = &'a str>,
{
    let mut values = authorization_values.into_iter();
    let value = values.next().ok_or(Rejection::MissingToken)?;
    if values.next().is_some() {
        return Err(Rejection::MalformedRequest);
    }
    let (scheme, rest) = split_scheme(value);
    let scheme = scheme.ok_or(Rejection::MissingToken)?;
    let token = rest.trim_start_matches(' ');
    if is_b64token(token) {
        Ok((scheme, token))
    } else {
        Err(Rejection::MalformedRequest)
    }
}

/// The scheme an `Authorization` value names, if one of ours, whether or not a good token
/// follows: a malformed `DPoP` credential is still answered with a `DPoP` challenge
/// (RFC 9449 §7.1).
#[must_use]
pub fn scheme(authorization: &str) -> Option<Scheme> {
    split_scheme(authorization).0
}

fn split_scheme(value: &str) -> (Option<Scheme>, &str) {
    let value = value.trim_matches([' ', '\t']);
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        Some(Scheme::Bearer)
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Some(Scheme::Dpop)
    } else {
        None
    };
    (scheme, rest)
}

/// Whether `token` is an RFC 6750 `b64token`, what a bearer credential may hold:
/// `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
#[must_use]
pub fn is_b64token(token: &str) -> bool {
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
    fn dpop_is_a_scheme_of_its_own() {
        assert_eq!(
            credentials(["DPoP abc.def.ghi"]),
            Ok((Scheme::Dpop, "abc.def.ghi"))
        );
        assert_eq!(credentials(["dpop abc"]), Ok((Scheme::Dpop, "abc")));
        assert_eq!(credentials(["Bearer abc"]), Ok((Scheme::Bearer, "abc")));
        assert_eq!(bearer_token(["DPoP abc"]), Err(Rejection::MissingToken));
        assert_eq!(credentials(["DPoP a b"]), Err(Rejection::MalformedRequest));
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
