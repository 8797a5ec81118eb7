//! The cost per request of the route table: normalising the path and finding the route, in
//! a 200-route table (20 services of 10 routes: literals, `{name}`, `**`, methods, hosts),
//! side by side with a one-route table and with normalising alone, in one run; and, once per
//! isolate, building the largest table in the worst order (`build_max_reversed`). Prints the
//! means and writes them to `target/bench/routes.json` (`docs/render` puts them in the docs).
//! Run: `cargo bench -p shared --bench routes`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // dev tool: failing loudly is right

use std::hint::black_box;

#[path = "support/criterion.rs"]
mod support;
#[path = "support/routes.rs"]
mod support_routes;

use criterion::{BatchSize, Criterion};
use serde_json::json;
use shared::route::{PathPattern, Policy, Route, RouteTable, MAX_ROUTES};
use shared::{NormalPath, ScopeRequirement};

const GROUP: &str = "route_match";
/// (case, method, path) for the 200-route table; `normalise_only` and `one_route` use the
/// first path.
const REQUESTS: [(&str, &str, &str); 5] = [
    ("table_200_literal", "GET", "/svc13/v2/orders/export"),
    ("table_200_param", "PUT", "/svc07/v2/orders/9f1c/lines/3"),
    ("table_200_prefix", "GET", "/svc18/static/css/site.css"),
    ("table_200_tenant", "GET", "/acme/svc19/v2/orders/9f1c"),
    ("table_200_unmatched", "GET", "/nowhere/at/all"),
];

fn table_200() -> RouteTable {
    let routes = support_routes::table_200();
    assert_eq!(routes.len(), 200);
    RouteTable::from_json(&json!({ "route": routes }).to_string()).unwrap()
}

/// [`MAX_ROUTES`] routes written least specific first, the worst order for the table's sort
/// (each route goes before all the others): what an isolate would pay once, at start-up.
/// Twelve segments, each `{x}` or a literal by the bits of the route's number, rank them in
/// the order of their numbers.
fn max_reversed() -> Vec<Route> {
    (0..MAX_ROUTES)
        .map(|number| {
            let path: String = (0..12)
                .map(|bit| match (number >> (11 - bit)) & 1 {
                    1 => format!("/s{bit}"),
                    _ => "/{x}".to_owned(),
                })
                .collect();
            Route {
                id: format!("r{number}"),
                host: None,
                methods: None,
                path: PathPattern::parse(&path).unwrap(),
                policy: Policy::token(ScopeRequirement::default()),
            }
        })
        .collect()
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    let table = table_200();
    let one = RouteTable::from_json(r#"{ "route": [{ "id": "all", "path": "/**" }] }"#).unwrap();
    let mut group = criterion.benchmark_group(GROUP);
    let first = REQUESTS[0].2;
    group.bench_function("normalise_only", |b| {
        b.iter(|| NormalPath::parse(black_box(first)))
    });
    group.bench_function("one_route", |b| {
        b.iter(|| {
            let path = NormalPath::parse(black_box(first)).unwrap();
            one.route("api.example", "GET", &path).is_some()
        })
    });
    for (case, method, raw) in REQUESTS {
        group.bench_function(case, |b| {
            b.iter(|| {
                let path = NormalPath::parse(black_box(raw)).unwrap();
                table
                    .route("api.example", method, &path)
                    .map(|r| r.id.len())
            })
        });
    }
    group.sample_size(10);
    group.bench_function("build_max_reversed", |b| {
        b.iter_batched(
            max_reversed,
            |routes| RouteTable::new(routes, None).unwrap().routes().len(),
            BatchSize::LargeInput,
        )
    });
    group.finish();
    criterion.final_summary();
    report();
}

/// Prints each case's mean (normalising included) and writes them as JSON.
fn report() {
    let Some(dir) = support::criterion_dir() else {
        return;
    };
    let mean = |case: &str| support::mean_ns(&dir, GROUP, case);
    let cases: Vec<&str> = ["normalise_only", "one_route"]
        .into_iter()
        .chain(REQUESTS.iter().map(|(case, ..)| *case))
        .chain(["build_max_reversed"])
        .collect();
    let Some(one) = mean("one_route") else {
        println!("(no estimates under {}; run without --test)", dir.display());
        return;
    };
    println!("\n{:<22} {:>10} {:>14}", "case", "mean", "vs one_route");
    let mut rows = Vec::new();
    for case in cases {
        let Some(ns) = mean(case) else { continue };
        println!("{case:<22} {:>7.0} ns {:>13.2}x", ns, ns / one);
        rows.push(json!({ "case": case, "mean_ns": ns, "vs_one_route": ns / one }));
    }
    let out = dir.parent().unwrap().join("bench");
    std::fs::create_dir_all(&out).unwrap();
    let written = out.join("routes.json");
    std::fs::write(
        &written,
        serde_json::to_string_pretty(&json!({
            "bench": "routes",
            "command": "cargo bench -p shared --bench routes",
            "routes": 200,
            "cases": rows,
        }))
        .unwrap(),
    )
    .unwrap();
    println!("written: {}", written.display());
}
