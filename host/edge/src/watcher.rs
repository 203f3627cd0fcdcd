//! Watches the modules folder (notify) and re-syncs a function once its
//! file has settled, so half-written files are never loaded.

use crate::deployer::Deployer;
use crate::modules::{self, FileKind};
use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Debounce timing for module files.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Quiet period after a rename, delete or metadata change.
    pub debounce: Duration,
    /// Quiet period for a file being written but not yet closed.
    pub max_wait: Duration,
}

/// A file with changes not yet acted on.
#[derive(Debug)]
struct Pending {
    /// When to sync, unless another event pushes it back.
    due: Instant,
}

/// Keeps the watcher alive; dropping it stops watching.
pub struct WatchHandle {
    _watcher: RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching. Call before the initial scan so no change slips between
/// the scan and the first event.
pub fn watch(deployer: Arc<Deployer>, timing: Timing) -> notify::Result<WatchHandle> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event| {
        let _ = tx.send(event);
    })?;
    watcher.watch(deployer.modules().path(), RecursiveMode::NonRecursive)?;
    let task = tokio::spawn(run(deployer, timing, rx));
    Ok(WatchHandle {
        _watcher: watcher,
        task,
    })
}

/// How long to wait after `event` before the file can be trusted.
fn settle_after(event: &notify::Event, timing: Timing) -> Option<Duration> {
    match &event.kind {
        // A new symlink is complete the moment it exists; no close follows.
        // A symlink or a hard link (how cargo puts `target/.../NAME.wasm`
        // beside `deps/`) is whole the moment it appears.
        EventKind::Create(_)
            if event.paths.iter().all(|p| {
                p.symlink_metadata().is_ok_and(|m| {
                    use std::os::unix::fs::MetadataExt;
                    m.is_symlink() || (m.is_file() && m.nlink() > 1)
                })
            }) =>
        {
            Some(timing.debounce)
        }
        // The writer closed the file: its content is complete.
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Some(timing.debounce / 4),
        // Our own reads (and anyone else's) produce open/close-read events.
        EventKind::Access(_) => None,
        // Bytes are arriving: wait for the close, or for a long quiet spell.
        EventKind::Create(_) | EventKind::Modify(ModifyKind::Data(_)) => Some(timing.max_wait),
        _ => Some(timing.debounce),
    }
}

async fn run(
    deployer: Arc<Deployer>,
    timing: Timing,
    mut events: mpsc::UnboundedReceiver<notify::Result<notify::Event>>,
) {
    let mut pending: HashMap<String, Pending> = HashMap::new();
    let mut warned: HashSet<String> = HashSet::new();
    let mut syncs = tokio::task::JoinSet::new();
    loop {
        let next_due = pending.values().map(|p| p.due).min();
        let mut rescan = false;
        tokio::select! {
            event = events.recv() => match event {
                None => return,
                Some(Err(e)) => {
                    tracing::warn!(target: "outpost::watcher", error = %e, "file watcher error; rescanning the modules folder");
                    rescan = true;
                }
                Some(Ok(event)) => {
                    rescan = event.need_rescan();
                    let Some(settle) = settle_after(&event, timing) else { continue };
                    for path in &event.paths {
                        let Some(file_name) = path.file_name() else { continue };
                        match modules::classify(file_name) {
                            // A settings change re-syncs its function.
                            FileKind::Function(name) | FileKind::Settings(name) => {
                                pending.insert(name.to_owned(), Pending { due: Instant::now() + settle });
                            }
                            kind @ (FileKind::BadName | FileKind::Other) => {
                                let file = file_name.to_string_lossy().into_owned();
                                if !matches!(event.kind, EventKind::Remove(_)) && warned.insert(file.clone()) {
                                    modules::log_skipped(true, &file, kind == FileKind::BadName);
                                }
                            }
                        }
                    }
                }
            },
            _ = tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now)), if next_due.is_some() => {}
            Some(_) = syncs.join_next(), if !syncs.is_empty() => {}
        }
        if rescan {
            let deployer = deployer.clone();
            syncs.spawn(async move {
                if let Err(e) = deployer.sync_all().await {
                    tracing::error!(target: "outpost::watcher", error = %e, "cannot rescan the modules folder");
                }
            });
        }
        let now = Instant::now();
        let due: Vec<String> = pending
            .iter()
            .filter(|(_, p)| p.due <= now)
            .map(|(name, _)| name.clone())
            .collect();
        for name in due {
            pending.remove(&name);
            let deployer = deployer.clone();
            // `sync` serialises per name, so back-to-back changes queue up
            // rather than race.
            syncs.spawn(async move {
                deployer.sync(&name).await;
            });
        }
    }
}
