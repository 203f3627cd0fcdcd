//! A local KV write: the new value and, for a replicated store, its outbox
//! record, committed in one sled transaction, so no crash can keep one
//! without the other.

use super::ops::{Applied, Rejection};
use super::{Committer, TxResult, be};
use crate::{META_HLC, META_NEXT_SEQ, StorageError, tree_name};
use outpost_wire::envelope::{self, Stored};
use outpost_wire::{Record, Version};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use std::sync::atomic::Ordering;

impl Committer {
    /// Reads `key`'s live value, asks `decide` what to do (`None`: nothing;
    /// `Some(None)`: delete; `Some(Some(v))`: set), and commits the result
    /// together with its outbox record, in one transaction.
    pub(super) fn read_modify_write(
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
}
