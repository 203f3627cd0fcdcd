//! The Outpost function `{{name}}`: Outpost calls `handle` once per request,
//! each time in a fresh instance.

use outpost_sdk::{Request, http};
// With the key-value store (see outpost-sdk/wit/kv.wit):
// use outpost_sdk::kv;

/// Greets whoever the query names: `GET /{{name}}?ada` answers
/// `hello, ada, from {{name}}`.
fn handle(req: Request) -> (http::StatusCode, String) {
    // The request is an `http::Request<Vec<u8>>` with the original path and
    // query: method, headers and body are there too.
    let who = match req.uri().query() {
        Some(query) if !query.is_empty() => query,
        _ => "stranger",
    };

    // Counting visits in this function's own store, "default" (durable on
    // the node; return a Result and `?` turns a kv error into a 500):
    //
    // fn handle(req: Request) -> Result<String, kv::Error> {
    //     let store = kv::Store::open("default")?;
    //     let visits = store.increment("visits", 1)?;
    //     Ok(format!("visit {visits}\n"))
    // }

    let greeting = format!("hello, {who}, from {{name}}\n");
    (http::StatusCode::OK, greeting)
}

outpost_sdk::export!(handle);
