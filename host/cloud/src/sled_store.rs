//! The embedded cloud store: one sled database under the cloud's data dir
//! (the default backend). Applies edge batches exactly once, resolves KV
//! writes last-writer-wins, records conflicts, keeps queue events per topic,
//! and serves the change feed. [`Sled`] puts it behind the store contract.

use crate::contract::{CloudStore, CloudStoreError, Current};
use outpost_wire::envelope;
use outpost_wire::{Ack, Batch, Change, Conflict, Entry, Event, FeedPage, Page, Record};
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
    /// node's watermark are duplicates), then flushes. The ack is only
    /// returned once everything it covers is durable.
    pub fn ingest(&self, batch: &Batch) -> Result<Ack, CloudStoreError> {
        for pair in batch.entries.windows(2) {
            if pair[1].seq <= pair[0].seq {
                return Err(CloudStoreError::OutOfOrder(pair[1].seq, pair[0].seq));
            }
        }
        let mut counters = self.ingest_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mark_key = be(batch.epoch);
        let mark = u64_of(self.applied.get(mark_key)?);
        if let Some(first) = batch.entries.first()
            && first.seq > mark + 1
        {
            // Edges number records without gaps; a gap means records were
            // lost on the way (or a bug), and they will never be applied.
            tracing::warn!(target: "outpost::cloud::store", node = %batch.node, epoch = batch.epoch, after = mark, next = first.seq, "sequence gap in a batch");
        }
        let mut ack = Ack {
            applied: 0,
            duplicates: 0,
            through: 0,
        };
        for entry in &batch.entries {
            ack.through = ack.through.max(entry.seq);
            let start = *counters;
            let result = (
                &self.applied,
                &self.kv,
                &self.feed,
                &self.conflicts,
                &self.events,
                &self.idempotency,
                &self.meta,
            )
                .transaction(
                    |(applied, kv, feed, conflicts, events, idempotency, meta)| {
                        if u64_of(applied.get(mark_key)?) >= entry.seq {
                            return Ok(None);
                        }
                        let mut next = start;
                        let views = Views {
                            kv,
                            feed,
                            conflicts,
                            events,
                            idempotency,
                        };
                        apply_entry(&views, &mut next, &batch.node, entry)?;
                        applied.insert(&mark_key, &be(entry.seq))?;
                        meta.insert("next_feed", &be(next.feed))?;
                        meta.insert("next_event", &be(next.event))?;
                        meta.insert("next_conflict", &be(next.conflict))?;
                        Ok(Some(next))
                    },
                );
            match result {
                Ok(Some(next)) => {
                    *counters = next;
                    ack.applied += 1;
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
    /// below `durable`, at most `limit`, with the last id scanned. Entries
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
        for item in tree.range(start..end).take(limit) {
            let (key, json) = item?;
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
    async fn ingest(&self, batch: Batch) -> Result<Ack, CloudStoreError> {
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
    fn batch(node: &str, entries: Vec<Entry>) -> Batch {
        Batch {
            node: node.into(),
            epoch: u64::from(node.as_bytes()[0]),
            entries,
        }
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
