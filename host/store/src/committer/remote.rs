//! Other nodes' writes from the cloud's feed, applied last-writer-wins by
//! (HLC, node id): a change lands only if it is newer than what the key
//! holds here, so every node ends with the same winner whatever order the
//! changes arrive in. A feed page is applied in the group's transaction,
//! with the pull cursor it brings this node up to.

use super::be;
use super::group::{META, Step, TxError};
use super::ops::Written;
use crate::{META_CLOUD_ID, META_PULL_CURSOR, StorageError};
use outpost_wire::Change;
use outpost_wire::envelope;
use std::time::{SystemTime, UNIX_EPOCH};

/// Remote stamps further ahead of this node's wall clock than this are not
/// allowed to drag its clock forward (a node with a wild clock would
/// otherwise push every node's clock with it).
const MAX_CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;

pub(super) fn apply_remote(
    step: &mut Step,
    changes: &[Change],
    cursor: u64,
    cloud: u64,
) -> Result<Result<Written, StorageError>, TxError> {
    let wall_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let horizon = (wall_ms + MAX_CLOCK_SKEW_MS) << 16;
    let mut applied = 0;
    for change in changes {
        if change.version.hlc <= horizon {
            step.hlc.observe(change.version.hlc);
        } else {
            tracing::warn!(target: "outpost::storage::committer", node = %change.version.node, store = %change.store, key = %change.key, "remote write stamped far in the future; its clock is ignored");
        }
        let tree = step.store(&change.store);
        let newer_here = tree
            .get(&change.key)?
            .and_then(|bytes| envelope::decode(&bytes))
            .is_some_and(|current| current.version >= change.version);
        if !newer_here {
            tree.insert(
                change.key.as_bytes(),
                envelope::encode(&change.version, change.value.as_deref()),
            )?;
            applied += 1;
        }
    }
    step.tree(META).insert(META_PULL_CURSOR, &be(cursor))?;
    step.tree(META).insert(META_CLOUD_ID, &be(cloud))?;
    Ok(Ok(Written::Remote {
        applied,
        older: changes.len() as u64 - applied,
    }))
}
