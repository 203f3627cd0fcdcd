//! What a `Store` holds for one request: WASI and wasi:http contexts, the
//! resource table, and the host's wasi:http policy hooks.

use crate::function::Function;
use crate::guest_log::{self, GuestLog};
use crate::kv::KvCtx;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// Store data for one request; created fresh per request and dropped with
/// the instance, so nothing survives from one request to the next.
pub struct RequestState {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: OutboundPolicy,
    kv: KvCtx,
}

impl RequestState {
    pub fn new(function: &Function) -> Self {
        let (stdout, stderr) = GuestLog::pair(function.name.clone(), guest_log::DEFAULT_BUDGET);
        // No preopened directories, no network, no inherited environment:
        // a function sees only what Outpost's own interfaces give it.
        let wasi = WasiCtx::builder().stdout(stdout).stderr(stderr).build();
        Self {
            table: ResourceTable::new(),
            wasi,
            http: WasiHttpCtx::new(),
            hooks: OutboundPolicy,
            kv: KvCtx {
                policy: function.kv.clone(),
                services: function.services.clone(),
                function: function.name.clone(),
            },
        }
    }

    /// The KV context and the resource table, borrowed together.
    pub fn kv_parts(&mut self) -> (&KvCtx, &mut ResourceTable) {
        (&self.kv, &mut self.table)
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
            hooks: &mut self.hooks,
        }
    }
}

/// Outbound `wasi:http/outgoing-handler` policy: deny by default. Per-function
/// allow lists come with function configuration.
struct OutboundPolicy;

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        tracing::warn!(uri = %request.uri(), "outbound HTTP denied: no hosts are allowed");
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}
