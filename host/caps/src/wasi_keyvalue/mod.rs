//! The standard `wasi:keyvalue@0.2.0-draft` interfaces (`store`, `atomics`,
//! `batch`, as wasmtime 48 ships them), served from the function's Outpost
//! stores: a component written against the standard WIT runs unchanged,
//! with exactly the grants, limits, durability and replication of
//! `outpost:edge/kv`.
//!
//! It has no settings of its own and no context of its own: a bucket is a
//! kv store, so the request's [`KvCtx`] (the function's `[kv]` policy, the
//! node's services, the function's name) is its context too, and
//! [`add_to_linker`] projects onto it.
//!
//! - `open("")` and `open("default")` open the function's own store; any
//!   other identifier is a shared store name its `[kv] stores` grants.
//! - Writes go through the node's single writer and return once durable
//!   (and in the outbox, for a replicated store), as kv's do.
//! - `increment` is kv's: the counter is decimal text, so `get` of it
//!   returns e.g. `b"42"`, and kv's `increment` shares it.
//! - `list-keys` cursors are `u64` in this WIT: how many keys came before
//!   the page (see [`Bucket`]).
//! - Batch calls are the single calls in a loop, each durable on its own:
//!   not atomic, as the WIT allows; a failure stops the loop.

mod bindings;

pub use bindings::Bucket;

use crate::bindings::kv::Error as KvError;
use crate::kv::{KvCtx, KvLimits, MAX_PAGE};
use bindings::{atomics, batch, store};
use outpost_store::{Rejection, StorageError, WriteOp, Written};
use store::{Error, KeyResponse};
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

/// What the generated bindings operate on: the request's kv context and
/// the resource table its bucket handles live in.
pub struct WasiKeyValueView<'a> {
    ctx: &'a KvCtx,
    table: &'a mut ResourceTable,
}

impl<'a> WasiKeyValueView<'a> {
    /// The view over one request's state.
    pub fn new(ctx: &'a KvCtx, table: &'a mut ResourceTable) -> Self {
        Self { ctx, table }
    }
}

struct HasWasiKeyValue;

impl HasData for HasWasiKeyValue {
    type Data<'a> = WasiKeyValueView<'a>;
}

/// Links `wasi:keyvalue/{store,atomics,batch}@0.2.0-draft` into `linker`;
/// `view` projects the store data `T` onto the request's kv context and
/// resource table.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> WasiKeyValueView<'_>,
) -> wasmtime::Result<()> {
    store::add_to_linker::<T, HasWasiKeyValue>(linker, view)?;
    atomics::add_to_linker::<T, HasWasiKeyValue>(linker, view)?;
    batch::add_to_linker::<T, HasWasiKeyValue>(linker, view)?;
    Ok(())
}

/// Why a call was refused, before it becomes the WIT's three-way error.
#[derive(Debug)]
enum Refusal {
    /// What kv itself would have answered.
    Kv(KvError),
    /// `increment`'s delta does not fit kv's signed 64-bit counter.
    DeltaTooLarge(u64),
    /// The counter holds a negative number (kv's `increment` allows them),
    /// which `u64` cannot carry. `applied`: found only after the write,
    /// because another writer made it negative in between.
    NegativeCounter {
        /// The counter's value.
        value: i64,
        /// Whether this call's increment was written.
        applied: bool,
    },
}

impl From<KvError> for Refusal {
    fn from(e: KvError) -> Self {
        Self::Kv(e)
    }
}

