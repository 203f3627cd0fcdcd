//! Host settings for `outpost serve`, resolved from flags, then
//! `outpost.toml`, then `OUTPOST_*` environment variables, then defaults.

use crate::limits::{Limits, LimitsSection};
use outpost_caps::kv::KvLimits;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// Errors resolving the host configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value {value:?} for {key}: {message}")]
    Value {
        key: &'static str,
        value: String,
        message: String,
    },
}

/// Which instance allocator the engine uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AllocatorChoice {
    /// Pooling if its address space can be reserved, otherwise on-demand.
    Auto,
    /// Pooling or fail to start.
    Pooling,
    /// On-demand allocation (mmap per instance); slower, needs little address space.
    OnDemand,
}

impl FromStr for AllocatorChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        <Self as clap::ValueEnum>::from_str(s, true)
    }
}

/// Resolved settings for one `outpost serve` process.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    /// Folder of `NAME.wasm` functions, watched for changes.
    pub modules_dir: PathBuf,
    /// Node-local state: the compiled-code cache (and, later, the sled database).
    pub data_dir: PathBuf,
    /// How long in-flight requests may run after SIGINT/SIGTERM before the
    /// process exits anyway.
    pub shutdown_grace: Duration,
    /// Quiet period after the last change to a module file before it is loaded.
    pub reload_debounce: Duration,
    /// Longest wait for a file that was opened for writing and not yet closed;
    /// after this much quiet it is loaded anyway.
    pub reload_max_wait: Duration,
    pub allocator: AllocatorChoice,
    /// Instances that may exist at once (the pooling allocator's size).
    pub max_instances: u32,
    /// Wasmtime engines: one per core that serves requests. Each has its own
    /// instance pool (of `max_instances` slots) and its own copy of every
    /// function's compiled code.
    pub engines: usize,
    /// This node's id in replication; `None`: the stored or a generated one.
    pub node_id: Option<String>,
    /// Base URL of the cloud tier, or several replicas' separated by
    /// commas (checked by the cloud client, which moves to the next when
    /// one fails); `None`: no shipping or pulling (the outbox keeps
    /// growing on disk until a cloud is configured).
    pub cloud: Option<String>,
    pub cloud_token: Option<String>,
    /// PEM file of the CA(s) an https cloud's certificate must chain to,
    /// instead of the public roots; `None`: the `webpki-roots` set.
    pub cloud_ca: Option<PathBuf>,
    /// Give the data dir a new database epoch (and renumber its outbox)
    /// before serving: for a copied data dir, or a stream the cloud refuses
    /// for a gap. A flag only, never in a file: it is a one-off act.
    pub new_epoch: bool,
    /// Most outbox records sent in one batch: a backlog drains in the
    /// largest batches the cloud takes, since each batch costs the cloud a
    /// transaction and a flush whatever its size.
    pub ship_batch: usize,
    pub kv_limits: KvLimits,
    /// Shared stores declared by the host, by name.
    pub stores: BTreeMap<String, StoreDecl>,
    /// Per-request limits every function gets (functions may only lower them).
    pub limits: Limits,
    /// Open client connections at most; more are closed on accept.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers; also how
    /// long an idle keep-alive connection stays open.
    pub header_read_timeout: Duration,
    /// Largest request header section.
    pub max_header_bytes: usize,
    /// How long a request may wait for a free instance before 503.
    pub queue_timeout: Duration,
    /// Most bytes of records the outbox holds while the cloud is away;
    /// beyond it, replicated writes and events are refused.
    pub max_outbox_bytes: u64,
    /// Writes are refused (not applied) while the data disk has less than
    /// this free, and resume by themselves when it has it again; 0: off.
    pub min_free_bytes: u64,
    /// The admin listener: metrics, admin API, dashboard.
    pub admin_listen: SocketAddr,
    /// Bearer token the admin listener requires; `None`: open (it listens
    /// on loopback by default).
    pub admin_token: Option<String>,
    /// One `outpost::access` log line per request.
    pub access_log: bool,
    /// The HTTP cache in front of every function (`[cache]`).
    pub cache: CacheSettings,
}

