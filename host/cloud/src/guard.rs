//! Keeping the cloud's sled database honest when its disk fills up or
//! fails: every write of [`crate::sled_store`] goes through an
//! [`outpost_sled_guard::Guard`] (the machinery outpost-store uses too: a
//! free-space guard, a flush on its own thread that is waited for only so
//! long, retiring a failed instance and reopening the database in place),
//! one write at a time behind a `Turnstile`. The guard's events are
//! logged here, under the cloud's store target.

use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How the cloud's database is run on a full or failing disk. [`Default`]
/// is what `outpost cloud` uses, bar `--min-free-bytes`.
pub use outpost_sled_guard::GuardOptions as StorageOptions;
#[cfg(test)]
pub(crate) use outpost_sled_guard::gate;
pub use outpost_sled_guard::{
    DEFAULT_FLUSH_TIMEOUT, DEFAULT_MIN_FREE_BYTES, DEFAULT_PROBE_INTERVAL,
    DEFAULT_STALL_REOPEN_AFTER, StorageHealth,
};
pub(crate) use outpost_sled_guard::{
    Guard, HealthCell, Owner, Recovered, Reopen, ReopenError, free_bytes,
};

/// The guard's threads, and what it says, under the cloud's store target.
pub(crate) const OWNER: Owner = Owner {
    flush_thread: "outpost-cloud-flush",
    retire_thread: "outpost-cloud-retire",
    fence_thread: "outpost-cloud-fence",
    reopen_thread: "outpost-cloud-reopen",
    restart: "the cloud",
    log,
};

outpost_sled_guard::event_logger!(
    fn log,
    target: "outpost::cloud::store",
    stopped: "the database stopped accepting writes (ingests answer 503); it resumes by itself once it can",
);

/// A value one holder at a time may use, and that a would-be holder waits
/// for only so long: a write stuck inside sled must not make every later
/// one wait with it.
pub(crate) struct Turnstile<T> {
    slot: Mutex<Option<T>>,
    returned: Condvar,
}

/// The value of a [`Turnstile`], while held; it goes back on drop.
pub(crate) struct Turn<'a, T> {
    turnstile: &'a Turnstile<T>,
    value: Option<T>,
}

impl<T> Turnstile<T> {
    pub(crate) fn new(value: T) -> Self {
        Self {
            slot: Mutex::new(Some(value)),
            returned: Condvar::new(),
        }
    }

    /// The value, once it is free, waiting at most `within`.
    pub(crate) fn enter(&self, within: Duration) -> Option<Turn<'_, T>> {
        let deadline = Instant::now() + within;
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(value) = slot.take() {
                return Some(Turn {
                    turnstile: self,
                    value: Some(value),
                });
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            slot = self
                .returned
                .wait_timeout(slot, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

impl<T> std::ops::Deref for Turn<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.value.as_ref().expect("held until drop")
    }
}

impl<T> std::ops::DerefMut for Turn<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.value.as_mut().expect("held until drop")
    }
}

impl<T> Drop for Turn<'_, T> {
    fn drop(&mut self) {
        let mut slot = self
            .turnstile
            .slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *slot = self.value.take();
        self.turnstile.returned.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turnstile_lets_one_in_and_others_wait_only_so_long() {
        let turnstile = Turnstile::new(1);
        let mut held = turnstile.enter(Duration::ZERO).expect("free");
        *held += 1;
        let started = Instant::now();
        assert!(turnstile.enter(Duration::from_millis(50)).is_none());
        assert!(started.elapsed() >= Duration::from_millis(50));
        drop(held);
        assert_eq!(*turnstile.enter(Duration::ZERO).expect("back"), 2);
    }
}
