//! Shared by the benchmarks: guest bytes and scratch folders.
// Each benchmark binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// One request to `hello` in a fresh instance through Outpost's `invoke`,
/// body read to the end.
pub async fn hello_request(
    hello: &std::sync::Arc<outpost_edge::function::Function>,
    admission: &outpost_edge::invoke::admission::Admission,
) -> bytes::Bytes {
    use http_body_util::{BodyExt, Empty};
    let req = http::Request::builder()
        .uri("/hello")
        .header("host", "bench")
        .body(
            Empty::<bytes::Bytes>::new()
                .map_err(|never| -> wasmtime_wasi_http::Error { match never {} }),
        )
        .unwrap();
    let id = http::HeaderValue::from_static("bench");
    let response = outpost_edge::invoke::invoke(hello.clone(), admission, req, &id).await;
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap().to_bytes()
}

/// The target dir this benchmark runs from (`target/release/deps/`),
/// wherever `CARGO_TARGET_DIR` puts it.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("bench binary path");
    exe.ancestors()
        .nth(3)
        .expect("the bench binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// A guest built by `cargo xtask guests`.
pub fn guest(name: &str) -> Vec<u8> {
    let path = target_dir()
        .join("wasm32-wasip2/guest")
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the guests with `cargo xtask guests`",
            path.display()
        )
    })
}

/// Admission for in-process benchmarks: as many slots as the pool.
pub fn admission() -> outpost_edge::invoke::admission::Admission {
    let config = outpost_edge::config::ServeConfig::default();
    outpost_edge::invoke::admission::Admission::new(
        config.max_instances as usize,
        config.queue_timeout,
        outpost_edge::metrics::Metrics::new(),
    )
}

/// A fresh folder under this run's scratch root.
pub fn scratch_dir(tag: &str) -> PathBuf {
    let dir = run_root().join(format!("{tag}-{}", fastrand::u32(..)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `outpost-bench-run-PID` under the system temp dir. A benchmark exits
/// without tidying up (criterion owns `main`), so each run first removes
/// the roots of earlier runs whose process is gone: compiled artifacts of
/// the large guest would otherwise pile up in the temp dir. A root counts
/// as gone only if its PID is not running here *and* it is older than
/// [`STALE`], so a run in another PID namespace sharing this temp dir
/// keeps its data.
fn run_root() -> &'static Path {
    const STALE: Duration = Duration::from_secs(6 * 3600);
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let tmp = std::env::temp_dir();
        let can_tell_live = Path::new("/proc/self").exists();
        for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix("outpost-bench-run-"))
                .filter(|pid| pid.parse::<u32>().is_ok())
            else {
                continue;
            };
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > STALE));
            if can_tell_live && old && !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let root = tmp.join(format!("outpost-bench-run-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        root
    })
}

/// Loads guest `guest_name` as function `name` on a fresh node database,
/// the way `outpost serve` does: pooled engine, code cache, linker.
pub fn load(
    guest_name: &str,
    name: &str,
) -> (
    std::sync::Arc<outpost_edge::function::Function>,
    std::sync::Arc<outpost_store::Storage>,
    outpost_edge::engine::Allocator,
) {
    load_with(
        guest_name,
        name,
        outpost_edge::config::ServeConfig::default().engines,
    )
}

/// [`load`] with `engines` engines instead of one per core.
pub fn load_with(
    guest_name: &str,
    name: &str,
    engines: usize,
) -> (
    std::sync::Arc<outpost_edge::function::Function>,
    std::sync::Arc<outpost_store::Storage>,
    outpost_edge::engine::Allocator,
) {
    use std::sync::Arc;
    let data = scratch_dir(name);
    let config = outpost_edge::config::ServeConfig {
        engines,
        ..Default::default()
    };
    let (engines, allocator) = outpost_edge::engine::build(&config).expect("engines");
    let cache = outpost_edge::cache::CodeCache::open(&data, &engines[0]).expect("cache");
    let storage = outpost_store::Storage::open(&data, Some("bench")).expect("storage");
    let services = Arc::new(outpost_caps::Services {
        storage: storage.clone(),
        catalog: Arc::new(outpost_caps::kv::Catalog::new(
            Default::default(),
            storage.clone(),
        )),
        ops: Default::default(),
        link: Default::default(),
    });
    let loader = outpost_edge::loader::Loader::new(
        engines,
        cache,
        services,
        Default::default(),
        Default::default(),
        outpost_edge::metrics::Metrics::new(),
    )
    .expect("loader");
    let function = loader
        .load(
            name,
            &guest(guest_name),
            &Default::default(),
            outpost_edge::activity::FunctionStats::detached(),
        )
        .expect("load guest");
    (Arc::new(function), storage, allocator)
}
