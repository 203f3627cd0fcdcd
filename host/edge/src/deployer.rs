//! Brings the registry in line with the modules folder, one function name
//! at a time: load new or changed files, drop deleted ones, keep the last
//! good version when a file is bad.

use crate::activity::{Activity, EventKind};
use crate::function_config::{FunctionConfig, FunctionConfigError};
use crate::load_failures::LoadFailures;
use crate::loader::{self, LoadError, Loader, Settings};
use crate::metrics::{Metrics, SourceLabels};
use crate::modules::{ModulesDir, ReadError};
use crate::registry::Registry;
use outpost_caps::kv::Catalog;
use std::collections::HashSet;
use std::sync::Arc;

/// What one [`Deployer::sync`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// First version of the name is now serving.
    Loaded,
    /// A new version replaced the serving one.
    Reloaded,
    /// The file's bytes match what is serving (or what already failed).
    Unchanged,
    /// The file is gone; so is the route.
    Removed,
    /// No file and no route.
    Absent,
    /// The file could not be loaded; any previous version keeps serving.
    Failed,
}

#[derive(Debug, thiserror::Error)]
enum DeployError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Load(#[from] LoadError),
    /// `file` is `NAME.toml`; the message is folded onto one line (TOML's
    /// own spans several, with a caret under the fault).
    #[error("{file}: {}", outpost_http::reply::one_line(&.source.to_string()))]
    Settings {
        file: String,
        source: FunctionConfigError,
    },
}

pub struct Deployer {
    loader: Arc<Loader>,
    registry: Arc<Registry>,
    /// Recomputed from the registry after every change.
    catalog: Arc<Catalog>,
    modules: ModulesDir,
    /// Where loads, reloads and failures are reported for the admin API.
    activity: Arc<Activity>,
    metrics: Arc<Metrics>,
    /// Names whose latest files failed to load, shared with the listener.
    failed: Arc<LoadFailures>,
    /// Names whose sync is running; a second sync of the same name waits so
    /// an older load can never overwrite a newer one.
    busy: tokio::sync::Mutex<HashSet<String>>,
    busy_changed: tokio::sync::Notify,
    /// Told of every deploy and removal, to drop what older versions
    /// cached.
    cache: Option<Arc<crate::http_cache::HttpCache>>,
}

impl Deployer {
    /// Recomputes which stores replicate from the functions serving now.
    fn rebuild_catalog(&self) {
        let functions = self.registry.functions();
        self.catalog
            .rebuild(functions.iter().map(|f| &*f.policy.kv));
    }

    pub fn new(
        loader: Arc<Loader>,
        registry: Arc<Registry>,
        catalog: Arc<Catalog>,
        modules: ModulesDir,
        activity: Arc<Activity>,
        metrics: Arc<Metrics>,
        cache: Option<Arc<crate::http_cache::HttpCache>>,
    ) -> Self {
        Self {
            loader,
            registry,
            catalog,
            modules,
            activity,
            metrics,
            failed: Arc::new(LoadFailures::default()),
            busy: tokio::sync::Mutex::new(HashSet::new()),
            busy_changed: tokio::sync::Notify::new(),
            cache,
        }
    }

    /// The names whose latest files failed to load, for the listener.
    pub fn failures(&self) -> Arc<LoadFailures> {
        self.failed.clone()
    }

    pub fn modules(&self) -> &ModulesDir {
        &self.modules
    }

    /// Makes the route for `name` match the file `NAME.wasm` right now.
    pub async fn sync(self: &Arc<Self>, name: &str) -> Outcome {
        loop {
            let notified = self.busy_changed.notified();
            if self.busy.lock().await.insert(name.to_owned()) {
                break;
            }
            notified.await;
        }
        let this = self.clone();
        let owned = name.to_owned();
        let outcome = tokio::task::spawn_blocking(move || this.sync_blocking(&owned))
            .await
            .unwrap_or_else(|e| {
                tracing::error!(target: "outpost::deployer", function = %name, error = %e, "load task panicked");
                Outcome::Failed
            });
        self.busy.lock().await.remove(name);
        self.busy_changed.notify_waiters();
        outcome
    }

    /// Syncs every function in the folder, concurrently, and drops routes
    /// whose file is gone. Returns how many functions are serving.
    pub async fn sync_all(self: &Arc<Self>) -> std::io::Result<usize> {
        let (names, skipped) = self.modules.list()?;
        for skip in skipped {
            crate::modules::log_skipped(false, &skip.file, skip.looks_like_a_function);
        }
        let mut stale: HashSet<String> = self.registry.names().into_iter().collect();
        let mut tasks = tokio::task::JoinSet::new();
        for name in names {
            stale.remove(&name);
            let this = self.clone();
            tasks.spawn(async move { this.sync(&name).await });
        }
        for name in stale {
            let this = self.clone();
            tasks.spawn(async move { this.sync(&name).await });
        }
        tasks.join_all().await;
        Ok(self.registry.len())
    }

