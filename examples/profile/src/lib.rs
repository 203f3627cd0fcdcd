//! One JSON document per user, in the function's own store, replicated to
//! every edge (see `profile.toml`).
//!
//! `PUT /profile/USER` with a JSON body stores it; `GET /profile/USER`
//! returns it (404 if none); `DELETE /profile/USER` removes it.
//!
//! Every answer says how fresh it is, in headers: `x-stale-ms` (0 while
//! this edge is in sync with the cloud), `x-cloud` (`connected` or
//! `unreachable`), `x-pending` (this store's writes from this edge the
//! cloud has not acknowledged); a GET adds `x-acknowledged` (whether the
//! cloud has this version) and a PUT or DELETE `x-write` (what became of
//! the write: `queued`, `applied`, `superseded`). `GET /profile/USER?meta`
//! returns the same as JSON around the document.

use outpost_sdk::{Request, Response, http, kv};

fn json(status: http::StatusCode) -> http::response::Builder {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
}

fn problem(status: http::StatusCode, message: &str) -> (http::StatusCode, Vec<u8>) {
    (
        status,
        serde_json::json!({ "error": message })
            .to_string()
            .into_bytes(),
    )
}

/// The freshness headers, on any answer.
fn freshness(store: &kv::Store, response: http::response::Builder) -> http::response::Builder {
    let f = store.freshness();
    response
        .header("x-stale-ms", f.stale_ms)
        .header(
            "x-cloud",
            if f.connected {
                "connected"
            } else {
                "unreachable"
            },
        )
        .header("x-pending", f.pending)
}

fn handle(req: Request) -> Result<Response, kv::Error> {
    let user = req
        .uri()
        .path()
        .trim_start_matches("/profile")
        .trim_matches('/');
    if user.is_empty() || user.contains('/') {
        let (status, body) = problem(http::StatusCode::NOT_FOUND, "use /profile/USER");
        return Ok(json(status).body(body).expect("valid"));
    }
    let key = format!("user/{user}");
    let store = kv::Store::open("default")?;
    let mut headers = Vec::new();
    let (status, body) = match *req.method() {
        http::Method::GET => match store.get_versioned(&key)? {
            Some(kv::Versioned {
                value: Some(doc),
                version,
                acknowledged,
            }) => {
                headers.push(("x-acknowledged", acknowledged.to_string()));
                if req.uri().query() == Some("meta") {
                    let f = store.freshness();
                    let doc: serde_json::Value =
                        serde_json::from_slice(&doc).unwrap_or(serde_json::Value::Null);
                    let meta = serde_json::json!({
                        "profile": doc,
                        "version": { "hlc": version.hlc, "node": version.node },
                        "acknowledged": acknowledged,
                        "stale_ms": f.stale_ms,
                        "connected": f.connected,
                        "pending": f.pending,
                    });
                    (http::StatusCode::OK, meta.to_string().into_bytes())
                } else {
                    (http::StatusCode::OK, doc)
                }
            }
            _ => problem(http::StatusCode::NOT_FOUND, "no such profile"),
        },
        http::Method::PUT => {
            if serde_json::from_slice::<serde_json::Value>(req.body()).is_err() {
                problem(http::StatusCode::BAD_REQUEST, "body must be JSON")
            } else {
                match store.write(&key, Some(req.body())) {
                    Ok(outcome) => {
                        headers.push(("x-write", outcome.name().to_owned()));
                        (http::StatusCode::OK, req.body().clone())
                    }
                    Err(kv::WriteError::Store(kv::Error::ValueTooLarge)) => {
                        problem(http::StatusCode::PAYLOAD_TOO_LARGE, "profile too large")
                    }
                    Err(kv::WriteError::Unavailable) => problem(
                        http::StatusCode::SERVICE_UNAVAILABLE,
                        "the cloud is unreachable; try again",
                    ),
                    Err(kv::WriteError::Store(e)) => return Err(e),
                }
            }
        }
        http::Method::DELETE => match store.write(&key, None) {
            Ok(outcome) => {
                headers.push(("x-write", outcome.name().to_owned()));
                (http::StatusCode::OK, b"{}".to_vec())
            }
            Err(kv::WriteError::Unavailable) => problem(
                http::StatusCode::SERVICE_UNAVAILABLE,
                "the cloud is unreachable; try again",
            ),
            Err(kv::WriteError::Store(e)) => return Err(e),
        },
        _ => problem(
            http::StatusCode::METHOD_NOT_ALLOWED,
            "use GET, PUT or DELETE",
        ),
    };
    let mut response = freshness(&store, json(status));
    for (name, value) in headers {
        response = response.header(name, value);
    }
    Ok(response.body(body).expect("valid headers"))
}

outpost_sdk::export!(handle);
