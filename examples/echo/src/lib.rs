//! Echoes the request back: method, path, query, headers and body, as JSON.
//!
//! The body comes back as `body` when it is UTF-8, otherwise as hex in
//! `body_hex`, so binary bodies round-trip too.

use outpost_sdk::{Request, Response, http};
use serde_json::{Map, Value, json};

fn handle(req: Request) -> Response {
    let headers: Vec<Value> = req
        .headers()
        .iter()
        .map(|(name, value)| json!([name.as_str(), String::from_utf8_lossy(value.as_bytes())]))
        .collect();
    let mut doc = Map::new();
    doc.insert("method".into(), json!(req.method().as_str()));
    doc.insert("path".into(), json!(req.uri().path()));
    doc.insert("query".into(), json!(req.uri().query()));
    doc.insert("headers".into(), Value::Array(headers));
    match std::str::from_utf8(req.body()) {
        Ok(text) => doc.insert("body".into(), json!(text)),
        Err(_) => {
            let hex: String = req.body().iter().map(|b| format!("{b:02x}")).collect();
            doc.insert("body_hex".into(), json!(hex))
        }
    };
    http::Response::builder()
        .header("content-type", "application/json")
        .body(Value::Object(doc).to_string().into_bytes())
        .expect("static headers are valid")
}

outpost_sdk::export!(handle);
