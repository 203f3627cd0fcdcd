//! What the capabilities see of the node's link to the cloud: whether it
//! answers, and how far behind the cloud's feed the node may be. The
//! edge's replication keeps that state and attaches it here once it
//! starts; until then (or without `--cloud`) the link reads as down, with
//! a lag counted from the node's start.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The cloud link's state as replication keeps it.
pub trait LinkState: Send + Sync {
    /// Whether the cloud answered the last exchange and accepts this
    /// node's stream (a refused stream ships nothing, so it counts as
    /// unreachable); `None` before the first exchange.
    fn reachable(&self) -> Option<bool>;
    /// How far behind the cloud's feed this node may be: zero while it is
    /// at the end of the feed and the link is up.
    fn lag(&self) -> Duration;
}

/// The node's cloud link, for the capabilities.
pub struct CloudLink {
    started: Instant,
    state: OnceLock<Arc<dyn LinkState>>,
}

impl Default for CloudLink {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            state: OnceLock::new(),
        }
    }
}

impl CloudLink {
    /// Replication has started and keeps `state`; later calls are ignored.
    pub fn attach(&self, state: Arc<dyn LinkState>) {
        let _ = self.state.set(state);
    }

    /// Whether replication runs on this node at all.
    pub fn enabled(&self) -> bool {
        self.state.get().is_some()
    }

    /// Whether the cloud answers now (false without replication, and
    /// before the first exchange).
    pub fn connected(&self) -> bool {
        self.reachable() == Some(true)
    }

    /// [`LinkState::reachable`]; `None` without replication too.
    pub fn reachable(&self) -> Option<bool> {
        self.state.get().and_then(|s| s.reachable())
    }

    /// How far behind the cloud this node may be (since its start, without
    /// replication).
    pub fn lag(&self) -> Duration {
        match self.state.get() {
            Some(state) => state.lag(),
            None => self.started.elapsed(),
        }
    }
}
