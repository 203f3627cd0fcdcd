//! One JSON document per user, in the function's own store, replicated to
//! every edge (see `profile.toml`).
//!
//! `PUT /profile/USER` with a JSON body stores it; `GET /profile/USER`
//! returns it (404 if none); `DELETE /profile/USER` removes it.

use outpost_sdk::{Request, Response, http, kv};

fn json(status: http::StatusCode, body: Vec<u8>) -> Response {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body)
        .expect("static headers are valid")
}

fn problem(status: http::StatusCode, message: &str) -> Response {
    json(
        status,
        serde_json::json!({ "error": message })
            .to_string()
            .into_bytes(),
    )
}

fn handle(req: Request) -> Result<Response, kv::Error> {
    let user = req
        .uri()
        .path()
        .trim_start_matches("/profile")
        .trim_matches('/');
    if user.is_empty() || user.contains('/') {
        return Ok(problem(http::StatusCode::NOT_FOUND, "use /profile/USER"));
    }
    let key = format!("user/{user}");
    let store = kv::Store::open("default")?;
    Ok(match *req.method() {
        http::Method::GET => match store.get(&key)? {
            Some(doc) => json(http::StatusCode::OK, doc),
            None => problem(http::StatusCode::NOT_FOUND, "no such profile"),
        },
        http::Method::PUT => {
            if serde_json::from_slice::<serde_json::Value>(req.body()).is_err() {
                return Ok(problem(http::StatusCode::BAD_REQUEST, "body must be JSON"));
            }
            match store.set(&key, req.body()) {
                Ok(()) => json(http::StatusCode::OK, req.body().clone()),
                Err(kv::Error::ValueTooLarge) => {
                    problem(http::StatusCode::PAYLOAD_TOO_LARGE, "profile too large")
                }
                Err(e) => return Err(e),
            }
        }
        http::Method::DELETE => {
            store.delete(&key)?;
            json(http::StatusCode::OK, b"{}".to_vec())
        }
        _ => problem(
            http::StatusCode::METHOD_NOT_ALLOWED,
            "use GET, PUT or DELETE",
        ),
    })
}

outpost_sdk::export!(handle);
