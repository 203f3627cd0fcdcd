//! The edge's handler for the public listener: request ids, routing by the
//! first path segment, the health report, and functions through
//! [`crate::invoke`].

use crate::body::OutBody;
use crate::error_code::ErrorCode;
use crate::invoke::{self, admission::Admission};
use crate::load_failures::LoadFailures;
use crate::registry::Registry;
use crate::replication::status::ReplicationStatus;
use crate::router::{self, Route};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use outpost_http::{BodyError, Handler, RequestBody, reply, request_id};
use outpost_store::Storage;
use std::sync::Arc;

/// The edge node's handler: host endpoints and functions.
#[derive(Clone)]
pub struct Edge {
    /// The functions serving now.
    pub registry: Arc<Registry>,
    /// Names whose files failed to load and serve nothing: 503, not 404.
    pub failures: Arc<LoadFailures>,
    /// Instance slots, shared by every function.
    pub admission: Arc<Admission>,
    /// For the health report (outbox backlog).
    pub storage: Arc<Storage>,
    /// For the health report: whether the cloud refuses this node's stream.
    pub replication: Option<Arc<ReplicationStatus>>,
    /// Log one `outpost::access` line per request.
    pub access_log: bool,
    /// The HTTP cache in front of every function, unless turned off.
    pub cache: Option<Arc<crate::http_cache::HttpCache>>,
}

impl Handler for Edge {
    type Body = OutBody;

    fn call(
        &self,
        req: Request<RequestBody>,
    ) -> impl Future<Output = Response<OutBody>> + Send + 'static + use<> {
        let edge = self.clone();
        async move { handle(&edge, req).await }
    }
}

/// Added to a function's responses when its `[kv] lag-header = true` and
/// the node replicates: how far behind the cloud's feed the node may be,
/// in milliseconds (0 while in sync).
pub const LAG_HEADER: &str = "x-outpost-replication-lag-ms";

/// Answers one request, under its request id (the client's or a new one).
pub async fn handle(edge: &Edge, mut req: Request<RequestBody>) -> Response<OutBody> {
    let request_id = request_id::take_or_make(req.headers_mut());
    let access = edge.access_log.then(|| {
        (
            std::time::Instant::now(),
            req.method().clone(),
            req.uri().path().to_owned(),
        )
    });
    let mut response = route(edge, req, &request_id).await;
    if let Some((started, method, path)) = access {
        crate::access_log::line(&method, &path, &response, started.elapsed(), &request_id);
    }
    response
        .headers_mut()
        .insert(request_id::HEADER, request_id);
    response
}

async fn route(
    edge: &Edge,
    req: Request<RequestBody>,
    request_id: &http::HeaderValue,
) -> Response<OutBody> {
    let registry = &edge.registry;
    match router::route(req.uri().path()) {
        Route::Function(name) => match registry.get(name) {
            Some(function) => {
                let started = std::time::Instant::now();
                let req = req.map(|body| body.map_err(guest_body_error as fn(BodyError) -> _));
                let mut response = match &edge.cache {
                    Some(cache) => {
                        cache
                            .handle(function.clone(), &edge.admission, req, request_id)
                            .await
                    }
                    None => {
                        invoke::invoke(function.clone(), &edge.admission, req, request_id).await
                    }
                };
                if function.policy.kv.lag_header
                    && let Some(status) = &edge.replication
                {
                    let lag = status.lag().as_millis() as u64;
                    response
                        .headers_mut()
                        .insert(LAG_HEADER, http::HeaderValue::from(lag));
                }
                let status = response.status().as_u16();
                function.stats.record(status, started.elapsed());
                edge.admission.metrics.count_request(&function.name, status);
                response
            }
            None if edge.failures.contains(name) => load_failed(name, request_id),
            None => {
                let message = format!("no function named '{name}' is deployed");
                not_found(&message)
            }
        },
        Route::Health if req.method() == Method::GET || req.method() == Method::HEAD => {
            let storage = &edge.storage;
            let blocked = edge
                .replication
                .as_ref()
                .and_then(|status| status.snapshot().blocked);
            let disk = storage.health();
            // Writes refused is a failed check (a balancer should send the
            // node no writes); serving while the cloud refuses this node's
            // stream is only "degraded".
            let (code, status) = if !disk.writable {
                (StatusCode::SERVICE_UNAVAILABLE, "storage-failing")
            } else if blocked.is_some() {
                (StatusCode::OK, "degraded")
            } else {
                (StatusCode::OK, "ok")
            };
            reply::json(
                code,
                serde_json::json!({
                    "status": status,
                    "functions": registry.len(),
                    "node": storage.node_id(),
                    "storage": storage_json(&disk),
                    "outbox": {
                        "records": storage.outbox_len(),
                        "bytes": storage.outbox_bytes(),
                        "quarantined": storage.quarantined(),
                    },
                    "replication": blocked.map(|b| serde_json::json!({
                        "blocked": b.code,
                        "message": b.message,
                    })),
                }),
            )
        }
        Route::Health => {
            let id = reply::error_id();
            tracing::debug!(target: "outpost::server", error_id = %id, method = %req.method(), "health check with a method other than GET");
            let code = ErrorCode::MethodNotAllowed;
            reply::error(code.status(), code.as_str(), "use GET", &id)
        }
        Route::Reserved => not_found("no such host endpoint under /_outpost/"),
        Route::NoFunction => no_function(req.uri().path(), registry),
    }
}

