//! `POST /orders` with a JSON body enqueues an order event for the cloud.
//!
//! The `Idempotency-Key` request header becomes the event's idempotency
//! key, so a client retrying the same order does not create it twice.
//! Answers 202 with the event id.

use outpost_sdk::{Request, Response, http, queue};

fn answer(status: http::StatusCode, body: serde_json::Value) -> Response {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_string().into_bytes())
        .expect("static headers are valid")
}

fn handle(req: Request) -> Response {
    if req.method() != http::Method::POST {
        return answer(
            http::StatusCode::METHOD_NOT_ALLOWED,
            serde_json::json!({ "error": "use POST" }),
        );
    }
    if serde_json::from_slice::<serde_json::Value>(req.body()).is_err() {
        return answer(
            http::StatusCode::BAD_REQUEST,
            serde_json::json!({ "error": "body must be JSON" }),
        );
    }
    let key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok());
    match queue::enqueue("orders", req.body(), key) {
        Ok(id) => answer(http::StatusCode::ACCEPTED, serde_json::json!({ "id": id })),
        Err(queue::Error::PayloadTooLarge) => answer(
            http::StatusCode::PAYLOAD_TOO_LARGE,
            serde_json::json!({ "error": "order too large" }),
        ),
        Err(queue::Error::InvalidIdempotencyKey) => answer(
            http::StatusCode::BAD_REQUEST,
            serde_json::json!({ "error": "bad Idempotency-Key" }),
        ),
        Err(e) => answer(
            http::StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "error": format!("{e:?}") }),
        ),
    }
}

outpost_sdk::export!(handle);
