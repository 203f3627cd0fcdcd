//! The Outpost guest SDK: write a handler as a plain Rust function over the
//! [`http`] crate's types, export it with [`export!`], build for
//! `wasm32-wasip2`, and drop the `.wasm` into Outpost's modules folder.
//!
//! ```
//! use outpost_sdk::{Request, Response, http};
//!
//! fn handle(req: Request) -> Response {
//!     let name = req.uri().query().unwrap_or("world");
//!     http::Response::builder()
//!         .status(http::StatusCode::OK)
//!         .header("content-type", "text/plain")
//!         .body(format!("hello, {name}\n").into_bytes())
//!         .unwrap()
//! }
//!
//! outpost_sdk::export!(handle);
//!
//! // A handler is an ordinary function, so it is tested without a host.
//! let req = http::Request::builder().uri("/hi?ada").body(Vec::new()).unwrap();
//! assert_eq!(handle(req).body(), b"hello, ada\n");
//! ```
//!
//! Handlers may return anything that implements [`IntoResponse`]: a
//! [`Response`], a `String` or `&str` (200, text/plain), a
//! `(StatusCode, body)` pair, or a `Result` whose error becomes a 500
//! `handler-error` with an error id (the cause goes to the node's log).
//!
//! Each request runs in a fresh instance: statics start from scratch every
//! time, so keep state in Outpost's key-value store ([`kv`]), send events
//! to the cloud tier with [`queue`], and purge what the node's HTTP cache
//! holds of your responses with [`cache`].

pub use http;

mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "outpost:edge/imports",
    });
}

/// The node-local key-value store (WIT `outpost:edge/kv`).
///
/// ```no_run
/// use outpost_sdk::kv;
///
/// # fn main() -> Result<(), kv::Error> {
/// let store = kv::Store::open("default")?;
/// store.set("greeting", b"hello")?;
/// assert_eq!(store.get("greeting")?.as_deref(), Some(&b"hello"[..]));
/// let visits = store.increment("visits", 1)?;
/// # let _ = visits;
/// # Ok(())
/// # }
/// ```
///
/// `"default"` is the function's own store; other names are shared stores
/// granted in `modules/NAME.toml`. Writes return once durable on the node;
/// in a replicated store they also reach every other node.
///
/// What a replicated read is worth, and what became of a write:
///
/// ```no_run
/// use outpost_sdk::kv::{self, WriteOutcome};
///
/// # fn main() -> Result<(), kv::Error> {
/// let store = kv::Store::open("default")?;
/// let fresh = store.freshness();
/// // `stale_ms`: 0 while the node is in sync with the cloud; `pending`:
/// // this store's writes from this node the cloud has not acknowledged.
/// let _ = (fresh.stale_ms, fresh.connected, fresh.pending);
/// if let Some(v) = store.get_versioned("balance")? {
///     let _ = (v.value, v.version.node, v.acknowledged);
/// }
/// // In a `forward` store this waits for the cloud's verdict.
/// match store.write("balance", Some(b"10")) {
///     Ok(WriteOutcome::Applied(_)) => {}        // the cloud has it
///     Ok(WriteOutcome::Superseded(_winner)) => {} // a newer write won
///     Ok(WriteOutcome::Queued(_) | WriteOutcome::Local) => {} // ships later / local store
///     Err(kv::WriteError::Unavailable) => {}    // cloud away, fallback = "fail"
///     Err(kv::WriteError::Store(e)) => return Err(e),
/// }
/// # Ok(())
/// # }
/// ```
pub mod kv {
    pub use crate::bindings::outpost::edge::kv::{
        Error, Freshness, KeyPage, Store, Version, Versioned, WriteError, WriteMode, WriteOutcome,
    };

    impl WriteOutcome {
        /// `local`, `queued`, `applied` or `superseded`.
        pub fn name(&self) -> &'static str {
            match self {
                WriteOutcome::Local => "local",
                WriteOutcome::Queued(_) => "queued",
                WriteOutcome::Applied(_) => "applied",
                WriteOutcome::Superseded(_) => "superseded",
            }
        }
    }
}

