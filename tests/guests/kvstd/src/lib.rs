//! Test guest written against the standard WIT only (`wasi:http` from the
//! `wasip2` crate, `wasi:keyvalue@0.2.0-draft` by wit-bindgen), no Outpost
//! SDK: every `wasi:keyvalue` operation over HTTP for the end-to-end tests.
//!
//! `/FN/BUCKET/OP?key=K&...`, value in the body; BUCKET `-` opens the
//! empty identifier. The answer is always 200 with `{"ok": ...}` or
//! `{"error": "access-denied" | "no-such-store" | "other: ..."}`.
//!
//! Ops: `get`, `set`, `delete`, `exists`, `list` (one page; `cursor`),
//! `listall` (every page in this request: `{"keys", "pages"}`), `incr`
//! (`delta`), `getmany` / `deletemany` (`keys=a,b,c`), `setmany` (the body
//! a JSON object of string values, or `count=N&prefix=P`: keys `P00000`...
//! with values `v0`...).

wit_bindgen::generate!({
    path: "wit",
    world: "guest",
    generate_all,
});

use serde_json::{Value, json};
use std::collections::HashMap;
use wasi::keyvalue::{atomics, batch, store};
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasip2::io::streams::StreamError;

struct KvStd;

fn error(e: store::Error) -> Value {
    let name = match e {
        store::Error::AccessDenied => "access-denied".to_owned(),
        store::Error::NoSuchStore => "no-such-store".to_owned(),
        store::Error::Other(detail) => format!("other: {detail}"),
    };
    json!({ "error": name })
}

fn text(bytes: Vec<u8>) -> Value {
    Value::String(String::from_utf8_lossy(&bytes).into_owned())
}

/// The whole request body.
fn read_body(request: &IncomingRequest) -> Vec<u8> {
    let mut bytes = Vec::new();
    let Ok(body) = request.consume() else {
        return bytes;
    };
    {
        let Ok(stream) = body.stream() else {
            return bytes;
        };
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(_)) => break,
            }
        }
    }
    bytes
}

fn answer(request: &IncomingRequest) -> Value {
    let path_with_query = request.path_with_query().unwrap_or_default();
    let (path, query) = path_with_query
        .split_once('?')
        .unwrap_or((path_with_query.as_str(), ""));
    let segments: Vec<&str> = path.split('/').skip(2).collect();
    let (Some(bucket_name), Some(op)) = (segments.first(), segments.get(1)) else {
        return json!({ "error": "use /FN/BUCKET/OP" });
    };
    let params: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let key = params.get("key").cloned().unwrap_or_default();
    let keys: Vec<String> = params
        .get("keys")
        .map(|k| k.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let body = read_body(request);

    let identifier = if *bucket_name == "-" { "" } else { bucket_name };
    let bucket = match store::open(identifier) {
        Ok(bucket) => bucket,
        Err(e) => return error(e),
    };
    let result = match *op {
        "get" => bucket.get(&key).map(|v| v.map_or(Value::Null, text)),
        "set" => bucket.set(&key, &body).map(|()| Value::Bool(true)),
        "delete" => bucket.delete(&key).map(|()| Value::Bool(true)),
        "exists" => bucket.exists(&key).map(Value::Bool),
        "list" => {
            let cursor = params.get("cursor").and_then(|c| c.parse().ok());
            bucket
                .list_keys(cursor)
                .map(|page| json!({ "keys": page.keys, "cursor": page.cursor }))
        }
        "listall" => {
            let mut all = Vec::new();
            let mut cursor = None;
            let mut pages = 0;
            loop {
                match bucket.list_keys(cursor) {
                    Ok(page) => {
                        pages += 1;
                        all.extend(page.keys);
                        cursor = page.cursor;
                        if cursor.is_none() {
                            break Ok(json!({ "keys": all, "pages": pages }));
                        }
                    }
                    Err(e) => break Err(e),
                }
            }
        }
        "incr" => {
            let delta = params
                .get("delta")
                .and_then(|d| d.parse().ok())
                .unwrap_or(1);
            atomics::increment(&bucket, &key, delta).map(|n| json!(n))
        }
        "getmany" => batch::get_many(&bucket, &keys).map(|found| {
            found
                .into_iter()
                .map(|pair| pair.map_or(Value::Null, |(k, v)| json!([k, text(v)])))
                .collect()
        }),
        "setmany" => {
            let pairs: Vec<(String, Vec<u8>)> = match params.get("count") {
                Some(count) => {
                    let prefix = params.get("prefix").cloned().unwrap_or_default();
                    (0..count.parse::<u32>().unwrap_or(0))
                        .map(|i| (format!("{prefix}{i:05}"), format!("v{i}").into_bytes()))
                        .collect()
                }
                None => match serde_json::from_slice::<HashMap<String, String>>(&body) {
                    Ok(map) => map.into_iter().map(|(k, v)| (k, v.into_bytes())).collect(),
                    Err(e) => return json!({ "error": format!("bad body: {e}") }),
                },
            };
            batch::set_many(&bucket, &pairs).map(|()| Value::Bool(true))
        }
        "deletemany" => batch::delete_many(&bucket, &keys).map(|()| Value::Bool(true)),
        other => return json!({ "error": format!("unknown op {other}") }),
    };
    match result {
        Ok(value) => json!({ "ok": value }),
        Err(e) => error(e),
    }
}

impl wasip2::exports::http::incoming_handler::Guest for KvStd {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let body_bytes = answer(&request).to_string();
        let headers = Fields::new();
        let _ = headers.append("content-type", b"application/json");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("a new response has a body");
        ResponseOutparam::set(out, Ok(response));
        {
            let stream = body.write().expect("a new body has an output stream");
            // One write of at most 4096 bytes per call.
            for chunk in body_bytes.as_bytes().chunks(4096) {
                if stream.blocking_write_and_flush(chunk).is_err() {
                    break;
                }
            }
        }
        let _ = OutgoingBody::finish(body, None);
    }
}

wasip2::http::proxy::export!(KvStd);
