//! The `outpost:edge/kv` capability: linked once, configured per function
//! version ([`KvPolicy`]), prepared per request ([`KvCtx`]).
//!
//! A function opens its own `default` store or a shared store its settings
//! grant. Reads go to the node's database directly; writes go through the
//! node's single writer and return once durable.

use crate::bindings::kv::{self, Error, KeyPage};
use crate::function_config::{KvSection, is_shared_store_name};
use crate::state::RequestState;
use crate::storage::{Rejection, Storage, StorageError, WriteOp, Written};
use crate::stores::{Catalog, own_store_id};
use serde::Deserialize;
use std::collections::HashSet;
use std::sync::Arc;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

/// Most keys one `list-keys` call returns, whatever the guest asks for.
pub const MAX_PAGE: u32 = 1000;

/// Highest value limit a config may set: a record of this size, base64 in
/// JSON, still fits the cloud's batch limit alone.
pub const MAX_VALUE_BYTES_CAP: usize = 16 * 1024 * 1024;

/// Highest key limit a config may set.
pub const MAX_KEY_BYTES_CAP: usize = 64 * 1024;

/// Size limits on keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KvLimits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
}

impl Default for KvLimits {
    fn default() -> Self {
        Self {
            max_key_bytes: 512,
            max_value_bytes: 1024 * 1024,
        }
    }
}

/// What one function version may do with KV, from its settings.
#[derive(Debug, Clone)]
pub struct KvPolicy {
    /// Store id of the function's `default` store.
    pub own_store: String,
    /// Shared store names the function may open.
    pub grants: HashSet<String>,
    /// Store ids this function declares replicated.
    pub replicated: HashSet<String>,
    pub limits: KvLimits,
}

impl KvPolicy {
    pub fn new(function: &str, section: &KvSection, host_limits: KvLimits) -> Self {
        let own_store = own_store_id(function);
        let replicated = section
            .replicated
            .iter()
            .map(|name| {
                if name == "default" {
                    own_store.clone()
                } else {
                    name.clone()
                }
            })
            .collect();
        Self {
            grants: section.stores.iter().cloned().collect(),
            replicated,
            limits: KvLimits {
                max_key_bytes: section.max_key_bytes.unwrap_or(host_limits.max_key_bytes),
                max_value_bytes: section
                    .max_value_bytes
                    .unwrap_or(host_limits.max_value_bytes),
            },
            own_store,
        }
    }

    /// The store id `name` opens for this function.
    fn resolve(&self, name: &str) -> Result<String, Error> {
        if name == "default" {
            Ok(self.own_store.clone())
        } else if !is_shared_store_name(name) {
            Err(Error::NoSuchStore)
        } else if self.grants.contains(name) {
            Ok(name.to_owned())
        } else {
            Err(Error::AccessDenied)
        }
    }
}

/// The node-wide parts every request shares.
pub struct KvServices {
    pub storage: Arc<Storage>,
    pub catalog: Arc<Catalog>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Per-request KV state: which function is asking, and the node's database.
pub struct KvCtx {
    pub policy: Arc<KvPolicy>,
    pub services: Arc<KvServices>,
    pub function: Arc<str>,
}

/// An open store handle held in the request's resource table.
pub struct OpenStore {
    id: String,
}

/// What the generated bindings operate on.
pub struct KvView<'a> {
    ctx: &'a KvCtx,
    table: &'a mut ResourceTable,
}

struct HasKv;

impl HasData for HasKv {
    type Data<'a> = KvView<'a>;
}

pub fn add_to_linker(linker: &mut Linker<RequestState>) -> wasmtime::Result<()> {
    kv::add_to_linker::<RequestState, HasKv>(linker, |state| {
        let (ctx, table) = state.kv_parts();
        KvView { ctx, table }
    })
}

impl KvView<'_> {
    fn store_id(&self, store: &Resource<OpenStore>) -> wasmtime::Result<String> {
        Ok(self.table.get(store)?.id.clone())
    }

    fn check_key(&self, key: &str) -> Result<(), Error> {
        if key.is_empty() || key.len() > self.ctx.policy.limits.max_key_bytes {
            Err(Error::InvalidKey)
        } else {
            Ok(())
        }
    }

    fn check_value(&self, value: &[u8]) -> Result<(), Error> {
        if value.len() > self.ctx.policy.limits.max_value_bytes {
            Err(Error::ValueTooLarge)
        } else {
            Ok(())
        }
    }

    fn io(&self, error: StorageError) -> Error {
        let id = crate::reply::error_id();
        tracing::error!(function = %self.ctx.function, error_id = %id, error = %error, "kv storage failure");
        Error::Io(format!("storage failure (error id {id})"))
    }

    async fn write(&mut self, op: WriteOp) -> Result<Written, Error> {
        match self.ctx.services.storage.write(op).await {
            Ok(Written::Rejected(Rejection::Conflict)) => Err(Error::Conflict),
            Ok(Written::Rejected(Rejection::NotANumber)) => Err(Error::NotANumber),
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
            Err(Error::OutboxFull) => "outbox-full",
            Err(Error::Io(_)) => "io",
        };
        self.ctx.services.metrics.kv_op(op, outcome);
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
            Err(e) => {
                tracing::debug!(function = %self.ctx.function, store = %name, error = ?e, "kv open refused");
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
