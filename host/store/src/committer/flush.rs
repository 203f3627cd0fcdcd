//! The flush, on its own thread. sled's flush can block forever after a
//! failed write (see [`super::recovery`]); on a thread of its own the
//! writer can stop waiting for it, answer its group, and keep answering
//! later writes while it hangs.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

/// One sled instance's flush thread. It ends when this is dropped and its
/// current flush (if any) returns.
pub(super) struct Flusher {
    start: mpsc::Sender<()>,
    done: mpsc::Receiver<Result<(), String>>,
    /// A flush was started and has not been waited out yet.
    running: bool,
}

impl Flusher {
    /// Starts the flush thread of `db`, which lives in `db_dir`.
    pub(super) fn start(db: sled::Db, db_dir: &Path) -> std::io::Result<Self> {
        let (start, requests) = mpsc::channel::<()>();
        let (finished, done) = mpsc::channel();
        #[cfg(test)]
        let db_dir = db_dir.to_owned();
        #[cfg(not(test))]
        let _ = db_dir;
        std::thread::Builder::new()
            .name("outpost-flush".into())
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

    /// Flushes everything applied so far, waiting at most `bound`; `None`
    /// if the flush is still running then (see [`Flusher::wait`]).
    pub(super) fn flush(&mut self, bound: Duration) -> Option<Result<(), String>> {
        if !self.running {
            if self.start.send(()).is_err() {
                return Some(Err("the flush thread stopped".into()));
            }
            self.running = true;
        }
        self.wait(bound)
    }

    /// Waits at most `bound` more for the flush in progress; `None` if it
    /// is still running.
    pub(super) fn wait(&mut self, bound: Duration) -> Option<Result<(), String>> {
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

        /// Whether a flush is being held.
        pub(crate) fn holding(&self) -> bool {
            let state = self.state.lock().unwrap();
            state.0 && !state.1
        }
    }

    /// The next flush of the database in `db_dir` (as given to `Storage`'s
    /// open, plus `/db`) waits until the returned gate is released; later
    /// flushes pass.
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
