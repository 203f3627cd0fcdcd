//! In-process cost of serving one request in a fresh instance: `Store`,
//! instantiate from the version's `ProxyPre`, call `handle`, read the body,
//! drop everything. No network. How this scales over two cores is
//! `benches/scaling.rs`. Needs the guests: `cargo xtask guests`.
//!
//! Run: `cargo bench -p outpost --bench instantiate`

use criterion::{Criterion, criterion_group, criterion_main};
use std::sync::Arc;

mod support;

/// The allocator `outpost serve` runs with (see `host/outpost/src/main.rs`).
#[global_allocator]
static ALLOCATOR: outpost::alloc::Mimalloc = outpost::alloc::Mimalloc;

fn bench(c: &mut Criterion) {
    let (hello, _storage, allocator) = support::load("hello", "hello");
    let admission = Arc::new(support::admission());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    c.bench_function(
        &format!("hello/instantiate+handle ({})", allocator.as_str()),
        |b| b.iter(|| runtime.block_on(support::hello_request(&hello, &admission))),
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
