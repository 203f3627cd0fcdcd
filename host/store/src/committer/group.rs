//! One sled transaction for a whole group of writes. sled 0.34 seals and
//! writes its log buffer twice at the start of every transaction (and
//! every batch) so that the batch recovers atomically; per write, that was
//! two log writes on sled's I/O threads and most of a durable write's CPU.
//! Applied as one transaction, a group pays that once, and still no crash
//! can keep a value without its outbox record, or either half of a group
//! without the other.
//!
//! The writes are applied in order, each seeing the ones before it (sled's
//! transactional trees read their own writes). A write that is refused
//! (compare-and-swap conflict, full outbox, ...) or finds a corrupt value
//! writes nothing and gets its own answer; the others still commit. sled
//! may run the closure again if a tree it read changed meanwhile (outbox
//! acks are removed outside the writer), so everything it changes is
//! built afresh in [`Step`] on every run and handed back with the result.

use super::ops::{Receipt, Rejection, WriteOp, Written};
use super::{Committer, be};
use crate::{META_HLC, META_NEXT_SEQ, StorageError, tree_name};
use outpost_wire::hlc::Hlc;
use sled::Transactional;
use sled::transaction::{
    ConflictableTransactionError, TransactionError, TransactionalTree, UnabortableTransactionError,
};
use std::collections::HashMap;

/// Positions of the node's own trees in a group's transaction.
pub(super) const META: usize = 0;
pub(super) const OUTBOX: usize = 1;
pub(super) const IDEMPOTENCY: usize = 2;
pub(super) const QUARANTINE: usize = 3;

/// A sled error inside the transaction; it fails the whole group.
pub(super) type TxError = UnabortableTransactionError;

/// What one run of a group's transaction carries from write to write.
pub(super) struct Step<'a> {
    /// The transaction's trees: the fixed ones at [`META`] .. [`QUARANTINE`],
    /// then each KV store the group touches.
    trees: &'a [TransactionalTree],
    /// Store id -> position in `trees`.
    stores: &'a HashMap<String, usize>,
    pub(super) node_id: &'a str,
    pub(super) hlc: Hlc,
    /// The next outbox sequence number.
    pub(super) next_seq: u64,
    /// Bytes the outbox may still take.
    pub(super) room: u64,
    /// Bytes of outbox records added by this group.
    pub(super) outbox_added: u64,
    /// The store of each KV record added by this group (for
    /// [`crate::pending`]).
    pub(super) added_stores: Vec<String>,
    /// The record the current op made, taken after each op.
    pub(super) receipt: Option<super::ops::Receipt>,
}

impl Step<'_> {
    /// One of the node's own trees ([`META`], [`OUTBOX`], ...).
    pub(super) fn tree(&self, at: usize) -> &TransactionalTree {
        &self.trees[at]
    }

    /// Store `store`'s tree; the group opened every store it names.
    pub(super) fn store(&self, store: &str) -> &TransactionalTree {
        &self.trees[self.stores[store]]
    }

    /// Takes `bytes` of outbox room for a record, or says the outbox is
    /// full.
    pub(super) fn take_room(&mut self, bytes: u64) -> Result<(), Rejection> {
        if bytes > self.room {
            return Err(Rejection::OutboxFull);
        }
        self.room -= bytes;
        self.outbox_added += bytes;
        Ok(())
    }
}

/// What a committed group changed besides the trees.
/// One op's answer: what it did, and the outbox record it made.
pub(super) type OpResult = Result<(Written, Option<Receipt>), StorageError>;

struct Outcome {
    results: Vec<OpResult>,
    hlc: u64,
    next_seq: u64,
    outbox_added: u64,
    added_stores: Vec<String>,
}

/// The stores `op` writes to.
fn stores_of(op: &WriteOp) -> Vec<&str> {
    match op {
        WriteOp::Set { store, .. }
        | WriteOp::Delete { store, .. }
        | WriteOp::Increment { store, .. }
        | WriteOp::CompareAndSwap { store, .. } => vec![store],
        WriteOp::ApplyRemote { changes, .. } => changes.iter().map(|c| c.store.as_str()).collect(),
        WriteOp::Enqueue { .. } | WriteOp::Requeue { .. } => Vec::new(),
    }
}

impl Committer {
    /// Store `store`'s tree, opened once per database instance.
    fn store_tree(&mut self, store: &str) -> Result<sled::Tree, StorageError> {
        if let Some(tree) = self.stores.get(store) {
            return Ok(tree.clone());
        }
        let tree = self.db.open_tree(tree_name(store))?;
        self.stores.insert(store.to_owned(), tree.clone());
        Ok(tree)
    }

