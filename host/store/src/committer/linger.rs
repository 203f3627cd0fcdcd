//! How a group waits for more writes without a wake-up per write: while
//! the writer lingers it parks, and a submitter unparks it only when the
//! writes it waits for have all arrived (or its deadline passes). A wake
//! per write, as a blocking receive would give, costs a context switch on
//! each side: more than the write itself.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Instant;

/// Shared by the writer and every submitter.
#[derive(Default)]
pub(super) struct Gate {
    /// Jobs submitted since the writer began to linger.
    arrived: AtomicUsize,
    /// How many the writer waits for; 0 while it does not linger.
    awaited: AtomicUsize,
    writer: OnceLock<Thread>,
}

impl Gate {
    pub(super) fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Called by the writer thread once, before it first lingers.
    pub(super) fn register_writer(&self) {
        let _ = self.writer.set(std::thread::current());
    }

    /// A submitter queued a job.
    pub(super) fn arrived(&self) {
        let arrived = self.arrived.fetch_add(1, Ordering::AcqRel) + 1;
        if arrived == self.awaited.load(Ordering::Acquire)
            && let Some(writer) = self.writer.get()
        {
            writer.unpark();
        }
    }

    /// Starts counting arrivals; jobs queued before this are the caller's
    /// to take from the queue itself.
    pub(super) fn open(&self) {
        self.arrived.store(0, Ordering::Release);
    }

    /// Parks the writer until `more` jobs arrived since [`Gate::open`] or
    /// until `deadline`.
    pub(super) fn wait(&self, more: usize, deadline: Instant) {
        self.awaited.store(more, Ordering::Release);
        while self.arrived.load(Ordering::Acquire) < more {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            std::thread::park_timeout(deadline - now);
        }
        self.awaited.store(0, Ordering::Release);
    }
}
