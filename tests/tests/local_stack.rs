//! The README's stack command (`deploy/local/up`) as a newcomer runs it: it comes up, the two
//! curls it prints work when pasted into a shell, a second run (with the Python demo origin)
//! reuses the data and the demo client, and Ctrl-C stops every process. (Its own binary, so no other test's wrangler sees
//! the Worker bundle rebuilt by wrangler's `[build]` step.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgeward_tests::*;

/// Runs `deploy/local/up` until it prints its curls; returns it and its output so far.
fn up(
    data: &std::path::Path,
    ports: (u16, u16, u16),
    origin: &str,
    log: &std::path::Path,
) -> (Running, String) {
    let mut command = Command::new(root().join("deploy/local/up"));
    command
        .env("EDGEWARD_ORIGIN", origin)
        .env("EDGEWARD_DATA", data)
        .env("EDGEWARD_ISSUER_PORT", ports.0.to_string())
        .env("EDGEWARD_ORIGIN_PORT", ports.1.to_string())
        .env("EDGEWARD_EDGE_PORT", ports.2.to_string());
    let running = Running::spawn(command, log.to_path_buf());
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let output = running.log();
        if output.contains("Ctrl-C stops everything") {
            return (running, output);
        }
        assert!(
            !output.contains("did not become ready") && Instant::now() < deadline,
            "the stack did not come up:\n{output}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The printed command lines (indented by two spaces) that start with `prefix`.
fn printed<'a>(output: &'a str, prefix: &str) -> Vec<&'a str> {
    output
        .lines()
        .filter_map(|line| line.strip_prefix("  "))
        .filter(|line| line.starts_with(prefix))
        .collect()
}

fn shell(script: &str) -> String {
    let output = Command::new("bash")
        .args(["-c", script])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(output.status.success(), "{script}");
    String::from_utf8(output.stdout).unwrap()
}

/// Sends Ctrl-C (SIGINT to the process group, as a terminal does) and waits for the exit.
fn interrupt(stack: Running, ports: (u16, u16, u16)) {
    let pgid = format!("-{}", stack.id());
    assert!(Command::new("kill")
        .args(["-INT", "--", &pgid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(30);
    for port in [ports.0, ports.1, ports.2] {
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "port {port} still open after Ctrl-C"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    drop(stack);
}

#[test]
fn the_stack_command_prints_curls_that_work_and_stops_cleanly() {
    let data = temp_dir("local_stack");
    let ports = (free_port(), free_port(), free_port());
    let (stack, output) = up(&data, ports, "rust", &data.join("up-1.log"));
    assert!(output.contains("create the demo client"), "{output}");

    let token_curl = printed(&output, "curl -s -u")[0];
    let token: serde_json::Value = serde_json::from_str(&shell(token_curl)).unwrap();
    assert_eq!(token["token_type"], "Bearer", "{token}");
    let call = [
        printed(&output, "TOKEN=")[0],
        printed(&output, "curl -s -H")[0],
    ]
    .join("\n");
    let answer: serde_json::Value = serde_json::from_str(&shell(&call)).unwrap();
    assert_eq!(answer["request"]["path"], "/hello", "{answer}");
    assert!(answer["identity"]["client_id"].is_string(), "{answer}");
    // The second call: the route table's 403 for a scope the demo client lacks.
    let refused = [
        printed(&output, "TOKEN=")[0],
        printed(&output, "curl -s -H")[1],
    ]
    .join("\n");
    let answer: serde_json::Value = serde_json::from_str(&shell(&refused)).unwrap();
    assert_eq!(answer["error"], "insufficient_scope", "{answer}");
    // The issuer serves its revocation feed to the edge alone, which pulled it with its token.
    let feed = shell(&format!(
        "curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.1:{}/revocations",
        ports.0
    ));
    assert_eq!(feed, "401", "the feed without the token");
    let edge_log = std::fs::read_to_string(data.join("wrangler.log")).unwrap();
    assert!(edge_log.contains("\"outcome\":\"forwarded\""), "{edge_log}");
    assert!(!edge_log.contains("revocation_feed_failed"), "{edge_log}");
    interrupt(stack, ports);

    // Again on the same data, with the Python demo origin (issue 33): no new client, and the
    // same printed credentials still work through the edge.
    let (stack, again) = up(&data, ports, "python", &data.join("up-2.log"));
    assert!(
        again.contains("(python; only the edge's signed requests"),
        "{again}"
    );
    assert!(!again.contains("create the demo client"), "{again}");
    assert_eq!(
        printed(&again, "curl -s -u"),
        printed(&output, "curl -s -u")
    );
    let answer: serde_json::Value = serde_json::from_str(&shell(&call)).unwrap();
    assert_eq!(answer["request"]["path"], "/hello", "{answer}");
    assert_eq!(
        answer["message"], "hello from the python demo origin",
        "{answer}"
    );
    assert!(answer["identity"]["client_id"].is_string(), "{answer}");
    interrupt(stack, ports);
}
