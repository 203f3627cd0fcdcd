//! Guest stdout/stderr: each line goes to the host log under the function's
//! name, with a per-request byte budget so a chatty guest cannot flood it.

use bytes::Bytes;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes of guest output logged per request (stdout and stderr together);
/// the rest is counted and dropped.
pub const DEFAULT_BUDGET: usize = 64 * 1024;

/// Longest line logged as one record; longer lines are split.
const MAX_LINE: usize = 4096;

/// What one request's stdout and stderr share.
#[derive(Debug)]
struct Shared {
    function: Arc<str>,
    request_id: http::HeaderValue,
    /// Bytes still allowed into the log for this request.
    budget: AtomicUsize,
    /// Bytes dropped after the budget ran out, reported once at the end.
    dropped: AtomicUsize,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let dropped = *self.dropped.get_mut();
        if dropped > 0 {
            tracing::warn!(target: "outpost::guest", function = %self.function, request_id = %outpost_http::request_id::as_str(&self.request_id), dropped_bytes = dropped, "guest output over the per-request budget was dropped");
        }
    }
}

/// A `StdoutStream` for one stream (`stdout` or `stderr`) of one request.
#[derive(Clone)]
pub struct GuestLog {
    shared: Arc<Shared>,
    stream: &'static str,
}

impl GuestLog {
    /// The stdout and stderr pair for one request.
    pub fn pair(
        function: Arc<str>,
        request_id: http::HeaderValue,
        budget: usize,
    ) -> (GuestLog, GuestLog) {
        let shared = Arc::new(Shared {
            function,
            request_id,
            budget: AtomicUsize::new(budget),
            dropped: AtomicUsize::new(0),
        });
        (
            GuestLog {
                shared: shared.clone(),
                stream: "stdout",
            },
            GuestLog {
                shared,
                stream: "stderr",
            },
        )
    }

    fn writer(&self) -> LineWriter {
        LineWriter {
            log: self.clone(),
            partial: Vec::new(),
        }
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.writer())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.writer())
    }
}

/// Splits writes into lines; a partial line waits for its newline (or for
/// the stream to be dropped).
struct LineWriter {
    log: GuestLog,
    partial: Vec<u8>,
}

impl LineWriter {
    fn accept(&mut self, mut bytes: &[u8]) {
        let shared = &self.log.shared;
        let allowed = shared
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(bytes.len()))
            })
            .unwrap_or(0)
            .min(bytes.len());
        if allowed < bytes.len() {
            shared
                .dropped
                .fetch_add(bytes.len() - allowed, Ordering::Relaxed);
            bytes = &bytes[..allowed];
        }
        for chunk in bytes.split_inclusive(|b| *b == b'\n') {
            self.partial.extend_from_slice(chunk);
            if chunk.ends_with(b"\n") || self.partial.len() >= MAX_LINE {
                self.emit();
            }
        }
    }

    fn emit(&mut self) {
        if self.partial.is_empty() {
            return;
        }
        let line = String::from_utf8_lossy(&self.partial);
        let line = line.trim_end_matches(['\n', '\r']);
        if !line.is_empty() {
            let shared = &self.log.shared;
            tracing::info!(target: "outpost::guest", function = %shared.function, request_id = %outpost_http::request_id::as_str(&shared.request_id), stream = %self.log.stream, "{line}");
        }
        self.partial.clear();
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        self.emit();
    }
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.accept(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.accept(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
