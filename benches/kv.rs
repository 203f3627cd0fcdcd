//! Edge data throughput, in process, through real guests and real sled:
//!
//! - `kv/get`: a guest request that reads one key;
//! - `kv/set (durable)`: a guest request that writes one key and returns
//!   after the flush, 64 requests in flight (group commit at work);
//! - `queue/enqueue (durable)`: the same for `queue.enqueue`;
//! - `shipper/drain`: records per second from a full outbox to a real
//!   `outpost cloud` tier on loopback, acknowledged and deleted.
//!
//! Needs the guests: `cargo xtask guests`.
//! Run: `cargo bench -p outpost --bench kv`

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http_body_util::{BodyExt, Empty};
use outpost_edge::function::Function;
use outpost_store::{Storage, WriteOp};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::scratch_dir;

mod support;

/// Requests in flight at once in the write benchmarks.
const IN_FLIGHT: usize = 64;

static ADMISSION: std::sync::LazyLock<outpost_edge::invoke::admission::Admission> =
    std::sync::LazyLock::new(support::admission);

async fn call(function: &Arc<Function>, path: &str) {
    let req = http::Request::builder()
        .method("POST")
        .uri(path)
        .header("host", "bench")
        .body(
            Empty::<Bytes>::new().map_err(|never| -> wasmtime_wasi_http::Error { match never {} }),
        )
        .unwrap();
    let response = outpost_edge::invoke::invoke(
        function.clone(),
        &ADMISSION,
        req,
        &http::HeaderValue::from_static("bench"),
    )
    .await;
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(
        body.starts_with(b"{\"ok\""),
        "{}",
        String::from_utf8_lossy(&body)
    );
}

/// Runs `total` requests built by `path`, `IN_FLIGHT` at a time.
async fn concurrent(function: &Arc<Function>, total: u64, path: impl Fn(u64) -> String) {
    let mut next = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    while next < total || !tasks.is_empty() {
        while next < total && tasks.len() < IN_FLIGHT {
            let (function, path) = (function.clone(), path(next));
            tasks.spawn(async move { call(&function, &path).await });
            next += 1;
        }
        tasks.join_next().await.unwrap().unwrap();
    }
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (function, storage, _) = support::load("kvtest", "kv");
    runtime.block_on(call(&function, "/kv/default/set?key=hot"));

    let mut group = c.benchmark_group("kv");
    group.throughput(Throughput::Elements(1));
    group.bench_function("get", |b| {
        b.iter(|| runtime.block_on(call(&function, "/kv/default/get?key=hot")))
    });
    group.bench_function("set (durable)", |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            runtime.block_on(concurrent(&function, iters, |i| {
                format!("/kv/default/set?key=k{}", i % 1000)
            }));
            started.elapsed()
        })
    });
    group.finish();

    let mut group = c.benchmark_group("queue");
    group.throughput(Throughput::Elements(1));
    group.bench_function("enqueue (durable)", |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            runtime.block_on(concurrent(&function, iters, |_| {
                "/kv/_/enqueue?topic=bench".to_string()
            }));
            started.elapsed()
        })
    });
    group.finish();
    drop(storage);

    bench_drain(c, &runtime);
}

/// Records per second from a full outbox to a real cloud on loopback.
fn bench_drain(c: &mut Criterion, runtime: &tokio::runtime::Runtime) {
    const RECORDS: u64 = 2000;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cloud = outpost_cloud::CloudConfig {
        listen: ([127, 0, 0, 1], port).into(),
        data_dir: scratch_dir("cloud"),
        dev_token: Some("bench".into()),
        ..Default::default()
    };
    runtime.spawn(outpost_cloud::serve(cloud, std::future::pending()));
    let url = format!("http://127.0.0.1:{port}");

    let mut group = c.benchmark_group("shipper");
    group.sample_size(10);
    group.throughput(Throughput::Elements(RECORDS));
    group.bench_function("drain", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let storage = Storage::open(&scratch_dir("edge"), None).unwrap();
                runtime.block_on(async {
                    let mut writes = tokio::task::JoinSet::new();
                    for i in 0..RECORDS {
                        let storage = storage.clone();
                        writes.spawn(async move {
                            let op = WriteOp::Enqueue {
                                topic: "drain".into(),
                                payload: format!("{{\"n\":{i}}}").into_bytes(),
                                idempotency_key: None,
                            };
                            storage.write(op).await.unwrap();
                        });
                    }
                    writes.join_all().await;
                });
                let started = Instant::now();
                let replication = runtime.block_on(async {
                    outpost_edge::replication::start(
                        storage.clone(),
                        &url,
                        Some("bench".into()),
                        256,
                        outpost_edge::metrics::Metrics::new(),
                    )
                    .unwrap()
                });
                while storage.outbox_len() > 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
                total += started.elapsed();
                drop(replication);
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
