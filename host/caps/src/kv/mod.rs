//! The `outpost:edge/kv` capability, one unit: its settings
//! ([`settings`]: the host's limits and a function's `[kv]`), a policy
//! built once per function version ([`KvPolicy`]), a context per request
//! ([`KvCtx`]), and [`add_to_linker`]. Which stores replicate is the
//! node-wide [`Catalog`].
//!
//! A function opens its own `default` store or a shared store its settings
//! grant. Reads go to the node's database directly; writes go through the
//! node's single writer and return once durable.

pub mod catalog;
pub mod policy;
pub mod settings;

pub use catalog::{Catalog, own_store_id};
pub use policy::KvPolicy;
pub use settings::{KvLimits, KvSection, KvSettingsError, MAX_KEY_BYTES_CAP, MAX_VALUE_BYTES_CAP};

use crate::Services;
pub use crate::bindings::OpenStore;
use crate::bindings::kv::{self, Error, KeyPage};
use outpost_store::{Rejection, StorageError, WriteOp, Written};
use std::sync::Arc;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

/// Most keys one `list-keys` call returns, whatever the guest asks for.
pub const MAX_PAGE: u32 = 1000;

/// Per-request KV state: which function is asking, what it may do, and the
/// node's database.
pub struct KvCtx {
    /// The function version's policy.
    pub policy: Arc<KvPolicy>,
    /// The node-wide parts.
    pub services: Arc<Services>,
    /// The function's name, for log lines.
    pub function: Arc<str>,
}

/// What the generated bindings operate on: the request's KV context and
/// the resource table its store handles live in.
pub struct KvView<'a> {
    ctx: &'a KvCtx,
    table: &'a mut ResourceTable,
}

impl<'a> KvView<'a> {
    /// The view over one request's state.
    pub fn new(ctx: &'a KvCtx, table: &'a mut ResourceTable) -> Self {
        Self { ctx, table }
    }
}

struct HasKv;

impl HasData for HasKv {
    type Data<'a> = KvView<'a>;
}

/// Links `outpost:edge/kv` into `linker`; `view` projects the store data
/// `T` onto the request's KV context and resource table.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> KvView<'_>,
) -> wasmtime::Result<()> {
    kv::add_to_linker::<T, HasKv>(linker, view)
}

impl KvView<'_> {
    fn store_id(&self, store: &Resource<OpenStore>) -> wasmtime::Result<String> {
        Ok(self.table.get(store)?.id.clone())
    }

    fn check_key(&self, key: &str) -> Result<(), Error> {
        self.ctx.policy.check_key(key)
    }

    fn check_value(&self, value: &[u8]) -> Result<(), Error> {
        self.ctx.policy.check_value(value)
    }

    fn io(&self, error: StorageError) -> Error {
        let id = outpost_wire::error_id();
        tracing::error!(target: "outpost::kv", function = %self.ctx.function, error_id = %id, error = %error, "kv storage failure");
        let failure = crate::storage_failure::for_guest(&error, &id);
        if failure.outcome_unknown {
            Error::OutcomeUnknown(failure.message)
        } else {
            Error::Io(failure.message)
        }
    }

    async fn write(&mut self, op: WriteOp) -> Result<Written, Error> {
        match self.ctx.services.storage.write(op).await {
            Ok(Written::Rejected(Rejection::Conflict)) => Err(Error::Conflict),
            Ok(Written::Rejected(Rejection::NotANumber)) => Err(Error::NotANumber),
            Ok(Written::Rejected(Rejection::Overflow)) => Err(Error::Overflow),
            Ok(Written::Rejected(Rejection::OutboxFull)) => Err(Error::OutboxFull),
            Ok(written) => Ok(written),
            Err(e) => Err(self.io(e)),
        }
    }

    /// Counts the call in `outpost_kv_operations_total{op, result}`.
    fn counted<T>(&self, op: &'static str, result: Result<T, Error>) -> Result<T, Error> {
        let outcome = match &result {
            Ok(_) => "ok",
            Err(Error::AccessDenied) => "access-denied",
            Err(Error::NoSuchStore) => "no-such-store",
            Err(Error::InvalidKey) => "invalid-key",
            Err(Error::ValueTooLarge) => "value-too-large",
            Err(Error::Conflict) => "conflict",
            Err(Error::NotANumber) => "not-a-number",
            Err(Error::Overflow) => "overflow",
            Err(Error::OutcomeUnknown(_)) => "outcome-unknown",
            Err(Error::OutboxFull) => "outbox-full",
            Err(Error::Io(_)) => "io",
        };
        self.ctx.services.ops.count(op, outcome);
        result
    }

    fn replicated(&self, store: &str) -> bool {
        self.ctx.services.catalog.is_replicated(store)
    }
}

