//! Request bodies with a minimum rate: [`RequestBody`] is what a
//! [`Handler`](crate::Handler) reads, hyper's body with a clock that cuts
//! off a client trickling its body ([`BodyError::TooSlow`]).
//!
//! The rule ([`BodyRate`]): while the handler waits for the body, every
//! `min_bytes` (or the end of the body) must arrive within `window` of
//! waiting. Only time spent waiting counts: a handler that reads slowly
//! holds the client back through flow control, which is not the client's
//! fault. When the window runs out the body yields `TooSlow` (every poll
//! from then on), the connection is asked to close, and the listener
//! answers 408 in place of whatever the handler makes of the short body.

use crate::activity::Activity;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

pub use crate::rate::{BodyRate, MAX_BODY_WINDOW, MIN_BODY_BYTES};

/// Why a [`RequestBody`] could not be read.
#[derive(Debug)]
#[non_exhaustive]
pub enum BodyError {
    /// The connection failed: the client reset the stream, closed the
    /// connection early, or broke the protocol.
    Read(hyper::Error),
    /// The client sent less than the [`BodyRate`] asks; the listener
    /// answers 408 and closes the connection.
    TooSlow(BodyRate),
}

impl BodyError {
    /// Whether the body was cut off for arriving too slowly (answer 408).
    pub fn is_too_slow(&self) -> bool {
        matches!(self, BodyError::TooSlow(_))
    }

    /// The connection's error, for consumers whose error types know
    /// hyper's; `None` for [`BodyError::TooSlow`].
    pub fn into_hyper(self) -> Option<hyper::Error> {
        match self {
            BodyError::Read(e) => Some(e),
            BodyError::TooSlow(_) => None,
        }
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Read(e) => write!(f, "cannot read the request body: {e}"),
            BodyError::TooSlow(rate) => write!(
                f,
                "request body too slow: less than {} bytes within {} ms",
                rate.min_bytes,
                rate.window.as_millis()
            ),
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BodyError::Read(e) => Some(e),
            BodyError::TooSlow(_) => None,
        }
    }
}

/// A request's body as a handler reads it: hyper's body, cut off with
/// [`BodyError::TooSlow`] when it arrives slower than the listener's
/// [`BodyRate`].
pub struct RequestBody {
    inner: Incoming,
    /// `None` for a body that was empty from the start (most GETs), which
    /// then costs nothing.
    paced: Option<Paced>,
}

struct Paced {
    pace: Pace,
    activity: Arc<Activity>,
    /// Read by the listener once the handler answers: set, it answers 408.
    cut: Arc<AtomicBool>,
}

impl RequestBody {
    /// Wraps `inner`; the flag it returns is set once the body is cut off.
    pub(crate) fn new(
        inner: Incoming,
        activity: &Arc<Activity>,
    ) -> (Self, Option<Arc<AtomicBool>>) {
        if inner.is_end_stream() {
            return (Self { inner, paced: None }, None);
        }
        let cut = Arc::new(AtomicBool::new(false));
        let paced = Paced {
            pace: Pace::new(activity.body_rate),
            activity: activity.clone(),
            cut: cut.clone(),
        };
        (
            Self {
                inner,
                paced: Some(paced),
            },
            Some(cut),
        )
    }
}

