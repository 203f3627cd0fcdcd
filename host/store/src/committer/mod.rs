//! The node's single writer. Writes queue up while a flush is in progress;
//! the next round applies all of them (each in its own sled transaction)
//! and makes them durable with one fsync: group commit. Being the only
//! writer also makes sequence numbers and HLC stamps trivially ordered.
//!
//! This module is the loop; what each write does is in [`ops`] (the KV
//! operations' semantics), [`kv`] (a local write and its outbox record in
//! one transaction), [`enqueue`] (events, idempotency) and [`remote`]
//! (other nodes' writes, last-writer-wins).
//!
//! # When the disk fills up or fails
//!
//! Nobody hears "done" before the group's flush succeeded. The flush runs
//! on its own thread (module `flush`) and the writer waits for it at most
//! [`StorageOptions::flush_timeout`], because sled's flush can block
//! forever after a failed write (module `recovery` has what sled does). Every
//! write of a group whose flush failed or did not finish in time, or in
//! which sled reported an I/O error, is answered
//! [`StorageError::OutcomeUnknown`]: it may be on disk or not.
//!
//! From then on the writer is *failing*: each write is refused with
//! [`StorageError::Unavailable`] before it touches sled, so it certainly
//! was not applied, and the node's [`crate::StorageHealth`] says so. Once
//! per [`StorageOptions::probe_interval`] the writer looks for a way back:
//! - the free-space guard refused a group before sled saw it: resume once
//!   the disk has [`StorageOptions::min_free_bytes`] free again;
//! - a stalled flush finished after all: its group is durable; resume;
//! - sled failed, or the flush is still stuck after
//!   [`StorageOptions::stall_reopen_after`]: a sled instance that failed a
//!   write never writes again, so it is retired at once (fenced off its
//!   files and made to fail, on a helper thread; readers keep reading it),
//!   and once the disk has room the database is reopened, on a helper
//!   thread too, and readers switch to the new handles. If the old
//!   instance cannot be retired, nothing more is tried: writes stay
//!   refused until a restart.
//!
//! Sequence numbers never go back: a failed group's records may or may not
//! be on disk, so after a reopen the next number is the larger of what the
//! disk holds and what this writer handed out, and the outbox counts as
//! durable up to it only after the reopened files were fsynced.

mod enqueue;
mod flush;
mod kv;
pub mod ops;
mod recovery;
mod remote;
#[cfg(test)]
mod tests;

pub use ops::{Rejection, WriteOp, Written};

use crate::handles::Handles;
use crate::health::HealthCell;
use crate::{META_HLC, StorageError, StorageOptions, u64_value};
use arc_swap::ArcSwap;
use flush::Flusher;
use outpost_wire::hlc::Hlc;
use recovery::{Pending, Reopened};
use sled::Tree;
use sled::transaction::ConflictableTransactionError;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, oneshot};

/// What the writer shares with readers of the outbox.
#[derive(Debug, Default)]
pub struct Progress {
    /// Signalled when durable records were added to the outbox.
    pub outbox_grew: Notify,
    /// Every outbox record below this sequence number is on disk. The
    /// shipper never reads past it: a record the cloud has seen must
    /// survive any crash, or its sequence number could be reused.
    pub durable_seq: AtomicU64,
    /// Bytes of records in the outbox (approximate between a crash and the
    /// next start, when it is recounted).
    pub outbox_bytes: AtomicU64,
}

/// Most writes applied under one flush.
const MAX_GROUP: usize = 1024;

/// A reopened database needs at least this much room (sled writes in
/// 512 KiB segments), whatever [`StorageOptions::min_free_bytes`] says.
const REOPEN_MIN_FREE_BYTES: u64 = 1024 * 1024;

/// What a job asks of the writer.
enum Work {
    /// Apply the write and make it durable.
    Op(WriteOp),
    /// Make everything applied so far durable (writes made outside the
    /// writer ride along with the next flush).
    Sync,
    /// Run this against the database as a write of its own (see
    /// [`Handle::run`]); it returns why if sled failed to write.
    Run(WriterWork),
}

type WriterWork = Box<dyn FnOnce(&Handles) -> Option<String> + Send>;

