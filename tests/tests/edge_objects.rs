//! The rate-limit Durable Object answers an edge of this release (`fetch`) and one of a later
//! release (RPC `ask`) alike, on one state: while a canary runs two releases, each object
//! runs one of them and edges of both ask it. The object is the built Worker's class in real
//! workerd; a probe Worker (`tests/workers/object-probe.mjs`) asks it both ways.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Duration;

use edgeward_tests::*;

/// A workerd config: the built edge Worker, which defines the rate-limit class (objects in
/// memory), and the probe, which binds it and listens on `port`.
fn config(port: u16) -> String {
    format!(
        r#"using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [(name = "edge", worker = .edge), (name = "probe", worker = .probe)],
  sockets = [(name = "probe", address = "127.0.0.1:{port}", http = (), service = "probe")],
);
const edge :Workerd.Worker = (
  modules = [(name = "worker.mjs", esModule = embed "worker.mjs"), (name = "index_bg.wasm", wasm = embed "index_bg.wasm")],
  compatibilityDate = "2026-04-26",
  bindings = [(name = "RATE_LIMITER", durableObjectNamespace = (className = "RateLimiter", serviceName = "edge"))],
  durableObjectNamespaces = [(className = "RateLimiter", uniqueKey = "edgeward-objects-test", enableSql = true)],
  durableObjectStorage = (inMemory = void),
);
const probe :Workerd.Worker = (
  modules = [(name = "probe.mjs", esModule = embed "probe.mjs")],
  compatibilityDate = "2026-04-26",
  bindings = [(name = "RATE_LIMITER", durableObjectNamespace = (className = "RateLimiter", serviceName = "edge"))],
);
"#
    )
}

/// The object `object`'s answer to `query`, asked `by` "fetch" or "rpc": status, body and
/// content type.
async fn ask(port: u16, by: &str, object: &str, query: &str) -> (u16, String, String) {
    let reply = Reply::of(
        http()
            .get(format!("http://127.0.0.1:{port}/{by}"))
            .query(&[("object", object), ("query", query)]),
    )
    .await;
    let content_type = reply.header("content-type").unwrap_or_default().to_owned();
    (reply.status, reply.body, content_type)
}

/// A limiter decision's `allowed` and `remaining`.
fn decision(body: &str) -> (bool, u64) {
    let decision: serde_json::Value = serde_json::from_str(body).unwrap();
    (
        decision["allowed"].as_bool().unwrap(),
        decision["remaining"].as_u64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_answers_fetch_and_rpc_alike_on_one_state() {
    let dir = temp_dir("edge_objects");
    std::fs::copy(
        root().join("tests/workers/object-probe.mjs"),
        dir.join("probe.mjs"),
    )
    .unwrap();
    let port = free_port();
    let workerd = workerd_isolates(&dir, &config(port));
    let check = "https://rate-limiter.internal/check?limit=3&period=60&burst=3&cost=1";
    let ready = reqwest::Url::parse_with_params(
        &format!("http://127.0.0.1:{port}/fetch"),
        [("object", "warm-up"), ("query", check)],
    )
    .unwrap();
    wait_ready(ready.as_str(), Duration::from_secs(30), &workerd).await;

    // One client's budget of 3, spent by turns: each way sees what the other spent.
    let mut decisions = Vec::new();
    for by in ["fetch", "rpc", "fetch", "rpc"] {
        let (status, body, content_type) = ask(port, by, "client-a", check).await;
        assert_eq!(status, 200, "{by}: {body}");
        if by == "fetch" {
            assert_eq!(content_type, "application/json", "as before");
        }
        decisions.push(decision(&body));
    }
    assert_eq!(
        decisions,
        [(true, 2), (true, 1), (true, 0), (false, 0)],
        "the budget, whichever way"
    );

    // A DPoP proof seen one way is a replay the other way.
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60;
    let proof = |key: char| {
        format!(
            "https://rate-limiter.internal/dpop?until={until}&key={}",
            key.to_string().repeat(43)
        )
    };
    let replays = [
        ("fetch", proof('A'), "1"),
        ("rpc", proof('A'), "0"),
        ("rpc", proof('B'), "1"),
        ("fetch", proof('B'), "0"),
    ];
    for (by, query, verdict) in replays {
        let (status, body, _) = ask(port, by, "dpop/probe", &query).await;
        assert_eq!((status, body.as_str()), (200, verdict), "{by} {query}");
    }

    // Queries the object does not know: 400 by fetch (as before), no answer by RPC; neither
    // spends anything.
    let unknown = [
        (
            "https://rate-limiter.internal/nothing".to_owned(),
            "bad rate-limit query",
        ),
        (
            format!(
                "https://rate-limiter.internal/dpop?until=x&key={}",
                "C".repeat(43)
            ),
            "bad replay query",
        ),
    ];
    for (query, refusal) in &unknown {
        let (status, body, _) = ask(port, "fetch", "client-b", query).await;
        assert_eq!((status, body.as_str()), (400, *refusal), "{query}");
        let (status, body, _) = ask(port, "rpc", "client-b", query).await;
        assert_eq!((status, body.as_str()), (404, "no answer"), "{query}");
    }
    let (_, body, _) = ask(port, "rpc", "client-b", check).await;
    assert_eq!(decision(&body), (true, 2), "client-b's budget untouched");
}
