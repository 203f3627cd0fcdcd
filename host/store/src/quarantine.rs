//! Outbox records set aside: the cloud's verdict refused them for good, so
//! they leave the outbox (one bad record must not block every later one)
//! but stay on disk, listed for operators and re-sendable.

use crate::{Storage, StorageError, WriteOp, Written, u64_value};
use outpost_wire::Record;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use std::sync::atomic::Ordering;

/// One quarantined record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// The sequence number it had in the outbox.
    pub seq: u64,
    /// Why it was set aside (the cloud's code and reason).
    pub reason: String,
    /// The record as it was stored (JSON).
    pub record: Vec<u8>,
}

/// The stored record inside a quarantine value (`reason \n record`).
pub(crate) fn record_of(kept: &[u8]) -> &[u8] {
    match kept.iter().position(|&b| b == b'\n') {
        Some(i) => &kept[i + 1..],
        None => kept,
    }
}

fn split(seq: u64, kept: &[u8]) -> Quarantined {
    let (reason, record) = match kept.iter().position(|&b| b == b'\n') {
        Some(i) => (&kept[..i], &kept[i + 1..]),
        None => (&kept[..0], kept),
    };
    Quarantined {
        seq,
        reason: String::from_utf8_lossy(reason).into_owned(),
        record: record.to_vec(),
    }
}

/// The quarantine key for a record of sequence number `seq`: `seq` itself,
/// or past the last key if an earlier epoch's record already holds it
/// (after `--new-epoch`, sequence numbers start again).
pub(crate) fn free_slot(quarantine: &sled::Tree, seq: u64) -> Result<[u8; 8], StorageError> {
    if !quarantine.contains_key(seq.to_be_bytes())? {
        return Ok(seq.to_be_bytes());
    }
    let last = quarantine
        .last()?
        .map_or(0, |(key, _)| u64_value(Some(key)));
    Ok(last.max(seq).saturating_add(1).to_be_bytes())
}

impl Storage {
    /// Moves outbox record `seq` into quarantine with `reason`; with
    /// `placeholder`, a [`Record::Skipped`] takes its place in the outbox,
    /// so the cloud, which never consumed the sequence number, sees no gap.
    /// Runs on the writer, so it is durable when it returns and fails fast
    /// (never hangs) while the disk is failing.
    async fn set_aside(
        &self,
        seq: u64,
        reason: &str,
        placeholder: bool,
    ) -> Result<(), StorageError> {
        let key = seq.to_be_bytes();
        let skipped = serde_json::to_vec(&Record::Skipped {
            reason: reason.chars().take(1024).collect(),
        })
        .expect("serializes");
        let mut kept_reason = reason.replace('\n', " ").into_bytes();
        kept_reason.push(b'\n');
        let moved = self
            .on_writer(move |handles| {
                let slot = free_slot(&handles.quarantine, seq)?;
                (&handles.outbox, &handles.quarantine)
                    .transaction(|(outbox, quarantine)| {
                        let Some(record) = outbox.remove(&key)? else {
                            return Ok((0i64, false, None));
                        };
                        let store = crate::pending::record_store(&record);
                        let mut kept = kept_reason.clone();
                        kept.extend_from_slice(&record);
                        quarantine.insert(&slot, kept)?;
                        let mut delta = record.len() as i64;
                        if placeholder {
                            outbox.insert(&key, skipped.as_slice())?;
                            delta -= skipped.len() as i64;
                        }
                        Ok::<_, ConflictableTransactionError<()>>((delta, !placeholder, store))
                    })
                    .map_err(|e| match e {
                        TransactionError::Storage(e) => StorageError::Db(e),
                        TransactionError::Abort(()) => unreachable!("never aborts"),
                    })
            })
            .await?;
        let (moved, removed, store) = moved;
        // Set aside, it no longer waits for the cloud, and whoever waited
        // on it must not hear "applied" when its placeholder is acked.
        self.progress.pending.removed(store);
        self.progress.awaiting.answer(
            seq,
            crate::CloudAnswer::Refused(reason.chars().take(1024).collect()),
        );
        if removed {
            self.progress.outbox_records.fetch_sub(1, Ordering::AcqRel);
        }
        if moved >= 0 {
            self.progress
                .outbox_bytes
                .fetch_sub(moved as u64, Ordering::AcqRel);
        } else {
            self.progress
                .outbox_bytes
                .fetch_add(moved.unsigned_abs(), Ordering::AcqRel);
        }
        Ok(())
    }

