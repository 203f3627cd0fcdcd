//! The HTTP listener: accept, optionally TLS, HTTP/1 and HTTP/2 with
//! keep-alive, limits on clients before any request reaches a handler,
//! graceful drain on shutdown.
//!
//! Every connection runs under an idle watchdog: one with no request in
//! flight for [`ConnectionLimits::idle_timeout`] (counted from the accept,
//! or from the end of the TLS handshake, before its first request) is asked
//! to close, and dropped if it is still open and idle a further timeout
//! later. Without it an HTTP/2 client that sent only its preface held a
//! connection slot forever: hyper's header timeout covers HTTP/1 only, and
//! HTTP/2's graceful shutdown waits for a ping the client may never answer.
//!
//! A TLS handshake must end within the header read timeout: it happens
//! before hyper or the watchdog see the connection, so nothing else would
//! stop a client that opens TCP and never finishes it.

use crate::activity::{Activity, Tracked};
use crate::body::{BodyRate, MAX_BODY_WINDOW, MIN_BODY_BYTES, RequestBody};
use crate::reply::{self, BoxError, Full};
use crate::request_id;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Version, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

/// Limits on clients, enforced before any request reaches a handler.
///
/// `header_read_timeout` also sets the connection deadlines (see its
/// methods), so existing struct literals keep compiling.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Open connections at most; more are closed as soon as accepted.
    pub max_connections: usize,
    /// Time to send a request's headers; also the idle timeout
    /// ([`Self::idle_timeout`]), the HTTP/2 keep-alive ping interval and
    /// ping timeout ([`Self::keep_alive`]), and the window of the minimum
    /// body rate ([`Self::body_rate`]).
    pub header_read_timeout: Duration,
    /// Largest header section: HTTP/1 reads headers into a buffer of this
    /// size and answers 431 when they do not fit.
    pub max_header_bytes: usize,
    /// Time in-flight requests get after shutdown starts.
    pub grace: Duration,
}

impl ConnectionLimits {
    /// How long a connection may have no request in flight, before its
    /// first request and between requests, on HTTP/1 and HTTP/2: the
    /// header read timeout. A request is in flight until its response body
    /// has ended, so a slow download or a long poll is never cut.
    pub fn idle_timeout(&self) -> Duration {
        self.header_read_timeout
    }

    /// HTTP/2 keep-alive: a ping after this long without a frame from the
    /// client, and the connection closed when that ping is not answered in
    /// as long again, so a dead peer does not hold a request open forever.
    pub fn keep_alive(&self) -> Duration {
        self.header_read_timeout
    }

    /// The slowest request body accepted: [`MIN_BODY_BYTES`] per header
    /// read timeout (at most [`MAX_BODY_WINDOW`]) of the handler waiting
    /// for it; see [`crate::body`].
    pub fn body_rate(&self) -> BodyRate {
        BodyRate {
            min_bytes: MIN_BODY_BYTES,
            window: self.header_read_timeout.min(MAX_BODY_WINDOW),
        }
    }
}

/// Accepts connections on `listener` and answers each request with
/// `handler` until `shutdown` resolves, then stops accepting and gives
/// in-flight requests up to `limits.grace` to finish. Used by the edge, its
/// admin listener and the cloud. Plain HTTP; see [`run_tls`].
pub async fn run(
    listener: TcpListener,
    handler: impl Handler,
    shutdown: impl Future<Output = ()>,
    limits: ConnectionLimits,
) {
    run_tls(listener, handler, shutdown, limits, None).await;
}

/// [`run`], speaking TLS with `tls` on every connection when it is given
/// (see [`crate::tls::server_config`]; HTTP/2 or HTTP/1.1 as its ALPN
/// settles), plain HTTP when it is `None`. Every deadline of `limits`
/// applies to TLS connections as well; the handshake itself must end
/// within `limits.header_read_timeout`.
pub async fn run_tls(
    listener: TcpListener,
    handler: impl Handler,
    shutdown: impl Future<Output = ()>,
    limits: ConnectionLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
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
        .keep_alive_interval(limits.keep_alive())
        .keep_alive_timeout(limits.keep_alive())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    // Shared, not cloned per connection: a connection borrows it.
    let builder = Arc::new(builder);
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut refused = 0u64;
    // Each connection holds a receiver; `closed()` says all have ended.
    let (drain, _) = watch::channel(());
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
        let builder = builder.clone();
        let mut drained = drain.subscribe();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let Some(acceptor) = acceptor else {
                serve(&builder, stream, peer, handler, drained, limits).await;
                return;
            };
            let handshake =
                tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream));
            let stream = tokio::select! {
                done = handshake => match done {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        // Debug: scanners and plain-HTTP clients do this all day.
                        tracing::debug!(target: "outpost::server", peer = %peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(target: "outpost::server", peer = %peer, timeout_ms = limits.header_read_timeout.as_millis() as u64, "TLS handshake not finished in time; closing");
                        return;
                    }
                },
                // Shutting down: a half-done handshake has nothing in flight.
                _ = drained.changed() => return,
            };
            serve(&builder, stream, peer, handler, drained, limits).await;
        });
    }
    drop(listener);
    tracing::info!(target: "outpost::server",
        connections = drain.receiver_count(),
        grace_ms = grace.as_millis() as u64,
        "shutting down: no longer accepting, draining in-flight requests"
    );
    // No receiver left means nothing to drain; the send error says only that.
    let _ = drain.send(());
    match tokio::time::timeout(grace, drain.closed()).await {
        Ok(()) => tracing::info!(target: "outpost::server", "all connections drained"),
        Err(_) => {
            tracing::warn!(target: "outpost::server", "grace period over; closing remaining connections")
        }
    }
}

