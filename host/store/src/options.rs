//! How the node's database is run: the outbox cap, and the bounds the
//! writer keeps when the disk fills up or fails (see [`crate::committer`]).

use crate::DEFAULT_MAX_OUTBOX_BYTES;
use std::time::Duration;

pub use outpost_sled_guard::{
    DEFAULT_FLUSH_TIMEOUT, DEFAULT_MIN_FREE_BYTES, DEFAULT_PROBE_INTERVAL,
    DEFAULT_STALL_REOPEN_AFTER,
};

/// How the node's database is run. [`Default`] is what `serve` uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageOptions {
    /// Most bytes of records the outbox may hold (what a cut-off node
    /// buffers for the cloud); replicated writes and events past it are
    /// refused with `Rejection::OutboxFull`.
    pub max_outbox_bytes: u64,
    /// Writes are refused with `StorageError::Unavailable` (not applied)
    /// while the database's filesystem has less than this free, and resume
    /// by themselves once it has this much again. Stopping short of a full
    /// disk keeps sled from ever meeting ENOSPC, which leaves a sled
    /// instance unable to write again (see [`crate::committer`]). 0 turns
    /// the check off.
    pub min_free_bytes: u64,
    /// How long a writer waits for its group's flush. A flush that fails,
    /// or has not finished by then, answers `StorageError::OutcomeUnknown`
    /// to every write of the group. Together with the group's own work
    /// this bounds how long a write can take when the disk misbehaves
    /// (keep it well under the edge's request deadline).
    pub flush_timeout: Duration,
    /// How often a failing writer checks whether it can resume (free
    /// space, a stalled flush that finished, a reopen in progress).
    pub probe_interval: Duration,
    /// A flush still running this long after it began, once the disk has
    /// room, is given up on: the database is reopened as after a crash.
    pub stall_reopen_after: Duration,
}

impl StorageOptions {
    /// The bounds the writer's guard keeps.
    pub(crate) fn guard(&self) -> outpost_sled_guard::GuardOptions {
        outpost_sled_guard::GuardOptions {
            min_free_bytes: self.min_free_bytes,
            flush_timeout: self.flush_timeout,
            probe_interval: self.probe_interval,
            stall_reopen_after: self.stall_reopen_after,
        }
    }
}

impl Default for StorageOptions {
    fn default() -> Self {
        Self {
            max_outbox_bytes: DEFAULT_MAX_OUTBOX_BYTES,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            flush_timeout: DEFAULT_FLUSH_TIMEOUT,
            probe_interval: DEFAULT_PROBE_INTERVAL,
            stall_reopen_after: DEFAULT_STALL_REOPEN_AFTER,
        }
    }
}
