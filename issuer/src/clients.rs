//! OAuth clients: created by ops, authenticated by secret on every token request.
//!
//! Secrets are 256 random bits, shown once and stored only as their SHA-256. A fast hash is
//! enough here (unlike passwords) because a 256-bit secret cannot be guessed, and it keeps the
//! token endpoint at thousands of grants per second. Comparison is constant-time.

use base64ct::{Base64UrlUnpadded, Encoding};
use rand_core::{OsRng, RngCore};
use serde::Serialize;
use sha2::{Digest, Sha256};
use shared::{RatePlan, Scopes};
use sqlx::Row;
use subtle::ConstantTimeEq;

use crate::audit::Entry;
use crate::db::Db;
use crate::revocations::{self, Revoked};

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The input is not acceptable (empty name, bad scope or audience, bad rate plan).
    #[error("{0}")]
    Invalid(String),
    /// No such client.
    #[error("no client {0}")]
    NotFound(String),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// A client as stored (without its secret hash).
#[derive(Debug, Clone, Serialize)]
pub struct Client {
    /// Public identifier.
    pub client_id: String,
    /// Human name.
    pub name: String,
    /// Scopes it may request.
    #[serde(serialize_with = "as_text")]
    pub scopes: Scopes,
    /// Audiences it may request (`resource`); the first is the default.
    pub audiences: Vec<String>,
    /// Its rate plan, put in every token.
    #[serde(serialize_with = "as_optional_text")]
    pub rate_plan: Option<RatePlan>,
    /// Whether it may get tokens.
    pub enabled: bool,
    /// Whether it is a resource server: only those may introspect tokens (for their own
    /// audiences).
    pub resource_server: bool,
    /// Whether it must prove possession of a DPoP key (RFC 9449) at the token endpoint, so it
    /// only ever gets DPoP-bound tokens (RFC 9449 §5.2 `dpop_bound_access_tokens`).
    pub require_dpop: bool,
    /// Creation time.
    pub created_at: i64,
    /// Ids of its public keys for `private_key_jwt` (empty: secret only).
    pub key_ids: Vec<String>,
    /// Its public keys for `private_key_jwt`.
    #[serde(skip)]
    pub jwks: Option<shared::Jwks>,
    /// The last second whose tokens its latest revocation covers (0: none): the token
    /// endpoint issues it no token stamped at or before this ([`CUTOFF_MARGIN_SECS`]).
    #[serde(skip)]
    pub tokens_valid_after: i64,
}

fn as_text<S: serde::Serializer, T: std::fmt::Display>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

fn as_optional_text<S: serde::Serializer, T: std::fmt::Display>(
    value: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => s.collect_str(value),
        None => s.serialize_none(),
    }
}

/// What `client create` takes.
#[derive(Debug, Clone)]
pub struct NewClient {
    /// Human name.
    pub name: String,
    /// Space-separated scopes.
    pub scopes: String,
    /// Audiences (the first is the default).
    pub audiences: Vec<String>,
    /// Rate plan text, e.g. `1000/60s;burst=100`.
    pub rate_plan: Option<String>,
    /// Public keys (JWKS JSON, EC P-256) for `private_key_jwt`.
    pub jwks: Option<String>,
    /// A resource server, which may introspect tokens for its audiences.
    pub resource_server: bool,
    /// Tokens only with a DPoP proof (RFC 9449 §5.2 `dpop_bound_access_tokens`).
    pub require_dpop: bool,
}

/// A new client and its secret, shown once.
#[derive(Debug, Serialize)]
pub struct Created {
    /// The client.
    #[serde(flatten)]
    pub client: Client,
    /// The secret; only its hash is stored.
    pub client_secret: String,
}

fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    OsRng.fill_bytes(&mut buf);
    Base64UrlUnpadded::encode_string(&buf)
}

