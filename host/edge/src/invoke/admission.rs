//! Admission control: at most as many requests run as there are instance
//! slots; a request waits briefly for one, then gets 503.

use crate::metrics::Metrics;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Admission control: at most as many requests run as there are instance
/// slots; a request waits briefly for one, then gets 503.
pub struct Admission {
    slots: Arc<Semaphore>,
    capacity: usize,
    /// How long a request may wait for a slot.
    queue_timeout: Duration,
    /// Requests waiting for a slot now.
    waiting: AtomicI64,
    /// The node's metrics, counted by everything the request path does.
    pub metrics: Arc<Metrics>,
}

impl Admission {
    /// `slots` instances at once; a request waits up to `queue_timeout`.
    pub fn new(slots: usize, queue_timeout: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(slots)),
            capacity: slots,
            queue_timeout,
            waiting: AtomicI64::new(0),
            metrics,
        }
    }

    /// Instances running (or being created) now.
    pub fn in_flight(&self) -> usize {
        self.capacity - self.slots.available_permits()
    }

    /// Instance slots in all.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Requests waiting for a slot now.
    pub fn waiting(&self) -> i64 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// A slot, or `None` after the queue timeout.
    pub(super) async fn admit(&self) -> Option<OwnedSemaphorePermit> {
        // The fast path takes no timer.
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Some(permit);
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let permit = tokio::time::timeout(self.queue_timeout, self.slots.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok);
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        permit
    }
}
