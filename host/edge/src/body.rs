//! The body of every response the edge sends: bytes the host made, or a
//! guest's body (streamed, or whole once the guest has returned). An enum,
//! not a box, so the request path allocates nothing for it.

pub mod tee;

use crate::guest_body::GuestBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use outpost_http::reply::{BoxError, Full};
use std::pin::Pin;
use std::task::{Context, Poll};

/// A host-made or a guest's response body.
pub enum OutBody {
    /// Made by the host, or a finished guest's whole body.
    Full(Full),
    /// A guest's body that streams, driving the guest while it does.
    Guest(GuestBody),
    /// A body the HTTP cache keeps a copy of as it streams (boxed: only a
    /// cacheable response that is not already whole pays for it).
    Cached(Box<tee::Tee>),
}

impl From<Full> for OutBody {
    fn from(full: Full) -> Self {
        OutBody::Full(full)
    }
}

impl Body for OutBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            OutBody::Full(body) => Pin::new(body).poll_frame(cx),
            OutBody::Guest(body) => Pin::new(body).poll_frame(cx),
            OutBody::Cached(body) => Pin::new(&mut **body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            OutBody::Full(body) => body.is_end_stream(),
            OutBody::Guest(body) => body.is_end_stream(),
            OutBody::Cached(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            OutBody::Full(body) => body.size_hint(),
            OutBody::Guest(body) => body.size_hint(),
            OutBody::Cached(body) => body.size_hint(),
        }
    }
}
