//! The demo stack with the Python origin (`examples/origin-python/server.py`, standard library
//! only) in place of the Rust one: a real issuer, the edge in workerd, and the Python process.
//! A tap between the edge and the origin keeps what the edge sent, so the test can replay the
//! edge's assertion against other requests and at another origin with the same key, and alter
//! it, as someone on the origin's network would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::process::Command;
use std::time::{Duration, Instant};

use base64ct::{Base64UrlUnpadded, Encoding};
use edgeward_tests::*;
use serde_json::Value;

const PYTHON_KEY_ID: &str = "py-1";
const PYTHON_SECRET: &str = "python-origin-assertion-secret-0123456789";

/// The Python demo origin on `listen` (port 0: one it picks), named `host`; its port, from
/// its `listening` line.
fn python_origin(dir: &std::path::Path, name: &str, listen: &str, host: &str) -> (Running, u16) {
    let mut command = Command::new("python3");
    command
        .arg(root().join("examples/origin-python/server.py"))
        .env("DEMO_ORIGIN_LISTEN", listen)
        .env("ORIGIN_HOST", host)
        .env("ASSERTION_KEY_ID", PYTHON_KEY_ID)
        .env("ASSERTION_SECRET", PYTHON_SECRET);
    let running = Running::spawn(command, dir.join(format!("{name}.log")));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let port = running.log().lines().find_map(|line| {
            let line: Value = serde_json::from_str(line).ok()?;
            (line["event"] == "listening").then(|| line["port"].as_u64())?
        });
        if let Some(port) = port {
            return (running, u16::try_from(port).unwrap());
        }
        assert!(
            Instant::now() < deadline,
            "python origin did not start:\n{}",
            running.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_origin_admits_the_edges_request_and_refuses_a_replayed_or_altered_assertion() {
    let dir = temp_dir("python_origin");
    // The edge reaches the origin through the tap, so the origin's name is the tap's address.
    let origin_port = free_port();
    let tap = Tap::start(([127, 0, 0, 1], origin_port).into()).await;
    let origin_host = format!("127.0.0.1:{}", tap.port);
    let (origin, origin_port) = tokio::task::block_in_place(|| {
        python_origin(
            &dir,
            "python-origin",
            &format!("127.0.0.1:{origin_port}"),
            &origin_host,
        )
    });
    // Another origin holding the same key, under another name.
    let (_other, other_port) = tokio::task::block_in_place(|| {
        python_origin(
            &dir,
            "other-origin",
            "127.0.0.1:0",
            "reports.internal.example",
        )
    });
    let (_issuer, issuer_port) = issuer(&dir).await;
    let client = Client::create(&dir, "python-origin", &[]);
    let vars = EdgeSettings::new(issuer_port, tap.port)
        .set("ASSERTION_KEY_ID", PYTHON_KEY_ID)
        .set("RATE_LIMIT_MODE", "isolate");
    let (_edge, edge_port) = edge(&dir, &vars, PYTHON_SECRET).await;

    let token = client.token(issuer_port).await;
    // A client's own assertion header is stripped by the edge, whatever it holds.
    let request = http()
        .get(format!(
            "http://127.0.0.1:{edge_port}/orders/17?status=open"
        ))
        .bearer_auth(&token)
        .header("x-edgeward-assertion", "v2.py-1.forged.forged");
    let reply = Reply::of(request).await;
    {
        assert_eq!(reply.status, 200, "{}\n{}", reply.body, origin.log());
        let answer = reply.json();
        assert_eq!(answer["identity"]["client_id"], client.id.as_str());
        assert_eq!(
            answer["request"],
            serde_json::json!({ "method": "GET", "path": "/orders/17", "query": "status=open" })
        );

        let sent = tap.header_values("x-edgeward-assertion");
        assert_eq!(
            sent.len(),
            1,
            "the edge sends exactly one assertion: {sent:?}"
        );
        let assertion = &sent[0];
        // Straight to an origin, with the Host the edge's request had.
        let direct_to = async |port: u16, path: &str, assertion: Option<&str>| {
            let mut request = http()
                .get(format!("http://127.0.0.1:{port}{path}"))
                .header("host", &origin_host);
            if let Some(assertion) = assertion {
                request = request.header("x-edgeward-assertion", assertion);
            }
            let reply = Reply::of(request).await;
            assert_eq!(reply.status, 401, "{path}: {}", reply.body);
            assert!(reply
                .header("www-authenticate")
                .unwrap()
                .contains("error=\"invalid_token\""));
            reply.json()["reason"].as_str().unwrap().to_owned()
        };
        let direct = async |path: &str, assertion: Option<&str>| {
            direct_to(origin_port, path, assertion).await
        };
        // Replayed at another origin with the same key, naming the first one as Host: that
        // origin knows its own name.
        assert_eq!(
            direct_to(other_port, "/orders/17?status=open", Some(assertion)).await,
            "assertion_host_mismatch"
        );
        // Replayed against another route, other parameters, another method's path.
        assert_eq!(
            direct("/admin", Some(assertion)).await,
            "assertion_path_mismatch"
        );
        assert_eq!(
            direct("/orders/17?status=closed", Some(assertion)).await,
            "assertion_query_mismatch"
        );
        assert_eq!(
            direct("/orders/17", Some(assertion)).await,
            "assertion_query_mismatch"
        );
        // A path the server would rewrite (http.server collapses leading slashes) is still
        // another path: the assertion binds the one sent.
        assert_eq!(
            direct("//orders/17?status=open", Some(assertion)).await,
            "assertion_path_mismatch"
        );
        // Altered: another subject under the edge's MAC.
        let mut parts: Vec<String> = assertion.split('.').map(str::to_owned).collect();
        let payload = String::from_utf8(Base64UrlUnpadded::decode_vec(&parts[2]).unwrap())
            .unwrap()
            .replace(&client.id, "someone-else");
        parts[2] = Base64UrlUnpadded::encode_string(payload.as_bytes());
        let altered = parts.join(".");
        assert_eq!(
            direct("/orders/17?status=open", Some(&altered)).await,
            "bad_assertion_signature"
        );
        assert_eq!(
            direct("/orders/17?status=open", None).await,
            "missing_assertion"
        );
    }
    // The origin logs each refusal's reason, never an assertion.
    let log = origin.log();
    for reason in [
        "assertion_path_mismatch",
        "assertion_query_mismatch",
        "bad_assertion_signature",
        "missing_assertion",
    ] {
        assert!(
            log.contains(&format!("\"reason\":\"{reason}\"")),
            "{reason} not logged:\n{log}"
        );
    }
    let assertion = &tap.header_values("x-edgeward-assertion")[0];
    assert!(
        !log.contains(assertion.as_str()),
        "the origin logged an assertion:\n{log}"
    );
}
