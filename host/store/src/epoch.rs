//! `outpost serve --new-epoch`: gives a data dir a new database epoch and
//! renumbers its outbox from 1, for a copied data dir (the cloud refuses a
//! second node on one epoch) or a stream with a gap the cloud will not
//! accept. Runs before the database opens for serving.

use crate::{META_EPOCH, META_NEXT_SEQ, META_RENAMED_AT, StorageError, u64_value};
use std::path::Path;

/// Remembers where this data dir's records under the new node id begin
/// (the first time it runs under another id than before): the records
/// below were written as the old node, and [`renew`] will not ship them as
/// this one.
pub(crate) fn note_rename(meta: &sled::Tree, outbox: &sled::Tree) -> Result<(), StorageError> {
    if meta.get(META_RENAMED_AT)?.is_some() {
        return Ok(());
    }
    let next = outbox
        .last()?
        .map_or(0, |(key, _)| u64_value(Some(key)) + 1)
        .max(u64_value(meta.get(META_NEXT_SEQ)?))
        .max(1);
    meta.insert(META_RENAMED_AT, &next.to_be_bytes())?;
    Ok(())
}

/// What [`renew`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewed {
    /// The epoch the data dir had (0: none yet).
    pub old: u64,
    /// Its new epoch.
    pub new: u64,
    /// Outbox records renumbered 1..=records under the new epoch.
    pub records: u64,
    /// Records written under the data dir's previous node id (before it
    /// ran as this one), moved to quarantine instead: they are the other
    /// node's to ship; re-send them from the admin API if this was a rename.
    pub quarantined: u64,
}

/// Gives the database in `data_dir/db` a new random epoch and renumbers
/// its outbox records 1, 2, ... in their order, durably. The records keep
/// their content; the cloud sees them as a new stream (its dedup is per
/// epoch, so nothing is mistaken for a duplicate). Records written before
/// the data dir took its current node id are quarantined, not shipped: in
/// a copied data dir they are the original's, which ships them itself.
pub fn renew(data_dir: &Path) -> Result<Renewed, StorageError> {
    let db = sled::Config::new().path(data_dir.join("db")).open()?;
    let meta = db.open_tree("meta")?;
    let outbox = db.open_tree("outbox")?;
    let quarantine = db.open_tree("quarantine")?;
    let old = u64_value(meta.get(META_EPOCH)?);
    let mut new = old;
    while new == old {
        new = fastrand::u64(1..);
    }
    let renamed_at = meta.get(META_RENAMED_AT)?.map(|v| u64_value(Some(v)));
    let mut records: Vec<_> = outbox.iter().collect::<Result<_, _>>()?;
    let mut batch = sled::Batch::default();
    for (key, _) in &records {
        batch.remove(key);
    }
    let mut quarantined = 0;
    if let Some(boundary) = renamed_at {
        let reason = format!(
            "written under this data dir's previous node id (before seq {boundary}); not shipped as this node after --new-epoch\n"
        );
        let mut kept_records = Vec::with_capacity(records.len());
        for (key, record) in records {
            let seq = u64_value(Some(key.clone()));
            if seq >= boundary {
                kept_records.push((key, record));
                continue;
            }
            let mut kept = reason.as_bytes().to_vec();
            kept.extend_from_slice(&record);
            quarantine.insert(crate::quarantine::free_slot(&quarantine, seq)?, kept)?;
            quarantined += 1;
        }
        records = kept_records;
    }
    for (i, (_, record)) in records.iter().enumerate() {
        batch.insert(&(i as u64 + 1).to_be_bytes(), record);
    }
    outbox.apply_batch(batch)?;
    meta.remove(META_RENAMED_AT)?;
    meta.insert(META_NEXT_SEQ, &(records.len() as u64 + 1).to_be_bytes())?;
    meta.insert(META_EPOCH, &new.to_be_bytes())?;
    db.flush()?;
    Ok(Renewed {
        old,
        new,
        records: records.len() as u64,
        quarantined,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Storage, WriteOp};

    #[tokio::test]
    async fn the_outbox_is_renumbered_from_one_under_a_new_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let old = {
            let storage = Storage::open(dir.path(), Some("n1")).unwrap();
            for i in 0..5u8 {
                let op = WriteOp::Enqueue {
                    topic: "t".into(),
                    payload: vec![i],
                    idempotency_key: None,
                };
                storage.write(op).await.unwrap();
            }
            storage.outbox_ack(2).unwrap();
            storage.epoch()
        };
        // Wait for the writer thread to let go of the database.
        let renewed = loop {
            match renew(dir.path()) {
                Ok(renewed) => break renewed,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        };
        assert_eq!(
            (renewed.old, renewed.records, renewed.quarantined),
            (old, 3, 0)
        );
        assert_ne!(renewed.new, old);
        let storage = loop {
            match Storage::open(dir.path(), Some("n1")) {
                Ok(storage) => break storage,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        };
        assert_eq!(storage.epoch(), renewed.new);
        let batch = storage.outbox_batch(100, usize::MAX).unwrap();
        let seqs: Vec<u64> = batch.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert!(String::from_utf8_lossy(&batch[0].1).contains("\"payload\":\"Ag==\""));
        let op = WriteOp::Enqueue {
            topic: "t".into(),
            payload: vec![9],
            idempotency_key: None,
        };
        storage.write(op).await.unwrap();
        assert_eq!(
            storage
                .outbox_batch(100, usize::MAX)
                .unwrap()
                .last()
                .unwrap()
                .0,
            4
        );
    }
}
