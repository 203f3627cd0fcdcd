//! Keeping the cloud's sled database honest when its disk fills up or
//! fails: a free-space guard, a flush on its own thread that is waited for
//! only so long, and, after sled failed, retiring its instance and
//! reopening the database in place. [`crate::sled_store`] runs every write
//! through a `Guard`.
//!
//! This is a trimmed copy of what the edge's database does (outpost-store:
//! `disk.rs`, `committer/flush.rs`, `committer/recovery.rs`; read their
//! docs for the why in full), because the cloud may not depend on the
//! edge's database crate. Keep the two in step; if they grow, they belong
//! in one small crate of their own.
//!
//! What sled 0.34 does after a failed write, in short:
//! - a failed log write (ENOSPC) becomes the instance's *global error*:
//!   every later write and flush of that instance fails, even once space
//!   is freed, until the database is opened again; reads keep working;
//! - a failed blob write (values past about 128 KiB have files of their
//!   own) leaves a log buffer that is never written, so every later flush
//!   blocks forever, and so does dropping the instance (its drop flushes);
//! - one reader-writer lock for the whole process orders transactions
//!   against everything else, so a flush blocked for good stalls the next
//!   transaction, and every read behind it.
//!
//! So: nothing waits for a flush longer than
//! [`StorageOptions::flush_timeout`], no write touches sled while it is
//! failing (a transaction then could freeze the readers), and the way back
//! from a failed instance is a new one on the same files, once the old one
//! is fenced off them and made to fail so that its stuck flushes return.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

/// Default [`StorageOptions::min_free_bytes`]: 64 MiB, as on the edge.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 64 * 1024 * 1024;
/// Default [`StorageOptions::flush_timeout`]: 5 s.
pub const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Default [`StorageOptions::probe_interval`]: 1 s.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Default [`StorageOptions::stall_reopen_after`]: 10 s.
pub const DEFAULT_STALL_REOPEN_AFTER: Duration = Duration::from_secs(10);

/// A reopened database needs at least this much room (sled writes in
/// 512 KiB segments), whatever [`StorageOptions::min_free_bytes`] says.
const REOPEN_MIN_FREE_BYTES: u64 = 1024 * 1024;
/// How long a fenced instance gets to fail.
const POISON_WAIT: Duration = Duration::from_secs(3);
/// Writes through a fenced instance, each well inside sled's inline limit
/// (a blob would go to a file the fence does not cover); a few fill a log
/// buffer, which sled then fails to write and remembers.
const POISON_WRITE_BYTES: usize = 64 * 1024;
const POISON_WRITES: usize = 64;
/// Key (in the unused default tree) written through a fenced instance.
const FENCE_KEY: &[u8] = b"outpost:fence";
/// How long to wait for a retired instance's file lock to go away.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// How the cloud's database is run on a full or failing disk. [`Default`]
/// is what `outpost cloud` uses, bar `--min-free-bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageOptions {
    /// Writes are refused (503, not applied) while the database's
    /// filesystem has less than this free, and resume by themselves once it
    /// has this much again. Stopping short of a full disk keeps sled from
    /// meeting ENOSPC, after which its instance never writes again. 0 turns
    /// the check off.
    pub min_free_bytes: u64,
    /// How long a write waits for its flush. A flush that fails, or has not
    /// finished by then, answers 503 (the outcome is unknown; a redelivered
    /// batch is harmless) and stops writes until storage recovers.
    pub flush_timeout: Duration,
    /// How often a failing database checks whether it can take writes
    /// again (free space, a stalled flush that finished, a reopen).
    pub probe_interval: Duration,
    /// A flush still running this long after it began, once the disk has
    /// room, is given up on: the database is reopened as after a crash.
    pub stall_reopen_after: Duration,
}

impl Default for StorageOptions {
    fn default() -> Self {
        Self {
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            flush_timeout: DEFAULT_FLUSH_TIMEOUT,
            probe_interval: DEFAULT_PROBE_INTERVAL,
            stall_reopen_after: DEFAULT_STALL_REOPEN_AFTER,
        }
    }
}

