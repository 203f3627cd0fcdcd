//! The `outpost:edge/queue` capability: durable events from this node to the
//! cloud tier. An event is in the node's outbox (on disk) before `enqueue`
//! returns; the shipper delivers it exactly once.
//!
//! It has no settings of its own: its policy ([`QueuePolicy`]) is the
//! function's value limit, which also bounds payloads.

use crate::Services;
use crate::bindings::queue::{self, Error};
use outpost_store::{Rejection, StorageError, WriteOp, Written};
pub use outpost_wire::names::{MAX_TOPIC_BYTES, is_valid_topic};
use std::sync::Arc;
use wasmtime::component::{HasData, Linker};

/// Longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;

/// What one function version may enqueue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuePolicy {
    /// Largest payload: the function's KV value limit.
    pub max_payload_bytes: usize,
}

impl QueuePolicy {
    /// Why this event may not be enqueued, if it may not.
    pub fn check(
        &self,
        topic: &str,
        payload: &[u8],
        idempotency_key: Option<&str>,
    ) -> Result<(), Error> {
        if !is_valid_topic(topic) {
            return Err(Error::InvalidTopic);
        }
        if payload.len() > self.max_payload_bytes {
            return Err(Error::PayloadTooLarge);
        }
        if idempotency_key.is_some_and(|k| k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY_BYTES) {
            return Err(Error::InvalidIdempotencyKey);
        }
        Ok(())
    }
}

/// Per-request queue state.
pub struct QueueCtx {
    /// The function version's policy.
    pub policy: QueuePolicy,
    /// The node-wide parts: the database whose outbox holds the events,
    /// and the counter of `enqueue` calls.
    pub services: Arc<Services>,
    /// The function's name, for log lines.
    pub function: Arc<str>,
}

/// What the generated bindings operate on.
pub struct QueueView<'a> {
    ctx: &'a QueueCtx,
}

impl<'a> QueueView<'a> {
    /// The view over one request's queue context.
    pub fn new(ctx: &'a QueueCtx) -> Self {
        Self { ctx }
    }
}

struct HasQueue;

impl HasData for HasQueue {
    type Data<'a> = QueueView<'a>;
}

/// Links `outpost:edge/queue` into `linker`; `view` projects the store
/// data `T` onto the request's queue context.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> QueueView<'_>,
) -> wasmtime::Result<()> {
    queue::add_to_linker::<T, HasQueue>(linker, view)
}

impl QueueView<'_> {
    fn io(&self, error: StorageError) -> Error {
        let id = outpost_wire::error_id();
        tracing::error!(target: "outpost::queue", function = %self.ctx.function, error_id = %id, error = %error, "queue storage failure");
        let failure = crate::storage_failure::for_guest(&error, &id);
        if failure.outcome_unknown {
            Error::OutcomeUnknown(failure.message)
        } else {
            Error::Io(failure.message)
        }
    }
}

impl queue::Host for QueueView<'_> {
    async fn enqueue(
        &mut self,
        topic: String,
        payload: Vec<u8>,
        idempotency_key: Option<String>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        if let Err(e) = self
            .ctx
            .policy
            .check(&topic, &payload, idempotency_key.as_deref())
        {
            return Ok(Err(e));
        }
        let op = WriteOp::Enqueue {
            topic,
            payload,
            idempotency_key,
        };
        let result = match self.ctx.services.storage.write(op).await {
            Ok(Written::Id(id)) => Ok(id),
            Ok(Written::Rejected(Rejection::OutboxFull)) => Err(Error::OutboxFull),
            Ok(other) => unreachable!("enqueue answered {other:?}"),
            Err(e) => Err(self.io(e)),
        };
        let outcome = match result {
            Ok(_) => "ok",
            Err(Error::OutboxFull) => "outbox-full",
            Err(Error::OutcomeUnknown(_)) => "outcome-unknown",
            Err(_) => "io",
        };
        self.ctx.services.ops.count("enqueue", outcome);
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_checks_topic_payload_and_idempotency_key() {
        let policy = QueuePolicy {
            max_payload_bytes: 4,
        };
        assert!(policy.check("orders", b"1234", Some("k")).is_ok());
        assert!(matches!(
            policy.check("Orders", b"", None),
            Err(Error::InvalidTopic)
        ));
        assert!(matches!(
            policy.check("orders", b"12345", None),
            Err(Error::PayloadTooLarge)
        ));
        assert!(matches!(
            policy.check("orders", b"", Some("")),
            Err(Error::InvalidIdempotencyKey)
        ));
        let long = "k".repeat(MAX_IDEMPOTENCY_KEY_BYTES + 1);
        assert!(matches!(
            policy.check("orders", b"", Some(&long)),
            Err(Error::InvalidIdempotencyKey)
        ));
    }
}
