//! The edge's handler for the public listener: request ids, routing by the
//! first path segment, the health report, and functions through
//! [`crate::invoke`].

use crate::body::OutBody;
use crate::error_code::ErrorCode;
use crate::invoke::{self, admission::Admission};
use crate::registry::Registry;
use crate::router::{self, Route};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use outpost_http::{Handler, reply, request_id};
use outpost_store::Storage;
use std::sync::Arc;

/// The edge node's handler: host endpoints and functions.
#[derive(Clone)]
pub struct Edge {
    /// The functions serving now.
    pub registry: Arc<Registry>,
    /// Instance slots, shared by every function.
    pub admission: Arc<Admission>,
    /// For the health report (outbox backlog).
    pub storage: Arc<Storage>,
}

impl Handler for Edge {
    type Body = OutBody;

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
            tracing::debug!(target: "outpost::server", error_id = %id, method = %req.method(), "health check with a method other than GET");
            let code = ErrorCode::MethodNotAllowed;
            reply::error(code.status(), code.as_str(), "use GET", &id)
        }
        Route::Reserved => not_found("no such host endpoint under /_outpost/"),
        Route::NoFunction => not_found("no function at this path; functions are served at /NAME"),
    }
}

fn not_found(message: &str) -> Response<OutBody> {
    let id = reply::error_id();
    tracing::debug!(target: "outpost::server", error_id = %id, "404: {message}");
    let code = ErrorCode::NotFound;
    reply::error(code.status(), code.as_str(), message, &id)
}
