//! Fails on purpose, by path: `/trap/panic`, `/trap/unreachable`,
//! `/trap/no-response`, `/trap/error-code`; anything else answers `ok`.

use std::io::Write as _;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Trap;

impl wasip2::exports::http::incoming_handler::Guest for Trap {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        match path.as_str() {
            "/trap/panic" => panic!("trap guest panics on request"),
            "/trap/unreachable" => core::arch::wasm32::unreachable(),
            "/trap/no-response" => return,
            "/trap/error-code" => {
                ResponseOutparam::set(
                    out,
                    Err(ErrorCode::InternalError(Some("on purpose".into()))),
                );
                return;
            }
            _ => {}
        }
        let response = OutgoingResponse::new(Fields::new());
        let body = response.body().unwrap();
        ResponseOutparam::set(out, Ok(response));
        let mut stream = body.write().unwrap();
        stream.write_all(b"ok\n").unwrap();
        stream.flush().unwrap();
        drop(stream);
        OutgoingBody::finish(body, None).unwrap();
    }
}

wasip2::http::proxy::export!(Trap);
