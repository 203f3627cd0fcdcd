//! Reopening a database after sled failed, without a restart.
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
//! the old one. `retire` fences the old instance off its log file (see
//! [`crate::fence`]) and makes it hit its global error, so that its
//! blocked flushes return (releasing the process-wide lock) and it can be
//! dropped without I/O; readers keep reading it meanwhile. Once the disk
//! has room, the [`crate::Guard`] opens the database again (sled recovers
//! as after a crash, see `open_when_unlocked`) and fsyncs what it found.
//! Both run on helper threads (`Pending`); the writer keeps refusing
//! writes and polls them.

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
/// Key (in the unused default tree) written through a fenced instance to
/// make it fail; the write can never reach the disk (its descriptor is
/// read-only by then).
const FENCE_KEY: &[u8] = b"outpost:fence";
/// How long to wait for the old instance's file lock to go away (calls
/// still in flight on it hold it).
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Why opening a database again failed (what the owner's reopen returns).
#[derive(Debug, thiserror::Error)]
pub enum ReopenError {
    /// sled would not open the database: tried again while the retired
    /// instance's file lock lingers, then reported as "cannot reopen the
    /// database: ...".
    #[error("{0}")]
    Open(String),
    /// The database opened, but what the owner reads from it failed;
    /// reported as it is.
    #[error("{0}")]
    Load(String),
}

/// Work on a helper thread that the writer polls instead of waiting for.
pub(crate) struct Pending<T> {
    result: mpsc::Receiver<T>,
}

impl<T: Send + 'static> Pending<T> {
    pub(crate) fn spawn(
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
    pub(crate) fn poll(&self) -> Option<Result<T, String>> {
        match self.result.try_recv() {
            Ok(outcome) => Some(Ok(outcome)),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Err("the helper thread panicked".into())),
        }
    }
}

/// Cuts the failed instance `old` off the files in `db_dir` and makes it
/// fail (on a thread named `fence_thread`). Returns `old` back if it could
/// not be made to fail: it must then never be dropped (the drop would
/// block forever), so the guard keeps it. `restart` is what to restart
/// ("the node", "the cloud") where there is no fencing.
pub(crate) fn retire(
    db_dir: &Path,
    old: sled::Db,
    fence_thread: &str,
    restart: &str,
) -> Result<Option<sled::Db>, String> {
    let fenced = crate::disk::fence(&db_dir.join("db"))
        .map_err(|e| format!("cannot fence the failed database off its file: {e}"))?;
    if fenced == 0 {
        return Err(format!(
            "cannot take the failed database's file lock on this platform; restart {restart}"
        ));
    }
    Ok(if poison(&old, fence_thread) {
        None
    } else {
        Some(old)
    })
}

/// Makes a fenced instance hit its global error, with writes only (a flush
/// could land its wait on the buffer that is never written): once sled
/// writes a log buffer and fails, it wakes every blocked flush, which then
/// returns the error, and it refuses everything after. True once a write
/// was refused.
fn poison(old: &sled::Db, thread: &str) -> bool {
    let old = old.clone();
    let (done, failed) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name(thread.into())
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

/// Opens the database with `open`, retrying while the retired instance's
/// lock lingers.
pub(crate) fn open_when_unlocked<T>(
    db_dir: &Path,
    open: impl Fn(&Path) -> Result<T, ReopenError>,
) -> Result<T, String> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match open(db_dir) {
            Ok(opened) => return Ok(opened),
            Err(ReopenError::Open(e))
                if e.contains("could not acquire lock") && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(ReopenError::Open(e)) => return Err(format!("cannot reopen the database: {e}")),
            Err(ReopenError::Load(e)) => return Err(e),
        }
    }
}
