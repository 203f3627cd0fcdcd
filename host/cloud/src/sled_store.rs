//! The embedded cloud store: one sled database under the cloud's data dir
//! (the default backend). Applies edge batches exactly once, resolves KV
//! writes last-writer-wins, records conflicts, keeps queue events per topic,
//! and serves the change feed. [`Sled`] puts it behind the store contract.

use crate::contract::{Checked, MAX_PAGE_BYTES};
use crate::contract::{CloudStore, CloudStoreError, Current};
use crate::credentials::Credential;
use outpost_wire::envelope;
use outpost_wire::{Ack, Change, Conflict, Entry, Event, FeedPage, Page, Record, Refusal};
use sha2::{Digest, Sha256};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::{Transactional, Tree};
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Notify;

/// Next ids to hand out; owned by whoever holds the ingest lock.
#[derive(Debug, Clone, Copy)]
struct Counters {
    feed: u64,
    event: u64,
    conflict: u64,
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

/// The sled database and the cloud's in-memory counters over it.
pub struct SledStore {
    db: sled::Db,
    /// Random id of this database, sent with every feed page.
    id: u64,
    /// Edge database epoch -> highest sequence applied (edges send in
    /// order). Keyed by epoch, not node id, so renaming a node cannot make
    /// its unacknowledged records look new.
    applied: Tree,
    /// Edge database epoch -> the node that first shipped it: a second
    /// node on one epoch is a copied data dir, refused.
    epochs: Tree,
    /// `epoch seq` -> digest of the entry, for the last [`DIGEST_WINDOW`]
    /// sequence numbers of each epoch: a redelivery must match, or two
    /// processes ship under one identity.
    digests: Tree,
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
    /// `topic \0 id` -> [`Event`] JSON.
    events: Tree,
    /// `topic \0 idempotency key` -> event id.
    idempotency: Tree,
    meta: Tree,
    /// One ingest at a time: ids and watermarks advance in one order.
    ingest_lock: Mutex<Counters>,
    durable: Durable,
    /// Woken after each ingest, for long-polling feed readers.
    pub feed_grew: Notify,
}

/// How many recent entries per epoch keep a digest (24 bytes each).
/// Redeliveries are of unacknowledged batches, at most a few batches of
/// at most [`crate::contract::MAX_BATCH_ENTRIES`], so they fall well inside
/// it; a same-id copy of a data dir further behind than this goes
/// undetected (see the README).
const DIGEST_WINDOW: u64 = 65536;

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

fn digest_key(epoch: u64, seq: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&be(epoch));
    key[8..].copy_from_slice(&be(seq));
    key
}

/// What identifies an entry's content: its record, re-serialized (serde
/// writes a struct the same way every time).
fn digest(entry: &Entry) -> [u8; 8] {
    let json = serde_json::to_vec(&entry.record).expect("serializes");
    let hash = Sha256::digest(&json);
    hash[..8].try_into().expect("8 bytes")
}

fn topic_key(topic: &str, rest: &[u8]) -> Vec<u8> {
    [topic.as_bytes(), b"\0", rest].concat()
}

type Tx<T> = Result<T, ConflictableTransactionError<()>>;

/// The trees one entry's transaction touches.
struct Views<'a> {
    kv: &'a TransactionalTree,
    feed: &'a TransactionalTree,
    conflicts: &'a TransactionalTree,
    events: &'a TransactionalTree,
    idempotency: &'a TransactionalTree,
}