struct Job {
    work: Work,
    reply: oneshot::Sender<Result<Written, StorageError>>,
}

/// Submits writes to the writer thread.
///
/// The queue behind it is unbounded on purpose, because what feeds it is
/// bounded elsewhere: every submitter awaits its answer before it can
/// submit again, and the submitters are guests in a request (at most
/// `max-instances` at once, by the edge's admission slots; a p2 guest
/// makes one host call at a time) plus the feed puller (one batch at a
/// time). So at most `max-instances + 1` writes wait here, and none waits
/// long: the writer answers every write within its group's work plus
/// [`StorageOptions::flush_timeout`], and refuses at once while failing.
pub struct Handle {
    jobs: mpsc::Sender<Job>,
}

impl Handle {
    /// Queues `op` and waits until it is durable (or refused, or its
    /// outcome is unknown: see [`StorageError`]).
    pub async fn submit(&self, op: WriteOp) -> Result<Written, StorageError> {
        self.send(Work::Op(op)).await
    }

    /// Waits until everything applied so far is durable; answers like a
    /// write.
    pub async fn sync(&self) -> Result<(), StorageError> {
        self.send(Work::Sync).await.map(drop)
    }

    /// Runs `work` on the writer thread as one write of a group, and
    /// returns its result once the group is durable. For writes the
    /// committer has no [`WriteOp`] for (quarantining outbox records):
    /// sled runs a transaction only when no flush is in progress anywhere
    /// in the process, so a transaction outside the writer waits behind a
    /// flush stuck on a failing disk, and every read then waits behind it.
    /// On the writer it is refused like any write while the disk fails.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Handles) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let (done, result) = oneshot::channel();
        self.send(Work::Run(Box::new(move |handles| {
            let outcome = work(handles);
            let failed = io_failure(&outcome);
            let _ = done.send(outcome);
            failed
        })))
        .await?;
        result.await.map_err(|_| StorageError::Stopped)?
    }

    async fn send(&self, work: Work) -> Result<Written, StorageError> {
        let (reply, result) = oneshot::channel();
        self.jobs
            .send(Job { work, reply })
            .map_err(|_| StorageError::Stopped)?;
        // The writer took the job, so it may have applied it before dying.
        result.await.map_err(|_| {
            StorageError::OutcomeUnknown("the database writer stopped before answering".into())
        })?
    }
}

/// Where a failing writer stands.
enum Stage {
    /// The free-space guard refused writes before sled saw them; sled is
    /// fine. Resumes once the disk has room.
    LowSpace,
    /// The flush that began at `since` is still running past the bound.
    Stalled { since: Instant },
    /// sled failed (`cause`); its instance is being fenced off its files
    /// and made to fail on a helper thread (see [`recovery::retire`]).
    Retiring {
        cause: String,
        retiring: Pending<Result<Option<sled::Db>, String>>,
    },
    /// The failed instance is retired (readers still read it). Reopens
    /// once the disk has room.
    Broken { cause: String },
    /// The failed instance could not be retired, so a new one must not be
    /// opened: a flush of the old one may still hold sled's process-wide
    /// lock, which would block the new one's writes for good. Only a
    /// restart recovers; writes are refused until then.
    Wedged,
    /// A new instance is being opened on a helper thread.
    Reopening {
        cause: String,
        reopening: Pending<Result<Reopened, String>>,
    },
}

struct Failure {
    stage: Stage,
    /// What every refused write hears, and health's `last_error`.
    reason: String,
    next_probe: Instant,
}

