//! `outpost lab`: a local cloud and N edges on one machine, each edge
//! behind a link the lab controls ([`link`]), for trying out what
//! functions do when an edge is cut off, slow or lossy, and for scripting
//! that as a partition test ([`scenario`]).
//!
//! The lab is a harness, not a second implementation: the cloud and the
//! edges are the `outpost` binary's own `cloud` and `serve`, run as child
//! processes ([`nodes`]). The lab adds only the links, its API and
//! dashboard ([`api`]), and the convergence check ([`converge`]).

pub mod api;
pub mod control;
pub mod converge;
pub mod fetch;
pub mod link;
pub mod nodes;
pub mod scenario;

use link::Link;
use nodes::Node;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Most edges one lab runs.
pub const MAX_EDGES: usize = 16;

/// What to start.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// How many edges (1..=[`MAX_EDGES`]).
    pub edges: usize,
    /// The modules folder every edge serves.
    pub modules: PathBuf,
    /// Where the data dirs and logs go; `None`: a fresh temporary folder,
    /// removed when the lab stops.
    pub dir: Option<PathBuf>,
    /// The `outpost` binary the children run (the lab's own, normally).
    pub binary: PathBuf,
}

/// Why a lab did not start.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A setting out of range.
    #[error("{0}")]
    Config(String),
    /// A folder the lab needs.
    #[error("{path}: {source}")]
    Io {
        /// The folder.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A child did not start.
    #[error(transparent)]
    Start(#[from] nodes::StartError),
}

/// One edge of the lab: its process and its link.
#[derive(Debug)]
pub struct Edge {
    /// The `outpost serve` child (node id = its name).
    pub node: Node,
    /// Its link to the cloud.
    pub link: Arc<Link>,
}

/// A running lab.
#[derive(Debug)]
pub struct Lab {
    /// The `outpost cloud` child.
    pub cloud: Node,
    /// The edges, `edge-1` first.
    pub edges: Vec<Edge>,
    /// The development token the cloud accepts and every edge ships with.
    pub token: String,
    /// Data dirs and logs.
    pub dir: PathBuf,
    /// The modules folder served.
    pub modules: PathBuf,
    /// Kept so that the temporary folder lives as long as the lab.
    _temp: Option<tempfile::TempDir>,
    /// The client for the lab's own calls.
    pub fetch: fetch::Fetch,
}

impl Lab {
    /// Starts the cloud, one link per edge and the edges, in that order.
    ///
    /// Call it from the thread that runs the lab's runtime (inside
    /// `block_on`, not in a spawned or blocking task): a child's
    /// `PR_SET_PDEATHSIG` fires when the thread that forked it ends.
    pub async fn start(config: LabConfig) -> Result<Lab, LabError> {
        if !(1..=MAX_EDGES).contains(&config.edges) {
            return Err(LabError::Config(format!(
                "--edges must be from 1 to {MAX_EDGES}"
            )));
        }
        let modules = std::path::absolute(&config.modules).map_err(|source| LabError::Io {
            path: config.modules.display().to_string(),
            source,
        })?;
        if !modules.is_dir() {
            return Err(LabError::Config(format!(
                "the modules folder {} does not exist (build the examples with `cargo xtask serve`, or give --modules DIR)",
                modules.display()
            )));
        }
        let (dir, temp) = match &config.dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("outpost-lab-")
                    .tempdir()
                    .map_err(|source| LabError::Io {
                        path: std::env::temp_dir().display().to_string(),
                        source,
                    })?;
                (temp.path().to_owned(), Some(temp))
            }
        };
        std::fs::create_dir_all(&dir).map_err(|source| LabError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let token = format!("lab-{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let arg = |s: &str| s.to_owned();
        let path_arg = |p: PathBuf| p.display().to_string();
        let cloud = nodes::spawn(
            "cloud",
            &config.binary,
            &[
                arg("cloud"),
                arg("--listen"),
                arg("127.0.0.1:0"),
                arg("--data"),
                path_arg(dir.join("cloud")),
                arg("--dev-token"),
                token.clone(),
            ],
            dir.join("cloud.log"),
            false,
        )?;
        let mut edges = Vec::with_capacity(config.edges);
        for i in 1..=config.edges {
            let name = format!("edge-{i}");
            let link = Link::start(&name, cloud.addr)
                .await
                .map_err(|source| LabError::Io {
                    path: format!("a loopback port for {name}'s link"),
                    source,
                })?;
            let node = nodes::spawn(
                &name,
                &config.binary,
                &[
                    arg("serve"),
                    arg("--listen"),
                    arg("127.0.0.1:0"),
                    arg("--admin-listen"),
                    arg("127.0.0.1:0"),
                    arg("--modules"),
                    path_arg(modules.clone()),
                    arg("--data"),
                    path_arg(dir.join(&name)),
                    arg("--cloud"),
                    format!("http://{}", link.addr),
                    arg("--cloud-token"),
                    token.clone(),
                    arg("--node-id"),
                    name.clone(),
                ],
                dir.join(format!("{name}.log")),
                true,
            )?;
            edges.push(Edge { node, link });
        }
        Ok(Lab {
            cloud,
            edges,
            token,
            dir,
            modules,
            _temp: temp,
            fetch: fetch::Fetch::default(),
        })
    }

    /// The edge named `name`.
    pub fn edge(&self, name: &str) -> Option<&Edge> {
        self.edges.iter().find(|e| e.node.name == name)
    }

    /// The cloud's base URL.
    pub fn cloud_url(&self) -> String {
        format!("http://{}", self.cloud.addr)
    }

    /// Stops every edge, then the cloud.
    pub fn stop(&self) {
        for edge in &self.edges {
            edge.node.stop(Duration::from_secs(10));
        }
        self.cloud.stop(Duration::from_secs(10));
    }
}

/// The lab's summary, printed at start and served at `/api/lab`.
pub fn describe(lab: &Lab, listen: SocketAddr) -> serde_json::Value {
    serde_json::json!({
        "dashboard": format!("http://{listen}/"),
        "dir": lab.dir,
        "modules": lab.modules,
        "cloud": {
            "url": lab.cloud_url(),
            "log": lab.cloud.log,
        },
        "edges": lab.edges.iter().map(|e| serde_json::json!({
            "name": e.node.name,
            "url": format!("http://{}", e.node.addr),
            "admin": e.node.admin.map(|a| format!("http://{a}")),
            "log": e.node.log,
            "link": {
                "addr": e.link.addr.to_string(),
                "faults": e.link.faults(),
                "stats": e.link.stats(),
            },
        })).collect::<Vec<_>>(),
    })
}

/// Binds the lab's API on `listen`, which must be a loopback address: the
/// API has no credentials, and whoever reaches it controls the links.
pub async fn bind(listen: SocketAddr) -> Result<tokio::net::TcpListener, LabError> {
    if !listen.ip().is_loopback() {
        return Err(LabError::Config(format!(
            "the lab listens on loopback only (127.0.0.1 or ::1), not {listen}: its API has no credentials"
        )));
    }
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| LabError::Io {
            path: format!("{listen} (is another lab running? give --listen 127.0.0.1:PORT)"),
            source,
        })
}