impl Refusal {
    /// The result label in `outpost_kv_operations_total`: kv's names, so
    /// one dashboard reads both interfaces.
    fn label(&self) -> &'static str {
        match self {
            Self::Kv(KvError::AccessDenied) => "access-denied",
            Self::Kv(KvError::NoSuchStore) => "no-such-store",
            Self::Kv(KvError::InvalidKey) => "invalid-key",
            Self::Kv(KvError::ValueTooLarge) => "value-too-large",
            Self::Kv(KvError::Conflict) => "conflict",
            Self::Kv(KvError::NotANumber) => "not-a-number",
            Self::Kv(KvError::Overflow) | Self::DeltaTooLarge(_) => "overflow",
            Self::Kv(KvError::OutboxFull) => "outbox-full",
            Self::Kv(KvError::Io(_)) => "io",
            Self::Kv(KvError::OutcomeUnknown(_)) => "outcome-unknown",
            Self::NegativeCounter { .. } => "not-a-number",
        }
    }

    /// The WIT's error: its two named refusals, everything else `other`
    /// with kv's error name first, so a guest can still tell them apart.
    fn into_wasi(self, limits: &KvLimits) -> Error {
        let detail = match self {
            Self::Kv(KvError::AccessDenied) => return Error::AccessDenied,
            Self::Kv(KvError::NoSuchStore) => return Error::NoSuchStore,
            Self::Kv(KvError::InvalidKey) => format!(
                "invalid-key: a key must be 1 to {} bytes",
                limits.max_key_bytes
            ),
            Self::Kv(KvError::ValueTooLarge) => format!(
                "value-too-large: a value may be at most {} bytes",
                limits.max_value_bytes
            ),
            Self::Kv(KvError::Conflict) => "conflict: the value changed".to_owned(),
            Self::Kv(KvError::NotANumber) => {
                "not-a-number: the value is not a decimal integer; nothing changed".to_owned()
            }
            Self::Kv(KvError::Overflow) => {
                "overflow: the counter would pass 9223372036854775807; nothing changed".to_owned()
            }
            Self::DeltaTooLarge(delta) => format!(
                "overflow: delta {delta} is above 9223372036854775807, the largest counter; nothing changed"
            ),
            Self::NegativeCounter {
                value,
                applied: false,
            } => format!("not-a-number: the counter is {value}, below 0; nothing changed"),
            Self::NegativeCounter {
                value,
                applied: true,
            } => format!(
                "not-a-number: the counter is {value} after this increment (another writer made it negative); the increment was applied"
            ),
            Self::Kv(KvError::OutboxFull) => {
                "outbox-full: the node's outbox is at its size limit; not applied, retry later"
                    .to_owned()
            }
            Self::Kv(KvError::Io(message)) => format!("io: {message}"),
            Self::Kv(KvError::OutcomeUnknown(message)) => format!("outcome-unknown: {message}"),
        };
        Error::Other(detail)
    }
}

/// Counts the call, logs a refusal (with the store it was for), and gives
/// the guest its answer.
fn finish<T>(
    ctx: &KvCtx,
    op: &'static str,
    store: &str,
    result: Result<T, Refusal>,
) -> Result<T, Error> {
    match result {
        Ok(value) => {
            ctx.services.ops.count(op, "ok");
            Ok(value)
        }
        Err(Refusal::Kv(KvError::AccessDenied)) => {
            ctx.services.ops.count(op, "access-denied");
            // As kv's open: whoever deploys it needs the line that grants it.
            tracing::warn!(target: "outpost::wasi_keyvalue", function = %ctx.function, op, store,
                "wasi:keyvalue open refused (access-denied): store '{store}' is not granted; add it to `stores` under `[kv]` in {}.toml", ctx.function);
            Err(Refusal::Kv(KvError::AccessDenied).into_wasi(&ctx.policy.limits))
        }
        Err(refusal) => {
            ctx.services.ops.count(op, refusal.label());
            tracing::debug!(target: "outpost::wasi_keyvalue", function = %ctx.function, op, store, refusal = ?refusal, "wasi:keyvalue call refused");
            Err(refusal.into_wasi(&ctx.policy.limits))
        }
    }
}

/// A storage failure, logged with the error id the guest is told.
fn io(ctx: &KvCtx, error: StorageError) -> Refusal {
    let id = outpost_wire::error_id();
    tracing::error!(target: "outpost::wasi_keyvalue", function = %ctx.function, error_id = %id, error = %error, "wasi:keyvalue storage failure");
    let failure = crate::storage_failure::for_guest(&error, &id);
    Refusal::Kv(if failure.outcome_unknown {
        KvError::OutcomeUnknown(failure.message)
    } else {
        KvError::Io(failure.message)
    })
}

async fn write(ctx: &KvCtx, op: WriteOp) -> Result<Written, Refusal> {
    match ctx.services.storage.write(op).await {
        Ok(Written::Rejected(Rejection::Conflict)) => Err(KvError::Conflict.into()),
        Ok(Written::Rejected(Rejection::NotANumber)) => Err(KvError::NotANumber.into()),
        Ok(Written::Rejected(Rejection::Overflow)) => Err(KvError::Overflow.into()),
        Ok(Written::Rejected(Rejection::OutboxFull)) => Err(KvError::OutboxFull.into()),
        Ok(written) => Ok(written),
        Err(e) => Err(io(ctx, e)),
    }
}

fn get(ctx: &KvCtx, store: &str, key: &str) -> Result<Option<Vec<u8>>, Refusal> {
    ctx.policy.check_key(key)?;
    ctx.services.storage.get(store, key).map_err(|e| io(ctx, e))
}

async fn set(ctx: &KvCtx, store: &str, key: String, value: Vec<u8>) -> Result<(), Refusal> {
    ctx.policy.check_key(&key)?;
    ctx.policy.check_value(&value)?;
    let op = WriteOp::Set {
        replicated: ctx.services.catalog.is_replicated(store),
        store: store.to_owned(),
        key,
        value,
    };
    write(ctx, op).await.map(drop)
}