/// A shared store declared in `outpost.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StoreDecl {
    #[serde(default)]
    pub replicated: bool,
    /// `local` (default) or `forward`: see `outpost_caps::kv::mode`.
    #[serde(default)]
    pub mode: outpost_caps::kv::mode::Mode,
    /// A forward write while the cloud is unreachable: `fail` or `queue`.
    #[serde(default)]
    pub fallback: outpost_caps::kv::mode::Fallback,
    /// Longest a forward write waits for the cloud.
    pub timeout_ms: Option<u64>,
}

impl StoreDecl {
    /// The store's write settings.
    pub fn write(&self) -> outpost_caps::kv::mode::StoreWrite {
        outpost_caps::kv::mode::StoreWrite {
            mode: self.mode,
            fallback: self.fallback,
            timeout_ms: self.timeout_ms,
        }
    }
}

/// `[kv]` in `outpost.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KvFileConfig {
    pub max_key_bytes: Option<usize>,
    pub max_value_bytes: Option<usize>,
}

/// Most engines by default, however many CPUs: each engine's pool reserves
/// `max-instances` memory slots of address space (about 4 TiB with the
/// default 1000), and x86-64 gives a process 128 TiB. More can be asked for
/// with `--engines`; extra cores then share engines.
pub const DEFAULT_MAX_ENGINES: usize = 8;

/// Most records per upload: the cloud's limit on entries per batch.
pub const MAX_SHIP_BATCH: usize = 4096;

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            modules_dir: PathBuf::from("./modules"),
            data_dir: PathBuf::from("./.outpost"),
            shutdown_grace: Duration::from_secs(30),
            reload_debounce: Duration::from_millis(200),
            reload_max_wait: Duration::from_secs(5),
            allocator: AllocatorChoice::Auto,
            max_instances: 1000,
            engines: std::thread::available_parallelism()
                .map_or(1, std::num::NonZero::get)
                .min(DEFAULT_MAX_ENGINES),
            node_id: None,
            cloud: None,
            cloud_token: None,
            cloud_ca: None,
            new_epoch: false,
            ship_batch: 4096,
            kv_limits: KvLimits::default(),
            stores: BTreeMap::new(),
            limits: Limits::default(),
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            queue_timeout: Duration::from_millis(250),
            max_outbox_bytes: outpost_store::DEFAULT_MAX_OUTBOX_BYTES,
            min_free_bytes: outpost_store::DEFAULT_MIN_FREE_BYTES,
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9901)),
            admin_token: None,
            access_log: false,
            cache: CacheSettings::default(),
        }
    }
}

/// `cloud` in `outpost.toml`: `"URL"`, `"URL,URL"` or `["URL", "URL"]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum CloudUrls {
    /// One URL, or several separated by commas.
    List(String),
    /// One URL per item.
    Array(Vec<String>),
}

impl CloudUrls {
    /// As the comma-separated list the flag and the environment give; an
    /// empty array becomes an empty list, which the cloud client refuses
    /// as it does `--cloud ""`.
    fn joined(self) -> String {
        match self {
            Self::List(list) => list,
            Self::Array(urls) => urls.join(","),
        }
    }
}

/// The settings as written in `outpost.toml`; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub modules: Option<PathBuf>,
    pub data: Option<PathBuf>,
    pub shutdown_grace_ms: Option<u64>,
    pub reload_debounce_ms: Option<u64>,
    pub reload_max_wait_ms: Option<u64>,
    pub allocator: Option<AllocatorChoice>,
    pub max_instances: Option<u32>,
    pub engines: Option<usize>,
    pub node_id: Option<String>,
    pub cloud: Option<CloudUrls>,
    pub cloud_token: Option<String>,
    pub cloud_ca: Option<PathBuf>,
    pub ship_batch: Option<usize>,
    #[serde(default)]
    pub kv: KvFileConfig,
    #[serde(default)]
    pub stores: BTreeMap<String, StoreDecl>,
    #[serde(default)]
    pub limits: LimitsSection,
    pub max_connections: Option<usize>,
    pub header_read_timeout_ms: Option<u64>,
    pub max_header_bytes: Option<usize>,
    pub queue_timeout_ms: Option<u64>,
    pub max_outbox_bytes: Option<u64>,
    pub min_free_bytes: Option<u64>,
    pub admin_listen: Option<SocketAddr>,
    pub admin_token: Option<String>,
    pub access_log: Option<bool>,
    #[serde(default)]
    pub cache: CacheFileConfig,
}