struct Committer {
    /// The current sled instance and the trees the writes use; replaced
    /// together with `live` on a reopen.
    db: sled::Db,
    meta: Tree,
    outbox: Tree,
    /// Idempotency keys of enqueued events: `topic \0 key` -> event id.
    idempotency: Tree,
    /// What readers load (see [`crate::Storage::handles`]).
    live: Arc<ArcSwap<Handles>>,
    flusher: Flusher,
    /// The sled database's directory (`DATA/db`).
    db_dir: PathBuf,
    node_id: String,
    hlc: Hlc,
    next_seq: u64,
    progress: Arc<Progress>,
    /// Most bytes of records the outbox may hold.
    max_outbox_bytes: u64,
    /// Writes refused for a full outbox, for throttled reporting.
    outbox_full_refusals: u64,
    min_free_bytes: u64,
    flush_timeout: Duration,
    probe_interval: Duration,
    stall_reopen_after: Duration,
    health: Arc<HealthCell>,
    /// Set while writes are refused.
    failure: Option<Failure>,
    /// Failed instances that could not be shut down: dropping one would
    /// block forever, so they stay here for good.
    undroppable: Vec<sled::Db>,
    /// Failed reopen attempts, for throttled reporting.
    reopen_failures: u64,
}

/// Starts the writer thread over the database `live` holds, which lives
/// in `db_dir`.
pub(crate) fn start(
    live: Arc<ArcSwap<Handles>>,
    db_dir: PathBuf,
    node_id: String,
    progress: Arc<Progress>,
    options: &StorageOptions,
    health: Arc<HealthCell>,
) -> Result<Handle, StorageError> {
    let handles = live.load_full();
    // Never reuse a sequence number, even if the counter in meta were lost.
    let next_seq = recovery::stored_next_seq(&handles)?;
    let hlc = Hlc::resume(u64_value(handles.meta.get(META_HLC)?));
    // Whatever the database holds at open time has survived: it is durable.
    progress.durable_seq.store(next_seq, Ordering::Release);
    let flusher = Flusher::start(handles.db.clone(), &db_dir)
        .map_err(|e| StorageError::Corrupt(format!("cannot start the flush thread: {e}")))?;
    let mut committer = Committer {
        db: handles.db.clone(),
        meta: handles.meta.clone(),
        outbox: handles.outbox.clone(),
        idempotency: handles.idempotency.clone(),
        live,
        flusher,
        db_dir,
        node_id,
        hlc,
        next_seq,
        progress,
        max_outbox_bytes: options.max_outbox_bytes,
        outbox_full_refusals: 0,
        min_free_bytes: options.min_free_bytes,
        flush_timeout: options.flush_timeout,
        probe_interval: options.probe_interval,
        stall_reopen_after: options.stall_reopen_after,
        health,
        failure: None,
        undroppable: Vec::new(),
        reopen_failures: 0,
    };
    let (jobs, queue) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("outpost-writer".into())
        .spawn(move || {
            let _alive = Alive(committer.health.clone());
            committer.run(queue);
        })
        .map_err(|e| StorageError::Corrupt(format!("cannot start the writer thread: {e}")))?;
    Ok(Handle { jobs })
}

impl Drop for Committer {
    fn drop(&mut self) {
        // Dropping a wedged sled instance flushes, which never returns and
        // holds sled's process-wide lock meanwhile.
        for stuck in self.undroppable.drain(..) {
            std::mem::forget(stuck);
        }
    }
}

/// Marks the database unwritable if the writer thread dies of a panic:
/// every later write is refused with [`StorageError::Stopped`].
struct Alive(Arc<HealthCell>);

impl Drop for Alive {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.failing("the database writer stopped (it panicked)");
        }
    }
}

type TxResult<T> = Result<T, ConflictableTransactionError<Rejection>>;

/// Why, if `result` is sled failing to write: then the instance is done
/// for (see [`recovery`]). Other errors (a corrupt value) are the write's
/// own answer.
fn io_failure<T>(result: &Result<T, StorageError>) -> Option<String> {
    match result {
        Err(StorageError::Db(sled::Error::Io(e))) => Some(format!("a database write failed: {e}")),
        _ => None,
    }
}

fn be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

