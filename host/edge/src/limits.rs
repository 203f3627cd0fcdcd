//! Per-request limits: defaults, host config (`[limits]` in
//! `outpost.toml`), per-function settings (`[limits]` in `NAME.toml`, which
//! may only tighten the host's), and the request-body meter.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use serde::Deserialize;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

/// What one request of a function may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall time for the whole request, guest work and streaming included.
    pub timeout: Duration,
    /// Linear memory one instance may grow to.
    pub max_memory_bytes: usize,
    pub max_request_body_bytes: u64,
    pub max_response_body_bytes: u64,
    /// Outbound HTTP requests one request may make.
    pub max_outbound_requests: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            max_memory_bytes: 128 * 1024 * 1024,
            max_request_body_bytes: 10 * 1024 * 1024,
            max_response_body_bytes: 100 * 1024 * 1024,
            max_outbound_requests: 32,
        }
    }
}

/// `[limits]` as written in a config file; every key optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LimitsSection {
    pub timeout_ms: Option<u64>,
    pub max_memory_bytes: Option<usize>,
    pub max_request_body_bytes: Option<u64>,
    pub max_response_body_bytes: Option<u64>,
    pub max_outbound_requests: Option<u32>,
}

/// A function's limit above the host's.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("[limits] {key} = {value} is above the host's limit of {host}")]
pub struct AboveHostLimit {
    pub key: &'static str,
    pub value: u64,
    pub host: u64,
}

impl Limits {
    /// The host's limits with `section` applied on top (host config).
    pub fn with(self, section: &LimitsSection) -> Limits {
        Limits {
            timeout: section
                .timeout_ms
                .map_or(self.timeout, Duration::from_millis),
            max_memory_bytes: section.max_memory_bytes.unwrap_or(self.max_memory_bytes),
            max_request_body_bytes: section
                .max_request_body_bytes
                .unwrap_or(self.max_request_body_bytes),
            max_response_body_bytes: section
                .max_response_body_bytes
                .unwrap_or(self.max_response_body_bytes),
            max_outbound_requests: section
                .max_outbound_requests
                .unwrap_or(self.max_outbound_requests),
        }
    }

    /// A function's limits: the host's, tightened by `section`. A value
    /// above the host's is refused, so one function's settings can never
    /// take more than the operator allowed.
    pub fn narrowed(self, section: &LimitsSection) -> Result<Limits, AboveHostLimit> {
        let narrowed = self.with(section);
        let pairs = [
            (
                "timeout-ms",
                narrowed.timeout.as_millis() as u64,
                self.timeout.as_millis() as u64,
            ),
            (
                "max-memory-bytes",
                narrowed.max_memory_bytes as u64,
                self.max_memory_bytes as u64,
            ),
            (
                "max-request-body-bytes",
                narrowed.max_request_body_bytes,
                self.max_request_body_bytes,
            ),
            (
                "max-response-body-bytes",
                narrowed.max_response_body_bytes,
                self.max_response_body_bytes,
            ),
            (
                "max-outbound-requests",
                u64::from(narrowed.max_outbound_requests),
                u64::from(self.max_outbound_requests),
            ),
        ];
        for (key, value, host) in pairs {
            if value > host {
                return Err(AboveHostLimit { key, value, host });
            }
        }
        Ok(narrowed)
    }
}

/// A request body that stops at a byte limit and remembers that it did,
/// so the host can answer 413 whatever the guest made of the short read.
pub struct MeteredBody<B> {
    inner: B,
    remaining: u64,
    /// Set once the limit was crossed.
    exceeded: Arc<AtomicBool>,
}

impl<B> MeteredBody<B> {
    pub fn new(inner: B, limit: u64) -> (Self, Arc<AtomicBool>) {
        let exceeded = Arc::new(AtomicBool::new(false));
        (
            Self {
                inner,
                remaining: limit,
                exceeded: exceeded.clone(),
            },
            exceeded,
        )
    }
}

/// The error a guest sees when it reads past the body limit.
#[derive(Debug, thiserror::Error)]
#[error("request body over the limit")]
pub struct BodyTooLarge;

impl<B> Body for MeteredBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                if len > this.remaining {
                    this.exceeded.store(true, Ordering::Release);
                    this.remaining = 0;
                    return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpRequestBodySize(
                        None,
                    ))));
                }
                this.remaining -= len;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            other => other.map(|_| None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_may_tighten_but_not_raise_host_limits() {
        let host = Limits::default();
        let tighter = host
            .narrowed(&LimitsSection {
                timeout_ms: Some(1000),
                max_memory_bytes: Some(1 << 20),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(tighter.timeout, Duration::from_secs(1));
        assert_eq!(tighter.max_memory_bytes, 1 << 20);
        assert_eq!(tighter.max_outbound_requests, host.max_outbound_requests);
        let err = host
            .narrowed(&LimitsSection {
                timeout_ms: Some(60_000),
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(err.key, "timeout-ms");
    }
}
