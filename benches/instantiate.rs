//! In-process cost of serving one request in a fresh instance: `Store`,
//! instantiate from the version's `ProxyPre`, call `handle`, read the body,
//! drop everything. No network. Needs the guests: `cargo xtask guests`.
//!
//! Run: `cargo bench -p outpost --bench instantiate`

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Empty};
use outpost::config::ServeConfig;
use std::path::PathBuf;
use std::sync::Arc;

fn guest(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/wasm32-wasip2/guest")
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the guests with `cargo xtask guests`",
            path.display()
        )
    })
}

fn bench(c: &mut Criterion) {
    let data = tempfile_dir();
    let config = ServeConfig::default();
    let (engine, allocator) = outpost::engine::build(&config).expect("engine");
    let cache = outpost::cache::CodeCache::open(&data, &engine).expect("cache");
    let storage = outpost::storage::Storage::open(&data, None).expect("storage");
    let services = Arc::new(outpost::kv::KvServices {
        storage,
        catalog: Arc::new(outpost::stores::Catalog::new(Default::default())),
    });
    let loader =
        outpost::loader::Loader::new(engine, cache, services, Default::default()).expect("loader");
    let hello = Arc::new(
        loader
            .load("hello", &guest("hello"), &Default::default())
            .expect("load hello"),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    c.bench_function(
        &format!("hello/instantiate+handle ({})", allocator.as_str()),
        |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let req = http::Request::builder()
                        .uri("/hello")
                        .header("host", "bench")
                        .body(
                            Empty::<Bytes>::new()
                                .map_err(|never| -> wasmtime_wasi_http::Error { match never {} }),
                        )
                        .unwrap();
                    let response = outpost::invoke::invoke(hello.clone(), req).await;
                    assert_eq!(response.status(), 200);
                    response.into_body().collect().await.unwrap().to_bytes()
                })
            })
        },
    );
}

/// A throwaway data dir for the code cache.
fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("outpost-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

criterion_group!(benches, bench);
criterion_main!(benches);
