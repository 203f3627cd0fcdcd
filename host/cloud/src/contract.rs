//! The store contract: what the cloud tier's API needs from a database.
//! One contract, several backends (embedded sled today); each must give
//! the same answers for the same calls.
//!
//! What every backend guarantees:
//! - ingest is exactly once per (edge database epoch, sequence), and an
//!   [`Ack`] is returned only once what it acknowledges is durable;
//! - KV writes resolve last-writer-wins by (HLC, node id), and a write made
//!   without seeing the current version is recorded as a conflict;
//! - the feed, events and conflicts are served only below the durable
//!   marks, so no reader holds a position a crash could take back.

use outpost_wire::{Ack, Batch, Conflict, Event, FeedPage, Page, Version};
use tokio::sync::Notify;

/// A key's current version, and its value (`None`: deleted).
pub type Current = (Version, Option<Vec<u8>>);

/// Why a cloud store call failed.
#[derive(Debug, thiserror::Error)]
pub enum CloudStoreError {
    /// The embedded database failed.
    #[error("database error: {0}")]
    Db(#[from] sled::Error),
    /// A batch whose entries are not in increasing sequence order.
    #[error("entries must be in increasing sequence order (seq {0} after {1})")]
    OutOfOrder(u64, u64),
    /// The store could not run the call (a worker task failed).
    #[error("internal error: {0}")]
    Internal(String),
}

/// The cloud tier's database, as the API uses it.
pub trait CloudStore: Clone + Send + Sync + 'static {
    /// Applies `batch` exactly once per (epoch, seq) and acknowledges it
    /// once durable.
    fn ingest(&self, batch: Batch) -> impl Future<Output = Result<Ack, CloudStoreError>> + Send;

    /// Up to `limit` accepted KV writes after cursor `since`.
    fn feed(
        &self,
        since: u64,
        limit: usize,
    ) -> impl Future<Output = Result<FeedPage, CloudStoreError>> + Send;

    /// Notified after the feed may have grown, for long-polling readers.
    /// Register (`notified()`) before reading, so no change is missed.
    fn feed_grew(&self) -> &Notify;

    /// Conflicts recorded so far.
    fn conflict_count(&self) -> impl Future<Output = Result<u64, CloudStoreError>> + Send;

    /// Up to `limit` conflicts after id `since`.
    fn conflicts(
        &self,
        since: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Page<Conflict>, CloudStoreError>> + Send;

    /// Up to `limit` events of `topic` after id `since`.
    fn events(
        &self,
        topic: &str,
        since: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Page<Event>, CloudStoreError>> + Send;

    /// The cloud's current version and value of a key.
    fn get(
        &self,
        store: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<Current>, CloudStoreError>> + Send;
}
