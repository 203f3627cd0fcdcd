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
mod forward;
pub mod mode;
pub mod policy;
pub mod settings;

pub use catalog::{Catalog, own_store_id};
pub use policy::KvPolicy;
pub use settings::{KvLimits, KvSection, KvSettingsError, MAX_KEY_BYTES_CAP, MAX_VALUE_BYTES_CAP};

use crate::Services;
pub use crate::bindings::OpenStore;
use crate::bindings::kv::{
    self, Error, Freshness, KeyPage, Versioned, WriteError, WriteMode, WriteOutcome,
};
use forward::{Outcome, Refused};
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

    /// Commits `op` to `store` under the store's write mode (see
    /// [`forward`]); `Ok(None)`: a forward store that refused it, the
    /// cloud being unreachable.
    async fn commit(
        &mut self,
        store: &str,
        replicated: bool,
        op: WriteOp,
    ) -> Result<Option<(Written, Outcome)>, Error> {
        match self.ctx.commit(store, replicated, op).await {
            Ok((Written::Rejected(rejection), _)) => Err(match rejection {
                Rejection::Conflict => Error::Conflict,
                Rejection::NotANumber => Error::NotANumber,
                Rejection::Overflow => Error::Overflow,
                Rejection::OutboxFull => Error::OutboxFull,
            }),
            Ok(done) => Ok(Some(done)),
            Err(Refused::Unavailable) => Ok(None),
            Err(Refused::ByCloud(reason)) => {
                let id = outpost_wire::error_id();
                tracing::warn!(target: "outpost::kv", function = %self.ctx.function, store, error_id = %id, reason = %reason, "forward write refused by the cloud; the record is quarantined");
                Err(Error::Io(format!(
                    "refused by the cloud (error id {id}): {reason}"
                )))
            }
            Err(Refused::Storage(e)) => Err(self.io(e)),
        }
    }

    /// [`Self::commit`] for the calls that cannot say `unavailable`: it
    /// becomes `io`, and nothing was written.
    async fn write(
        &mut self,
        store: &str,
        replicated: bool,
        op: WriteOp,
    ) -> Result<(Written, Outcome), Error> {
        match self.commit(store, replicated, op).await? {
            Some(done) => Ok(done),
            None => Err(Error::Io(format!(
                "unavailable: the cloud is unreachable and store {store:?} forwards its writes (fallback = \"fail\"); nothing was written"
            ))),
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

fn version(v: outpost_wire::Version) -> kv::Version {
    kv::Version {
        hlc: v.hlc,
        node: v.node,
    }
}

/// `outpost_kv_operations_total{op="write"}`'s result label for an outcome.
fn outcome_label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Local => "local",
        Outcome::Queued(_) => "queued",
        Outcome::Applied(_) => "applied",
        Outcome::Superseded(_) => "superseded",
    }
}

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
                store: store.clone(),
                replicated,
                key,
                value,
            };
            self.write(&store, replicated, op).await.map(drop)
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
                store: store.clone(),
                replicated,
                key,
            };
            self.write(&store, replicated, op).await.map(drop)
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
                store: store.clone(),
                replicated,
                key,
                delta,
            };
            match self.write(&store, replicated, op).await?.0 {
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
                store: store.clone(),
                replicated,
                key,
                expected,
                new,
            };
            match self.write(&store, replicated, op).await? {
                // Swapped here, but the cloud holds a newer value: as far
                // as the caller's protocol goes, the swap lost.
                (_, Outcome::Superseded(_)) => Err(Error::Conflict),
                _ => Ok(()),
            }
        }
        .await;
        Ok(self.counted("compare-and-swap", result))
    }

    async fn get_versioned(
        &mut self,
        store: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Versioned>, Error>> {
        let id = self.store_id(&store)?;
        let result = self.check_key(&key).and_then(|()| {
            let storage = &self.ctx.services.storage;
            let stored = storage.get_versioned(&id, &key).map_err(|e| self.io(e))?;
            let replicated = self.replicated(&id);
            Ok(stored.map(|stored| Versioned {
                acknowledged: replicated && storage.is_answered(&stored.version),
                version: version(stored.version),
                value: stored.value,
            }))
        });
        Ok(self.counted("get-versioned", result))
    }

    async fn freshness(&mut self, store: Resource<OpenStore>) -> wasmtime::Result<Freshness> {
        let id = self.store_id(&store)?;
        let write = self.ctx.services.catalog.write_of(&self.ctx.policy, &id);
        let mode = match write.mode {
            mode::Mode::Local => WriteMode::Local,
            mode::Mode::Forward => WriteMode::Forward,
        };
        self.ctx.services.ops.count("freshness", "ok");
        if !self.replicated(&id) {
            return Ok(Freshness {
                replicated: false,
                stale_ms: 0,
                connected: false,
                pending: 0,
                mode,
            });
        }
        let link = &self.ctx.services.link;
        Ok(Freshness {
            replicated: true,
            stale_ms: u64::try_from(link.lag().as_millis()).unwrap_or(u64::MAX),
            connected: link.connected(),
            pending: self.ctx.services.storage.pending_writes(&id),
            mode,
        })
    }

    async fn write(
        &mut self,
        store: Resource<OpenStore>,
        key: String,
        value: Option<Vec<u8>>,
    ) -> wasmtime::Result<Result<WriteOutcome, WriteError>> {
        let store = self.store_id(&store)?;
        let result = async {
            self.check_key(&key)?;
            if let Some(value) = &value {
                self.check_value(value)?;
            }
            let replicated = self.replicated(&store);
            let op = match value {
                Some(value) => WriteOp::Set {
                    store: store.clone(),
                    replicated,
                    key,
                    value,
                },
                None => WriteOp::Delete {
                    store: store.clone(),
                    replicated,
                    key,
                },
            };
            self.commit(&store, replicated, op).await
        }
        .await;
        let result = match result {
            Ok(Some((_, outcome))) => {
                self.ctx
                    .services
                    .ops
                    .count("write", outcome_label(&outcome));
                Ok(match outcome {
                    Outcome::Local => WriteOutcome::Local,
                    Outcome::Queued(v) => WriteOutcome::Queued(version(v)),
                    Outcome::Applied(v) => WriteOutcome::Applied(version(v)),
                    Outcome::Superseded(v) => WriteOutcome::Superseded(version(v)),
                })
            }
            Ok(None) => {
                self.ctx.services.ops.count("write", "unavailable");
                Err(WriteError::Unavailable)
            }
            Err(e) => Err(WriteError::Store(
                self.counted("write", Err::<(), _>(e)).unwrap_err(),
            )),
        };
        Ok(result)
    }

    async fn drop(&mut self, store: Resource<OpenStore>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}
