//! Turns a module file's bytes into a [`Function`]: hash, code cache or
//! compile, validate against the host's linker, then the same machine code
//! linked into every other engine (one per core).

use crate::activity::FunctionStats;
use crate::cache::CodeCache;
use crate::function::{Function, Origin};
use crate::function_config::FunctionConfig;
use crate::function_env::FunctionEnv;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::state::RequestState;
use outpost_caps::Services;
use outpost_caps::cache::{CachePolicy, Purger};
use outpost_caps::kv::{KvLimits, KvPolicy};
use outpost_caps::queue::QueuePolicy;
use sha2::{Digest, Sha256};
use std::cell::OnceCell;
use std::sync::Arc;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant, SystemTime};
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

/// How often a long compile logs that it is still going.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Why a module file was not (re)deployed. The previous version, if any,
/// keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("file is empty")]
    Empty,
    #[error("not a WebAssembly binary (bad magic number)")]
    NotWasm,
    #[error(
        "a core WebAssembly module, not a component: build for wasm32-wasip2, or wrap it with `wasm-tools component new`"
    )]
    CoreModule,
    #[error("invalid component: {0}")]
    Invalid(String),
    #[error("imports something Outpost does not provide: {0}")]
    UnknownImport(String),
    #[error("does not export wasi:http/incoming-handler@0.2.x: {0}")]
    NoHandler(String),
    #[error(transparent)]
    Limits(#[from] crate::limits::AboveHostLimit),
    #[error(transparent)]
    KvLimits(#[from] outpost_caps::kv::KvSettingsError),
    /// A secret the settings name cannot be read (never carries a value).
    #[error(transparent)]
    Secret(#[from] crate::function_env::SecretError),
    #[error("cannot load the compiled code into engine {engine}: {message}")]
    OtherEngine { engine: usize, message: String },
}

/// Everything needed to load modules; shared by the initial scan and the
/// watcher, used from the blocking pool.
pub struct Loader {
    /// One per serving core (see [`crate::engine`]). The first compiles;
    /// the others load the machine code it made.
    engines: Vec<Engine>,
    /// One per engine, in the same order.
    linkers: Vec<Linker<RequestState>>,
    cache: CodeCache,
    services: Arc<Services>,
    /// Host-wide KV limits; a function's settings may override them.
    kv_limits: KvLimits,
    /// Host-wide request limits; a function's settings may only lower them.
    limits: Limits,
    metrics: Arc<Metrics>,
    /// The node's HTTP cache as `outpost:edge/cache` purges it; none
    /// without one (see [`Loader::with_purger`]).
    purger: Option<Arc<dyn Purger>>,
}

/// A function's parsed settings file and its hash.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Hex SHA-256 of the file's bytes (of nothing if there is no file).
    pub sha256: String,
    pub config: FunctionConfig,
}

/// The hex SHA-256 of a module file's bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Rejects what is obviously not a component before handing it to the
/// compiler, so the log says what is wrong in plain words.
fn check_header(bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.is_empty() {
        return Err(LoadError::Empty);
    }
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::NotWasm);
    }
    // Bytes 6..8 are the "layer": 0 for a core module, 1 for a component.
    match u16::from_le_bytes([bytes[6], bytes[7]]) {
        0 => Err(LoadError::CoreModule),
        _ => Ok(()),
    }
}

