//! What the writer reads from a database it reopens after sled failed
//! (the retiring and reopening are outpost-sled-guard's, see
//! [`outpost_sled_guard::recovery`]): the next sequence number and the
//! outbox's size, by what the disk holds.

use crate::handles::Handles;
use crate::{META_NEXT_SEQ, StorageError, u64_value};
use outpost_sled_guard::ReopenError;
use std::path::Path;

/// The new instance, ready to replace the old one.
pub(super) struct Reopened {
    pub(super) handles: Handles,
    /// The next sequence number by what the disk holds.
    pub(super) next_seq: u64,
    /// Bytes of records in the outbox.
    pub(super) outbox_bytes: u64,
    /// Records in the outbox.
    pub(super) outbox_records: u64,
}

/// Opens the database in `db_dir` again, once its old instance is retired
/// (the guard retries while the old instance's lock lingers, and fsyncs
/// the files before the writer installs it).
pub(super) fn reopen(db_dir: &Path) -> Result<(Reopened, sled::Db), ReopenError> {
    let handles = Handles::open(db_dir).map_err(|e| ReopenError::Open(e.to_string()))?;
    let next_seq = stored_next_seq(&handles).map_err(|e| ReopenError::Load(e.to_string()))?;
    let (mut outbox_bytes, mut outbox_records) = (0, 0);
    for item in handles.outbox.iter() {
        outbox_bytes += item.map_err(|e| ReopenError::Load(e.to_string()))?.1.len() as u64;
        outbox_records += 1;
    }
    let db = handles.db.clone();
    Ok((
        Reopened {
            handles,
            next_seq,
            outbox_bytes,
            outbox_records,
        },
        db,
    ))
}

/// The next sequence number the disk allows: past the stored counter and
/// past the newest outbox record, even if the counter were lost.
pub(super) fn stored_next_seq(handles: &Handles) -> Result<u64, StorageError> {
    let last_in_outbox = handles
        .outbox
        .last()?
        .map_or(0, |(key, _)| u64_value(Some(key)) + 1);
    Ok(u64_value(handles.meta.get(META_NEXT_SEQ)?)
        .max(last_in_outbox)
        .max(1))
}