fn hash_secret(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

fn join(values: &[String]) -> String {
    values.join(" ")
}

/// Creates a client, with its audit row (by `actor`) in the same transaction.
///
/// # Errors
/// [`ClientError::Invalid`] for bad input, or the database error.
pub async fn create(
    db: &Db,
    new: NewClient,
    actor: &str,
    now: i64,
) -> Result<Created, ClientError> {
    create_with(db, new, actor, now, None).await
}

/// A client registered over HTTP (RFC 7591), and the registration access token that lets it
/// read, change and delete its registration (RFC 7592); both shown once.
#[derive(Debug)]
pub struct Registered {
    /// The client and its secret.
    pub created: Created,
    /// Its registration access token; only its hash is stored.
    pub registration_access_token: String,
}

/// Creates a client as [`create`] does, with a registration access token stored (as its
/// hash) and the token endpoint authentication method it registered with, in the same
/// transaction.
///
/// # Errors
/// [`ClientError::Invalid`] for bad input, or the database error.
pub async fn register(
    db: &Db,
    new: NewClient,
    auth_method: &str,
    actor: &str,
    now: i64,
) -> Result<Registered, ClientError> {
    let registration_access_token = random_token(32);
    let registration = Some((registration_access_token.as_str(), auth_method));
    let created = create_with(db, new, actor, now, registration).await?;
    Ok(Registered {
        created,
        registration_access_token,
    })
}

/// A client's name, trimmed: 1-200 characters.
fn checked_name(name: &str) -> Result<String, ClientError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(ClientError::Invalid("name must be 1-200 characters".into()));
    }
    Ok(name.to_owned())
}

fn checked_scopes(scopes: &str) -> Result<Scopes, ClientError> {
    scopes.parse().map_err(|_| {
        ClientError::Invalid("scope must be RFC 6749 scope-tokens separated by spaces".into())
    })
}

/// Public keys for `private_key_jwt`: a JWKS with at least one EC P-256 signing key.
fn checked_jwks(jwks: Option<&str>) -> Result<Option<shared::Jwks>, ClientError> {
    let jwks = jwks
        .map(shared::Jwks::parse)
        .transpose()
        .map_err(|err| ClientError::Invalid(format!("jwks: {err}")))?;
    if jwks.as_ref().is_some_and(shared::Jwks::is_empty) {
        return Err(ClientError::Invalid("jwks: no EC P-256 signing key".into()));
    }
    Ok(jwks)
}

/// [`create`], or with `registration` (its registration access token and authentication
/// method) [`register`].
async fn create_with(
    db: &Db,
    new: NewClient,
    actor: &str,
    now: i64,
    registration: Option<(&str, &str)>,
) -> Result<Created, ClientError> {
    let name = checked_name(&new.name)?;
    let scopes = checked_scopes(&new.scopes)?;
    if new.audiences.is_empty()
        || new
            .audiences
            .iter()
            .any(|a| a.is_empty() || a.contains(char::is_whitespace))
    {
        return Err(ClientError::Invalid(
            "at least one audience, without spaces".into(),
        ));
    }
    let rate_plan = new
        .rate_plan
        .as_deref()
        .map(str::parse::<RatePlan>)
        .transpose()
        .map_err(|err| ClientError::Invalid(err.to_string()))?;
    let jwks = checked_jwks(new.jwks.as_deref())?;
    let client_id = format!("c_{}", random_token(12));
    let client_secret = random_token(32);
    // The client and its audit row commit together.
    let mut tx = db.pool().begin().await?;
    sqlx::query(
        "INSERT INTO clients (client_id, name, secret_hash, scopes, audiences, rate_plan, created_at, updated_at, jwks, resource_server, registration_token_hash, token_endpoint_auth_method, require_dpop) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9, $10, $11, $12)",
    )
    .bind(&client_id)
    .bind(&name)
    .bind(hash_secret(&client_secret))
    .bind(scopes.to_string())
    .bind(join(&new.audiences))
    .bind(rate_plan.map(|p| p.to_string()))
    .bind(now)
    .bind(jwks.as_ref().map(shared::Jwks::to_json))
    .bind(i64::from(new.resource_server))
    .bind(registration.map(|(token, _)| hash_secret(token)))
    .bind(registration.map(|(_, method)| method))
    .bind(i64::from(new.require_dpop))
    .execute(&mut *tx)
    .await?;
    db.audit_in(
        &mut tx,
        &Entry {
            at: now,
            actor,
            action: if registration.is_some() {
                "client.register"
            } else {
                "client.create"
            },
            subject: &client_id,
            detail: &name,
        },
    )
    .await?;
    tx.commit().await?;
    let client = Client {
        key_ids: key_ids(jwks.as_ref()),
        jwks,
        client_id,
        name,
        scopes,
        audiences: new.audiences,
        rate_plan,
        enabled: true,
        resource_server: new.resource_server,
        require_dpop: new.require_dpop,
        created_at: now,
        tokens_valid_after: 0,
    };
    Ok(Created {
        client,
        client_secret,
    })
}