impl Loader {
    /// `engines` must not be empty, and must all be built alike (by
    /// [`crate::engine::build`]): they share compiled code and `cache`.
    pub fn new(
        engines: Vec<Engine>,
        cache: CodeCache,
        services: Arc<Services>,
        kv_limits: KvLimits,
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!engines.is_empty(), "a loader needs an engine");
        let linkers = engines
            .iter()
            .map(crate::linker::build)
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            engines,
            linkers,
            cache,
            services,
            kv_limits,
            limits,
            metrics,
            purger: None,
        })
    }

    /// The node's HTTP cache, for the versions this loader makes to purge
    /// their own entries from; without one (the default) a purge answers
    /// `unavailable`.
    pub fn with_purger(mut self, purger: Option<Arc<dyn Purger>>) -> Self {
        self.purger = purger;
        self
    }

    /// What `settings` allow function `name`, within the host's limits.
    /// Reads the function's secrets from the host (so a secret changes
    /// with the next settings reload): a missing one is an error.
    pub fn policy(&self, name: &str, settings: &Settings) -> Result<Policy, LoadError> {
        let kv = KvPolicy::new(name, &settings.config.kv, self.kv_limits)?;
        let limits = self.limits.narrowed(&settings.config.limits)?;
        let env = FunctionEnv::resolve(&settings.config.env, &settings.config.secrets)?;
        Ok(Policy {
            queue: QueuePolicy {
                max_payload_bytes: kv.limits.max_value_bytes,
            },
            kv: Arc::new(kv),
            limits,
            allowed_hosts: settings.config.allowed_hosts().into(),
            env: Arc::new(env),
            cache: settings.config.cache,
            purge: CachePolicy::new(self.purger.clone()),
        })
    }

    /// The engine that compiles (and the only one with `--engines 1`).
    pub fn engine(&self) -> &Engine {
        &self.engines[0]
    }

    /// Loads one version. Blocking (compiles on a miss): call it from the
    /// blocking pool, never from a request.
    pub fn load(
        &self,
        name: &str,
        bytes: &[u8],
        settings: &Settings,
        stats: Arc<FunctionStats>,
    ) -> Result<Function, LoadError> {
        let started = Instant::now();
        let policy = self.policy(name, settings)?;
        check_header(bytes)?;
        let sha256 = sha256_hex(bytes);
        let (component, origin) = match self.cache.get(self.engine(), &sha256) {
            Some(component) => (component, Origin::Cache),
            None => (self.compile(name, bytes)?, Origin::Compiled),
        };
        if tracing::enabled!(target: "outpost::loader", tracing::Level::DEBUG) {
            let ty = component.component_type();
            let imports: Vec<&str> = ty.imports(self.engine()).map(|(name, _)| name).collect();
            tracing::debug!(target: "outpost::loader", function = %name, imports = %imports.join(","), "component imports");
        }
        let first = link(&self.linkers[0], &component)?;
        if origin == Origin::Compiled {
            // Only valid functions are cached; a failed write costs a
            // recompile next start, nothing more.
            if let Err(e) = self.cache.put(&sha256, &component) {
                tracing::warn!(target: "outpost::loader", function = %name, error = %format!("{e:#}"), "cannot write compiled code to the cache");
            }
        }
        let mut pres = Vec::with_capacity(self.engines.len());
        pres.push(first.clone());
        let serialized = OnceCell::new();
        for index in 1..self.engines.len() {
            match self.load_into(index, &sha256, &component, &serialized) {
                Ok(pre) => pres.push(pre),
                // The version is valid and linked on the first engine:
                // this core instantiates from that one instead (slower,
                // never wrong; a store always takes its `pre`'s engine).
                Err(e) => {
                    tracing::warn!(target: "outpost::loader", function = %name, engine = index, error = %e, "this engine shares the first engine's copy of the function");
                    pres.push(first.clone());
                }
            }
        }
        Ok(Function {
            name: Arc::from(name),
            sha256,
            settings_sha256: settings.sha256.clone(),
            policy,
            services: self.services.clone(),
            pres: pres.into(),
            origin,
            loaded_at: SystemTime::now(),
            load_time: started.elapsed(),
            stats,
        })
    }

    /// The same machine code as `component` (already linked on the first
    /// engine), for engine `index`: mapped from the cache file when there
    /// is one, so the engines share its pages, else copied in memory from
    /// `serialized` (made once for all the engines).
    fn load_into(
        &self,
        index: usize,
        sha256: &str,
        component: &Component,
        serialized: &OnceCell<Vec<u8>>,
    ) -> Result<ProxyPre<RequestState>, LoadError> {
        let engine = &self.engines[index];
        let other = |e: wasmtime::Error| LoadError::OtherEngine {
            engine: index,
            message: format!("{e:#}"),
        };
        let copy = match self.cache.read(engine, sha256) {
            Some(copy) => copy.map_err(other)?,
            None => {
                let bytes = match serialized.get() {
                    Some(bytes) => bytes,
                    None => {
                        let bytes = component.serialize().map_err(other)?;
                        serialized.get_or_init(|| bytes)
                    }
                };
                // SAFETY: `bytes` were serialized by the first engine, which
                // is configured exactly like this one (same compat hash),
                // from a component it compiled or validated.
                unsafe { Component::deserialize(engine, bytes) }.map_err(other)?
            }
        };
        link(&self.linkers[index], &copy)
    }

    /// Compiles a module that is not in the cache. Large components take
    /// seconds, so the log says when a compile starts and, every
    /// [`PROGRESS_EVERY`], that it is still going.
    fn compile(&self, name: &str, bytes: &[u8]) -> Result<Component, LoadError> {
        let started = Instant::now();
        tracing::info!(target: "outpost::loader", function = %name, bytes = bytes.len(), "compiling: not in the cache");
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let compiled = std::thread::scope(|scope| {
            scope.spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = finished.recv_timeout(PROGRESS_EVERY) {
                    tracing::info!(target: "outpost::loader",
                        function = %name,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "still compiling"
                    );
                }
            });
            let compiled = Component::from_binary(self.engine(), bytes);
            drop(done);
            compiled
        });
        self.metrics.compile_duration.observe(started.elapsed());
        compiled.map_err(|e| LoadError::Invalid(format!("{e:#}")))
    }
}

