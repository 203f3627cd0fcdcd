//! A replicated store's write mode: `local` (commit on the node, ship
//! through the outbox) or `forward` (also wait until the cloud has applied
//! the write), and what a forward write does while the cloud is
//! unreachable. Set per store in the host's `[stores.NAME]` and in a
//! function's `[kv.write.NAME]`; the function's wins for its own writes.

use serde::Deserialize;
use std::time::Duration;

/// How long a forward write waits for the cloud's answer by default
/// before it reports `queued`.
pub const DEFAULT_FORWARD_TIMEOUT: Duration = Duration::from_secs(3);

/// Most a forward write may wait, whatever the settings say.
pub const MAX_FORWARD_TIMEOUT_MS: u64 = 60_000;

/// `local` or `forward`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Commit on the node, ship through the outbox; the write returns once
    /// durable on the node.
    #[default]
    Local,
    /// Commit on the node (so nothing is lost), then wait until the cloud
    /// has applied the write.
    Forward,
}

/// What a forward write does while the cloud is known to be unreachable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fallback {
    /// Refuse at once with `unavailable`; nothing is written.
    #[default]
    Fail,
    /// Commit and queue it like a local-mode write, and say `queued`.
    Queue,
}

/// One store's write settings (`[kv.write.NAME]`, or the same keys in the
/// host's `[stores.NAME]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StoreWrite {
    /// `local` (default) or `forward`.
    #[serde(default)]
    pub mode: Mode,
    /// `fail` (default) or `queue`: a forward write while the cloud is
    /// unreachable.
    #[serde(default)]
    pub fallback: Fallback,
    /// Longest a forward write waits for the cloud's answer before it
    /// reports `queued` (the write stays durable and ships later).
    pub timeout_ms: Option<u64>,
}

impl StoreWrite {
    /// How long a forward write waits.
    pub fn timeout(&self) -> Duration {
        self.timeout_ms
            .map_or(DEFAULT_FORWARD_TIMEOUT, Duration::from_millis)
    }

    /// Refuses a wait beyond [`MAX_FORWARD_TIMEOUT_MS`].
    pub fn validate(&self) -> Result<(), String> {
        match self.timeout_ms {
            Some(ms) if ms > MAX_FORWARD_TIMEOUT_MS => Err(format!(
                "timeout-ms = {ms} is over the cap of {MAX_FORWARD_TIMEOUT_MS}"
            )),
            Some(0) => Err("timeout-ms must be at least 1".to_owned()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_settings_parse_with_their_defaults() {
        let w: StoreWrite = toml::from_str("mode = \"forward\"").unwrap();
        assert_eq!(w.mode, Mode::Forward);
        assert_eq!(w.fallback, Fallback::Fail);
        assert_eq!(w.timeout(), DEFAULT_FORWARD_TIMEOUT);
        let w: StoreWrite =
            toml::from_str("mode = \"forward\"\nfallback = \"queue\"\ntimeout-ms = 250").unwrap();
        assert_eq!(
            (w.fallback, w.timeout()),
            (Fallback::Queue, Duration::from_millis(250))
        );
        assert!(toml::from_str::<StoreWrite>("mode = \"sometimes\"").is_err());
        assert!(
            StoreWrite {
                timeout_ms: Some(MAX_FORWARD_TIMEOUT_MS + 1),
                ..Default::default()
            }
            .validate()
            .is_err()
        );
    }
}
