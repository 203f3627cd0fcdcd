//! The HTTP listener (accept, HTTP/1 and HTTP/2 with keep-alive, graceful
//! drain on shutdown) and the edge's routing of each request.

use crate::invoke::{self, Admission};
use crate::registry::Registry;
use crate::reply::{self, OutBody};
use crate::request_id;
use crate::router::{self, Route};
use crate::storage::Storage;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Limits on clients, enforced before any request reaches a handler.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Open connections at most; more are closed as soon as accepted.
    pub max_connections: usize,
    /// Time to send a request's headers; also the idle keep-alive timeout.
    pub header_read_timeout: Duration,
    /// Largest header section: HTTP/1 reads headers into a buffer of this
    /// size and answers 431 when they do not fit.
    pub max_header_bytes: usize,
    /// Time in-flight requests get after shutdown starts.
    pub grace: Duration,
}

/// Accepts connections on `listener` and answers each request with
/// `handler` until `shutdown` resolves, then stops accepting and gives
/// in-flight requests up to `limits.grace` to finish. Used by both `serve`
/// (edge) and `cloud`.
pub async fn run(
    listener: TcpListener,
    handler: impl Handler,
    shutdown: impl Future<Output = ()>,
    limits: ConnectionLimits,
) {
    let grace = limits.grace;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        // No `pipeline_flush`: it gave pipelining clients 1.2x req/s
        // (`load ab --pipeline 8`), but it also lifts the write buffer's
        // limit on every connection, so a client that stops reading makes
        // hyper pull the guest's whole response body into memory instead
        // of holding the guest back.
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut refused = 0u64;
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off
                    // instead of spinning on the error.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = connections.clone().try_acquire_owned() else {
            // At the limit: close at once rather than queue unbounded
            // sockets. Logged once per thousand to keep the log usable.
            if refused.is_multiple_of(1000) {
                tracing::warn!(peer = %peer, max = limits.max_connections, refused = refused + 1, "connection limit reached; closing new connections");
            }
            refused += 1;
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = hyper::service::service_fn(move |req| {
            let response = handler.call(req);
            async move { Ok::<_, Infallible>(response.await) }
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let first_byte_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            // hyper's header timeout starts once it knows the protocol,
            // which takes a first byte: a client that never sends one is
            // closed here instead of holding its slot forever.
            let mut first = [0u8; 1];
            if !matches!(
                tokio::time::timeout(first_byte_timeout, stream.peek(&mut first)).await,
                Ok(Ok(1))
            ) {
                tracing::debug!(peer = %peer, "closed a connection that sent nothing");
                return;
            }
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        grace_ms = grace.as_millis() as u64,
        "shutting down: no longer accepting, draining in-flight requests"
    );
    match tokio::time::timeout(grace, graceful.shutdown()).await {
        Ok(()) => tracing::info!("all connections drained"),
        Err(_) => tracing::warn!("grace period over; closing remaining connections"),
    }
}

/// Answers requests for [`run`].
pub trait Handler: Clone + Send + Sync + 'static {
    fn call(
        &self,
        req: Request<Incoming>,
    ) -> impl Future<Output = Response<OutBody>> + Send + 'static + use<Self>;
}

/// The edge node's handler: host endpoints and functions.
#[derive(Clone)]
pub struct Edge {
    pub registry: Arc<Registry>,
    pub admission: Arc<Admission>,
    /// For the health report (outbox backlog).
    pub storage: Arc<Storage>,
}

impl Handler for Edge {
    fn call(
        &self,
        req: Request<Incoming>,
    ) -> impl Future<Output = Response<OutBody>> + Send + 'static + use<> {
        let edge = self.clone();
        async move { handle(&edge, req).await }
    }
}

/// Answers one request, under its request id (the client's or a new one).
pub async fn handle(edge: &Edge, mut req: Request<Incoming>) -> Response<OutBody> {
    let request_id = request_id::take_or_make(req.headers_mut());
    let mut response = route(edge, req, &request_id).await;
    response
        .headers_mut()
        .insert(request_id::HEADER, request_id);
    response
}

async fn route(
    edge: &Edge,
    req: Request<Incoming>,
    request_id: &http::HeaderValue,
) -> Response<OutBody> {
    let registry = &edge.registry;
    match router::route(req.uri().path()) {
        Route::Function(name) => match registry.get(name) {
            Some(function) => {
                let started = std::time::Instant::now();
                let response =
                    invoke::invoke(function.clone(), &edge.admission, req, request_id).await;
                let status = response.status().as_u16();
                function.stats.record(status, started.elapsed());
                edge.admission.metrics.count_request(&function.name, status);
                response
            }
            None => {
                let message = format!("no function named '{name}' is deployed");
                not_found(&message)
            }
        },
        Route::Health if req.method() == Method::GET || req.method() == Method::HEAD => {
            let storage = &edge.storage;
            reply::json(
                StatusCode::OK,
                serde_json::json!({
                    "status": "ok",
                    "functions": registry.len(),
                    "node": storage.node_id(),
                    "outbox": {
                        "records": storage.outbox_len(),
                        "bytes": storage.outbox_bytes(),
                        "quarantined": storage.quarantined(),
                    },
                }),
            )
        }
        Route::Health => {
            let id = reply::error_id();
            tracing::debug!(error_id = %id, method = %req.method(), "health check with a method other than GET");
            reply::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "use GET",
                &id,
            )
        }
        Route::Reserved => not_found("no such host endpoint under /_outpost/"),
        Route::NoFunction => not_found("no function at this path; functions are served at /NAME"),
    }
}

fn not_found(message: &str) -> Response<OutBody> {
    let id = reply::error_id();
    tracing::debug!(error_id = %id, "404: {message}");
    reply::error(StatusCode::NOT_FOUND, "not-found", message, &id)
}
