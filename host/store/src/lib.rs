//! The node's database: one sled db under `DATA/db` holding every KV store,
//! the outbox of records waiting for the cloud, and node metadata.
//!
//! Reads go straight to sled from the caller's thread. Every write goes
//! through the [`committer`], the node's single writer, which applies a
//! group of writes and makes them durable with one flush.

#![warn(missing_docs)]

pub mod awaiting;
pub mod committer;
pub mod epoch;
pub mod feed;
mod handles;
mod options;
pub mod pending;
pub mod quarantine;

pub use awaiting::CloudAnswer;
pub use committer::{Receipt, Rejection, Reply, WriteOp, Written};
pub use options::{
    DEFAULT_FLUSH_TIMEOUT, DEFAULT_MIN_FREE_BYTES, DEFAULT_PROBE_INTERVAL,
    DEFAULT_STALL_REOPEN_AFTER, StorageOptions,
};
pub use outpost_sled_guard::StorageHealth;
pub use outpost_wire::names::{MAX_NODE_ID_BYTES, is_valid_node_id};

use arc_swap::ArcSwap;
use committer::Progress;
use handles::Handles;
use outpost_sled_guard::HealthCell;
use outpost_wire::envelope;
/// sled's byte buffer, as outbox records come out of the database.
pub use sled::IVec;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::Notify;

/// Metadata keys.
pub(crate) const META_NODE_ID: &[u8] = b"node_id";
pub(crate) const META_EPOCH: &[u8] = b"epoch";
pub(crate) const META_NEXT_SEQ: &[u8] = b"next_seq";
pub(crate) const META_HLC: &[u8] = b"hlc";
pub(crate) const META_PULL_CURSOR: &[u8] = b"pull_cursor";
pub(crate) const META_CLOUD_ID: &[u8] = b"cloud_id";

/// Default cap on the outbox: how much a cut-off node buffers for the cloud.
pub const DEFAULT_MAX_OUTBOX_BYTES: u64 = 1024 * 1024 * 1024;

/// Failures of the node's database.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// sled itself failed (I/O, or its own corruption checks).
    #[error("database error: {0}")]
    Db(#[from] sled::Error),
    /// A stored value is not in the expected format; names where.
    #[error("corrupt data in the database: {0}")]
    Corrupt(String),
    /// The writer thread is gone (it panicked), so the write was not
    /// applied; every later write hears this too.
    #[error("the database writer has stopped")]
    Stopped,
    /// The write was **not applied**: the database is not accepting writes
    /// right now (the disk is nearly full, an earlier flush failed or
    /// stalled, or the database is being reopened), and this write was
    /// refused before it touched the database. Retrying later is safe;
    /// writes resume by themselves (see [`Storage::health`]).
    #[error("storage unavailable, the write was not applied: {0}")]
    Unavailable(String),
    /// The write was applied in memory but is **not acknowledged**: the
    /// flush that was to make it durable failed or did not finish within
    /// [`StorageOptions::flush_timeout`] (or the database failed during
    /// its group). It may be on disk, and then it stays and replicates, or
    /// it may be lost. A retry may apply it twice: read back first, or
    /// retry only what is idempotent.
    #[error("outcome unknown: the write may or may not have been applied ({0})")]
    OutcomeUnknown(String),
    /// The configured node id breaks [`is_valid_node_id`].
    #[error("invalid node id {0:?}: use 1 to 64 of [A-Za-z0-9._-]")]
    BadNodeId(String),
}

/// The sled tree holding store `id`. Store ids are `@NAME` for a function's
/// own `default` store and the plain name for a shared store.
pub fn tree_name(store: &str) -> String {
    format!("kv:{store}")
}

pub(crate) fn u64_value(bytes: Option<IVec>) -> u64 {
    bytes
        .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
        .map_or(0, u64::from_be_bytes)
}

/// One page of keys.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct KeyPage {
    /// Live keys, in byte order.
    pub keys: Vec<String>,
    /// Pass as `cursor` to get the next page; `None` when nothing follows.
    pub cursor: Option<String>,
}

