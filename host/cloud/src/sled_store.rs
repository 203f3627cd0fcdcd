//! The embedded cloud store: one sled database under the cloud's data dir
//! (the default backend). Applies edge batches exactly once, resolves KV
//! writes last-writer-wins, records conflicts, keeps queue events per topic,
//! and serves the change feed. [`Sled`] puts it behind the store contract.
//!
//! # When the disk fills up or fails
//!
//! Every write (an ingest, a credential change) goes through one writer
//! and its guard: refused unapplied while the disk is nearly full or
//! storage is failing, and acknowledged only once its flush succeeded
//! within [`StorageOptions::flush_timeout`]. A flush that fails or stalls,
//! or a sled write that fails, answers [`CloudStoreError::Unavailable`]
//! (503): the batch may or may not be on disk, and the edge sends it again,
//! which the per-epoch watermark and digests make harmless. The durable
//! marks readers stop at advance only after a flush succeeded. Reads go on
//! against whatever instance is current. A probe thread brings writes back
//! by themselves (see [`crate::guard`]); after a reopen the counters are
//! the larger of what this process handed out and what the disk holds, so
//! no id is ever handed out twice.

use crate::contract::{Checked, MAX_PAGE_BYTES, entry_digest};
use crate::contract::{CloudStore, CloudStoreError, Current, KeyPage, Reviewed};
use crate::credentials::Credential;
use crate::guard::{
    self, Guard, HealthCell, Recovered, Reopen, ReopenError, StorageHealth, StorageOptions,
};
use crate::sled_digests::{Digests, encode_row, place as digest_key};
use arc_swap::ArcSwap;
use outpost_wire::envelope;
use outpost_wire::explain::Review;
use outpost_wire::{Ack, Change, Conflict, Entry, Event, FeedPage, Page, Record, Refusal};
use sled::Transactional;
use sled::Tree;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// Next ids to hand out; owned by whoever holds the writer.
#[derive(Debug, Clone, Copy)]
struct Counters {
    feed: u64,
    event: u64,
    conflict: u64,
}

impl Counters {
    /// Each counter at the larger of the two: ids never go back.
    fn max(self, other: Self) -> Self {
        Self {
            feed: self.feed.max(other.feed),
            event: self.event.max(other.event),
            conflict: self.conflict.max(other.conflict),
        }
    }
}

/// Ids below these are on disk; readers never see past them, so a crash
/// can never take back (and later reuse) an id someone has already read.
#[derive(Debug, Default)]
struct Durable {
    feed: AtomicU64,
    event: AtomicU64,
    conflict: AtomicU64,
}

impl Durable {
    fn publish(&self, counters: &Counters) {
        self.feed.store(counters.feed, Ordering::Release);
        self.event.store(counters.event, Ordering::Release);
        self.conflict.store(counters.conflict, Ordering::Release);
    }
}

/// One sled instance and the cloud's trees in it. The writer replaces it
/// whole when it reopens the database after a failure (an instance that
/// failed a write never writes again), so every operation loads it once
/// ([`SledStore::handles`]) and uses that one value throughout.
struct Handles {
    db: sled::Db,
    /// Edge database epoch -> highest sequence applied (edges send in
    /// order). Keyed by epoch, not node id, so renaming a node cannot make
    /// its unacknowledged records look new.
    applied: Tree,
    /// Edge database epoch -> the node that first shipped it: a second
    /// node on one epoch is a copied data dir, refused.
    epochs: Tree,
    /// `epoch seq` -> digest of the entry, for the last [`DIGEST_WINDOW`]
    /// sequence numbers of each epoch: a redelivery must match, or two
    /// processes ship under one identity. One row per batch
    /// (`batch_digests`) and claims of old places (`digests`): see
    /// [`crate::sled_digests`].
    digests: Tree,
    batch_digests: Tree,
    /// Credential id -> [`Credential`] JSON.
    credentials: Tree,
    /// Token SHA-256 (hex) -> credential id.
    token_hashes: Tree,
    /// `store \0 key` -> envelope (version + value or tombstone).
    kv: Tree,
    /// cursor -> [`Change`] JSON.
    feed: Tree,
    /// id -> [`Conflict`] JSON.
    conflicts: Tree,
    /// Conflict id -> its [`Review`] JSON. A tree of its own, written
    /// only when someone reviews: ingest never touches it.
    reviews: Tree,
    /// `topic \0 id` -> [`Event`] JSON.
    events: Tree,
    /// `topic \0 idempotency key` -> event id.
    idempotency: Tree,
    meta: Tree,
}

impl Handles {
    /// Opens (creating if needed) the sled database in `db_dir`.
    fn open(db_dir: &Path) -> Result<Self, CloudStoreError> {
        let db = sled::Config::new()
            .path(db_dir)
            .cache_capacity(256 * 1024 * 1024)
            .open()?;
        Ok(Self {
            applied: db.open_tree("applied")?,
            epochs: db.open_tree("epochs")?,
            digests: db.open_tree("digests")?,
            batch_digests: db.open_tree("batch_digests")?,
            credentials: db.open_tree("credentials")?,
            token_hashes: db.open_tree("token_hashes")?,
            kv: db.open_tree("kv")?,
            feed: db.open_tree("feed")?,
            conflicts: db.open_tree("conflicts")?,
            reviews: db.open_tree("conflict_reviews")?,
            events: db.open_tree("events")?,
            idempotency: db.open_tree("idempotency")?,
            meta: db.open_tree("meta")?,
            db,
        })
    }

    /// The next ids by what the database holds (written with every entry).
    fn counters(&self) -> Result<Counters, CloudStoreError> {
        Ok(Counters {
            feed: u64_of(self.meta.get("next_feed")?).max(1),
            event: u64_of(self.meta.get("next_event")?).max(1),
            conflict: u64_of(self.meta.get("next_conflict")?).max(1),
        })
    }
}