impl kv::Host for KvView<'_> {}

impl kv::HostStore for KvView<'_> {
    async fn open(&mut self, name: String) -> wasmtime::Result<Result<Resource<OpenStore>, Error>> {
        let id = match self.ctx.policy.resolve(&name) {
            Ok(id) => id,
            Err(Error::AccessDenied) => {
                // The guest may handle it, but whoever deploys it needs to
                // know which line grants it.
                tracing::warn!(target: "outpost::kv", function = %self.ctx.function, store = %name,
                    "kv open refused (access-denied): store '{name}' is not granted; add it to `stores` under `[kv]` in {}.toml", self.ctx.function);
                return Ok(self.counted("open", Err(Error::AccessDenied)));
            }
            Err(e) => {
                tracing::debug!(target: "outpost::kv", function = %self.ctx.function, store = %name, error = ?e, "kv open refused");
                return Ok(self.counted("open", Err(e)));
            }
        };
        let store = self.table.push(OpenStore { id })?;
        Ok(self.counted("open", Ok(store)))
    }

    async fn get(
        &mut self,
        store: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        let id = self.store_id(&store)?;
        let result = self.check_key(&key).and_then(|()| {
            let storage = &self.ctx.services.storage;
            storage.get(&id, &key).map_err(|e| self.io(e))
        });
        Ok(self.counted("get", result))
    }

    async fn set(
        &mut self,
        store: Resource<OpenStore>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let store = self.store_id(&store)?;
        let result = async {
            self.check_key(&key)?;
            self.check_value(&value)?;
            let replicated = self.replicated(&store);
            let op = WriteOp::Set {
                store,
                replicated,
                key,
                value,
            };
            self.write(op).await.map(drop)
        }
        .await;
        Ok(self.counted("set", result))
    }

    async fn delete(
        &mut self,
        store: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<(), Error>> {
        let store = self.store_id(&store)?;
        let result = async {
            self.check_key(&key)?;
            let replicated = self.replicated(&store);
            let op = WriteOp::Delete {
                store,
                replicated,
                key,
            };
            self.write(op).await.map(drop)
        }
        .await;
        Ok(self.counted("delete", result))
    }

    async fn exists(
        &mut self,
        store: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<bool, Error>> {
        let id = self.store_id(&store)?;
        let result = self.check_key(&key).and_then(|()| {
            let storage = &self.ctx.services.storage;
            storage.exists(&id, &key).map_err(|e| self.io(e))
        });
        Ok(self.counted("exists", result))
    }

    async fn list_keys(
        &mut self,
        store: Resource<OpenStore>,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Result<KeyPage, Error>> {
        let id = self.store_id(&store)?;
        let limit = limit.clamp(1, MAX_PAGE) as usize;
        let storage = &self.ctx.services.storage;
        let result = storage
            .list_keys(&id, &prefix, cursor.as_deref(), limit)
            .map(|page| KeyPage {
                keys: page.keys,
                cursor: page.cursor,
            })
            .map_err(|e| self.io(e));
        Ok(self.counted("list-keys", result))
    }

    async fn increment(
        &mut self,
        store: Resource<OpenStore>,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, Error>> {
        let store = self.store_id(&store)?;
        let result = async {
            self.check_key(&key)?;
            let replicated = self.replicated(&store);
            let op = WriteOp::Increment {
                store,
                replicated,
                key,
                delta,
            };
            match self.write(op).await? {
                Written::Number(n) => Ok(n),
                other => unreachable!("increment answered {other:?}"),
            }
        }
        .await;
        Ok(self.counted("increment", result))
    }

    async fn compare_and_swap(
        &mut self,
        store: Resource<OpenStore>,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let store = self.store_id(&store)?;
        let result = async {
            self.check_key(&key)?;
            self.check_value(&new)?;
            let replicated = self.replicated(&store);
            let op = WriteOp::CompareAndSwap {
                store,
                replicated,
                key,
                expected,
                new,
            };
            self.write(op).await.map(drop)
        }
        .await;
        Ok(self.counted("compare-and-swap", result))
    }

    async fn drop(&mut self, store: Resource<OpenStore>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}
