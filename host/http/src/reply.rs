//! Host-made responses: JSON, errors with a short id, and the body type
//! they carry ([`Full`]). Each reply is generic over the body type, so a
//! listener whose body can also carry something else (the edge's guest
//! bodies) gets host replies in its own type.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Response header carrying the error id, so clients and proxies can quote
/// it without parsing the body.
pub const ERROR_ID_HEADER: &str = "x-outpost-error-id";

/// The error type of every response body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub use outpost_wire::error_id;

/// Folds a multi-line detail (a wasm backtrace, an error chain) onto one
/// line, so each log record stays one line that greps with its error id.
pub fn one_line(detail: &str) -> String {
    detail
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// A body the host made in one piece: sent whole, with its length.
#[derive(Debug, Default)]
pub struct Full(pub Option<Bytes>);

impl Full {
    /// A body of `bytes`.
    pub fn new(bytes: impl Into<Bytes>) -> Self {
        Self(Some(bytes.into()))
    }
}

impl Body for Full {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(self.get_mut().0.take().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.as_ref().map_or(0, |b| b.len() as u64))
    }
}

/// A small JSON response made by the host.
pub fn json<B: From<Full>>(status: StatusCode, value: serde_json::Value) -> Response<B> {
    json_bytes(status, value.to_string())
}

/// A response of JSON text already serialized.
pub fn json_bytes<B: From<Full>>(status: StatusCode, json: impl Into<Bytes>) -> Response<B> {
    let mut response = Response::new(B::from(Full::new(json)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A 200 with `body` as `content_type`.
pub fn ok<B: From<Full>>(content_type: &'static str, body: impl Into<Bytes>) -> Response<B> {
    let mut response = Response::new(B::from(Full::new(body)));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Logs `detail` under a new error id (error level for 5xx, warn
/// otherwise) and answers with that id: the host endpoints' failures.
pub fn logged_error<B: From<Full>>(
    status: StatusCode,
    code: &str,
    message: &str,
    detail: &str,
) -> Response<B> {
    let id = error_id();
    if status.is_server_error() {
        tracing::error!(target: "outpost::reply", error_id = %id, status = status.as_u16(), code, detail, "{message}");
    } else {
        tracing::warn!(target: "outpost::reply", error_id = %id, status = status.as_u16(), code, detail, "{message}");
    }
    error(status, code, message, &id)
}

/// An error response: status, a stable machine-readable `code`, a message
/// for humans, and the id under which the log line carries the detail.
pub fn error<B: From<Full>>(
    status: StatusCode,
    code: &str,
    message: &str,
    id: &str,
) -> Response<B> {
    let mut response: Response<B> = json(
        status,
        serde_json::json!({ "error": code, "message": message, "id": id }),
    );
    if let Ok(value) = HeaderValue::from_str(id) {
        response.headers_mut().insert(ERROR_ID_HEADER, value);
    }
    response
}