/// A snapshot of whether the cloud's database accepts writes. Reads
/// (feed, events, conflicts, keys, credentials) go on while it does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageHealth {
    /// Whether writes are accepted. False while the disk is (nearly) full,
    /// after a flush failed or stalled, and while the database is being
    /// reopened; true again by itself once writes resume.
    pub writable: bool,
    /// When writes stopped being accepted; `None` while writable.
    pub failing_since: Option<SystemTime>,
    /// The current failure, or the last one once writable again; `None` if
    /// nothing failed since start.
    pub last_error: Option<String>,
    /// Bytes free for the database on its filesystem (`None`: unknown).
    pub free_bytes: Option<u64>,
    /// Writes refused unapplied (503) while failing, since start.
    pub refused: u64,
    /// Writes answered 503 after their flush failed or stalled (they may
    /// be on disk; a redelivery is harmless), since start.
    pub outcome_unknown: u64,
    /// Times the database was reopened to recover, since start.
    pub reopens: u64,
}

#[derive(Debug, Default)]
struct Now {
    failing_since: Option<SystemTime>,
    last_error: Option<String>,
}

/// The writer's side of [`StorageHealth`]; anyone may read it.
#[derive(Debug, Default)]
pub(crate) struct HealthCell {
    now: Mutex<Now>,
    refused: AtomicU64,
    outcome_unknown: AtomicU64,
    reopens: AtomicU64,
}

impl HealthCell {
    fn now(&self) -> std::sync::MutexGuard<'_, Now> {
        // The fields stay consistent whatever a panicking holder did.
        self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Why writes are refused, while they are.
    pub(crate) fn refusing(&self) -> Option<String> {
        let now = self.now();
        now.failing_since?;
        Some(
            now.last_error
                .clone()
                .unwrap_or_else(|| "storage is failing".into()),
        )
    }

    fn failing(&self, reason: &str) {
        let mut now = self.now();
        now.failing_since.get_or_insert_with(SystemTime::now);
        now.last_error = Some(reason.to_owned());
    }

    fn recovered(&self) {
        self.now().failing_since = None;
    }

    pub(crate) fn count_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    fn count_unknown(&self) {
        self.outcome_unknown.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, free_bytes: Option<u64>) -> StorageHealth {
        let now = self.now();
        StorageHealth {
            writable: now.failing_since.is_none(),
            failing_since: now.failing_since,
            last_error: now.last_error.clone(),
            free_bytes,
            refused: self.refused.load(Ordering::Relaxed),
            outcome_unknown: self.outcome_unknown.load(Ordering::Relaxed),
            reopens: self.reopens.load(Ordering::Relaxed),
        }
    }
}

/// Bytes an unprivileged writer may still use on the filesystem holding
/// `path`; `None` if the filesystem cannot say.
pub(crate) fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `stat` is large enough for
    // statvfs to fill in; it is read only when the call succeeded.
    let stat = unsafe {
        if libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) != 0 {
            return None;
        }
        stat.assume_init()
    };
    // The field types differ between platforms (u32 on some 32-bit ones).
    #[allow(clippy::unnecessary_cast)]
    Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

