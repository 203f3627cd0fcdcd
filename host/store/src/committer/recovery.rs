//! Reopening the database after sled failed, without a restart.
//!
//! What sled 0.34 does after a failed write (read in its source and seen
//! on a full tmpfs):
//! - A failed log write (ENOSPC from `pwrite`) is stored as the instance's
//!   *global error*. It is set once and only cleared when a database is
//!   opened, so from then on every write and every flush of that instance
//!   returns it, even after space was freed. Reads of what is already
//!   durable keep working.
//! - A failed blob write (values past about 128 KiB go to files of their
//!   own) returns before the log buffer's writer count is released, and
//!   sets no global error: that buffer is never written, and every later
//!   flush waits on a condition variable that nothing signals. It blocks
//!   forever, freed space or not, and so does dropping the instance (its
//!   drop flushes).
//! - sled serializes transactions against every other operation with one
//!   reader-writer lock for the whole process. A flush blocked for good
//!   holds it as a reader, so the next transaction waits for it forever,
//!   and every read after that waits behind the transaction.
//!
//! Either way the instance is done for, and the only way back is a new
//! instance on the same files, which must first get sled's file lock from
//! the old one. [`retire`] fences the old instance off its log file (see
//! [`crate::disk::fence`]) and makes it hit its global error, so that its
//! blocked flushes return (releasing the process-wide lock) and it can be
//! dropped without I/O; readers keep reading it meanwhile. Once the disk
//! has room, [`reopen`] opens the database again (sled recovers as after a
//! crash) and fsyncs what it found. Both run on helper threads; the writer
//! keeps refusing writes and polls them.

use super::flush::Flusher;
use crate::handles::Handles;
use crate::{META_NEXT_SEQ, StorageError, u64_value};
use std::path::Path;
use std::sync::mpsc::{self, TryRecvError};
use std::time::{Duration, Instant};

/// How long a fenced instance gets to fail.
const POISON_WAIT: Duration = Duration::from_secs(3);
/// Writes through a fenced instance, each well inside sled's inline limit
/// (about 128 KiB; a larger one would go to a blob file, which the fence
/// does not cover). A few of them fill a log buffer (at most one 512 KiB
/// segment), which sled then writes, fails to write, and remembers.
const POISON_WRITE_BYTES: usize = 64 * 1024;
const POISON_WRITES: usize = 64;
/// Key written through a fenced instance to make it fail; the write can
/// never reach the disk (its descriptor is read-only by then).
const FENCE_KEY: &[u8] = b"outpost:fence";
/// How long to wait for the old instance's file lock to go away (calls
/// still in flight on it hold it).
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Work on a helper thread that the writer polls instead of waiting for.
pub(super) struct Pending<T> {
    result: mpsc::Receiver<T>,
}

impl<T: Send + 'static> Pending<T> {
    pub(super) fn spawn(
        name: &str,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<Self, String> {
        let (done, result) = mpsc::channel();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let _ = done.send(work());
            })
            .map_err(|e| format!("cannot start a thread for {name}: {e}"))?;
        Ok(Self { result })
    }

    /// The outcome, once there is one (`Err` if the work panicked).
    pub(super) fn poll(&self) -> Option<Result<T, String>> {
        match self.result.try_recv() {
            Ok(outcome) => Some(Ok(outcome)),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Err("the helper thread panicked".into())),
        }
    }
}

/// Cuts the failed instance `old` off the files in `db_dir` and makes it
/// fail. Returns `old` back if it could not be made to fail: it must then
/// never be dropped (the drop would block forever), so the writer keeps it.
pub(super) fn retire(db_dir: &Path, old: sled::Db) -> Result<Option<sled::Db>, String> {
    let fenced = crate::disk::fence(&db_dir.join("db"))
        .map_err(|e| format!("cannot fence the failed database off its file: {e}"))?;
    if fenced == 0 {
        return Err(
            "cannot take the failed database's file lock on this platform; restart the node".into(),
        );
    }
    Ok(if poison(&old) { None } else { Some(old) })
}

/// The new instance, ready to replace the old one.
pub(super) struct Reopened {
    pub(super) handles: Handles,
    pub(super) flusher: Flusher,
    /// The next sequence number by what the disk holds.
    pub(super) next_seq: u64,
    /// Bytes of records in the outbox.
    pub(super) outbox_bytes: u64,
}

/// Opens the database in `db_dir` again, once its old instance is retired.
pub(super) fn reopen(db_dir: &Path) -> Result<Reopened, String> {
    let handles = open_when_unlocked(db_dir)?;
    crate::disk::sync_all_under(db_dir)
        .map_err(|e| format!("cannot sync the reopened database: {e}"))?;
    let next_seq = stored_next_seq(&handles).map_err(|e| e.to_string())?;
    let mut outbox_bytes = 0;
    for item in handles.outbox.iter() {
        outbox_bytes += item.map_err(|e| e.to_string())?.1.len() as u64;
    }
    let flusher = Flusher::start(handles.db.clone(), db_dir)
        .map_err(|e| format!("cannot start the flush thread: {e}"))?;
    Ok(Reopened {
        handles,
        flusher,
        next_seq,
        outbox_bytes,
    })
}

/// Makes a fenced instance hit its global error, with writes only (a flush
/// could land its wait on the buffer that is never written): once sled
/// writes a log buffer and fails, it wakes every blocked flush, which then
/// returns the error, and it refuses everything after. True once a write
/// was refused.
fn poison(old: &sled::Db) -> bool {
    let old = old.clone();
    let (done, failed) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("outpost-db-fence".into())
        .spawn(move || {
            let failed = (0..POISON_WRITES).any(|n| {
                // Each value differs: sled skips a set to the same value.
                let mut filler = vec![0u8; POISON_WRITE_BYTES];
                filler[..8].copy_from_slice(&(n as u64).to_be_bytes());
                let refused = old.insert(FENCE_KEY, filler).is_err();
                // sled writes full buffers on its own threads.
                std::thread::sleep(Duration::from_millis(5));
                refused
            });
            let _ = done.send(failed);
        });
    spawned.is_ok() && failed.recv_timeout(POISON_WAIT) == Ok(true)
}

/// Opens the database, retrying while the old instance's lock lingers.
fn open_when_unlocked(db_dir: &Path) -> Result<Handles, String> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match Handles::open(db_dir) {
            Ok(handles) => return Ok(handles),
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(format!("cannot reopen the database: {e}")),
        }
    }
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
