//! A guest's response body, which also drives the guest's still-running
//! `handle` call, so streaming needs no extra task per request.

use crate::reply::{self, BoxError};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// The rest of a guest's `handle` call: instantiate, run, drop the store.
pub type GuestCall = Pin<Box<dyn Future<Output = wasmtime::Result<()>> + Send>>;

/// Streams what the guest writes while polling the guest itself.
///
/// The guest writes into a small channel and blocks when it is full, so
/// polling both from one place is what lets a large body flow. When the body
/// is dropped early (client gone), the guest call is dropped with it, which
/// cancels the guest and frees its instance.
pub struct GuestBody {
    inner: HyperOutgoingBody,
    /// `None` once the guest returned from `handle`.
    guest: Option<GuestCall>,
    function: Arc<str>,
}

impl GuestBody {
    pub fn new(inner: HyperOutgoingBody, guest: Option<GuestCall>, function: Arc<str>) -> Self {
        Self {
            inner,
            guest,
            function,
        }
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
        if let Some(guest) = this.guest.as_mut()
            && let Poll::Ready(result) = guest.as_mut().poll(cx)
        {
            this.guest = None;
            if let Err(e) = result {
                // Headers are gone already; the honest signal left is to
                // abort the body so the client sees an incomplete response.
                let id = reply::error_id();
                tracing::error!(function = %this.function, error_id = %id, detail = %reply::one_line(&format!("{e:?}")), "guest failed while streaming its response");
                return Poll::Ready(Some(Err(format!(
                    "guest failed mid-response (error id {id})"
                )
                .into())));
            }
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                if let Some(guest) = this.guest.take() {
                    // The body is complete but `handle` has not returned
                    // (work after the response). Let it finish on its own
                    // rather than cancel it; rare, so a task is fine here.
                    let function = this.function.clone();
                    tokio::spawn(async move {
                        if let Err(e) = guest.await {
                            tracing::error!(function = %function, detail = %reply::one_line(&format!("{e:?}")), "guest failed after sending its response");
                        }
                    });
                }
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            other => other.map_err(|e| -> BoxError { Box::new(e) }),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.guest.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
