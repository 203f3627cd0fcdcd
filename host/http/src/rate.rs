//! The slowest request body a listener accepts ([`BodyRate`]), apart from
//! the body that enforces it ([`crate::body`]) and the connection state
//! that carries it ([`crate::activity`]), which both use it.

use std::time::Duration;

/// Bytes a request body must deliver per window of waiting.
pub const MIN_BODY_BYTES: u64 = 1024;

/// Longest window: [`BodyRate::window`] is the header read timeout, capped
/// at this, so a listener with a long header timeout still cuts a trickle.
pub const MAX_BODY_WINDOW: Duration = Duration::from_secs(10);

/// The slowest request body a listener accepts: `min_bytes` per `window`
/// of the handler waiting for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyRate {
    /// Bytes that must arrive within each window.
    pub min_bytes: u64,
    /// Time the handler may wait, in total, for the next `min_bytes`.
    pub window: Duration,
}
