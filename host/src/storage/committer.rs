//! The node's single writer. Writes queue up while a flush is in progress;
//! the next round applies all of them (each in its own sled transaction)
//! and makes them durable with one fsync: group commit. Being the only
//! writer also makes sequence numbers and HLC stamps trivially ordered.

use super::envelope::{self, Stored};
use super::hlc::Hlc;
use super::{
    META_CLOUD_ID, META_HLC, META_NEXT_SEQ, META_PULL_CURSOR, StorageError, tree_name, u64_value,
};
use crate::wire::{Change, Record, Version};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{Transactional, Tree};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::{Notify, oneshot};

/// Remote stamps further ahead of this node's wall clock than this are not
/// allowed to drag its clock forward (a node with a wild clock would
/// otherwise push every node's clock with it).
const MAX_CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;

/// What the writer shares with readers of the outbox.
#[derive(Debug, Default)]
pub struct Progress {
    /// Signalled when durable records were added to the outbox.
    pub outbox_grew: Notify,
    /// Every outbox record below this sequence number is on disk. The
    /// shipper never reads past it: a record the cloud has seen must
    /// survive any crash, or its sequence number could be reused.
    pub durable_seq: AtomicU64,
    /// Bytes of records in the outbox (approximate between a crash and the
    /// next start, when it is recounted).
    pub outbox_bytes: AtomicU64,
}

/// Most writes applied under one flush.
const MAX_GROUP: usize = 1024;

/// A write to the node's database.
#[derive(Debug)]
pub enum WriteOp {
    Set {
        store: String,
        replicated: bool,
        key: String,
        value: Vec<u8>,
    },
    Delete {
        store: String,
        replicated: bool,
        key: String,
    },
    Increment {
        store: String,
        replicated: bool,
        key: String,
        delta: i64,
    },
    CompareAndSwap {
        store: String,
        replicated: bool,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    },
    Enqueue {
        topic: String,
        payload: Vec<u8>,
        idempotency_key: Option<String>,
    },
    /// Writes from the cloud's feed, applied last-writer-wins, the feed
    /// position they bring this node up to, and the id of the cloud
    /// database that cursor belongs to.
    ApplyRemote {
        changes: Vec<Change>,
        cursor: u64,
        cloud: u64,
    },
}

/// A write's outcome.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    Done,
    /// `Increment`'s new value.
    Number(i64),
    /// `Enqueue`'s event id.
    Id(u64),
    /// Refused; nothing changed.
    Rejected(Rejection),
    /// `ApplyRemote`: changes that won here, and changes older than the
    /// local version (left alone).
    Remote {
        applied: u64,
        older: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// `CompareAndSwap` found a different current value.
    Conflict,
    /// `Increment` found a non-integer, or would overflow.
    NotANumber,
    /// A replicated write or an event would take the outbox over its limit.
    OutboxFull,
}

struct Job {
    op: WriteOp,
    reply: oneshot::Sender<Result<Written, StorageError>>,
}

/// Submits writes to the writer thread.
pub struct Handle {
    jobs: mpsc::Sender<Job>,
}

impl Handle {
    pub async fn submit(&self, op: WriteOp) -> Result<Written, StorageError> {
        let (reply, result) = oneshot::channel();
        self.jobs
            .send(Job { op, reply })
            .map_err(|_| StorageError::Stopped)?;
        result.await.map_err(|_| StorageError::Stopped)?
    }
}

struct Committer {
    db: sled::Db,
    meta: Tree,
    outbox: Tree,
    /// Idempotency keys of enqueued events: `topic \0 key` -> event id.
    idempotency: Tree,
    node_id: String,
    hlc: Hlc,
    next_seq: u64,
    progress: Arc<Progress>,
    /// Set when a flush failed: the disk can no longer be trusted, so every
    /// later write is refused rather than acknowledged.
    poisoned: Option<String>,
    /// Most bytes of records the outbox may hold.
    max_outbox_bytes: u64,
    /// Writes refused for a full outbox, for throttled reporting.
    outbox_full_refusals: u64,
}