/// fsyncs every file and directory under `dir`: after a reopen, what the
/// new instance recovered may be pages the old one wrote and never synced.
fn sync_all_under(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let result = if entry.file_type()?.is_dir() {
            sync_all_under(&path)
        } else {
            File::open(&path).and_then(|f| f.sync_all())
        };
        match result {
            // sled removes blobs and old snapshots as it goes.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    File::open(dir)?.sync_all()
}

/// Points every descriptor this process holds on `file` (a sled instance's
/// log file) at a new read-only description of the same file; returns how
/// many it changed. The old instance keeps reading, every write it tries
/// fails, and sled's file lock (which belongs to the old description) goes
/// away, so a new instance can open the files as after a crash.
#[cfg(target_os = "linux")]
fn fence(file: &Path) -> io::Result<usize> {
    use std::os::fd::{AsRawFd, RawFd};
    let target = std::fs::canonicalize(file)?;
    let read_only = File::open(&target)?;
    let mut fenced = 0;
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let entry = entry?;
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<RawFd>() else {
            continue;
        };
        if fd == read_only.as_raw_fd()
            || std::fs::read_link(entry.path()).ok() != Some(target.clone())
        {
            continue;
        }
        // SAFETY: dup3 replaces what descriptor `fd` refers to, atomically,
        // with another description of the very same file; its owner (sled's
        // `File`) still owns and eventually closes `fd`. No memory is
        // involved, and no other file is ever put behind `fd`.
        if unsafe { libc::dup3(read_only.as_raw_fd(), fd, libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        fenced += 1;
    }
    Ok(fenced)
}

/// Without /proc there is no finding sled's descriptor: nothing is fenced.
#[cfg(not(target_os = "linux"))]
fn fence(_file: &Path) -> io::Result<usize> {
    Ok(0)
}

/// One sled instance's flush thread; it ends when this is dropped and its
/// current flush (if any) returns.
struct Flusher {
    start: mpsc::Sender<()>,
    done: mpsc::Receiver<Result<(), String>>,
    /// A flush was started and has not been waited out yet.
    running: bool,
}

impl Flusher {
    fn start(db: sled::Db, db_dir: &Path) -> io::Result<Self> {
        let (start, requests) = mpsc::channel::<()>();
        let (finished, done) = mpsc::channel();
        #[cfg(test)]
        let db_dir = db_dir.to_owned();
        #[cfg(not(test))]
        let _ = db_dir;
        std::thread::Builder::new()
            .name("outpost-cloud-flush".into())
            .spawn(move || {
                while requests.recv().is_ok() {
                    #[cfg(test)]
                    gate::pass(&db_dir);
                    let result = db.flush().map(drop).map_err(|e| e.to_string());
                    if finished.send(result).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Self {
            start,
            done,
            running: false,
        })
    }

    /// Flushes everything written so far, waiting at most `bound`; `None`
    /// if it is still running then.
    fn flush(&mut self, bound: Duration) -> Option<Result<(), String>> {
        if !self.running {
            if self.start.send(()).is_err() {
                return Some(Err("the flush thread stopped".into()));
            }
            self.running = true;
        }
        self.wait(bound)
    }

    /// Waits at most `bound` more for the flush in progress.
    fn wait(&mut self, bound: Duration) -> Option<Result<(), String>> {
        if !self.running {
            return Some(Ok(()));
        }
        let result = match self.done.recv_timeout(bound) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => return None,
            Err(RecvTimeoutError::Disconnected) => Err("the flush thread stopped".into()),
        };
        self.running = false;
        Some(result)
    }
}

/// Work on a helper thread, polled instead of waited for.
struct Pending<T> {
    result: mpsc::Receiver<T>,
}

impl<T: Send + 'static> Pending<T> {
    fn spawn(name: &str, work: impl FnOnce() -> T + Send + 'static) -> Result<Self, String> {
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
    fn poll(&self) -> Option<Result<T, String>> {
        match self.result.try_recv() {
            Ok(outcome) => Some(Ok(outcome)),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Err("the helper thread panicked".into())),
        }
    }
}

/// Cuts the failed instance `old` off its log file in `db_dir` and makes
/// it fail. Returns `old` back if it could not be made to fail: it must
/// then never be dropped (the drop would block forever).
fn retire(db_dir: &Path, old: sled::Db) -> Result<Option<sled::Db>, String> {
    let fenced = fence(&db_dir.join("db"))
        .map_err(|e| format!("cannot fence the failed database off its file: {e}"))?;
    if fenced == 0 {
        return Err(
            "cannot take the failed database's file lock on this platform; restart the cloud"
                .into(),
        );
    }
    Ok(if poison(&old) { None } else { Some(old) })
}

/// Makes a fenced instance hit its global error with writes only (a flush
/// could wait on the buffer that is never written): once sled fails to
/// write a log buffer, it wakes every blocked flush, which then returns
/// the error. True once a write was refused.
fn poison(old: &sled::Db) -> bool {
    let old = old.clone();
    let (done, failed) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("outpost-cloud-fence".into())
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

/// How the owner of a [`Guard`] opens its database again: the new
/// instance's handles `R` (the owner installs them) and its sled database.
pub(crate) type Reopen<R> = Arc<dyn Fn(&Path) -> Result<(R, sled::Db), String> + Send + Sync>;

/// What a probe found that the guard's owner must act on.
pub(crate) enum Recovered<R> {
    /// A stalled flush finished after all: everything written is durable.
    Flushed,
    /// The database was reopened: install these handles (writes resumed).
    Reopened(R),
}

/// Where a failing guard stands.
enum Stage<R> {
    /// The free-space guard refused writes before sled saw them.
    LowSpace,
    /// The flush that began at `since` is still running past the bound.
    Stalled { since: Instant },
    /// sled failed (`cause`); its instance is being retired.
    Retiring {
        cause: String,
        retiring: Pending<Result<Option<sled::Db>, String>>,
    },
    /// The failed instance is retired; reopens once the disk has room.
    Broken { cause: String },
    /// The failed instance could not be retired, so no new one may be
    /// opened (a flush of the old one may hold sled's process-wide lock):
    /// only a restart recovers.
    Wedged,
    /// A new instance is being opened on a helper thread.
    Reopening {
        cause: String,
        reopening: Pending<Result<(R, sled::Db, Flusher), String>>,
    },
}

/// Every write of one sled database goes through its guard (one at a
/// time: the owner keeps it behind a lock): admitted, then flushed within
/// a bound; on failure the guard refuses writes and works its way back
/// (see the module docs), once per probe by the owner.
pub(crate) struct Guard<R> {
    /// The current instance (what gets flushed, or retired).
    db: sled::Db,
    flusher: Flusher,
    /// The sled database's directory.
    db_dir: PathBuf,
    options: StorageOptions,
    health: Arc<HealthCell>,
    reopen: Reopen<R>,
    /// Set while writes are refused.
    stage: Option<Stage<R>>,
    /// Failed instances that could not be shut down: dropping one would
    /// block forever, so they are kept (and forgotten on drop).
    undroppable: Vec<sled::Db>,
    /// Failed reopen attempts, for throttled reporting.
    reopen_failures: u64,
}

impl<R> Drop for Guard<R> {
    fn drop(&mut self) {
        // Dropping a wedged instance flushes, which never returns.
        for stuck in self.undroppable.drain(..) {
            std::mem::forget(stuck);
        }
    }
}

impl<R: Send + 'static> Guard<R> {
    /// Guards `db`, the database in `db_dir`.
    pub(crate) fn new(
        db: sled::Db,
        db_dir: PathBuf,
        options: StorageOptions,
        health: Arc<HealthCell>,
        reopen: Reopen<R>,
    ) -> io::Result<Self> {
        Ok(Self {
            flusher: Flusher::start(db.clone(), &db_dir)?,
            db,
            db_dir,
            options,
            health,
            reopen,
            stage: None,
            undroppable: Vec::new(),
            reopen_failures: 0,
        })
    }

    /// `Err(reason)`: the write must be refused, not applied (writes are
    /// failing, or the disk is nearly full, which starts a failure).
    pub(crate) fn admit(&mut self) -> Result<(), String> {
        if self.stage.is_some() {
            let reason = self.health.refusing().unwrap_or_default();
            self.health.count_refused();
            return Err(reason);
        }
        if let Err(reason) = self.room(self.options.min_free_bytes) {
            self.health.count_refused();
            self.fail(Stage::LowSpace, reason.clone());
            return Err(reason);
        }
        Ok(())
    }

    /// Makes everything written durable. `Err(reason)`: the flush failed or
    /// did not finish within the bound; what was written may or may not be
    /// on disk, and writes are refused from now on.
    pub(crate) fn flush(&mut self) -> Result<(), String> {
        let began = Instant::now();
        match self.flusher.flush(self.options.flush_timeout) {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => {
                let reason = format!("the database flush failed: {e}");
                self.health.count_unknown();
                self.sled_failed_uncounted(reason.clone());
                Err(reason)
            }
            None => {
                let reason = format!(
                    "the database flush did not finish within {:?}",
                    self.options.flush_timeout
                );
                self.health.count_unknown();
                self.fail(Stage::Stalled { since: began }, reason.clone());
                Err(reason)
            }
        }
    }

    /// sled failed a write (`cause`): that write's outcome is unknown, and
    /// the instance never writes again, so it is retired at once.
    pub(crate) fn sled_failed(&mut self, cause: String) {
        self.health.count_unknown();
        self.sled_failed_uncounted(cause);
    }

    fn sled_failed_uncounted(&mut self, cause: String) {
        let (stage, reason) = self.retire(cause);
        self.fail(stage, reason);
    }

    /// Whether writes are refused now.
    pub(crate) fn failing(&self) -> bool {
        self.stage.is_some()
    }

    /// A failing guard looks for a way back; call it once per
    /// [`StorageOptions::probe_interval`] while [`Guard::failing`].
    pub(crate) fn probe(&mut self) -> Option<Recovered<R>> {
        let stage = self.stage.take()?;
        let reason = self.health.refusing().unwrap_or_default();
        let mut recovered = None;
        let (stage, reason) = match stage {
            Stage::LowSpace => match self.room(self.options.min_free_bytes) {
                Ok(()) => {
                    self.resume("the disk has room again");
                    return None;
                }
                Err(short) => (Stage::LowSpace, short),
            },
            Stage::Stalled { since } => match self.flusher.wait(Duration::ZERO) {
                Some(Ok(())) => {
                    // What was answered "unknown" made it after all.
                    match self.room(self.options.min_free_bytes) {
                        Ok(()) => {
                            self.resume("the stalled flush finished");
                            return Some(Recovered::Flushed);
                        }
                        Err(short) => {
                            recovered = Some(Recovered::Flushed);
                            (Stage::LowSpace, short)
                        }
                    }
                }
                Some(Err(e)) => self.retire(format!("the database flush failed: {e}")),
                None if since.elapsed() >= self.options.stall_reopen_after => self.retire(reason),
                None => (Stage::Stalled { since }, reason),
            },
            Stage::Retiring { cause, retiring } => match retiring.poll() {
                None => (Stage::Retiring { cause, retiring }, reason),
                Some(outcome) => match outcome.and_then(|retired| retired) {
                    Ok(None) => self.start_reopen(cause),
                    Ok(Some(undroppable)) => {
                        self.undroppable.push(undroppable);
                        self.wedged(&cause, "the failed database instance did not shut down")
                    }
                    Err(e) => self.wedged(&cause, &e),
                },
            },
            Stage::Broken { cause } => self.start_reopen(cause),
            Stage::Wedged => (Stage::Wedged, reason),
            Stage::Reopening { cause, reopening } => match reopening.poll() {
                None => (Stage::Reopening { cause, reopening }, reason),
                Some(Ok(Ok((handles, db, flusher)))) => {
                    // The old flush thread ends once its flush returns (the
                    // retired instance's failure released it if stuck).
                    self.db = db;
                    self.flusher = flusher;
                    self.health.reopens.fetch_add(1, Ordering::Relaxed);
                    self.reopen_failures = 0;
                    self.resume("the database was reopened");
                    return Some(Recovered::Reopened(handles));
                }
                Some(Ok(Err(e)) | Err(e)) => {
                    self.reopen_failures += 1;
                    if self.reopen_failures.is_power_of_two() {
                        tracing::warn!(target: "outpost::cloud::store", error = %e, failures = self.reopen_failures, "reopening the database failed; trying again");
                    }
                    let reason = format!("{cause}; reopening the database failed: {e}");
                    (Stage::Broken { cause }, reason)
                }
            },
        };
        self.health.failing(&reason);
        self.stage = Some(stage);
        recovered
    }

    /// Stops accepting writes (or, failing already, moves to `stage`).
    fn fail(&mut self, stage: Stage<R>, reason: String) {
        if self.stage.is_none() {
            tracing::error!(target: "outpost::cloud::store", reason = %reason, "the database stopped accepting writes (ingests answer 503); it resumes by itself once it can");
        } else {
            tracing::warn!(target: "outpost::cloud::store", reason = %reason, "the database still refuses writes");
        }
        self.health.failing(&reason);
        self.stage = Some(stage);
    }

    fn resume(&mut self, why: &str) {
        tracing::warn!(target: "outpost::cloud::store", why, "the database accepts writes again");
        self.health.recovered();
        self.stage = None;
    }

    /// `Err(reason)` while the database's filesystem has less than `need`
    /// bytes free. A filesystem that cannot say does not stop writes.
    fn room(&self, need: u64) -> Result<(), String> {
        if need == 0 {
            return Ok(());
        }
        match free_bytes(&self.db_dir) {
            Some(free) if free < need => Err(format!(
                "the disk is nearly full ({free} bytes free; writes need {need})"
            )),
            _ => Ok(()),
        }
    }

    /// Starts retiring the current instance on a helper thread.
    fn retire(&mut self, cause: String) -> (Stage<R>, String) {
        let (db_dir, old) = (self.db_dir.clone(), self.db.clone());
        match Pending::spawn("outpost-cloud-retire", move || retire(&db_dir, old)) {
            Ok(retiring) => {
                let reason = format!("{cause}; shutting the failed database down");
                (Stage::Retiring { cause, retiring }, reason)
            }
            Err(e) => {
                let reason = format!("{cause}; {e}");
                (Stage::Broken { cause }, reason)
            }
        }
    }

    fn wedged(&self, cause: &str, why: &str) -> (Stage<R>, String) {
        let reason = format!("{cause}; {why}; restart the cloud to recover");
        tracing::error!(target: "outpost::cloud::store", reason = %reason, "the database cannot recover by itself");
        (Stage::Wedged, reason)
    }

    /// Starts reopening the database if the disk has room; otherwise waits
    /// (a new instance would fail the same way).
    fn start_reopen(&mut self, cause: String) -> (Stage<R>, String) {
        let need = self.options.min_free_bytes.max(REOPEN_MIN_FREE_BYTES);
        if let Err(short) = self.room(need) {
            let reason = format!("{cause}; waiting for free space: {short}");
            return (Stage::Broken { cause }, reason);
        }
        tracing::warn!(target: "outpost::cloud::store", cause = %cause, "reopening the database");
        let (db_dir, reopen) = (self.db_dir.clone(), self.reopen.clone());
        let work = move || {
            let (handles, db) = open_when_unlocked(&db_dir, &reopen)?;
            sync_all_under(&db_dir)
                .map_err(|e| format!("cannot sync the reopened database: {e}"))?;
            let flusher = Flusher::start(db.clone(), &db_dir)
                .map_err(|e| format!("cannot start the flush thread: {e}"))?;
            Ok((handles, db, flusher))
        };
        match Pending::spawn("outpost-cloud-reopen", work) {
            Ok(reopening) => {
                let reason = format!("{cause}; reopening the database");
                (Stage::Reopening { cause, reopening }, reason)
            }
            Err(e) => {
                let reason = format!("{cause}; {e}");
                (Stage::Broken { cause }, reason)
            }
        }
    }
}

/// Opens the database, retrying while the retired instance's lock lingers
/// (calls still in flight on it hold it).
fn open_when_unlocked<R>(db_dir: &Path, open: &Reopen<R>) -> Result<(R, sled::Db), String> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match open(db_dir) {
            Ok(opened) => return Ok(opened),
            Err(e) if e.contains("could not acquire lock") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(format!("cannot reopen the database: {e}")),
        }
    }
}

