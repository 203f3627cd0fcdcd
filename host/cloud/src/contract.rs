//! The store contract: what the cloud tier's API needs from a database.
//! One contract, several backends (embedded sled today); each must give
//! the same answers for the same calls.
//!
//! What every backend guarantees:
//! - ingest is exactly once per (edge database epoch, sequence), and an
//!   [`Ack`] is returned only once what it acknowledges is durable;
//! - an entry that asks for its outcome ([`Entry::outcome`]) is answered
//!   with the key's current version after its batch, whether it was
//!   applied now, before, or at its old place (see [`CloudStore::ingest`]);
//! - KV writes resolve last-writer-wins by (HLC, node id), and a write made
//!   without seeing the current version is recorded as a conflict;
//! - the feed, events and conflicts are served only below the durable
//!   marks, so no reader holds a position a crash could take back;
//! - a conflict keeps one review: the first is durable and stands, except
//!   that the operator's replaces anyone else's (and then stands);
//!   reviewing again answers the stored one, never one a crash could
//!   still take back.

use crate::credentials::Credential;
use outpost_wire::explain::Review;
use outpost_wire::validate::Invalid;
use outpost_wire::{Ack, Conflict, Entry, Event, FeedPage, Page, Record, Superseded, Version};
use std::collections::{BTreeMap, BTreeSet};
use tokio::sync::Notify;

/// A batch as the API hands it to the store: the authenticated sender,
/// and every entry with the API's verdict on it (`Some`: refused for good;
/// the entry still consumes its sequence number).
#[derive(Debug, Clone)]
pub struct Checked {
    /// The node the credential is bound to (the batch's `node`).
    pub node: String,
    /// The edge database epoch the entries are numbered in.
    pub epoch: u64,
    /// The entries, in increasing sequence order, with their verdicts.
    pub entries: Vec<(Entry, Option<Invalid>)>,
}

impl Checked {
    /// Refuses, before any I/O, entries that are not consecutive: out of
    /// order, or with a gap inside the batch.
    pub fn check_sequence(&self) -> Result<(), CloudStoreError> {
        for pair in self.entries.windows(2) {
            let (before, after) = (pair[0].0.seq, pair[1].0.seq);
            if after <= before {
                return Err(CloudStoreError::OutOfOrder(after, before));
            }
            if after != before + 1 {
                return Err(CloudStoreError::SequenceGap {
                    expected: before + 1,
                    got: after,
                });
            }
        }
        Ok(())
    }
}

/// What identifies an entry's content on every backend: the first 8 bytes
/// of the SHA-256 of its record, re-serialized (serde writes a struct the
/// same way every time). The record only: [`Entry::outcome`] asks for an
/// answer, it is not content, so a redelivery that flips it is still the
/// same entry (and `origin` says where it was, not what it is).
pub fn entry_digest(entry: &Entry) -> [u8; 8] {
    use sha2::Digest as _;
    let json = serde_json::to_vec(&entry.record).expect("serializes");
    sha2::Sha256::digest(&json)[..8]
        .try_into()
        .expect("8 bytes")
}

/// A KV write of a batch whose edge waits on its outcome.
#[derive(Debug)]
pub(crate) struct Awaited<'a> {
    pub(crate) seq: u64,
    pub(crate) store: &'a str,
    pub(crate) key: &'a str,
    pub(crate) version: &'a Version,
}

/// The entries whose outcome the ack tells: KV writes that ask for it
/// ([`Entry::outcome`]) and that `refused` does not name (a refused record
/// was never a candidate, so it neither won nor lost). Checks one flag an
/// entry and allocates nothing when none asks.
pub(crate) fn awaited<'a>(
    entries: impl IntoIterator<Item = &'a Entry>,
    refused: impl Fn(u64) -> bool,
) -> Vec<Awaited<'a>> {
    entries
        .into_iter()
        .filter(|entry| entry.outcome && !refused(entry.seq))
        .filter_map(|entry| match &entry.record {
            Record::Kv {
                store,
                key,
                version,
                ..
            } => Some(Awaited {
                seq: entry.seq,
                store,
                key,
                version,
            }),
            _ => None,
        })
        .collect()
}

/// The ack's [`Ack::superseded`] lines for `awaited`, given each key's
/// current version once the batch is applied (`None`: no row, which an
/// accepted write cannot leave; then there is no winner to name).
pub(crate) fn superseded<E>(
    awaited: &[Awaited<'_>],
    mut current: impl FnMut(&Awaited<'_>) -> Result<Option<Version>, E>,
) -> Result<Vec<Superseded>, E> {
    let mut lines = Vec::new();
    for write in awaited {
        if let Some(winner) = current(write)?
            && winner != *write.version
        {
            lines.push(Superseded {
                seq: write.seq,
                winner,
            });
        }
    }
    Ok(lines)
}

/// How many recent sequence numbers per epoch keep a digest. Redeliveries
/// are of unacknowledged batches, at most a few batches of at most
/// [`MAX_BATCH_ENTRIES`], so they fall well inside it; a same-id copy of a
/// data dir further behind than this goes undetected (see the README).
pub const DIGEST_WINDOW: u64 = 65536;

/// Most entries one batch may carry (edges send at most `ship-batch`,
/// itself capped at this).
pub const MAX_BATCH_ENTRIES: usize = 4096;

/// Most bytes of items a feed, events or conflicts page holds (a page
/// always holds at least one item, however large).
pub const MAX_PAGE_BYTES: usize = 8 * 1024 * 1024;

/// A key's current version, and its value (`None`: deleted).
pub type Current = (Version, Option<Vec<u8>>);

/// A page of one store's keys at the cloud, in key (byte) order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPage {
    /// Each key with its current version and value; tombstones included.
    pub items: Vec<(String, Current)>,
    /// The last key of the page when more keys follow it (ask again with
    /// it as `after`); `None` once the store's keys are all listed.
    pub next: Option<String>,
}

/// What [`CloudStore::review_conflict`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reviewed {
    /// The review was recorded, durably, by this call: the first, or the
    /// operator's in place of someone else's.
    Recorded(Review),
    /// The conflict had been reviewed before: that review, which stands
    /// (reviewing again is idempotent), durable.
    Already(Review),
    /// No conflict readers may see has this id.
    NoSuchConflict,
}