impl Committer {
    fn run(&mut self, queue: mpsc::Receiver<Job>) {
        loop {
            let first = match &self.failure {
                None => match queue.recv() {
                    Ok(job) => Some(job),
                    Err(_) => break,
                },
                Some(failure) => {
                    match queue
                        .recv_timeout(failure.next_probe.saturating_duration_since(Instant::now()))
                    {
                        Ok(job) => Some(job),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            if self
                .failure
                .as_ref()
                .is_some_and(|f| Instant::now() >= f.next_probe)
            {
                self.probe();
            }
            let Some(first) = first else { continue };
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match queue.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            match &self.failure {
                Some(failure) => {
                    let reason = failure.reason.clone();
                    self.refuse(group, &reason);
                }
                None => self.commit(group),
            }
        }
    }

    /// Applies `group` and makes it durable with one flush.
    fn commit(&mut self, mut group: Vec<Job>) {
        if let Err(reason) = self.room(self.min_free_bytes) {
            self.refuse(group, &reason);
            self.fail(Stage::LowSpace, reason);
            return;
        }
        let seq_before = self.next_seq;
        let mut results = Vec::with_capacity(group.len());
        let mut failed = None;
        for job in &mut group {
            let result = match std::mem::replace(&mut job.work, Work::Sync) {
                Work::Op(op) => {
                    let result = self.apply(&op);
                    failed = io_failure(&result);
                    result
                }
                Work::Sync => Ok(Written::Done),
                Work::Run(work) => {
                    failed = work(&self.live.load());
                    Ok(Written::Done)
                }
            };
            if matches!(result, Ok(Written::Rejected(Rejection::OutboxFull))) {
                self.report_full_outbox();
            }
            results.push(result);
            if failed.is_some() {
                break;
            }
        }
        if let Some(reason) = failed {
            // Whatever sled applied of this group may or may not reach the
            // disk, and this instance cannot be trusted to flush (after a
            // failed blob write its flush never returns); the rest of the
            // group was never applied.
            let rest = group.split_off(results.len());
            self.unknown(group, &reason);
            self.refuse(rest, &reason);
            self.sled_failed(reason);
            return;
        }
        // One fsync for the whole group; nobody hears "done" before it.
        let flush_began = Instant::now();
        match self.flusher.flush(self.flush_timeout) {
            Some(Ok(())) => {
                self.made_durable(seq_before);
                for (job, result) in group.into_iter().zip(results) {
                    let _ = job.reply.send(result);
                }
            }
            Some(Err(e)) => {
                let reason = format!("the database flush failed: {e}");
                self.unknown(group, &reason);
                self.sled_failed(reason);
            }
            None => {
                let reason = format!(
                    "the database flush did not finish within {:?}",
                    self.flush_timeout
                );
                self.unknown(group, &reason);
                self.fail(Stage::Stalled { since: flush_began }, reason);
            }
        }
    }

    /// Everything applied is on disk: the outbox is durable up to the
    /// next sequence number.
    fn made_durable(&self, seq_before: u64) {
        self.progress
            .durable_seq
            .store(self.next_seq, Ordering::Release);
        if self.next_seq != seq_before {
            self.progress.outbox_grew.notify_one();
        }
    }

    /// Answers every job of `jobs`: not applied.
    fn refuse(&self, jobs: Vec<Job>, reason: &str) {
        if jobs.is_empty() {
            return;
        }
        self.health.count_refused(jobs.len());
        for job in jobs {
            let _ = job
                .reply
                .send(Err(StorageError::Unavailable(reason.to_owned())));
        }
    }

    /// Answers every job of `jobs`: applied, but maybe not on disk.
    fn unknown(&self, jobs: Vec<Job>, reason: &str) {
        self.health.count_unknown(jobs.len());
        for job in jobs {
            let _ = job
                .reply
                .send(Err(StorageError::OutcomeUnknown(reason.to_owned())));
        }
    }

    /// Stops accepting writes (or, already failing, moves to `stage`),
    /// telling writes `reason`.
    fn fail(&mut self, stage: Stage, reason: String) {
        match &self.failure {
            None => {
                tracing::error!(target: "outpost::storage::committer", reason = %reason, "the database stopped accepting writes; it resumes by itself once it can");
            }
            Some(_) => {
                tracing::warn!(target: "outpost::storage::committer", reason = %reason, "the database still refuses writes");
            }
        }
        self.health.failing(&reason);
        self.failure = Some(Failure {
            stage,
            reason,
            next_probe: Instant::now() + self.probe_interval,
        });
    }

    /// sled failed: fail, and start retiring its instance.
    fn sled_failed(&mut self, cause: String) {
        let (stage, reason) = self.retire(cause);
        self.fail(stage, reason);
    }

    /// Accepts writes again.
    fn resume(&mut self, why: &str) {
        tracing::warn!(target: "outpost::storage::committer", why, "the database accepts writes again");
        self.health.recovered();
        self.failure = None;
    }

    /// `Err(reason)` while the database's filesystem has less than `need`
    /// bytes free. A filesystem that cannot say does not stop writes.
    fn room(&self, need: u64) -> Result<(), String> {
        if need == 0 {
            return Ok(());
        }
        match crate::disk::free_bytes(&self.db_dir) {
            Some(free) if free < need => Err(format!(
                "the disk is nearly full ({free} bytes free; writes need {need})"
            )),
            _ => Ok(()),
        }
    }

    /// A failing writer looks for a way back (see the module docs).
    fn probe(&mut self) {
        let Some(Failure { stage, reason, .. }) = self.failure.take() else {
            return;
        };
        let (stage, reason) = match stage {
            Stage::LowSpace => match self.room(self.min_free_bytes) {
                Ok(()) => return self.resume("the disk has room again"),
                Err(short) => (Stage::LowSpace, short),
            },
            Stage::Stalled { since } => match self.flusher.wait(Duration::ZERO) {
                Some(Ok(())) => {
                    // The group answered "unknown" made it after all.
                    self.progress
                        .durable_seq
                        .store(self.next_seq, Ordering::Release);
                    self.progress.outbox_grew.notify_one();
                    match self.room(self.min_free_bytes) {
                        Ok(()) => return self.resume("the stalled flush finished"),
                        Err(short) => (Stage::LowSpace, short),
                    }
                }
                Some(Err(e)) => self.retire(format!("the database flush failed: {e}")),
                None if since.elapsed() >= self.stall_reopen_after => self.retire(reason),
                None => (Stage::Stalled { since }, reason),
            },
            Stage::Retiring { cause, retiring } => match retiring.poll() {
                None => (Stage::Retiring { cause, retiring }, reason),
                Some(outcome) => match outcome.and_then(|retired| retired) {
                    Ok(None) => self.reopen(cause),
                    Ok(Some(undroppable)) => {
                        self.undroppable.push(undroppable);
                        self.wedged(&cause, "the failed database instance did not shut down")
                    }
                    Err(e) => self.wedged(&cause, &e),
                },
            },
            Stage::Broken { cause } => self.reopen(cause),
            Stage::Wedged => (Stage::Wedged, reason),
            Stage::Reopening { cause, reopening } => match reopening.poll() {
                None => (Stage::Reopening { cause, reopening }, reason),
                Some(Ok(Ok(reopened))) => {
                    self.install(reopened);
                    return self.resume("the database was reopened");
                }
                Some(Ok(Err(e)) | Err(e)) => {
                    self.reopen_failures += 1;
                    if self.reopen_failures.is_power_of_two() {
                        tracing::warn!(target: "outpost::storage::committer", error = %e, failures = self.reopen_failures, "reopening the database failed; trying again");
                    }
                    let reason = format!("{cause}; reopening the database failed: {e}");
                    (Stage::Broken { cause }, reason)
                }
            },
        };
        self.health.failing(&reason);
        self.failure = Some(Failure {
            stage,
            reason,
            next_probe: Instant::now() + self.probe_interval,
        });
    }

    /// Starts retiring the failed instance on a helper thread.
    fn retire(&mut self, cause: String) -> (Stage, String) {
        let (db_dir, old) = (self.db_dir.clone(), self.db.clone());
        match Pending::spawn("outpost-db-retire", move || recovery::retire(&db_dir, old)) {
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

    /// Gives up recovering by itself (see [`Stage::Wedged`]).
    fn wedged(&self, cause: &str, why: &str) -> (Stage, String) {
        let reason = format!("{cause}; {why}; restart the node to recover");
        tracing::error!(target: "outpost::storage::committer", reason = %reason, "the database cannot recover by itself");
        (Stage::Wedged, reason)
    }

    /// Starts reopening the database if the disk has room; otherwise waits
    /// (a new instance would fail the same way).
    fn reopen(&mut self, cause: String) -> (Stage, String) {
        let need = self.min_free_bytes.max(REOPEN_MIN_FREE_BYTES);
        if let Err(short) = self.room(need) {
            let reason = format!("{cause}; waiting for free space: {short}");
            return (Stage::Broken { cause }, reason);
        }
        tracing::warn!(target: "outpost::storage::committer", cause = %cause, "reopening the database");
        let db_dir = self.db_dir.clone();
        match Pending::spawn("outpost-db-reopen", move || recovery::reopen(&db_dir)) {
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

    /// Switches the writer and every reader to the reopened database.
    fn install(&mut self, reopened: Reopened) {
        let Reopened {
            handles,
            flusher,
            next_seq,
            outbox_bytes,
        } = reopened;
        self.db = handles.db.clone();
        self.meta = handles.meta.clone();
        self.outbox = handles.outbox.clone();
        self.idempotency = handles.idempotency.clone();
        self.live.store(Arc::new(handles));
        // The old flush thread ends once its flush returns (the retired
        // instance's failure released it if it was stuck).
        self.flusher = flusher;
        // Records of a group answered "unknown" may be missing: their
        // numbers are skipped rather than handed out again.
        self.next_seq = self.next_seq.max(next_seq);
        self.progress
            .outbox_bytes
            .store(outbox_bytes, Ordering::Release);
        self.progress
            .durable_seq
            .store(self.next_seq, Ordering::Release);
        self.progress.outbox_grew.notify_one();
        self.health.count_reopen();
        self.reopen_failures = 0;
    }

    fn apply(&mut self, op: &WriteOp) -> Result<Written, StorageError> {
        match op {
            WriteOp::Set {
                store,
                replicated,
                key,
                value,
            } => self
                .read_modify_write(store, *replicated, key, |_| ops::set(value))
                .map(Written::from),
            WriteOp::Delete {
                store,
                replicated,
                key,
            } => self
                .read_modify_write(store, *replicated, key, |current| {
                    ops::delete(*replicated, current)
                })
                .map(Written::from),
            WriteOp::Increment {
                store,
                replicated,
                key,
                delta,
            } => {
                let written = self.read_modify_write(store, *replicated, key, |current| {
                    ops::increment(current, *delta)
                })?;
                Ok(match written {
                    ops::Applied::Wrote(Some(bytes)) => {
                        Written::Number(ops::parse_integer(&bytes).expect("just written"))
                    }
                    other => other.into(),
                })
            }
            WriteOp::CompareAndSwap {
                store,
                replicated,
                key,
                expected,
                new,
            } => self
                .read_modify_write(store, *replicated, key, |current| {
                    ops::compare_and_swap(current, expected.as_deref(), new)
                })
                .map(Written::from),
            WriteOp::Enqueue {
                topic,
                payload,
                idempotency_key,
            } => self.enqueue(topic, payload, idempotency_key.as_deref()),
            WriteOp::Requeue { quarantined } => self.requeue(*quarantined),
            WriteOp::ApplyRemote {
                changes,
                cursor,
                cloud,
            } => self.apply_remote(changes, *cursor, *cloud),
        }
    }

    /// Says (once per thousand refusals) that the outbox is full.
    fn report_full_outbox(&mut self) {
        if self.outbox_full_refusals.is_multiple_of(1000) {
            tracing::warn!(target: "outpost::storage::committer",
                used = self.progress.outbox_bytes.load(Ordering::Acquire),
                max = self.max_outbox_bytes,
                refused = self.outbox_full_refusals + 1,
                "the outbox is full: replicated writes and events are refused until it drains"
            );
        }
        self.outbox_full_refusals += 1;
    }

    /// Bytes the outbox may still take.
    ///
    /// Says nothing itself: it runs for every write, local ones too, so a
    /// full outbox is reported where a write is refused, throttled
    /// ([`Self::report_full_outbox`]).
    fn outbox_room(&self) -> u64 {
        let used = self.progress.outbox_bytes.load(Ordering::Acquire);
        self.max_outbox_bytes.saturating_sub(used)
    }
}