pub fn start(
    db: sled::Db,
    meta: Tree,
    outbox: Tree,
    node_id: String,
    progress: Arc<Progress>,
    max_outbox_bytes: u64,
) -> Result<Handle, StorageError> {
    let idempotency = db.open_tree("idempotency")?;
    // Never reuse a sequence number, even if the counter in meta were lost.
    let last_in_outbox = outbox
        .last()?
        .map_or(0, |(key, _)| u64_value(Some(key)) + 1);
    let next_seq = u64_value(meta.get(META_NEXT_SEQ)?)
        .max(last_in_outbox)
        .max(1);
    let hlc = Hlc::resume(u64_value(meta.get(META_HLC)?));
    // Whatever the database holds at open time has survived: it is durable.
    progress.durable_seq.store(next_seq, Ordering::Release);
    let mut committer = Committer {
        db,
        meta,
        outbox,
        idempotency,
        node_id,
        hlc,
        next_seq,
        progress,
        poisoned: None,
        max_outbox_bytes,
        outbox_full_refusals: 0,
    };
    let (jobs, queue) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("outpost-writer".into())
        .spawn(move || committer.run(queue))
        .map_err(|e| StorageError::Corrupt(format!("cannot start the writer thread: {e}")))?;
    Ok(Handle { jobs })
}

type TxResult<T> = Result<T, ConflictableTransactionError<Rejection>>;

/// What a read-modify-write did.
enum Applied {
    /// Wrote this (`None`: deleted).
    Wrote(Option<Vec<u8>>),
    Unchanged,
    Rejected(Rejection),
}

impl From<Applied> for Written {
    fn from(applied: Applied) -> Self {
        match applied {
            Applied::Wrote(_) | Applied::Unchanged => Written::Done,
            Applied::Rejected(rejection) => Written::Rejected(rejection),
        }
    }
}

/// A stored counter: decimal text, surrounding whitespace allowed.
fn parse_integer(bytes: &[u8]) -> Option<i64> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

fn be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