/// One page of a store's keys with their stored versions, tombstones
/// included: what an operator compares across nodes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct VersionedPage {
    /// Keys in byte order, each with its version and value (`None`: a
    /// tombstone).
    pub items: Vec<(String, envelope::Stored)>,
    /// The last key of the page when more follow (pass it as `after`);
    /// `None` when nothing does.
    pub next: Option<String>,
}

/// The node's database, shared by readers; writes go through its writer.
pub struct Storage {
    /// The open database, replaced whole when the writer reopens it after
    /// a failure: load it per operation with [`Storage::handles`].
    live: Arc<ArcSwap<Handles>>,
    /// The sled database's directory (`DATA/db`), for free-space checks.
    db_dir: PathBuf,
    node_id: String,
    /// Random id fixed when the database was created (see [`outpost_wire::Batch`]).
    epoch: u64,
    writer: committer::Handle,
    /// The writer's progress: how far the outbox is durable, and its signal.
    progress: Arc<Progress>,
    /// Whether writes are accepted, kept by the writer.
    health: Arc<HealthCell>,
    /// How many callers could still submit a write, for the writer.
    callers: committer::Callers,
}

impl Storage {
    /// Opens (creating if needed) the database in `data_dir/db` and starts
    /// its writer, which keeps the outbox under `max_outbox_bytes`; the
    /// other options are the defaults (see [`Storage::open_with`]).
    pub fn open_with_limit(
        data_dir: &Path,
        node_id: Option<&str>,
        max_outbox_bytes: u64,
    ) -> Result<Arc<Self>, StorageError> {
        let options = StorageOptions {
            max_outbox_bytes,
            ..StorageOptions::default()
        };
        Self::open_with(data_dir, node_id, &options)
    }

    /// Opens (creating if needed) the database in `data_dir/db` and starts
    /// its writer with `options`. `node_id` overrides the stored id;
    /// without either, a new id is generated and stored.
    pub fn open_with(
        data_dir: &Path,
        node_id: Option<&str>,
        options: &StorageOptions,
    ) -> Result<Arc<Self>, StorageError> {
        let db_dir = data_dir.join("db");
        let handles = Handles::open(&db_dir)?;
        let (db, meta, outbox) = (
            handles.db.clone(),
            handles.meta.clone(),
            handles.outbox.clone(),
        );
        let stored = meta
            .get(META_NODE_ID)?
            .map(|v| String::from_utf8_lossy(&v).into_owned());
        if let Some(given) = node_id
            && !is_valid_node_id(given)
        {
            return Err(StorageError::BadNodeId(given.to_owned()));
        }
        let node_id = match (node_id, stored) {
            (Some(given), Some(stored)) if given != stored => {
                tracing::warn!(target: "outpost::storage", old = %stored, new = %given, "node id changed by configuration");
                given.to_owned()
            }
            (Some(given), _) => given.to_owned(),
            (None, Some(stored)) => stored,
            (None, None) => format!("edge-{:08x}", fastrand::u32(..)),
        };
        meta.insert(META_NODE_ID, node_id.as_bytes())?;
        let epoch = match meta.get(META_EPOCH)? {
            Some(epoch) => u64_value(Some(epoch)),
            None => {
                let epoch = fastrand::u64(1..);
                meta.insert(META_EPOCH, &epoch.to_be_bytes())?;
                epoch
            }
        };
        db.flush()?;
        let progress = Arc::new(Progress::default());
        let (mut backlog, mut records) = (0u64, 0u64);
        for item in outbox.iter() {
            backlog += item?.1.len() as u64;
            records += 1;
        }
        progress.outbox_bytes.store(backlog, Ordering::Release);
        progress.outbox_records.store(records, Ordering::Release);
        committer::recount_pending(&progress.pending, &handles, u64_value(meta.get(META_HLC)?));
        let live = Arc::new(ArcSwap::from_pointee(handles));
        let health = Arc::new(HealthCell::default());
        let callers = committer::Callers::default();
        let writer = committer::start(
            live.clone(),
            db_dir.clone(),
            node_id.clone(),
            progress.clone(),
            options,
            health.clone(),
            callers.clone(),
        )?;
        Ok(Arc::new(Self {
            live,
            db_dir,
            node_id,
            epoch,
            writer,
            progress,
            health,
            callers,
        }))
    }

