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

/// `issuer serve` in `dir` on a port the OS picks (`127.0.0.1:0`, so no race with other
/// tests), with extra settings from `env`; returns the child and the bound port, read from
/// its "issuer listening" log line.
fn spawn_serve(
    dir: &std::path::Path,
    env: &[(&str, &std::path::Path)],
) -> (std::process::Child, u16, std::path::PathBuf) {
    let log = dir.join("serve.log");
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
        let port = text
            .lines()
            .find(|line| line.contains("issuer listening"))
            .and_then(|line| line.split("\"addr\":\"127.0.0.1:").nth(1))
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|digits| digits.parse().ok());
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
    let (status, body) = http(
        port,
        &format!(
            "POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
            form.len()
        ),
    );
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
        ("ISSUER_TLS_CERT_FILE", cert.as_path()),
        ("ISSUER_TLS_KEY_FILE", key.as_path()),
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