/// A reopened database, for the writer to install.
struct Reopened {
    handles: Handles,
    counters: Counters,
}

/// What one write at a time holds.
struct Writer {
    counters: Counters,
    guard: Guard<Reopened>,
}

/// Longest a write waits for the one before it. Only a write stuck inside
/// sled holds the writer this long (one waiting out its flush lets go
/// within [`StorageOptions::flush_timeout`], and once storage is failing
/// every write is refused before it waits at all): the rest answer 503
/// instead of queueing behind it for good.
const WRITER_WAIT: Duration = Duration::from_secs(30);

/// The sled database and the cloud's in-memory counters over it.
pub struct SledStore {
    /// The open database, replaced whole on a reopen.
    live: ArcSwap<Handles>,
    /// The sled database's directory (`DATA/db`), for free-space checks.
    db_dir: PathBuf,
    /// Random id of this database, sent with every feed page.
    id: u64,
    /// One write at a time: ids and watermarks advance in one order.
    writer: guard::Turnstile<Writer>,
    durable: Durable,
    /// Whether writes are accepted, kept by the writer's guard.
    health: Arc<HealthCell>,
    /// Woken after each ingest, for long-polling feed readers.
    pub feed_grew: Notify,
}

fn be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

fn u64_of(bytes: Option<sled::IVec>) -> u64 {
    bytes
        .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
        .map_or(0, u64::from_be_bytes)
}

fn kv_key(store: &str, key: &str) -> Vec<u8> {
    [store.as_bytes(), b"\0", key.as_bytes()].concat()
}

fn topic_key(topic: &str, rest: &[u8]) -> Vec<u8> {
    [topic.as_bytes(), b"\0", rest].concat()
}

/// A write refused before it touched the database.
fn refused(reason: &str) -> CloudStoreError {
    CloudStoreError::Unavailable(format!("nothing was applied: {reason}"))
}

/// A write whose flush failed or stalled, or that sled failed.
fn in_doubt(reason: &str) -> CloudStoreError {
    CloudStoreError::Unavailable(format!(
        "{reason}; not acknowledged (it may or may not be on disk): send it again, a redelivery is harmless"
    ))
}

type Tx<T> = Result<T, ConflictableTransactionError<()>>;

/// The trees one entry's transaction touches.
struct Views<'a> {
    kv: &'a TransactionalTree,
    /// This batch's changes, written as one feed row at its end.
    feed_row: std::cell::RefCell<Vec<u8>>,
    conflicts: &'a TransactionalTree,
    events: &'a TransactionalTree,
    idempotency: &'a TransactionalTree,
}

impl SledStore {
    /// Opens (creating if needed) the database in `dir`, with the default
    /// [`StorageOptions`].
    pub fn open(dir: &Path) -> Result<Arc<Self>, CloudStoreError> {
        Self::open_with(dir, &StorageOptions::default())
    }

    /// Opens (creating if needed) the database in `dir`, run by `options`
    /// on a full or failing disk, and starts its probe thread (which ends
    /// soon after the store is dropped).
    pub fn open_with(dir: &Path, options: &StorageOptions) -> Result<Arc<Self>, CloudStoreError> {
        let db_dir = dir.join("db");
        let handles = Handles::open(&db_dir)?;
        let counters = handles.counters()?;
        let id = match handles.meta.get("id")? {
            Some(id) => u64_of(Some(id)),
            None => {
                let id = fastrand::u64(1..);
                handles.meta.insert("id", &be(id))?;
                handles.db.flush()?;
                id
            }
        };
        let durable = Durable::default();
        durable.publish(&counters);
        let health = Arc::new(HealthCell::default());
        let reopen: Reopen<Reopened> = Arc::new(|db_dir: &Path| {
            let handles = Handles::open(db_dir).map_err(|e| ReopenError::Open(e.to_string()))?;
            let counters = handles
                .counters()
                .map_err(|e| ReopenError::Open(e.to_string()))?;
            let db = handles.db.clone();
            Ok((Reopened { handles, counters }, db))
        });
        let guard = Guard::new(
            handles.db.clone(),
            db_dir.clone(),
            options.clone(),
            health.clone(),
            reopen,
            guard::OWNER,
        )
        .map_err(|e| CloudStoreError::Internal(format!("cannot start the flush thread: {e}")))?;
        let store = Arc::new(Self {
            live: ArcSwap::from_pointee(handles),
            db_dir,
            id,
            writer: guard::Turnstile::new(Writer { counters, guard }),
            durable,
            health,
            feed_grew: Notify::new(),
        });
        spawn_prober(Arc::downgrade(&store), options.probe_interval).map_err(|e| {
            CloudStoreError::Internal(format!("cannot start the probe thread: {e}"))
        })?;
        Ok(store)
    }

    /// The database as it is now; load it once per operation.
    fn handles(&self) -> Arc<Handles> {
        self.live.load_full()
    }

    /// Whether the database accepts writes now, and why not. Cheap (one
    /// `statvfs`); call it per request if need be.
    pub fn health(&self) -> StorageHealth {
        self.health.snapshot(guard::free_bytes(&self.db_dir))
    }

