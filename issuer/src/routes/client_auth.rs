//! Form bodies and client authentication shared by the token, revocation and introspection
//! endpoints: `client_secret_basic` (RFC 6749 §2.3.1, form-encoded id and secret in Basic),
//! `client_secret_post`, or `private_key_jwt` (RFC 7523), exactly one.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use base64ct::{Base64, Encoding};
use shared::UnixTime;

use crate::clients::{self, Client};
use crate::error::ApiError;
use crate::state::AppState;

/// The caller's address: the socket peer, or the last `X-Forwarded-For` entry (the one our
/// trusted proxy appended) when `trust_forwarded_for` is set.
pub(crate) struct ClientAddress(pub(crate) IpAddr);

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Infallible> {
        let forwarded = || {
            parts
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(','))
                .next_back()
                .and_then(|last| last.trim().parse().ok())
        };
        let forwarded = if state.config().trust_forwarded_for {
            forwarded()
        } else {
            None
        };
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        Ok(Self(
            forwarded.or(peer).unwrap_or(IpAddr::from([0, 0, 0, 0])),
        ))
    }
}

/// A limiter's decision as a result: 429 with `Retry-After` when denied.
pub(crate) fn limited(decision: &shared::Decision) -> Result<(), ApiError> {
    if decision.allowed {
        Ok(())
    } else {
        Err(ApiError::TooManyRequests {
            retry_after_secs: decision.retry_after_secs(),
        })
    }
}

/// The form, checked by `valid`, and its client, authenticated, under the per-address
/// limits: an address known to be over its budget is refused at once
/// ([`crate::limits::TokenLimits::known_denial`]), and a request refused here is charged to
/// its address (a failed authentication [`crate::limits::FAILED_AUTH_COST`] requests more,
/// so guessing secrets through any endpoint runs out of budget as fast). The caller charges
/// a request that passes (`TokenLimits::authenticated`): each request is one decision.
pub(crate) async fn authenticate_limited(
    state: &AppState,
    address: IpAddr,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    valid: impl FnOnce(Form) -> Result<Form, ApiError>,
    now: UnixTime,
) -> Result<(Client, Form), ApiError> {
    if let Some(retry_after_secs) = state.limits.known_denial(address, now) {
        return Err(ApiError::TooManyRequests { retry_after_secs });
    }
    let authenticated = match parse_form(headers, body).and_then(valid) {
        Ok(params) => authenticate(state, headers, &params)
            .await
            .map(|client| (client, params)),
        Err(err) => Err(err),
    };
    match authenticated {
        Ok(authenticated) => Ok(authenticated),
        Err(err) => {
            let failed_auth = matches!(err, ApiError::InvalidClient);
            limited(&state.limits.refused(address, now, failed_auth).await)?;
            Err(err)
        }
    }
}

/// Form parameters by name (each at most once).
pub(crate) type Form = BTreeMap<String, String>;

/// Content type, size, and form parameters (none repeated, RFC 6749 §3.2).
fn parse_form(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Form, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge
        } else {
            ApiError::InvalidRequest("unreadable request body")
        }
    })?;
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| {
            mime.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form {
        return Err(ApiError::InvalidRequest(
            "content type must be application/x-www-form-urlencoded",
        ));
    }
    let mut params = BTreeMap::new();
    for (name, value) in form_urlencoded::parse(&body) {
        if params
            .insert(name.into_owned(), value.into_owned())
            .is_some()
        {
            return Err(ApiError::InvalidRequest(
                "request parameters must not repeat",
            ));
        }
    }
    Ok(params)
}

/// `client_secret_basic` (RFC 6749 §2.3.1: form-encoded id and secret in Basic) or
/// `client_secret_post`; exactly one.
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    params: &Form,
) -> Result<Client, ApiError> {
    let mut authorization = headers.get_all(header::AUTHORIZATION).iter();
    let basic = match (authorization.next(), authorization.next()) {
        (None, _) => None,
        (Some(_), Some(_)) => {
            return Err(ApiError::InvalidRequest("repeated Authorization header"))
        }
        (Some(value), None) => Some(parse_basic(value).ok_or(ApiError::InvalidClient)?),
    };
    let posted = match (params.get("client_id"), params.get("client_secret")) {
        (Some(id), Some(secret)) => Some((id.clone(), secret.clone())),
        (None, Some(_)) => return Err(ApiError::InvalidRequest("client_secret without client_id")),
        _ => None,
    };
    let assertion = match (
        params.get("client_assertion_type"),
        params.get("client_assertion"),
    ) {
        (None, None) => None,
        (Some(kind), Some(assertion)) if kind == clients::JWT_BEARER => Some(assertion),
        (Some(_), Some(_)) => return Err(ApiError::InvalidClient),
        _ => {
            return Err(ApiError::InvalidRequest(
                "client_assertion and client_assertion_type go together",
            ))
        }
    };
    let methods = usize::from(basic.is_some())
        + usize::from(posted.is_some())
        + usize::from(assertion.is_some());
    if methods > 1 {
        return Err(ApiError::InvalidRequest(
            "use only one client authentication method",
        ));
    }
    let db_error = |err: clients::ClientError| match err {
        clients::ClientError::Db(err) => ApiError::from(err),
        other => ApiError::Internal(other.to_string()),
    };
    if let Some(assertion) = assertion {
        let config = state.config();
        let audiences = [config.token_endpoint(), config.issuer_url.clone()];
        let client = clients::authenticate_assertion(
            &state.db,
            assertion,
            &audiences,
            state.clock.unix_secs(),
        )
        .await
        .map_err(db_error)?
        .ok_or(ApiError::InvalidClient)?;
        if params
            .get("client_id")
            .is_some_and(|id| *id != client.client_id)
        {
            return Err(ApiError::InvalidRequest(
                "client_id does not match the authenticated client",
            ));
        }
        return Ok(client);
    }
    let (client_id, secret) = match (basic, posted) {
        (Some((id, secret)), None) => {
            if params
                .get("client_id")
                .is_some_and(|posted_id| *posted_id != id)
            {
                return Err(ApiError::InvalidRequest(
                    "client_id does not match the authenticated client",
                ));
            }
            (id, secret)
        }
        (None, Some(credentials)) => credentials,
        _ => return Err(ApiError::InvalidClient),
    };
    if client_id.len() > 128 || secret.len() > 256 {
        return Err(ApiError::InvalidClient);
    }
    clients::authenticate(&state.db, &client_id, &secret)
        .await
        .map_err(db_error)?
        .ok_or(ApiError::InvalidClient)
}

fn parse_basic(value: &HeaderValue) -> Option<(String, String)> {
    let value = value.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = Base64::decode_vec(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |text: &str| -> String {
        form_urlencoded::parse(format!("v={text}").as_bytes())
            .next()
            .map(|(_, value)| value.into_owned())
            .unwrap_or_default()
    };
    Some((unescape(id), unescape(secret)))
}