async fn delete(ctx: &KvCtx, store: &str, key: String) -> Result<(), Refusal> {
    ctx.policy.check_key(&key)?;
    let op = WriteOp::Delete {
        replicated: ctx.services.catalog.is_replicated(store),
        store: store.to_owned(),
        key,
    };
    write(ctx, op).await.map(drop)
}

async fn increment(ctx: &KvCtx, store: &str, key: String, delta: u64) -> Result<u64, Refusal> {
    ctx.policy.check_key(&key)?;
    let delta = i64::try_from(delta).map_err(|_| Refusal::DeltaTooLarge(delta))?;
    // kv's counters may be negative; refuse one up front rather than write
    // and then fail to say the result in a u64.
    if let Some(value) = get(ctx, store, &key)?
        .as_deref()
        .and_then(outpost_store::committer::ops::parse_integer)
        .filter(|n| *n < 0)
    {
        return Err(Refusal::NegativeCounter {
            value,
            applied: false,
        });
    }
    let op = WriteOp::Increment {
        replicated: ctx.services.catalog.is_replicated(store),
        store: store.to_owned(),
        key,
        delta,
    };
    match write(ctx, op).await? {
        Written::Number(n) => u64::try_from(n).map_err(|_| Refusal::NegativeCounter {
            value: n,
            applied: true,
        }),
        other => unreachable!("increment answered {other:?}"),
    }
}

/// Where a `list-keys` page starts.
enum Start {
    /// After this key (none: from the first key).
    After(Option<String>),
    /// Past the last key: the page is empty.
    End,
}

/// The page start for cursor `skip`: after the `skip`-th live key, counted
/// in pages of at most [`MAX_PAGE`] keys so memory stays bounded.
fn skip_keys(ctx: &KvCtx, store: &str, skip: u64) -> Result<Start, Refusal> {
    let storage = &ctx.services.storage;
    let mut after: Option<String> = None;
    let mut left = skip;
    while left > 0 {
        let limit = left.min(u64::from(MAX_PAGE)) as usize;
        let page = storage
            .list_keys(store, "", after.as_deref(), limit)
            .map_err(|e| io(ctx, e))?;
        left -= page.keys.len() as u64;
        after = page.keys.into_iter().last();
        if left > 0 && page.cursor.is_none() {
            return Ok(Start::End);
        }
    }
    Ok(Start::After(after))
}

impl store::Host for WasiKeyValueView<'_> {
    async fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<Bucket>, Error>> {
        // The WIT's usual "the host's bucket" is the empty identifier; kv's
        // is "default": both are the function's own store.
        let name = if identifier.is_empty() {
            "default"
        } else {
            identifier.as_str()
        };
        let id = match self.ctx.policy.resolve(name) {
            Ok(id) => id,
            Err(e) => return Ok(finish(self.ctx, "wasi.open", &identifier, Err(e.into()))),
        };
        let bucket = self.table.push(Bucket { id, resume: None })?;
        Ok(finish(self.ctx, "wasi.open", &identifier, Ok(bucket)))
    }
}

impl WasiKeyValueView<'_> {
    fn bucket_id(&self, bucket: &Resource<Bucket>) -> wasmtime::Result<String> {
        Ok(self.table.get(bucket)?.id.clone())
    }
}

