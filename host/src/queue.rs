//! The `outpost:edge/queue` capability: durable events from this node to the
//! cloud tier. An event is in the node's outbox (on disk) before `enqueue`
//! returns; the shipper delivers it exactly once.

use crate::bindings::queue::{self, Error};
use crate::kv::KvCtx;
use crate::state::RequestState;
use crate::storage::{Rejection, StorageError, WriteOp, Written};
use wasmtime::component::{HasData, Linker};

/// Longest topic name.
pub const MAX_TOPIC_BYTES: usize = 128;
/// Longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;

/// Topics: `[a-z0-9][a-z0-9._-]*`, at most [`MAX_TOPIC_BYTES`].
pub fn is_valid_topic(topic: &str) -> bool {
    let bytes = topic.as_bytes();
    matches!(bytes.first(), Some(b) if b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.len() <= MAX_TOPIC_BYTES
        && bytes.iter().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

/// The queue shares the request's KV context: same function, same database,
/// same value-size limit for payloads.
pub struct QueueView<'a> {
    ctx: &'a KvCtx,
}

struct HasQueue;

impl HasData for HasQueue {
    type Data<'a> = QueueView<'a>;
}

pub fn add_to_linker(linker: &mut Linker<RequestState>) -> wasmtime::Result<()> {
    queue::add_to_linker::<RequestState, HasQueue>(linker, |state| QueueView {
        ctx: state.kv_parts().0,
    })
}

impl QueueView<'_> {
    fn io(&self, error: StorageError) -> Error {
        let id = crate::reply::error_id();
        tracing::error!(function = %self.ctx.function, error_id = %id, error = %error, "queue storage failure");
        Error::Io(format!("storage failure (error id {id})"))
    }
}

impl queue::Host for QueueView<'_> {
    async fn enqueue(
        &mut self,
        topic: String,
        payload: Vec<u8>,
        idempotency_key: Option<String>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        if !is_valid_topic(&topic) {
            return Ok(Err(Error::InvalidTopic));
        }
        if payload.len() > self.ctx.policy.limits.max_value_bytes {
            return Ok(Err(Error::PayloadTooLarge));
        }
        if idempotency_key
            .as_ref()
            .is_some_and(|k| k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY_BYTES)
        {
            return Ok(Err(Error::InvalidIdempotencyKey));
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
            Err(_) => "io",
        };
        self.ctx.services.metrics.kv_op("enqueue", outcome);
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        for ok in ["orders", "orders.created", "a-b_c.9"] {
            assert!(is_valid_topic(ok), "{ok}");
        }
        for bad in [
            "",
            ".x",
            "Orders",
            "a/b",
            "a b",
            &"x".repeat(MAX_TOPIC_BYTES + 1),
        ] {
            assert!(!is_valid_topic(bad), "{bad}");
        }
    }
}
