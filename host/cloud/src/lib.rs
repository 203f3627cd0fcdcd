//! `outpost cloud`: the cloud tier. Receives what edges ship, applies it
//! exactly once, resolves conflicts, and serves the change feed that makes
//! all edges converge.

#![warn(missing_docs)]

pub mod api;
pub mod contract;
pub mod metrics;
pub mod sled_store;

use anyhow::Context as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Settings for `outpost cloud`.
#[derive(Debug, Clone)]
pub struct CloudConfig {
    /// Address the API listens on.
    pub listen: SocketAddr,
    /// Where the embedded database (and the generated token) live.
    pub data_dir: PathBuf,
    /// Bearer token edges and readers must present; `None`: use the one in
    /// `DATA/token`, generating it on first start.
    pub token: Option<String>,
}

impl Default for CloudConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            data_dir: PathBuf::from("./.outpost-cloud"),
            token: None,
        }
    }
}

/// The configured token, or the one kept in `DATA/token` (created, readable
/// by the owner only, on first start).
fn resolve_token(config: &CloudConfig) -> anyhow::Result<String> {
    if let Some(token) = &config.token {
        anyhow::ensure!(!token.is_empty(), "the cloud token must not be empty");
        return Ok(token.clone());
    }
    let path = config.data_dir.join("token");
    if let Ok(token) = std::fs::read_to_string(&path) {
        return Ok(token.trim().to_owned());
    }
    let token = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        file.write_all(token.as_bytes())?;
    }
    tracing::warn!(target: "outpost::cloud", path = %path.display(), "no --token given: generated one; give it to edges with --cloud-token");
    Ok(token)
}

/// Runs the cloud tier until `shutdown` resolves.
pub async fn serve(config: CloudConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let token = resolve_token(&config)?;
    let store = sled_store::Sled::open(&config.data_dir)
        .with_context(|| format!("cannot open the database in {}", config.data_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener.local_addr()?;
    tracing::info!(target: "outpost::cloud", addr = %local, data = %config.data_dir.display(), "cloud listening on http://{local}");
    let handler = api::Cloud {
        store,
        token: Arc::from(token),
        metrics: Arc::default(),
    };
    let limits = outpost_http::ConnectionLimits {
        max_connections: 10_000,
        header_read_timeout: Duration::from_secs(30),
        max_header_bytes: 64 * 1024,
        grace: Duration::from_secs(10),
    };
    outpost_http::run(listener, handler, shutdown, limits).await;
    Ok(())
}
