//! The `hello` example written against `wasi:http` directly: the same
//! body and content-type, without the SDK's `http::Request` (it reads
//! nothing of the request). Benchmarks serve it beside the SDK's hello to
//! show what the SDK's conversions cost, and what a leaner guest buys
//! against `wasmtime serve` (`load throughput --wasm`, `load callgrind
//! --wasm`).

use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Hello;

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        let headers = Fields::new();
        let _ = headers.append("content-type", b"text/plain; charset=utf-8");
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