const SELECT: &str = "SELECT client_id, name, secret_hash, scopes, audiences, rate_plan, disabled_at, created_at, jwks, resource_server, require_dpop, tokens_valid_after FROM clients";

fn key_ids(jwks: Option<&shared::Jwks>) -> Vec<String> {
    jwks.map(|set| set.keys().iter().map(|key| key.kid().to_owned()).collect())
        .unwrap_or_default()
}

fn from_row(row: &sqlx::any::AnyRow) -> Result<(Client, Vec<u8>), ClientError> {
    let client_id: String = row.try_get("client_id")?;
    let corrupt =
        |what: &str| ClientError::Invalid(format!("stored client {client_id} has a bad {what}"));
    let scopes: String = row.try_get("scopes")?;
    let audiences: String = row.try_get("audiences")?;
    let rate_plan: Option<String> = row.try_get("rate_plan")?;
    let disabled_at: Option<i64> = row.try_get("disabled_at")?;
    let jwks: Option<String> = row.try_get("jwks")?;
    let jwks = jwks
        .as_deref()
        .map(shared::Jwks::parse)
        .transpose()
        .map_err(|_| corrupt("jwks"))?;
    let client = Client {
        key_ids: key_ids(jwks.as_ref()),
        jwks,
        name: row.try_get("name")?,
        scopes: scopes.parse().map_err(|_| corrupt("scope"))?,
        audiences: audiences
            .split(' ')
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect(),
        rate_plan: rate_plan
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|_| corrupt("rate plan"))?,
        enabled: disabled_at.is_none(),
        resource_server: row.try_get::<i64, _>("resource_server")? != 0,
        require_dpop: row.try_get::<i64, _>("require_dpop")? != 0,
        created_at: row.try_get("created_at")?,
        tokens_valid_after: row.try_get("tokens_valid_after")?,
        client_id,
    };
    Ok((client, row.try_get("secret_hash")?))
}

/// Every client, oldest first.
///
/// # Errors
/// The database error.
pub async fn list(db: &Db) -> Result<Vec<Client>, ClientError> {
    let rows = sqlx::query(&format!("{SELECT} ORDER BY created_at, client_id"))
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|row| from_row(row).map(|(client, _)| client))
        .collect()
}

/// One client.
///
/// # Errors
/// [`ClientError::NotFound`] or the database error.
pub async fn show(db: &Db, client_id: &str) -> Result<Client, ClientError> {
    find(db, client_id)
        .await?
        .map(|(client, _)| client)
        .ok_or_else(|| ClientError::NotFound(client_id.to_owned()))
}

async fn find(db: &Db, client_id: &str) -> Result<Option<(Client, Vec<u8>)>, ClientError> {
    let row = sqlx::query(&format!("{SELECT} WHERE client_id = $1"))
        .bind(client_id)
        .fetch_optional(db.pool())
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// The enabled client whose secret matches, or `None` (unknown, disabled or wrong secret,
/// indistinguishably).
///
/// # Errors
/// The database error.
pub async fn authenticate(
    db: &Db,
    client_id: &str,
    secret: &str,
) -> Result<Option<Client>, ClientError> {
    let Some((client, stored)) = find(db, client_id).await? else {
        // Same work as a real comparison, so timing does not reveal which ids exist.
        let _ = hash_secret(secret).ct_eq(&[0u8; 32]);
        return Ok(None);
    };
    let matches: bool = hash_secret(secret).ct_eq(&stored).into();
    Ok((matches && client.enabled).then_some(client))
}

/// Who changes a client and when, and how long its tokens live (the life of the revocation
/// entry that disabling writes).
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    /// Recorded in the audit log (`cli`, or a client id).
    pub actor: &'a str,
    /// Seconds since the epoch.
    pub now: i64,
    /// The issuer's access-token lifetime.
    pub token_lifetime_secs: u64,
}