/// The storage part of a health report (also the admin API's).
pub fn storage_json(health: &outpost_store::StorageHealth) -> serde_json::Value {
    serde_json::json!({
        "writable": health.writable,
        "failing_since": health.failing_since.map(crate::activity::rfc3339),
        "last_error": health.last_error,
        "free_bytes": health.free_bytes,
        "writes_outcome_unknown": health.outcome_unknown,
        "writes_refused": health.refused,
        "reopens": health.reopens,
    })
}

/// A request body failure as wasi:http reports it to the guest: a body cut
/// off for arriving too slowly is a read timeout (the listener answers the
/// client 408 itself).
fn guest_body_error(error: BodyError) -> wasmtime_wasi_http::Error {
    match error.into_hyper() {
        Some(e) => wasmtime_wasi_http::Error::Hyper(e),
        None => wasmtime_wasi_http::Error::ConnectionReadTimeout,
    }
}

/// A name whose file is there but failed to load: the reason is in the
/// log and the admin API (it may name paths and settings), not the body.
fn load_failed(name: &str, request_id: &http::HeaderValue) -> Response<OutBody> {
    let id = reply::error_id();
    tracing::warn!(target: "outpost::server", function = %name, request_id = %request_id::as_str(request_id), error_id = %id, "503: the function's file failed to load; the load error is logged by outpost::deployer and shown by the admin API");
    let code = ErrorCode::LoadFailed;
    let message = format!(
        "function '{name}' is deployed but its file failed to load; it answers again once a good file arrives"
    );
    let mut response = reply::error(code.status(), code.as_str(), &message, &id);
    response.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("5"),
    );
    response
}

/// A 404 whose first path segment is no function name: says what a name
/// is, and points at the deployed one a different case would reach.
fn no_function(path: &str, registry: &Registry) -> Response<OutBody> {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    if first.is_empty() {
        return not_found("no function at /; functions are served at /NAME");
    }
    let lower = first.to_ascii_lowercase();
    let hint = if lower != first && registry.get(&lower).is_some() {
        format!(" (did you mean /{lower}? names are lowercase)")
    } else {
        String::new()
    };
    not_found(&format!(
        "no function at this path: '{}' is not a function name{hint}; names are {}",
        reply::one_line(&first.chars().take(64).collect::<String>()),
        outpost_wire::names::RULE
    ))
}

fn not_found(message: &str) -> Response<OutBody> {
    let id = reply::error_id();
    tracing::debug!(target: "outpost::server", error_id = %id, "404: {message}");
    let code = ErrorCode::NotFound;
    reply::error(code.status(), code.as_str(), message, &id)
}
