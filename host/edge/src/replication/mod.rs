//! Edge side of replication: the shipper drains the outbox to the cloud, the
//! puller applies other nodes' writes from the cloud's change feed.

pub mod backoff;
pub mod client;
pub mod probe;
pub mod puller;
pub mod shipper;
pub mod status;

use crate::metrics::Metrics;
use outpost_store::Storage;
use status::ReplicationStatus;
use std::path::Path;
use std::sync::Arc;

/// What the shipper and the puller share: the client, and where they
/// report what they see.
#[derive(Clone)]
pub struct Link {
    pub client: Arc<client::CloudClient>,
    pub status: Arc<ReplicationStatus>,
    pub metrics: Arc<Metrics>,
}

/// Handles to the two background tasks; dropping them stops replication.
pub struct Replication {
    pub status: Arc<ReplicationStatus>,
    pub client: Arc<client::CloudClient>,
    shipper: tokio::task::JoinHandle<()>,
    puller: tokio::task::JoinHandle<()>,
}

impl Drop for Replication {
    fn drop(&mut self) {
        self.shipper.abort();
        self.puller.abort();
    }
}

/// Starts shipping and pulling against the cloud at `cloud` (one base URL,
/// or several replicas' separated by commas); an https cloud is verified
/// against the `webpki-roots` set.
pub fn start(
    storage: Arc<Storage>,
    cloud: &str,
    token: Option<String>,
    ship_batch: usize,
    metrics: Arc<Metrics>,
) -> Result<Replication, client::CloudError> {
    start_with_ca(storage, cloud, token, None, ship_batch, metrics)
}

/// [`start`], verifying an https cloud against the certificates in the
/// PEM file `ca` instead (a private CA) when one is given.
pub fn start_with_ca(
    storage: Arc<Storage>,
    cloud: &str,
    token: Option<String>,
    ca: Option<&Path>,
    ship_batch: usize,
    metrics: Arc<Metrics>,
) -> Result<Replication, client::CloudError> {
    let client = connect(cloud, token, ca)?;
    Ok(start_with_client(storage, client, ship_batch, metrics))
}

/// The cloud client for `cloud` (one base URL, or several replicas'
/// separated by commas): made before anything is loaded, so a bad URL, an
/// empty list item or a CA file stops the start at once.
pub fn connect(
    cloud: &str,
    token: Option<String>,
    ca: Option<&Path>,
) -> Result<Arc<client::CloudClient>, client::CloudError> {
    let client = Arc::new(client::CloudClient::with_ca(cloud, token, ca)?);
    if client.sends_credential_in_clear() {
        // Once, at start: every batch and feed request carries the token.
        tracing::warn!(target: "outpost::replication", cloud = %cloud, "credential sent in clear: the cloud token goes over plain http to another machine; use https:// cloud URLs");
    }
    Ok(client)
}

/// Starts shipping and pulling with `client` (from [`connect`]).
pub fn start_with_client(
    storage: Arc<Storage>,
    client: Arc<client::CloudClient>,
    ship_batch: usize,
    metrics: Arc<Metrics>,
) -> Replication {
    let status = Arc::new(ReplicationStatus::new());
    let replicas = client.replicas().collect::<Vec<_>>().join(",");
    tracing::info!(target: "outpost::replication", cloud = %replicas, node = %storage.node_id(), "replication enabled");
    let link = Link {
        client: client.clone(),
        status: status.clone(),
        metrics,
    };
    Replication {
        status,
        client,
        shipper: tokio::spawn(shipper::run(storage.clone(), link.clone(), ship_batch)),
        puller: tokio::spawn(puller::run(storage, link)),
    }
}
