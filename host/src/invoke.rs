//! Runs one request in a brand-new instance of a function and turns the
//! outcome into a response: the guest's, or a 5xx with an error id.

use crate::function::Function;
use crate::guest_body::{GuestBody, GuestCall};
use crate::reply::{self, OutBody};
use crate::state::RequestState;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body::Body;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use tokio::sync::oneshot;
use wasmtime::Store;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

type GuestResponse = Result<Response<HyperOutgoingBody>, ErrorCode>;

/// What settled first: the guest's response, or the guest's call.
enum First {
    Response(Result<GuestResponse, oneshot::error::RecvError>),
    Returned(wasmtime::Result<()>),
}

/// Serves `req` with a fresh instance of `function`.
///
/// No task is spawned: the guest call is polled here until it sets its
/// response, then handed to the response body, which keeps polling it while
/// the body streams.
pub async fn invoke<B>(function: Arc<Function>, mut req: Request<B>) -> Response<OutBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    // HTTP/1.0 clients may omit Host; wasi:http requires an authority.
    if req.uri().authority().is_none() && !req.headers().contains_key(header::HOST) {
        req.headers_mut()
            .insert(header::HOST, HeaderValue::from_static("localhost"));
    }
    let mut store = Store::new(function.pre.engine(), RequestState::new(&function));
    let (sender, mut receiver) = oneshot::channel();
    let resources = {
        let mut http = store.data_mut().http();
        http.new_incoming_request(Scheme::Http, req)
            .and_then(|req| Ok((req, http.new_response_outparam(sender)?)))
    };
    let (guest_req, outparam) = match resources {
        Ok(pair) => pair,
        Err(e) => {
            return fail(
                &function,
                StatusCode::BAD_REQUEST,
                "bad-request",
                "the request cannot be given to a function",
                &e,
            );
        }
    };

    let pre = function.pre.clone();
    let mut guest: GuestCall = Box::pin(async move {
        let proxy = pre.instantiate_async(&mut store).await?;
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, guest_req, outparam)
            .await
        // `store` drops here: the instance's pool slot is free again.
    });

    let first = poll_fn(|cx| {
        if let Poll::Ready(r) = Pin::new(&mut receiver).poll(cx) {
            return Poll::Ready(First::Response(r));
        }
        if let Poll::Ready(r) = guest.as_mut().poll(cx) {
            return Poll::Ready(First::Returned(r));
        }
        Poll::Pending
    })
    .await;

    match first {
        First::Response(Ok(Ok(response))) => {
            let name = function.name.clone();
            response.map(|body| OutBody::Guest(GuestBody::new(body, Some(guest), name)))
        }
        First::Response(Ok(Err(code))) => fail(
            &function,
            StatusCode::INTERNAL_SERVER_ERROR,
            "guest-error",
            "the function answered with an error",
            &format!("guest set an error response: {code:?}"),
        ),
        // The outparam was dropped unset; the call's result says why.
        First::Response(Err(_)) => guest_returned(&function, guest.await, None),
        First::Returned(result) => guest_returned(&function, result, receiver.try_recv().ok()),
    }
}

/// The guest's call ended before (or without) handing over a response.
fn guest_returned(
    function: &Function,
    result: wasmtime::Result<()>,
    response: Option<GuestResponse>,
) -> Response<OutBody> {
    match (result, response) {
        (Ok(()), Some(Ok(response))) => {
            response.map(|body| OutBody::Guest(GuestBody::new(body, None, function.name.clone())))
        }
        (Ok(()), Some(Err(code))) => fail(
            function,
            StatusCode::INTERNAL_SERVER_ERROR,
            "guest-error",
            "the function answered with an error",
            &format!("guest set an error response: {code:?}"),
        ),
        (Ok(()), None) => fail(
            function,
            StatusCode::INTERNAL_SERVER_ERROR,
            "no-response",
            "the function returned without sending a response",
            &"handler returned without calling response-outparam.set" as &dyn std::fmt::Debug,
        ),
        (Err(e), _)
            if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                .is_some() =>
        {
            let mut response = fail(
                function,
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many requests in flight; retry shortly",
                &e,
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        (Err(e), _) => fail(
            function,
            StatusCode::INTERNAL_SERVER_ERROR,
            "guest-trap",
            "the function failed",
            &e,
        ),
    }
}

/// Logs `detail` under a new error id and answers with that id.
fn fail(
    function: &Function,
    status: StatusCode,
    code: &str,
    message: &str,
    detail: &dyn std::fmt::Debug,
) -> Response<OutBody> {
    let id = reply::error_id();
    tracing::error!(
        function = %function.name,
        version = %function.short_hash(),
        error_id = %id,
        status = status.as_u16(),
        code = %code,
        detail = %reply::one_line(&format!("{detail:?}")),
        "{message}"
    );
    reply::error(status, code, message, &id)
}