    /// Runs `work` as the one write in progress and returns its result once
    /// it is durable; see the module docs for what storage failures answer.
    fn write<T>(
        &self,
        work: impl FnOnce(&Handles, &mut Counters) -> Result<T, CloudStoreError>,
    ) -> Result<T, CloudStoreError> {
        // Before waiting for the writer: while storage fails, every write
        // hears so at once, even behind one that waits out its flush.
        if let Some(reason) = self.health.refusing() {
            self.health.count_refused(1);
            return Err(refused(&reason));
        }
        let Some(mut writer) = self.writer.enter(WRITER_WAIT) else {
            self.health.count_refused(1);
            tracing::warn!(target: "outpost::cloud::store", waited = ?WRITER_WAIT, "a write waited too long for the one before it; refused");
            return Err(refused(&format!(
                "another write has held the database for over {WRITER_WAIT:?}"
            )));
        };
        let writer = &mut *writer;
        writer.guard.admit().map_err(|reason| {
            self.health.count_refused(1);
            refused(&reason)
        })?;
        let handles = self.handles();
        match work(&handles, &mut writer.counters) {
            Err(CloudStoreError::Db(sled::Error::Io(e))) => {
                let reason = format!("a database write failed: {e}");
                self.health.count_unknown(1);
                writer.guard.sled_failed(reason.clone());
                Err(in_doubt(&reason))
            }
            Err(e) => Err(e),
            Ok(value) => {
                writer.guard.flush().map_err(|reason| {
                    self.health.count_unknown(1);
                    in_doubt(&reason)
                })?;
                self.publish(&writer.counters);
                Ok(value)
            }
        }
    }

    /// Everything up to `counters` is on disk: readers may see it.
    fn publish(&self, counters: &Counters) {
        self.durable.publish(counters);
        self.feed_grew.notify_waiters();
    }

    /// While writes fail, looks for a way back (see [`Guard::probe`]).
    fn probe(&self, within: Duration) {
        // Healthy: leave the writer to the writes.
        if self.health.refusing().is_none() {
            return;
        }
        let Some(mut writer) = self.writer.enter(within) else {
            return;
        };
        let writer = &mut *writer;
        if !writer.guard.failing() {
            return;
        }
        match writer.guard.probe() {
            None => {}
            Some(Recovered::Flushed) => self.publish(&writer.counters),
            Some(Recovered::Reopened(Reopened { handles, counters })) => {
                // What the disk holds may be behind what was handed out (a
                // batch answered 503 may be partly lost) or not: the larger
                // of the two never reuses an id that is on disk, and ids
                // skipped were never visible (they were past the marks).
                writer.counters = writer.counters.max(counters);
                self.live.store(Arc::new(handles));
                self.publish(&writer.counters);
            }
        }
    }

    /// Applies a batch: each entry exactly once (entries at or below the
    /// epoch's watermark are duplicates, and must match what was applied),
    /// then flushes. The ack is only returned once everything it covers is
    /// durable. Refused entries advance the watermark without applying.
    /// KV entries that ask for their outcome are answered by their key's
    /// version as the batch's transaction leaves it (one read each).
    /// While storage fails the batch is refused, or, if its flush failed,
    /// answered [`CloudStoreError::Unavailable`] without an ack.
    pub fn ingest(&self, batch: &Checked) -> Result<Ack, CloudStoreError> {
        batch.check_sequence()?;
        self.write(|handles, counters| apply_batch(handles, counters, batch))
    }

    /// The values of `tree` keyed `prefix + id` for ids after `since` and
    /// below `durable`, at most `limit` and (past the first) at most
    /// [`MAX_PAGE_BYTES`] of them, with the last id scanned. Entries
    /// that fail to decode are logged and skipped, never allowed to stall
    /// a reader.
    fn scan<T: serde::de::DeserializeOwned>(
        tree: &Tree,
        prefix: &[u8],
        since: u64,
        durable: u64,
        limit: usize,
    ) -> Result<(Vec<T>, u64), CloudStoreError> {
        let start = [prefix, &be(since.saturating_add(1))].concat();
        let end = [prefix, &be(durable)].concat();
        let mut items = Vec::new();
        let mut last = since;
        let mut bytes = 0;
        for item in tree.range(start..end).take(limit) {
            let (key, json) = item?;
            if !items.is_empty() && bytes + json.len() > MAX_PAGE_BYTES {
                break;
            }
            bytes += json.len();
            last = u64_of(Some(key.subslice(prefix.len(), 8)));
            match serde_json::from_slice(&json) {
                Ok(value) => items.push(value),
                Err(e) => {
                    tracing::error!(target: "outpost::cloud::store", id = last, error = %e, "skipping an undecodable entry")
                }
            }
        }
        Ok((items, last))
    }

    /// Changes after `since`, oldest first.
    pub fn feed(&self, since: u64, limit: usize) -> Result<FeedPage, CloudStoreError> {
        let durable = self.durable.feed.load(Ordering::Acquire);
        let (changes, next) = crate::sled_feed::read(&self.handles().feed, since, durable, limit)?;
        Ok(FeedPage {
            changes,
            next,
            cloud: self.id,
            conflicts: self.conflict_count(),
        })
    }

    /// Conflicts recorded and durable so far (ids start at 1).
    pub fn conflict_count(&self) -> u64 {
        self.durable
            .conflict
            .load(Ordering::Acquire)
            .saturating_sub(1)
    }

    /// Up to `limit` conflicts after id `since`.
    pub fn conflicts(&self, since: u64, limit: usize) -> Result<Page<Conflict>, CloudStoreError> {
        let durable = self.durable.conflict.load(Ordering::Acquire);
        let (items, next) = Self::scan(&self.handles().conflicts, b"", since, durable, limit)?;
        Ok(Page { items, next })
    }

    /// Events of `topic` with id after `since`, oldest first.
    pub fn events(
        &self,
        topic: &str,
        since: u64,
        limit: usize,
    ) -> Result<Page<Event>, CloudStoreError> {
        let durable = self.durable.event.load(Ordering::Acquire);
        let prefix = topic_key(topic, b"");
        let (items, next) = Self::scan(&self.handles().events, &prefix, since, durable, limit)?;
        Ok(Page { items, next })
    }

