//! Committing a KV write under its store's write mode: every write is
//! made durable on the node first (value and outbox record in one
//! transaction, as always), so a crash at any point loses nothing and the
//! cloud's exactly-once ingest applies it once; a `forward` write then
//! waits for the cloud's answer to its record, within its timeout.

use super::KvCtx;
use super::mode::{Fallback, Mode};
use outpost_store::{CloudAnswer, StorageError, WriteOp, Written};
use outpost_wire::Version;

/// What became of a committed write, as far as the cloud is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The store does not replicate (or the write changed nothing).
    Local,
    /// Durable here and waiting in the outbox, with its version.
    Queued(Version),
    /// The cloud applied it; its version is current there.
    Applied(Version),
    /// The cloud holds this newer version instead.
    Superseded(Version),
}

/// Why a write was not committed, or not as asked.
#[derive(Debug)]
pub(crate) enum Refused {
    /// A forward store with fallback `fail` while the cloud is known to be
    /// unreachable: nothing was written.
    Unavailable,
    /// The cloud refused the record for good (it is quarantined here).
    ByCloud(String),
    /// The node's storage failed.
    Storage(StorageError),
}

impl KvCtx {
    /// Commits `op`, a write to `store` (replicated or not, as `op` says),
    /// under the store's write mode for this function.
    pub(crate) async fn commit(
        &self,
        store: &str,
        replicated: bool,
        op: WriteOp,
    ) -> Result<(Written, Outcome), Refused> {
        let storage = &self.services.storage;
        let write = self.services.catalog.write_of(&self.policy, store);
        if !replicated || write.mode == Mode::Local {
            return self.commit_locally(op).await;
        }
        let link = &self.services.link;
        // Down for sure: no replication here, or the last exchange failed
        // (before the first one, the write tries and its timeout decides).
        let down = !link.enabled() || link.reachable() == Some(false);
        if down {
            match write.fallback {
                Fallback::Fail => {
                    tracing::debug!(target: "outpost::kv", function = %self.function, store, "forward write refused: the cloud is unreachable (fallback = fail)");
                    return Err(Refused::Unavailable);
                }
                Fallback::Queue => return self.commit_locally(op).await,
            }
        }
        let reply = storage
            .write_awaiting_cloud(op)
            .await
            .map_err(Refused::Storage)?;
        let (Some(receipt), Some(answer)) = (reply.receipt, reply.answer) else {
            // Refused by the node (a conflict, a full outbox): the caller
            // reports `written`.
            return Ok((reply.written, Outcome::Local));
        };
        let outcome = match tokio::time::timeout(write.timeout(), answer).await {
            Ok(Ok(CloudAnswer::Applied)) => Outcome::Applied(receipt.version),
            Ok(Ok(CloudAnswer::Superseded(winner))) => Outcome::Superseded(winner),
            Ok(Ok(CloudAnswer::Refused(reason))) => return Err(Refused::ByCloud(reason)),
            // The link failed meanwhile, or no answer in time: the write is
            // durable here and ships when it can.
            Ok(Ok(CloudAnswer::Queued)) | Ok(Err(_)) | Err(_) => {
                tracing::debug!(target: "outpost::kv", function = %self.function, store, seq = receipt.seq, "forward write queued: no answer from the cloud in time");
                Outcome::Queued(receipt.version)
            }
        };
        Ok((reply.written, outcome))
    }

    /// Commits `op` without waiting for the cloud: queued if it made an
    /// outbox record, else local.
    async fn commit_locally(&self, op: WriteOp) -> Result<(Written, Outcome), Refused> {
        let (written, receipt) = self
            .services
            .storage
            .write_receipt(op)
            .await
            .map_err(Refused::Storage)?;
        Ok((
            written,
            receipt.map_or(Outcome::Local, |r| Outcome::Queued(r.version)),
        ))
    }
}
