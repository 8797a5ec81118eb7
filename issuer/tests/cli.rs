//! The real `issuer` binary: config errors name the setting, the admin commands work on the
//! database, and `serve` runs, answers, and stops cleanly on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_issuer");

fn issuer(dir: &std::path::Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .current_dir(dir)
        .env_remove("ISSUER_KEK")
        .env("ISSUER_LOG_FORMAT", "pretty");
    command
}

#[test]
fn bad_configuration_stops_start_up_naming_the_setting() {
    let dir = support::temp_dir();
    let output = issuer(&dir).arg("check-config").output().unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "configuration is valid"
    );

    let output = issuer(&dir)
        .env("ISSUER_TOKEN_LIFETIME_SECS", "5")
        .arg("check-config")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("token_lifetime_secs"));

    for (name, bad) in [
        ("ISSUER_REDIS_LEASE_TTL_MS", "10001"),
        ("ISSUER_REDIS_LEASE_MAX_PERMITS", "0"),
    ] {
        let output = issuer(&dir)
            .env(name, bad)
            .arg("check-config")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{name}={bad}");
        let setting = name.trim_start_matches("ISSUER_").to_lowercase();
        assert!(String::from_utf8_lossy(&output.stderr).contains(&setting));
    }

    // The feed tokens a setting needs, or that are malformed, stop it too.
    for (env, setting) in [
        (
            [
                ("ISSUER_FEED_REQUIRES_TOKEN", "true"),
                ("ISSUER_FEED_TOKENS", ""),
            ],
            "feed_requires_token",
        ),
        (
            [
                ("ISSUER_FEED_REQUIRES_TOKEN", "false"),
                ("ISSUER_FEED_TOKENS", "short"),
            ],
            "ISSUER_FEED_TOKENS",
        ),
    ] {
        let output = issuer(&dir).envs(env).arg("check-config").output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{env:?}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(setting),
            "{env:?}"
        );
    }

    let file = dir.join("issuer.toml");
    std::fs::write(&file, "listen = \"not an address\"\n").unwrap();
    let output = issuer(&dir)
        .args(["--config", file.to_str().unwrap(), "serve"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("listen"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    std::fs::write(&file, "tokn_lifetime_secs = 60\n").unwrap();
    let output = issuer(&dir)
        .args(["--config", file.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(2),
        "unknown settings are refused"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("tokn_lifetime_secs"));

    let output = issuer(&dir)
        .args(["--config", "/nonexistent.toml", "check-config"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

/// One HTTP/1.1 request over a fresh connection; returns status and body.
fn http(port: u16, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).unwrap().parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// `POST /oauth2/token` with the form body `form` to the server on `port`.
fn post_token(port: u16, form: &str) -> (u16, String) {
    http(
        port,
        &format!(
            "POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
            form.len()
        ),
    )
}

/// `issuer client create --name NAME --scope read` in `dir`; its client-credentials form.
fn client_form(dir: &std::path::Path, name: &str) -> String {
    let output = issuer(dir)
        .args(["client", "create", "--name", name, "--scope", "read"])
        .output()
        .unwrap();
    let created: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    format!(
        "grant_type=client_credentials&client_id={}&client_secret={}",
        created["client_id"].as_str().unwrap(),
        created["client_secret"].as_str().unwrap()
    )
}

/// `issuer serve` in `dir` on a port the OS picks (`127.0.0.1:0`, so no race with other
/// tests), with extra settings from `env`; returns the child and the bound port, read from
/// its "issuer listening" log line.
fn spawn_serve(
    dir: &std::path::Path,
    env: &[(&str, &std::ffi::OsStr)],
) -> (std::process::Child, u16, std::path::PathBuf) {
    // Several servers may share `dir` (and its database): each has its own log.
    static SERVERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = SERVERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let log = dir.join(format!("serve-{n}.log"));
    let mut command = issuer(dir);
    command
        .env("ISSUER_LISTEN", "127.0.0.1:0")
        .env("ISSUER_LOG_FORMAT", "json")
        .env("ISSUER_ISSUER_URL", ISSUER_URL)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        // The bound address from the JSON log event `issuer listening`.
        let port = text
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|event| event["message"] == "issuer listening")
            .and_then(|event| event["addr"].as_str()?.parse::<std::net::SocketAddr>().ok())
            .map(|addr| addr.port());
        if let Some(port) = port {
            return (child, port, log);
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "issuer exited:\n{text}"
        );
        assert!(Instant::now() < deadline, "issuer did not start:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `iss` of the test servers (it need not be their address).
const ISSUER_URL: &str = "http://issuer.test";

fn get(port: u16, path: &str) -> (u16, String) {
    http(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )
}

#[test]
fn serve_issues_tokens_to_a_cli_created_client_and_stops_on_sigterm() {
    let dir = support::temp_dir();
    let (mut server, port, log) = spawn_serve(&dir, &[]);
    assert_eq!(get(port, "/readyz").0, 200);

    let output = issuer(&dir)
        .args([
            "client",
            "create",
            "--name",
            "cli test",
            "--scope",
            "read",
            "--audience",
            "https://api.test",
            "--rate",
            "10/s",
            "--burst",
            "5",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let (id, secret) = (
        created["client_id"].as_str().unwrap(),
        created["client_secret"].as_str().unwrap(),
    );
    assert_eq!(created["rate_plan"], "10/1s;burst=5");

    let listed = issuer(&dir)
        .args(["--json", "client", "list"])
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed[0]["client_id"], id);
    assert!(
        listed[0].get("client_secret").is_none(),
        "secrets are shown once"
    );

    let form = format!("grant_type=client_credentials&client_id={id}&client_secret={secret}");
    let (status, body) = post_token(port, &form);
    assert_eq!(status, 200, "{body}");
    let token: serde_json::Value = serde_json::from_str(&body).unwrap();
    let (_, jwks) = get(port, "/.well-known/jwks.json");
    let jwks = shared::Jwks::parse(&jwks).unwrap();
    let validator = shared::Validator::new(shared::Validation::new(ISSUER_URL, "https://api.test"));
    let now = shared::UnixTime::from_secs(issuer::db::unix_now() as u64);
    let verified = validator
        .verify(token["access_token"].as_str().unwrap(), &jwks, now)
        .unwrap();
    assert_eq!(verified.claims().client_id, id);

    let keys = issuer(&dir)
        .args(["--json", "keys", "list"])
        .output()
        .unwrap();
    let keys: serde_json::Value = serde_json::from_slice(&keys.stdout).unwrap();
    assert_eq!(keys[0]["state"], "active");

    // SIGTERM: drain and exit 0; no secret in any log line.
    let pid = server.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = server.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(logs.contains("draining"), "{logs}");
    assert!(!logs.contains(secret) && !logs.contains(token["access_token"].as_str().unwrap()));
}

#[test]
fn serves_https_with_the_configured_certificate() {
    let dir = support::temp_dir();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();

    // Half a TLS configuration is refused at start-up, naming the missing setting.
    let output = issuer(&dir)
        .env("ISSUER_TLS_CERT_FILE", &cert)
        .arg("check-config")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("tls_key_file"));

    let tls = [
        ("ISSUER_TLS_CERT_FILE", cert.as_os_str()),
        ("ISSUER_TLS_KEY_FILE", key.as_os_str()),
    ];
    let (mut server, port, _) = spawn_serve(&dir, &tls);
    let url = format!("https://localhost:{port}/.well-known/jwks.json");
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let output = Command::new("curl")
            .args([
                "-sf",
                "--cacert",
                cert.to_str().unwrap(),
                "--resolve",
                &format!("localhost:{port}:127.0.0.1"),
                &url,
            ])
            .output()
            .unwrap();
        if output.status.success() {
            break String::from_utf8(output.stdout).unwrap();
        }
        assert!(Instant::now() < deadline, "no HTTPS answer");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!shared::Jwks::parse(&body).unwrap().is_empty());
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = Command::new("curl")
        .args(["-sf", &format!("http://127.0.0.1:{port}/healthz")])
        .output()
        .unwrap();
    assert!(!plain.status.success());
    assert!(Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap()
        .success());
    assert!(server.wait().unwrap().success());
}

/// `TEST_REDIS_URL`, or the machine's Redis (tests/setup.sh finds or starts it).
fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into())
}

/// Two real issuer processes serving from `dir` (one database) with their limits in one
/// Redis, and `client_plan` per client.
fn two_on_one_redis(
    dir: &std::path::Path,
    client_plan: &str,
) -> [(std::process::Child, u16, std::path::PathBuf); 2] {
    let redis = redis_url();
    let settings = limits_in_redis(
        &redis,
        &[("ISSUER_TOKEN_RATE_PER_CLIENT", client_plan.as_ref())],
    );
    [(); 2].map(|()| spawn_serve(dir, &settings))
}

/// The settings of an issuer whose limits are in the Redis at `url`, then `extra`.
fn limits_in_redis<'a>(
    url: &'a str,
    extra: &[(&'a str, &'a std::ffi::OsStr)],
) -> Vec<(&'a str, &'a std::ffi::OsStr)> {
    let mut settings = vec![
        ("ISSUER_LIMITS_BACKEND", "redis".as_ref()),
        ("ISSUER_REDIS_URL", url.as_ref()),
    ];
    settings.extend_from_slice(extra);
    settings
}

/// A counter's value in the `/metrics` of the server on `port`.
fn metric(port: u16, name: &str) -> Option<u64> {
    let (_, metrics) = get(port, "/metrics");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|count| count.trim().parse().ok())
}

/// Issue 32: two real issuer processes on one database and one Redis, with
/// `limits_backend = "redis"`, allow a client its plan once between them, not once each.
#[test]
fn two_instances_on_one_redis_allow_a_client_its_plan_once_not_twice() {
    let dir = support::temp_dir();
    let [(mut first, first_port, _), (mut second, second_port, second_log)] =
        two_on_one_redis(&dir, "6/60s;burst=6");
    let form = client_form(&dir, "shared limit");
    let token = |port: u16| post_token(port, &form).0;
    // Alternating between the instances: the plan's six, then refusals from both.
    let statuses: Vec<u16> = (0..10)
        .map(|n| token(if n % 2 == 0 { first_port } else { second_port }))
        .collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 429, 429, 429, 429]);
    let (_, metrics) = get(second_port, "/metrics");
    assert!(
        metrics.contains("issuer_limits_redis_fallbacks_total 0"),
        "no decision fell back to memory:\n{}\n{}",
        metrics,
        std::fs::read_to_string(&second_log).unwrap_or_default()
    );
    for server in [&mut first, &mut second] {
        let _ = server.kill();
        let _ = server.wait();
    }
}

