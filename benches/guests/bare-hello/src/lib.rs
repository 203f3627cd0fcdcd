//! The `hello` example written against `wasi:http` directly: the same
//! body and content-type, without the SDK's `http::Request` (it reads
//! nothing of the request). Benchmarks serve it beside the SDK's hello to
//! show what the SDK's conversions cost, and what a leaner guest buys
//! against `wasmtime serve` (`load throughput --wasm`, `load callgrind
//! --wasm`).
//!
//! With `?cacheable` in the request it answers with `Cache-Control: public,
//! max-age=60`: the cacheable hello of the HTTP cache's benchmark (`load
//! throughput --wasm ... --path '/hello?cacheable'`), servable by `wasmtime
//! serve` too, which imports nothing but `wasi:http`.

use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Hello;

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let headers = Fields::new();
        let _ = headers.append("content-type", b"text/plain; charset=utf-8");
        if request
            .path_with_query()
            .is_some_and(|p| p.ends_with("?cacheable"))
        {
            let _ = headers.append("cache-control", b"public, max-age=60");
        }
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("a new response has a body");
        ResponseOutparam::set(out, Ok(response));
        {
            let stream = body.write().expect("a new body has an output stream");
            // The client may have gone; there is no one left to tell.
            let _ = stream.blocking_write_and_flush(b"Hello from Outpost!\n");
        }
        let _ = OutgoingBody::finish(body, None);
    }
}

wasip2::http::proxy::export!(Hello);
