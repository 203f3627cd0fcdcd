//! Events: an event is one outbox record, written with the next sequence
//! number; an idempotency key maps to the first event's id, so a retried
//! enqueue returns that id instead of a second event.

use super::be;
use super::group::{IDEMPOTENCY, OUTBOX, QUARANTINE, Step, TxError};
use super::ops::Written;
use crate::{StorageError, u64_value};
use outpost_wire::Record;

pub(super) fn enqueue(
    step: &mut Step,
    topic: &str,
    payload: &[u8],
    idempotency_key: Option<&str>,
) -> Result<Result<Written, StorageError>, TxError> {
    let dedup_key = idempotency_key.map(|k| [topic.as_bytes(), b"\0", k.as_bytes()].concat());
    if let Some(dedup_key) = &dedup_key
        && let Some(first) = step.tree(IDEMPOTENCY).get(dedup_key)?
    {
        return Ok(Ok(Written::Id(u64_value(Some(first)))));
    }
    let record = Record::Event {
        topic: topic.to_owned(),
        payload: payload.to_vec(),
        idempotency_key: idempotency_key.map(str::to_owned),
        hlc: step.hlc.tick(),
    };
    let json = serde_json::to_vec(&record).expect("records serialize");
    if let Err(rejection) = step.take_room(json.len() as u64) {
        return Ok(Ok(Written::Rejected(rejection)));
    }
    let seq = step.next_seq;
    if let Some(dedup_key) = dedup_key {
        step.tree(IDEMPOTENCY).insert(dedup_key, &be(seq))?;
    }
    step.tree(OUTBOX).insert(&be(seq), json)?;
    step.next_seq += 1;
    Ok(Ok(Written::Id(seq)))
}

/// Moves quarantined record `id` back into the outbox under the next
/// sequence number, in the group's transaction, so two re-sends of one
/// record cannot both succeed.
pub(super) fn requeue(step: &mut Step, id: u64) -> Result<Result<Written, StorageError>, TxError> {
    let Some(kept) = step.tree(QUARANTINE).get(be(id))? else {
        return Ok(Ok(Written::Done));
    };
    let record = crate::quarantine::record_of(&kept);
    if let Err(rejection) = step.take_room(record.len() as u64) {
        return Ok(Ok(Written::Rejected(rejection)));
    }
    step.tree(QUARANTINE).remove(&be(id))?;
    let seq = step.next_seq;
    if let Some(store) = crate::pending::record_store(record) {
        step.added_stores.push(store);
    }
    step.tree(OUTBOX).insert(&be(seq), record)?;
    step.next_seq += 1;
    Ok(Ok(Written::Id(seq)))
}