    /// Applies `ops` in one transaction: one answer per op, in order, or
    /// the sled error that failed the whole group (nothing of it applied,
    /// unless it was an I/O error during the commit: then it is unknown).
    pub(super) fn apply_group(&mut self, ops: &[&WriteOp]) -> Result<Vec<OpResult>, sled::Error> {
        let mut trees = vec![
            self.meta.clone(),
            self.outbox.clone(),
            self.idempotency.clone(),
            self.quarantine.clone(),
        ];
        let mut stores = HashMap::new();
        for op in ops {
            for store in stores_of(op) {
                if !stores.contains_key(store) {
                    let tree = self.store_tree(store).map_err(|e| match e {
                        StorageError::Db(e) => e,
                        other => sled::Error::Unsupported(other.to_string()),
                    })?;
                    stores.insert(store.to_owned(), trees.len());
                    trees.push(tree);
                }
            }
        }
        let (hlc, next_seq, room) = (self.hlc.last(), self.next_seq, self.outbox_room());
        let outcome = trees.as_slice().transaction(|view| {
            let mut step = Step {
                trees: view,
                stores: &stores,
                node_id: &self.node_id,
                hlc: Hlc::resume(hlc),
                next_seq,
                room,
                outbox_added: 0,
                added_stores: Vec::new(),
                receipt: None,
            };
            let mut results = Vec::with_capacity(ops.len());
            for op in ops {
                let result = apply(&mut step, op)?;
                let receipt = step.receipt.take();
                results.push(result.map(|written| (written, receipt)));
            }
            if step.next_seq != next_seq {
                step.tree(META).insert(META_NEXT_SEQ, &be(step.next_seq))?;
            }
            if step.hlc.last() != hlc {
                step.tree(META).insert(META_HLC, &be(step.hlc.last()))?;
            }
            Ok::<_, ConflictableTransactionError<()>>(Outcome {
                results,
                hlc: step.hlc.last(),
                next_seq: step.next_seq,
                outbox_added: step.outbox_added,
                added_stores: step.added_stores,
            })
        });
        match outcome {
            Ok(outcome) => {
                self.hlc = Hlc::resume(outcome.hlc);
                // Each sequence number handed out is one outbox record.
                self.progress.outbox_records.fetch_add(
                    outcome.next_seq - self.next_seq,
                    std::sync::atomic::Ordering::AcqRel,
                );
                self.next_seq = outcome.next_seq;
                self.progress
                    .outbox_bytes
                    .fetch_add(outcome.outbox_added, std::sync::atomic::Ordering::AcqRel);
                self.progress.pending.added(&outcome.added_stores);
                Ok(outcome.results)
            }
            Err(TransactionError::Storage(e)) => Err(e),
            Err(TransactionError::Abort(())) => unreachable!("a group never aborts"),
        }
    }
}

/// One op of a group; `Err` only for a sled error, which fails the group.
fn apply(step: &mut Step, op: &WriteOp) -> Result<Result<Written, StorageError>, TxError> {
    use super::ops;
    Ok(match op {
        WriteOp::Set {
            store,
            replicated,
            key,
            value,
        } => super::kv::read_modify_write(step, store, *replicated, key, |_| ops::set(value))?
            .map(Written::from),
        WriteOp::Delete {
            store,
            replicated,
            key,
        } => super::kv::read_modify_write(step, store, *replicated, key, |current| {
            ops::delete(*replicated, current)
        })?
        .map(Written::from),
        WriteOp::Increment {
            store,
            replicated,
            key,
            delta,
        } => super::kv::read_modify_write(step, store, *replicated, key, |current| {
            ops::increment(current, *delta)
        })?
        .map(|written| match written {
            ops::Applied::Wrote(Some(bytes)) => {
                Written::Number(ops::parse_integer(&bytes).expect("just written"))
            }
            other => other.into(),
        }),
        WriteOp::CompareAndSwap {
            store,
            replicated,
            key,
            expected,
            new,
        } => super::kv::read_modify_write(step, store, *replicated, key, |current| {
            ops::compare_and_swap(current, expected.as_deref(), new)
        })?
        .map(Written::from),
        WriteOp::Enqueue {
            topic,
            payload,
            idempotency_key,
        } => super::enqueue::enqueue(step, topic, payload, idempotency_key.as_deref())?,
        WriteOp::Requeue { quarantined } => super::enqueue::requeue(step, *quarantined)?,
        WriteOp::ApplyRemote {
            changes,
            cursor,
            cloud,
        } => super::remote::apply_remote(step, changes, *cursor, *cloud)?,
    })
}
