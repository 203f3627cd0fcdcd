//! Guest stdout/stderr: each line goes to the host log under the function's
//! name, with a per-request byte budget so a chatty guest cannot flood it.

use bytes::Bytes;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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
    /// Each stream's unfinished line. Kept here, not per output stream
    /// handle: a guest may write one line through several `get-stderr()`
    /// handles, and it is still one line.
    lines: [Mutex<Line>; 2],
}

/// One stream's line being assembled.
#[derive(Debug, Default)]
struct Line {
    partial: Vec<u8>,
    /// The previous line was Rust's `... panicked at FILE:LINE:COL:`
    /// header; the message that follows goes on the same record.
    panic_header: Option<String>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        for (stream, line) in STREAMS.iter().zip(&mut self.lines) {
            let line = line.get_mut().unwrap_or_else(|p| p.into_inner());
            if !line.partial.is_empty() {
                let text = std::mem::take(&mut line.partial);
                emit(&self.function, &self.request_id, stream, line, &text);
            }
            if let Some(header) = line.panic_header.take() {
                log_panic(&self.function, &self.request_id, stream, &header, "");
            }
        }
        let dropped = *self.dropped.get_mut();
        if dropped > 0 {
            tracing::warn!(target: "outpost::guest", function = %self.function, request_id = %outpost_http::request_id::as_str(&self.request_id), dropped_bytes = dropped, "guest output over the per-request budget was dropped");
        }
    }
}

/// The streams, in the order of [`Shared::lines`].
const STREAMS: [&str; 2] = ["stdout", "stderr"];

/// A `StdoutStream` for one stream (`stdout` or `stderr`) of one request.
#[derive(Clone)]
pub struct GuestLog {
    shared: Arc<Shared>,
    /// Index into [`STREAMS`] and [`Shared::lines`].
    stream: usize,
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
            lines: Default::default(),
        });
        (
            GuestLog {
                shared: shared.clone(),
                stream: 0,
            },
            GuestLog { shared, stream: 1 },
        )
    }

    fn writer(&self) -> LineWriter {
        LineWriter { log: self.clone() }
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
/// the end of the request).
struct LineWriter {
    log: GuestLog,
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
        let stream = STREAMS[self.log.stream];
        let mut line = shared.lines[self.log.stream]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for chunk in bytes.split_inclusive(|b| *b == b'\n') {
            line.partial.extend_from_slice(chunk);
            if chunk.ends_with(b"\n") || line.partial.len() >= MAX_LINE {
                let text = std::mem::take(&mut line.partial);
                emit(
                    &shared.function,
                    &shared.request_id,
                    stream,
                    &mut line,
                    &text,
                );
            }
        }
    }
}

/// Logs one line of guest output: at INFO, except a Rust panic, whose
/// header and message become one WARN record, and a stderr line starting
/// `error: ` (how the SDK reports a handler's `Err`), at ERROR.
fn emit(
    function: &str,
    request_id: &http::HeaderValue,
    stream: &str,
    state: &mut Line,
    bytes: &[u8],
) {
    let text = String::from_utf8_lossy(bytes);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if let Some(header) = state.panic_header.take() {
        log_panic(function, request_id, stream, &header, text);
        return;
    }
    if is_panic_header(text) {
        state.panic_header = Some(text.to_owned());
        return;
    }
    if stream == "stderr" && text.starts_with("error: ") {
        // The SDK's handler errors (and any guest's `error:` line) are
        // errors in the node's log too.
        tracing::error!(target: "outpost::guest", function = %function, request_id = %outpost_http::request_id::as_str(request_id), stream = %stream, "{text}");
        return;
    }
    tracing::info!(target: "outpost::guest", function = %function, request_id = %outpost_http::request_id::as_str(request_id), stream = %stream, "{text}");
}

/// `thread '<unnamed>' (1) panicked at src/lib.rs:5:5:`, as Rust's
/// default panic hook writes it (older toolchains leave out the thread
/// id; the message is on the next line).
fn is_panic_header(line: &str) -> bool {
    line.starts_with("thread '") && line.contains(" panicked at ") && line.ends_with(':')
}

fn log_panic(
    function: &str,
    request_id: &http::HeaderValue,
    stream: &str,
    header: &str,
    message: &str,
) {
    let at = header
        .split_once(" panicked at ")
        .map_or(header, |(_, at)| at)
        .trim_end_matches(':');
    tracing::warn!(target: "outpost::guest", function = %function, request_id = %outpost_http::request_id::as_str(request_id), stream = %stream, at = %at, "guest panicked: {message}");
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
