//! The node's single writer. Writes queue up while a flush is in progress;
//! the next round applies all of them (each in its own sled transaction)
//! and makes them durable with one fsync: group commit. Being the only
//! writer also makes sequence numbers and HLC stamps trivially ordered.
//!
//! This module is the loop; what each write does is in [`ops`] (the KV
//! operations' semantics), [`kv`] (a local write and its outbox record in
//! one transaction), [`enqueue`] (events, idempotency) and [`remote`]
//! (other nodes' writes, last-writer-wins).

mod enqueue;
mod kv;
pub mod ops;
mod remote;
#[cfg(test)]
mod tests;

pub use ops::{Rejection, WriteOp, Written};

use crate::{META_HLC, META_NEXT_SEQ, StorageError, u64_value};
use outpost_wire::hlc::Hlc;
use sled::Tree;
use sled::transaction::ConflictableTransactionError;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use tokio::sync::{Notify, oneshot};

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

struct Job {
    op: WriteOp,
    reply: oneshot::Sender<Result<Written, StorageError>>,
}

/// Submits writes to the writer thread.
///
/// The queue behind it is unbounded on purpose, because what feeds it is
/// bounded elsewhere: every submitter awaits its answer before it can
/// submit again, and the submitters are guests in a request (at most
/// `max-instances` at once, by the edge's admission slots; a p2 guest
/// makes one host call at a time) plus the feed puller (one batch at a
/// time). So at most `max-instances + 1` writes wait here.
pub struct Handle {
    jobs: mpsc::Sender<Job>,
}

impl Handle {
    /// Queues `op` and waits until it is durable (or refused).
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

/// Starts the writer thread over the node's database.
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
                    tracing::error!(target: "outpost::storage::committer", error = %e, "database flush failed; refusing further writes");
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
                .read_modify_write(store, *replicated, key, |_| ops::set(value))
                .map(Written::from),
            WriteOp::Delete {
                store,
                replicated,
                key,
            } => self
                .read_modify_write(store, *replicated, key, |current| {
                    ops::delete(*replicated, current)
                })
                .map(Written::from),
            WriteOp::Increment {
                store,
                replicated,
                key,
                delta,
            } => {
                let written = self.read_modify_write(store, *replicated, key, |current| {
                    ops::increment(current, *delta)
                })?;
                Ok(match written {
                    ops::Applied::Wrote(Some(bytes)) => {
                        Written::Number(ops::parse_integer(&bytes).expect("just written"))
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
                    ops::compare_and_swap(current, expected.as_deref(), new)
                })
                .map(Written::from),
            WriteOp::Enqueue {
                topic,
                payload,
                idempotency_key,
            } => self.enqueue(topic, payload, idempotency_key.as_deref()),
            WriteOp::Requeue { quarantined } => self.requeue(*quarantined),
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
            tracing::warn!(target: "outpost::storage::committer",
                used = self.progress.outbox_bytes.load(Ordering::Acquire),
                max = self.max_outbox_bytes,
                refused = self.outbox_full_refusals + 1,
                "the outbox is full: replicated writes and events are refused until it drains"
            );
        }
        self.outbox_full_refusals += 1;
    }

    /// Bytes the outbox may still take.
    ///
    /// Says nothing itself: it runs for every write, local ones too, so a
    /// full outbox is reported where a write is refused, throttled
    /// ([`Self::report_full_outbox`]).
    fn outbox_room(&self) -> u64 {
        let used = self.progress.outbox_bytes.load(Ordering::Acquire);
        self.max_outbox_bytes.saturating_sub(used)
    }
}
