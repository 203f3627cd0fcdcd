//! The flush, on its own thread. sled's flush can block forever after a
//! failed write (see [`crate::recovery`]); on a thread of its own the
//! writer can stop waiting for it, answer its writes, and keep answering
//! later writes while it hangs.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

/// One sled instance's flush thread. It ends when this is dropped and its
/// current flush (if any) returns.
pub(crate) struct Flusher {
    start: mpsc::Sender<()>,
    done: mpsc::Receiver<Result<(), String>>,
    /// A flush was started and has not been waited out yet.
    running: bool,
}

impl Flusher {
    /// Starts the flush thread (named `thread`) of `db`, which lives in
    /// `db_dir`.
    pub(crate) fn start(db: sled::Db, db_dir: &Path, thread: &str) -> std::io::Result<Self> {
        let (start, requests) = mpsc::channel::<()>();
        let (finished, done) = mpsc::channel();
        #[cfg(feature = "test-support")]
        let db_dir = db_dir.to_owned();
        #[cfg(not(feature = "test-support"))]
        let _ = db_dir;
        std::thread::Builder::new()
            .name(thread.into())
            .spawn(move || {
                while requests.recv().is_ok() {
                    #[cfg(feature = "test-support")]
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
    pub(crate) fn flush(&mut self, bound: Duration) -> Option<Result<(), String>> {
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
    pub(crate) fn wait(&mut self, bound: Duration) -> Option<Result<(), String>> {
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

/// Test hook (feature `test-support`): holds a database's next flush, as
/// a disk that stops answering would.
#[cfg(feature = "test-support")]
pub mod gate {
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Condvar, Mutex};

    static GATES: Mutex<Vec<(PathBuf, Arc<Gate>)>> = Mutex::new(Vec::new());

    /// Holds the flush it caught until released.
    #[derive(Default)]
    pub struct Gate {
        /// (a flush was caught, released)
        state: Mutex<(bool, bool)>,
        changed: Condvar,
    }

    impl Gate {
        /// Lets the held flush (and any later one) go.
        pub fn release(&self) {
            self.state.lock().unwrap().1 = true;
            self.changed.notify_all();
        }

        /// Whether a flush is being held.
        pub fn holding(&self) -> bool {
            let state = self.state.lock().unwrap();
            state.0 && !state.1
        }
    }

    /// The next flush of the sled database in `db_dir` (the directory its
    /// guard was given) waits until the returned gate is released; later
    /// flushes pass.
    pub fn hold_next_flush(db_dir: &Path) -> Arc<Gate> {
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
