//! What the edge and the cloud tier agree on: the protocol between them
//! ([`protocol`]), the clock that orders writes ([`hlc`]), how a versioned
//! value is stored ([`envelope`]), the rules for names both sides check
//! ([`names`]) and for
//! every record ([`validate`]), and the short ids that tie an error to its log line.
//!
//! No I/O and no runtime: serde, and nothing that links wasm.

#![warn(missing_docs)]

pub mod envelope;
pub mod explain;
pub mod hlc;
pub mod names;
pub mod protocol;
pub mod validate;

pub use protocol::*;

/// A fresh short id (12 hex digits) that ties a client-visible error to the
/// log line carrying its detail.
pub fn error_id() -> String {
    format!("{:012x}", fastrand::u64(..) >> 16)
}