    /// Stores a new credential (and its token hash, for lookups), durably;
    /// refused like any write while storage fails.
    pub fn put_credential(&self, credential: &Credential) -> Result<(), CloudStoreError> {
        let json = serde_json::to_vec(credential).expect("serializes");
        self.write(|handles, _| {
            (&handles.credentials, &handles.token_hashes)
                .transaction(|(credentials, hashes)| {
                    credentials.insert(credential.id.as_bytes(), json.as_slice())?;
                    hashes.insert(credential.token_sha256.as_bytes(), credential.id.as_bytes())?;
                    Ok::<_, ConflictableTransactionError<()>>(())
                })
                .map_err(|e| match e {
                    TransactionError::Storage(e) => CloudStoreError::Db(e),
                    TransactionError::Abort(()) => unreachable!("never aborts"),
                })
        })
    }

    fn credential(handles: &Handles, id: &[u8]) -> Result<Option<Credential>, CloudStoreError> {
        Ok(handles
            .credentials
            .get(id)?
            .and_then(|json| serde_json::from_slice(&json).ok()))
    }

    /// The credential whose token hashes to `token_sha256`. A read: it
    /// keeps working while writes fail, so edges and readers still
    /// authenticate.
    pub fn credential_by_hash(
        &self,
        token_sha256: &str,
    ) -> Result<Option<Credential>, CloudStoreError> {
        let handles = self.handles();
        match handles.token_hashes.get(token_sha256.as_bytes())? {
            Some(id) => Self::credential(&handles, &id),
            None => Ok(None),
        }
    }

    /// Every credential, in id order.
    pub fn credentials(&self) -> Result<Vec<Credential>, CloudStoreError> {
        let mut all = Vec::new();
        for item in self.handles().credentials.iter() {
            let (_, json) = item?;
            if let Ok(credential) = serde_json::from_slice(&json) {
                all.push(credential);
            }
        }
        Ok(all)
    }

    /// Marks credential `id` revoked, durably; `false` if there is none.
    /// Refused like any write while storage fails.
    pub fn revoke_credential(&self, id: &str) -> Result<bool, CloudStoreError> {
        self.write(|handles, _| {
            let Some(mut credential) = Self::credential(handles, id.as_bytes())? else {
                return Ok(false);
            };
            if credential.revoked_ms.is_none() {
                credential.revoked_ms = Some(crate::credentials::now_ms());
                let json = serde_json::to_vec(&credential).expect("serializes");
                handles.credentials.insert(id.as_bytes(), json)?;
            }
            Ok(true)
        })
    }

    /// The cloud's current value of a key: version, and value or `None`
    /// for a delete.
    pub fn get(&self, store: &str, key: &str) -> Result<Option<Current>, CloudStoreError> {
        Ok(self
            .handles()
            .kv
            .get(kv_key(store, key))?
            .and_then(|bytes| envelope::decode(&bytes))
            .map(|stored| (stored.version, stored.value)))
    }

    /// The cursor of the last durable change (0: none).
    pub fn feed_head(&self) -> u64 {
        self.durable.feed.load(Ordering::Acquire).saturating_sub(1)
    }

    /// Whether conflict `id` is one readers may see, and its review if it
    /// has one.
    fn review_of(
        &self,
        handles: &Handles,
        id: u64,
    ) -> Result<Option<Option<Review>>, CloudStoreError> {
        let durable = self.durable.conflict.load(Ordering::Acquire);
        if id == 0 || id >= durable || !handles.conflicts.contains_key(be(id))? {
            return Ok(None);
        }
        Ok(Some(match handles.reviews.get(be(id))? {
            Some(json) => Some(decode_review(id, &json)?),
            None => None,
        }))
    }

    /// Records `review` for conflict `id` unless it has one that stands
    /// (then that one is answered), durably; see
    /// [`CloudStore::review_conflict`].
    pub fn review_conflict(&self, id: u64, review: &Review) -> Result<Reviewed, CloudStoreError> {
        // An unknown id needs no writer: conflicts below the durable mark
        // never go away. A stored review does: one read outside the writer
        // may be one whose flush is still running (or failed), and
        // answering it would let a crash record another "first" review.
        // The writer runs one write at a time, each flushed before the
        // next, so what it reads while storage is healthy is on disk.
        if self.review_of(&self.handles(), id)?.is_none() {
            return Ok(Reviewed::NoSuchConflict);
        }
        let json = serde_json::to_vec(review).expect("serializes");
        self.write(|handles, _| match self.review_of(handles, id)? {
            None => Ok(Reviewed::NoSuchConflict),
            Some(Some(kept)) if !review.replaces(&kept) => Ok(Reviewed::Already(kept)),
            Some(_) => {
                handles.reviews.insert(be(id), json.as_slice())?;
                Ok(Reviewed::Recorded(review.clone()))
            }
        })
    }

    /// The ids of the reviewed conflicts in `after + 1 ..= through`: the
    /// tree's keys only.
    pub fn reviewed_ids(&self, after: u64, through: u64) -> Result<BTreeSet<u64>, CloudStoreError> {
        let mut ids = BTreeSet::new();
        if through <= after {
            return Ok(ids);
        }
        for key in self
            .handles()
            .reviews
            .range(be(after + 1)..=be(through))
            .keys()
        {
            ids.insert(u64_of(Some(key?)));
        }
        Ok(ids)
    }

    /// The reviews of conflicts `after + 1 ..= through`.
    pub fn reviews(
        &self,
        after: u64,
        through: u64,
    ) -> Result<BTreeMap<u64, Review>, CloudStoreError> {
        let mut all = BTreeMap::new();
        if through <= after {
            return Ok(all);
        }
        for item in self.handles().reviews.range(be(after + 1)..=be(through)) {
            let (key, json) = item?;
            let id = u64_of(Some(key));
            all.insert(id, decode_review(id, &json)?);
        }
        Ok(all)
    }