    fn sync_blocking(&self, name: &str) -> Outcome {
        let bytes = match self.modules.read(name) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                self.failed.clear(name);
                let removed = self.registry.remove(name);
                if let Some(cache) = &self.cache {
                    cache.purge(&crate::http_cache::Purge::Function(name.to_owned()));
                }
                self.rebuild_catalog();
                return match removed {
                    Some(old) => {
                        tracing::info!(target: "outpost::deployer", function = %name, version = %old.short_hash(), "removed: file deleted, route now answers 404");
                        let mut event = Activity::event(name, EventKind::Removed);
                        event.version = Some(old.short_hash().to_owned());
                        self.activity.record(event);
                        Outcome::Removed
                    }
                    None => Outcome::Absent,
                };
            }
            Err(e) => return self.report_failure(name, None, e.into()),
        };
        let sha256 = loader::sha256_hex(&bytes);
        let settings = match self.read_settings(name) {
            Ok(settings) => settings,
            Err(e) => return self.report_failure(name, Some(sha256), e),
        };
        let identity = format!("{sha256}+{}", settings.sha256);
        let current = self.registry.get(name);
        if current
            .as_ref()
            .is_some_and(|f| f.sha256 == sha256 && f.settings_sha256 == settings.sha256)
        {
            // Back to what serves (a bad edit undone): no failure stands.
            if self.failed.clear(name) {
                tracing::info!(target: "outpost::deployer", function = %name, "files back to the serving version; the load error no longer stands");
                let mut event = Activity::event(name, EventKind::Restored);
                event.version = current.as_ref().map(|f| f.short_hash().to_owned());
                self.activity.record(event);
            }
            return Outcome::Unchanged;
        }
        if self.failed.already_failed(name, &identity) {
            return Outcome::Unchanged;
        }
        let loaded = match current.as_ref().filter(|f| f.sha256 == sha256) {
            // Only the settings changed: same code, new policy.
            Some(current) => self
                .loader
                .policy(name, &settings)
                .map(|policy| current.with_settings(settings.sha256.clone(), policy)),
            None => self
                .loader
                .load(name, &bytes, &settings, self.activity.stats(name)),
        };
        match loaded {
            Ok(function) => {
                let function = Arc::new(function);
                self.failed.clear(name);
                let previous = self.registry.publish(function.clone());
                if let Some(cache) = &self.cache {
                    cache.deployed(&function);
                }
                self.rebuild_catalog();
                tracing::info!(target: "outpost::deployer",
                    function = %name,
                    version = %function.short_hash(),
                    source = %function.origin.as_str(),
                    ms = function.load_time.as_millis() as u64,
                    replaced = %previous.as_ref().map_or("-", |p| p.short_hash()),
                    settings = %&function.settings_sha256[..12],
                    "{}",
                    if previous.is_some() { "reloaded" } else { "loaded" }
                );
                let code_changed = previous
                    .as_ref()
                    .is_none_or(|p| p.sha256 != function.sha256);
                let kind = match &previous {
                    None => EventKind::Loaded,
                    Some(_) if code_changed => EventKind::Reloaded,
                    Some(_) => EventKind::Settings,
                };
                let mut event = Activity::event(name, kind);
                event.version = Some(function.short_hash().to_owned());
                if code_changed {
                    let source = function.origin.as_str();
                    self.metrics
                        .loads
                        .get_or_create(&SourceLabels { source })
                        .inc();
                    event.source = Some(source);
                    event.ms = Some(function.load_time.as_millis() as u64);
                }
                self.activity.record(event);
                if previous.is_some() {
                    Outcome::Reloaded
                } else {
                    Outcome::Loaded
                }
            }
            Err(e) => self.report_failure(name, Some(identity), e.into()),
        }
    }

    /// Reads and parses `NAME.toml`; no file means default settings.
    fn read_settings(&self, name: &str) -> Result<Settings, DeployError> {
        let bytes = self.modules.read_settings(name)?.unwrap_or_default();
        let settings_error = |source| DeployError::Settings {
            file: format!("{name}.toml"),
            source,
        };
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| settings_error(FunctionConfigError::Parse("not UTF-8".into())))?;
        Ok(Settings {
            sha256: loader::sha256_hex(&bytes),
            config: FunctionConfig::parse(text).map_err(settings_error)?,
        })
    }

    /// Logs why `name` failed; `identity` (`sha256+settings`) is remembered
    /// so the same files are not retried.
    fn report_failure(&self, name: &str, identity: Option<String>, error: DeployError) -> Outcome {
        // Recorded before the log line, so whoever sees the line sees the
        // 503 too. A secret can become readable while the files stay the
        // same: not remembered by identity, so the next event for the name
        // (a `touch`) tries again.
        let remembered = identity
            .clone()
            .filter(|_| !matches!(error, DeployError::Load(LoadError::Secret(_))));
        self.failed.record(name, remembered);
        let serving = self.registry.get(name);
        let message = error.to_string();
        // The admin API's last error too, for the same reason.
        self.metrics.load_failures.inc();
        let mut event = Activity::event(name, EventKind::Failed);
        event.version = identity.as_deref().map(|s| s[..12].to_owned());
        event.message = Some(message.clone());
        self.activity.record(event);
        match &serving {
            Some(old) => tracing::error!(target: "outpost::deployer",
                function = %name,
                version = %identity.as_deref().map_or("-", |s| &s[..12]),
                error = %message,
                "load failed; previous version {} keeps serving",
                old.short_hash()
            ),
            None => tracing::error!(target: "outpost::deployer",
                function = %name,
                version = %identity.as_deref().map_or("-", |s| &s[..12]),
                error = %message,
                "load failed; function not served"
            ),
        }
        Outcome::Failed
    }
}
