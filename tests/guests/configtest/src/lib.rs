//! Test guest written against the standard WIT only (`wasi:http` from the
//! `wasip2` crate, `wasi:config/store` by wit-bindgen), no Outpost SDK.
//! Answers every request with JSON: `env` (the whole environment, as
//! `std::env::vars` sees it), `config` (`wasi:config/store.get-all`) and,
//! for `?key=NAME`, `env_var` (`std::env::var`) and `get`
//! (`wasi:config/store.get`). It prints nothing, so no value reaches the
//! host's log through it.

wit_bindgen::generate!({
    path: "wit",
    world: "guest",
    generate_all,
});

use serde_json::{Map, Value, json};
use wasi::config::store;
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct ConfigTest;

/// The value of `key` in the request's query, if any.
fn query_key(request: &IncomingRequest) -> Option<String> {
    let path = request.path_with_query()?;
    let (_, query) = path.split_once('?')?;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("key="))
        .map(str::to_owned)
}

fn error(e: store::Error) -> Value {
    match e {
        store::Error::Upstream(m) => json!({ "upstream": m }),
        store::Error::Io(m) => json!({ "io": m }),
    }
}

fn report(request: &IncomingRequest) -> Value {
    let env: Map<String, Value> = std::env::vars().map(|(k, v)| (k, v.into())).collect();
    let config = match store::get_all() {
        Ok(all) => Value::Object(all.into_iter().map(|(k, v)| (k, v.into())).collect()),
        Err(e) => json!({ "error": error(e) }),
    };
    let mut answer = json!({ "env": env, "config": config });
    if let Some(key) = query_key(request) {
        answer["env_var"] = std::env::var(&key).ok().into();
        answer["get"] = match store::get(&key) {
            Ok(value) => value.into(),
            Err(e) => json!({ "error": error(e) }),
        };
    }
    answer
}

impl wasip2::exports::http::incoming_handler::Guest for ConfigTest {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let body_bytes = report(&request).to_string();
        let headers = Fields::new();
        let _ = headers.append("content-type", b"application/json");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("a new response has a body");
        ResponseOutparam::set(out, Ok(response));
        {
            let stream = body.write().expect("a new body has an output stream");
            // Small answers: one write of at most 4096 bytes per call.
            for chunk in body_bytes.as_bytes().chunks(4096) {
                if stream.blocking_write_and_flush(chunk).is_err() {
                    break;
                }
            }
        }
        let _ = OutgoingBody::finish(body, None);
    }
}

wasip2::http::proxy::export!(ConfigTest);