    /// Up to `limit` keys of `store` after `after`; see [`CloudStore::keys`].
    pub fn keys(
        &self,
        store: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<KeyPage, CloudStoreError> {
        let prefix = kv_key(store, "");
        let start = match after {
            Some(key) => Bound::Excluded(kv_key(store, key)),
            None => Bound::Included(prefix.clone()),
        };
        // Store ids hold no NUL, so `store \x01` is just past its keys.
        let end = Bound::Excluded([store.as_bytes(), b"\x01"].concat());
        let (mut items, mut bytes, mut more) = (Vec::new(), 0, false);
        for item in self.handles().kv.range::<Vec<u8>, _>((start, end)) {
            let (storage_key, envelope) = item?;
            if items.len() >= limit.max(1)
                || (!items.is_empty() && bytes + envelope.len() > MAX_PAGE_BYTES)
            {
                more = true;
                break;
            }
            bytes += envelope.len();
            let key = std::str::from_utf8(&storage_key[prefix.len()..]);
            match (key, envelope::decode(&envelope)) {
                (Ok(key), Some(stored)) => {
                    items.push((key.to_owned(), (stored.version, stored.value)));
                }
                _ => {
                    tracing::error!(target: "outpost::cloud::store", store, "skipping an undecodable key");
                }
            }
        }
        let next = more
            .then(|| items.last().map(|(key, _): &(String, Current)| key.clone()))
            .flatten();
        Ok(KeyPage { items, next })
    }
}

fn decode_review(id: u64, json: &[u8]) -> Result<Review, CloudStoreError> {
    serde_json::from_slice(json).map_err(|e| {
        CloudStoreError::Internal(format!("the review of conflict {id} does not decode: {e}"))
    })
}

/// Probes a failing store every `every` (see [`SledStore::probe`]) until
/// the store is dropped. Holds it only for a probe.
fn spawn_prober(store: Weak<SledStore>, every: Duration) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("outpost-cloud-probe".into())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                let Some(store) = store.upgrade() else {
                    return;
                };
                store.probe(every);
            }
        })
        .map(drop)
}

/// The body of [`SledStore::ingest`], run as the one write in progress:
/// it advances `counters` past what it applies; the writer flushes.
fn apply_batch(
    handles: &Handles,
    counters: &mut Counters,
    batch: &Checked,
) -> Result<Ack, CloudStoreError> {
    let mark_key = be(batch.epoch);
    let owner = handles.epochs.get(mark_key)?;
    if let Some(owner) = &owner
        && owner.as_ref() != batch.node.as_bytes()
    {
        return Err(CloudStoreError::EpochOwned {
            epoch: batch.epoch,
            owner: String::from_utf8_lossy(owner).into_owned(),
        });
    }
    let mark = u64_of(handles.applied.get(mark_key)?);
    // Edges number records without gaps: on an epoch this database
    // knows, the missing ones were lost on the way, and accepting past
    // them would make them vanish. An epoch it has never seen may start
    // anywhere: its earlier records went to a cloud database that was
    // replaced (the edge's cursor says so too).
    if let Some((first, _)) = batch.entries.first()
        && owner.is_some()
        && first.seq > mark.saturating_add(1)
    {
        return Err(CloudStoreError::SequenceGap {
            expected: mark.saturating_add(1),
            got: first.seq,
        });
    }
    // A redelivery carries what was applied before; anything else under
    // the same (epoch, seq) is a second process on one identity.
    let digests = Digests {
        rows: &handles.batch_digests,
        claims: &handles.digests,
    };
    let mut refused_before = Vec::new();
    for (entry, _) in batch.entries.iter().take_while(|(e, _)| e.seq <= mark) {
        if let Some(kept) = digests.at(batch.epoch, entry.seq)? {
            let (kept_digest, code) = kept.split_at(8.min(kept.len()));
            if kept_digest != entry_digest(entry) {
                return Err(CloudStoreError::CloneDetected(entry.seq));
            }
            // Refused the first time: say so again, in case the first
            // answer was lost, so the edge sets the record aside
            // instead of dropping it as a duplicate.
            if let Some(invalid) = std::str::from_utf8(code)
                .ok()
                .and_then(outpost_wire::validate::Invalid::from_code)
            {
                refused_before.push(Refusal {
                    seq: entry.seq,
                    code: invalid.code().to_owned(),
                    reason: invalid.describe().to_owned(),
                });
            }
        }
    }
    // Bound only once the batch is known to be acceptable, so a refused
    // batch cannot claim an epoch.
    if owner.is_none() && !batch.entries.is_empty() {
        handles.epochs.insert(mark_key, batch.node.as_bytes())?;
    }
    // Refused records are not answered: a redelivered one by what was kept
    // (`refused_before`, in seq order), a new one by its verdict.
    let awaited = crate::contract::awaited(
        batch
            .entries
            .iter()
            .filter(|(_, verdict)| verdict.is_none())
            .map(|(e, _)| e),
        |seq| seq <= mark && refused_before.binary_search_by_key(&seq, |r| r.seq).is_ok(),
    );
    let mut ack = Ack {
        applied: 0,
        duplicates: 0,
        through: 0,
        refused: refused_before,
        superseded: Vec::new(),
        answered: Vec::new(),
    };
    // What each new entry keeps, and whether it was applied before at its
    // place or (renumbered by `--new-epoch`, or carried by a copy) at its
    // old one: then the same record is not applied twice. A digest with a
    // refusal code was refused there, which says nothing about this
    // verdict. Read here, not in the transaction (see `sled_digests`).
    let mut new_entries = Vec::new();
    for (entry, verdict) in batch.entries.iter().skip_while(|(e, _)| e.seq <= mark) {
        let digest = entry_digest(entry);
        let mut kept = digest.to_vec();
        if let Some(invalid) = verdict {
            kept.extend_from_slice(invalid.code().as_bytes());
        }
        // Past the mark, only a claim can be there: batch rows stop at it.
        let mut seen_before =
            digests.claim(batch.epoch, entry.seq)?.as_deref() == Some(&digest[..]);
        // Claim the old place too, unless its own stream already put
        // something else there.
        let mut claim = None;
        if let Some(origin) = entry.origin {
            let there = digests.at(origin.epoch, origin.seq)?;
            seen_before |= there.as_deref() == Some(&digest[..]);
            if there.is_none() {
                claim = Some(digest_key(origin.epoch, origin.seq));
            }
        }
        new_entries.push((entry, *verdict, kept, seen_before, claim));
    }
    let last = batch.entries.last().map_or(mark, |(e, _)| e.seq);
    let expired = digests.expired(batch.epoch, last)?;
    let row = encode_row(new_entries.iter().map(|(_, _, kept, _, _)| kept.as_slice()));
    // One transaction for the whole batch: sled seals and writes its log
    // buffer at the start of every transaction, which per entry was most
    // of an ingest's cost. Entries apply in order, each seeing the ones
    // before it; sled may rerun the closure, so all it changes is local.
    let start = *counters;
    let result = (
        &handles.applied,
        &handles.kv,
        &handles.feed,
        &handles.conflicts,
        &handles.events,
        &handles.idempotency,
        &handles.meta,
        &handles.digests,
        &handles.batch_digests,
    )
        .transaction(
            |(applied, kv, feed, conflicts, events, idempotency, meta, claims, rows)| {
                let mut next = start;
                let views = Views {
                    kv,
                    feed_row: Default::default(),
                    conflicts,
                    events,
                    idempotency,
                };
                for (entry, verdict, kept, seen_before, claim) in &new_entries {
                    if verdict.is_none() && !seen_before {
                        apply_entry(&views, &mut next, &batch.node, entry)?;
                    }
                    if let Some(place) = claim {
                        claims.insert(place, kept.as_slice())?;
                    }
                }
                let feed_row = views.feed_row.take();
                if !feed_row.is_empty() {
                    feed.insert(&be(start.feed), feed_row)?;
                }
                if let Some((first, ..)) = new_entries.first() {
                    rows.insert(&digest_key(batch.epoch, first.seq), row.as_slice())?;
                    applied.insert(&mark_key, &be(last))?;
                }
                for key in &expired {
                    rows.remove(key)?;
                }
                meta.insert("next_feed", &be(next.feed))?;
                meta.insert("next_event", &be(next.event))?;
                meta.insert("next_conflict", &be(next.conflict))?;
                // After the writes, in the transaction: its reads see them,
                // and no other write runs while this one holds the writer.
                let superseded = crate::contract::superseded(&awaited, |write| {
                    Ok::<_, ConflictableTransactionError<()>>(
                        kv.get(kv_key(write.store, write.key))?
                            .and_then(|bytes| envelope::decode(&bytes))
                            .map(|stored| stored.version),
                    )
                })?;
                Ok((next, superseded))
            },
        );
    let next = match result {
        Ok((next, superseded)) => {
            ack.superseded = superseded;
            ack.answered = awaited.iter().map(|w| w.seq).collect();
            next
        }
        Err(TransactionError::Storage(e)) => return Err(e.into()),
        Err(TransactionError::Abort(())) => unreachable!("entries never abort"),
    };
    *counters = next;
    for (entry, _) in batch.entries.iter().take_while(|(e, _)| e.seq <= mark) {
        ack.through = ack.through.max(entry.seq);
        ack.duplicates += 1;
    }
    for (entry, verdict, _, seen_before, _) in &new_entries {
        ack.through = ack.through.max(entry.seq);
        match verdict {
            None if *seen_before => ack.duplicates += 1,
            None => ack.applied += 1,
            Some(invalid) => ack.refused.push(Refusal {
                seq: entry.seq,
                code: invalid.code().to_owned(),
                reason: invalid.describe().to_owned(),
            }),
        }
    }
    Ok(ack)
}

