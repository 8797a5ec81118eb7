//! The edge's route table: for each request (host, method, [`NormalPath`]), which rule lets
//! it in, what the rule requires of the token, and where it goes.
//!
//! A table is JSON, read by [`RouteTable::from_json`], the one checker. Ops write it as TOML
//! (`deploy/edge/routes/`), which the edge's build (`edge-validator/route-tables`) turns into
//! this JSON and checks; the edge checks it again at start-up with the same function
//! (docs/edge.md, "Route tables"):
//!
//! ```json
//! { "unmatched": { "require": "authenticated" },
//!   "route": [
//!     { "id": "health", "path": "/health", "require": "public" },
//!     { "id": "orders-read", "host": "api.example", "path": "/orders/{id}",
//!       "methods": ["GET", "HEAD"], "scopes_all": ["orders:read"],
//!       "audience": "orders", "origin": "https://orders.internal", "rate_plan": "100/60s",
//!       "max_body": 0, "dpop": "required" },
//!     { "id": "admin", "path": "/admin/**", "scopes_any": ["admin", "ops"] } ] }
//! ```
//!
//! Paths: literal segments, `{name}` for exactly one segment, and `**` as the last segment for
//! any number (zero or more). Literals compare ASCII case-insensitively and a trailing `/` is
//! ignored, so no two spellings of one path reach different routes ([`NormalPath`] has
//! already merged slashes, resolved dot-segments and decoded what may be decoded).
//!
//! Precedence, most specific first: a route naming the host beats one for any host; then,
//! segment by segment from the left, a literal beats `{name}`, which beats `**`, and a path
//! that ends beats a `**` at the same place; then a route naming methods beats one for any
//! method. Two routes that tie on all of that and share a method are ambiguous, and
//! [`RouteTable::from_json`] refuses the table.
//!
//! Without an `unmatched` policy, a request no route matches is denied (the edge answers 404).

use std::collections::{HashMap, HashSet};

use crate::claims::{ScopeRequirement, Scopes};
use crate::json::{self, JsonError, Member};
use crate::path::NormalPath;
use crate::rate_limit::RatePlan;

/// Most routes in one table (the edge matches through an index, so this bounds memory and
/// start-up, not the cost per request).
pub const MAX_ROUTES: usize = 4096;

/// A checked route table.
#[derive(Debug, Clone)]
pub struct RouteTable {
    /// Most specific first: the first that matches wins.
    routes: Vec<Route>,
    /// Routes by their first segment when it is a literal (lower case), as indexes into
    /// `routes`, ascending.
    by_first: HashMap<String, Vec<usize>>,
    /// Routes whose first segment is `{name}` or `**`, or that have none (`/`), ascending.
    open_first: Vec<usize>,
    unmatched: Option<Policy>,
}

/// One rule of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The table's name for the rule: logged, and carried in the assertion.
    pub id: String,
    /// The host it is for, lower case (`None`: any).
    pub host: Option<String>,
    /// The methods it is for (`None`: any).
    pub methods: Option<Vec<String>>,
    /// The path pattern.
    pub path: PathPattern,
    /// What it requires and where it sends.
    pub policy: Policy,
}

/// A path pattern: its segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    segments: Vec<Segment>,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Matches this segment, ASCII case-insensitively (held lower case).
    Literal(String),
    /// `{name}`: any one segment.
    One,
    /// `**`: any number of segments, the last of a pattern.
    Rest,
}

/// What a route requires and where it sends the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Who may pass.
    pub access: Access,
    /// The `aud` the token must carry (`None`: the edge's `AUDIENCE`).
    pub audience: Option<String>,
    /// Where the request goes (`None`: the edge's `ORIGIN_URL`).
    pub origin: Option<Origin>,
    /// The rate plan, counted for this route alone: per client in place of the token's plan
    /// on a token route (`None`: the token's, or the edge's default), per client network on a
    /// public route (`None`: not limited).
    pub rate_plan: Option<RatePlan>,
    /// The largest request body accepted, in bytes (`None`: no limit of the edge's own).
    pub max_body: Option<u64>,
    /// Whether only DPoP-bound tokens, each use with its proof, pass (`"dpop": "required"`).
    /// Otherwise a bearer token passes too; a bound token needs its proof on every route.
    pub dpop_required: bool,
}

/// Who may pass a route.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Access {
    /// No token needed (identity headers are still stripped, and no assertion is sent).
    Public,
    /// Nobody: answered like an unmatched request.
    Deny,
    /// A valid token whose scopes meet the requirement (an empty one: any valid token).
    Token(ScopeRequirement),
}

