//! Hybrid logical clock: wall-clock milliseconds in the high 48 bits, a
//! counter in the low 16, never going backwards on this node and always
//! ahead of every remote stamp it has seen.

use std::time::{SystemTime, UNIX_EPOCH};

/// Owned by the committer (the node's only writer), so it needs no lock.
#[derive(Debug)]
pub struct Hlc {
    last: u64,
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Hlc {
    /// Resumes from the last stamp persisted, so a clock set back across a
    /// restart cannot reorder writes.
    pub fn resume(last: u64) -> Self {
        Self { last }
    }

    /// The latest stamp issued or observed, for persisting.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// A fresh stamp, greater than every stamp issued or observed so far.
    pub fn tick(&mut self) -> u64 {
        self.tick_at(wall_ms())
    }

    fn tick_at(&mut self, wall_ms: u64) -> u64 {
        let physical = wall_ms << 16;
        self.last = if physical > self.last {
            physical
        } else {
            self.last + 1
        };
        self.last
    }

    /// Takes a remote stamp into account: later local stamps exceed it.
    pub fn observe(&mut self, remote: u64) {
        self.last = self.last.max(remote);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_even_when_the_wall_clock_goes_back() {
        let mut hlc = Hlc::resume(0);
        let a = hlc.tick_at(1000);
        let b = hlc.tick_at(900);
        let c = hlc.tick_at(900);
        assert!(a < b && b < c);
        assert_eq!(c >> 16, 1000, "stays on the highest wall time seen");
    }

    #[test]
    fn stays_ahead_of_observed_remote_stamps() {
        let mut hlc = Hlc::resume(0);
        hlc.observe(5000 << 16);
        assert!(hlc.tick_at(10) > 5000 << 16);
    }
}
