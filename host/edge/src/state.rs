//! What a `Store` holds for one request: WASI and wasi:http contexts, the
//! resource table, one context per capability (kv, queue, outbound HTTP,
//! cache purge), the function's env and config values and the memory
//! limiter.

use crate::function_env::{EnvView, FunctionEnv};
use crate::guest_log::{self, GuestLog};
use crate::policy::Policy;
use outpost_caps::Services;
use outpost_caps::cache::{CacheCtx, CacheView};
use outpost_caps::kv::{KvCtx, KvView};
use outpost_caps::outbound::Outbound;
use outpost_caps::queue::{QueueCtx, QueueView};
use std::sync::Arc;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_config::WasiConfig;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Most elements a table may grow to; far above what real guests use.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// Caps linear memory at the function's limit, and remembers whether the
/// guest ran into it, so a failure can be reported as a memory limit.
pub struct MemoryLimiter {
    max_bytes: usize,
    /// The guest asked for more memory than it may have.
    pub hit: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Refuse like a full machine would (`memory.grow` returns -1), so a
        // guest that handles allocation failure still can.
        if desired > self.max_bytes {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.hit = true;
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Store data for one request; created fresh per request and dropped with
/// the instance, so nothing survives from one request to the next.
pub struct RequestState {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    outbound: Outbound,
    kv: KvCtx,
    queue: QueueCtx,
    /// This function's entries in the node's HTTP cache, purged by
    /// surrogate key.
    cache: CacheCtx,
    /// The version's `[env]` and secrets, behind `wasi:cli/environment`
    /// and `wasi:config/store`: shared, so a request copies nothing.
    env: Arc<FunctionEnv>,
    /// Caps linear memory at the function's limit.
    pub memory: MemoryLimiter,
}

impl RequestState {
    /// The state for one request to function `name` under `policy`;
    /// `request_id` goes on every line of guest output.
    pub fn new(
        name: &Arc<str>,
        policy: &Policy,
        services: &Arc<Services>,
        request_id: http::HeaderValue,
    ) -> Self {
        let (stdout, stderr) = GuestLog::pair(name.clone(), request_id, guest_log::DEFAULT_BUDGET);
        // No preopened directories, no network, no inherited environment:
        // a function sees only what Outpost's own interfaces give it. Its
        // `[env]` is not put here (each request would copy it) but served
        // from `env` (see `crate::linker`).
        let wasi = WasiCtx::builder().stdout(stdout).stderr(stderr).build();
        Self {
            table: ResourceTable::new(),
            wasi,
            http: WasiHttpCtx::new(),
            outbound: Outbound {
                function: name.clone(),
                allowed: policy.allowed_hosts.clone(),
                remaining: policy.limits.max_outbound_requests,
            },
            memory: MemoryLimiter {
                max_bytes: policy.limits.max_memory_bytes,
                hit: false,
            },
            kv: KvCtx {
                policy: policy.kv.clone(),
                services: services.clone(),
                function: name.clone(),
            },
            queue: QueueCtx {
                policy: policy.queue,
                services: services.clone(),
                function: name.clone(),
            },
            cache: CacheCtx {
                policy: policy.purge.clone(),
                function: name.clone(),
            },
            env: policy.env.clone(),
        }
    }

    /// The kv capability's view: its context and the resource table.
    pub fn kv(&mut self) -> KvView<'_> {
        KvView::new(&self.kv, &mut self.table)
    }

    /// `wasi:keyvalue`'s view: the kv context (same policy, same stores)
    /// and the resource table.
    pub fn wasi_keyvalue(&mut self) -> outpost_caps::wasi_keyvalue::WasiKeyValueView<'_> {
        outpost_caps::wasi_keyvalue::WasiKeyValueView::new(&self.kv, &mut self.table)
    }

    /// The queue capability's view.
    pub fn queue(&mut self) -> QueueView<'_> {
        QueueView::new(&self.queue)
    }

    /// The cache capability's view.
    pub fn cache(&mut self) -> CacheView<'_> {
        CacheView::new(&self.cache)
    }

    /// `wasi:cli/environment`'s view: the function's `[env]`.
    pub fn environment(&mut self) -> EnvView<'_> {
        EnvView(&self.env)
    }

    /// `wasi:config/store`'s view: `[env]` and the secrets.
    pub fn config(&mut self) -> WasiConfig<'_> {
        WasiConfig::from(self.env.config())
    }
}

impl WasiView for RequestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for RequestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}
