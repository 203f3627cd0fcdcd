//! A guest call's outcome as the client's response: the guest's own, sent
//! whole or streamed under the limits, or an error with an id, whose log
//! line carries the detail.

use super::Call;
use crate::body::OutBody;
use crate::error_code::ErrorCode;
use crate::guest_body::{self, Drained, GuestBody, GuestCall, GuestOutcome};
use crate::metrics::{FunctionLabels, Name};
use http::{HeaderValue, Response, header};
use outpost_http::{reply, request_id};
use std::pin::Pin;
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode as GuestErrorCode;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// Hands the guest's response to the client, its body still driving the
/// guest (if it is still running) under the deadline and size limit. A
/// guest that has already returned left its whole body behind: that goes
/// out in one piece when it can (see [`guest_body::drain_finished`]).
pub(super) fn respond(
    call: &Call<'_>,
    response: Response<HyperOutgoingBody>,
    guest: Option<GuestCall>,
    timer: Pin<Box<tokio::time::Sleep>>,
) -> Response<OutBody> {
    let limit = call.function.policy.limits.max_response_body_bytes;
    let declared = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return fail(
            call,
            ErrorCode::ResponseTooLarge,
            "the function's response is over the size limit",
            &format!("content-length {declared:?} over the {limit}-byte limit"),
        );
    }
    let name = || call.function.name.clone();
    let (parts, mut body) = response.into_parts();
    if guest.is_some() {
        let body = GuestBody::new(body, guest, name(), timer, limit);
        return Response::from_parts(parts, OutBody::Guest(body));
    }
    match guest_body::drain_finished(&mut body, limit) {
        Drained::Whole(bytes) => {
            Response::from_parts(parts, OutBody::Full(reply::Full::new(bytes)))
        }
        Drained::Started(frames) => {
            let body = GuestBody::new(body, None, name(), timer, limit).with_buffered(frames);
            Response::from_parts(parts, OutBody::Guest(body))
        }
        Drained::TooLarge => fail(
            call,
            ErrorCode::ResponseTooLarge,
            "the function's response is over the size limit",
            &format!("body over the {limit}-byte limit"),
        ),
    }
}

/// The guest's call ended before (or without) handing over a response.
pub(super) fn guest_failed(
    call: &Call<'_>,
    outcome: GuestOutcome,
    over_body_limit: bool,
) -> Response<OutBody> {
    if over_body_limit {
        return too_large(call, None);
    }
    match outcome.result {
        Ok(()) => fail(
            call,
            ErrorCode::NoResponse,
            "the function returned without sending a response",
            &"handler returned without calling response-outparam.set",
        ),
        Err(e)
            if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                .is_some() =>
        {
            overloaded(call, &e)
        }
        Err(e) if outcome.memory_limit_hit => fail(
            call,
            ErrorCode::MemoryLimit,
            "the function ran out of memory (it is over its memory limit)",
            &e,
        ),
        Err(e) => trapped(call, &e),
    }
}

/// A trap: the cause on the line, and the guest's stack as one compact
/// `backtrace` field whose frames carry the function's name (not the file
/// the component was built as) without Rust's crate hashes.
fn trapped(call: &Call<'_>, e: &wasmtime::Error) -> Response<OutBody> {
    let id = reply::error_id();
    let code = ErrorCode::GuestTrap;
    let message = "the function failed";
    let backtrace = e
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .map(|bt| frames(&call.function.name, bt))
        .unwrap_or_default();
    tracing::error!(target: "outpost::invoke",
        function = %call.function.name,
        version = %call.function.short_hash(),
        request_id = %request_id::as_str(call.request_id),
        error_id = %id,
        status = code.status().as_u16(),
        code = %code,
        detail = %reply::one_line(&e.root_cause().to_string()),
        backtrace = %backtrace,
        "{message}"
    );
    reply::error(code.status(), code.as_str(), message, &id)
}

/// `function!frame < function!caller < ...`, innermost first.
fn frames(function: &str, backtrace: &wasmtime::WasmBacktrace) -> String {
    backtrace
        .frames()
        .iter()
        .map(|frame| {
            let name = frame
                .func_name()
                .map_or_else(|| format!("func{}", frame.func_index()), without_hashes);
            format!("{function}!{name}")
        })
        .collect::<Vec<_>>()
        .join(" < ")
}

/// `std[d123b7a1a2ed1472]::process::abort` -> `std::process::abort`: the
/// bracketed crate disambiguators of Rust's v0 symbol names.
fn without_hashes(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find(']').map(|c| open + c) else {
            break;
        };
        let inside = &rest[open + 1..close];
        out.push_str(&rest[..open]);
        if inside.is_empty() || !inside.bytes().all(|b| b.is_ascii_hexdigit()) {
            out.push_str(&rest[open..=close]);
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

pub(super) fn guest_error(call: &Call<'_>, code: GuestErrorCode) -> Response<OutBody> {
    fail(
        call,
        ErrorCode::GuestError,
        "the function answered with an error",
        &format!("guest set an error response: {code:?}"),
    )
}

pub(super) fn too_large(call: &Call<'_>, declared: Option<u64>) -> Response<OutBody> {
    let limit = call.function.policy.limits.max_request_body_bytes;
    fail(
        call,
        ErrorCode::BodyTooLarge,
        &format!("request bodies are limited to {limit} bytes"),
        &format!("request body over the limit (content-length {declared:?})"),
    )
}

pub(super) fn overloaded(call: &Call<'_>, detail: &dyn std::fmt::Debug) -> Response<OutBody> {
    call.metrics
        .overloaded
        .get_or_create(&FunctionLabels {
            function: Name(call.function.name.clone()),
        })
        .inc();
    let mut response = fail(
        call,
        ErrorCode::Overloaded,
        "too many requests in flight; retry shortly",
        detail,
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

pub(super) fn deadline_exceeded(call: &Call<'_>) -> Response<OutBody> {
    let timeout = call.function.policy.limits.timeout;
    fail(
        call,
        ErrorCode::Deadline,
        &format!(
            "the function did not answer within {} ms",
            timeout.as_millis()
        ),
        &"request deadline reached; the instance was stopped",
    )
}

/// Logs `detail` under a new error id and answers with that id.
pub(super) fn fail(
    call: &Call<'_>,
    code: ErrorCode,
    message: &str,
    detail: &dyn std::fmt::Debug,
) -> Response<OutBody> {
    let status = code.status();
    let id = reply::error_id();
    tracing::error!(target: "outpost::invoke",
        function = %call.function.name,
        version = %call.function.short_hash(),
        request_id = %request_id::as_str(call.request_id),
        error_id = %id,
        status = status.as_u16(),
        code = %code,
        detail = %reply::one_line(&format!("{detail:?}")),
        "{message}"
    );
    reply::error(status, code.as_str(), message, &id)
}

#[cfg(test)]
mod tests {
    use super::without_hashes;

    #[test]
    fn crate_hashes_are_dropped_and_other_brackets_kept() {
        assert_eq!(
            without_hashes("std[d123b7a1a2ed1472]::panicking::panic_with_hook"),
            "std::panicking::panic_with_hook"
        );
        assert_eq!(
            without_hashes("wasi:http/incoming-handler@0.2.12#handle"),
            "wasi:http/incoming-handler@0.2.12#handle"
        );
        assert_eq!(without_hashes("f<[u8; 4]>"), "f<[u8; 4]>");
        assert_eq!(without_hashes("a[]b[zz]"), "a[]b[zz]");
        assert_eq!(without_hashes("unclosed[abc"), "unclosed[abc");
    }
}
