//! The `issuer` binary: `serve`, `check-config`, `migrate`, and the admin commands for
//! clients and keys, all on the configured database.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use issuer::audit::{AuditError, Entry};
use issuer::clients::{self, NewClient};
use issuer::db::{unix_now, Db};
use issuer::keys::{self, Kek, KeyEvent};
use issuer::Config;

#[derive(Parser)]
#[command(
    name = "issuer",
    version,
    about = "Edgeward OAuth 2 authorization server"
)]
struct Cli {
    /// TOML configuration file; `ISSUER_*` environment variables override it.
    #[arg(long, global = true, env = "ISSUER_CONFIG")]
    config: Option<PathBuf>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default set-up needs no configuration).
    Serve,
    /// Validate the configuration and exit.
    CheckConfig,
    /// Apply database migrations and exit.
    Migrate,
    /// Write a consistent online copy of the SQLite database to FILE.
    Backup {
        /// Where to write the copy (must not exist).
        file: PathBuf,
    },
    /// Manage OAuth clients.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Manage signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Check or export the audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Verify an access token against the published keys, as an edge would; prints its
    /// claims or the rejection.
    VerifyToken {
        /// The compact token.
        token: String,
        /// The audience the token must carry.
        #[arg(long)]
        audience: String,
    },
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Create a client; prints its id and secret (shown once).
    Create {
        /// Human name.
        #[arg(long)]
        name: String,
        /// Space-separated scopes it may request.
        #[arg(long, default_value = "")]
        scope: String,
        /// Audience it may request (repeatable; the first is the default).
        #[arg(long = "audience", default_value = "edgeward-api")]
        audiences: Vec<String>,
        /// Rate, e.g. `1000/60s`.
        #[arg(long)]
        rate: Option<String>,
        /// Burst for `--rate` (default: the rate's limit).
        #[arg(long, requires = "rate")]
        burst: Option<u32>,
        /// File with the client's public keys (JWKS, EC P-256) for `private_key_jwt`.
        #[arg(long)]
        jwks: Option<PathBuf>,
        /// A resource server: may introspect tokens addressed to its audiences.
        #[arg(long)]
        resource_server: bool,
        /// An admin client: its tokens are for the admin API (audience `admin_audience`), and
        /// `--scope` names its powers: admin:clients, admin:keys, admin:audit. How the first
        /// admin client comes to be; the API itself never makes one.
        #[arg(long, conflicts_with = "resource_server")]
        admin: bool,
        /// Tokens only with a DPoP proof (RFC 9449): every token it gets is bound to its key.
        #[arg(long)]
        require_dpop: bool,
    },
    /// List clients.
    List,
    /// Show one client.
    Show { client_id: String },
    /// Stop a client from getting tokens, and revoke the tokens it holds.
    Disable { client_id: String },
    /// Allow a disabled client again.
    Enable { client_id: String },
    /// Tokens only with a DPoP proof (RFC 9449), or (`--off`) bearer tokens again. Tokens
    /// it holds live out their lifetime (`rotate-secret --revoke-tokens` ends them).
    RequireDpop {
        client_id: String,
        /// Allow bearer tokens again.
        #[arg(long)]
        off: bool,
    },
    /// Replace a client's secret; prints the new one (shown once).
    RotateSecret {
        client_id: String,
        /// Also revoke every token issued so far (the old secret leaked); without it they
        /// live out their lifetime.
        #[arg(long)]
        revoke_tokens: bool,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the audit trail's HMAC chain: exit 0 with its head (keep it elsewhere), or
    /// exit 1 naming the first row that was edited, deleted or moved.
    Verify,
    /// Write the audit rows, MACs included, as JSON lines (for a SIEM).
    Export {
        /// Only rows with an id above this one.
        #[arg(long, default_value_t = 0)]
        after: i64,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// List signing keys and their states.
    List,
    /// Start a rotation now: a new key is published, then signs after the publish lead.
    Rotate,
    /// Emergency: withdraw a key from the JWKS at once and put it on the revocation feed.
    Revoke {
        /// The key's id, as `keys list` prints it. A kid is base64url and may start with
        /// `-`: it is read as the kid, not as an option.
        #[arg(allow_hyphen_values = true)]
        kid: String,
    },
    /// KEK rotation: seal every stored key under ISSUER_KEK (keys sealed under
    /// ISSUER_PREVIOUS_KEK are opened with it). Run once every instance has both.
    Rewrap,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("issuer: {err}");
            return ExitCode::from(2);
        }
    };
    // The secrets a setting depends on, checked as the start checks them.
    if matches!(cli.command, Command::CheckConfig | Command::Serve) {
        if let Err(err) = issuer::feed_tokens::FeedTokens::for_config(&config) {
            eprintln!("issuer: {err}");
            return ExitCode::from(2);
        }
    }
    let set_log_level = init_tracing(&config);
    match run(cli, config, set_log_level).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("issuer: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Sets the log filter while running (a reload of `log_level`).
type SetLogLevel = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// JSON or pretty logs on stderr, filtered by `RUST_LOG` if set, else by `log_level`; returns
/// how to change `log_level` later (`None` while `RUST_LOG` rules).
fn init_tracing(config: &Config) -> Option<SetLogLevel> {
    use tracing_subscriber::EnvFilter;
    let from_env = EnvFilter::try_from_default_env().ok();
    let fixed = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| {
        EnvFilter::try_new(&config.log_level).unwrap_or_else(|_| EnvFilter::new("info"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // The two formats are two subscriber types; each handle is boxed to one setter.
    let set: SetLogLevel = if config.log_format == "json" {
        let builder = builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_filter_reloading();
        let handle = builder.reload_handle();
        builder.init();
        Box::new(move |level| {
            let filter = EnvFilter::try_new(level).map_err(|err| err.to_string())?;
            handle.reload(filter).map_err(|err| err.to_string())
        })
    } else {
        let builder = builder.with_filter_reloading();
        let handle = builder.reload_handle();
        builder.init();
        Box::new(move |level| {
            let filter = EnvFilter::try_new(level).map_err(|err| err.to_string())?;
            handle.reload(filter).map_err(|err| err.to_string())
        })
    };
    (!fixed).then_some(set)
}

type CliResult = Result<(), Box<dyn std::error::Error>>;

async fn run(cli: Cli, config: Config, set_log_level: Option<SetLogLevel>) -> CliResult {
    match cli.command {
        Command::CheckConfig => {
            println!(
                "{}",
                if cli.json {
                    r#"{"valid":true}"#.to_owned()
                } else {
                    "configuration is valid".to_owned()
                }
            );
            Ok(())
        }
        Command::Serve => serve(config, cli.config, set_log_level).await,
        Command::Migrate => {
            let db = Db::connect(&config).await?;
            db.migrate().await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Backup { file } => {
            let db = open_db(&config).await?;
            db.backup(&file).await?;
            db.audit(&Entry {
                at: unix_now(),
                actor: "cli",
                action: "database.backup",
                subject: &file.display().to_string(),
                detail: "",
            })
            .await?;
            println!("backup written to {}", file.display());
            Ok(())
        }
        Command::VerifyToken { token, audience } => {
            let db = open_db(&config).await?;
            let (kek, _) = Kek::load(&config)?;
            let keys = keys::SigningKeys::load(&db, &kek).await?;
            let validator = shared::Validator::new(shared::Validation::new(
                config.issuer_url.clone(),
                audience,
            ));
            let now = shared::UnixTime::from_secs(u64::try_from(unix_now())?);
            match validator.verify(token.trim(), &keys.jwks, now) {
                Ok(verified) => print(
                    &serde_json::json!({ "valid": true, "kid": verified.kid(), "claims": verified.claims() }),
                ),
                Err(rejection) => {
                    print(
                        &serde_json::json!({ "valid": false, "reason": rejection.reason(), "error": rejection.to_string() }),
                    )?;
                    Err("token rejected".into())
                }
            }
        }
        Command::Client(command) => client(command, &config, cli.json).await,
        Command::Keys(command) => keys_command(command, &config, cli.json).await,
        Command::Audit(command) => audit_command(command, &config).await,
    }
}

async fn audit_command(command: AuditCommand, config: &Config) -> CliResult {
    let db = open_db(config).await?;
    match command {
        AuditCommand::Verify => match db.verify_audit().await {
            Ok(intact) => print(&serde_json::json!({ "intact": true, "chain": intact })),
            Err(err @ (AuditError::Broken { id } | AuditError::Unsealed { id })) => {
                print(
                    &serde_json::json!({ "intact": false, "first_bad_row": id, "error": err.to_string() }),
                )?;
                Err(err.into())
            }
            Err(err) => Err(err.into()),
        },
        AuditCommand::Export { after } => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            issuer::audit::export(db.pool(), after, &mut out).await?;
            std::io::Write::flush(&mut out)?;
            Ok(())
        }
    }
}

async fn serve(
    config: Config,
    file: Option<PathBuf>,
    set_log_level: Option<SetLogLevel>,
) -> CliResult {
    let addr = config.listen;
    // Listening for SIGHUP before the (slow) start: its default action would end the process.
    #[cfg(unix)]
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    let state = issuer::open(config).await?;
    #[cfg(unix)]
    match hangups {
        Ok(hangups) => {
            tokio::spawn(reload_on_hangup(
                state.clone(),
                file,
                set_log_level,
                hangups,
            ));
        }
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for SIGHUP: configuration reload is off")
        }
    }
    #[cfg(not(unix))]
    let _ = (file, set_log_level);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| issuer::StartError::Listen { addr, source })?;
    let tls = state.config().tls_cert_file.is_some();
    // The bound address, so `listen = "127.0.0.1:0"` (tests, scripts) can learn the port.
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(addr = %bound, issuer = %state.config().issuer_url, tls, "issuer listening");
    // One signal stops both listeners.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    };
    let metrics = match state.config().metrics_listen {
        Some(metrics_addr) => {
            let metrics_listener =
                tokio::net::TcpListener::bind(metrics_addr)
                    .await
                    .map_err(|source| issuer::StartError::Listen {
                        addr: metrics_addr,
                        source,
                    })?;
            let bound = metrics_listener.local_addr().unwrap_or(metrics_addr);
            tracing::info!(addr = %bound, "metrics listening");
            let mut stopped = stopped.clone();
            let until = async move {
                let _ = stopped.wait_for(|stopped| *stopped).await;
            };
            Some(tokio::spawn(issuer::serve_metrics(
                metrics_listener,
                state.clone(),
                until,
            )))
        }
        None => None,
    };
    if tls {
        let listener = listener
            .into_std()
            .map_err(|source| issuer::StartError::Listen { addr, source })?;
        issuer::serve_tls(listener, state, shutdown).await?;
    } else {
        issuer::serve(listener, state, shutdown).await?;
    }
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    tracing::info!("issuer stopped");
    Ok(())
}

/// On each `SIGHUP`: reads the configuration again (the same file and environment) and
/// applies what may change while running (`Config::reload`). A file that does not load or
/// validate changes nothing; a setting that cannot change keeps its value, with a log line
/// naming it. Every reload is logged, counted (`issuer_config_reloads_total`) and audited.
#[cfg(unix)]
async fn reload_on_hangup(
    state: issuer::AppState,
    file: Option<PathBuf>,
    set_log_level: Option<SetLogLevel>,
    mut hangups: tokio::signal::unix::Signal,
) {
    use issuer::metrics::ReloadLabels;
    while hangups.recv().await.is_some() {
        let source = file.as_deref().map_or_else(
            || "environment".to_owned(),
            |file| file.display().to_string(),
        );
        let reloaded = Config::load(file.as_deref()).and_then(|new| state.reload(new));
        let (outcome, detail) = match &reloaded {
            Ok(reload) => {
                for setting in &reload.refused {
                    tracing::warn!(
                        setting,
                        "configuration reload: `{setting}` cannot change while running; the old value is kept (restart to apply)"
                    );
                }
                if reload.changed.contains(&"log_level") {
                    match &set_log_level {
                        Some(set) => {
                            if let Err(err) = set(&reload.config.log_level) {
                                tracing::warn!(error = %err, "configuration reload: log_level not applied");
                            }
                        }
                        None => tracing::warn!(
                            "configuration reload: RUST_LOG is set and wins over log_level"
                        ),
                    }
                }
                tracing::info!(
                    file = %source,
                    changed = ?reload.changed,
                    refused = ?reload.refused,
                    "configuration reloaded"
                );
                (
                    "applied",
                    format!(
                        "changed: {}; refused: {}",
                        reload.changed.join(" "),
                        reload.refused.join(" ")
                    ),
                )
            }
            Err(err) => {
                tracing::error!(file = %source, error = %err, "configuration not reloaded: nothing changed");
                ("invalid", err.to_string())
            }
        };
        state
            .metrics
            .config_reloads
            .get_or_create(&ReloadLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
        let entry = Entry {
            at: unix_now(),
            actor: "sighup",
            action: if outcome == "applied" {
                "config.reload"
            } else {
                "config.reload_failed"
            },
            subject: &source,
            detail: &detail,
        };
        if let Err(err) = state.db.audit(&entry).await {
            tracing::warn!(error = %err, "configuration reload: the audit row was not written");
        }
    }
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown signal received; draining");
}

async fn open_db(config: &Config) -> Result<Db, Box<dyn std::error::Error>> {
    let db = Db::connect(config).await?;
    db.migrate().await?;
    Ok(db)
}

fn print<T: serde::Serialize>(value: &T) -> CliResult {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn client(command: ClientCommand, config: &Config, json: bool) -> CliResult {
    let db = open_db(config).await?;
    let now = unix_now();
    let change = clients::Change {
        actor: "cli",
        now,
        token_lifetime_secs: config.token_lifetime_secs,
    };
    match command {
        ClientCommand::Create {
            name,
            scope,
            audiences,
            rate,
            burst,
            jwks,
            resource_server,
            admin,
            require_dpop,
        } => {
            let audiences = if admin {
                let powers: Vec<&str> = scope.split_whitespace().collect();
                if powers.is_empty() || powers.iter().any(|p| !issuer::Power::SCOPES.contains(p)) {
                    return Err(format!(
                        "--admin needs --scope with one or more of: {}",
                        issuer::Power::SCOPES.join(" ")
                    )
                    .into());
                }
                vec![config.admin_audience()]
            } else {
                audiences
            };
            let jwks = jwks.map(std::fs::read_to_string).transpose()?;
            let rate_plan = rate.map(|rate| match burst {
                Some(burst) => format!("{rate};burst={burst}"),
                None => rate,
            });
            let created = clients::create(
                &db,
                NewClient {
                    name,
                    scopes: scope,
                    audiences,
                    rate_plan,
                    jwks,
                    resource_server,
                    require_dpop,
                },
                "cli",
                now,
            )
            .await?;
            print(&created)
        }
        ClientCommand::List => {
            let all = clients::list(&db).await?;
            if json {
                return print(&all);
            }
            for c in all {
                let state = if c.enabled { "enabled" } else { "disabled" };
                println!(
                    "{}\t{}\t{}\t[{}]\t{}",
                    c.client_id,
                    state,
                    c.name,
                    c.scopes,
                    c.audiences.join(" ")
                );
            }
            Ok(())
        }
        ClientCommand::Show { client_id } => print(&clients::show(&db, &client_id).await?),
        ClientCommand::Disable { client_id } => {
            clients::set_enabled(&db, &client_id, false, &change).await?;
            if json {
                return print(
                    &serde_json::json!({ "client_id": client_id, "enabled": false, "tokens_revoked": true }),
                );
            }
            println!("{client_id} disabled; its tokens are revoked");
            Ok(())
        }
        ClientCommand::Enable { client_id } => {
            clients::set_enabled(&db, &client_id, true, &change).await?;
            if json {
                return print(&serde_json::json!({ "client_id": client_id, "enabled": true }));
            }
            println!("{client_id} enabled");
            Ok(())
        }
        ClientCommand::RequireDpop { client_id, off } => {
            clients::set_require_dpop(&db, &client_id, !off, &change).await?;
            if json {
                return print(&serde_json::json!({ "client_id": client_id, "require_dpop": !off }));
            }
            if off {
                println!("{client_id} may get bearer tokens again");
            } else {
                println!("{client_id} gets tokens only with a DPoP proof");
            }
            Ok(())
        }
        ClientCommand::RotateSecret {
            client_id,
            revoke_tokens,
        } => {
            let secret = clients::rotate_secret(&db, &client_id, revoke_tokens, &change).await?;
            print(
                &serde_json::json!({ "client_id": client_id, "client_secret": secret, "tokens_revoked": revoke_tokens }),
            )
        }
    }
}

async fn keys_command(command: KeysCommand, config: &Config, json: bool) -> CliResult {
    let db = open_db(config).await?;
    let (kek, _) = Kek::load(config)?;
    let now = unix_now();
    match command {
        KeysCommand::List => {
            let all = keys::list(&db).await?;
            if json {
                return print(&all);
            }
            for k in all {
                println!(
                    "{}\t{:?}\tcreated {}\tactivates {}",
                    k.kid, k.state, k.created_at, k.activate_at
                );
            }
            Ok(())
        }
        KeysCommand::Rotate => match keys::rotate(&db, &kek, config, "cli", now).await? {
            KeyEvent::Scheduled { kid, signs_from } => print(
                &serde_json::json!({ "kid": kid, "state": "pending", "signs_from": signs_from }),
            ),
            other => Err(format!("unexpected key event: {other}").into()),
        },
        KeysCommand::Rewrap => {
            let count = keys::rewrap(&db, &kek).await?;
            db.audit(&Entry {
                at: now,
                actor: "cli",
                action: "key.rewrap",
                subject: "signing_keys",
                detail: &count.to_string(),
            })
            .await?;
            print(&serde_json::json!({ "rewrapped": count }))
        }
        KeysCommand::Revoke { kid } => {
            match keys::revoke(&db, &kek, config, &kid, "cli", now).await? {
                KeyEvent::Revoked { kid, successor } => {
                    print(&serde_json::json!({ "revoked": kid, "now_signing": successor }))
                }
                other => Err(format!("unexpected key event: {other}").into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kid is base64url: one in 64 starts with `-`, and `keys revoke` must still take it.
    #[test]
    fn keys_revoke_takes_a_kid_that_starts_with_a_dash() {
        let cli = Cli::try_parse_from(["issuer", "keys", "revoke", "-G3xkYb0"]);
        assert!(
            matches!(
                cli.map(|cli| cli.command),
                Ok(Command::Keys(KeysCommand::Revoke { ref kid })) if kid == "-G3xkYb0"
            ),
            "a kid starting with '-' was read as an option"
        );
    }
}