/// Serves HTTP on one accepted (and, with TLS, handshaken) connection
/// until it ends, under the idle watchdog.
async fn serve<H, I>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    peer: std::net::SocketAddr,
    handler: H,
    drained: watch::Receiver<()>,
    limits: ConnectionLimits,
) where
    H: Handler,
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new(peer, limits.body_rate()));
    let service = service(handler, activity.clone());
    let connection = builder.serve_connection(TokioIo::new(io), service);
    watch_connection(connection, &activity, drained, limits.idle_timeout()).await;
}

/// The hyper service of one connection: each request in flight while the
/// handler works and its response body streams, its body paced, and a 408
/// in place of the handler's answer when the body was cut off.
fn service<H: Handler>(
    handler: H,
    activity: Arc<Activity>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Tracked<H::Body>>,
    Error = Infallible,
    Future: Send + 'static,
> + Clone {
    hyper::service::service_fn(move |req: Request<Incoming>| {
        let busy = activity.begin();
        let version = req.version();
        let (req, cut) = {
            let (parts, body) = req.into_parts();
            let (body, cut) = RequestBody::new(body, &activity);
            (Request::from_parts(parts, body), cut)
        };
        let response = handler.call(req);
        async move {
            let mut response = response.await;
            if cut.is_some_and(|cut| cut.load(Ordering::Acquire)) {
                response = too_slow(version, &response);
            }
            Ok::<_, Infallible>(response.map(|body| Tracked::new(body, busy)))
        }
    })
}

/// The listener's answer to a request whose body was cut off for arriving
/// too slowly (already logged with the peer), whatever the handler made of
/// the short body: the request was never received whole.
fn too_slow<B: From<Full>>(version: Version, answered: &Response<B>) -> Response<B> {
    let id = reply::error_id();
    tracing::debug!(target: "outpost::server", error_id = %id, handler_status = answered.status().as_u16(), "answering 408 for a request body that was cut off");
    let mut response: Response<B> = reply::error(
        StatusCode::REQUEST_TIMEOUT,
        "request-timeout",
        "the request body arrived too slowly",
        &id,
    );
    if let Some(request_id) = answered.headers().get(request_id::HEADER) {
        response
            .headers_mut()
            .insert(request_id::HEADER, request_id.clone());
    }
    // HTTP/2 has no such header; there the connection gets a GOAWAY.
    if version < Version::HTTP_2 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Drives `connection` to its end under the idle watchdog (see the module
/// docs), the drain signal `drained` and close requests from its bodies.
async fn watch_connection<C>(
    connection: C,
    activity: &Activity,
    mut drained: watch::Receiver<()>,
    idle: Duration,
) where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    let peer = activity.peer;
    let mut connection = std::pin::pin!(connection);
    let check = tokio::time::sleep(idle);
    let mut check = std::pin::pin!(check);
    // When the connection was asked to close, for whatever reason.
    let mut asked: Option<Instant> = None;
    let mut draining = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(target: "outpost::server", peer = %peer, error = %e, "connection ended with an error");
                }
                return;
            }
            // An error means `run` is gone: drain all the same.
            _ = drained.changed(), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
                asked.get_or_insert_with(Instant::now);
            }
            () = activity.close_requested(), if asked.is_none() => {
                connection.as_mut().graceful_shutdown();
                asked = Some(Instant::now());
            }
            () = &mut check => {
                let now = Instant::now();
                let next = match (activity.idle_since(), asked) {
                    // Busy: look again later.
                    (None, _) => now + idle,
                    (Some(since), None) if now < since + idle => since + idle,
                    (Some(_), None) => {
                        tracing::debug!(target: "outpost::server", peer = %peer, idle_ms = idle.as_millis() as u64, "closing a connection with no request in flight");
                        connection.as_mut().graceful_shutdown();
                        asked = Some(now);
                        now + idle
                    }
                    (Some(since), Some(at)) if now < since.max(at) + idle => since.max(at) + idle,
                    (Some(_), Some(_)) => {
                        // An HTTP/2 peer that ignores GOAWAY or never
                        // answers its ping, or one that stopped reading:
                        // nothing is in flight, so dropping loses nothing.
                        tracing::debug!(target: "outpost::server", peer = %peer, "dropped an idle connection that did not close when asked");
                        return;
                    }
                };
                check.as_mut().reset(next);
            }
        }
    }
}

/// Answers requests for [`run`].
pub trait Handler: Clone + Send + Sync + 'static {
    /// The response body: host-made bytes for the cloud and admin API
    /// ([`crate::reply::Full`]); the edge's own type, which can also stream
    /// a guest's body, without boxing on the request path. `From<Full>` so
    /// the listener can answer in it (408 for a body cut off); `Unpin` so
    /// it can be wrapped without pinning.
    type Body: http_body::Body<Data = Bytes, Error = BoxError> + From<Full> + Unpin + Send + 'static;

    /// Answers one request. Its body yields [`crate::BodyError::TooSlow`]
    /// when the client sends it too slowly ([`ConnectionLimits::body_rate`]).
    fn call(
        &self,
        req: Request<RequestBody>,
    ) -> impl Future<Output = Response<Self::Body>> + Send + 'static + use<Self>;
}
