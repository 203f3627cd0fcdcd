//! Runs one request in a brand-new instance of a function and turns the
//! outcome into a response: the guest's, or an error status with an id.
//! Every per-request limit is enforced here or in [`GuestBody`].

use crate::function::Function;
use crate::guest_body::{self, Drained, GuestBody, GuestCall, GuestOutcome};
use crate::limits::MeteredBody;
use crate::metrics::{FunctionLabels, Metrics, Name};
use crate::reply::{self, OutBody};
use crate::request_id;
use crate::state::RequestState;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body::Body;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::task::Poll;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::Instant;
use wasmtime::Store;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

type GuestResponse = Result<Response<HyperOutgoingBody>, ErrorCode>;

/// Admission control: at most as many requests run as there are instance
/// slots; a request waits briefly for one, then gets 503.
pub struct Admission {
    slots: Arc<Semaphore>,
    capacity: usize,
    /// How long a request may wait for a slot.
    queue_timeout: Duration,
    /// Requests waiting for a slot now.
    waiting: AtomicI64,
    pub metrics: Arc<Metrics>,
}

impl Admission {
    pub fn new(slots: usize, queue_timeout: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(slots)),
            capacity: slots,
            queue_timeout,
            waiting: AtomicI64::new(0),
            metrics,
        }
    }

    /// Instances running (or being created) now.
    pub fn in_flight(&self) -> usize {
        self.capacity - self.slots.available_permits()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn waiting(&self) -> i64 {
        self.waiting.load(Ordering::Relaxed)
    }

    async fn admit(&self) -> Option<OwnedSemaphorePermit> {
        // The fast path takes no timer.
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Some(permit);
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let permit = tokio::time::timeout(self.queue_timeout, self.slots.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok);
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        permit
    }
}

/// One request's identity, for its responses, logs and metrics.
struct Call<'a> {
    function: &'a Function,
    request_id: &'a HeaderValue,
    metrics: &'a Metrics,
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
    mut req: Request<B>,
    request_id: &HeaderValue,
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
        return too_large(&call, declared);
    }
    let Some(permit) = admission.admit().await else {
        return overloaded(&call, &"no free instance slot within the queue timeout");
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
    tracing::trace!(function = %function.name, engine, "instantiating");
    let pre = function.pres[engine].clone();
    let mut store = Store::new(
        pre.engine(),
        RequestState::new(&function, request_id.clone()),
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
            return fail(
                &call,
                StatusCode::BAD_REQUEST,
                "bad-request",
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
        instantiate_duration.observe(started.elapsed());
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
        _ if over_body_limit() => return too_large(&call, None),
        First::Response(Ok(Ok(response))) => response,
        First::Response(Ok(Err(code))) => return guest_error(&call, code),
        // The outparam was dropped unset; the call's result says why.
        First::Response(Err(_)) => {
            let outcome = tokio::select! {
                outcome = guest.as_mut() => outcome,
                () = timer.as_mut() => return deadline_exceeded(&call),
            };
            return guest_failed(&call, outcome, over_body_limit());
        }
        First::Returned(outcome) => match receiver.try_recv() {
            Ok(Ok(response)) if outcome.result.is_ok() => {
                return respond(&call, response, None, timer);
            }
            Ok(Err(code)) if outcome.result.is_ok() => return guest_error(&call, code),
            _ => return guest_failed(&call, outcome, over_body_limit()),
        },
        First::Deadline => return deadline_exceeded(&call),
    };
    respond(&call, response, Some(guest), timer)
}

/// Hands the guest's response to the client, its body still driving the
/// guest (if it is still running) under the deadline and size limit. A
/// guest that has already returned left its whole body behind: that goes
/// out in one piece when it can (see [`guest_body::drain_finished`]).
fn respond(
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
            StatusCode::INTERNAL_SERVER_ERROR,
            "response-too-large",
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
        Drained::Whole(bytes) => Response::from_parts(parts, OutBody::Full(Some(bytes))),
        Drained::Started(frames) => {
            let body = GuestBody::new(body, None, name(), timer, limit).with_buffered(frames);
            Response::from_parts(parts, OutBody::Guest(body))
        }
        Drained::TooLarge => fail(
            call,
            StatusCode::INTERNAL_SERVER_ERROR,
            "response-too-large",
            "the function's response is over the size limit",
            &format!("body over the {limit}-byte limit"),
        ),
    }
}

/// The guest's call ended before (or without) handing over a response.
fn guest_failed(
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
            StatusCode::INTERNAL_SERVER_ERROR,
            "no-response",
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
            StatusCode::INTERNAL_SERVER_ERROR,
            "memory-limit",
            "the function ran out of memory (it is over its memory limit)",
            &e,
        ),
        Err(e) => fail(
            call,
            StatusCode::INTERNAL_SERVER_ERROR,
            "guest-trap",
            "the function failed",
            &e,
        ),
    }
}

fn guest_error(call: &Call<'_>, code: ErrorCode) -> Response<OutBody> {
    fail(
        call,
        StatusCode::INTERNAL_SERVER_ERROR,
        "guest-error",
        "the function answered with an error",
        &format!("guest set an error response: {code:?}"),
    )
}

fn too_large(call: &Call<'_>, declared: Option<u64>) -> Response<OutBody> {
    let limit = call.function.policy.limits.max_request_body_bytes;
    fail(
        call,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body-too-large",
        &format!("request bodies are limited to {limit} bytes"),
        &format!("request body over the limit (content-length {declared:?})"),
    )
}

fn overloaded(call: &Call<'_>, detail: &dyn std::fmt::Debug) -> Response<OutBody> {
    call.metrics
        .overloaded
        .get_or_create(&FunctionLabels {
            function: Name(call.function.name.clone()),
        })
        .inc();
    let mut response = fail(
        call,
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "too many requests in flight; retry shortly",
        detail,
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

fn deadline_exceeded(call: &Call<'_>) -> Response<OutBody> {
    let timeout = call.function.policy.limits.timeout;
    fail(
        call,
        StatusCode::GATEWAY_TIMEOUT,
        "deadline",
        &format!(
            "the function did not answer within {} ms",
            timeout.as_millis()
        ),
        &"request deadline reached; the instance was stopped",
    )
}

/// Logs `detail` under a new error id and answers with that id.
fn fail(
    call: &Call<'_>,
    status: StatusCode,
    code: &str,
    message: &str,
    detail: &dyn std::fmt::Debug,
) -> Response<OutBody> {
    let id = reply::error_id();
    tracing::error!(
        function = %call.function.name,
        version = %call.function.short_hash(),
        request_id = %request_id::as_str(call.request_id),
        error_id = %id,
        status = status.as_u16(),
        code = %code,
        detail = %reply::one_line(&format!("{detail:?}")),
        "{message}"
    );
    reply::error(status, code, message, &id)
}