    /// Tells the writer how many callers could still submit a write now
    /// (the edge: requests running), so that while writes arrive
    /// concurrently a group can wait a moment for the rest of them and
    /// share one flush (see the committer's `linger`). Without it, a group
    /// is whatever queued during the last flush. Set once; later calls
    /// are ignored.
    pub fn expect_callers(&self, callers: impl Fn() -> usize + Send + Sync + 'static) {
        let _ = self.callers.set(Box::new(callers));
    }

    /// Whether the database accepts writes now, why not, and counts of
    /// writes refused or left in doubt, for the health endpoint and
    /// metrics. Cheap (one `statvfs` for the free space); call it per
    /// request if need be.
    pub fn health(&self) -> StorageHealth {
        self.health
            .snapshot(outpost_sled_guard::free_bytes(&self.db_dir))
    }

    /// This node's id, stamped into every version it writes.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Random id of this database, sent with every batch to the cloud.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    fn tree(&self, store: &str) -> Result<sled::Tree, StorageError> {
        Ok(self.handles().db.open_tree(tree_name(store))?)
    }

    /// The live value of `key` in `store`.
    pub fn get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let Some(bytes) = self.tree(store)?.get(key)? else {
            return Ok(None);
        };
        match envelope::decode(&bytes) {
            Some(stored) => Ok(stored.value),
            None => Err(StorageError::Corrupt(format!("{store}/{key}"))),
        }
    }

    /// Whether `key` holds a live value in `store` (a tombstone does not count).
    pub fn exists(&self, store: &str, key: &str) -> Result<bool, StorageError> {
        Ok(self
            .tree(store)?
            .get(key)?
            .is_some_and(|b| envelope::live_value(&b).is_some()))
    }

    /// Up to `limit` live keys starting with `prefix`, after `cursor`.
    pub fn list_keys(
        &self,
        store: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<KeyPage, StorageError> {
        use std::ops::Bound;
        let tree = self.tree(store)?;
        let start = match cursor {
            Some(cursor) if cursor.as_bytes() >= prefix.as_bytes() => {
                Bound::Excluded(cursor.as_bytes().to_vec())
            }
            _ => Bound::Included(prefix.as_bytes().to_vec()),
        };
        let mut page = KeyPage::default();
        for item in tree.range::<Vec<u8>, _>((start, Bound::Unbounded)) {
            let (key, value) = item?;
            if !key.starts_with(prefix.as_bytes()) {
                break;
            }
            if envelope::live_value(&value).is_none() {
                continue;
            }
            if page.keys.len() == limit {
                page.cursor = page.keys.last().cloned();
                break;
            }
            page.keys.push(String::from_utf8_lossy(&key).into_owned());
        }
        Ok(page)
    }

    /// Up to `limit` keys of `store` after `after` (from the first
    /// without), in key order, with their versions: tombstones included,
    /// unlike [`Storage::list_keys`]. A store this node never opened
    /// reads as empty, and is not created by the read.
    pub fn list_versioned(
        &self,
        store: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<VersionedPage, StorageError> {
        use std::ops::Bound;
        let handles = self.handles();
        let name = tree_name(store);
        if !handles
            .db
            .tree_names()
            .iter()
            .any(|t| t.as_ref() == name.as_bytes())
        {
            return Ok(VersionedPage::default());
        }
        let tree = handles.db.open_tree(name)?;
        let start = match after {
            Some(after) => Bound::Excluded(after.as_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        let mut page = VersionedPage::default();
        for item in tree.range::<Vec<u8>, _>((start, Bound::Unbounded)) {
            let (key, bytes) = item?;
            if page.items.len() == limit {
                page.next = page.items.last().map(|(key, _)| key.clone());
                break;
            }
            let key = String::from_utf8_lossy(&key).into_owned();
            let Some(stored) = envelope::decode(&bytes) else {
                return Err(StorageError::Corrupt(format!("{store}/{key}")));
            };
            page.items.push((key, stored));
        }
        Ok(page)
    }

    /// Applies `op` durably: returns once it is on disk.
    pub async fn write(&self, op: WriteOp) -> Result<Written, StorageError> {
        self.writer.submit(op).await
    }

    /// [`Storage::write`], also returning the outbox record a replicated
    /// KV write made (none for a local store, an event, or a refusal).
    pub async fn write_receipt(
        &self,
        op: WriteOp,
    ) -> Result<(Written, Option<Receipt>), StorageError> {
        let reply = self.writer.submit_receipt(op, false).await?;
        Ok((reply.written, reply.receipt))
    }

    /// [`Storage::write_receipt`] for a caller that will wait for the
    /// cloud's answer to the record: [`committer::Reply::answer`] is where
    /// it arrives (registered before the record can ship, see
    /// [`awaiting`]).
    pub async fn write_awaiting_cloud(
        &self,
        op: WriteOp,
    ) -> Result<committer::Reply, StorageError> {
        self.writer.submit_receipt(op, true).await
    }

    /// The writes that wait for the cloud's answer, for the shipper.
    pub fn awaiting(&self) -> &awaiting::Awaiting {
        &self.progress.awaiting
    }

    /// The stored version of `key` in `store` with its live value (`None`
    /// for a tombstone), or `None` if the key was never written or was
    /// deleted in a local store.
    pub fn get_versioned(
        &self,
        store: &str,
        key: &str,
    ) -> Result<Option<envelope::Stored>, StorageError> {
        let Some(bytes) = self.tree(store)?.get(key)? else {
            return Ok(None);
        };
        match envelope::decode(&bytes) {
            Some(stored) => Ok(Some(stored)),
            None => Err(StorageError::Corrupt(format!("{store}/{key}"))),
        }
    }

    /// Whether the cloud has answered the write that made `version`: a
    /// version another node made came from the cloud's feed; one of this
    /// node's is answered once the ack of its outbox record is (see
    /// [`pending`]). A record the cloud refused counts as answered too.
    pub fn is_answered(&self, version: &outpost_wire::Version) -> bool {
        version.node != self.node_id || version.hlc <= self.progress.pending.acked_hlc()
    }

    /// The cloud acknowledged `records` (a batch just shipped) up to
    /// `through`: versions up to the newest stamp among them read as
    /// answered from now on, before their drop from the outbox runs.
    pub fn mark_answered(&self, records: &[(u64, IVec)], through: u64) {
        let newest = records
            .iter()
            .rev()
            .filter(|(seq, _)| *seq <= through)
            .find_map(|(_, record)| pending::record_hlc(record));
        if let Some(hlc) = newest {
            self.progress.pending.answered_through(hlc);
        }
    }

    /// Local writes of `store` still waiting in the outbox for the cloud.
    pub fn pending_writes(&self, store: &str) -> u64 {
        self.progress.pending.of(store)
    }

    /// Makes every write applied so far durable, through the writer: what
    /// a write made outside the writer (quarantining, say) should await
    /// instead of flushing sled itself, because a flush on a failing disk
    /// can block forever. Answers like [`Storage::write`], with the same
    /// bound.
    pub async fn sync(&self) -> Result<(), StorageError> {
        self.writer.sync().await
    }

    /// Runs `work` on the writer, as one write of a group, and returns its
    /// result once that group is durable; refused or in doubt like any
    /// write (see [`committer::Handle::run`]). How code outside the
    /// committer runs a sled transaction (quarantining outbox records):
    /// one of its own would wait behind a flush stuck on a failing disk,
    /// and every read of the process behind it.
    #[allow(dead_code, reason = "for the quarantine's transactions")]
    pub(crate) async fn on_writer<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Handles) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        self.writer.run(work).await
    }

    /// The oldest outbox records, in sequence order: at most `max` of them
    /// and, past the first, at most `max_bytes` in total.
    pub fn outbox_batch(
        &self,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, IVec)>, StorageError> {
        self.outbox_batch_from(0, max, max_bytes)
    }

    /// [`Storage::outbox_batch`] from sequence number `from` on: the
    /// shipper reads past records whose acknowledged drop is still running.
    pub fn outbox_batch_from(
        &self,
        from: u64,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, IVec)>, StorageError> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        let durable = self.progress.durable_seq.load(Ordering::Acquire);
        if from >= durable {
            return Ok(batch);
        }
        for item in self
            .handles()
            .outbox
            .range(from.to_be_bytes()..durable.to_be_bytes())
        {
            let (key, value) = item?;
            let seq = u64_value(Some(key));
            if !batch.is_empty() && (batch.len() == max || bytes + value.len() > max_bytes) {
                break;
            }
            bytes += value.len();
            batch.push((seq, value));
        }
        Ok(batch)
    }

    /// Drops outbox records up to and including `through`, which the cloud
    /// has acknowledged. Not flushed: if the drop is lost in a crash the
    /// records are sent again and the cloud ignores them.
    pub fn outbox_ack(&self, through: u64) -> Result<usize, StorageError> {
        let handles = self.handles();
        let origins = handles.db.open_tree(epoch::ORIGINS)?;
        for item in origins.range(..=through.to_be_bytes()) {
            origins.remove(item?.0)?;
        }
        let mut removed = 0;
        let outbox = &handles.outbox;
        let (mut stores, mut last) = (Vec::new(), None);
        for item in outbox.range(..=through.to_be_bytes()) {
            let (key, _) = item?;
            if let Some(record) = outbox.remove(key)? {
                self.progress
                    .outbox_bytes
                    .fetch_sub(record.len() as u64, Ordering::AcqRel);
                self.progress.outbox_records.fetch_sub(1, Ordering::AcqRel);
                stores.extend(pending::record_store(&record));
                last = Some(record);
            }
            removed += 1;
        }
        let pending = &self.progress.pending;
        pending.removed(stores);
        if let Some(hlc) = last.as_deref().and_then(pending::record_hlc) {
            pending.answered_through(hlc);
        }
        Ok(removed)
    }

    /// The oldest record waiting in the outbox: its sequence number and
    /// when it was written (from its HLC stamp).
    pub fn outbox_oldest(&self) -> Result<Option<(u64, std::time::SystemTime)>, StorageError> {
        let Some((key, value)) = self.handles().outbox.first()? else {
            return Ok(None);
        };
        let hlc = match serde_json::from_slice::<outpost_wire::Record>(&value) {
            Ok(outpost_wire::Record::Kv { version, .. }) => version.hlc,
            Ok(outpost_wire::Record::Event { hlc, .. }) => hlc,
            Ok(outpost_wire::Record::Skipped { .. }) | Err(_) => 0,
        };
        let written = std::time::UNIX_EPOCH + std::time::Duration::from_millis(hlc >> 16);
        Ok(Some((u64_value(Some(key)), written)))
    }

    /// Records waiting in the outbox, durable or not yet (a count kept as
    /// they come and go, not a walk of the tree).
    pub fn outbox_len(&self) -> usize {
        self.progress.outbox_records.load(Ordering::Acquire) as usize
    }

    /// Write groups committed since start (one flush each), and the
    /// writes in them: their ratio is how many writes share a flush.
    pub fn write_groups(&self) -> (u64, u64) {
        (
            self.progress.groups.load(Ordering::Relaxed),
            self.progress.grouped_writes.load(Ordering::Relaxed),
        )
    }

    /// Bytes of records waiting in the outbox.
    pub fn outbox_bytes(&self) -> u64 {
        self.progress.outbox_bytes.load(Ordering::Acquire)
    }

    /// Opens the database with the default outbox limit (see
    /// [`Storage::open_with_limit`]).
    pub fn open(data_dir: &Path, node_id: Option<&str>) -> Result<Arc<Self>, StorageError> {
        Self::open_with_limit(data_dir, node_id, DEFAULT_MAX_OUTBOX_BYTES)
    }

    /// Resolves when records may have been added to the outbox.
    pub fn outbox_grew(&self) -> &Notify {
        &self.progress.outbox_grew
    }

    /// Where the outbox records numbered `from..=to` were numbered before
    /// `--new-epoch` renumbered them (those it did), by sequence number:
    /// one range read per batch.
    pub fn origins(
        &self,
        from: u64,
        to: u64,
    ) -> Result<std::collections::HashMap<u64, outpost_wire::Origin>, StorageError> {
        let origins = self.handles().db.open_tree(epoch::ORIGINS)?;
        let mut found = std::collections::HashMap::new();
        for item in origins.range(from.to_be_bytes()..=to.to_be_bytes()) {
            let (key, bytes) = item?;
            if let Some(origin) = epoch::origin_of(&bytes) {
                found.insert(u64_value(Some(key)), origin);
            }
        }
        Ok(found)
    }

    /// Position in the cloud's change feed up to which this node has applied.
    pub fn pull_cursor(&self) -> Result<u64, StorageError> {
        Ok(u64_value(self.handles().meta.get(META_PULL_CURSOR)?))
    }

    /// Id of the cloud database the pull cursor belongs to (0: none yet).
    pub fn cloud_id(&self) -> Result<u64, StorageError> {
        Ok(u64_value(self.handles().meta.get(META_CLOUD_ID)?))
    }

    /// Stores ever declared replicated on this node.
    pub fn replicated_stores(&self) -> Result<Vec<String>, StorageError> {
        self.handles()
            .replicated
            .iter()
            .keys()
            .map(|k| Ok(String::from_utf8_lossy(&k?).into_owned()))
            .collect()
    }

    /// Remembers that `store` replicates, for good: a store whose writes
    /// once left the node must keep shipping (and keep its tombstones),
    /// even if the function that declared it goes away.
    pub fn mark_replicated(&self, store: &str) -> Result<(), StorageError> {
        self.handles().replicated.insert(store, &[])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str, value: &[u8]) -> WriteOp {
        WriteOp::Set {
            store: "@s".into(),
            replicated: true,
            key: key.into(),
            value: value.to_vec(),
        }
    }

    #[tokio::test]
    async fn a_versioned_listing_pages_in_key_order_with_tombstones() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path(), Some("node-a")).unwrap();
        for key in ["b", "a", "c"] {
            storage.write(set(key, key.as_bytes())).await.unwrap();
        }
        let delete = WriteOp::Delete {
            store: "@s".into(),
            replicated: true,
            key: "b".into(),
        };
        storage.write(delete).await.unwrap();

        let first = storage.list_versioned("@s", None, 2).unwrap();
        let keys: Vec<&str> = first.items.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(first.next.as_deref(), Some("b"));
        assert_eq!(first.items[0].1.value.as_deref(), Some(&b"a"[..]));
        assert_eq!(first.items[1].1.value, None, "the tombstone is listed");
        assert_eq!(first.items[1].1.version.node, "node-a");
        assert_eq!(
            Some(&first.items[1].1),
            storage.get_versioned("@s", "b").unwrap().as_ref()
        );
        let rest = storage
            .list_versioned("@s", first.next.as_deref(), 2)
            .unwrap();
        assert_eq!(rest.items.len(), 1);
        assert_eq!(rest.items[0].0, "c");
        assert_eq!(rest.next, None, "nothing follows the last page");

        let none = storage.list_versioned("@never", None, 10).unwrap();
        assert_eq!(none, VersionedPage::default());
        let trees = storage.handles().db.tree_names();
        assert!(
            !trees
                .iter()
                .any(|t| t.as_ref() == tree_name("@never").as_bytes()),
            "a listing creates no store"
        );
    }
}
