//! A guest's response body, which also drives the guest's still-running
//! `handle` call, so streaming needs no extra task per request. It enforces
//! the request deadline and the response size limit while it streams.

use crate::error_code::ErrorCode;
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use outpost_http::reply::{self, BoxError};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use tokio::time::Sleep;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// How a guest's `handle` call ended.
pub struct GuestOutcome {
    pub result: wasmtime::Result<()>,
    /// The guest asked for more memory than its limit allows.
    pub memory_limit_hit: bool,
}

/// The rest of a guest's `handle` call: instantiate, run, drop the store.
pub type GuestCall = Pin<Box<dyn Future<Output = GuestOutcome> + Send>>;

/// Streams what the guest writes while polling the guest itself.
///
/// The guest writes into a small channel and blocks when it is full, so
/// polling both from one place is what lets a large body flow. When the body
/// is dropped early (client gone), the guest call is dropped with it, which
/// cancels the guest and frees its instance.
pub struct GuestBody {
    /// Frames already taken from `inner` (see [`drain_finished`]), sent
    /// before anything else.
    buffered: VecDeque<Result<Frame<Bytes>, BoxError>>,
    inner: HyperOutgoingBody,
    /// `None` once the guest returned from `handle`.
    guest: Option<GuestCall>,
    function: Arc<str>,
    /// The request's deadline; streaming stops when it fires.
    deadline: Pin<Box<Sleep>>,
    /// Bytes the body may still carry.
    remaining: u64,
    /// The size limit, for messages.
    limit: u64,
}

impl GuestBody {
    pub fn new(
        inner: HyperOutgoingBody,
        guest: Option<GuestCall>,
        function: Arc<str>,
        deadline: Pin<Box<Sleep>>,
        limit: u64,
    ) -> Self {
        Self {
            buffered: VecDeque::new(),
            inner,
            guest,
            function,
            deadline,
            remaining: limit,
            limit,
        }
    }

    /// Starts the body with `frames` already read from it; their data
    /// counts against the size limit.
    pub fn with_buffered(mut self, frames: VecDeque<Result<Frame<Bytes>, BoxError>>) -> Self {
        let len: usize = frames
            .iter()
            .filter_map(|f| f.as_ref().ok()?.data_ref().map(Bytes::len))
            .sum();
        self.remaining = self.remaining.saturating_sub(len as u64);
        self.buffered = frames;
        self
    }

    /// Ends the body with an error (the client sees a cut-off response) and
    /// logs why under a fresh error id.
    fn abort(
        &mut self,
        code: ErrorCode,
        detail: &str,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let id = reply::error_id();
        tracing::error!(target: "outpost::guest_body", function = %self.function, error_id = %id, code = %code, detail = %detail, "response cut off");
        self.guest = None;
        Poll::Ready(Some(Err(format!("{code} (error id {id})").into())))
    }
}

impl Body for GuestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(frame) = this.buffered.pop_front() {
            return Poll::Ready(Some(frame));
        }
        if let Some(guest) = this.guest.as_mut()
            && let Poll::Ready(outcome) = guest.as_mut().poll(cx)
        {
            this.guest = None;
            if let Err(e) = outcome.result {
                // Headers are gone already; the honest signal left is to
                // abort the body so the client sees an incomplete response.
                let code = if outcome.memory_limit_hit {
                    ErrorCode::MemoryLimit
                } else {
                    ErrorCode::GuestTrap
                };
                return this.abort(code, &reply::one_line(&format!("{e:?}")));
            }
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                if len > this.remaining {
                    let detail = format!("body over the {}-byte limit", this.limit);
                    return this.abort(ErrorCode::ResponseTooLarge, &detail);
                }
                this.remaining -= len;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => {
                if let Some(guest) = this.guest.take() {
                    // The body is complete but `handle` has not returned
                    // (work after the response). Let it finish on its own,
                    // still under the deadline; rare, so a task is fine.
                    let (function, deadline) = (this.function.clone(), this.deadline.deadline());
                    tokio::spawn(async move {
                        match tokio::time::timeout_at(deadline, guest).await {
                            Ok(GuestOutcome { result: Ok(()), .. }) => {}
                            Ok(GuestOutcome { result: Err(e), .. }) => {
                                tracing::error!(target: "outpost::guest_body", function = %function, detail = %reply::one_line(&format!("{e:?}")), "guest failed after sending its response");
                            }
                            Err(_) => {
                                tracing::error!(target: "outpost::guest_body", function = %function, "guest still running at its deadline after sending its response; stopped");
                            }
                        }
                    });
                }
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    return this.abort(
                        ErrorCode::Deadline,
                        "request deadline reached while streaming",
                    );
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.buffered.is_empty() && self.guest.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What a finished guest's response body held, read without waiting.
pub enum Drained {
    /// All of it, data only: it can go out whole, with a content-length.
    Whole(Bytes),
    /// What could be read before the body would have waited, or up to and
    /// including trailers or an error; the rest streams.
    Started(VecDeque<Result<Frame<Bytes>, BoxError>>),
    /// More data than `limit`.
    TooLarge,
}

/// Reads what a guest that has already returned from `handle` left in its
/// response body. Its store is gone, so whatever it wrote is in the body's
/// channel: a small response comes out whole, and goes to the client with a
/// content-length instead of chunked, with no further polling of a channel.
pub fn drain_finished(body: &mut HyperOutgoingBody, limit: u64) -> Drained {
    let mut cx = Context::from_waker(Waker::noop());
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut len = 0u64;
    let mut tail = None;
    loop {
        match Pin::new(&mut *body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    len += data.len() as u64;
                    if len > limit {
                        return Drained::TooLarge;
                    }
                    chunks.push(data);
                }
                Err(trailers) => {
                    tail = Some(Ok(trailers));
                    break;
                }
            },
            Poll::Ready(Some(Err(e))) => {
                tail = Some(Err(Box::new(e) as BoxError));
                break;
            }
            Poll::Ready(None) => return Drained::Whole(concat(chunks)),
            Poll::Pending => break,
        }
    }
    let mut frames: VecDeque<_> = chunks.into_iter().map(|d| Ok(Frame::data(d))).collect();
    frames.extend(tail);
    Drained::Started(frames)
}

fn concat(mut chunks: Vec<Bytes>) -> Bytes {
    if chunks.len() <= 1 {
        return chunks.pop().unwrap_or_default();
    }
    let mut whole = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
    for chunk in chunks {
        whole.extend_from_slice(&chunk);
    }
    whole.freeze()
}