fn apply_entry(views: &Views<'_>, next: &mut Counters, node: &str, entry: &Entry) -> Tx<()> {
    match &entry.record {
        Record::Kv {
            store,
            key,
            value,
            version,
            seen,
        } => {
            let storage_key = kv_key(store, key);
            let current = views
                .kv
                .get(&storage_key)?
                .and_then(|bytes| envelope::decode(&bytes));
            let incoming_wins = current.as_ref().is_none_or(|c| *version > c.version);
            if let Some(current) = &current
                && *version != current.version
                && seen.as_ref() != Some(&current.version)
            {
                // Written without seeing what the cloud holds: a conflict,
                // resolved last-writer-wins and recorded for operators.
                let (winner, winner_value, loser, loser_value) = if incoming_wins {
                    (version, value, &current.version, &current.value)
                } else {
                    (&current.version, &current.value, version, value)
                };
                let conflict = Conflict {
                    id: next.conflict,
                    store: store.clone(),
                    key: key.clone(),
                    winner: winner.clone(),
                    winner_value: winner_value.clone(),
                    loser: loser.clone(),
                    loser_value: loser_value.clone(),
                };
                views.conflicts.insert(
                    &be(next.conflict),
                    serde_json::to_vec(&conflict).expect("serializes"),
                )?;
                next.conflict += 1;
            }
            if incoming_wins {
                views
                    .kv
                    .insert(storage_key, envelope::encode(version, value.as_deref()))?;
                let change = Change {
                    cursor: next.feed,
                    store: store.clone(),
                    key: key.clone(),
                    value: value.clone(),
                    version: version.clone(),
                };
                crate::sled_feed::pack(
                    &mut views.feed_row.borrow_mut(),
                    &serde_json::to_vec(&change).expect("serializes"),
                );
                next.feed += 1;
            }
        }
        Record::Event {
            topic,
            payload,
            idempotency_key,
            hlc,
        } => {
            if let Some(key) = idempotency_key {
                let dedup = topic_key(topic, key.as_bytes());
                if views.idempotency.get(&dedup)?.is_some() {
                    return Ok(());
                }
                views.idempotency.insert(dedup, &be(next.event))?;
            }
            let event = Event {
                id: next.event,
                topic: topic.clone(),
                node: node.to_owned(),
                seq: entry.seq,
                payload: payload.clone(),
                idempotency_key: idempotency_key.clone(),
                hlc: *hlc,
            };
            views.events.insert(
                topic_key(topic, &be(next.event)),
                serde_json::to_vec(&event).expect("serializes"),
            )?;
            next.event += 1;
        }
        // The edge set the original aside; the sequence number is spent.
        Record::Skipped { .. } => {}
    }
    Ok(())
}

