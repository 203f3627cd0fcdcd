//! The edge's group-commit writer alone, without guests or HTTP: durable
//! replicated `set`s per second when `G` writes arrive together (G = 1,
//! 8, 64), each round waiting for all `G` answers. G = 1 is a lone writer:
//! one flush per write, the floor set by the disk. Larger groups share
//! one flush; what is left per write is the writer's own work.
//!
//! Run: `cargo bench -p outpost --bench committer`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use outpost_store::{Storage, WriteOp};
use std::time::Instant;
use support::scratch_dir;

mod support;

fn set(i: u64) -> WriteOp {
    WriteOp::Set {
        store: "@bench".into(),
        replicated: true,
        key: format!("k{}", i % 4096),
        value: b"a value of some thirty-two bytes".to_vec(),
    }
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let storage = Storage::open(&scratch_dir("committer"), Some("bench")).unwrap();
    let mut group = c.benchmark_group("committer");
    for size in [1u64, 8, 64] {
        group.throughput(Throughput::Elements(size));
        group.bench_with_input(BenchmarkId::new("set", size), &size, |b, &size| {
            let mut n = 0u64;
            b.iter_custom(|rounds| {
                let started = Instant::now();
                runtime.block_on(async {
                    for _ in 0..rounds {
                        let mut writes = tokio::task::JoinSet::new();
                        for _ in 0..size {
                            let (storage, op) = (storage.clone(), set(n));
                            n += 1;
                            writes.spawn(async move { storage.write(op).await.unwrap() });
                        }
                        writes.join_all().await;
                    }
                });
                started.elapsed()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
