//! The `Linker` every function links against (one per engine, all alike):
//! what the host provides.

use crate::http_cache::{HttpCache, Purge};
use crate::state::RequestState;
use wasmtime::Engine;
use wasmtime::component::Linker;

/// WASI 0.2 (cli, clocks, random, io, filesystem without preopens, sockets
/// that deny every address), `wasi:http`, `wasi:config/store@0.2.0-rc.1`,
/// `wasi:keyvalue@0.2.0-draft` (over kv's stores), and Outpost's `kv`,
/// `queue` and `cache`. Imports of any older 0.2.x WASI version
/// resolve to these by wasmtime's semver matching.
pub fn build(engine: &Engine) -> anyhow::Result<Linker<RequestState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    // Over wasmtime_wasi's own: the function's `[env]`, shared by its
    // requests instead of copied into each one's `WasiCtx`.
    crate::function_env::add_environment_to_linker(&mut linker, RequestState::environment)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    wasmtime_wasi_config::add_to_linker(&mut linker, RequestState::config)?;
    outpost_caps::kv::add_to_linker(&mut linker, RequestState::kv)?;
    outpost_caps::wasi_keyvalue::add_to_linker(&mut linker, RequestState::wasi_keyvalue)?;
    outpost_caps::queue::add_to_linker(&mut linker, RequestState::queue)?;
    outpost_caps::cache::add_to_linker(&mut linker, RequestState::cache)?;
    Ok(linker)
}

/// `outpost:edge/cache` purges the node's cache: a function's own entries
/// by one surrogate key.
impl outpost_caps::cache::Purger for HttpCache {
    fn purge_surrogate_key(&self, function: &str, key: &str) -> u64 {
        self.purge(&Purge::SurrogateKey {
            key: key.to_owned(),
            function: Some(function.to_owned()),
        })
        .entries
    }
}
