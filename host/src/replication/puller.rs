//! Follows the cloud's change feed from the cursor persisted in the node's
//! database and applies other nodes' writes, last-writer-wins.

use super::backoff::Backoff;
use super::client::CloudClient;
use crate::storage::{Storage, WriteOp};
use std::sync::Arc;
use std::time::Duration;

/// Changes asked for per feed request.
const PAGE: usize = 500;

pub async fn run(storage: Arc<Storage>, client: Arc<CloudClient>) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    let mut failing = false;
    loop {
        let cursor = match storage.pull_cursor() {
            Ok(cursor) => cursor,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the pull cursor");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        match client.feed(cursor, PAGE).await {
            Ok(page) => {
                if failing {
                    failing = false;
                    tracing::info!(cursor, "change feed reachable again");
                }
                backoff.reset();
                if page.next <= cursor {
                    continue;
                }
                let me = storage.node_id().to_owned();
                let changes: Vec<_> = page
                    .changes
                    .into_iter()
                    .filter(|c| c.version.node != me)
                    .collect();
                let count = changes.len();
                let op = WriteOp::ApplyRemote {
                    changes,
                    cursor: page.next,
                };
                match storage.write(op).await {
                    Ok(_) => tracing::debug!(count, cursor = page.next, "applied remote changes"),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot apply remote changes");
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
            }
            Err(e) => {
                if !failing {
                    failing = true;
                    tracing::warn!(error = %e, cursor, "cannot read the cloud's change feed; will retry");
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}
