//! In-process cost of serving one request in a fresh instance: `Store`,
//! instantiate from the version's `ProxyPre`, call `handle`, read the body,
//! drop everything. No network. Also the same loop on one and on two
//! threads at once (each pinned to its own core), to show how the request
//! path scales across cores: as `outpost serve` runs it (an engine per
//! core, so each thread instantiates from its own), and with one engine
//! that both threads share (`--engines 1`), which is what the engine per
//! core saves. Needs the guests: `cargo xtask guests`.
//!
//! Run: `cargo bench -p outpost --bench instantiate`

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http_body_util::{BodyExt, Empty};
use outpost::function::Function;
use outpost::invoke::Admission;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;

/// The allocator `outpost serve` runs with (see `host/src/main.rs`).
#[global_allocator]
static ALLOCATOR: outpost::alloc::Mimalloc = outpost::alloc::Mimalloc;

/// One request to `hello` in a fresh instance, body read to the end.
async fn hello_request(hello: &Arc<Function>, admission: &Admission) -> Bytes {
    let req = http::Request::builder()
        .uri("/hello")
        .header("host", "bench")
        .body(
            Empty::<Bytes>::new().map_err(|never| -> wasmtime_wasi_http::Error { match never {} }),
        )
        .unwrap();
    let id = http::HeaderValue::from_static("bench");
    let response = outpost::invoke::invoke(hello.clone(), admission, req, &id).await;
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap().to_bytes()
}

/// Runs `iters` requests split over `threads` threads, each with its own
/// single-threaded runtime (as a per-core server would), and returns the
/// wall time of the whole batch.
fn run_parallel(
    hello: &Arc<Function>,
    admission: &Arc<Admission>,
    threads: u64,
    iters: u64,
) -> Duration {
    // The CPUs this process may use; with fewer than `threads` of them the
    // extra threads run unpinned.
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let barrier = Arc::new(std::sync::Barrier::new(threads as usize + 1));
    let workers: Vec<_> = (0..threads)
        .map(|i| {
            let (hello, admission) = (hello.clone(), admission.clone());
            let barrier = barrier.clone();
            let share = iters / threads + u64::from(i < iters % threads);
            let core = cores.get(i as usize).copied();
            std::thread::spawn(move || {
                // One thread per core, as a server with a runtime per core
                // would run; without pinning the scheduler may stack both
                // loops on one core for a while.
                if let Some(core) = core {
                    assert!(
                        core_affinity::set_for_current(core),
                        "cannot pin a bench thread to {core:?}"
                    );
                }
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                barrier.wait();
                runtime.block_on(async {
                    for _ in 0..share {
                        hello_request(&hello, &admission).await;
                    }
                });
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    for worker in workers {
        worker.join().unwrap();
    }
    started.elapsed()
}

fn bench(c: &mut Criterion) {
    let (hello, _storage, allocator) = support::load("hello", "hello");
    let admission = Arc::new(support::admission());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    c.bench_function(
        &format!("hello/instantiate+handle ({})", allocator.as_str()),
        |b| b.iter(|| runtime.block_on(hello_request(&hello, &admission))),
    );

    let mut group = c.benchmark_group("hello/threads");
    group.throughput(Throughput::Elements(1));
    for threads in [1, 2] {
        group.bench_function(format!("{threads}"), |b| {
            b.iter_custom(|iters| run_parallel(&hello, &admission, threads, iters))
        });
    }
    // Both threads instantiate from one engine: its instance pool,
    // reference counts and type registry bounce between the cores.
    let (shared, _shared_storage, _) = support::load_with("hello", "hello", 1);
    group.bench_function("2/one-shared-engine", |b| {
        b.iter_custom(|iters| run_parallel(&shared, &admission, 2, iters))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
