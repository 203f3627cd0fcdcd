//! The state machine every write of a guarded database goes through:
//! admitted (not while failing, not on a nearly full disk), flushed within
//! a bound, and, after a failure, refused until the guard finds its way
//! back (see the crate docs), one probe at a time.

use crate::flush::Flusher;
use crate::health::HealthCell;
use crate::recovery::{self, Pending, ReopenError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Default [`GuardOptions::min_free_bytes`]: 64 MiB.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 64 * 1024 * 1024;
/// Default [`GuardOptions::flush_timeout`]: 5 s.
pub const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Default [`GuardOptions::probe_interval`]: 1 s.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Default [`GuardOptions::stall_reopen_after`]: 10 s.
pub const DEFAULT_STALL_REOPEN_AFTER: Duration = Duration::from_secs(10);

/// A reopened database needs at least this much room (sled writes in
/// 512 KiB segments), whatever [`GuardOptions::min_free_bytes`] says.
const REOPEN_MIN_FREE_BYTES: u64 = 1024 * 1024;

/// The bounds a [`Guard`] keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardOptions {
    /// Writes are refused, unapplied, while the filesystem has less than
    /// this free, and resume once it has this much again: stopping short
    /// of a full disk keeps sled from meeting ENOSPC, after which its
    /// instance never writes again. 0 turns the check off.
    pub min_free_bytes: u64,
    /// Longest wait for a flush; one that fails or has not finished by
    /// then leaves what it covers in doubt and stops writes.
    pub flush_timeout: Duration,
    /// How often a failing guard wants to be probed.
    pub probe_interval: Duration,
    /// A flush still running this long after it began, once the disk has
    /// room, is given up on: the database is reopened as after a crash.
    pub stall_reopen_after: Duration,
}

impl Default for GuardOptions {
    fn default() -> Self {
        Self {
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            flush_timeout: DEFAULT_FLUSH_TIMEOUT,
            probe_interval: DEFAULT_PROBE_INTERVAL,
            stall_reopen_after: DEFAULT_STALL_REOPEN_AFTER,
        }
    }
}

/// What a guard has to say, for its owner to log under its own target
/// (tracing wants targets fixed at compile time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// Writes stopped being accepted (an error).
    Stopped {
        /// Why.
        reason: &'a str,
    },
    /// Failing already, writes are still refused, for a new reason.
    StillRefusing {
        /// Why.
        reason: &'a str,
    },
    /// Writes are accepted again.
    Resumed {
        /// What brought them back.
        why: &'a str,
    },
    /// The database is being reopened.
    Reopening {
        /// The failure that made it necessary.
        cause: &'a str,
    },
    /// A reopen failed and is tried again (said after 1, 2, 4, ... failures).
    ReopenFailed {
        /// How it failed.
        error: &'a str,
        /// Failures in a row.
        failures: u64,
    },
    /// The guard cannot recover by itself: only a restart does (an error).
    Wedged {
        /// Why.
        reason: &'a str,
    },
}

/// Who runs a guard: the names of its threads, what an operator restarts,
/// and where its events go.
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    /// The flush thread.
    pub flush_thread: &'static str,
    /// The thread that retires a failed instance.
    pub retire_thread: &'static str,
    /// The thread that makes a fenced instance fail.
    pub fence_thread: &'static str,
    /// The thread that reopens the database.
    pub reopen_thread: &'static str,
    /// What to restart when nothing else helps, as in "restart the node".
    pub restart: &'static str,
    /// Logs an event.
    pub log: fn(Event<'_>),
}

/// How the owner of a [`Guard`] opens its database again: the new
/// instance's handles `R` (the owner installs them) and its sled database.
pub type Reopen<R> = Arc<dyn Fn(&Path) -> Result<(R, sled::Db), ReopenError> + Send + Sync>;

/// What a probe found that the guard's owner must act on.
pub enum Recovered<R> {
    /// A stalled flush finished after all: everything written is durable.
    Flushed,
    /// The database was reopened and its files fsynced: install these
    /// handles (writes resumed).
    Reopened(R),
}

/// Where a failing guard stands.
enum Stage<R> {
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
        reopening: Pending<Result<(R, sled::Db, Flusher), String>>,
    },
}

