//! Counts requests in a static and answers with the count. On a host that
//! reuses instances the count climbs; on Outpost it is 1 every time.
//!
//! Written against the plain `wasi:http/proxy@0.2.0` bindings (the `wasi`
//! crate 0.13), not the SDK, to show that components targeting an older
//! 0.2.x proxy world load unchanged.

use std::sync::atomic::{AtomicU32, Ordering};
use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

static COUNT: AtomicU32 = AtomicU32::new(0);

struct Stateful;

impl wasi::exports::http::incoming_handler::Guest for Stateful {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        let count = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
        let response = OutgoingResponse::new(Fields::new());
        let body = response.body().unwrap();
        ResponseOutparam::set(out, Ok(response));
        let stream = body.write().unwrap();
        stream
            .blocking_write_and_flush(format!("{count}\n").as_bytes())
            .unwrap();
        drop(stream);
        OutgoingBody::finish(body, None).unwrap();
    }
}

wasi::http::proxy::export!(Stateful);