/// [`SledStore`] behind the store contract. Writes run on the blocking
/// pool (they wait for a flush, at most the flush bound); reads are short
/// sled lookups and run inline.
#[derive(Clone)]
pub struct Sled(pub Arc<SledStore>);

impl Sled {
    /// Opens (creating if needed) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, CloudStoreError> {
        Ok(Self(SledStore::open(dir)?))
    }

    /// Opens (creating if needed) the database in `dir`, run by `options`
    /// on a full or failing disk.
    pub fn open_with(dir: &Path, options: &StorageOptions) -> Result<Self, CloudStoreError> {
        Ok(Self(SledStore::open_with(dir, options)?))
    }
}

impl CloudStore for Sled {
    async fn ingest(&self, batch: Checked) -> Result<Ack, CloudStoreError> {
        let store = self.0.clone();
        tokio::task::spawn_blocking(move || store.ingest(&batch))
            .await
            .map_err(|e| CloudStoreError::Internal(e.to_string()))?
    }

    async fn feed(&self, since: u64, limit: usize) -> Result<FeedPage, CloudStoreError> {
        self.0.feed(since, limit)
    }

    fn feed_grew(&self) -> &Notify {
        &self.0.feed_grew
    }

    async fn conflict_count(&self) -> Result<u64, CloudStoreError> {
        Ok(self.0.conflict_count())
    }

    async fn conflicts(&self, since: u64, limit: usize) -> Result<Page<Conflict>, CloudStoreError> {
        self.0.conflicts(since, limit)
    }

    async fn events(
        &self,
        topic: &str,
        since: u64,
        limit: usize,
    ) -> Result<Page<Event>, CloudStoreError> {
        self.0.events(topic, since, limit)
    }

    async fn put_credential(&self, credential: Credential) -> Result<(), CloudStoreError> {
        let store = self.0.clone();
        tokio::task::spawn_blocking(move || store.put_credential(&credential))
            .await
            .map_err(|e| CloudStoreError::Internal(e.to_string()))?
    }

    async fn credential_by_hash(
        &self,
        token_sha256: &str,
    ) -> Result<Option<Credential>, CloudStoreError> {
        self.0.credential_by_hash(token_sha256)
    }

    async fn credentials(&self) -> Result<Vec<Credential>, CloudStoreError> {
        self.0.credentials()
    }

    async fn revoke_credential(&self, id: &str) -> Result<bool, CloudStoreError> {
        let (store, id) = (self.0.clone(), id.to_owned());
        tokio::task::spawn_blocking(move || store.revoke_credential(&id))
            .await
            .map_err(|e| CloudStoreError::Internal(e.to_string()))?
    }

    async fn get(&self, store: &str, key: &str) -> Result<Option<Current>, CloudStoreError> {
        self.0.get(store, key)
    }

    async fn feed_head(&self) -> Result<u64, CloudStoreError> {
        Ok(self.0.feed_head())
    }

    async fn review_conflict(&self, id: u64, review: Review) -> Result<Reviewed, CloudStoreError> {
        let store = self.0.clone();
        tokio::task::spawn_blocking(move || store.review_conflict(id, &review))
            .await
            .map_err(|e| CloudStoreError::Internal(e.to_string()))?
    }

    async fn reviews(
        &self,
        after: u64,
        through: u64,
    ) -> Result<BTreeMap<u64, Review>, CloudStoreError> {
        self.0.reviews(after, through)
    }

    async fn reviewed_ids(
        &self,
        after: u64,
        through: u64,
    ) -> Result<BTreeSet<u64>, CloudStoreError> {
        self.0.reviewed_ids(after, through)
    }

    async fn keys(
        &self,
        store: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<KeyPage, CloudStoreError> {
        self.0.keys(store, after, limit)
    }
}

/// What is particular to sled (a flush that stalls or never ends); what
/// every backend must do is in the conformance suite
/// (`host/cloud/tests/conformance.rs`).
#[cfg(test)]
mod tests {
    use super::*;
    use outpost_wire::Version;

    fn kv(seq: u64, key: &str, value: &str, hlc: u64, node: &str, seen: Option<Version>) -> Entry {
        Entry {
            origin: None,
            outcome: false,
            seq,
            record: Record::Kv {
                store: "s".into(),
                key: key.into(),
                value: Some(value.as_bytes().to_vec()),
                version: Version {
                    hlc,
                    node: node.into(),
                },
                seen,
            },
        }
    }

    /// Each test node has its own database, so its own epoch.
    fn batch(node: &str, entries: Vec<Entry>) -> Checked {
        Checked {
            node: node.into(),
            epoch: u64::from(node.as_bytes()[0]),
            entries: entries.into_iter().map(|e| (e, None)).collect(),
        }
    }

    /// Bounds for the tests that hold a flush: short, so the tests are;
    /// nothing here measures how fast an answer comes.
    fn held_flush_options(stall_reopen_after: Duration) -> StorageOptions {
        StorageOptions {
            min_free_bytes: 0,
            // Generous: a real flush on a loaded 2-core machine can take
            // a while, and only the held one is meant to time out.
            flush_timeout: Duration::from_secs(2),
            probe_interval: Duration::from_millis(50),
            stall_reopen_after,
        }
    }