    /// Moves a record the cloud refused for good (its verdict consumed the
    /// sequence number) out of the outbox, keeping it on disk.
    pub async fn quarantine(&self, seq: u64, reason: &str) -> Result<(), StorageError> {
        self.set_aside(seq, reason, false).await
    }

    /// Sets aside a record whose bytes the cloud refuses (typed too-large
    /// or malformed, sent alone), leaving a placeholder that keeps its
    /// sequence number in the stream.
    pub async fn quarantine_and_skip(&self, seq: u64, reason: &str) -> Result<(), StorageError> {
        self.set_aside(seq, reason, true).await
    }

    /// Records set aside, by quarantine id (their sequence number when they
    /// were set aside, unless an earlier epoch's record had it): at most
    /// `limit`, after `since`.
    pub fn quarantined_records(
        &self,
        since: u64,
        limit: usize,
    ) -> Result<Vec<Quarantined>, StorageError> {
        let mut out = Vec::new();
        for item in self
            .handles()
            .quarantine
            .range(since.saturating_add(1).to_be_bytes()..)
            .take(limit)
        {
            let (key, kept) = item?;
            out.push(split(u64_value(Some(key)), &kept));
        }
        Ok(out)
    }

    /// Records moved aside.
    pub fn quarantined(&self) -> usize {
        self.handles().quarantine.len()
    }

    /// Moves quarantined record `id` back into the outbox under a new
    /// sequence number, durably and in one transaction. `Ok(None)`: no
    /// such record (never there, or already re-sent).
    pub async fn resend_quarantined(&self, id: u64) -> Result<Option<Written>, StorageError> {
        match self.write(WriteOp::Requeue { quarantined: id }).await? {
            Written::Done => Ok(None),
            written => Ok(Some(written)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_and_records_split_at_the_first_newline() {
        let q = split(7, b"clock-skew: too far\n{\"kind\":\"event\"}");
        assert_eq!(q.reason, "clock-skew: too far");
        assert_eq!(q.record, b"{\"kind\":\"event\"}");
    }
}

#[cfg(test)]
mod resend_tests {
    use crate::{Storage, WriteOp, Written};

    #[tokio::test]
    async fn a_quarantined_record_is_resent_once_however_many_ask() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path(), Some("n1")).unwrap();
        let op = WriteOp::Enqueue {
            topic: "t".into(),
            payload: b"p".to_vec(),
            idempotency_key: None,
        };
        let Written::Id(seq) = storage.write(op).await.unwrap() else {
            panic!("enqueue gives an id")
        };
        storage.quarantine(seq, "clock-skew: test").await.unwrap();
        assert_eq!(storage.outbox_len(), 0);
        let listed = storage.quarantined_records(0, 10).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].reason, "clock-skew: test");
        let (a, b) = tokio::join!(
            storage.resend_quarantined(seq),
            storage.resend_quarantined(seq)
        );
        let outcomes = [a.unwrap(), b.unwrap()];
        assert_eq!(
            outcomes.iter().filter(|o| o.is_some()).count(),
            1,
            "{outcomes:?}"
        );
        assert_eq!(storage.outbox_len(), 1);
        assert_eq!(storage.quarantined(), 0);
        let batch = storage.outbox_batch(10, usize::MAX).unwrap();
        assert!(batch[0].0 > seq, "a new sequence number");
        assert!(String::from_utf8_lossy(&batch[0].1).contains("\"topic\":\"t\""));
    }
}