/// Durable events to the cloud tier (WIT `outpost:edge/queue`).
///
/// ```no_run
/// # fn main() -> Result<(), outpost_sdk::queue::Error> {
/// let id = outpost_sdk::queue::enqueue("orders", br#"{"sku":"a1"}"#, Some("order-17"))?;
/// # let _ = id;
/// # Ok(())
/// # }
/// ```
pub mod queue {
    pub use crate::bindings::outpost::edge::queue::{Error, enqueue};
}

/// This function's entries in the node's HTTP cache (WIT
/// `outpost:edge/cache`), purged by surrogate key: the keys a response
/// names in its `Surrogate-Key` header (space-separated).
///
/// ```no_run
/// use outpost_sdk::{cache, kv};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // The page `/news` answered with `Surrogate-Key: news` and a
/// // `Cache-Control` that let the node store it. After the write that
/// // changes it, the stored copies go:
/// kv::Store::open("default")?.set("headline", b"...")?;
/// match cache::purge("news") {
///     Ok(entries) => { let _ = entries; } // how many went (0: none was stored)
///     Err(cache::PurgeError::InvalidKey) => {} // empty, over 1 KiB, or not visible ASCII
///     Err(cache::PurgeError::Unavailable) => {} // the node runs without a cache
/// }
/// # Ok(())
/// # }
/// ```
///
/// A function purges only its own entries, and only on the node it runs
/// on: other nodes keep theirs until they expire.
pub mod cache {
    pub use crate::bindings::outpost::edge::cache::{PurgeError, purge};
}

use std::io::Write as _;
use wasip2::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse,
    ResponseOutparam, Scheme,
};

/// A request with its whole body read into memory.
pub type Request = http::Request<Vec<u8>>;
/// A response with its whole body in memory.
pub type Response = http::Response<Vec<u8>>;

/// Conversion from a handler's return value into a [`Response`].
pub trait IntoResponse {
    fn into_response(self) -> Response;
}

impl IntoResponse for Response {
    fn into_response(self) -> Response {
        self
    }
}

fn text(status: http::StatusCode, body: Vec<u8>) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

impl IntoResponse for String {
    fn into_response(self) -> Response {
        text(http::StatusCode::OK, self.into_bytes())
    }
}

impl IntoResponse for &'static str {
    fn into_response(self) -> Response {
        text(http::StatusCode::OK, self.as_bytes().to_vec())
    }
}

impl IntoResponse for Vec<u8> {
    fn into_response(self) -> Response {
        Response::new(self)
    }
}

impl<B: IntoResponse> IntoResponse for (http::StatusCode, B) {
    fn into_response(self) -> Response {
        let mut response = self.1.into_response();
        *response.status_mut() = self.0;
        response
    }
}

/// An `Err` is answered like the host's own errors: a 500 with
/// `{"error":"handler-error","message":...,"id":ID}` and the
/// `x-outpost-error-id` header, while the cause goes to stderr (the node's
/// log, beside the function's name and the request id) as
/// `error: handler returned an error (error_id=ID): CAUSE`. The client
/// learns an id to quote, not the internals.
impl<T: IntoResponse, E: std::fmt::Display> IntoResponse for Result<T, E> {
    fn into_response(self) -> Response {
        match self {
            Ok(ok) => ok.into_response(),
            Err(e) => {
                let id = error_id();
                let cause = e.to_string().replace(['\n', '\r'], " ");
                eprintln!("error: handler returned an error (error_id={id}): {cause}");
                let body = format!(
                    "{{\"error\":\"handler-error\",\"message\":\"the function's handler returned an error\",\"id\":\"{id}\"}}"
                );
                let mut response = Response::new(body.into_bytes());
                *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                let headers = response.headers_mut();
                headers.insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                if let Ok(value) = http::HeaderValue::from_str(&id) {
                    headers.insert("x-outpost-error-id", value);
                }
                response
            }
        }
    }
}

/// 12 hex digits from the host's random source, like the host's own ids.
fn error_id() -> String {
    format!(
        "{:012x}",
        wasip2::random::random::get_random_u64() & 0xffff_ffff_ffff
    )
}

/// Exports `handler` (a `fn(Request) -> impl IntoResponse`) as the
/// component's `wasi:http/incoming-handler`.
#[macro_export]
macro_rules! export {
    ($handler:path) => {
        struct __OutpostHandler;

        impl $crate::__private::Guest for __OutpostHandler {
            fn handle(
                request: $crate::__private::IncomingRequest,
                out: $crate::__private::ResponseOutparam,
            ) {
                $crate::__private::serve(request, out, |req| {
                    $crate::IntoResponse::into_response($handler(req))
                });
            }
        }

        $crate::__private::wasip2::http::proxy::export!(__OutpostHandler);
    };
}

