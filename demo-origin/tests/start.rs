//! The demo origin's start-up errors, from the built binary: a setting it cannot use stops it
//! with a message naming the setting, before it listens.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts the binary with only `settings`; whether it exited successfully, and its stderr.
/// One that is still running after a while started serving: it is stopped, and that fails.
fn start(settings: &[(&str, &str)]) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_demo-origin"))
        .env_clear()
        .env("DEMO_ORIGIN_LISTEN", "127.0.0.1:0")
        .envs(settings.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("it started serving instead of stopping");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.success(), stderr)
}

#[test]
fn a_previous_key_under_the_current_id_stops_it() {
    // The verifier would take the first key of an id: the previous secret would never be
    // tried, and an origin mid-rotation would refuse what the edge signs with it.
    let secret = "s".repeat(32);
    let (ok, stderr) = start(&[
        ("ASSERTION_KEY_ID", "k1"),
        ("ASSERTION_SECRET", &secret),
        ("ASSERTION_PREVIOUS_KEY_ID", "k1"),
        ("ASSERTION_PREVIOUS_SECRET", &"p".repeat(32)),
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("ASSERTION_PREVIOUS_KEY_ID must differ from ASSERTION_KEY_ID"),
        "{stderr}"
    );
}
