//! In-process cost of serving one request in a fresh instance: `Store`,
//! instantiate from the version's `ProxyPre`, call `handle`, read the body,
//! drop everything. No network. How this scales over two cores is
//! `benches/scaling.rs`. Needs the guests: `cargo xtask guests`.
//!
//! Run: `cargo bench -p outpost --bench instantiate`

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Empty};
use outpost::function::Function;
use outpost::invoke::Admission;
use std::sync::Arc;

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
}

criterion_group!(benches, bench);
criterion_main!(benches);