/// How far past the change a revocation of a client's tokens reaches (seconds).
///
/// A token request reads the client's row, then signs a token stamped (`iat`) with the time
/// it started, which is before that read. One that read the row just before a revocation
/// committed holds the old secret or state, and its token must be covered: its stamp is
/// before the commit, so a cut-off past the commit covers it, and the change's time plus
/// this margin is past the commit of any revocation that commits within the margin of its
/// clock reading (and on an instance whose clock is within the margin of the change's). A
/// request that reads the new row is answered 503 until the cut-off has passed
/// ([`Client::tokens_valid_after`]), so no token made after the change falls under it.
/// An instance reading a replica that applies the change later than the margin is covered
/// by the token's other stamp, the cut-off its row held (`client_cutoff`), at edges that
/// read it.
pub const CUTOFF_MARGIN_SECS: i64 = 5;

impl Change<'_> {
    /// The last second whose tokens a revocation made by this change covers.
    fn cutoff(&self) -> i64 {
        self.now.saturating_add(CUTOFF_MARGIN_SECS)
    }

    /// The entry revoking what the client holds up to `cutoff`. It outlives the longest
    /// lifetime any token can have, not the one configured now: a reload may have shortened
    /// the lifetime after tokens were issued under a longer one.
    fn revoked_tokens(&self, cutoff: i64) -> Revoked {
        let lifetime = self
            .token_lifetime_secs
            .max(crate::config::MAX_TOKEN_LIFETIME_SECS);
        Revoked::Client {
            issued_before: cutoff,
            token_lifetime_secs: i64::try_from(lifetime).unwrap_or(i64::MAX),
        }
    }
}

/// Revokes every token the client holds, inside the caller's transaction: the feed entry,
/// and the cut-off on the client's row that keeps new tokens out of its reach. Each
/// revocation's cut-off is above the one before, whatever the clocks say: a token stamped
/// with an earlier one (`client_cutoff`) is covered by every later revocation.
async fn revoke_tokens_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    db: &Db,
    client_id: &str,
    change: &Change<'_>,
) -> Result<(), ClientError> {
    let cutoff: i64 = sqlx::query_scalar(
        "UPDATE clients SET tokens_valid_after = \
         CASE WHEN tokens_valid_after >= $1 THEN tokens_valid_after + 1 ELSE $1 END \
         WHERE client_id = $2 RETURNING tokens_valid_after",
    )
    .bind(change.cutoff())
    .bind(client_id)
    .fetch_one(&mut **tx)
    .await?;
    revocations::record(tx, db, change.revoked_tokens(cutoff), client_id, change.now).await?;
    Ok(())
}

/// Sets whether a client must prove possession of a DPoP key for every token (RFC 9449 §5.2),
/// with its audit row, in one transaction. Tokens it already holds live out their lifetime
/// (`rotate_secret` with `revoke_tokens` ends them).
///
/// # Errors
/// [`ClientError::NotFound`], or the database error (nothing is changed then).
pub async fn set_require_dpop(
    db: &Db,
    client_id: &str,
    required: bool,
    change: &Change<'_>,
) -> Result<(), ClientError> {
    let mut tx = db.pool().begin().await?;
    let result =
        sqlx::query("UPDATE clients SET require_dpop = $1, updated_at = $2 WHERE client_id = $3")
            .bind(i64::from(required))
            .bind(change.now)
            .bind(client_id)
            .execute(&mut *tx)
            .await?;
    if result.rows_affected() == 0 {
        return Err(ClientError::NotFound(client_id.to_owned()));
    }
    let entry = Entry {
        at: change.now,
        actor: change.actor,
        action: if required {
            "client.require_dpop"
        } else {
            "client.allow_bearer"
        },
        subject: client_id,
        detail: "",
    };
    db.audit_in(&mut tx, &entry).await?;
    tx.commit().await?;
    Ok(())
}

