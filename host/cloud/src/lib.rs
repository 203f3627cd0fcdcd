//! `outpost cloud`: the cloud tier. Receives what edges ship, applies it
//! exactly once, resolves conflicts, and serves the change feed that makes
//! all edges converge.

#![warn(missing_docs)]

pub mod admin_client;
pub mod api;
pub mod contract;
pub mod credentials;
pub mod guard;
pub mod metrics;
pub mod pg;
mod sled_digests;
mod sled_feed;
pub mod sled_store;

use anyhow::Context as _;
use outpost_wire::validate::Rules;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Settings for `outpost cloud`.
#[derive(Debug, Clone)]
pub struct CloudConfig {
    /// Address the API listens on.
    pub listen: SocketAddr,
    /// Where the embedded database (and the admin token) live.
    pub data_dir: PathBuf,
    /// The operator's token (enrols and revokes credentials, reads
    /// everything); `None`: the one in `DATA/admin-token`, generated on
    /// first start.
    pub admin_token: Option<String>,
    /// Development mode: one shared token that every edge and reader may
    /// use, as any node. Never for edges you do not fully trust.
    pub dev_token: Option<String>,
    /// What every record must satisfy (sizes, clock skew).
    pub rules: Rules,
    /// PEM certificate chain (leaf first) to serve HTTPS with; with
    /// `tls_key`. Neither: plain HTTP.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Ingests (and credential changes) are refused with 503 while the
    /// data dir's filesystem has less than this free, and resume by
    /// themselves once it has this much again; 0 turns the check off (see
    /// [`guard::StorageOptions::min_free_bytes`]).
    pub min_free_bytes: u64,
    /// `postgres://USER[:PASS]@HOST[:PORT]/DB`: keep the cloud's state in
    /// PostgreSQL, shared by every replica given the same URL. `None`: the
    /// embedded sled database under `data_dir`.
    pub database: Option<String>,
    /// How the replica uses PostgreSQL (pool size, timeouts).
    pub pg: pg::PgOptions,
}

impl Default for CloudConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            data_dir: PathBuf::from("./.outpost-cloud"),
            admin_token: None,
            dev_token: None,
            rules: Rules::default(),
            tls_cert: None,
            tls_key: None,
            min_free_bytes: guard::DEFAULT_MIN_FREE_BYTES,
            database: None,
            pg: pg::PgOptions::default(),
        }
    }
}

/// The file under the data dir holding the operator's token.
pub fn admin_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin-token")
}

