//! A local KV write: the new value and, for a replicated store, its outbox
//! record, written in the group's transaction, so no crash can keep one
//! without the other.

use super::be;
use super::group::{OUTBOX, Step, TxError};
use super::ops::{Applied, Decision, Receipt};
use crate::StorageError;
use outpost_wire::envelope::{self, Stored};
use outpost_wire::{Record, Version};

/// Reads `key`'s live value, asks `decide` what to do (`None`: nothing;
/// `Some(None)`: delete; `Some(Some(v))`: set), and writes the result
/// together with its outbox record. A corrupt stored value is this
/// write's error; it writes nothing.
pub(super) fn read_modify_write(
    step: &mut Step,
    store: &str,
    replicated: bool,
    key: &str,
    decide: impl Fn(Option<&[u8]>) -> Decision,
) -> Result<Result<Applied, StorageError>, TxError> {
    let current = match step.store(store).get(key)? {
        Some(bytes) => match envelope::decode(&bytes) {
            Some(stored) => Some(stored),
            None => {
                return Ok(Err(StorageError::Corrupt(format!(
                    "corrupt value at {store}/{key}"
                ))));
            }
        },
        None => None,
    };
    let live = current.as_ref().and_then(|c| c.value.as_deref());
    let new = match decide(live) {
        Ok(Some(new)) => new,
        Ok(None) => return Ok(Ok(Applied::Unchanged)),
        Err(rejection) => return Ok(Ok(Applied::Rejected(rejection))),
    };
    let version = Version {
        hlc: step.hlc.tick(),
        node: step.node_id.to_owned(),
    };
    if replicated {
        let record = Record::Kv {
            store: store.to_owned(),
            key: key.to_owned(),
            value: new.clone(),
            version: version.clone(),
            seen: current.map(|c: Stored| c.version),
        };
        let json = serde_json::to_vec(&record).expect("records serialize");
        if let Err(rejection) = step.take_room(json.len() as u64) {
            return Ok(Ok(Applied::Rejected(rejection)));
        }
        step.store(store)
            .insert(key, envelope::encode(&version, new.as_deref()))?;
        step.tree(OUTBOX).insert(&be(step.next_seq), json)?;
        step.added_stores.push(store.to_owned());
        step.receipt = Some(Receipt {
            seq: step.next_seq,
            version: version.clone(),
        });
        step.next_seq += 1;
    } else {
        match &new {
            Some(value) => step
                .store(store)
                .insert(key, envelope::encode(&version, Some(value)))?,
            None => step.store(store).remove(key)?,
        };
    }
    Ok(Ok(Applied::Wrote(new)))
}