impl SledStore {
    /// Opens (creating if needed) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, CloudStoreError> {
        let db = sled::Config::new()
            .path(dir.join("db"))
            .cache_capacity(256 * 1024 * 1024)
            .open()?;
        let meta = db.open_tree("meta")?;
        let counters = Counters {
            feed: u64_of(meta.get("next_feed")?).max(1),
            event: u64_of(meta.get("next_event")?).max(1),
            conflict: u64_of(meta.get("next_conflict")?).max(1),
        };
        let id = match meta.get("id")? {
            Some(id) => u64_of(Some(id)),
            None => {
                let id = fastrand::u64(1..);
                meta.insert("id", &be(id))?;
                db.flush()?;
                id
            }
        };
        let durable = Durable::default();
        durable.publish(&counters);
        Ok(Self {
            id,
            durable,
            applied: db.open_tree("applied")?,
            epochs: db.open_tree("epochs")?,
            digests: db.open_tree("digests")?,
            credentials: db.open_tree("credentials")?,
            token_hashes: db.open_tree("token_hashes")?,
            kv: db.open_tree("kv")?,
            feed: db.open_tree("feed")?,
            conflicts: db.open_tree("conflicts")?,
            events: db.open_tree("events")?,
            idempotency: db.open_tree("idempotency")?,
            meta,
            db,
            ingest_lock: Mutex::new(counters),
            feed_grew: Notify::new(),
        })
    }

    /// Applies a batch: each entry exactly once (entries at or below the
    /// epoch's watermark are duplicates, and must match what was applied),
    /// then flushes. The ack is only returned once everything it covers is
    /// durable. Refused entries advance the watermark without applying.
    pub fn ingest(&self, batch: &Checked) -> Result<Ack, CloudStoreError> {
        for pair in batch.entries.windows(2) {
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
        let mut counters = self.ingest_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mark_key = be(batch.epoch);
        let owner = self.epochs.get(mark_key)?;
        if let Some(owner) = &owner
            && owner.as_ref() != batch.node.as_bytes()
        {
            return Err(CloudStoreError::EpochOwned {
                epoch: batch.epoch,
                owner: String::from_utf8_lossy(owner).into_owned(),
            });
        }
        let mark = u64_of(self.applied.get(mark_key)?);
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
        let mut refused_before = Vec::new();
        for (entry, _) in batch.entries.iter().take_while(|(e, _)| e.seq <= mark) {
            if let Some(kept) = self.digests.get(digest_key(batch.epoch, entry.seq))? {
                let (kept_digest, code) = kept.split_at(8.min(kept.len()));
                if kept_digest != digest(entry) {
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
            self.epochs.insert(mark_key, batch.node.as_bytes())?;
        }
        let mut ack = Ack {
            applied: 0,
            duplicates: 0,
            through: 0,
            refused: refused_before,
        };
        for (entry, verdict) in &batch.entries {
            ack.through = ack.through.max(entry.seq);
            let start = *counters;
            let entry_digest = digest(entry);
            let mut kept = entry_digest.to_vec();
            if let Some(invalid) = verdict {
                kept.extend_from_slice(invalid.code().as_bytes());
            }
            let result = (
                &self.applied,
                &self.kv,
                &self.feed,
                &self.conflicts,
                &self.events,
                &self.idempotency,
                &self.meta,
                &self.digests,
            )
                .transaction(
                    |(applied, kv, feed, conflicts, events, idempotency, meta, digests)| {
                        if u64_of(applied.get(mark_key)?) >= entry.seq {
                            return Ok(None);
                        }
                        // Applied already at its place before a renumbering
                        // (`--new-epoch`), or by a copy that carried it
                        // there: the same record is not applied twice.
                        let places = std::iter::once(digest_key(batch.epoch, entry.seq))
                            .chain(entry.origin.map(|o| digest_key(o.epoch, o.seq)));
                        let mut seen_before = false;
                        for place in places {
                            seen_before |= digests
                                .get(place)?
                                .is_some_and(|d| d.get(..8) == Some(&entry_digest[..]));
                        }
                        let mut next = start;
                        if verdict.is_none() && !seen_before {
                            let views = Views {
                                kv,
                                feed,
                                conflicts,
                                events,
                                idempotency,
                            };
                            apply_entry(&views, &mut next, &batch.node, entry)?;
                        }
                        applied.insert(&mark_key, &be(entry.seq))?;
                        digests.insert(&digest_key(batch.epoch, entry.seq), kept.as_slice())?;
                        // Claim the old place too, unless its own stream
                        // already put something else there.
                        if let Some(origin) = entry.origin {
                            let place = digest_key(origin.epoch, origin.seq);
                            if digests.get(place)?.is_none() {
                                digests.insert(&place, kept.as_slice())?;
                            }
                        }
                        if let Some(old) = entry.seq.checked_sub(DIGEST_WINDOW) {
                            digests.remove(&digest_key(batch.epoch, old))?;
                        }
                        meta.insert("next_feed", &be(next.feed))?;
                        meta.insert("next_event", &be(next.event))?;
                        meta.insert("next_conflict", &be(next.conflict))?;
                        Ok(Some((next, seen_before)))
                    },
                );
            match result {
                Ok(Some((next, seen_before))) => {
                    *counters = next;
                    match verdict {
                        None if seen_before => ack.duplicates += 1,
                        None => ack.applied += 1,
                        Some(invalid) => ack.refused.push(Refusal {
                            seq: entry.seq,
                            code: invalid.code().to_owned(),
                            reason: invalid.describe().to_owned(),
                        }),
                    }
                }
                Ok(None) => ack.duplicates += 1,
                Err(TransactionError::Storage(e)) => return Err(e.into()),
                Err(TransactionError::Abort(())) => unreachable!("entries never abort"),
            }
        }
        self.db.flush()?;
        self.durable.publish(&counters);
        drop(counters);
        self.feed_grew.notify_waiters();
        Ok(ack)
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
        let (changes, next) = Self::scan(&self.feed, b"", since, durable, limit)?;
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
        let (items, next) = Self::scan(&self.conflicts, b"", since, durable, limit)?;
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
        let (items, next) = Self::scan(&self.events, &prefix, since, durable, limit)?;
        Ok(Page { items, next })
    }

    /// Stores a new credential (and its token hash, for lookups), durably.
    pub fn put_credential(&self, credential: &Credential) -> Result<(), CloudStoreError> {
        let json = serde_json::to_vec(credential).expect("serializes");
        (&self.credentials, &self.token_hashes)
            .transaction(|(credentials, hashes)| {
                credentials.insert(credential.id.as_bytes(), json.as_slice())?;
                hashes.insert(credential.token_sha256.as_bytes(), credential.id.as_bytes())?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => CloudStoreError::Db(e),
                TransactionError::Abort(()) => unreachable!("never aborts"),
            })?;
        self.db.flush()?;
        Ok(())
    }

    fn credential(&self, id: &[u8]) -> Result<Option<Credential>, CloudStoreError> {
        Ok(self
            .credentials
            .get(id)?
            .and_then(|json| serde_json::from_slice(&json).ok()))
    }

    /// The credential whose token hashes to `token_sha256`.
    pub fn credential_by_hash(
        &self,
        token_sha256: &str,
    ) -> Result<Option<Credential>, CloudStoreError> {
        match self.token_hashes.get(token_sha256.as_bytes())? {
            Some(id) => self.credential(&id),
            None => Ok(None),
        }
    }

    /// Every credential, in id order.
    pub fn credentials(&self) -> Result<Vec<Credential>, CloudStoreError> {
        let mut all = Vec::new();
        for item in self.credentials.iter() {
            let (_, json) = item?;
            if let Ok(credential) = serde_json::from_slice(&json) {
                all.push(credential);
            }
        }
        Ok(all)
    }

    /// Marks credential `id` revoked, durably; `false` if there is none.
    pub fn revoke_credential(&self, id: &str) -> Result<bool, CloudStoreError> {
        let Some(mut credential) = self.credential(id.as_bytes())? else {
            return Ok(false);
        };
        if credential.revoked_ms.is_none() {
            credential.revoked_ms = Some(crate::credentials::now_ms());
            let json = serde_json::to_vec(&credential).expect("serializes");
            self.credentials.insert(id.as_bytes(), json)?;
            self.db.flush()?;
        }
        Ok(true)
    }

    /// The cloud's current value of a key: version, and value or `None`
    /// for a delete.
    pub fn get(&self, store: &str, key: &str) -> Result<Option<Current>, CloudStoreError> {
        Ok(self
            .kv
            .get(kv_key(store, key))?
            .and_then(|bytes| envelope::decode(&bytes))
            .map(|stored| (stored.version, stored.value)))
    }
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
                views.feed.insert(
                    &be(next.feed),
                    serde_json::to_vec(&change).expect("serializes"),
                )?;
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

/// [`SledStore`] behind the store contract. Ingest runs on the blocking
/// pool (it flushes to disk); reads are short sled lookups and run inline.
#[derive(Clone)]
pub struct Sled(pub Arc<SledStore>);

impl Sled {
    /// Opens (creating if needed) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, CloudStoreError> {
        Ok(Self(Arc::new(SledStore::open(dir)?)))
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_wire::Version;

    fn kv(seq: u64, key: &str, value: &str, hlc: u64, node: &str, seen: Option<Version>) -> Entry {
        Entry {
            origin: None,
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

    #[test]
    fn a_second_node_on_an_epoch_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store
            .ingest(&batch("a", vec![kv(1, "k", "v1", 10, "a", None)]))
            .unwrap();
        let mut copy = batch("b", vec![kv(2, "k", "v2", 11, "b", None)]);
        copy.epoch = u64::from(b'a');
        assert!(matches!(
            store.ingest(&copy),
            Err(CloudStoreError::EpochOwned { owner, .. }) if owner == "a"
        ));
        assert_eq!(store.get("s", "k").unwrap().unwrap().1.unwrap(), b"v1");
    }

    #[test]
    fn gaps_before_or_inside_a_batch_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let holed = batch(
            "a",
            vec![
                kv(1, "k", "v", 10, "a", None),
                kv(3, "k", "v", 11, "a", None),
            ],
        );
        assert!(matches!(
            store.ingest(&holed),
            Err(CloudStoreError::SequenceGap {
                expected: 2,
                got: 3
            })
        ));
        assert!(store.get("s", "k").unwrap().is_none());
        // A new epoch may start anywhere (its earlier records went to a
        // replaced cloud database); from then on, no gaps.
        let first = batch("a", vec![kv(5, "k", "v", 10, "a", None)]);
        assert_eq!(store.ingest(&first).unwrap().applied, 1);
        let late = batch("a", vec![kv(7, "k", "v", 12, "a", None)]);
        assert!(matches!(
            store.ingest(&late),
            Err(CloudStoreError::SequenceGap {
                expected: 6,
                got: 7
            })
        ));
    }

    #[test]
    fn a_redelivery_with_other_content_is_a_clone() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store
            .ingest(&batch("a", vec![kv(1, "k", "mine", 10, "a", None)]))
            .unwrap();
        let same = store
            .ingest(&batch("a", vec![kv(1, "k", "mine", 10, "a", None)]))
            .unwrap();
        assert_eq!(same.duplicates, 1);
        let other = batch(
            "a",
            vec![
                kv(1, "k", "theirs", 12, "a", None),
                kv(2, "j", "x", 13, "a", None),
            ],
        );
        assert!(matches!(
            store.ingest(&other),
            Err(CloudStoreError::CloneDetected(1))
        ));
        assert!(
            store.get("s", "j").unwrap().is_none(),
            "nothing of it applied"
        );
    }

    #[test]
    fn refused_entries_consume_their_sequence_number_and_apply_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let mut b = batch(
            "a",
            vec![
                kv(1, "k", "bad", 10, "a", None),
                kv(2, "j", "good", 11, "a", None),
            ],
        );
        b.entries[0].1 = Some(outpost_wire::validate::Invalid::ClockSkew);
        let ack = store.ingest(&b).unwrap();
        assert_eq!((ack.applied, ack.through), (1, 2));
        assert_eq!(ack.refused.len(), 1);
        assert_eq!(
            (ack.refused[0].seq, ack.refused[0].code.as_str()),
            (1, "clock-skew")
        );
        assert!(store.get("s", "k").unwrap().is_none());
        // The answer may have been lost: a redelivery says "refused" again,
        // so the edge sets the record aside instead of dropping it.
        let again = store.ingest(&b).unwrap();
        assert_eq!((again.duplicates, again.refused.len()), (2, 1));
        assert_eq!(again.refused[0].seq, 1);
        let next = store
            .ingest(&batch("a", vec![kv(3, "k", "v", 12, "a", None)]))
            .unwrap();
        assert_eq!(next.applied, 1, "no gap after a refusal");
    }

    #[test]
    fn a_renumbered_record_is_not_applied_twice() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let event = |seq, payload: u8| Entry {
            seq,
            origin: None,
            record: Record::Event {
                topic: "t".into(),
                payload: vec![payload],
                idempotency_key: None,
                hlc: 1,
            },
        };
        // Epoch 1 applied seqs 1 and 2; its data dir was renewed with 2 and
        // 3 still in the outbox (2's ack was lost), now numbered 1 and 2.
        let old = Checked {
            node: "a".into(),
            epoch: 1,
            entries: vec![(event(1, 1), None), (event(2, 2), None)],
        };
        store.ingest(&old).unwrap();
        let mut renumbered = vec![event(1, 2), event(2, 3)];
        renumbered[0].origin = Some(outpost_wire::Origin { epoch: 1, seq: 2 });
        renumbered[1].origin = Some(outpost_wire::Origin { epoch: 1, seq: 3 });
        let renewed = Checked {
            node: "a".into(),
            epoch: 2,
            entries: renumbered.into_iter().map(|e| (e, None)).collect(),
        };
        let ack = store.ingest(&renewed).unwrap();
        assert_eq!((ack.applied, ack.duplicates), (1, 1));
        // A copy still on epoch 1 ships its seq 3 (the same record) later:
        // it was applied through the renewed stream already.
        let late = Checked {
            node: "a".into(),
            epoch: 1,
            entries: vec![(event(3, 3), None)],
        };
        let ack = store.ingest(&late).unwrap();
        assert_eq!((ack.applied, ack.duplicates), (0, 1));
        let payloads: Vec<u8> = store
            .events("t", 0, 10)
            .unwrap()
            .items
            .iter()
            .map(|e| e.payload[0])
            .collect();
        assert_eq!(payloads, [1, 2, 3]);
    }

    #[test]
    fn pages_stop_at_a_byte_budget_but_hold_at_least_one_item() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let big = "x".repeat(MAX_PAGE_BYTES / 3);
        let entries = (1..=5)
            .map(|i| kv(i, &format!("k{i}"), &big, 10 + i, "a", None))
            .collect();
        store.ingest(&batch("a", entries)).unwrap();
        let page = store.feed(0, 1000).unwrap();
        assert!(
            (1..5).contains(&page.changes.len()),
            "{} changes",
            page.changes.len()
        );
        let huge = "y".repeat(MAX_PAGE_BYTES + 1);
        store
            .ingest(&batch("b", vec![kv(1, "h", &huge, 99, "b", None)]))
            .unwrap();
        let mut since = page.next;
        let mut seen = page.changes.len();
        while seen < 6 {
            let page = store.feed(since, 1000).unwrap();
            assert!(!page.changes.is_empty());
            seen += page.changes.len();
            since = page.next;
        }
    }

    #[test]
    fn credentials_are_found_by_token_hash_and_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let (credential, token) = crate::credentials::Enrol {
            role: crate::credentials::Role::Node,
            node: Some("edge-a".into()),
            stores: None,
            label: String::new(),
        }
        .issue()
        .unwrap();
        store.put_credential(&credential).unwrap();
        let hash = crate::credentials::token_hash(&token);
        assert_eq!(
            store.credential_by_hash(&hash).unwrap(),
            Some(credential.clone())
        );
        assert!(store.revoke_credential(&credential.id).unwrap());
        assert!(
            store
                .credential_by_hash(&hash)
                .unwrap()
                .unwrap()
                .revoked_ms
                .is_some()
        );
        assert!(!store.revoke_credential("nope").unwrap());
        assert_eq!(store.credentials().unwrap().len(), 1);
    }

    #[test]
    fn redelivery_applies_nothing_twice() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let b = batch(
            "a",
            vec![
                kv(1, "k", "v1", 10, "a", None),
                kv(2, "k", "v2", 11, "a", None),
            ],
        );
        let first = store.ingest(&b).unwrap();
        assert_eq!((first.applied, first.duplicates, first.through), (2, 0, 2));
        let again = store.ingest(&b).unwrap();
        assert_eq!((again.applied, again.duplicates), (0, 2));
        assert_eq!(store.feed(0, 100).unwrap().changes.len(), 2);
    }

    #[test]
    fn concurrent_writes_resolve_by_hlc_and_record_a_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store
            .ingest(&batch("b", vec![kv(1, "k", "from-b", 20, "b", None)]))
            .unwrap();
        // `a` wrote earlier (lower HLC) without having seen b's write.
        store
            .ingest(&batch("a", vec![kv(1, "k", "from-a", 10, "a", None)]))
            .unwrap();
        let (version, value) = store.get("s", "k").unwrap().unwrap();
        assert_eq!(
            (version.node.as_str(), value.unwrap()),
            ("b", b"from-b".to_vec())
        );
        let conflicts = store.conflicts(0, 10).unwrap().items;
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].winner.node, "b");
        assert_eq!(conflicts[0].loser_value.as_deref(), Some(&b"from-a"[..]));
        // The losing write does not enter the feed.
        assert_eq!(store.feed(0, 10).unwrap().changes.len(), 1);
    }

    #[test]
    fn a_write_that_saw_the_current_version_is_no_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store
            .ingest(&batch("b", vec![kv(1, "k", "v1", 20, "b", None)]))
            .unwrap();
        let seen = Some(Version {
            hlc: 20,
            node: "b".into(),
        });
        store
            .ingest(&batch("a", vec![kv(1, "k", "v2", 30, "a", seen)]))
            .unwrap();
        assert!(store.conflicts(0, 10).unwrap().items.is_empty());
        assert_eq!(store.get("s", "k").unwrap().unwrap().1.unwrap(), b"v2");
    }

    #[test]
    fn events_are_kept_per_topic_and_deduplicated_by_idempotency_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let event = |seq, topic: &str, key: Option<&str>| Entry {
            origin: None,
            seq,
            record: Record::Event {
                topic: topic.into(),
                payload: vec![seq as u8],
                idempotency_key: key.map(Into::into),
                hlc: seq,
            },
        };
        store
            .ingest(&batch(
                "a",
                vec![event(1, "orders", Some("o1")), event(2, "other", None)],
            ))
            .unwrap();
        store
            .ingest(&batch(
                "b",
                vec![event(1, "orders", Some("o1")), event(2, "orders", None)],
            ))
            .unwrap();
        let orders = store.events("orders", 0, 10).unwrap().items;
        assert_eq!(orders.len(), 2, "{orders:?}");
        assert_eq!(store.events("other", 0, 10).unwrap().items.len(), 1);
    }

    #[test]
    fn out_of_order_batches_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let b = batch(
            "a",
            vec![kv(2, "k", "v", 1, "a", None), kv(1, "k", "v", 2, "a", None)],
        );
        assert!(matches!(
            store.ingest(&b),
            Err(CloudStoreError::OutOfOrder(1, 2))
        ));
    }
}