/// The host's cache settings (`[cache]` in `outpost.toml`).
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Whether the cache runs at all.
    pub enabled: bool,
    /// Memory it may hold (bodies, headers, keys, bookkeeping).
    pub memory_bytes: usize,
    /// Largest response body stored; bigger ones pass through.
    pub max_object_bytes: usize,
    /// Whether responses carry [`CACHE_HEADER`].
    pub status_header: bool,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            enabled: true,
            memory_bytes: 64 * 1024 * 1024,
            max_object_bytes: 4 * 1024 * 1024,
            status_header: true,
        }
    }
}

/// `[cache]` in `outpost.toml`: the node's HTTP cache.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CacheFileConfig {
    /// Whether the cache runs (default true).
    pub enabled: Option<bool>,
    /// Bytes it may hold (default 64 MiB).
    pub memory_bytes: Option<usize>,
    /// Largest body stored (default 4 MiB; at most a sixteenth of memory).
    pub max_object_bytes: Option<usize>,
    /// Whether responses carry `x-outpost-cache` (default true).
    pub status_header: Option<bool>,
}

impl FileConfig {
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Reads `path`; a missing file is an empty config unless `required`.
    pub fn read(path: &Path, required: bool) -> Result<Self, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(Self::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }
}

/// Settings given on the command line; `None` means "not given".
#[derive(Debug, Default, Clone)]
pub struct FlagConfig {
    pub listen: Option<SocketAddr>,
    pub modules: Option<PathBuf>,
    pub data: Option<PathBuf>,
    pub shutdown_grace_ms: Option<u64>,
    pub reload_debounce_ms: Option<u64>,
    pub allocator: Option<AllocatorChoice>,
    pub max_instances: Option<u32>,
    pub engines: Option<usize>,
    pub node_id: Option<String>,
    pub cloud: Option<String>,
    pub cloud_token: Option<String>,
    pub cloud_ca: Option<PathBuf>,
    pub ship_batch: Option<usize>,
    pub admin_listen: Option<SocketAddr>,
    pub admin_token: Option<String>,
    pub access_log: Option<bool>,
}

/// Reads `OUTPOST_<KEY>` and parses it, naming the variable on failure.
fn env_value<T: FromStr>(
    env: &dyn Fn(&str) -> Option<String>,
    key: &'static str,
) -> Result<Option<T>, ConfigError>
where
    T::Err: std::fmt::Display,
{
    let Some(raw) = env(key) else { return Ok(None) };
    raw.parse()
        .map(Some)
        .map_err(|e: T::Err| ConfigError::Value {
            key,
            value: raw,
            message: e.to_string(),
        })
}