/// An origin a route sends to: an absolute `http` or `https` URL without a trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    url: String,
    host: String,
    /// Where the path prefix starts in `url` (its length when there is none).
    prefix_at: usize,
}

/// Why a table was refused. Each names the route (by id, or by its place when it has none).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// Not JSON, or not the table's shape.
    #[error("route table: {0}")]
    Json(#[from] JsonError),
    /// A member the format does not have (a typo would otherwise be ignored).
    #[error("{at}: unknown setting `{name}`")]
    Unknown {
        /// Which route, or `unmatched`.
        at: String,
        /// The member.
        name: String,
    },
    /// A setting with a value it cannot have.
    #[error("{at}: {problem}")]
    Invalid {
        /// Which route, or `unmatched`.
        at: String,
        /// What is wrong, for the operator.
        problem: String,
    },
    /// Two routes with the same id.
    #[error("route id `{0}` is used twice")]
    DuplicateId(String),
    /// Two routes match the same requests with the same precedence.
    #[error("routes `{first}` and `{second}` match the same requests: make one more specific")]
    Ambiguous {
        /// The earlier in the table.
        first: String,
        /// The later.
        second: String,
    },
    /// More than [`MAX_ROUTES`] routes.
    #[error("more than {MAX_ROUTES} routes")]
    TooMany,
}

/// What a route matches on; the rest of its members are its policy's.
const ROUTE_MATCH: [&str; 4] = ["id", "host", "path", "methods"];
/// A policy's settings (a route's, or `unmatched`'s); `description` is for people only.
const POLICY: [&str; 9] = [
    "require",
    "scopes_all",
    "scopes_any",
    "audience",
    "origin",
    "rate_plan",
    "max_body",
    "dpop",
    "description",
];
const UNMATCHED: &str = "unmatched";

impl RouteTable {
    /// The one checker: a table from its JSON, refused if any route is malformed, two share
    /// an id, or two are ambiguous.
    ///
    /// # Errors
    /// A [`RouteError`] naming the route and the problem.
    pub fn from_json(text: &str) -> Result<Self, RouteError> {
        let document = json::parse(text.as_bytes())?;
        refuse_unknown(&document, "the table", &[&["unmatched", "route"]])?;
        let [unmatched, routes] = document.take_members(["unmatched", "route"])?;
        let unmatched = unmatched
            .map(|member| {
                refuse_unknown(&member, UNMATCHED, &[&POLICY])?;
                read_policy(member, UNMATCHED)
            })
            .transpose()?;
        let routes = match routes {
            None => Vec::new(),
            Some(Member::Array(routes)) if routes.len() <= MAX_ROUTES => routes,
            Some(Member::Array(_)) => return Err(RouteError::TooMany),
            Some(_) => return Err(invalid("the table", "`route` must be an array of routes")),
        };
        let mut read = Vec::with_capacity(routes.len());
        for (index, member) in routes.into_iter().enumerate() {
            read.push(read_route(member, index)?);
        }
        Self::new(read, unmatched)
    }

    /// A table of checked routes: sorted by precedence, refused if ids repeat or two routes
    /// are ambiguous.
    ///
    /// # Errors
    /// [`RouteError::DuplicateId`], [`RouteError::Ambiguous`] or [`RouteError::TooMany`].
    pub fn new(routes: Vec<Route>, unmatched: Option<Policy>) -> Result<Self, RouteError> {
        if routes.len() > MAX_ROUTES {
            return Err(RouteError::TooMany);
        }
        let mut ids = HashSet::with_capacity(routes.len());
        if let Some(twice) = routes.iter().find(|route| !ids.insert(route.id.as_str())) {
            return Err(RouteError::DuplicateId(twice.id.clone()));
        }
        let routes = by_precedence(routes);
        // Within each group of equal rank, no two routes may share a request (`GET` and
        // `POST` on one path are apart; two `GET`s are not).
        for group in routes.chunk_by(|a, b| a.rank() == b.rank()) {
            for (at, a) in group.iter().enumerate() {
                if let Some(b) = group.iter().skip(at + 1).find(|b| a.overlaps(b)) {
                    return Err(RouteError::Ambiguous {
                        first: a.id.clone(),
                        second: b.id.clone(),
                    });
                }
            }
        }
        let mut by_first: HashMap<String, Vec<usize>> = HashMap::new();
        let mut open_first = Vec::new();
        for (index, route) in routes.iter().enumerate() {
            match route.path.segments.first() {
                Some(Segment::Literal(first)) => {
                    by_first.entry(first.clone()).or_default().push(index);
                }
                _ => open_first.push(index),
            }
        }
        Ok(Self {
            routes,
            by_first,
            open_first,
            unmatched,
        })
    }

