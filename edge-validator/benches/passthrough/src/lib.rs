//! The workers-rs floor for `edge-validator/benches/run`: the same request conversion and
//! forwarding as the edge (method, path, query, headers; `Host` and `Authorization` dropped),
//! with no token work. Whatever the edge costs above this is the validation.
#![cfg(target_arch = "wasm32")]

use worker::{event, Context, Env, Fetch, Headers, Request, RequestInit, Response, Result};

#[event(fetch)]
async fn fetch(request: Request, env: Env, _ctx: Context) -> Result<Response> {
    let origin = env.var("ORIGIN_URL")?.to_string();
    let url = request.url()?;
    let target = match url.query() {
        Some(query) => format!("{origin}{}?{query}", url.path()),
        None => format!("{origin}{}", url.path()),
    };
    let headers = Headers::new();
    for (name, value) in request.headers().entries() {
        if !name.eq_ignore_ascii_case("authorization") && !name.eq_ignore_ascii_case("host") {
            headers.append(&name, &value)?;
        }
    }
    let mut init = RequestInit::new();
    init.with_method(request.method()).with_headers(headers);
    Fetch::Request(Request::new_with_init(&target, &init)?)
        .send()
        .await
}