/// The same with leases (`redis_lease_ttl_ms`, on by default) in play: two real instances
/// on one Redis, each spending permits Redis charged ahead, still admit a client its burst
/// once between them (a lease holds at most an eighth of it, so up to one lease's worth per
/// instance may be left unspent when its life ends: never more than the burst).
#[test]
fn two_leasing_instances_on_one_redis_admit_the_burst_once() {
    let dir = support::temp_dir();
    // 40 at once, then one every 90 s: nothing comes back within the test.
    let [(mut first, first_port, _), (mut second, second_port, _)] =
        two_on_one_redis(&dir, "40/3600s;burst=40");
    let form = client_form(&dir, "leased limit");
    let admitted = (0..80)
        .filter(|n| post_token(if n % 2 == 0 { first_port } else { second_port }, &form).0 == 200)
        .count();
    let leased: u64 = [first_port, second_port]
        .into_iter()
        .filter_map(|port| metric(port, "issuer_limits_redis_leased_total"))
        .sum();
    assert!((30..=40).contains(&admitted), "{admitted} admitted");
    assert!(leased > 0, "some decisions came from leases");
    for server in [&mut first, &mut second] {
        let _ = server.kill();
        let _ = server.wait();
    }
}

/// With Redis unreachable the limits fail open to each instance's memory: tokens are still
/// issued (and limited per instance), each decision counted as a fallback and logged.
#[test]
fn with_redis_down_the_limits_fall_back_to_the_instance_counted_and_logged() {
    let dir = support::temp_dir();
    // A port nothing listens on.
    let dead = format!("redis://127.0.0.1:{}", {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    });
    let settings = limits_in_redis(
        &dead,
        &[("ISSUER_TOKEN_RATE_PER_CLIENT", "2/60s;burst=2".as_ref())],
    );
    let (mut server, port, log) = spawn_serve(&dir, &settings);
    let form = client_form(&dir, "fallback");
    let statuses: Vec<u16> = (0..3).map(|_| post_token(port, &form).0).collect();
    assert_eq!(statuses, [200, 200, 429]);
    // Each token request is one decision (its address, then its client).
    assert_eq!(metric(port, "issuer_limits_redis_fallbacks_total"), Some(3));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("redis limits unavailable"), "{text}");
    let _ = server.kill();
    let _ = server.wait();
}

