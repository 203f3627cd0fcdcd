//! The HTTP listener: accept, HTTP/1 and HTTP/2 with keep-alive, limits on
//! clients before any request reaches a handler, graceful drain on shutdown.

use crate::reply::BoxError;
use bytes::Bytes;
use http::{Request, Response};
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
/// in-flight requests up to `limits.grace` to finish. Used by the edge, its
/// admin listener and the cloud.
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
                    tracing::warn!(target: "outpost::server", error = %e, "accept failed");
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
                tracing::warn!(target: "outpost::server", peer = %peer, max = limits.max_connections, refused = refused + 1, "connection limit reached; closing new connections");
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
                tracing::debug!(target: "outpost::server", peer = %peer, "closed a connection that sent nothing");
                return;
            }
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(target: "outpost::server", peer = %peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(target: "outpost::server",
        connections = graceful.count(),
        grace_ms = grace.as_millis() as u64,
        "shutting down: no longer accepting, draining in-flight requests"
    );
    match tokio::time::timeout(grace, graceful.shutdown()).await {
        Ok(()) => tracing::info!(target: "outpost::server", "all connections drained"),
        Err(_) => {
            tracing::warn!(target: "outpost::server", "grace period over; closing remaining connections")
        }
    }
}

/// Answers requests for [`run`].
pub trait Handler: Clone + Send + Sync + 'static {
    /// The response body: host-made bytes for the cloud and admin API
    /// ([`crate::reply::Full`]); the edge's own type, which can also stream
    /// a guest's body, without boxing on the request path.
    type Body: http_body::Body<Data = Bytes, Error = BoxError> + Send + 'static;

    /// Answers one request.
    fn call(
        &self,
        req: Request<Incoming>,
    ) -> impl Future<Output = Response<Self::Body>> + Send + 'static + use<Self>;
}
