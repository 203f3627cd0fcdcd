//! Edge side of replication: the shipper drains the outbox to the cloud, the
//! puller applies other nodes' writes from the cloud's change feed.

pub mod backoff;
pub mod client;
pub mod puller;
pub mod shipper;

use crate::storage::Storage;
use std::sync::Arc;

/// Handles to the two background tasks; dropping them stops replication.
pub struct Replication {
    shipper: tokio::task::JoinHandle<()>,
    puller: tokio::task::JoinHandle<()>,
}

impl Drop for Replication {
    fn drop(&mut self) {
        self.shipper.abort();
        self.puller.abort();
    }
}

/// Starts shipping and pulling against the cloud at `base_url`.
pub fn start(
    storage: Arc<Storage>,
    base_url: &str,
    token: Option<String>,
    ship_batch: usize,
) -> Result<Replication, client::CloudError> {
    let client = Arc::new(client::CloudClient::new(base_url, token)?);
    tracing::info!(cloud = %base_url, node = %storage.node_id(), "replication enabled");
    Ok(Replication {
        shipper: tokio::spawn(shipper::run(storage.clone(), client.clone(), ship_batch)),
        puller: tokio::spawn(puller::run(storage, client)),
    })
}