    /// The route for a request, most specific first (module docs), or `None` when none
    /// matches (then [`RouteTable::unmatched`] decides).
    #[must_use]
    pub fn route(&self, host: &str, method: &str, path: &NormalPath) -> Option<&Route> {
        self.routes.get(self.position(host, method, path)?)
    }

    /// Where in [`RouteTable::routes`] the route for a request is (what [`RouteTable::route`]
    /// returns, as an index a caller can keep without borrowing the table).
    #[must_use]
    pub fn position(&self, host: &str, method: &str, path: &NormalPath) -> Option<usize> {
        let first = path.segments().next().map(str::to_ascii_lowercase);
        let indexed = first
            .as_deref()
            .and_then(|first| self.by_first.get(first))
            .map_or(&[][..], Vec::as_slice);
        // Both lists ascend in precedence order: the lower index of the two firsts wins.
        let found = |list: &[usize]| {
            list.iter().copied().find(|&index| {
                self.routes
                    .get(index)
                    .is_some_and(|route| route.matches(host, method, path))
            })
        };
        match (found(indexed), found(&self.open_first)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (Some(a), None) | (None, Some(a)) => Some(a),
            (None, None) => None,
        }
    }

    /// The policy for requests no route matches (`None`: deny, 404).
    #[must_use]
    pub fn unmatched(&self) -> Option<&Policy> {
        self.unmatched.as_ref()
    }

    /// The routes, most specific first.
    #[must_use]
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

/// `routes`, most specific first, and stable: among routes that tie, table order is kept, so
/// the ambiguity check names them in the order the operator wrote them.
///
/// An insertion sort of positions, by hand: the standard library's sorts, instantiated here,
/// were a large share of what route tables added to the edge's bundle
/// (`docs/performance-history.md`, "Edge bundle: route tables"), for a table sorted once per
/// isolate. Its worst case, a table written least specific first, moves a reference and a
/// position per route a quadratic number of times: `cargo bench -p shared --bench routes`
/// times it at [`MAX_ROUTES`] (`build_max_reversed`).
fn by_precedence(routes: Vec<Route>) -> Vec<Route> {
    let ranks: Vec<_> = routes.iter().map(Route::rank).collect();
    let mut order: Vec<(&_, usize)> = Vec::with_capacity(routes.len());
    for (index, rank) in ranks.iter().enumerate() {
        // After every route ranked as high or higher: a tie keeps its table order.
        let at = order.partition_point(|(placed, _)| *placed >= rank);
        order.insert(at, (rank, index));
    }
    let mut slots: Vec<Option<Route>> = routes.into_iter().map(Some).collect();
    order
        .iter()
        .filter_map(|&(_, index)| slots.get_mut(index)?.take())
        .collect()
}

impl Route {
    /// Whether this route takes the request.
    #[must_use]
    pub fn matches(&self, host: &str, method: &str, path: &NormalPath) -> bool {
        self.host
            .as_deref()
            .is_none_or(|want| want.eq_ignore_ascii_case(host_name(host)))
            // Methods are case-sensitive in HTTP, but a server may still read `delete` as
            // `DELETE`: no spelling of a method escapes its route.
            && self.methods.as_ref().is_none_or(|methods| {
                methods.iter().any(|want| want.eq_ignore_ascii_case(method))
            })
            && self.path.matches(path)
    }

    /// Precedence, greater first: host named, then the path's shape, then methods named.
    fn rank(&self) -> (bool, Vec<u8>, bool) {
        (
            self.host.is_some(),
            self.path.rank(),
            self.methods.is_some(),
        )
    }