impl Committer {
    fn run(&mut self, queue: mpsc::Receiver<Job>) {
        while let Ok(first) = queue.recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match queue.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            if let Some(reason) = &self.poisoned {
                for job in group {
                    let _ = job.reply.send(Err(StorageError::Poisoned(reason.clone())));
                }
                continue;
            }
            let seq_before = self.next_seq;
            let results: Vec<_> = group
                .iter()
                .map(|job| {
                    let result = self.apply(&job.op);
                    if matches!(result, Ok(Written::Rejected(Rejection::OutboxFull))) {
                        self.report_full_outbox();
                    }
                    result
                })
                .collect();
            // One fsync for the whole group; nobody hears "done" before it.
            match self.db.flush() {
                Ok(_) => {
                    self.progress
                        .durable_seq
                        .store(self.next_seq, Ordering::Release);
                    if self.next_seq != seq_before {
                        self.progress.outbox_grew.notify_one();
                    }
                    for (job, result) in group.into_iter().zip(results) {
                        let _ = job.reply.send(result);
                    }
                }
                Err(e) => {
                    // The group's writes may or may not reach the disk later;
                    // their writers learn the outcome is unknown, and nothing
                    // more is accepted.
                    let reason = format!("flush failed: {e}");
                    tracing::error!(error = %e, "database flush failed; refusing further writes");
                    for job in group {
                        let _ = job.reply.send(Err(StorageError::Poisoned(reason.clone())));
                    }
                    self.poisoned = Some(reason);
                }
            }
        }
    }

    fn apply(&mut self, op: &WriteOp) -> Result<Written, StorageError> {
        match op {
            WriteOp::Set {
                store,
                replicated,
                key,
                value,
            } => self
                .read_modify_write(store, *replicated, key, |_| Ok(Some(Some(value.clone()))))
                .map(Written::from),
            WriteOp::Delete {
                store,
                replicated,
                key,
            } => self
                .read_modify_write(store, *replicated, key, |current| {
                    // A replicated delete is always recorded, present or not:
                    // it must beat any older write still on its way here.
                    Ok((*replicated || current.is_some()).then_some(None))
                })
                .map(Written::from),
            WriteOp::Increment {
                store,
                replicated,
                key,
                delta,
            } => {
                let written = self.read_modify_write(store, *replicated, key, |current| {
                    let now = match current {
                        None => 0,
                        Some(bytes) => parse_integer(bytes).ok_or(Rejection::NotANumber)?,
                    };
                    let next = now.checked_add(*delta).ok_or(Rejection::NotANumber)?;
                    Ok(Some(Some(next.to_string().into_bytes())))
                })?;
                Ok(match written {
                    Applied::Wrote(Some(bytes)) => {
                        Written::Number(parse_integer(&bytes).expect("just written"))
                    }
                    other => other.into(),
                })
            }
            WriteOp::CompareAndSwap {
                store,
                replicated,
                key,
                expected,
                new,
            } => self
                .read_modify_write(store, *replicated, key, |current| {
                    if current == expected.as_deref() {
                        Ok(Some(Some(new.clone())))
                    } else {
                        Err(Rejection::Conflict)
                    }
                })
                .map(Written::from),
            WriteOp::Enqueue {
                topic,
                payload,
                idempotency_key,
            } => self.enqueue(topic, payload, idempotency_key.as_deref()),
            WriteOp::ApplyRemote {
                changes,
                cursor,
                cloud,
            } => self.apply_remote(changes, *cursor, *cloud),
        }
    }

    /// Says (once per thousand refusals) that the outbox is full.
    fn report_full_outbox(&mut self) {
        if self.outbox_full_refusals.is_multiple_of(1000) {
            tracing::warn!(
                used = self.progress.outbox_bytes.load(Ordering::Acquire),
                max = self.max_outbox_bytes,
                refused = self.outbox_full_refusals + 1,
                "the outbox is full: replicated writes and events are refused until it drains"
            );
        }
        self.outbox_full_refusals += 1;
    }

    /// Bytes the outbox may still take.
    fn outbox_room(&self) -> u64 {
        let used = self.progress.outbox_bytes.load(Ordering::Acquire);
        let room = self.max_outbox_bytes.saturating_sub(used);
        if room == 0 {
            tracing::warn!(
                used,
                max = self.max_outbox_bytes,
                "the outbox is full: replicated writes and events are refused until it drains"
            );
        }
        room
    }

    /// Reads `key`'s live value, asks `decide` what to do (`None`: nothing;
    /// `Some(None)`: delete; `Some(Some(v))`: set), and commits the result
    /// together with its outbox record, in one transaction.
    fn read_modify_write(
        &mut self,
        store: &str,
        replicated: bool,
        key: &str,
        decide: impl Fn(Option<&[u8]>) -> Result<Option<Option<Vec<u8>>>, Rejection>,
    ) -> Result<Applied, StorageError> {
        let tree = self.db.open_tree(tree_name(store))?;
        let version = Version {
            hlc: self.hlc.tick(),
            node: self.node_id.clone(),
        };
        let seq = self.next_seq;
        let room = self.outbox_room();
        let outcome = (&tree, &self.outbox, &self.meta).transaction(
            |(tree, outbox, meta)| -> TxResult<Option<(Option<Vec<u8>>, u64)>> {
                let current = match tree.get(key)? {
                    Some(bytes) => Some(envelope::decode(&bytes).ok_or_else(|| {
                        ConflictableTransactionError::Storage(sled::Error::Unsupported(format!(
                            "corrupt value at {store}/{key}"
                        )))
                    })?),
                    None => None,
                };
                let live = current.as_ref().and_then(|c| c.value.as_deref());
                let new = decide(live).map_err(ConflictableTransactionError::Abort)?;
                let Some(new) = new else { return Ok(None) };
                let mut record_bytes = 0;
                if replicated {
                    tree.insert(key, envelope::encode(&version, new.as_deref()))?;
                    let record = Record::Kv {
                        store: store.to_owned(),
                        key: key.to_owned(),
                        value: new.clone(),
                        version: version.clone(),
                        seen: current.map(|c: Stored| c.version),
                    };
                    let json = serde_json::to_vec(&record).expect("records serialize");
                    record_bytes = json.len() as u64;
                    if record_bytes > room {
                        return Err(ConflictableTransactionError::Abort(Rejection::OutboxFull));
                    }
                    outbox.insert(&be(seq), json)?;
                    meta.insert(META_NEXT_SEQ, &be(seq + 1))?;
                } else {
                    match &new {
                        Some(value) => tree.insert(key, envelope::encode(&version, Some(value)))?,
                        None => tree.remove(key)?,
                    };
                }
                meta.insert(META_HLC, &be(version.hlc))?;
                Ok(Some((new, record_bytes)))
            },
        );
        match outcome {
            Ok(Some((new, record_bytes))) => {
                if replicated {
                    self.next_seq += 1;
                    self.progress
                        .outbox_bytes
                        .fetch_add(record_bytes, Ordering::AcqRel);
                }
                Ok(Applied::Wrote(new))
            }
            Ok(None) => Ok(Applied::Unchanged),
            Err(TransactionError::Abort(rejection)) => Ok(Applied::Rejected(rejection)),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    fn enqueue(
        &mut self,
        topic: &str,
        payload: &[u8],
        idempotency_key: Option<&str>,
    ) -> Result<Written, StorageError> {
        let seq = self.next_seq;
        let hlc = self.hlc.tick();
        let dedup_key = idempotency_key.map(|k| [topic.as_bytes(), b"\0", k.as_bytes()].concat());
        let record = Record::Event {
            topic: topic.to_owned(),
            payload: payload.to_vec(),
            idempotency_key: idempotency_key.map(str::to_owned),
            hlc,
        };
        let json = serde_json::to_vec(&record).expect("records serialize");
        let room = self.outbox_room();
        let outcome = (&self.outbox, &self.meta, &self.idempotency).transaction(
            |(outbox, meta, idempotency)| -> TxResult<u64> {
                if let Some(dedup_key) = &dedup_key {
                    if let Some(first) = idempotency.get(dedup_key)? {
                        return Ok(u64_value(Some(first)));
                    }
                    idempotency.insert(dedup_key.as_slice(), &be(seq))?;
                }
                if json.len() as u64 > room {
                    return Err(ConflictableTransactionError::Abort(Rejection::OutboxFull));
                }
                outbox.insert(&be(seq), json.as_slice())?;
                meta.insert(META_NEXT_SEQ, &be(seq + 1))?;
                meta.insert(META_HLC, &be(hlc))?;
                Ok(seq)
            },
        );
        match outcome {
            Ok(id) => {
                if id == seq {
                    self.next_seq += 1;
                    self.progress
                        .outbox_bytes
                        .fetch_add(json.len() as u64, Ordering::AcqRel);
                }
                Ok(Written::Id(id))
            }
            Err(TransactionError::Abort(rejection)) => Ok(Written::Rejected(rejection)),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    fn apply_remote(
        &mut self,
        changes: &[Change],
        cursor: u64,
        cloud: u64,
    ) -> Result<Written, StorageError> {
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let horizon = (wall_ms + MAX_CLOCK_SKEW_MS) << 16;
        let mut applied = 0;
        for change in changes {
            if change.version.hlc <= horizon {
                self.hlc.observe(change.version.hlc);
            } else {
                tracing::warn!(node = %change.version.node, store = %change.store, key = %change.key, "remote write stamped far in the future; its clock is ignored");
            }
            let tree = self.db.open_tree(tree_name(&change.store))?;
            let result = (&tree, &self.meta).transaction(|(tree, meta)| -> TxResult<bool> {
                let newer_here = tree
                    .get(&change.key)?
                    .and_then(|bytes| envelope::decode(&bytes))
                    .is_some_and(|current| current.version >= change.version);
                if !newer_here {
                    tree.insert(
                        change.key.as_bytes(),
                        envelope::encode(&change.version, change.value.as_deref()),
                    )?;
                }
                meta.insert(META_HLC, &be(self.hlc.last()))?;
                Ok(!newer_here)
            });
            match result {
                Ok(won) => applied += u64::from(won),
                Err(TransactionError::Storage(e)) => return Err(e.into()),
                Err(TransactionError::Abort(_)) => {}
            }
        }
        self.meta.insert(META_PULL_CURSOR, &be(cursor))?;
        self.meta.insert(META_CLOUD_ID, &be(cloud))?;
        Ok(Written::Remote {
            applied,
            older: changes.len() as u64 - applied,
        })
    }
}