/// A value one holder at a time may use, and that a would-be holder waits
/// for only so long: a write stuck inside sled must not make every later
/// one wait with it.
pub(crate) struct Turnstile<T> {
    slot: Mutex<Option<T>>,
    returned: Condvar,
}

/// The value of a [`Turnstile`], while held; it goes back on drop.
pub(crate) struct Turn<'a, T> {
    turnstile: &'a Turnstile<T>,
    value: Option<T>,
}

impl<T> Turnstile<T> {
    pub(crate) fn new(value: T) -> Self {
        Self {
            slot: Mutex::new(Some(value)),
            returned: Condvar::new(),
        }
    }

    /// The value, once it is free, waiting at most `within`.
    pub(crate) fn enter(&self, within: Duration) -> Option<Turn<'_, T>> {
        let deadline = Instant::now() + within;
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(value) = slot.take() {
                return Some(Turn {
                    turnstile: self,
                    value: Some(value),
                });
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            slot = self
                .returned
                .wait_timeout(slot, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

impl<T> std::ops::Deref for Turn<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.value.as_ref().expect("held until drop")
    }
}

impl<T> std::ops::DerefMut for Turn<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.value.as_mut().expect("held until drop")
    }
}

impl<T> Drop for Turn<'_, T> {
    fn drop(&mut self) {
        let mut slot = self
            .turnstile
            .slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *slot = self.value.take();
        self.turnstile.returned.notify_one();
    }
}