/// A Redis that answers, but not as the limits need, stops the start with an error that
/// says what to fix: here a real Redis user whose ACL has no scripts, and a wrong password.
/// (A Redis that does not answer at all does not: the test above.)
#[test]
fn a_redis_that_refuses_the_limits_script_stops_start_up() {
    let dir = support::temp_dir();
    // No scripts, and nothing dangerous.
    let user = AclUser::new(&["+@all", "-@scripting", "-@dangerous"]);
    for (password, says) in [
        (user.password.as_str(), "NOPERM"),
        ("wrong", "authentication failed"),
    ] {
        let log = dir.join(format!("refused-{says}.log"));
        let mut server = issuer(&dir)
            .env("ISSUER_LISTEN", "127.0.0.1:0")
            .env("ISSUER_LIMITS_BACKEND", "redis")
            .env("ISSUER_REDIS_URL", user.url(password))
            // Room for a slow machine, yet shorter than the backoff before a retry of a
            // refused connection (a retry would hide Redis's answer behind a timeout, and
            // the issuer would start).
            .env("ISSUER_REDIS_TIMEOUT_MS", "400")
            .env("ISSUER_REDIS_LEASE_TTL_MS", "800")
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        // One that starts after all serves until stopped: it is stopped, and fails here.
        let deadline = Instant::now() + Duration::from_secs(30);
        let exited = loop {
            if let Some(status) = server.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = server.kill();
                let _ = server.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let stderr = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            exited.is_some_and(|status| !status.success()),
            "{says}: {stderr}"
        );
        assert!(
            stderr.contains("Redis refused the limits script") && stderr.contains(says),
            "{says}: {stderr}"
        );
    }
}

