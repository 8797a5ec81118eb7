//! Path and query of the incoming request, read from the URL string the runtime hands over.
//!
//! Written by hand rather than with `url::Url` (what `worker::Request::url` returns): the
//! runtime has already parsed and serialized the URL (WHATWG), so splitting it is exact, and
//! leaving out `url` and its IDNA tables keeps the bundle small (benches/size-breakdown shows
//! where its bytes go).

/// The authority of an absolute URL (`host` or `host:port`): what routes match on.
pub(crate) fn authority(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(url, |at| &url[at + 3..]);
    let end = after_scheme
        .find(['/', '?', '#'])
        .unwrap_or(after_scheme.len());
    &after_scheme[..end]
}

/// The parts of an absolute, runtime-serialized URL the edge uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestUrl {
    /// Everything after the authority: path and query, e.g. `/orders/7?x=1`.
    target: String,
    /// Where the path ends in `target` (the `?`, or its length).
    path_end: usize,
}

impl RequestUrl {
    /// Splits `url` (`scheme://authority/path?query#fragment`); the fragment is dropped, as
    /// HTTP never sends it.
    pub(crate) fn parse(url: &str) -> Self {
        let after_scheme = url.find("://").map_or(url, |at| &url[at + 3..]);
        let target = after_scheme.find('/').map_or("/", |at| &after_scheme[at..]);
        let target = target.split('#').next().unwrap_or("/");
        let path_end = target.find('?').unwrap_or(target.len());
        Self {
            target: target.to_owned(),
            path_end,
        }
    }

    /// The path, e.g. `/orders/7`.
    pub(crate) fn path(&self) -> &str {
        &self.target[..self.path_end]
    }

    /// The query without `?`, if any.
    pub(crate) fn query(&self) -> Option<&str> {
        self.target.get(self.path_end + 1..)
    }

    /// `?` and the query, or nothing: what follows the path.
    pub(crate) fn query_part(&self) -> &str {
        self.target.get(self.path_end..).unwrap_or_default()
    }
}

/// A query of whole numbers only, `name=value` pairs under `names` (what the edge asks its
/// rate-limit objects): each value in its name's place, or `None` for any other query (an
/// unknown or repeated name, a value that is not a number).
pub(crate) fn query_numbers<const N: usize>(
    query: &str,
    names: [&str; N],
) -> Option<[Option<u64>; N]> {
    let mut values = [None; N];
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=')?;
        let at = names.iter().position(|known| *known == name)?;
        let slot = values.get_mut(at)?;
        if slot.is_some() {
            return None;
        }
        *slot = Some(value.parse().ok()?);
    }
    Some(values)
}

#[cfg(test)]
mod tests {
    use super::{query_numbers, RequestUrl};

    #[test]
    fn a_query_of_numbers_by_name_or_none() {
        let names = ["limit", "cost"];
        assert_eq!(
            query_numbers("cost=2&limit=5", names),
            Some([Some(5), Some(2)])
        );
        assert_eq!(query_numbers("limit=5", names), Some([Some(5), None]));
        assert_eq!(query_numbers("limit=5&limit=6", names), None, "repeated");
        assert_eq!(query_numbers("limit=5&other=1", names), None, "unknown");
        assert_eq!(query_numbers("limit=x", names), None, "not a number");
        assert_eq!(query_numbers("limit", names), None, "no value");
    }

    #[test]
    fn splits_path_and_query() {
        let url = RequestUrl::parse("https://edge.example/orders/7?x=1&y=%20#frag");
        assert_eq!(url.path(), "/orders/7");
        assert_eq!(url.query(), Some("x=1&y=%20"));
        assert_eq!(url.query_part(), "?x=1&y=%20");
    }

    #[test]
    fn authority_is_between_scheme_and_path() {
        assert_eq!(
            super::authority("https://edge.example:8443/a?b"),
            "edge.example:8443"
        );
        assert_eq!(super::authority("http://127.0.0.1:8787"), "127.0.0.1:8787");
        assert_eq!(super::authority("http://h?x"), "h");
    }

    #[test]
    fn root_and_empty_query() {
        let url = RequestUrl::parse("http://127.0.0.1:8787");
        assert_eq!((url.path(), url.query(), url.query_part()), ("/", None, ""));
        let url = RequestUrl::parse("http://h/?");
        assert_eq!((url.path(), url.query()), ("/", Some("")));
    }
}
