//! Exposes every `kv` and `queue` operation over HTTP for the end-to-end
//! tests. `/FN/STORE/OP?key=K&...`, value or payload in the body; the answer
//! is always 200 with `{"ok": ...}` or `{"error": "..."}`.
//!
//! Ops: `get`, `set`, `delete`, `exists`, `list` (`prefix`, `cursor`,
//! `limit`), `incr` (`delta`), `cas` (`expected`, or `absent=1`),
//! `enqueue` (`topic`, `idem`; STORE is ignored), `hello` (no kv call at
//! all: this guest's own cost, what the benchmarks compare kv ops with),
//! `sdk-open` (opens STORE and answers through the SDK's `Result` handling),
//! `write` (the value in the body, `delete=1` for none: the outcome and
//! version), `versioned` (value, version, acknowledged), `freshness`.

use outpost_sdk::{Request, Response, http, kv, queue};
use serde_json::{Value, json};
use std::collections::HashMap;

fn reply(value: Value) -> Response {
    http::Response::builder()
        .header("content-type", "application/json")
        .body(value.to_string().into_bytes())
        .expect("static headers are valid")
}

fn kv_error(e: kv::Error) -> Value {
    let name = match e {
        kv::Error::AccessDenied => "access-denied".to_string(),
        kv::Error::NoSuchStore => "no-such-store".to_string(),
        kv::Error::InvalidKey => "invalid-key".to_string(),
        kv::Error::ValueTooLarge => "value-too-large".to_string(),
        kv::Error::Conflict => "conflict".to_string(),
        kv::Error::NotANumber => "not-a-number".to_string(),
        kv::Error::Overflow => "overflow".to_string(),
        kv::Error::OutboxFull => "outbox-full".to_string(),
        kv::Error::Io(detail) => format!("io: {detail}"),
        kv::Error::OutcomeUnknown(detail) => format!("outcome-unknown: {detail}"),
    };
    json!({ "error": name })
}

fn text(bytes: Vec<u8>) -> Value {
    Value::String(String::from_utf8_lossy(&bytes).into_owned())
}

fn handle(req: Request) -> Response {
    let segments: Vec<&str> = req.uri().path().split('/').skip(2).collect();
    let (Some(store_name), Some(op)) = (segments.first(), segments.get(1)) else {
        return reply(json!({ "error": "use /FN/STORE/OP" }));
    };
    let params: HashMap<String, String> =
        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let key = params.get("key").map(String::as_str).unwrap_or("");
    let body = req.body().clone();

    if *op == "hello" {
        return reply(json!({ "ok": "hello" }));
    }
    if *op == "enqueue" {
        let topic = params.get("topic").map(String::as_str).unwrap_or("");
        return reply(
            match queue::enqueue(topic, &body, params.get("idem").map(String::as_str)) {
                Ok(id) => json!({ "ok": id }),
                Err(queue::Error::InvalidTopic) => json!({ "error": "invalid-topic" }),
                Err(queue::Error::PayloadTooLarge) => json!({ "error": "payload-too-large" }),
                Err(queue::Error::InvalidIdempotencyKey) => {
                    json!({ "error": "invalid-idempotency-key" })
                }
                Err(queue::Error::OutboxFull) => json!({ "error": "outbox-full" }),
                Err(queue::Error::Io(detail)) => json!({ "error": format!("io: {detail}") }),
                Err(queue::Error::OutcomeUnknown(detail)) => {
                    json!({ "error": format!("outcome-unknown: {detail}") })
                }
            },
        );
    }

    if *op == "sdk-open" {
        // The store opened the way a handler with `?` would: an error is
        // the SDK's own 500, not this guest's JSON.
        return outpost_sdk::IntoResponse::into_response(
            kv::Store::open(store_name).map(|_| "opened"),
        );
    }
    let store = match kv::Store::open(store_name) {
        Ok(store) => store,
        Err(e) => return reply(kv_error(e)),
    };
    let result = match *op {
        "get" => store.get(key).map(|v| v.map_or(Value::Null, text)),
        "set" => store.set(key, &body).map(|()| Value::Bool(true)),
        "delete" => store.delete(key).map(|()| Value::Bool(true)),
        "exists" => store.exists(key).map(Value::Bool),
        "list" => {
            let limit = params
                .get("limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(100);
            let prefix = params.get("prefix").map(String::as_str).unwrap_or("");
            store
                .list_keys(prefix, params.get("cursor").map(String::as_str), limit)
                .map(|page| json!({ "keys": page.keys, "cursor": page.cursor }))
        }
        "incr" => {
            let delta = params
                .get("delta")
                .and_then(|d| d.parse().ok())
                .unwrap_or(1);
            store.increment(key, delta).map(|n| json!(n))
        }
        "cas" => {
            let expected = if params.contains_key("absent") {
                None
            } else {
                Some(
                    params
                        .get("expected")
                        .cloned()
                        .unwrap_or_default()
                        .into_bytes(),
                )
            };
            store
                .compare_and_swap(key, expected.as_deref(), &body)
                .map(|()| Value::Bool(true))
        }
        "versioned" => store.get_versioned(key).map(|v| match v {
            None => Value::Null,
            Some(v) => json!({
                "value": v.value.map(text),
                "hlc": v.version.hlc,
                "node": v.version.node,
                "acknowledged": v.acknowledged,
            }),
        }),
        "freshness" => {
            let f = store.freshness();
            Ok(json!({
                "replicated": f.replicated,
                "stale_ms": f.stale_ms,
                "connected": f.connected,
                "pending": f.pending,
                "mode": match f.mode { kv::WriteMode::Local => "local", kv::WriteMode::Forward => "forward" },
            }))
        }
        "write" => {
            let value = (!params.contains_key("delete")).then_some(body.as_slice());
            return reply(match store.write(key, value) {
                Ok(outcome) => {
                    let version = match &outcome {
                        kv::WriteOutcome::Local => None,
                        kv::WriteOutcome::Queued(v)
                        | kv::WriteOutcome::Applied(v)
                        | kv::WriteOutcome::Superseded(v) => {
                            Some(json!({ "hlc": v.hlc, "node": v.node }))
                        }
                    };
                    json!({ "ok": { "outcome": outcome.name(), "version": version } })
                }
                Err(kv::WriteError::Unavailable) => json!({ "error": "unavailable" }),
                Err(kv::WriteError::Store(e)) => kv_error(e),
            });
        }
        other => return reply(json!({ "error": format!("unknown op {other}") })),
    };
    reply(match result {
        Ok(value) => json!({ "ok": value }),
        Err(e) => kv_error(e),
    })
}

outpost_sdk::export!(handle);