    /// Whether two routes of equal rank take some request both: same host, the same path
    /// up to `{name}` names, and a method in common.
    fn overlaps(&self, other: &Self) -> bool {
        let methods = match (&self.methods, &other.methods) {
            (Some(a), Some(b)) => a.iter().any(|method| b.contains(method)),
            _ => true,
        };
        self.host == other.host && self.path.segments == other.path.segments && methods
    }
}

impl PathPattern {
    /// A pattern from its text: `/`-separated literals (what [`NormalPath`] leaves as a
    /// segment), `{name}`, and `**` last.
    ///
    /// # Errors
    /// A description of the problem, for [`RouteError::Invalid`].
    pub fn parse(text: &str) -> Result<Self, String> {
        let normal = NormalPath::parse(text).map_err(|err| format!("path `{text}`: {err}"))?;
        if normal.as_str().trim_end_matches('/') != text.trim_end_matches('/') {
            return Err(format!(
                "path `{text}` is not in its normal spelling (`{normal}`)"
            ));
        }
        let mut segments = Vec::new();
        let parts: Vec<&str> = normal.segments().collect();
        for (at, part) in parts.iter().enumerate() {
            let segment = if *part == "**" {
                if at + 1 != parts.len() {
                    return Err(format!("path `{text}`: `**` must be the last segment"));
                }
                Segment::Rest
            } else if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(format!(
                        "path `{text}`: `{{{name}}}` is not a wildcard name"
                    ));
                }
                Segment::One
            } else if part.contains(['{', '}', '*']) {
                return Err(format!(
                    "path `{text}`: `{part}` mixes a wildcard into a segment"
                ));
            } else {
                Segment::Literal(part.to_ascii_lowercase())
            };
            segments.push(segment);
        }
        Ok(Self {
            segments,
            text: text.to_owned(),
        })
    }

    /// The pattern as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `path` matches (literals ASCII case-insensitively, a trailing `/` ignored).
    #[must_use]
    pub fn matches(&self, path: &NormalPath) -> bool {
        let mut parts = path.segments();
        for segment in &self.segments {
            match segment {
                Segment::Rest => return true,
                Segment::One => {
                    if parts.next().is_none() {
                        return false;
                    }
                }
                Segment::Literal(want) => match parts.next() {
                    Some(part) if part.eq_ignore_ascii_case(want) => {}
                    _ => return false,
                },
            }
        }
        parts.next().is_none()
    }

    /// Segment by segment: literal 3, `{name}` 2, `**` 1; an ending 4 (beats `**` there).
    fn rank(&self) -> Vec<u8> {
        let mut rank: Vec<u8> = self
            .segments
            .iter()
            .map(|segment| match segment {
                Segment::Literal(_) => 3,
                Segment::One => 2,
                Segment::Rest => 1,
            })
            .collect();
        if !matches!(self.segments.last(), Some(Segment::Rest)) {
            rank.push(4);
        }
        rank
    }
}

impl Policy {
    /// A valid token meeting `required` (an empty requirement: any valid token), with the
    /// edge's own audience, origin and plan, and no body limit.
    #[must_use]
    pub fn token(required: ScopeRequirement) -> Self {
        Self {
            access: Access::Token(required),
            audience: None,
            origin: None,
            rate_plan: None,
            max_body: None,
            dpop_required: false,
        }
    }
}

impl Origin {
    /// An origin from its URL: `http://` or `https://`, a host, an optional port and path
    /// prefix; no query, fragment or user info. A trailing `/` is dropped.
    ///
    /// # Errors
    /// A description of the problem.
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim_end_matches('/');
        let problem = || format!("`{url}` is not an absolute http(s) URL without query or user");
        let (scheme, rest) = url.split_once("://").ok_or_else(problem)?;
        if !matches!(scheme, "http" | "https") || url.contains(['?', '#', '@', ' ']) {
            return Err(problem());
        }
        let authority_len = rest.find('/').unwrap_or(rest.len());
        let authority = rest
            .get(..authority_len)
            .unwrap_or_default()
            .to_ascii_lowercase();
        if authority.is_empty() {
            return Err(problem());
        }
        // `fetch` leaves a default port out of `Host`, and so must the assertion.
        let default_port = if scheme == "https" { ":443" } else { ":80" };
        let host = authority
            .strip_suffix(default_port)
            .map_or_else(|| authority.clone(), str::to_owned);
        Ok(Self {
            prefix_at: scheme.len() + "://".len() + authority_len,
            url: url.to_owned(),
            host,
        })
    }

    /// The URL, without a trailing `/`: the request's path is appended to it.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The authority, lower case, without a default port: what `Host` will say.
    #[must_use]
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The URL's path prefix (`/api` of `https://internal.example/api`; empty without one):
    /// what the origin receives before each request's path.
    #[must_use]
    pub fn prefix(&self) -> &str {
        self.url.get(self.prefix_at..).unwrap_or_default()
    }
}

