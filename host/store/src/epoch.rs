//! `outpost serve --new-epoch`: gives a data dir a new database epoch and
//! renumbers its outbox from 1, for a copied data dir (the cloud refuses a
//! second node on one epoch) or a stream with a gap the cloud will not
//! accept. Runs before the database opens for serving.

use crate::{META_EPOCH, META_NEXT_SEQ, StorageError, u64_value};
use std::path::Path;

/// What [`renew`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewed {
    /// The epoch the data dir had (0: none yet).
    pub old: u64,
    /// Its new epoch.
    pub new: u64,
    /// Outbox records renumbered 1..=records under the new epoch.
    pub records: u64,
}

/// The tree holding, for a renumbered outbox record, where it was numbered
/// before (`new seq -> old epoch, old seq`), shipped as its
/// [`outpost_wire::Origin`].
pub(crate) const ORIGINS: &str = "outbox_origins";

fn origin_bytes(epoch: u64, seq: u64) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&epoch.to_be_bytes());
    bytes[8..].copy_from_slice(&seq.to_be_bytes());
    bytes
}

/// Decodes what [`origin_bytes`] wrote.
pub(crate) fn origin_of(bytes: &[u8]) -> Option<outpost_wire::Origin> {
    let epoch = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let seq = u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
    Some(outpost_wire::Origin { epoch, seq })
}

/// Gives the database in `data_dir/db` a new random epoch and renumbers
/// its outbox records 1, 2, ... in their order, in one transaction. Each
/// keeps where it was numbered before (its first place, if it was renewed
/// already), and the cloud applies a record only if that place did not
/// apply it: records of a copied data dir that the original ships too, or
/// whose ack was lost, are not applied twice.
pub fn renew(data_dir: &Path) -> Result<Renewed, StorageError> {
    use sled::Transactional;
    let db = sled::Config::new().path(data_dir.join("db")).open()?;
    let meta = db.open_tree("meta")?;
    let outbox = db.open_tree("outbox")?;
    let origins = db.open_tree(ORIGINS)?;
    let old = u64_value(meta.get(META_EPOCH)?);
    let mut new = old;
    while new == old {
        new = fastrand::u64(1..);
    }
    let records: Vec<_> = outbox.iter().collect::<Result<_, _>>()?;
    let kept_origins: Vec<_> = records
        .iter()
        .map(|(key, _)| origins.get(key))
        .collect::<Result<_, _>>()?;
    (&outbox, &origins, &meta)
        .transaction(|(outbox, origins, meta)| {
            for (key, _) in &records {
                outbox.remove(key)?;
                origins.remove(key)?;
            }
            for (i, ((key, record), kept)) in records.iter().zip(&kept_origins).enumerate() {
                let seq = (i as u64 + 1).to_be_bytes();
                outbox.insert(&seq, record)?;
                let origin = match kept {
                    Some(first) => first.to_vec(),
                    None => origin_bytes(old, u64_value(Some(key.clone()))).to_vec(),
                };
                origins.insert(&seq, origin)?;
            }
            meta.insert(META_NEXT_SEQ, &(records.len() as u64 + 1).to_be_bytes())?;
            meta.insert(META_EPOCH, &new.to_be_bytes())?;
            Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
        })
        .map_err(|e| match e {
            sled::transaction::TransactionError::Storage(e) => StorageError::Db(e),
            sled::transaction::TransactionError::Abort(()) => unreachable!("never aborts"),
        })?;
    db.flush()?;
    Ok(Renewed {
        old,
        new,
        records: records.len() as u64,
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
        assert_eq!((renewed.old, renewed.records), (old, 3));
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
        let origin = storage.origins(1, 1).unwrap()[&1];
        assert_eq!((origin.epoch, origin.seq), (old, 3));
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