/// Enables or disables a client, with its audit row, in one transaction. Disabling also
/// revokes every token it holds (a `client` entry on the revocation feed: edges refuse
/// them within a feed interval), so disabling means something before the tokens expire,
/// and ends its registration access token (RFC 7592), which enabling does not bring back.
/// A deregistered client is never enabled again.
///
/// # Errors
/// [`ClientError::NotFound`], [`ClientError::Invalid`] to enable a deregistered client, or
/// the database error (nothing is changed then).
pub async fn set_enabled(
    db: &Db,
    client_id: &str,
    enabled: bool,
    change: &Change<'_>,
) -> Result<(), ClientError> {
    let mut tx = db.pool().begin().await?;
    let result = if enabled {
        sqlx::query(
            "UPDATE clients SET disabled_at = NULL, updated_at = $1 \
             WHERE client_id = $2 AND deregistered_at IS NULL",
        )
        .bind(change.now)
        .bind(client_id)
        .execute(&mut *tx)
        .await?
    } else {
        sqlx::query(
            "UPDATE clients SET disabled_at = $1, updated_at = $1, registration_token_hash = NULL \
             WHERE client_id = $2",
        )
        .bind(change.now)
        .bind(client_id)
        .execute(&mut *tx)
        .await?
    };
    if result.rows_affected() == 0 {
        let deregistered = sqlx::query("SELECT 1 FROM clients WHERE client_id = $1")
            .bind(client_id)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        return Err(if deregistered {
            ClientError::Invalid(format!(
                "client {client_id} deregistered itself (RFC 7592): register a new one"
            ))
        } else {
            ClientError::NotFound(client_id.to_owned())
        });
    }
    let action = if enabled {
        "client.enable"
    } else {
        revoke_tokens_in(&mut tx, db, client_id, change).await?;
        "client.disable"
    };
    db.audit_in(
        &mut tx,
        &Entry {
            at: change.now,
            actor: change.actor,
            action,
            subject: client_id,
            detail: "",
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// `NotFound` when an update by `client_id` touched no row.
fn found(result: &sqlx::any::AnyQueryResult, client_id: &str) -> Result<(), ClientError> {
    if result.rows_affected() == 0 {
        return Err(ClientError::NotFound(client_id.to_owned()));
    }
    Ok(())
}

/// Replaces a client's secret, with its audit row, in one transaction; returns the new one
/// (shown once). With `revoke_tokens`, every token issued so far is revoked too (a leaked
/// secret); without, they live out their lifetime (a routine rotation).
///
/// # Errors
/// [`ClientError::NotFound`] or the database error (nothing is changed then).
pub async fn rotate_secret(
    db: &Db,
    client_id: &str,
    revoke_tokens: bool,
    change: &Change<'_>,
) -> Result<String, ClientError> {
    let secret = random_token(32);
    let mut tx = db.pool().begin().await?;
    let result =
        sqlx::query("UPDATE clients SET secret_hash = $1, updated_at = $2 WHERE client_id = $3")
            .bind(hash_secret(&secret))
            .bind(change.now)
            .bind(client_id)
            .execute(&mut *tx)
            .await?;
    found(&result, client_id)?;
    if revoke_tokens {
        revoke_tokens_in(&mut tx, db, client_id, change).await?;
    }
    let detail = if revoke_tokens { "tokens revoked" } else { "" };
    db.audit_in(
        &mut tx,
        &Entry {
            at: change.now,
            actor: change.actor,
            action: "client.rotate_secret",
            subject: client_id,
            detail,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(secret)
}

/// Whether `token` is the registration access token (RFC 7592) of the enabled client
/// `client_id`: unknown, disabled, deregistered, made by ops (no token) and a wrong token are
/// all `false`, alike.
///
/// # Errors
/// The database error.
pub async fn registration_token_matches(
    db: &Db,
    client_id: &str,
    token: &str,
) -> Result<bool, ClientError> {
    let row = sqlx::query(
        "SELECT registration_token_hash FROM clients WHERE client_id = $1 AND disabled_at IS NULL",
    )
    .bind(client_id)
    .fetch_optional(db.pool())
    .await?;
    let stored: Option<Vec<u8>> = match &row {
        Some(row) => row.try_get("registration_token_hash")?,
        None => None,
    };
    // Same work whether or not there is a hash to compare with.
    let stored = stored.unwrap_or_default();
    Ok(hash_secret(token).ct_eq(&stored).into())
}

/// What a client may change of its own registration (RFC 7592 §2.2): the rest (audiences,
/// rate plan, resource server) is ops' to set.
#[derive(Debug, Clone)]
pub struct SelfService {
    /// Human name.
    pub name: String,
    /// Space-separated scopes: the current ones or fewer.
    pub scopes: String,
    /// Public keys (JWKS JSON, EC P-256) for `private_key_jwt`; `None` removes them.
    pub jwks: Option<String>,
    /// The token endpoint authentication method it says it uses.
    pub auth_method: String,
    /// Whether the request carried the client's current secret, which changing `jwks` needs:
    /// a registration access token alone must not let its holder sign in as the client.
    pub secret_confirmed: bool,
}

/// A registered client as RFC 7592 reads it back, and its new registration access token.
#[derive(Debug)]
pub struct Renewed {
    /// The client as it now is.
    pub client: Client,
    /// The authentication method it registered with (or last said it uses).
    pub auth_method: String,
    /// Its new registration access token, shown once.
    pub registration_access_token: String,
}

/// Issues a new registration access token for `client_id` in place of `presented` (which
/// stops working) and, given `update`, replaces what the client may change of its
/// registration, with the audit row, in one transaction. Every RFC 7592 answer carries a
/// token, and only hashes are stored: so each read issues one.
///
/// The current registration is read, and the token swapped, inside the transaction and
/// only while `presented` is still the stored token: of two calls with one token only the
/// first wins, so a stolen old token cannot race the client's own renewal to a new one. A
/// client may narrow its scope, never widen it: what it may ask for was granted by ops
/// (the registration's initial access token).
///
/// # Errors
/// [`ClientError::Invalid`] for bad input, a wider scope, or new keys without the secret;
/// [`ClientError::NotFound`] when `presented` is no longer the token (renewed, disabled or
/// deregistered since); or the database error. Nothing is changed then.
pub async fn renew_registration(
    db: &Db,
    client_id: &str,
    presented: &str,
    update: Option<SelfService>,
    change: &Change<'_>,
) -> Result<Renewed, ClientError> {
    let checked = match &update {
        Some(update) => Some((
            checked_name(&update.name)?,
            checked_scopes(&update.scopes)?,
            checked_jwks(update.jwks.as_deref())?,
        )),
        None => None,
    };
    let token = random_token(32);
    let mut tx = db.pool().begin().await?;
    let current = sqlx::query(
        "SELECT scopes, jwks, token_endpoint_auth_method FROM clients \
         WHERE client_id = $1 AND disabled_at IS NULL AND registration_token_hash = $2",
    )
    .bind(client_id)
    .bind(hash_secret(presented))
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ClientError::NotFound(client_id.to_owned()))?;
    let current_scopes: String = current.try_get("scopes")?;
    let current_jwks: Option<String> = current.try_get("jwks")?;
    let mut auth_method: String = current
        .try_get::<Option<String>, _>("token_endpoint_auth_method")?
        .unwrap_or_else(|| "client_secret_basic".to_owned());
    let result = match (&update, checked) {
        (Some(update), Some((name, scopes, jwks))) => {
            let granted = checked_scopes(&current_scopes)?;
            if !granted.contains_all(&scopes) {
                return Err(ClientError::Invalid(format!(
                    "scope: a client may narrow its scope ({granted}), not widen it"
                )));
            }
            let jwks = jwks.as_ref().map(shared::Jwks::to_json);
            if jwks != current_jwks && !update.secret_confirmed {
                return Err(ClientError::Invalid(
                    "jwks: changing the keys needs the current client_secret".into(),
                ));
            }
            auth_method.clone_from(&update.auth_method);
            sqlx::query(
                "UPDATE clients SET registration_token_hash = $1, name = $2, scopes = $3, jwks = $4, \
                 token_endpoint_auth_method = $5, updated_at = $6 \
                 WHERE client_id = $7 AND disabled_at IS NULL AND registration_token_hash = $8",
            )
            .bind(hash_secret(&token))
            .bind(name)
            .bind(scopes.to_string())
            .bind(jwks)
            .bind(&auth_method)
            .bind(change.now)
            .bind(client_id)
            .bind(hash_secret(presented))
            .execute(&mut *tx)
            .await?
        }
        _ => {
            sqlx::query(
                "UPDATE clients SET registration_token_hash = $1 \
                 WHERE client_id = $2 AND disabled_at IS NULL AND registration_token_hash = $3",
            )
            .bind(hash_secret(&token))
            .bind(client_id)
            .bind(hash_secret(presented))
            .execute(&mut *tx)
            .await?
        }
    };
    found(&result, client_id)?;
    db.audit_in(
        &mut tx,
        &Entry {
            at: change.now,
            actor: change.actor,
            action: if update.is_some() {
                "client.update_registration"
            } else {
                "client.renew_registration_token"
            },
            subject: client_id,
            detail: "",
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Renewed {
        client: show(db, client_id).await?,
        auth_method,
        registration_access_token: token,
    })
}

/// Deregisters a client (RFC 7592 §2.3) while `presented` is still its registration access
/// token, with the audit row, in one transaction: disabled for good (never enabled again),
/// every token it holds revoked (as [`set_enabled`] does), and its credentials gone: the
/// secret replaced by one nobody knows, the keys and the registration access token removed.
///
/// # Errors
/// [`ClientError::NotFound`] (already gone, or `presented` replaced since) or the database
/// error; nothing is changed then.
pub async fn deregister(
    db: &Db,
    client_id: &str,
    presented: &str,
    change: &Change<'_>,
) -> Result<(), ClientError> {
    let mut tx = db.pool().begin().await?;
    let result = sqlx::query(
        "UPDATE clients SET disabled_at = $1, deregistered_at = $1, updated_at = $1, \
         secret_hash = $2, jwks = NULL, registration_token_hash = NULL \
         WHERE client_id = $3 AND disabled_at IS NULL AND registration_token_hash = $4",
    )
    .bind(change.now)
    .bind(hash_secret(&random_token(32)))
    .bind(client_id)
    .bind(hash_secret(presented))
    .execute(&mut *tx)
    .await?;
    found(&result, client_id)?;
    revoke_tokens_in(&mut tx, db, client_id, change).await?;
    db.audit_in(
        &mut tx,
        &Entry {
            at: change.now,
            actor: change.actor,
            action: "client.deregister",
            subject: client_id,
            detail: "",
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Whether a token this issuer signed (already verified) still stands: not revoked (by its
/// `jti`, its key, or its client's revocation), and its client still enabled. Introspection
/// and the admin API ask the same question.
///
/// # Errors
/// The database error, or a stored client that does not read back.
pub async fn token_is_live(db: &Db, verified: &shared::VerifiedToken) -> Result<bool, ClientError> {
    let claims = verified.claims();
    let iat = i64::try_from(claims.iat).unwrap_or(i64::MAX);
    let cutoff = claims
        .client_cutoff
        .map(|cutoff| i64::try_from(cutoff).unwrap_or(i64::MAX));
    let revoked = revocations::is_revoked(
        db,
        &claims.jti,
        verified.kid(),
        &claims.client_id,
        iat,
        cutoff,
    );
    if revoked.await? {
        return Ok(false);
    }
    // A disabled client's tokens are dead too, however long they would have lived.
    match show(db, &claims.client_id).await {
        Ok(owner) => Ok(owner.enabled),
        Err(ClientError::NotFound(_)) => Ok(false),
        Err(err) => Err(err),
    }
}

/// The RFC 7523 client assertion type for `private_key_jwt`.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Largest accepted client assertion, in bytes.
const MAX_ASSERTION_BYTES: usize = 8 * 1024;
/// Longest accepted assertion life (`exp - now`), in seconds: assertions are single-use and
/// short-lived.
const MAX_ASSERTION_LIFETIME_SECS: i64 = 300;

/// The claims RFC 7523 §3 requires of a client assertion (`exp` is jwt-compact's).
#[derive(serde::Deserialize)]
struct AssertionClaims {
    iss: String,
    sub: String,
    aud: serde_json::Value,
    jti: String,
}

/// `private_key_jwt`: the enabled client whose registered key verifies `assertion` (ES256,
/// `kid` in its JWKS), with `iss` = `sub` = its id, an `aud` among `audiences` (the token
/// endpoint or issuer URL), a near `exp`, and a `jti` never seen before. `None` for any
/// failure, indistinguishably.
///
/// Parsing and signature checking use jwt-compact: a client's assertion is a plain JWT, not
/// one of our access tokens, so the strict access-token profile in `shared` does not apply.
///
/// # Errors
/// The database error.
pub async fn authenticate_assertion(
    db: &Db,
    assertion: &str,
    audiences: &[String],
    now: i64,
) -> Result<Option<Client>, ClientError> {
    use jwt_compact::{alg::Es256, AlgorithmExt, UntrustedToken};

    if assertion.len() > MAX_ASSERTION_BYTES {
        return Ok(None);
    }
    let Ok(untrusted) = UntrustedToken::new(assertion) else {
        return Ok(None);
    };
    if untrusted.algorithm() != "ES256" {
        return Ok(None);
    }
    let Ok(unverified) = untrusted.deserialize_claims_unchecked::<AssertionClaims>() else {
        return Ok(None);
    };
    let Some((client, _)) = find(db, &unverified.custom.sub).await? else {
        return Ok(None);
    };
    let key = client
        .jwks
        .as_ref()
        .zip(untrusted.header().key_id.as_deref())
        .and_then(|(jwks, kid)| jwks.find(kid));
    let Some(key) = key.filter(|_| client.enabled) else {
        return Ok(None);
    };
    let Ok(token) = Es256
        .validator::<AssertionClaims>(key.verifying_key())
        .validate(&untrusted)
    else {
        return Ok(None);
    };
    let claims = token.claims();
    let custom = &claims.custom;
    let audience_ok = match &custom.aud {
        serde_json::Value::String(aud) => audiences.contains(aud),
        serde_json::Value::Array(items) => items
            .iter()
            .filter_map(serde_json::Value::as_str)
            .any(|aud| audiences.iter().any(|a| a == aud)),
        _ => false,
    };
    let exp = claims.expiration.map(|exp| exp.timestamp());
    let fresh = exp.is_some_and(|exp| exp > now && exp - now <= MAX_ASSERTION_LIFETIME_SECS);
    let ids_ok = custom.iss == client.client_id && custom.sub == client.client_id;
    let jti_ok = !custom.jti.is_empty() && custom.jti.len() <= 256;
    if !(audience_ok && fresh && ids_ok && jti_ok) {
        return Ok(None);
    }
    // Single use: a replayed assertion finds its jti taken.
    sqlx::query("DELETE FROM client_assertion_jtis WHERE client_id = $1 AND expires_at < $2")
        .bind(&client.client_id)
        .bind(now)
        .execute(db.pool())
        .await?;
    let inserted = sqlx::query(
        "INSERT INTO client_assertion_jtis (client_id, jti, expires_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(&client.client_id)
    .bind(&custom.jti)
    .bind(exp.unwrap_or(now))
    .execute(db.pool())
    .await?;
    Ok((inserted.rows_affected() == 1).then_some(client))
}