/// `host` without a `:port` (an IPv6 literal keeps its brackets) or the trailing `.` of a fully
/// qualified name (`api.example.` is `api.example`).
fn host_name(host: &str) -> &str {
    let name = host_without_port(host);
    name.strip_suffix('.').unwrap_or(name)
}

/// `host` without a `:port` (an IPv6 literal keeps its brackets).
fn host_without_port(host: &str) -> &str {
    let name_end = if host.starts_with('[') {
        host.find(']').map_or(host.len(), |at| at + 1)
    } else {
        host.rfind(':').unwrap_or(host.len())
    };
    let (name, port) = host.split_at(name_end);
    match port.strip_prefix(':') {
        Some(digits) if digits.bytes().all(|b| b.is_ascii_digit()) => name,
        None if port.is_empty() => name,
        _ => host,
    }
}

fn invalid(at: &str, problem: impl Into<String>) -> RouteError {
    RouteError::Invalid {
        at: at.to_owned(),
        problem: problem.into(),
    }
}

/// Refuses a member of `object` in none of the `known` lists (serde's `deny_unknown_fields`).
fn refuse_unknown(object: &Member, at: &str, known: &[&[&str]]) -> Result<(), RouteError> {
    let Member::Object(members) = object else {
        return Err(invalid(at, "must be an object"));
    };
    let is_known = |name: &str| known.iter().any(|list| list.contains(&name));
    match members.iter().find(|(name, _)| !is_known(name)) {
        Some((name, _)) => Err(RouteError::Unknown {
            at: at.to_owned(),
            name: name.clone(),
        }),
        None => Ok(()),
    }
}

fn read_route(member: Member, index: usize) -> Result<Route, RouteError> {
    let place = format!("route {}", index + 1);
    refuse_unknown(&member, &place, &[&ROUTE_MATCH, &POLICY])?;
    let Member::Object(members) = member else {
        return Err(invalid(&place, "must be an object"));
    };
    let (head, policy): (Vec<_>, Vec<_>) = members
        .into_iter()
        .partition(|(name, _)| ROUTE_MATCH.contains(&name.as_str()));
    let [id, host, path, methods] = Member::Object(head).take_members(ROUTE_MATCH)?;
    let id = match id {
        Some(Member::Str(id)) if is_route_id(&id) => id,
        Some(Member::Str(id)) => {
            return Err(invalid(
                &place,
                format!("id `{id}` must be 1 to 64 of a-z, 0-9, `-`, `_`, `.`"),
            ))
        }
        _ => return Err(invalid(&place, "needs a string `id`")),
    };
    let at = format!("route `{id}`");
    let host = match host {
        None => None,
        // As requests are matched: lower case, without the trailing `.` of a full name.
        Some(Member::Str(host)) if is_host(&host) => {
            Some(host.strip_suffix('.').unwrap_or(&host).to_ascii_lowercase())
        }
        Some(_) => return Err(invalid(&at, "`host` must be a host name, without port")),
    };
    let path = match path {
        Some(Member::Str(path)) => {
            PathPattern::parse(&path).map_err(|problem| invalid(&at, problem))?
        }
        _ => return Err(invalid(&at, "needs a string `path`")),
    };
    let methods = match methods {
        None => None,
        Some(Member::Array(list)) if !list.is_empty() => {
            let mut methods = Vec::with_capacity(list.len());
            for method in list {
                match method {
                    Member::Str(method) if is_method(&method) => methods.push(method),
                    _ => {
                        return Err(invalid(
                            &at,
                            "`methods` must be upper-case HTTP method names",
                        ))
                    }
                }
            }
            Some(methods)
        }
        Some(_) => return Err(invalid(&at, "`methods` must be a non-empty list")),
    };
    let policy = read_policy(Member::Object(policy), &at)?;
    Ok(Route {
        id,
        host,
        methods,
        path,
        policy,
    })
}

