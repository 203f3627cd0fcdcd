//! The node's single writer. Writes queue up while a flush is in progress;
//! the next round applies all of them (each in its own sled transaction)
//! and makes them durable with one fsync: group commit. Being the only
//! writer also makes sequence numbers and HLC stamps trivially ordered.
//!
//! This module is the loop; [`group`] is the group's transaction, and what
//! each write does in it is in [`ops`] (the KV operations' semantics),
//! [`kv`] (a local write and its outbox record), [`enqueue`] (events,
//! idempotency) and [`remote`] (other nodes' writes, last-writer-wins).
//!
//! # When the disk fills up or fails
//!
//! Nobody hears "done" before the group's flush succeeded. Every write
//! goes through an [`outpost_sled_guard::Guard`]: the flush runs on its own
//! thread and the writer waits for it at most
//! [`StorageOptions::flush_timeout`], because sled's flush can block
//! forever after a failed write ([`outpost_sled_guard::recovery`] has what
//! sled does). Every
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
mod group;
mod kv;
mod linger;
pub mod ops;
mod recovery;
mod remote;
#[cfg(test)]
mod tests;

pub use ops::{Receipt, Rejection, WriteOp, Written};

use crate::handles::Handles;
use crate::{META_HLC, StorageError, StorageOptions, u64_value};
use arc_swap::ArcSwap;
use outpost_sled_guard::{Guard, HealthCell, Owner, Recovered, Reopen};
use outpost_wire::hlc::Hlc;
use recovery::Reopened;
use sled::Tree;
use std::collections::HashMap;
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
    /// Records in the outbox, kept as they come and go: counting sled's
    /// tree walks every record, and the metrics ask on every scrape.
    pub outbox_records: AtomicU64,
    /// Groups committed (one flush each), since start.
    pub groups: AtomicU64,
    /// Writes in those groups: over `groups`, how many share a flush.
    pub grouped_writes: AtomicU64,
    /// Waiting records per store, and the cloud's answered watermark.
    pub pending: crate::pending::Pending,
    /// Writes whose callers wait for the cloud's answer.
    pub awaiting: crate::awaiting::Awaiting,
}

/// Most writes applied under one flush.
const MAX_GROUP: usize = 1024;

/// Longest a group waits for more writes to join it (see
/// [`Committer::linger`]).
const MAX_LINGER: Duration = Duration::from_millis(4);

/// How many callers could still submit a write now (see
/// [`crate::Storage::expect_callers`]).
pub(crate) type Callers = Arc<std::sync::OnceLock<Box<dyn Fn() -> usize + Send + Sync>>>;

/// The writer's threads, and what its guard says, under the writer's log
/// target.
const OWNER: Owner = Owner {
    flush_thread: "outpost-flush",
    retire_thread: "outpost-db-retire",
    fence_thread: "outpost-db-fence",
    reopen_thread: "outpost-db-reopen",
    restart: "the node",
    log,
};

outpost_sled_guard::event_logger!(
    fn log,
    target: "outpost::storage::committer",
    stopped: "the database stopped accepting writes; it resumes by itself once it can",
);

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
    /// The caller will wait for the cloud's answer to the record the
    /// write makes: register it before the flush (see [`crate::awaiting`]).
    awaits_cloud: bool,
    reply: oneshot::Sender<Result<Reply, StorageError>>,
}

/// A write's answer to its caller.
pub struct Reply {
    /// What the write did.
    pub written: Written,
    /// The outbox record it made, if any.
    pub receipt: Option<Receipt>,
    /// Where the cloud's answer to that record arrives, if the caller
    /// asked to wait for it.
    pub answer: Option<oneshot::Receiver<crate::awaiting::CloudAnswer>>,
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
    gate: Arc<linger::Gate>,
}

impl Handle {
    /// Queues `op` and waits until it is durable (or refused, or its
    /// outcome is unknown: see [`StorageError`]).
    pub async fn submit(&self, op: WriteOp) -> Result<Written, StorageError> {
        self.send(Work::Op(op), false).await.map(|r| r.written)
    }

    /// [`Handle::submit`], with the outbox record the write made, if any;
    /// with `awaits_cloud`, also where the cloud's answer to it arrives.
    pub async fn submit_receipt(
        &self,
        op: WriteOp,
        awaits_cloud: bool,
    ) -> Result<Reply, StorageError> {
        self.send(Work::Op(op), awaits_cloud).await
    }