/// The commands the start-up error names are all the limits need: a user allowed those alone
/// on the limits' keys starts, and its limits are in Redis from the first token.
#[test]
fn a_redis_user_allowed_the_named_commands_alone_serves_the_limits() {
    let dir = support::temp_dir();
    let user = AclUser::new(&LIMITS_COMMANDS);
    let url = user.url(&user.password);
    let settings = limits_in_redis(
        &url,
        &[
            // Room for a slow machine: a start-up check with no answer in time would pass.
            ("ISSUER_REDIS_TIMEOUT_MS", "1000".as_ref()),
            ("ISSUER_REDIS_LEASE_TTL_MS", "2000".as_ref()),
        ],
    );
    let (mut server, port, log) = spawn_serve(&dir, &settings);
    let form = client_form(&dir, "narrow user");
    assert_eq!(post_token(port, &form).0, 200);
    assert_eq!(metric(port, "issuer_limits_redis_fallbacks_total"), Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("redis limits unavailable"), "{text}");
    let _ = server.kill();
    let _ = server.wait();
}

/// What the start-up error says the issuer's Redis user needs (on the limits' keys).
const LIMITS_COMMANDS: [&str; 4] = ["+evalsha", "+script|load", "+mget", "+set"];

/// A Redis ACL user of its own per test run (tests run in parallel and again) on the limits'
/// keys, with a password of its own; deleted when dropped, a failed assertion included.
struct AclUser {
    name: String,
    password: String,
}