/// Reads a token file; an empty one is an error, never "no token".
pub fn read_token_file(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let token = text.trim();
            anyhow::ensure!(
                !token.is_empty(),
                "{} is empty: delete it to have a new token generated, or put a token in it",
                path.display()
            );
            Ok(Some(token.to_owned()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes a new admin token to `path`, readable by the owner only.
fn write_token_file(path: &Path, token: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(token.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// The configured admin token, or the one kept in `DATA/admin-token`;
/// `None` if there is neither.
fn configured_admin_token(config: &CloudConfig) -> anyhow::Result<Option<String>> {
    if let Some(token) = &config.admin_token {
        anyhow::ensure!(
            !token.trim().is_empty(),
            "the admin token must not be empty"
        );
        return Ok(Some(token.trim().to_owned()));
    }
    read_token_file(&admin_token_path(&config.data_dir))
}

fn new_admin_token() -> String {
    format!("op1.admin.{}", credentials::random_hex(16))
}

/// The embedded store's admin token hash: the configured token, or the one
/// in `DATA/admin-token` (created on first start).
fn sled_admin_token_hash(config: &CloudConfig) -> anyhow::Result<String> {
    if let Some(token) = configured_admin_token(config)? {
        return Ok(credentials::token_hash(&token));
    }
    let path = admin_token_path(&config.data_dir);
    let token = new_admin_token();
    write_token_file(&path, &token)?;
    tracing::info!(target: "outpost::cloud", path = %path.display(), "generated the admin token; enrol edges with `outpost cloud enrol NODE-ID`");
    Ok(credentials::token_hash(&token))
}

/// The admin token hash kept in PostgreSQL, shared by every replica. The
/// first replica to start on an empty database sets it: to the configured
/// token, or to a new one it writes to its `DATA/admin-token`. A replica
/// given another token than the database holds refuses to start.
async fn pg_admin_token_hash(config: &CloudConfig, store: &pg::Pg) -> anyhow::Result<String> {
    let configured = configured_admin_token(config)?;
    let token = configured.clone().unwrap_or_else(new_admin_token);
    let proposed = credentials::token_hash(&token);
    let (stored, set_here) = store.admin_token_hash(&proposed).await?;
    match configured {
        Some(_) if stored != proposed => anyhow::bail!(
            "this database was set up with another admin token than the one given (--admin-token, OUTPOST_CLOUD_ADMIN_TOKEN or DATA/admin-token): give every replica the token the database was set up with"
        ),
        Some(_) => {}
        None if set_here => {
            let path = admin_token_path(&config.data_dir);
            write_token_file(&path, &token)?;
            tracing::info!(target: "outpost::cloud", path = %path.display(), "generated the admin token for this database; give it to the other replicas with --admin-token, and enrol edges with `outpost cloud enrol NODE-ID`");
        }
        None => {
            tracing::info!(target: "outpost::cloud", "the admin token is the one this database was set up with (in the DATA/admin-token of the replica that set it up)");
        }
    }
    Ok(stored)
}

/// Runs the cloud tier until `shutdown` resolves.
pub async fn serve(config: CloudConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    if let Some(dev) = &config.dev_token {
        anyhow::ensure!(!dev.trim().is_empty(), "the dev token must not be empty");
        tracing::warn!(target: "outpost::cloud", "development mode: one shared token lets anyone holding it ship as any node; enrol edges instead for real deployments");
    }
    match config.database.clone() {
        Some(url) => {
            let store = pg::Pg::connect(&url, config.pg.clone()).await?;
            let admin = pg_admin_token_hash(&config, &store).await?;
            let storage: api::StorageStatus = {
                let store = store.clone();
                Arc::new(move || store.health())
            };
            tracing::info!(target: "outpost::cloud", database = %redacted(&url), pool = config.pg.pool_size, "state in PostgreSQL: any number of replicas may serve this database");
            run(config, store, storage, admin, shutdown).await
        }
        None => {
            let admin = sled_admin_token_hash(&config)?;
            let options = guard::StorageOptions {
                min_free_bytes: config.min_free_bytes,
                ..guard::StorageOptions::default()
            };
            let store =
                sled_store::Sled::open_with(&config.data_dir, &options).with_context(|| {
                    format!("cannot open the database in {}", config.data_dir.display())
                })?;
            let storage: api::StorageStatus = {
                let store = store.0.clone();
                Arc::new(move || store.health())
            };
            run(config, store, storage, admin, shutdown).await
        }
    }
}

/// A database URL without its password, for logs.
fn redacted(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(config) => {
            let hosts: Vec<String> = config
                .get_hosts()
                .iter()
                .map(|h| match h {
                    tokio_postgres::config::Host::Tcp(name) => name.clone(),
                    tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
                })
                .collect();
            format!(
                "postgres://{}@{}:{:?}/{}",
                config.get_user().unwrap_or(""),
                hosts.join(","),
                config.get_ports(),
                config.get_dbname().unwrap_or("")
            )
        }
        Err(_) => "(unparsable URL)".to_owned(),
    }
}

/// Serves the API over `store` until `shutdown` resolves.
async fn run<S: contract::CloudStore>(
    config: CloudConfig,
    store: S,
    storage: api::StorageStatus,
    admin_token_sha256: String,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // Loaded before the bind: a bad file stops the start, and the cloud
    // never answers in plain HTTP when TLS was asked for.
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(outpost_http::tls::server_config(cert, key)?),
        (None, None) => None,
        (Some(_), None) => anyhow::bail!("a TLS certificate is given without its key (--tls-key)"),
        (None, Some(_)) => anyhow::bail!("a TLS key is given without its certificate (--tls-cert)"),
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    if tls.is_none() && !local.ip().is_loopback() {
        tracing::warn!(target: "outpost::cloud", addr = %local, "credential sent in clear: no --tls-cert, so edges' tokens cross the network unencrypted; serve TLS for anything but a trusted network");
    }
    tracing::info!(target: "outpost::cloud", addr = %local, data = %config.data_dir.display(), tls = tls.is_some(), "cloud listening on {scheme}://{local}");
    let handler = api::Cloud {
        store,
        auth: api::Auth {
            admin_token_sha256: Some(Arc::from(admin_token_sha256)),
            dev_token: config.dev_token.map(|t| Arc::from(t.trim())),
        },
        rules: config.rules,
        metrics: Arc::default(),
        ingesting: Arc::default(),
        storage,
        stopping: Arc::default(),
        scans: Arc::default(),
    };
    let stopping = handler.stopping.clone();
    let shutdown = async move {
        shutdown.await;
        stopping.stop();
    };
    let limits = outpost_http::ConnectionLimits {
        max_connections: 10_000,
        header_read_timeout: Duration::from_secs(30),
        max_header_bytes: 64 * 1024,
        grace: Duration::from_secs(10),
    };
    outpost_http::run_tls(listener, handler, shutdown, limits, tls).await;
    Ok(())
}
