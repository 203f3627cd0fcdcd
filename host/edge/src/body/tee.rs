//! The body of a response the cache stores: passes every frame on to the
//! client as it comes and keeps a copy, then hands the whole copy to the
//! cache once the body has ended cleanly. A body over the limit, or one
//! that fails, is passed on and not stored.

use super::OutBody;
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use outpost_http::reply::BoxError;
use std::pin::Pin;
use std::task::{Context, Poll};

/// What receives the whole body.
type Sink = Box<dyn FnOnce(Bytes) + Send>;

/// See the module documentation.
pub struct Tee {
    inner: OutBody,
    copy: BytesMut,
    limit: usize,
    /// `None` once stored or given up.
    sink: Option<Sink>,
}

impl Tee {
    /// `body`, copied into `sink` if it ends cleanly within `limit` bytes.
    /// A body already whole is stored at once.
    pub fn wrap(body: OutBody, limit: usize, sink: impl FnOnce(Bytes) + Send + 'static) -> OutBody {
        if let OutBody::Full(full) = &body
            && let Some(bytes) = &full.0
        {
            if bytes.len() <= limit {
                sink(bytes.clone());
            }
            return body;
        }
        if let OutBody::Full(full) = &body
            && full.0.is_none()
        {
            sink(Bytes::new());
            return body;
        }
        OutBody::Cached(Box::new(Tee {
            inner: body,
            copy: BytesMut::new(),
            limit,
            sink: Some(Box::new(sink)),
        }))
    }
}

impl Tee {
    fn finish(&mut self) {
        if let Some(sink) = self.sink.take() {
            sink(std::mem::take(&mut self.copy).freeze());
        }
    }
}

impl Body for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        match &frame {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && this.sink.is_some()
                {
                    if this.copy.len() + data.len() > this.limit {
                        this.sink = None;
                        this.copy = BytesMut::new();
                    } else {
                        this.copy.extend_from_slice(data);
                    }
                }
                // hyper stops polling a body that says it has ended (one of
                // known length, once that much is sent): the last frame is
                // where the copy is whole.
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            Poll::Ready(Some(Err(_))) => this.sink = None,
            Poll::Ready(None) => this.finish(),
            Poll::Pending => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
