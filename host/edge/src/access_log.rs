//! The request log (`--access-log`): one `outpost::access` line per
//! request, JSON under `--log-format json` like every other line.
//!
//! The path is logged without its query: queries carry tokens and
//! personal data more often than paths do.

use crate::body::OutBody;
use crate::router::{self, Route};
use http::{Method, Response};
use std::time::Duration;

/// How long creating the guest instance took, put on a function's
/// response by [`crate::invoke::invoke`].
#[derive(Debug, Clone, Copy)]
pub struct Instantiated(pub Duration);

/// Logs one answered request; `elapsed` runs to the response head (a
/// streamed body may still be running).
pub fn line(
    method: &Method,
    path: &str,
    response: &Response<OutBody>,
    elapsed: Duration,
    request_id: &http::HeaderValue,
) {
    let function = match router::route(path) {
        Route::Function(name) => name,
        Route::Health | Route::Reserved => "_outpost",
        Route::NoFunction => "-",
    };
    let instantiate_us = response
        .extensions()
        .get::<Instantiated>()
        .map(|i| i.0.as_micros() as u64);
    let error = response
        .headers()
        .get(outpost_http::reply::ERROR_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info!(target: "outpost::access",
        function,
        method = %method,
        path = %path.chars().take(512).collect::<String>(),
        status = response.status().as_u16(),
        ms = elapsed.as_secs_f64() * 1000.0,
        instantiate_us,
        request_id = %outpost_http::request_id::as_str(request_id),
        error_id = %error,
        "request"
    );
}