fn read_policy(member: Member, at: &str) -> Result<Policy, RouteError> {
    let [require, all, any, audience, origin, rate_plan, max_body, dpop, _description] =
        member.take_members(POLICY)?;
    let scopes = |list: Option<Member>, name: &str| -> Result<Scopes, RouteError> {
        let Some(list) = list else {
            return Ok(Scopes::default());
        };
        let problem = || invalid(at, format!("`{name}` must be a non-empty list of scopes"));
        let Member::Array(list) = list else {
            return Err(problem());
        };
        let mut names = Vec::with_capacity(list.len());
        for scope in &list {
            names.push(
                scope
                    .as_str()
                    .filter(|s| !s.contains(' '))
                    .ok_or_else(problem)?,
            );
        }
        let scopes = Scopes::parse(&names.join(" ")).ok_or_else(problem)?;
        if scopes.is_empty() {
            return Err(problem());
        }
        Ok(scopes)
    };
    let (all, any) = (scopes(all, "scopes_all")?, scopes(any, "scopes_any")?);
    let scoped = !all.is_empty() || !any.is_empty();
    let access = match require.as_ref().map(|r| r.as_str()) {
        None | Some(Some("authenticated")) => Access::Token(ScopeRequirement::new(all, any)),
        Some(Some("public")) if !scoped => Access::Public,
        Some(Some("deny")) if !scoped => Access::Deny,
        Some(Some("public" | "deny")) => {
            return Err(invalid(
                at,
                "scopes need `require = \"authenticated\"` (or none)",
            ))
        }
        _ => {
            return Err(invalid(
                at,
                "`require` is \"public\", \"authenticated\" or \"deny\"",
            ))
        }
    };
    let text = |member: Option<Member>, name: &str| match member {
        None => Ok(None),
        Some(Member::Str(text)) if !text.is_empty() => Ok(Some(text)),
        Some(_) => Err(invalid(at, format!("`{name}` must be a non-empty string"))),
    };
    let audience = text(audience, "audience")?;
    let origin = text(origin, "origin")?
        .map(|url| {
            Origin::parse(&url).map_err(|problem| invalid(at, format!("`origin`: {problem}")))
        })
        .transpose()?;
    let rate_plan = text(rate_plan, "rate_plan")?
        .map(|plan| {
            plan.parse::<RatePlan>()
                .map_err(|err| invalid(at, format!("`rate_plan` `{plan}`: {err}")))
        })
        .transpose()?;
    let max_body = match max_body {
        None => None,
        Some(Member::UInt(bytes)) => Some(bytes),
        Some(_) => return Err(invalid(at, "`max_body` must be a whole number of bytes")),
    };
    if !matches!(access, Access::Token(_)) && audience.is_some() {
        return Err(invalid(at, "`audience` applies to token routes only"));
    }
    if matches!(access, Access::Deny) && rate_plan.is_some() {
        return Err(invalid(at, "a `deny` route has no `rate_plan`"));
    }
    let dpop_required = match text(dpop, "dpop")?.as_deref() {
        None | Some("allowed") => false,
        Some("required") if matches!(access, Access::Token(_)) => true,
        Some("required") => return Err(invalid(at, "`dpop` applies to token routes only")),
        Some(_) => return Err(invalid(at, "`dpop` is \"allowed\" or \"required\"")),
    };
    Ok(Policy {
        access,
        audience,
        origin,
        rate_plan,
        max_body,
        dpop_required,
    })
}

fn is_route_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
}

fn is_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
}