/// Used by [`export!`]; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use wasip2;
    pub use wasip2::exports::http::incoming_handler::Guest;
    pub use wasip2::http::types::{IncomingRequest, ResponseOutparam};

    pub fn serve(
        request: IncomingRequest,
        out: ResponseOutparam,
        handler: impl FnOnce(super::Request) -> super::Response,
    ) {
        match super::read_request(request) {
            Ok(req) => super::write_response(out, handler(req)),
            Err(message) => super::write_response(
                out,
                super::text(http::StatusCode::BAD_REQUEST, message.into_bytes()),
            ),
        }
    }
}

fn method(method: Method) -> Result<http::Method, String> {
    Ok(match method {
        Method::Get => http::Method::GET,
        Method::Head => http::Method::HEAD,
        Method::Post => http::Method::POST,
        Method::Put => http::Method::PUT,
        Method::Delete => http::Method::DELETE,
        Method::Connect => http::Method::CONNECT,
        Method::Options => http::Method::OPTIONS,
        Method::Trace => http::Method::TRACE,
        Method::Patch => http::Method::PATCH,
        Method::Other(other) => {
            http::Method::from_bytes(other.as_bytes()).map_err(|e| e.to_string())?
        }
    })
}

fn read_request(request: IncomingRequest) -> Result<Request, String> {
    let path = request.path_with_query().unwrap_or_else(|| "/".to_string());
    let uri = match (request.scheme(), request.authority()) {
        (Some(scheme), Some(authority)) => {
            let scheme = match scheme {
                Scheme::Http => "http".to_string(),
                Scheme::Https => "https".to_string(),
                Scheme::Other(s) => s,
            };
            format!("{scheme}://{authority}{path}")
        }
        _ => path,
    };
    let mut builder = http::Request::builder()
        .method(method(request.method())?)
        .uri(uri);
    for (name, value) in request.headers().entries() {
        builder = builder.header(name, value);
    }
    let body = read_body(
        request
            .consume()
            .map_err(|()| "request body already taken")?,
    )?;
    builder.body(body).map_err(|e| e.to_string())
}

fn read_body(body: IncomingBody) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    {
        let stream = body
            .stream()
            .map_err(|()| "request body stream unavailable")?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(wasip2::io::streams::StreamError::Closed) => break,
                Err(e) => return Err(format!("reading request body: {e:?}")),
            }
        }
    }
    // Dropping the body without `finish` skips a host call and a
    // future-trailers resource the handler never reads.
    drop(body);
    Ok(bytes)
}

/// The most `blocking-write-and-flush` takes in one call (wasi:io).
const SMALL_BODY: usize = 4096;

fn write_response(out: ResponseOutparam, response: Response) {
    let (parts, body) = response.into_parts();
    let headers = Fields::new();
    for (name, value) in &parts.headers {
        // Hop-by-hop headers are the host's business; the host rejects
        // them, so they are dropped here rather than failing the response.
        let _ = headers.append(name.as_str(), value.as_bytes());
    }
    let outgoing = OutgoingResponse::new(headers);
    // A new response is already 200: skip the host call for the common case.
    if parts.status != http::StatusCode::OK {
        let _ = outgoing.set_status_code(parts.status.as_u16());
    }
    let outgoing_body = outgoing.body().expect("a new response has a body");
    ResponseOutparam::set(out, Ok(outgoing));
    {
        let mut stream = outgoing_body
            .write()
            .expect("a new body has an output stream");
        // A body that fits one `blocking-write-and-flush` (at most 4096
        // bytes) takes one host call instead of check-write, write and
        // flush; larger bodies go in the chunks the host asks for.
        let written = if body.len() <= SMALL_BODY {
            stream
                .blocking_write_and_flush(&body)
                .map_err(|_| std::io::ErrorKind::BrokenPipe.into())
        } else {
            stream
                .write_all(&body)
                .and_then(|()| std::io::Write::flush(&mut stream))
        };
        if written.is_err() {
            // The client went away; nothing left to tell it.
            return;
        }
    }
    let _ = OutgoingBody::finish(outgoing_body, None);
}