impl ServeConfig {
    /// Layers the sources: a flag wins over the file, the file over the
    /// environment, the environment over the default.
    pub fn resolve(
        flags: FlagConfig,
        file: FileConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let d = Self::default();
        let ms = Duration::from_millis;
        for (key, value, cap) in [
            (
                "kv.max-value-bytes",
                file.kv.max_value_bytes,
                outpost_caps::kv::MAX_VALUE_BYTES_CAP,
            ),
            (
                "kv.max-key-bytes",
                file.kv.max_key_bytes,
                outpost_caps::kv::MAX_KEY_BYTES_CAP,
            ),
        ] {
            if let Some(value) = value.filter(|v| *v > cap) {
                return Err(ConfigError::Value {
                    key,
                    value: value.to_string(),
                    message: format!("the cap is {cap}"),
                });
            }
        }
        // The first of flag, file and `OUTPOST_<KEY>` that is set; the
        // environment is parsed only when it is consulted.
        fn pick<T: FromStr>(
            flag: Option<T>,
            file: Option<T>,
            env: &dyn Fn(&str) -> Option<String>,
            key: &'static str,
        ) -> Result<Option<T>, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            match flag.or(file) {
                Some(value) => Ok(Some(value)),
                None => env_value(env, key),
            }
        }
        let node_id = pick(flags.node_id, file.node_id, env, "OUTPOST_NODE_ID")?;
        Ok(Self {
            listen: pick(flags.listen, file.listen, env, "OUTPOST_LISTEN")?.unwrap_or(d.listen),
            modules_dir: pick(flags.modules, file.modules, env, "OUTPOST_MODULES")?
                .unwrap_or(d.modules_dir),
            data_dir: pick(flags.data, file.data, env, "OUTPOST_DATA")?.unwrap_or(d.data_dir),
            shutdown_grace: pick(
                flags.shutdown_grace_ms,
                file.shutdown_grace_ms,
                env,
                "OUTPOST_SHUTDOWN_GRACE_MS",
            )?
            .map_or(d.shutdown_grace, ms),
            reload_debounce: pick(
                flags.reload_debounce_ms,
                file.reload_debounce_ms,
                env,
                "OUTPOST_RELOAD_DEBOUNCE_MS",
            )?
            .map_or(d.reload_debounce, ms),
            reload_max_wait: pick(
                None,
                file.reload_max_wait_ms,
                env,
                "OUTPOST_RELOAD_MAX_WAIT_MS",
            )?
            .map_or(d.reload_max_wait, ms),
            allocator: pick(flags.allocator, file.allocator, env, "OUTPOST_ALLOCATOR")?
                .unwrap_or(d.allocator),
            max_instances: pick(
                flags.max_instances,
                file.max_instances,
                env,
                "OUTPOST_MAX_INSTANCES",
            )?
            .unwrap_or(d.max_instances),
            engines: pick(flags.engines, file.engines, env, "OUTPOST_ENGINES")?
                .unwrap_or(d.engines)
                .max(1),

            cloud: pick(
                flags.cloud,
                file.cloud.map(CloudUrls::joined),
                env,
                "OUTPOST_CLOUD",
            )?,
            cloud_token: pick(
                flags.cloud_token,
                file.cloud_token,
                env,
                "OUTPOST_CLOUD_TOKEN",
            )?,
            cloud_ca: pick(flags.cloud_ca, file.cloud_ca, env, "OUTPOST_CLOUD_CA")?,
            // The cloud refuses batches of more entries than this.
            ship_batch: pick(flags.ship_batch, file.ship_batch, env, "OUTPOST_SHIP_BATCH")?
                .unwrap_or(d.ship_batch)
                .clamp(1, MAX_SHIP_BATCH),
            kv_limits: KvLimits {
                max_key_bytes: file.kv.max_key_bytes.unwrap_or(d.kv_limits.max_key_bytes),
                max_value_bytes: file
                    .kv
                    .max_value_bytes
                    .unwrap_or(d.kv_limits.max_value_bytes),
            },
            stores: validate_stores(file.stores)?,
            limits: d.limits.with(&file.limits),
            max_connections: pick(None, file.max_connections, env, "OUTPOST_MAX_CONNECTIONS")?
                .unwrap_or(d.max_connections)
                .max(1),
            header_read_timeout: pick(
                None,
                file.header_read_timeout_ms,
                env,
                "OUTPOST_HEADER_READ_TIMEOUT_MS",
            )?
            .map_or(d.header_read_timeout, ms),
            max_header_bytes: pick(None, file.max_header_bytes, env, "OUTPOST_MAX_HEADER_BYTES")?
                .unwrap_or(d.max_header_bytes)
                .max(8192),
            queue_timeout: pick(None, file.queue_timeout_ms, env, "OUTPOST_QUEUE_TIMEOUT_MS")?
                .map_or(d.queue_timeout, ms),
            max_outbox_bytes: pick(None, file.max_outbox_bytes, env, "OUTPOST_MAX_OUTBOX_BYTES")?
                .unwrap_or(d.max_outbox_bytes),
            min_free_bytes: pick(None, file.min_free_bytes, env, "OUTPOST_MIN_FREE_BYTES")?
                .unwrap_or(d.min_free_bytes),
            new_epoch: false,
            admin_listen: pick(
                flags.admin_listen,
                file.admin_listen,
                env,
                "OUTPOST_ADMIN_LISTEN",
            )?
            .unwrap_or(d.admin_listen),
            admin_token: pick(
                flags.admin_token,
                file.admin_token,
                env,
                "OUTPOST_ADMIN_TOKEN",
            )?
            .filter(|t| !t.is_empty()),
            access_log: pick(flags.access_log, file.access_log, env, "OUTPOST_ACCESS_LOG")?
                .unwrap_or(d.access_log),
            cache: cache_settings(file.cache, &d.cache)?,
            node_id: match node_id {
                Some(id) if !outpost_store::is_valid_node_id(&id) => {
                    return Err(ConfigError::Value {
                        key: "node-id",
                        value: id,
                        message: "use 1 to 64 of [A-Za-z0-9._-]".into(),
                    });
                }
                other => other,
            },
        })
    }
}