/// Test hook: holds a database's next flush, as a disk that stops
/// answering would.
#[cfg(test)]
pub(crate) mod gate {
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Condvar, Mutex};

    static GATES: Mutex<Vec<(PathBuf, Arc<Gate>)>> = Mutex::new(Vec::new());

    /// Holds the flush it caught until released.
    #[derive(Default)]
    pub(crate) struct Gate {
        /// (a flush was caught, released)
        state: Mutex<(bool, bool)>,
        changed: Condvar,
    }

    impl Gate {
        pub(crate) fn release(&self) {
            self.state.lock().unwrap().1 = true;
            self.changed.notify_all();
        }
    }

    /// The next flush of the sled database in `db_dir` waits until the
    /// returned gate is released; later flushes pass.
    pub(crate) fn hold_next_flush(db_dir: &Path) -> Arc<Gate> {
        let gate = Arc::new(Gate::default());
        GATES
            .lock()
            .unwrap()
            .push((db_dir.to_owned(), gate.clone()));
        gate
    }

    pub(super) fn pass(db_dir: &Path) {
        let gate = {
            let mut gates = GATES.lock().unwrap();
            let Some(at) = gates.iter().position(|(dir, _)| dir == db_dir) else {
                return;
            };
            gates.remove(at).1
        };
        let mut state = gate.state.lock().unwrap();
        state.0 = true;
        while !state.1 {
            state = gate.changed.wait(state).unwrap();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turnstile_lets_one_in_and_others_wait_only_so_long() {
        let turnstile = Turnstile::new(1);
        let mut held = turnstile.enter(Duration::ZERO).expect("free");
        *held += 1;
        let started = Instant::now();
        assert!(turnstile.enter(Duration::from_millis(50)).is_none());
        assert!(started.elapsed() >= Duration::from_millis(50));
        drop(held);
        assert_eq!(*turnstile.enter(Duration::ZERO).expect("back"), 2);
    }

    #[test]
    fn free_space_is_known_for_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).is_some_and(|free| free > 0));
        assert_eq!(free_bytes(&dir.path().join("missing")), None);
    }
}
