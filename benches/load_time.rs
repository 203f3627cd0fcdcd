//! Time to make a module version ready, as `outpost serve` does on a deploy
//! (cache miss: compile, validate, link, write the cache) and on a restart
//! (cache hit: deserialize, link), for a small Rust guest and a large
//! component (the JavaScript test guest, about 13 MB). Needs the guests:
//! `cargo xtask guests` (the large one is built there too).
//!
//! Run: `cargo bench -p outpost --bench load_time`

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use outpost_edge::activity::FunctionStats;
use outpost_edge::loader::Loader;
use std::sync::Arc;

mod support;

/// A loader over its own (empty) code cache, sharing the engines (one per
/// core, as `outpost serve` runs: a version is loaded into each).
fn loader(engines: &[wasmtime::Engine], services: &Arc<outpost_caps::Services>) -> Loader {
    let dir = support::scratch_dir("load-time");
    let cache = outpost_edge::cache::CodeCache::open(&dir, &engines[0]).expect("cache");
    Loader::new(
        engines.to_vec(),
        cache,
        services.clone(),
        Default::default(),
        Default::default(),
        outpost_edge::metrics::Metrics::new(),
    )
    .expect("loader")
}

fn bench(c: &mut Criterion) {
    let config = outpost_edge::config::ServeConfig::default();
    let (engines, _) = outpost_edge::engine::build(&config).expect("engines");
    let data = support::scratch_dir("load-time-db");
    let storage = outpost_store::Storage::open(&data, Some("bench")).expect("storage");
    let services = Arc::new(outpost_caps::Services {
        catalog: Arc::new(outpost_caps::kv::Catalog::new(
            Default::default(),
            storage.clone(),
        )),
        storage,
        ops: Default::default(),
        link: Default::default(),
    });
    let large = support::target_dir().join("foreign/javascript.wasm");
    let mut guests = vec![("hello", support::guest("hello"))];
    match std::fs::read(&large) {
        Ok(bytes) => guests.push(("javascript", bytes)),
        Err(e) => eprintln!(
            "skipping the large component ({}: {e}); build it with `cargo xtask guests`",
            large.display()
        ),
    }
    let settings = outpost_edge::loader::Settings::default();
    let mut group = c.benchmark_group("load");
    group.sample_size(10);
    for (name, bytes) in &guests {
        let load = |loader: &Loader| {
            loader
                .load(name, bytes, &settings, FunctionStats::detached())
                .expect("loads")
        };
        group.bench_function(
            format!("compiled/{name} ({} KiB)", bytes.len() / 1024),
            |b| {
                b.iter_batched(
                    || loader(&engines, &services),
                    |l| load(&l),
                    BatchSize::PerIteration,
                )
            },
        );
        let warm = loader(&engines, &services);
        load(&warm);
        group.bench_function(format!("cache/{name}"), |b| b.iter(|| load(&warm)));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
