//! The 200-route table the route benchmarks share: `benches/routes.rs` (matching, natively)
//! and, through `examples/bench_tokens.rs routes`, the edge's `edge-hit-routes` row.

use serde_json::{json, Value};

/// Twenty services of ten routes each (literals, `{name}`, `**`, methods, a host, every kind
/// of requirement), as the JSON array of a table's `route`. The last service is per tenant
/// (`/{tenant}/svc19/…`): routes that start with a wildcard are looked at for every request,
/// whatever its first segment, so they are in the cost of each lookup.
pub(crate) fn table_200() -> Vec<Value> {
    let mut routes = Vec::new();
    for service in 0..20 {
        let base = if service == 19 {
            format!("/{{tenant}}/svc{service:02}")
        } else {
            format!("/svc{service:02}")
        };
        let id = |name: &str| format!("svc{service:02}-{name}");
        routes.extend([
            json!({ "id": id("health"), "path": format!("{base}/health"), "require": "public" }),
            json!({ "id": id("list"), "path": format!("{base}/v2/orders"), "methods": ["GET"], "scopes_all": ["orders:read"] }),
            json!({ "id": id("create"), "path": format!("{base}/v2/orders"), "methods": ["POST"], "scopes_all": ["orders:write"] }),
            json!({ "id": id("export"), "path": format!("{base}/v2/orders/export"), "scopes_any": ["ops", "admin"] }),
            json!({ "id": id("one"), "path": format!("{base}/v2/orders/{{id}}"), "methods": ["GET"] }),
            json!({ "id": id("lines"), "path": format!("{base}/v2/orders/{{id}}/lines/{{line}}"), "methods": ["GET", "PUT"] }),
            json!({ "id": id("static"), "path": format!("{base}/static/**"), "require": "public" }),
            json!({ "id": id("admin"), "host": "admin.example", "path": format!("{base}/**"), "scopes_all": ["admin"] }),
            json!({ "id": id("internal"), "path": format!("{base}/internal/**"), "require": "deny" }),
            json!({ "id": id("rest"), "path": format!("{base}/**") }),
        ]);
    }
    routes
}