/// Why a cloud store call failed.
#[derive(Debug, thiserror::Error)]
pub enum CloudStoreError {
    /// The embedded database failed.
    #[error("database error: {0}")]
    Db(#[from] sled::Error),
    /// A batch whose entries are not in increasing sequence order.
    #[error("entries must be in increasing sequence order (seq {0} after {1})")]
    OutOfOrder(u64, u64),
    /// The epoch was first shipped by another node: the data dir was copied.
    #[error("epoch {epoch} belongs to node {owner}")]
    EpochOwned {
        /// The batch's epoch.
        epoch: u64,
        /// The node that shipped it first.
        owner: String,
    },
    /// The batch skips sequence numbers (before it, or inside it).
    #[error("sequence gap: expected seq {expected}, got {got}")]
    SequenceGap {
        /// The next sequence number the cloud expects.
        expected: u64,
        /// What the batch has there.
        got: u64,
    },
    /// An applied sequence number came again with other content.
    #[error("seq {0} was already applied with different content")]
    CloneDetected(u64),
    /// The storage is failing (full disk, I/O errors); try again later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The store could not run the call (a worker task failed).
    #[error("internal error: {0}")]
    Internal(String),
}

/// The cloud tier's database, as the API uses it.
pub trait CloudStore: Clone + Send + Sync + 'static {
    /// Applies `batch` exactly once per (epoch, seq) and acknowledges it
    /// once durable. Refuses, changing nothing, a batch whose epoch belongs
    /// to another node, that skips sequence numbers, or that repeats an
    /// applied one with other content.
    ///
    /// Every KV entry with [`Entry::outcome`] that the ack does not refuse
    /// is answered in [`Ack::superseded`] by the key's current version,
    /// read in the batch's transaction after its writes (so it reflects
    /// this batch and everything committed before it): a line
    /// `{seq, winner}` if that version is not the entry's, none if it is.
    /// The same holds for an entry applied now, a redelivered duplicate,
    /// and a renumbered record whose old place applied it: the answer is
    /// the key's state, not what this delivery did. Other records ignore
    /// the flag, and it is not part of the entry's digest. Only flagged
    /// entries cost anything (one read each on sled, one statement per
    /// batch on PostgreSQL).
    fn ingest(&self, batch: Checked) -> impl Future<Output = Result<Ack, CloudStoreError>> + Send;

    /// Up to `limit` accepted KV writes after cursor `since`, stopping
    /// once [`MAX_PAGE_BYTES`] are reached.
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

    /// Stores a new credential.
    fn put_credential(
        &self,
        credential: Credential,
    ) -> impl Future<Output = Result<(), CloudStoreError>> + Send;

    /// The credential whose token hashes to `token_sha256`.
    fn credential_by_hash(
        &self,
        token_sha256: &str,
    ) -> impl Future<Output = Result<Option<Credential>, CloudStoreError>> + Send;

    /// Every credential issued, revoked ones too.
    fn credentials(&self) -> impl Future<Output = Result<Vec<Credential>, CloudStoreError>> + Send;

    /// Marks credential `id` revoked; `false` if there is none.
    fn revoke_credential(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<bool, CloudStoreError>> + Send;

    /// The cloud's current version and value of a key.
    fn get(
        &self,
        store: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<Current>, CloudStoreError>> + Send;

    /// The cursor of the last change a feed reader may see now (0: none
    /// yet). Cursors are dense from 1, so the most recent `n` changes are
    /// those after `feed_head() - n`.
    fn feed_head(&self) -> impl Future<Output = Result<u64, CloudStoreError>> + Send;

    /// Records, durably, that conflict `id` was reviewed, unless it was
    /// before: the stored review stands and is answered again, unless
    /// `review` [replaces](Review::replaces) it (the operator's over
    /// anyone else's), then `review` is recorded in its place. Concurrent
    /// reviews (at any replicas) end with one stored, the operator's if
    /// one of them is. A conflict past what readers may see is no
    /// conflict yet. An `Already` answer is durable too (never a review
    /// whose write may still fail), so a repeated review may be refused
    /// like any write while storage fails.
    fn review_conflict(
        &self,
        id: u64,
        review: Review,
    ) -> impl Future<Output = Result<Reviewed, CloudStoreError>> + Send;

    /// The reviews of the conflicts with ids in `after + 1 ..= through`.
    fn reviews(
        &self,
        after: u64,
        through: u64,
    ) -> impl Future<Output = Result<BTreeMap<u64, Review>, CloudStoreError>> + Send;

    /// The ids of the reviewed conflicts in `after + 1 ..= through`, and
    /// nothing else (no review is read): what counting needs.
    fn reviewed_ids(
        &self,
        after: u64,
        through: u64,
    ) -> impl Future<Output = Result<BTreeSet<u64>, CloudStoreError>> + Send;

    /// Up to `limit` (at least one) keys of `store` after `after` (from
    /// the first if `None`), in byte order of the key, tombstones included,
    /// stopping once [`MAX_PAGE_BYTES`] of values are reached (a page
    /// holds at least one key).
    fn keys(
        &self,
        store: &str,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<KeyPage, CloudStoreError>> + Send;
}
