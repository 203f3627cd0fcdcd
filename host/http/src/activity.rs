//! What one connection is doing, for its idle watchdog in
//! [`crate::listener`]: how many requests are in flight, since when none
//! has been, and whether a request body asked for the connection to close.
//!
//! A request is in flight from the moment hyper hands it to the service
//! until its response body has ended or been dropped ([`Tracked`]), so a
//! slow download is never taken for an idle connection.

use crate::rate::BodyRate;
use http_body::{Body, Frame, SizeHint};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use tokio::sync::Notify;
use tokio::time::Instant;

/// One connection's activity, shared by its watchdog, its requests and
/// their bodies.
pub(crate) struct Activity {
    pub(crate) peer: SocketAddr,
    pub(crate) body_rate: BodyRate,
    /// Accept time: `idle_since_ns` counts from here.
    born: Instant,
    in_flight: AtomicUsize,
    /// When the last request ended, in nanoseconds after `born`.
    idle_since_ns: AtomicU64,
    close: Notify,
}

impl Activity {
    pub(crate) fn new(peer: SocketAddr, body_rate: BodyRate) -> Self {
        Self {
            peer,
            body_rate,
            born: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ns: AtomicU64::new(0),
            close: Notify::new(),
        }
    }

    /// A request starts; it is in flight until the guard drops.
    pub(crate) fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    /// Since when nothing has been in flight; `None` while something is.
    /// Before the first request, the accept time.
    pub(crate) fn idle_since(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let ns = self.idle_since_ns.load(Ordering::Acquire);
        Some(self.born + std::time::Duration::from_nanos(ns))
    }

    /// Asks the watchdog to shut the connection down gracefully.
    pub(crate) fn request_close(&self) {
        // `notify_one` keeps a permit when the watchdog is not waiting at
        // this instant, so the request is not lost.
        self.close.notify_one();
    }

    /// Resolves once [`Activity::request_close`] was called.
    pub(crate) async fn close_requested(&self) {
        self.close.notified().await;
    }
}

/// A request in flight; dropping it ends the request.
pub(crate) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let activity = &self.0;
        let now = u64::try_from(activity.born.elapsed().as_nanos()).unwrap_or(u64::MAX);
        // The time before the count: the watchdog reads the count first, so
        // it never pairs "nothing in flight" with a stale time. `fetch_max`
        // because streams of one HTTP/2 connection end on several threads.
        activity.idle_since_ns.fetch_max(now, Ordering::AcqRel);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request in flight until it ends.
pub(crate) struct Tracked<B> {
    body: B,
    busy: Option<Busy>,
}

impl<B> Tracked<B> {
    pub(crate) fn new(body: B, busy: Busy) -> Self {
        Self {
            body,
            busy: Some(busy),
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            // Ended; hyper may keep the body a while before dropping it.
            this.busy = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