impl store::HostBucket for WasiKeyValueView<'_> {
    async fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        let id = self.bucket_id(&bucket)?;
        Ok(finish(self.ctx, "wasi.get", &id, get(self.ctx, &id, &key)))
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let id = self.bucket_id(&bucket)?;
        let ctx = self.ctx;
        Ok(finish(
            ctx,
            "wasi.set",
            &id,
            set(ctx, &id, key, value).await,
        ))
    }

    async fn delete(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<(), Error>> {
        let id = self.bucket_id(&bucket)?;
        let ctx = self.ctx;
        Ok(finish(ctx, "wasi.delete", &id, delete(ctx, &id, key).await))
    }

    async fn exists(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<bool, Error>> {
        let id = self.bucket_id(&bucket)?;
        let ctx = self.ctx;
        let result = ctx
            .policy
            .check_key(&key)
            .map_err(Refusal::from)
            .and_then(|()| {
                ctx.services
                    .storage
                    .exists(&id, &key)
                    .map_err(|e| io(ctx, e))
            });
        Ok(finish(ctx, "wasi.exists", &id, result))
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> wasmtime::Result<Result<KeyResponse, Error>> {
        let ctx = self.ctx;
        let open = self.table.get_mut(&bucket)?;
        let skip = cursor.unwrap_or(0);
        let start = match &open.resume {
            // The page after the one this handle just gave out: no need to
            // count keys from the start.
            Some((resume, after)) if *resume == skip && skip > 0 => {
                Ok(Start::After(Some(after.clone())))
            }
            _ => skip_keys(ctx, &open.id, skip),
        };
        let result = start.and_then(|start| match start {
            Start::End => Ok(KeyResponse {
                keys: Vec::new(),
                cursor: None,
            }),
            Start::After(after) => {
                let page = ctx
                    .services
                    .storage
                    .list_keys(&open.id, "", after.as_deref(), MAX_PAGE as usize)
                    .map_err(|e| io(ctx, e))?;
                let next = page.cursor.map(|last| {
                    let next = skip.saturating_add(page.keys.len() as u64);
                    open.resume = Some((next, last));
                    next
                });
                Ok(KeyResponse {
                    keys: page.keys,
                    cursor: next,
                })
            }
        });
        Ok(finish(ctx, "wasi.list-keys", &open.id, result))
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for WasiKeyValueView<'_> {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> wasmtime::Result<Result<u64, Error>> {
        let id = self.bucket_id(&bucket)?;
        let ctx = self.ctx;
        Ok(finish(
            ctx,
            "wasi.increment",
            &id,
            increment(ctx, &id, key, delta).await,
        ))
    }
}

impl batch::Host for WasiKeyValueView<'_> {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<Option<(String, Vec<u8>)>>, Error>> {
        let id = self.bucket_id(&bucket)?;
        let ctx = self.ctx;
        let result = keys
            .into_iter()
            .map(|key| Ok(get(ctx, &id, &key)?.map(|value| (key, value))))
            .collect();
        Ok(finish(ctx, "wasi.get-many", &id, result))
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let id = self.bucket_id(&bucket)?;
        let ctx = self.ctx;
        let result = async {
            // Check every pair first, so a bad key or value late in the
            // list refuses the batch before any of it is written.
            for (key, value) in &key_values {
                ctx.policy.check_key(key)?;
                ctx.policy.check_value(value)?;
            }
            for (key, value) in key_values {
                set(ctx, &id, key, value).await?;
            }
            Ok(())
        }
        .await;
        Ok(finish(ctx, "wasi.set-many", &id, result))
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let id = self.bucket_id(&bucket)?;
        let ctx = self.ctx;
        let result = async {
            for key in &keys {
                ctx.policy.check_key(key)?;
            }
            for key in keys {
                delete(ctx, &id, key).await?;
            }
            Ok(())
        }
        .await;
        Ok(finish(ctx, "wasi.delete-many", &id, result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn other(refusal: Refusal) -> String {
        match refusal.into_wasi(&KvLimits::default()) {
            Error::Other(detail) => detail,
            e => panic!("expected other, got {e:?}"),
        }
    }

    #[test]
    fn the_two_named_refusals_keep_their_variants() {
        let limits = KvLimits::default();
        let denied = Refusal::Kv(KvError::AccessDenied).into_wasi(&limits);
        assert!(matches!(denied, Error::AccessDenied));
        let missing = Refusal::Kv(KvError::NoSuchStore).into_wasi(&limits);
        assert!(matches!(missing, Error::NoSuchStore));
    }

    #[test]
    fn every_other_refusal_is_other_led_by_kvs_error_name() {
        let cases = [
            (Refusal::Kv(KvError::InvalidKey), "invalid-key"),
            (Refusal::Kv(KvError::ValueTooLarge), "value-too-large"),
            (Refusal::Kv(KvError::NotANumber), "not-a-number"),
            (Refusal::Kv(KvError::Overflow), "overflow"),
            (Refusal::DeltaTooLarge(u64::MAX), "overflow"),
            (
                Refusal::NegativeCounter {
                    value: -1,
                    applied: false,
                },
                "not-a-number",
            ),
            (Refusal::Kv(KvError::OutboxFull), "outbox-full"),
            (Refusal::Kv(KvError::Io("disk".into())), "io"),
            (
                Refusal::Kv(KvError::OutcomeUnknown("disk".into())),
                "outcome-unknown",
            ),
        ];
        for (refusal, name) in cases {
            assert_eq!(refusal.label(), name);
            let detail = other(refusal);
            assert!(detail.starts_with(&format!("{name}: ")), "{detail}");
        }
        assert!(other(Refusal::Kv(KvError::InvalidKey)).contains("512 bytes"));
        assert!(other(Refusal::Kv(KvError::ValueTooLarge)).contains("1048576 bytes"));
    }
}
