//! The HTTP listener (accept, HTTP/1 and HTTP/2 with keep-alive, graceful
//! drain on shutdown) and the edge's routing of each request.

use crate::invoke;
use crate::registry::Registry;
use crate::reply::{self, OutBody};
use crate::router::{self, Route};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Accepts connections on `listener` and answers each request with
/// `handler` until `shutdown` resolves, then stops accepting and gives
/// in-flight requests up to `grace` to finish. Used by both `serve` (edge)
/// and `cloud`.
pub async fn run(
    listener: TcpListener,
    handler: impl Handler,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).keep_alive(true);
    builder.http2().timer(TokioTimer::new());
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
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = hyper::service::service_fn(move |req| {
            let response = handler.call(req);
            async move { Ok::<_, Infallible>(response.await) }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
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
}

impl Handler for Edge {
    fn call(
        &self,
        req: Request<Incoming>,
    ) -> impl Future<Output = Response<OutBody>> + Send + 'static + use<> {
        let registry = self.registry.clone();
        async move { handle(&registry, req).await }
    }
}

/// Routes one request.
pub async fn handle(registry: &Registry, req: Request<Incoming>) -> Response<OutBody> {
    match router::route(req.uri().path()) {
        Route::Function(name) => match registry.get(name) {
            Some(function) => invoke::invoke(function, req).await,
            None => {
                let message = format!("no function named '{name}' is deployed");
                not_found(&message)
            }
        },
        Route::Health if req.method() == Method::GET || req.method() == Method::HEAD => {
            reply::json(
                StatusCode::OK,
                serde_json::json!({ "status": "ok", "functions": registry.len() }),
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