    /// Waits until everything applied so far is durable; answers like a
    /// write.
    pub async fn sync(&self) -> Result<(), StorageError> {
        self.send(Work::Sync, false).await.map(drop)
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
        self.send(
            Work::Run(Box::new(move |handles| {
                let outcome = work(handles);
                let failed = io_failure(&outcome);
                let _ = done.send(outcome);
                failed
            })),
            false,
        )
        .await?;
        result.await.map_err(|_| StorageError::Stopped)?
    }

    async fn send(&self, work: Work, awaits_cloud: bool) -> Result<Reply, StorageError> {
        let (reply, result) = oneshot::channel();
        self.jobs
            .send(Job {
                work,
                awaits_cloud,
                reply,
            })
            .map_err(|_| StorageError::Stopped)?;
        self.gate.arrived();
        // The writer took the job, so it may have applied it before dying.
        result.await.map_err(|_| {
            StorageError::OutcomeUnknown("the database writer stopped before answering".into())
        })?
    }
}

struct Committer {
    /// The current sled instance and the trees the writes use; replaced
    /// together with `live` on a reopen (the guard has its own handle).
    db: sled::Db,
    meta: Tree,
    outbox: Tree,
    /// Idempotency keys of enqueued events: `topic \0 key` -> event id.
    idempotency: Tree,
    /// Outbox records the cloud refused for good.
    quarantine: Tree,
    /// KV stores' trees by store id, opened once per instance.
    stores: HashMap<String, Tree>,
    /// What readers load (see [`crate::Storage::handles`]).
    live: Arc<ArcSwap<Handles>>,
    /// Flushes, refuses while failing, and finds the way back.
    guard: Guard<Reopened>,
    node_id: String,
    hlc: Hlc,
    next_seq: u64,
    progress: Arc<Progress>,
    /// Most bytes of records the outbox may hold.
    max_outbox_bytes: u64,
    /// Writes refused for a full outbox, for throttled reporting.
    outbox_full_refusals: u64,
    health: Arc<HealthCell>,
    /// Callers that could still join a group.
    callers: Callers,
    /// The last group had more than one write: writers run concurrently.
    concurrent: bool,
    /// Where a lingering group waits for more writes.
    gate: Arc<linger::Gate>,
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
    callers: Callers,
) -> Result<Handle, StorageError> {
    let handles = live.load_full();
    // Never reuse a sequence number, even if the counter in meta were lost.
    let next_seq = recovery::stored_next_seq(&handles)?;
    let hlc = Hlc::resume(u64_value(handles.meta.get(META_HLC)?));
    // Whatever the database holds at open time has survived: it is durable.
    progress.durable_seq.store(next_seq, Ordering::Release);
    let reopen: Reopen<Reopened> = Arc::new(recovery::reopen);
    let guard = Guard::new(
        handles.db.clone(),
        db_dir,
        options.guard(),
        health.clone(),
        reopen,
        OWNER,
    )
    .map_err(|e| StorageError::Corrupt(format!("cannot start the flush thread: {e}")))?;
    let mut committer = Committer {
        db: handles.db.clone(),
        meta: handles.meta.clone(),
        outbox: handles.outbox.clone(),
        idempotency: handles.idempotency.clone(),
        quarantine: handles.quarantine.clone(),
        stores: HashMap::new(),
        live,
        guard,
        node_id,
        hlc,
        next_seq,
        progress,
        max_outbox_bytes: options.max_outbox_bytes,
        outbox_full_refusals: 0,
        health,
        callers,
        concurrent: false,
        gate: linger::Gate::new(),
    };
    let gate = committer.gate.clone();
    let (jobs, queue) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("outpost-writer".into())
        .spawn(move || {
            let _alive = Alive(committer.health.clone());
            committer.gate.register_writer();
            committer.run(queue);
        })
        .map_err(|e| StorageError::Corrupt(format!("cannot start the writer thread: {e}")))?;
    Ok(Handle { jobs, gate })
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

/// Why, if `result` is sled failing to write: then the instance is done
/// for (see [`recovery`]). Other errors (a corrupt value) are the write's
/// own answer.
fn io_failure<T>(result: &Result<T, StorageError>) -> Option<String> {
    match result {
        Err(StorageError::Db(sled::Error::Io(e))) => Some(format!("a database write failed: {e}")),
        _ => None,
    }
}

/// Adds the jobs already queued to `group`, up to [`MAX_GROUP`].
fn take_queued(queue: &mpsc::Receiver<Job>, group: &mut Vec<Job>) {
    while group.len() < MAX_GROUP {
        match queue.try_recv() {
            Ok(job) => group.push(job),
            Err(_) => break,
        }
    }
}

/// Counts the outbox of `handles` into `pending` afresh (see
/// [`crate::pending`]); a record it cannot read counts for no store.
pub(crate) fn recount_pending(pending: &crate::pending::Pending, handles: &Handles, last_hlc: u64) {
    let records = handles.outbox.iter().values().filter_map(Result::ok);
    pending.recount(records, last_hlc);
}

fn be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// Writes a [`outpost_wire::Record::Skipped`] placeholder for each outbox
/// number in `from..to` (lost with a reopen) and the next number, durably;
/// returns the bytes added to the outbox.
fn fill_lost_numbers(handles: &Handles, from: u64, to: u64) -> Result<u64, StorageError> {
    let placeholder = serde_json::to_vec(&outpost_wire::Record::Skipped {
        reason: "lost with a write whose outcome was unknown (the database was reopened)".into(),
    })
    .expect("serializes");
    let mut batch = sled::Batch::default();
    for seq in from..to {
        batch.insert(&be(seq), placeholder.as_slice());
    }
    handles.outbox.apply_batch(batch)?;
    handles.meta.insert(crate::META_NEXT_SEQ, &be(to))?;
    handles.db.flush()?;
    Ok((to - from) * placeholder.len() as u64)
}

impl Committer {
    fn run(&mut self, queue: mpsc::Receiver<Job>) {
        loop {
            let first = match self.guard.next_probe() {
                None => match queue.recv() {
                    Ok(job) => Some(job),
                    Err(_) => break,
                },
                Some(next_probe) => {
                    match queue.recv_timeout(next_probe.saturating_duration_since(Instant::now())) {
                        Ok(job) => Some(job),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            if self
                .guard
                .next_probe()
                .is_some_and(|next_probe| Instant::now() >= next_probe)
            {
                self.probe();
            }
            let Some(first) = first else { continue };
            let mut group = vec![first];
            take_queued(&queue, &mut group);
            let failing = self.guard.reason().is_some();
            if !failing {
                self.linger(&queue, &mut group);
            }
            self.concurrent = group.len() > 1;
            match self.guard.reason() {
                Some(reason) => {
                    let reason = reason.to_owned();
                    self.refuse(group, &reason);
                }
                None => self.commit(group),
            }
        }
    }

    /// Waits, briefly, for more writes to join `group`.
    ///
    /// Each flush costs far more CPU than a write (sled's log write wakes
    /// all its I/O threads), and under load the queue fills slowly: the
    /// writes' own requests are what keeps the CPU busy, so few of them
    /// reach the writer during one fsync. A group waits only while writers
    /// run concurrently (the last group had more than one write; a lone
    /// writer never waits) and while more callers are running than the
    /// group holds (each could write once more), for at most
    /// [`MAX_LINGER`].
    fn linger(&self, queue: &mpsc::Receiver<Job>, group: &mut Vec<Job>) {
        if !self.concurrent {
            return;
        }
        let Some(callers) = self.callers.get() else {
            return;
        };
        let deadline = Instant::now() + MAX_LINGER;
        loop {
            let wanted = callers().min(MAX_GROUP);
            if group.len() >= wanted || Instant::now() >= deadline {
                return;
            }
            self.gate.open();
            // Anything queued before the gate opened is not counted.
            take_queued(queue, group);
            let more = wanted.saturating_sub(group.len());
            if more == 0 {
                return;
            }
            self.gate.wait(more, deadline);
            take_queued(queue, group);
        }
    }

    /// Applies `group` and makes it durable with one flush.
    fn commit(&mut self, mut group: Vec<Job>) {
        if let Err(reason) = self.guard.admit() {
            self.refuse(group, &reason);
            return;
        }
        let seq_before = self.next_seq;
        let ops: Vec<&WriteOp> = group
            .iter()
            .filter_map(|job| match &job.work {
                Work::Op(op) => Some(op),
                _ => None,
            })
            .collect();
        let mut op_results = match self.apply_group(&ops) {
            Ok(results) => results.into_iter(),
            Err(e) => {
                // Whatever sled applied of this group may or may not reach
                // the disk, and an instance that failed a write cannot be
                // trusted to flush (after a failed blob write its flush
                // never returns).
                let reason = format!("a database write failed: {e}");
                if matches!(e, sled::Error::Io(_)) {
                    self.unknown(group, &reason);
                    self.guard.sled_failed(reason);
                } else {
                    // Not an I/O error: the transaction did not commit.
                    for job in group {
                        let _ = job.reply.send(Err(StorageError::Db(e.clone())));
                    }
                }
                return;
            }
        };
        drop(ops);
        let mut results = Vec::with_capacity(group.len());
        let mut failed = None;
        for job in &mut group {
            let result = match std::mem::replace(&mut job.work, Work::Sync) {
                Work::Op(_) => op_results.next().expect("one result per op"),
                Work::Sync => Ok((Written::Done, None)),
                Work::Run(work) => {
                    // After the transaction: the group's writes are
                    // concurrent, so any order of them is a valid one.
                    if failed.is_none() {
                        failed = work(&self.live.load());
                    }
                    Ok((Written::Done, None))
                }
            };
            if matches!(result, Ok((Written::Rejected(Rejection::OutboxFull), _))) {
                self.report_full_outbox();
            }
            let result = result.map(|(written, receipt)| {
                // Before the flush: the shipper cannot see the record yet.
                let answer = match &receipt {
                    Some(receipt) if job.awaits_cloud => {
                        Some(self.progress.awaiting.register(receipt.seq))
                    }
                    _ => None,
                };
                Reply {
                    written,
                    receipt,
                    answer,
                }
            });
            results.push(result);
        }
        if let Some(reason) = failed {
            // The group's transaction and the work that failed may or may
            // not reach the disk (see above); work after it was not run,
            // but it answers the same: nothing of it is known to be done.
            self.unknown(group, &reason);
            self.guard.sled_failed(reason);
            return;
        }
        // One fsync for the whole group; nobody hears "done" before it.
        match self.guard.flush() {
            Ok(()) => {
                self.progress.groups.fetch_add(1, Ordering::Relaxed);
                self.progress
                    .grouped_writes
                    .fetch_add(group.len() as u64, Ordering::Relaxed);
                self.made_durable(seq_before);
                for (job, result) in group.into_iter().zip(results) {
                    let _ = job.reply.send(result);
                }
            }
            // The guard refuses writes from now on.
            Err(reason) => self.unknown(group, &reason),
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

    /// A failing writer looks for a way back (see the module docs).
    fn probe(&mut self) {
        match self.guard.probe() {
            None => {}
            Some(Recovered::Flushed) => {
                // The group answered "unknown" made it after all.
                self.progress
                    .durable_seq
                    .store(self.next_seq, Ordering::Release);
                self.progress.outbox_grew.notify_one();
            }
            Some(Recovered::Reopened(reopened)) => self.install(reopened),
        }
    }

    /// Switches the writer and every reader to the reopened database.
    fn install(&mut self, reopened: Reopened) {
        let Reopened {
            handles,
            next_seq,
            outbox_bytes,
            outbox_records,
        } = reopened;
        let mut outbox_records = outbox_records;
        self.db = handles.db.clone();
        self.meta = handles.meta.clone();
        self.outbox = handles.outbox.clone();
        self.idempotency = handles.idempotency.clone();
        self.quarantine = handles.quarantine.clone();
        self.stores.clear();
        // Records of a group answered "unknown" may be missing from the
        // reopened database. Their numbers are not handed out again, and
        // a placeholder takes each one, so the cloud (which never saw
        // them: the shipper reads only durable records) sees no gap.
        let mut outbox_bytes = outbox_bytes;
        if next_seq < self.next_seq {
            match fill_lost_numbers(&handles, next_seq, self.next_seq) {
                Ok(bytes) => {
                    outbox_bytes += bytes;
                    outbox_records += self.next_seq - next_seq;
                }
                Err(e) => {
                    // Without placeholders, reuse the numbers rather than
                    // leave a gap that stops shipping: none of them was
                    // shipped or returned to anyone.
                    tracing::error!(target: "outpost::storage::committer", error = %e, from = next_seq, to = self.next_seq, "cannot write placeholders for the numbers lost with the reopen; handing them out again");
                    self.next_seq = next_seq;
                }
            }
        }
        self.next_seq = self.next_seq.max(next_seq);
        recount_pending(&self.progress.pending, &handles, self.hlc.last());
        self.live.store(Arc::new(handles));
        self.progress
            .outbox_bytes
            .store(outbox_bytes, Ordering::Release);
        self.progress
            .outbox_records
            .store(outbox_records, Ordering::Release);
        self.progress
            .durable_seq
            .store(self.next_seq, Ordering::Release);
        self.progress.outbox_grew.notify_one();
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
