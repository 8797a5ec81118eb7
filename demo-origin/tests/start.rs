//! The demo origin's start-up errors, from the built binary: a setting it cannot use stops it
//! with a message naming the setting, before it listens.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn start(settings: &[(&str, &str)]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_demo-origin"))
        .env_clear()
        .env("DEMO_ORIGIN_LISTEN", "127.0.0.1:0")
        .envs(settings.iter().copied())
        .output()
        .expect("the binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
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