impl fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBody")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let Some(paced) = &mut this.paced else {
            return Pin::new(&mut this.inner)
                .poll_frame(cx)
                .map_err(BodyError::Read);
        };
        if paced.pace.cut {
            // Again the error, never `None`: a consumer that polls on must
            // not take a cut-off body for a complete one.
            return Poll::Ready(Some(Err(BodyError::TooSlow(paced.pace.rate))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                paced
                    .pace
                    .arrived(frame.data_ref().map_or(0, |data| data.len() as u64));
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                paced.pace.arrived(0);
                Poll::Ready(Some(Err(BodyError::Read(e))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                ready!(paced.pace.poll_wait(cx));
                paced.cut_off();
                Poll::Ready(Some(Err(BodyError::TooSlow(paced.pace.rate))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Paced {
    fn cut_off(&mut self) {
        self.pace.cut = true;
        self.pace.timer = None;
        self.cut.store(true, Ordering::Release);
        let rate = self.pace.rate;
        tracing::warn!(target: "outpost::server",
            peer = %self.activity.peer,
            min_bytes = rate.min_bytes,
            window_ms = rate.window.as_millis() as u64,
            received = self.pace.received,
            "request body too slow; cut off, answering 408 and closing the connection"
        );
        self.activity.request_close();
    }
}

/// The clock behind [`BodyRate`], apart from any body so it can be tested
/// alone.
struct Pace {
    rate: BodyRate,
    /// Bytes received in the current window.
    received: u64,
    /// Time waited in the current window, not counting a wait under way.
    waited: Duration,
    /// When the wait under way began.
    waiting_since: Option<Instant>,
    /// Made at the first wait only: bodies that arrive whole never need one.
    timer: Option<Pin<Box<Sleep>>>,
    cut: bool,
}

impl Pace {
    fn new(rate: BodyRate) -> Self {
        Self {
            rate,
            received: 0,
            waited: Duration::ZERO,
            waiting_since: None,
            timer: None,
            cut: false,
        }
    }

    /// A frame of `len` data bytes (0 for trailers or an error) arrived.
    fn arrived(&mut self, len: u64) {
        if let Some(since) = self.waiting_since.take() {
            self.waited += since.elapsed();
        }
        self.received += len;
        if self.received >= self.rate.min_bytes {
            self.received = 0;
            self.waited = Duration::ZERO;
        }
    }

    /// The consumer waits for more: ready once the window has run out.
    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let since = *self.waiting_since.get_or_insert_with(Instant::now);
        let deadline = since + self.rate.window.saturating_sub(self.waited);
        let timer = match &mut self.timer {
            Some(timer) => {
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                timer
            }
            None => self
                .timer
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        timer.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    const RATE: BodyRate = BodyRate {
        min_bytes: 10,
        window: Duration::from_millis(200),
    };

    /// Waits until `pace` says the window ran out, or `limit` passes.
    async fn expires_within(pace: &mut Pace, limit: Duration) -> bool {
        tokio::time::timeout(limit, poll_fn(|cx| pace.poll_wait(cx)))
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_wait_longer_than_the_window_expires() {
        let mut pace = Pace::new(RATE);
        assert!(expires_within(&mut pace, Duration::from_secs(20)).await);
    }

    #[tokio::test]
    async fn enough_bytes_start_a_new_window() {
        let mut pace = Pace::new(RATE);
        assert!(!expires_within(&mut pace, Duration::from_millis(120)).await);
        pace.arrived(10);
        assert_eq!(
            pace.waited,
            Duration::ZERO,
            "a full window resets the clock"
        );
        assert!(!expires_within(&mut pace, Duration::from_millis(120)).await);
    }

    #[tokio::test]
    async fn waits_add_up_until_min_bytes_arrive() {
        let mut pace = Pace::new(RATE);
        assert!(!expires_within(&mut pace, Duration::from_millis(120)).await);
        pace.arrived(3);
        assert!(pace.waited >= Duration::from_millis(120));
        // Less than min_bytes so far: the next wait gets only what is left.
        let started = std::time::Instant::now();
        assert!(expires_within(&mut pace, Duration::from_secs(20)).await);
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn time_not_spent_waiting_does_not_count() {
        let mut pace = Pace::new(RATE);
        pace.arrived(1);
        // The consumer is busy elsewhere for longer than a window.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(pace.waited, Duration::ZERO);
        assert!(!expires_within(&mut pace, Duration::from_millis(100)).await);
    }

    #[test]
    fn errors_say_what_happened() {
        let slow = BodyError::TooSlow(RATE);
        assert!(slow.is_too_slow());
        assert_eq!(
            slow.to_string(),
            "request body too slow: less than 10 bytes within 200 ms"
        );
        assert!(slow.into_hyper().is_none());
    }

    #[test]
    fn request_bodies_can_cross_tasks_and_need_no_pinning() {
        fn check<T: Send + Unpin + 'static>() {}
        check::<RequestBody>();
        check::<BodyError>();
    }
}
