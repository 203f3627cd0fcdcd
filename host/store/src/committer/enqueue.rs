//! Events: an event is one outbox record, committed with the next sequence
//! number; an idempotency key maps to the first event's id, so a retried
//! enqueue returns that id instead of a second event.

use super::ops::{Rejection, Written};
use super::{Committer, TxResult, be};
use crate::{META_HLC, META_NEXT_SEQ, StorageError, u64_value};
use outpost_wire::Record;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use std::sync::atomic::Ordering;

impl Committer {
    pub(super) fn enqueue(
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

    /// Moves quarantined record `id` back into the outbox under the next
    /// sequence number, in one transaction, so two re-sends of one record
    /// cannot both succeed.
    pub(super) fn requeue(&mut self, id: u64) -> Result<Written, StorageError> {
        let seq = self.next_seq;
        let quarantine = self.db.open_tree("quarantine")?;
        let room = self.outbox_room();
        let outcome = (&self.outbox, &self.meta, &quarantine).transaction(
            |(outbox, meta, quarantine)| -> TxResult<Option<u64>> {
                let Some(kept) = quarantine.remove(&be(id))? else {
                    return Ok(None);
                };
                let record = crate::quarantine::record_of(&kept);
                if record.len() as u64 > room {
                    return Err(ConflictableTransactionError::Abort(Rejection::OutboxFull));
                }
                outbox.insert(&be(seq), record)?;
                meta.insert(META_NEXT_SEQ, &be(seq + 1))?;
                Ok(Some(record.len() as u64))
            },
        );
        match outcome {
            Ok(Some(bytes)) => {
                self.next_seq += 1;
                self.progress
                    .outbox_bytes
                    .fetch_add(bytes, Ordering::AcqRel);
                Ok(Written::Id(seq))
            }
            Ok(None) => Ok(Written::Done),
            Err(TransactionError::Abort(rejection)) => Ok(Written::Rejected(rejection)),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }
}
