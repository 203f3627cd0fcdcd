//! sled on a disk that fills up or fails: a free-space guard, a flush on
//! its own thread that is waited for only so long, the health of the
//! database, and, after sled failed, retiring its instance and reopening
//! the database in place. The edge's database (outpost-store) and the
//! cloud's (outpost-cloud) both run every write through a [`Guard`].
//!
//! What sled 0.34 does after a failed write is in [`recovery`]; in short,
//! a failed instance never writes again, and its flushes (and its drop)
//! may block forever. So nothing waits for a flush longer than
//! [`GuardOptions::flush_timeout`], no write touches sled while it is
//! failing (a transaction then could freeze the readers), and the way
//! back from a failed instance is a new one on the same files, once the
//! old one is fenced off them and made to fail so that its stuck flushes
//! return.

#![warn(missing_docs)]

mod disk;
mod flush;
mod guard;
mod health;
pub mod recovery;
#[cfg(feature = "test-support")]
pub mod tmpfs;

pub use disk::{fence, free_bytes, sync_all_under};
#[cfg(feature = "test-support")]
pub use flush::gate;
pub use guard::{
    DEFAULT_FLUSH_TIMEOUT, DEFAULT_MIN_FREE_BYTES, DEFAULT_PROBE_INTERVAL,
    DEFAULT_STALL_REOPEN_AFTER, Event, Guard, GuardOptions, Owner, Recovered, Reopen,
};
pub use health::{HealthCell, StorageHealth};
pub use recovery::ReopenError;

/// For [`event_logger!`]'s expansion in the owner's crate.
#[doc(hidden)]
pub use tracing as __tracing;