/// Links `component` against the host's imports and checks it exports the
/// wasi:http handler.
fn link(
    linker: &Linker<RequestState>,
    component: &Component,
) -> Result<ProxyPre<RequestState>, LoadError> {
    let pre = linker
        .instantiate_pre(component)
        .map_err(|e| LoadError::UnknownImport(format!("{e:#}")))?;
    ProxyPre::new(pre).map_err(|e| LoadError::NoHandler(format!("{e:#}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_check_names_the_problem() {
        assert!(matches!(check_header(b""), Err(LoadError::Empty)));
        assert!(matches!(
            check_header(b"hello world"),
            Err(LoadError::NotWasm)
        ));
        assert!(matches!(
            check_header(b"\0asm\x01\0\0\0"),
            Err(LoadError::CoreModule)
        ));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
    }

    /// The example `hello`, built by `cargo xtask test` (or `guests`) into
    /// the target dir this test binary runs from (`target/debug/deps/`),
    /// wherever `CARGO_TARGET_DIR` puts it.
    fn hello_bytes() -> Vec<u8> {
        let exe = std::env::current_exe().unwrap();
        let target = exe
            .ancestors()
            .nth(3)
            .expect("the test binary lives in target/<profile>/deps");
        let path = target.join("wasm32-wasip2/guest/hello.wasm");
        std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run the suite with `cargo xtask test`",
                path.display()
            )
        })
    }

    /// A loader over three engines and a cache in `data`.
    fn three_engine_loader(data: &std::path::Path) -> (Loader, Vec<Engine>, CodeCache) {
        let config = crate::config::ServeConfig {
            engines: 3,
            allocator: crate::config::AllocatorChoice::OnDemand,
            ..Default::default()
        };
        let (engines, _) = crate::engine::build(&config).unwrap();
        assert_eq!(engines.len(), 3);
        let cache = CodeCache::open(data, &engines[0]).unwrap();
        let storage = outpost_store::Storage::open(data, Some("test")).unwrap();
        let services = Arc::new(Services {
            catalog: Arc::new(outpost_caps::kv::Catalog::new(
                Default::default(),
                storage.clone(),
            )),
            storage,
            ops: Default::default(),
            link: Default::default(),
        });
        let loader = Loader::new(
            engines.clone(),
            cache.clone(),
            services,
            KvLimits::default(),
            Limits::default(),
            Metrics::new(),
        )
        .unwrap();
        (loader, engines, cache)
    }

    #[test]
    fn a_version_is_compiled_once_and_linked_into_every_engine() {
        let data = tempfile::tempdir().unwrap();
        let (loader, engines, cache) = three_engine_loader(data.path());
        let bytes = hello_bytes();
        let cached = || {
            std::fs::read_dir(cache.dir())
                .unwrap()
                .filter(|e| {
                    let name = e.as_ref().unwrap().file_name();
                    name.to_string_lossy().ends_with(".cwasm")
                })
                .count()
        };
        for expected in [Origin::Compiled, Origin::Cache] {
            let function = loader
                .load(
                    "hello",
                    &bytes,
                    &Settings::default(),
                    FunctionStats::detached(),
                )
                .unwrap();
            assert_eq!(function.origin, expected);
            assert_eq!(function.pres.len(), engines.len());
            for (pre, engine) in function.pres.iter().zip(&engines) {
                assert!(Engine::same(pre.engine(), engine));
            }
            // One compile, one cache entry, whatever the number of engines.
            assert_eq!(cached(), 1);
        }
    }

    #[test]
    fn without_a_cache_file_the_other_engines_get_an_in_memory_copy() {
        let data = tempfile::tempdir().unwrap();
        let (loader, engines, cache) = three_engine_loader(data.path());
        // The cache cannot be written: the copies come from `serialize`.
        std::fs::remove_dir_all(cache.dir()).unwrap();
        let function = loader
            .load(
                "hello",
                &hello_bytes(),
                &Settings::default(),
                FunctionStats::detached(),
            )
            .unwrap();
        assert_eq!(function.origin, Origin::Compiled);
        assert!(!cache.dir().exists());
        for (pre, engine) in function.pres.iter().zip(&engines) {
            assert!(Engine::same(pre.engine(), engine));
        }
    }
}