/// An RFC 9110 token in upper case (methods are case-sensitive, and the standard ones are
/// upper case: a lower-case `get` in a table is a mistake, not a method).
fn is_method(method: &str) -> bool {
    !method.is_empty()
        && method.len() <= 32
        && method
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rejection::Rejection;

    fn table(json: &str) -> RouteTable {
        RouteTable::from_json(json).unwrap()
    }

    fn id<'t>(table: &'t RouteTable, method: &str, path: &str) -> Option<&'t str> {
        let path = NormalPath::parse(path).unwrap();
        table
            .route("api.example", method, &path)
            .map(|route| route.id.as_str())
    }

    const TABLE: &str = r#"{ "route": [
        { "id": "all", "path": "/**" },
        { "id": "orders", "path": "/orders/**", "scopes_all": ["orders:read"] },
        { "id": "order", "path": "/orders/{id}" },
        { "id": "order-post", "path": "/orders/{id}", "methods": ["POST"] },
        { "id": "orders-exact", "path": "/orders" },
        { "id": "export", "path": "/orders/export" },
        { "id": "by-host", "host": "api.example", "path": "/**" },
        { "id": "other-host", "host": "other.example", "path": "/orders/export" },
        { "id": "any-then-items", "path": "/{x}/items" }
    ] }"#;

    #[test]
    fn the_most_specific_route_wins() {
        let table = table(TABLE);
        // A named host beats any host, even with a less specific path.
        assert_eq!(id(&table, "GET", "/orders/export"), Some("by-host"));
        let path = NormalPath::parse("/orders/export").unwrap();
        let route = |host, method| table.route(host, method, &path).map(|r| r.id.as_str());
        assert_eq!(route("other.example", "GET"), Some("other-host"));
        // Any spelling of the host or the method reaches the same route, and a table's host
        // may be written as a full name.
        assert_eq!(route("Other.Example.:8443", "GET"), Some("other-host"));
        assert_eq!(route("other.example.", "get"), Some("other-host"));
        let dotted = RouteTable::from_json(
            r#"{ "route": [{ "id": "a", "host": "API.example.", "path": "/a" }] }"#,
        )
        .unwrap();
        let a = NormalPath::parse("/a").unwrap();
        assert!(dotted.route("api.example:443", "GET", &a).is_some());
        assert_eq!(route("OTHER.example:8443", "GET"), Some("other-host"));
        assert_eq!(route("third.example", "GET"), Some("export"));
        let at = |method, raw| {
            let path = NormalPath::parse(raw).unwrap();
            table
                .route("third.example", method, &path)
                .map(|r| r.id.as_str())
        };
        assert_eq!(at("GET", "/orders/7"), Some("order"));
        assert_eq!(at("POST", "/orders/7"), Some("order-post"));
        assert_eq!(at("post", "/orders/7"), Some("order-post"));
        assert_eq!(at("GET", "/orders"), Some("orders-exact"));
        assert_eq!(at("GET", "/orders/"), Some("orders-exact"));
        assert_eq!(at("GET", "/ORDERS/Export/"), Some("export"));
        assert_eq!(at("GET", "/orders/7/lines"), Some("orders"));
        assert_eq!(
            at("GET", "/orders/items"),
            Some("order"),
            "a literal first segment beats {{x}}"
        );
        assert_eq!(at("GET", "/carts/items"), Some("any-then-items"));
        assert_eq!(at("GET", "/"), Some("all"));
    }

    #[test]
    fn ambiguous_and_malformed_tables_are_refused() {
        let ambiguous = r#"{ "route": [
            { "id": "a", "path": "/orders/{id}" },
            { "id": "b", "path": "/Orders/{order}/", "methods": ["GET"] },
            { "id": "c", "path": "/orders/{x}", "methods": ["GET", "PUT"] } ] }"#;
        assert_eq!(
            RouteTable::from_json(ambiguous).unwrap_err(),
            RouteError::Ambiguous {
                first: "b".into(),
                second: "c".into()
            }
        );
        let refused = |json: &str| RouteTable::from_json(json).unwrap_err().to_string();
        assert!(
            refused(r#"{ "route": [{ "id": "a", "path": "/x", "scope": ["s"] }] }"#)
                .contains("unknown setting `scope`")
        );
        assert!(refused(
            r#"{ "route": [{ "id": "a", "path": "/x" }, { "id": "a", "path": "/y" }] }"#
        )
        .contains("used twice"));
        assert!(
            refused(r#"{ "route": [{ "id": "a", "path": "/a/../b" }] }"#)
                .contains("normal spelling")
        );
        assert!(
            refused(r#"{ "route": [{ "id": "a", "path": "/**/b" }] }"#).contains("last segment")
        );
        assert!(refused(r#"{ "route": [{ "id": "a", "path": "/a*" }] }"#).contains("mixes"));
        assert!(refused(r#"{ "route": [{ "id": "a", "path": "/a;b" }] }"#).contains("path"));
        assert!(refused(r#"{ "route": [{ "id": "a", "path": "/a", "require": "public", "scopes_any": ["s"] }] }"#)
            .contains("scopes need"));
        assert!(
            refused(r#"{ "route": [{ "id": "a", "path": "/a", "methods": ["get"] }] }"#)
                .contains("upper-case")
        );
        assert!(
            refused(r#"{ "route": [{ "id": "a", "path": "/a", "origin": "ftp://x" }] }"#)
                .contains("origin")
        );
        assert!(
            refused(r#"{ "route": [{ "id": "a", "path": "/a", "rate_plan": "lots" }] }"#)
                .contains("rate_plan")
        );
        assert!(refused(
            r#"{ "route": [{ "id": "a", "path": "/a", "require": "public", "audience": "x" }] }"#
        )
        .contains("token routes only"));
        assert!(refused(
            r#"{ "route": [{ "id": "a", "path": "/a", "require": "deny", "rate_plan": "1/s" }] }"#
        )
        .contains("no `rate_plan`"));
        assert!(refused(r#"{ "unmatched": { "path": "/a" } }"#).contains("unknown setting `path`"));
        assert!(refused(r#"{ "routes": [] }"#).contains("unknown setting `routes`"));
    }

    #[test]
    fn scopes_all_and_any_name_what_was_missing() {
        let table = table(
            r#"{ "route": [{ "id": "a", "path": "/a", "scopes_all": ["write", "read"], "scopes_any": ["ops", "admin"] }] }"#,
        );
        let Access::Token(required) = &table.routes()[0].policy.access else {
            panic!("scopes make a token route");
        };
        let scopes = |text: &str| Scopes::parse(text).unwrap();
        assert_eq!(required.check(&scopes("admin read write")), Ok(()));
        let missing = required.check(&scopes("read write")).unwrap_err();
        assert_eq!(
            missing,
            Rejection::InsufficientScope {
                required: "admin ops read write".into()
            }
        );
        assert_eq!(missing.status(), 403);
        assert!(required.check(&scopes("ops read")).is_err());
    }

    /// The hand-written sort orders as the standard library's stable sort by rank would, ties
    /// in table order, whatever order the table was written in.
    #[test]
    fn by_precedence_is_a_stable_sort_by_rank() {
        let shapes = [
            ("/", None, None),
            ("/**", None, None),
            ("/a", None, None),
            ("/a", None, Some("GET")),
            ("/a/**", Some("h.example"), None),
            ("/{x}", None, None),
            ("/{x}/b", None, Some("PUT")),
            ("/a/{y}", None, None),
            ("/a/b", Some("h.example"), None),
            ("/a/b/**", None, None),
            ("/{x}/**", None, None),
            ("/c", None, None),
        ];
        let route = |at: usize| {
            let (path, host, method) = shapes[at % shapes.len()];
            Route {
                id: format!("r{at}"),
                host: host.map(str::to_owned),
                methods: method.map(|method| vec![method.to_owned()]),
                path: PathPattern::parse(path).unwrap(),
                policy: Policy::token(ScopeRequirement::default()),
            }
        };
        for start in 0..shapes.len() {
            for reversed in [false, true] {
                // Every shape twice (ties), in a rotated and maybe reversed order.
                let mut order: Vec<usize> = (0..2 * shapes.len())
                    .map(|i| (i + start) % (2 * shapes.len()))
                    .collect();
                if reversed {
                    order.reverse();
                }
                let routes: Vec<Route> = order.into_iter().map(route).collect();
                let mut expected = routes.clone();
                expected.sort_by_cached_key(|route| std::cmp::Reverse(route.rank()));
                let ids =
                    |routes: &[Route]| routes.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
                assert_eq!(ids(&by_precedence(routes)), ids(&expected));
            }
        }
    }

    #[test]
    fn origins_and_unmatched() {
        let table = table(
            r#"{ "unmatched": { "require": "authenticated", "origin": "https://Legacy.internal:443/" },
                 "route": [{ "id": "h", "path": "/health", "require": "public", "max_body": 0 }] }"#,
        );
        let unmatched = table.unmatched().unwrap();
        let origin = unmatched.origin.as_ref().unwrap();
        assert_eq!(
            (origin.url(), origin.host()),
            ("https://Legacy.internal:443", "legacy.internal")
        );
        assert_eq!(origin.prefix(), "");
        let prefixed = Origin::parse("http://10.0.0.7:8080/api/v1/").unwrap();
        assert_eq!(
            (prefixed.url(), prefixed.host(), prefixed.prefix()),
            ("http://10.0.0.7:8080/api/v1", "10.0.0.7:8080", "/api/v1")
        );
        assert_eq!(table.routes()[0].policy.access, Access::Public);
        assert_eq!(table.routes()[0].policy.max_body, Some(0));
        assert!(!table.routes()[0].policy.dpop_required);
        let dpop = RouteTable::from_json(
            r#"{ "route": [{ "id": "pay", "path": "/pay", "dpop": "required" }] }"#,
        )
        .unwrap();
        assert!(dpop.routes()[0].policy.dpop_required);
        for refused in [
            r#"{ "route": [{ "id": "p", "path": "/p", "require": "public", "dpop": "required" }] }"#,
            r#"{ "route": [{ "id": "p", "path": "/p", "dpop": "yes" }] }"#,
        ] {
            assert!(RouteTable::from_json(refused).is_err(), "{refused}");
        }
        assert_eq!(id(&table, "GET", "/nothing"), None);
        assert!(RouteTable::from_json("{}").unwrap().unmatched().is_none());
    }
}