impl AclUser {
    /// A user allowed `rules` (commands) on `edgeward:issuer:limit:*`.
    fn new(rules: &[&str]) -> Self {
        let name = support::unique("edgeward-test");
        let password = support::unique("password");
        let secret = format!(">{password}");
        let mut args = vec!["SETUSER", &name, "on", &secret, "~edgeward:issuer:limit:*"];
        args.extend_from_slice(rules);
        Self::admin("ACL", &args).unwrap();
        Self { name, password }
    }

    /// The test's Redis as this user, with `password`.
    fn url(&self, password: &str) -> String {
        let address = redis::Client::open(redis_url().as_str())
            .unwrap()
            .get_connection_info()
            .addr
            .to_string();
        format!("redis://{}:{password}@{address}", self.name)
    }

    /// Runs `ACL` or `CLIENT` `args` as the test's own Redis user.
    fn admin(command: &str, args: &[&str]) -> redis::RedisResult<()> {
        let mut connection = redis::Client::open(redis_url().as_str())?.get_connection()?;
        redis::cmd(command).arg(args).exec(&mut connection)
    }
}

impl Drop for AclUser {
    fn drop(&mut self) {
        // Not unwrapped: a panic while a test is already panicking would abort the run.
        let _ = Self::admin("ACL", &["DELUSER", &self.name]);
    }
}

