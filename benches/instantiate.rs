//! In-process cost of serving one request in a fresh instance: `Store`,
//! instantiate from the version's `ProxyPre`, call `handle`, read the body,
//! drop everything. No network. Needs the guests: `cargo xtask guests`.
//!
//! Run: `cargo bench -p outpost --bench instantiate`

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Empty};

mod support;

fn bench(c: &mut Criterion) {
    let (hello, _storage, allocator) = support::load("hello", "hello");
    let admission = support::admission();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let request_id = http::HeaderValue::from_static("bench");
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
                    let response =
                        outpost::invoke::invoke(hello.clone(), &admission, req, &request_id).await;
                    assert_eq!(response.status(), 200);
                    response.into_body().collect().await.unwrap().to_bytes()
                })
            })
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