    fn eventually(what: &str, mut check: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !check() {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn unavailable(result: Result<Ack, CloudStoreError>) -> String {
        match result {
            Err(CloudStoreError::Unavailable(reason)) => reason,
            other => panic!("expected storage-unavailable, got {other:?}"),
        }
    }

    #[test]
    fn an_ingest_whose_flush_stalls_is_not_acknowledged_and_writes_resume_when_it_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open_with(dir.path(), &held_flush_options(Duration::MAX)).unwrap();
        store
            .ingest(&batch("a", vec![kv(1, "k1", "v1", 10, "a", None)]))
            .unwrap();
        let (credential, token) = crate::credentials::Enrol::node("a").issue().unwrap();
        store.put_credential(&credential).unwrap();

        let gate = guard::gate::hold_next_flush(&dir.path().join("db"));
        let stalled = batch("a", vec![kv(2, "k2", "v2", 11, "a", None)]);
        let reason = unavailable(store.ingest(&stalled));
        assert!(reason.contains("did not finish"), "{reason}");
        let health = store.health();
        assert!(
            !health.writable && health.failing_since.is_some(),
            "{health:?}"
        );
        assert_eq!((health.outcome_unknown, health.refused), (1, 0));

        // Later writes are refused before they touch the database (no
        // second flush is waited for); reads go on, below the marks.
        let later = batch("a", vec![kv(3, "k3", "v3", 12, "a", None)]);
        assert!(unavailable(store.ingest(&later)).contains("nothing was applied"));
        assert!(matches!(
            store.put_credential(&credential),
            Err(CloudStoreError::Unavailable(_))
        ));
        assert_eq!(store.health().refused, 2);
        assert!(store.get("s", "k3").unwrap().is_none(), "not applied");
        assert_eq!(
            store.feed(0, 10).unwrap().changes.len(),
            1,
            "k2 is not durable"
        );
        let hash = crate::credentials::token_hash(&token);
        assert_eq!(store.credential_by_hash(&hash).unwrap(), Some(credential));

        gate.release();
        eventually("writes resume", || store.health().writable);
        assert_eq!(store.health().reopens, 0);
        assert_eq!(store.feed(0, 10).unwrap().changes.len(), 2, "k2 made it");
        // The edge sends the unacknowledged batch again: harmless.
        let again = store.ingest(&stalled).unwrap();
        assert_eq!((again.applied, again.duplicates), (0, 1));
        assert_eq!(store.ingest(&later).unwrap().applied, 1);
    }

    /// A review read while the write recording it still waits for its
    /// flush must not be answered as the one that stands: if that flush
    /// never makes it, a crash loses it, and another review would be the
    /// "first". The answer waits for the writer, which refuses while the
    /// flush is in doubt, and is the durable review once it made it.
    #[test]
    fn a_review_whose_flush_is_in_doubt_is_not_answered_as_the_one_that_stands() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open_with(dir.path(), &held_flush_options(Duration::MAX)).unwrap();
        store
            .ingest(&batch("b", vec![kv(1, "k", "from-b", 20, "b", None)]))
            .unwrap();
        store
            .ingest(&batch("a", vec![kv(1, "k", "from-a", 10, "a", None)]))
            .unwrap();
        assert_eq!(store.conflict_count(), 1);
        let review = |by: &str| Review {
            by: by.into(),
            at_ms: 1,
            note: None,
        };

        let gate = guard::gate::hold_next_flush(&dir.path().join("db"));
        let first = std::thread::spawn({
            let store = store.clone();
            let mine = review("node:a");
            move || store.review_conflict(1, &mine)
        });
        eventually("the first review waits for its flush", || gate.holding());
        // The first review is in the tree, not on disk.
        match store.review_conflict(1, &review("dev")) {
            Err(CloudStoreError::Unavailable(_)) => {}
            other => panic!("answered while the first review's flush is in doubt: {other:?}"),
        }
        assert!(matches!(
            first.join().unwrap(),
            Err(CloudStoreError::Unavailable(_))
        ));

        gate.release();
        eventually("writes resume", || store.health().writable);
        // The held flush made it after all: that review stands.
        assert_eq!(
            store.review_conflict(1, &review("dev")).unwrap(),
            Reviewed::Already(review("node:a"))
        );
        // The operator's replaces it, and then stands.
        assert_eq!(
            store.review_conflict(1, &review("operator")).unwrap(),
            Reviewed::Recorded(review("operator"))
        );
        assert_eq!(
            store.review_conflict(1, &review("node:b")).unwrap(),
            Reviewed::Already(review("operator"))
        );
    }

    #[test]
    fn a_flush_stuck_for_good_is_given_up_on_and_the_database_reopened_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let options = held_flush_options(Duration::from_millis(300));
        let store = SledStore::open_with(dir.path(), &options).unwrap();
        store
            .ingest(&batch("a", vec![kv(1, "k1", "v1", 10, "a", None)]))
            .unwrap();
        let gate = guard::gate::hold_next_flush(&dir.path().join("db"));
        let stuck = batch("a", vec![kv(2, "k2", "v2", 11, "a", None)]);
        unavailable(store.ingest(&stuck));

        eventually("the database reopened", || store.health().reopens == 1);
        assert!(store.health().writable, "{:?}", store.health());
        // k2 may or may not have reached the disk before the old instance
        // was fenced off it: either way it is there once, and no id twice.
        let again = store.ingest(&stuck).unwrap();
        assert_eq!(again.applied + again.duplicates, 1, "{again:?}");
        let next = batch("a", vec![kv(3, "k3", "v3", 12, "a", None)]);
        assert_eq!(store.ingest(&next).unwrap().applied, 1);
        let changes = store.feed(0, 10).unwrap().changes;
        let keys: Vec<&str> = changes.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["k1", "k2", "k3"]);
        let mut cursors: Vec<u64> = changes.iter().map(|c| c.cursor).collect();
        cursors.dedup();
        assert_eq!(cursors.len(), 3, "{cursors:?}");
        gate.release();
    }
}