/// A running instance whose Redis refuses its user on a reconnect (the password changed,
/// the connections killed) decides from memory, and goes back to Redis once the password is
/// right again, without a restart: the connection is made anew after Redis answers a call
/// with an error.
#[test]
fn an_instance_goes_back_to_redis_once_its_refused_user_is_mended() {
    let dir = support::temp_dir();
    let user = AclUser::new(&LIMITS_COMMANDS);
    let url = user.url(&user.password);
    let settings = limits_in_redis(
        &url,
        &[
            ("ISSUER_REDIS_TIMEOUT_MS", "1000".as_ref()),
            // Every decision asks Redis (no leases), and none is refused for its rate.
            ("ISSUER_REDIS_LEASE_TTL_MS", "0".as_ref()),
            (
                "ISSUER_TOKEN_RATE_PER_CLIENT",
                "1000/60s;burst=1000".as_ref(),
            ),
            (
                "ISSUER_TOKEN_RATE_PER_ADDRESS",
                "1000/60s;burst=1000".as_ref(),
            ),
        ],
    );
    let (mut server, port, _) = spawn_serve(&dir, &settings);
    let form = client_form(&dir, "refused and mended");
    let fallbacks = || metric(port, "issuer_limits_redis_fallbacks_total").unwrap();
    assert_eq!(post_token(port, &form).0, 200);
    assert_eq!(fallbacks(), 0);
    AclUser::admin("ACL", &["SETUSER", &user.name, "resetpass", ">changed"]).unwrap();
    AclUser::admin("CLIENT", &["KILL", "USER", &user.name]).unwrap();
    let refused = Instant::now() + Duration::from_secs(10);
    while fallbacks() == 0 {
        assert_eq!(post_token(port, &form).0, 200, "fails open");
        assert!(Instant::now() < refused, "no decision fell back");
        std::thread::sleep(Duration::from_millis(100));
    }
    let password = format!(">{}", user.password);
    AclUser::admin("ACL", &["SETUSER", &user.name, "resetpass", &password]).unwrap();
    // Back in Redis: a token whose decision did not fall back.
    let mended = Instant::now() + Duration::from_secs(10);
    loop {
        let before = fallbacks();
        assert_eq!(post_token(port, &form).0, 200);
        if fallbacks() == before {
            break;
        }
        assert!(Instant::now() < mended, "decisions still fall back");
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = server.kill();
    let _ = server.wait();
}

/// Issue 32: `SIGHUP` re-reads the configuration file. What may change while running takes
/// effect (token lifetime, a client's rate plan); what may not (`max_body_bytes`, built into
/// the server at start) is refused with a
/// log line naming it and keeps its value; a bad file changes nothing. Each reload is
/// counted and audited.
#[cfg(unix)]
#[test]
fn sighup_reloads_what_may_change_refuses_the_rest_and_ignores_a_bad_file() {
    let dir = support::temp_dir();
    let file = dir.join("issuer.toml");
    std::fs::write(&file, "token_lifetime_secs = 600\n").unwrap();
    let (mut server, port, log) = spawn_serve(&dir, &[("ISSUER_CONFIG", file.as_os_str())]);
    let form = client_form(&dir, "reload");
    let token = || {
        let (status, body) = post_token(port, &form);
        let expires_in = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|body| body["expires_in"].as_u64());
        (status, expires_in)
    };
    let hangup_and_wait = |message: &str, times: usize| {
        assert!(Command::new("kill")
            .args(["-HUP", &server.id().to_string()])
            .status()
            .unwrap()
            .success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.matches(message).count() >= times {
                return text;
            }
            assert!(Instant::now() < deadline, "no {message:?} in:\n{text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert_eq!(token(), (200, Some(600)));

    std::fs::write(
        &file,
        "token_lifetime_secs = 120\ntoken_rate_per_client = \"2/60s;burst=2\"\nmax_body_bytes = 4096\n",
    )
    .unwrap();
    let text = hangup_and_wait("configuration reloaded", 1);
    assert!(
        text.contains("`max_body_bytes` cannot change while running"),
        "{text}"
    );
    // The new lifetime, and the new plan: a 429 within the plan's burst and a bit.
    assert_eq!(token(), (200, Some(120)));
    let statuses: Vec<u16> = (0..3).map(|_| token().0).collect();
    assert!(statuses.contains(&429), "{statuses:?}");

    // A bad file: nothing changes.
    std::fs::write(&file, "token_lifetime_secs = 5\n").unwrap();
    let text = hangup_and_wait("configuration not reloaded", 1);
    assert!(text.contains("token_lifetime_secs"), "{text}");
    // Still the strict plan (the bad file, had it applied, would have brought the default
    // one back): nothing changed.
    assert_eq!(token().0, 429, "a bad file changed nothing");
    std::fs::write(
        &file,
        "token_lifetime_secs = 120\ntoken_rate_per_client = \"3000/60s;burst=300\"\n",
    )
    .unwrap();
    hangup_and_wait("configuration reloaded", 2);
    assert_eq!(token(), (200, Some(120)));

    let (_, metrics) = get(port, "/metrics");
    assert!(
        metrics.contains(r#"issuer_config_reloads_total{outcome="applied"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"issuer_config_reloads_total{outcome="invalid"} 1"#),
        "{metrics}"
    );
    let audit = issuer(&dir).args(["audit", "export"]).output().unwrap();
    let audit = String::from_utf8_lossy(&audit.stdout);
    assert_eq!(
        audit.matches("\"action\":\"config.reload\"").count(),
        2,
        "{audit}"
    );
    assert_eq!(
        audit.matches("\"action\":\"config.reload_failed\"").count(),
        1,
        "{audit}"
    );
    let _ = server.kill();
    let _ = server.wait();
}
