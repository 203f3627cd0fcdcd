//! Whether the database answers, as the cloud's health and metrics report
//! it: one log line per change of state (not one per failed request), and
//! counts of what was refused or left in doubt meanwhile.

use crate::guard::StorageHealth;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

#[derive(Debug, Default)]
struct State {
    failing_since: Option<SystemTime>,
    last_error: Option<String>,
}

/// The database's state as the last call found it.
#[derive(Debug, Default)]
pub struct DbHealth {
    state: Mutex<State>,
    /// Calls answered 503 before anything reached the database.
    refused: AtomicU64,
    /// Writes whose outcome is unknown (the link broke around the commit).
    in_doubt: AtomicU64,
}

impl DbHealth {
    /// A call reached the database and got an answer.
    pub fn reachable(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(since) = state.failing_since.take() {
            let down = since.elapsed().unwrap_or_default();
            tracing::info!(target: "outpost::cloud::pg", ?down, "the database answers again; ingests resume");
        }
    }

    /// A call could not reach the database (or it refused to work).
    pub fn unreachable(&self, reason: &str) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.failing_since.is_none() {
            state.failing_since = Some(SystemTime::now());
            tracing::error!(target: "outpost::cloud::pg", reason, "the database is unavailable: ingests are answered 503 until it is back (edges keep their outboxes)");
        }
        state.last_error = Some(reason.to_owned());
    }

    /// Whether the last call found the database unavailable.
    pub fn failing(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .failing_since
            .is_some()
    }

    /// Counts a call refused without reaching the database.
    pub fn count_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a write whose outcome is unknown.
    pub fn count_in_doubt(&self) {
        self.in_doubt.fetch_add(1, Ordering::Relaxed);
    }

    /// The report in the shape the sled backend gives (no free space: the
    /// disk is the database server's).
    pub fn snapshot(&self) -> StorageHealth {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        StorageHealth {
            writable: state.failing_since.is_none(),
            failing_since: state.failing_since,
            last_error: state.last_error.clone(),
            free_bytes: None,
            outcome_unknown: self.in_doubt.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            reopens: 0,
        }
    }
}
