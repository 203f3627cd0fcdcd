//! Whether a guarded database accepts writes, for its owner's health
//! endpoint and metrics. The [`crate::Guard`] and its owner keep it up to
//! date; anyone takes a snapshot with [`HealthCell::snapshot`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

/// A snapshot of a database's health.
///
/// Reads keep working while `writable` is false; only writes are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageHealth {
    /// Whether writes are accepted. False while the disk is (nearly) full,
    /// after a flush failed or stalled, and while the database is being
    /// reopened; it turns true again by itself once writes resume.
    pub writable: bool,
    /// When writes stopped being accepted; `None` while writable.
    pub failing_since: Option<SystemTime>,
    /// What went wrong: the current failure, or the last one once writable
    /// again; `None` if nothing failed since start.
    pub last_error: Option<String>,
    /// Bytes free for the database on its filesystem (`None` if unknown).
    pub free_bytes: Option<u64>,
    /// Writes answered "outcome unknown" (their flush failed or stalled, or
    /// sled failed them: they may be on disk) since start.
    pub outcome_unknown: u64,
    /// Writes refused unapplied while failing, since start.
    pub refused: u64,
    /// Times the database was reopened to recover from a failure.
    pub reopens: u64,
}

#[derive(Debug, Default)]
struct Now {
    failing_since: Option<SystemTime>,
    last_error: Option<String>,
}

/// The writer's side of [`StorageHealth`]; anyone may read it.
#[derive(Debug, Default)]
pub struct HealthCell {
    now: Mutex<Now>,
    outcome_unknown: AtomicU64,
    refused: AtomicU64,
    reopens: AtomicU64,
}

impl HealthCell {
    fn now(&self) -> std::sync::MutexGuard<'_, Now> {
        // The fields stay consistent whatever a panicking holder did.
        self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Why writes are refused, while they are.
    pub fn refusing(&self) -> Option<String> {
        let now = self.now();
        now.failing_since?;
        Some(
            now.last_error
                .clone()
                .unwrap_or_else(|| "storage is failing".into()),
        )
    }

    /// Writes are refused from now on because of `reason` (a later reason
    /// replaces the earlier one; the failure keeps its start).
    pub fn failing(&self, reason: &str) {
        let mut now = self.now();
        now.failing_since.get_or_insert_with(SystemTime::now);
        now.last_error = Some(reason.to_owned());
    }

    /// Writes are accepted again.
    pub fn recovered(&self) {
        self.now().failing_since = None;
    }

    /// `writes` were answered "outcome unknown".
    pub fn count_unknown(&self, writes: usize) {
        self.outcome_unknown
            .fetch_add(writes as u64, Ordering::Relaxed);
    }

    /// `writes` were refused unapplied.
    pub fn count_refused(&self, writes: usize) {
        self.refused.fetch_add(writes as u64, Ordering::Relaxed);
    }

    /// The database was reopened.
    pub fn count_reopen(&self) {
        self.reopens.fetch_add(1, Ordering::Relaxed);
    }

    /// The health now, with `free_bytes` (see [`crate::free_bytes`]).
    pub fn snapshot(&self, free_bytes: Option<u64>) -> StorageHealth {
        let now = self.now();
        StorageHealth {
            writable: now.failing_since.is_none(),
            failing_since: now.failing_since,
            last_error: now.last_error.clone(),
            free_bytes,
            outcome_unknown: self.outcome_unknown.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            reopens: self.reopens.load(Ordering::Relaxed),
        }
    }
}