struct Failure<R> {
    stage: Stage<R>,
    /// What every refused write hears, and health's `last_error`.
    reason: String,
    next_probe: Instant,
}

/// Every write of one sled database goes through its guard, one at a
/// time (the owner is its only writer, or keeps it behind a lock).
pub struct Guard<R> {
    /// The current instance (what gets flushed, or retired).
    db: sled::Db,
    flusher: Flusher,
    /// The sled database's directory.
    db_dir: PathBuf,
    options: GuardOptions,
    health: Arc<HealthCell>,
    reopen: Reopen<R>,
    owner: Owner,
    /// Set while writes are refused.
    failure: Option<Failure<R>>,
    /// Failed instances that could not be shut down: dropping one would
    /// block forever, so they stay here for good.
    undroppable: Vec<sled::Db>,
    /// Failed reopen attempts, for throttled reporting.
    reopen_failures: u64,
}

impl<R> Drop for Guard<R> {
    fn drop(&mut self) {
        // Dropping a wedged sled instance flushes, which never returns and
        // holds sled's process-wide lock meanwhile.
        for stuck in self.undroppable.drain(..) {
            std::mem::forget(stuck);
        }
    }
}

impl<R: Send + 'static> Guard<R> {
    /// Guards `db`, the sled database in `db_dir`, and starts its flush
    /// thread. `health` is kept up to date; `reopen` opens it again.
    pub fn new(
        db: sled::Db,
        db_dir: PathBuf,
        options: GuardOptions,
        health: Arc<HealthCell>,
        reopen: Reopen<R>,
        owner: Owner,
    ) -> std::io::Result<Self> {
        Ok(Self {
            flusher: Flusher::start(db.clone(), &db_dir, owner.flush_thread)?,
            db,
            db_dir,
            options,
            health,
            reopen,
            owner,
            failure: None,
            undroppable: Vec::new(),
            reopen_failures: 0,
        })
    }

    /// Whether writes are refused now.
    pub fn failing(&self) -> bool {
        self.failure.is_some()
    }

    /// Why writes are refused, while they are.
    pub fn reason(&self) -> Option<&str> {
        self.failure.as_ref().map(|f| f.reason.as_str())
    }

    /// When a failing guard wants its next [`Guard::probe`]; `None` while
    /// writes are accepted.
    pub fn next_probe(&self) -> Option<Instant> {
        self.failure.as_ref().map(|f| f.next_probe)
    }

    /// `Err(reason)`: the write must be refused, not applied (writes are
    /// failing, or the disk is nearly full, which starts a failure). The
    /// caller counts the refusal.
    pub fn admit(&mut self) -> Result<(), String> {
        if let Some(reason) = self.reason() {
            return Err(reason.to_owned());
        }
        if let Err(reason) = self.room(self.options.min_free_bytes) {
            self.fail(Stage::LowSpace, reason.clone());
            return Err(reason);
        }
        Ok(())
    }

    /// Makes everything written durable. `Err(reason)`: the flush failed or
    /// did not finish within [`GuardOptions::flush_timeout`]; what was
    /// written may or may not be on disk (the caller counts it), and
    /// writes are refused from now on.
    pub fn flush(&mut self) -> Result<(), String> {
        let began = Instant::now();
        match self.flusher.flush(self.options.flush_timeout) {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => {
                let reason = format!("the database flush failed: {e}");
                self.sled_failed(reason.clone());
                Err(reason)
            }
            None => {
                let reason = format!(
                    "the database flush did not finish within {:?}",
                    self.options.flush_timeout
                );
                self.fail(Stage::Stalled { since: began }, reason.clone());
                Err(reason)
            }
        }
    }

    /// sled failed a write (`cause`): the instance never writes again, so
    /// it is retired at once, and writes are refused.
    pub fn sled_failed(&mut self, cause: String) {
        let (stage, reason) = self.retire(cause);
        self.fail(stage, reason);
    }

    /// A failing guard looks for a way back; call it once per
    /// [`GuardOptions::probe_interval`] (see [`Guard::next_probe`]) while
    /// [`Guard::failing`].
    pub fn probe(&mut self) -> Option<Recovered<R>> {
        let Failure { stage, reason, .. } = self.failure.take()?;
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
                    recovered = Some(Recovered::Flushed);
                    match self.room(self.options.min_free_bytes) {
                        Ok(()) => {
                            self.resume("the stalled flush finished");
                            return recovered;
                        }
                        Err(short) => (Stage::LowSpace, short),
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
                    self.health.count_reopen();
                    self.reopen_failures = 0;
                    self.resume("the database was reopened");
                    return Some(Recovered::Reopened(handles));
                }
                Some(Ok(Err(e)) | Err(e)) => {
                    self.reopen_failures += 1;
                    if self.reopen_failures.is_power_of_two() {
                        (self.owner.log)(Event::ReopenFailed {
                            error: &e,
                            failures: self.reopen_failures,
                        });
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
            next_probe: Instant::now() + self.options.probe_interval,
        });
        recovered
    }

    /// Stops accepting writes (or, already failing, moves to `stage`),
    /// telling writes `reason`.
    fn fail(&mut self, stage: Stage<R>, reason: String) {
        (self.owner.log)(match self.failure {
            None => Event::Stopped { reason: &reason },
            Some(_) => Event::StillRefusing { reason: &reason },
        });
        self.health.failing(&reason);
        self.failure = Some(Failure {
            stage,
            reason,
            next_probe: Instant::now() + self.options.probe_interval,
        });
    }

    /// Accepts writes again.
    fn resume(&mut self, why: &str) {
        (self.owner.log)(Event::Resumed { why });
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

    /// Starts retiring the failed instance on a helper thread.
    fn retire(&mut self, cause: String) -> (Stage<R>, String) {
        let (db_dir, old, owner) = (self.db_dir.clone(), self.db.clone(), self.owner);
        let work = move || recovery::retire(&db_dir, old, owner.fence_thread, owner.restart);
        match Pending::spawn(self.owner.retire_thread, work) {
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
    fn wedged(&self, cause: &str, why: &str) -> (Stage<R>, String) {
        let reason = format!("{cause}; {why}; restart {} to recover", self.owner.restart);
        (self.owner.log)(Event::Wedged { reason: &reason });
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
        (self.owner.log)(Event::Reopening { cause: &cause });
        let (db_dir, reopen, thread) = (
            self.db_dir.clone(),
            self.reopen.clone(),
            self.owner.flush_thread,
        );
        let work = move || {
            let (handles, db) = recovery::open_when_unlocked(&db_dir, &*reopen)?;
            // What the new instance recovered may be pages the old one
            // wrote and never synced, read from the page cache.
            crate::disk::sync_all_under(&db_dir)
                .map_err(|e| format!("cannot sync the reopened database: {e}"))?;
            let flusher = Flusher::start(db.clone(), &db_dir, thread)
                .map_err(|e| format!("cannot start the flush thread: {e}"))?;
            Ok((handles, db, flusher))
        };
        match Pending::spawn(self.owner.reopen_thread, work) {
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

/// Defines `fn NAME(event: Event<'_>)`, the [`Owner::log`] that logs a
/// guard's events under `target` (tracing wants a target fixed at compile
/// time, so each owner names its own); `stopped` is what the first
/// failure says.
#[macro_export]
macro_rules! event_logger {
    ($vis:vis fn $name:ident, target: $target:literal, stopped: $stopped:literal $(,)?) => {
        $vis fn $name(event: $crate::Event<'_>) {
            match event {
                $crate::Event::Stopped { reason } => {
                    $crate::__tracing::error!(target: $target, reason = %reason, $stopped);
                }
                $crate::Event::StillRefusing { reason } => {
                    $crate::__tracing::warn!(target: $target, reason = %reason, "the database still refuses writes");
                }
                $crate::Event::Resumed { why } => {
                    $crate::__tracing::warn!(target: $target, why, "the database accepts writes again");
                }
                $crate::Event::Reopening { cause } => {
                    $crate::__tracing::warn!(target: $target, cause = %cause, "reopening the database");
                }
                $crate::Event::ReopenFailed { error, failures } => {
                    $crate::__tracing::warn!(target: $target, error = %error, failures, "reopening the database failed; trying again");
                }
                $crate::Event::Wedged { reason } => {
                    $crate::__tracing::error!(target: $target, reason = %reason, "the database cannot recover by itself");
                }
            }
        }
    };
}
