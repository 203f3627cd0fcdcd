//! One request in one brand-new instance of a function: admission
//! ([`admission`]), the instance call (here), and the outcome turned into
//! the client's response ([`outcome`]). Every per-request limit is enforced
//! here, in [`outcome`], or in [`GuestBody`](crate::guest_body::GuestBody).

pub mod admission;
mod outcome;

use crate::access_log::Instantiated;
use crate::body::OutBody;
use crate::error_code::ErrorCode;
use crate::function::Function;
use crate::guest_body::{GuestCall, GuestOutcome};
use crate::limits::MeteredBody;
use crate::metrics::Metrics;
use crate::state::RequestState;
use admission::Admission;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body::Body;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use tokio::sync::oneshot;
use tokio::time::Instant;
use wasmtime::Store;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode as GuestErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

type GuestResponse = Result<Response<HyperOutgoingBody>, GuestErrorCode>;

/// One request's identity, for its responses, logs and metrics.
pub(crate) struct Call<'a> {
    pub(crate) function: &'a Function,
    pub(crate) request_id: &'a HeaderValue,
    pub(crate) metrics: &'a Metrics,
}

/// What settled first.
enum First {
    Response(Result<GuestResponse, oneshot::error::RecvError>),
    Returned(GuestOutcome),
    Deadline,
}

/// Serves `req` with a fresh instance of `function`.
///
/// No task is spawned: the guest call is polled here until it sets its
/// response, then handed to the response body, which keeps polling it while
/// the body streams.
pub async fn invoke<B>(
    function: Arc<Function>,
    admission: &Admission,
    req: Request<B>,
    request_id: &HeaderValue,
) -> Response<OutBody>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    let instantiated = Arc::new(AtomicU64::new(NOT_INSTANTIATED));
    let mut response = run(function, admission, req, request_id, instantiated.clone()).await;
    let us = instantiated.load(Ordering::Relaxed);
    if us != NOT_INSTANTIATED {
        response
            .extensions_mut()
            .insert(Instantiated(std::time::Duration::from_micros(us)));
    }
    response
}

/// What [`run`]'s instantiation time reads before the instance exists.
const NOT_INSTANTIATED: u64 = u64::MAX;

async fn run<B>(
    function: Arc<Function>,
    admission: &Admission,
    mut req: Request<B>,
    request_id: &HeaderValue,
    instantiated: Arc<AtomicU64>,
) -> Response<OutBody>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    let call = Call {
        function: &function,
        request_id,
        metrics: &admission.metrics,
    };
    let limits = function.policy.limits;
    let deadline = Instant::now() + limits.timeout;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max_request_body_bytes) {
        return outcome::too_large(&call, declared);
    }
    let Some(permit) = admission.admit().await else {
        return outcome::overloaded(&call, &"no free instance slot within the queue timeout");
    };
    // HTTP/1.0 clients may omit Host; wasi:http requires an authority.
    if req.uri().authority().is_none() && !req.headers().contains_key(header::HOST) {
        req.headers_mut()
            .insert(header::HOST, HeaderValue::from_static("localhost"));
    }
    let (parts, body) = req.into_parts();
    let (body, body_exceeded) = MeteredBody::new(body, limits.max_request_body_bytes);
    let req = Request::from_parts(parts, body);

    let engine = function.engine_index();
    tracing::trace!(target: "outpost::invoke", function = %function.name, engine, "instantiating");
    let pre = function.pres[engine].clone();
    let mut store = Store::new(
        pre.engine(),
        RequestState::new(
            &function.name,
            &function.policy,
            &function.services,
            request_id.clone(),
        ),
    );
    store.limiter(|state| &mut state.memory);
    // Check in at every epoch tick: yield to other requests, and let the
    // deadline below cut off a guest that never returns.
    store.set_epoch_deadline(1);
    store.epoch_deadline_async_yield_and_update(1);
    let (sender, mut receiver) = oneshot::channel();
    let resources = {
        let mut http = store.data_mut().http();
        http.new_incoming_request(Scheme::Http, req)
            .and_then(|req| Ok((req, http.new_response_outparam(sender)?)))
    };
    let (guest_req, outparam) = match resources {
        Ok(pair) => pair,
        Err(e) => {
            return outcome::fail(
                &call,
                ErrorCode::BadRequest,
                "the request cannot be given to a function",
                &e,
            );
        }
    };

    let instantiate_duration = admission.metrics.instantiate_duration.clone();
    let mut guest: GuestCall = Box::pin(async move {
        let _slot = permit;
        let started = std::time::Instant::now();
        let instance = pre.instantiate_async(&mut store).await;
        let took = started.elapsed();
        instantiate_duration.observe(took);
        instantiated.store(took.as_micros() as u64, Ordering::Relaxed);
        let result = match instance {
            Ok(proxy) => {
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, guest_req, outparam)
                    .await
            }
            Err(e) => Err(e),
        };
        GuestOutcome {
            result,
            memory_limit_hit: store.data().memory.hit,
        }
        // `store` drops here and `_slot` with it: the instance slot is free.
    });
    let mut timer = Box::pin(tokio::time::sleep_until(deadline));

    let first = poll_fn(|cx| {
        if let Poll::Ready(r) = Pin::new(&mut receiver).poll(cx) {
            return Poll::Ready(First::Response(r));
        }
        if let Poll::Ready(r) = guest.as_mut().poll(cx) {
            return Poll::Ready(First::Returned(r));
        }
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(First::Deadline);
        }
        Poll::Pending
    })
    .await;

    let over_body_limit = || body_exceeded.load(Ordering::Acquire);
    let response = match first {
        // The guest read past the body limit: whatever it made of that, the
        // client's request was too large.
        _ if over_body_limit() => return outcome::too_large(&call, None),
        First::Response(Ok(Ok(response))) => response,
        First::Response(Ok(Err(code))) => return outcome::guest_error(&call, code),
        // The outparam was dropped unset; the call's result says why.
        First::Response(Err(_)) => {
            let outcome = tokio::select! {
                outcome = guest.as_mut() => outcome,
                () = timer.as_mut() => return outcome::deadline_exceeded(&call),
            };
            return outcome::guest_failed(&call, outcome, over_body_limit());
        }
        First::Returned(outcome) => match receiver.try_recv() {
            Ok(Ok(response)) if outcome.result.is_ok() => {
                return outcome::respond(&call, response, None, timer);
            }
            Ok(Err(code)) if outcome.result.is_ok() => return outcome::guest_error(&call, code),
            _ => return outcome::guest_failed(&call, outcome, over_body_limit()),
        },
        First::Deadline => return outcome::deadline_exceeded(&call),
    };
    outcome::respond(&call, response, Some(guest), timer)
}
