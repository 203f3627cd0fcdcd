//! What the shipper and the puller last saw of the cloud, shared with the
//! metrics and the admin API's `GET /outbox`.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// The cloud link as the node sees it (which replica it talks to is the
/// client's to say: it changes on failover).
#[derive(Debug)]
pub struct ReplicationStatus {
    /// When replication started: the lag's baseline before the first read.
    started: Instant,
    state: Mutex<State>,
}

#[derive(Debug, Clone, Default)]
pub struct State {
    /// Whether the last exchange with the cloud succeeded; `None` before any.
    pub reachable: Option<bool>,
    pub last_error: Option<String>,
    /// The last acknowledgement: through which sequence number, and when.
    pub last_ack: Option<(u64, SystemTime)>,
    /// The last time the puller read the change feed to its end.
    caught_up_at: Option<Instant>,
    /// The puller's last page reached the end of the feed, and nothing has
    /// failed since.
    in_sync: bool,
    /// Conflicts the cloud had recorded, as of the last feed page.
    pub conflicts: Option<u64>,
    /// Why the shipper stopped: the cloud refused this node's stream (a
    /// copied data dir, a sequence gap, a credential for another node). The
    /// records stay in the outbox; shipping resumes once this clears.
    pub blocked: Option<Blocked>,
}

/// A refusal that stops the shipper until an operator acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// The cloud's code (`epoch-owned`, `sequence-gap`, ...).
    pub code: String,
    /// What the operator should know and do.
    pub message: String,
}

impl Default for ReplicationStatus {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplicationStatus {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            state: Mutex::default(),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn snapshot(&self) -> State {
        self.with(|s| s.clone())
    }

    pub fn acked(&self, through: u64) {
        self.with(|s| {
            s.reachable = Some(true);
            s.last_error = None;
            s.blocked = None;
            s.last_ack = Some((through, SystemTime::now()));
        });
    }

    pub fn unreachable(&self, error: &dyn std::fmt::Display) {
        self.with(|s| {
            s.reachable = Some(false);
            s.last_error = Some(error.to_string());
            s.in_sync = false;
        });
    }

    /// The cloud refused the stream; see [`State::blocked`].
    pub fn block(&self, blocked: Blocked) {
        self.with(|s| {
            s.reachable = Some(true);
            s.last_error = Some(format!("{}: {}", blocked.code, blocked.message));
            s.blocked = Some(blocked);
        });
    }

    /// A feed page arrived; `at_end`: it reached the end of the feed.
    pub fn pulled(&self, at_end: bool, conflicts: u64) {
        self.with(|s| {
            s.reachable = Some(true);
            s.last_error = None;
            s.conflicts = Some(conflicts);
            s.in_sync = at_end;
            if at_end {
                s.caught_up_at = Some(Instant::now());
            }
        });
    }

    /// How far behind the cloud's feed this node may be: zero while the
    /// puller is at the end of the feed, else the time since it last was.
    pub fn lag(&self) -> Duration {
        self.with(|s| match (s.in_sync, s.caught_up_at) {
            (true, _) => Duration::ZERO,
            (false, Some(at)) => at.elapsed(),
            (false, None) => self.started.elapsed(),
        })
    }
}

/// What the capabilities read (freshness, forward writes).
impl outpost_caps::link::LinkState for ReplicationStatus {
    fn reachable(&self) -> Option<bool> {
        self.with(|s| match &s.blocked {
            // A refused stream ships nothing: as good as unreachable.
            Some(_) => Some(false),
            None => s.reachable,
        })
    }

    fn lag(&self) -> Duration {
        ReplicationStatus::lag(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_zero_in_sync_and_grows_when_the_link_fails() {
        let status = ReplicationStatus::new();
        status.pulled(true, 3);
        assert_eq!(status.lag(), Duration::ZERO);
        status.unreachable(&"connection refused");
        std::thread::sleep(Duration::from_millis(5));
        assert!(status.lag() >= Duration::from_millis(5));
        let state = status.snapshot();
        assert_eq!(state.reachable, Some(false));
        assert_eq!(state.conflicts, Some(3));
    }
}
