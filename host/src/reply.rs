//! Host-generated responses: health, errors with a short id, and the body
//! type every response shares.

use crate::guest_body::GuestBody;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Response header carrying the error id, so clients and proxies can quote
/// it without parsing the body.
pub const ERROR_ID_HEADER: &str = "x-outpost-error-id";

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A fresh short id that ties a client-visible error to its log line.
pub fn error_id() -> String {
    format!("{:012x}", fastrand::u64(..) >> 16)
}

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

/// The body of every response Outpost sends: either bytes the host made, or
/// a guest's streamed body.
pub enum OutBody {
    Full(Option<Bytes>),
    Guest(GuestBody),
}

impl Body for OutBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            OutBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            OutBody::Guest(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            OutBody::Full(bytes) => bytes.is_none(),
            OutBody::Guest(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            OutBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            OutBody::Full(None) => SizeHint::with_exact(0),
            OutBody::Guest(body) => body.size_hint(),
        }
    }
}

/// A small JSON response made by the host.
pub fn json(status: StatusCode, value: serde_json::Value) -> Response<OutBody> {
    let mut response = Response::new(OutBody::Full(Some(Bytes::from(value.to_string()))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A 200 with `body` as `content_type`.
pub fn ok(content_type: &'static str, body: impl Into<Bytes>) -> Response<OutBody> {
    let mut response = Response::new(OutBody::Full(Some(body.into())));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Logs `detail` under a new error id (error level for 5xx, warn
/// otherwise) and answers with that id: the host endpoints' failures.
pub fn logged_error(
    status: StatusCode,
    code: &str,
    message: &str,
    detail: &str,
) -> Response<OutBody> {
    let id = error_id();
    if status.is_server_error() {
        tracing::error!(error_id = %id, status = status.as_u16(), code, detail, "{message}");
    } else {
        tracing::warn!(error_id = %id, status = status.as_u16(), code, detail, "{message}");
    }
    error(status, code, message, &id)
}

/// An error response: status, a stable machine-readable `code`, a message
/// for humans, and the id under which the log line carries the detail.
pub fn error(status: StatusCode, code: &str, message: &str, id: &str) -> Response<OutBody> {
    let mut response = json(
        status,
        serde_json::json!({ "error": code, "message": message, "id": id }),
    );
    if let Ok(value) = HeaderValue::from_str(id) {
        response.headers_mut().insert(ERROR_ID_HEADER, value);
    }
    response
}