/// The cache's settings: a memory budget of at least 1 MiB, and a largest
/// object no bigger than a shard holds (a sixteenth of the memory).
fn cache_settings(file: CacheFileConfig, d: &CacheSettings) -> Result<CacheSettings, ConfigError> {
    let memory_bytes = file.memory_bytes.unwrap_or(d.memory_bytes);
    if memory_bytes < 1024 * 1024 {
        return Err(ConfigError::Value {
            key: "cache.memory-bytes",
            value: memory_bytes.to_string(),
            message: "give at least 1048576 (1 MiB)".into(),
        });
    }
    let max_object_bytes = file.max_object_bytes.unwrap_or(d.max_object_bytes);
    if max_object_bytes > memory_bytes / 16 {
        return Err(ConfigError::Value {
            key: "cache.max-object-bytes",
            value: max_object_bytes.to_string(),
            message: format!(
                "give at most a sixteenth of cache.memory-bytes ({})",
                memory_bytes / 16
            ),
        });
    }
    Ok(CacheSettings {
        enabled: file.enabled.unwrap_or(d.enabled),
        memory_bytes,
        max_object_bytes,
        status_header: file.status_header.unwrap_or(d.status_header),
    })
}

fn validate_stores(
    stores: BTreeMap<String, StoreDecl>,
) -> Result<BTreeMap<String, StoreDecl>, ConfigError> {
    for (name, decl) in &stores {
        if !outpost_wire::names::is_shared_store_name(name) {
            return Err(ConfigError::Value {
                key: "stores",
                value: name.clone(),
                message: "store names match [a-z0-9][a-z0-9_-]* and cannot be \"default\"".into(),
            });
        }
        if decl.mode == outpost_caps::kv::mode::Mode::Forward && !decl.replicated {
            return Err(ConfigError::Value {
                key: "stores",
                value: name.clone(),
                message: "mode = \"forward\" needs replicated = true (a local store has no cloud to forward to)".into(),
            });
        }
        if let Err(message) = decl.write().validate() {
            return Err(ConfigError::Value {
                key: "stores",
                value: name.clone(),
                message,
            });
        }
    }
    Ok(stores)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults_serve() {
        let c =
            ServeConfig::resolve(FlagConfig::default(), FileConfig::default(), &no_env).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.modules_dir, PathBuf::from("./modules"));
        assert_eq!(c.data_dir, PathBuf::from("./.outpost"));
    }

    #[test]
    fn flag_beats_file_beats_env() {
        let env = |k: &str| match k {
            "OUTPOST_LISTEN" => Some("127.0.0.1:3".to_string()),
            "OUTPOST_MAX_INSTANCES" => Some("7".to_string()),
            "OUTPOST_DATA" => Some("/env".to_string()),
            _ => None,
        };
        let file = FileConfig::parse(
            Path::new("outpost.toml"),
            "listen = \"127.0.0.1:2\"\nmax-instances = 5\n[kv]\nmax-value-bytes = 9\n[stores.sessions]\nreplicated = true\n",
        )
        .unwrap();
        let flags = FlagConfig {
            listen: Some("127.0.0.1:1".parse().unwrap()),
            ..Default::default()
        };
        let c = ServeConfig::resolve(flags, file, &env).unwrap();
        assert_eq!(c.listen.port(), 1);
        assert_eq!(c.max_instances, 5);
        assert_eq!(c.data_dir, PathBuf::from("/env"));
        assert_eq!(c.kv_limits.max_value_bytes, 9);
        assert_eq!(c.kv_limits.max_key_bytes, 512);
        assert!(c.stores["sessions"].replicated);
    }

    #[test]
    fn a_host_store_forwards_only_if_it_replicates() {
        let resolve = |toml: &str| {
            let file = FileConfig::parse(Path::new("outpost.toml"), toml).unwrap();
            ServeConfig::resolve(FlagConfig::default(), file, &no_env)
        };
        let c = resolve(
            "[stores.stock]\nreplicated = true\nmode = \"forward\"\nfallback = \"queue\"\ntimeout-ms = 500\n",
        )
        .unwrap();
        let write = c.stores["stock"].write();
        assert_eq!(write.mode, outpost_caps::kv::mode::Mode::Forward);
        assert_eq!(write.fallback, outpost_caps::kv::mode::Fallback::Queue);
        assert_eq!(write.timeout(), Duration::from_millis(500));
        let err = resolve("[stores.stock]\nmode = \"forward\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs replicated = true"), "{err}");
        assert!(
            resolve("[stores.stock]\nreplicated = true\nmode = \"forward\"\ntimeout-ms = 0\n")
                .is_err()
        );
    }

    #[test]
    fn bad_env_value_names_the_variable() {
        let env = |k: &str| (k == "OUTPOST_MAX_INSTANCES").then(|| "lots".to_string());
        let err = ServeConfig::resolve(FlagConfig::default(), FileConfig::default(), &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("OUTPOST_MAX_INSTANCES"), "{err}");
    }

    #[test]
    fn cloud_ca_from_flag_file_or_env() {
        let env = |k: &str| (k == "OUTPOST_CLOUD_CA").then(|| "/env/ca.pem".to_string());
        let c = ServeConfig::resolve(FlagConfig::default(), FileConfig::default(), &env).unwrap();
        assert_eq!(c.cloud_ca, Some(PathBuf::from("/env/ca.pem")));
        let file =
            FileConfig::parse(Path::new("outpost.toml"), "cloud-ca = \"/file/ca.pem\"\n").unwrap();
        let c = ServeConfig::resolve(FlagConfig::default(), file, &env).unwrap();
        assert_eq!(c.cloud_ca, Some(PathBuf::from("/file/ca.pem")));
        let c =
            ServeConfig::resolve(FlagConfig::default(), FileConfig::default(), &no_env).unwrap();
        assert_eq!(c.cloud_ca, None);
    }

    #[test]
    fn cloud_is_a_list_from_flag_file_or_env() {
        let env = |k: &str| (k == "OUTPOST_CLOUD").then(|| "http://e1,http://e2".to_string());
        let resolve = |flags: FlagConfig, file: &str| {
            let file = FileConfig::parse(Path::new("outpost.toml"), file).unwrap();
            ServeConfig::resolve(flags, file, &env).unwrap().cloud
        };
        let flag = FlagConfig {
            cloud: Some("http://f1,http://f2".into()),
            ..Default::default()
        };
        assert_eq!(
            resolve(flag, "cloud = \"http://t\"").as_deref(),
            Some("http://f1,http://f2")
        );
        assert_eq!(
            resolve(FlagConfig::default(), "cloud = \"http://t1, http://t2\"").as_deref(),
            Some("http://t1, http://t2")
        );
        assert_eq!(
            resolve(
                FlagConfig::default(),
                "cloud = [\"http://t1\", \"http://t2\"]"
            )
            .as_deref(),
            Some("http://t1,http://t2")
        );
        assert_eq!(
            resolve(FlagConfig::default(), "").as_deref(),
            Some("http://e1,http://e2")
        );
        assert!(FileConfig::parse(Path::new("outpost.toml"), "cloud = 3").is_err());
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        let err = FileConfig::parse(Path::new("outpost.toml"), "lisen = \"x\"").unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
    }
}
