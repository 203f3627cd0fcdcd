//! Follows the cloud's change feed from the cursor persisted in the node's
//! database and applies its writes, last-writer-wins.

use super::Link;
use super::backoff::Backoff;
use crate::metrics::ResultLabels;
use outpost_store::{Storage, WriteOp, Written};
use outpost_wire::Change;
use outpost_wire::validate::Rules;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// Changes asked for per feed request.
const PAGE: usize = 500;

/// The changes this node may apply: valid by the rules the cloud checks,
/// and for a store that replicates here (a function's own store that is
/// not replicated is nobody else's to write). The rest are counted and
/// logged, never applied.
fn admissible(
    storage: &Storage,
    link: &Link,
    changes: Vec<Change>,
) -> Result<Vec<Change>, outpost_store::StorageError> {
    // The clock is not checked here: the cloud checked it at ingest, and a
    // change the cloud holds must land everywhere or the nodes diverge.
    let rules = Rules {
        max_clock_skew_ms: u64::MAX,
        ..Rules::default()
    };
    let replicated: HashSet<String> = storage.replicated_stores()?.into_iter().collect();
    let refuse = |result: &'static str| {
        link.metrics
            .remote_writes
            .get_or_create(&ResultLabels { result })
            .inc();
    };
    Ok(changes
        .into_iter()
        .filter(|change| {
            if let Err(invalid) = rules.check_change(change, 0) {
                refuse("refused");
                tracing::warn!(target: "outpost::replication::puller", cursor = change.cursor, code = invalid.code(), "refusing a change from the feed: {invalid}");
                false
            } else if !replicated.contains(&change.store) {
                refuse("not-replicated");
                tracing::warn!(target: "outpost::replication::puller", cursor = change.cursor, store = %change.store, "refusing a change from the feed for a store that does not replicate on this node");
                false
            } else {
                true
            }
        })
        .collect())
}

pub async fn run(storage: Arc<Storage>, link: Link) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    let mut failing = false;
    // The first read after start or after a failure answers at once: a
    // node must not say "unreachable" to its functions for a whole long
    // poll while the cloud is there, only with nothing new to send.
    let mut settled = false;
    loop {
        let position = storage.pull_cursor().and_then(|cursor| {
            // A store that started replicating here owes a re-read from the
            // start: the changes sent before were not for it then.
            let resync = storage.resync_requested()?;
            let cursor = if resync.is_some() { 0 } else { cursor };
            Ok((cursor, storage.cloud_id()?, resync))
        });
        let (cursor, known_cloud, resync) = match position {
            Ok(position) => position,
            Err(e) => {
                tracing::error!(target: "outpost::replication::puller", error = %e, "cannot read the pull cursor");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        match link.client.feed(cursor, PAGE, settled).await {
            Ok(page) => {
                settled = true;
                if failing {
                    failing = false;
                    tracing::info!(target: "outpost::replication::puller", cursor, "change feed reachable again");
                }
                backoff.reset();
                let (changes, next) = if known_cloud != 0 && page.cloud != known_cloud {
                    // A different cloud database (restored or replaced):
                    // our cursor means nothing there. Read it from the
                    // start; applying is idempotent.
                    tracing::warn!(target: "outpost::replication::puller",
                        cursor,
                        "the cloud's database changed; reading its feed from the start"
                    );
                    (Vec::new(), 0)
                } else if page.next > cursor || known_cloud == 0 {
                    // Our own writes come back too: applying them is a no-op
                    // unless this node lost them (a wiped data dir).
                    (page.changes, page.next)
                } else {
                    // Nothing new: the long poll ran out at the feed's end.
                    link.status.pulled(true, page.conflicts);
                    continue;
                };
                let count = changes.len();
                let changes = match admissible(&storage, &link, changes) {
                    Ok(changes) => changes,
                    Err(e) => {
                        tracing::error!(target: "outpost::replication::puller", error = %e, "cannot read which stores replicate here; will read this page again");
                        tokio::time::sleep(backoff.next_delay()).await;
                        continue;
                    }
                };
                let op = WriteOp::ApplyRemote {
                    changes,
                    cursor: next,
                    cloud: page.cloud,
                };
                match storage.write(op).await {
                    Ok(written) => {
                        if let Some(request) = resync
                            && let Err(e) = storage.resync_done(request)
                        {
                            tracing::error!(target: "outpost::replication::puller", error = %e, "cannot record the end of a feed re-read");
                        }
                        if let Written::Remote { applied, older } = written {
                            let family = &link.metrics.remote_writes;
                            family
                                .get_or_create(&ResultLabels { result: "applied" })
                                .inc_by(applied);
                            family
                                .get_or_create(&ResultLabels { result: "older" })
                                .inc_by(older);
                        }
                        link.status.pulled(count < PAGE, page.conflicts);
                        tracing::debug!(target: "outpost::replication::puller", count, "applied remote changes");
                    }
                    Err(e) => {
                        tracing::error!(target: "outpost::replication::puller", error = %e, "cannot apply remote changes");
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
            }
            Err(e) => {
                settled = false;
                link.status.unreachable(&e);
                if !failing {
                    failing = true;
                    tracing::warn!(target: "outpost::replication::puller", error = %e, cursor, "cannot read the cloud's change feed; will retry");
                }
                super::probe::wait(&link.client, &e, backoff.next_delay()).await;
            }
        }
    }
}