/// Serves the lab's API and dashboard on `listener` until `shutdown`,
/// then stops the edges and the cloud.
pub async fn serve(
    lab: Arc<Lab>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let listen = listener
        .local_addr()
        .expect("a bound listener has an address");
    let limits = outpost_http::ConnectionLimits {
        max_connections: 1_000,
        header_read_timeout: Duration::from_secs(30),
        max_header_bytes: 64 * 1024,
        grace: Duration::from_secs(2),
    };
    let api = api::Api {
        lab: lab.clone(),
        listen,
    };
    outpost_http::run(listener, api, shutdown, limits).await;
    lab.stop();
}

/// What `outpost lab` prints once everything listens.
pub fn banner(lab: &Lab, listen: SocketAddr) -> String {
    let mut text = format!(
        "outpost lab: {} edge(s) serving {}\n  dashboard  http://{listen}/\n  cloud      {}  (dev token {})\n",
        lab.edges.len(),
        lab.modules.display(),
        lab.cloud_url(),
        lab.token
    );
    for edge in &lab.edges {
        text.push_str(&format!(
            "  {:<10} http://{}  (admin {}, log {})\n",
            edge.node.name,
            edge.node.addr,
            edge.node
                .admin
                .map_or_else(|| "none".to_owned(), |a| format!("http://{a}")),
            edge.node.log.display()
        ));
    }
    text.push_str(&format!(
        "  links:     outpost lab link EDGE cut|heal|latency MS|loss RATE|bandwidth BYTES_PER_S|reset{}\n  data:      {}\n",
        if listen.to_string() == control::DEFAULT_LAB {
            String::new()
        } else {
            format!("  --lab {listen}")
        },
        lab.dir.display()
    ));
    text
}
