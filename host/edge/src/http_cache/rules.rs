//! The rules of the node's HTTP cache, RFC 9111 read as a **shared** cache:
//! whether a response may be stored and what to keep of it, how fresh a
//! stored response is, whether it matches a new request's `Vary` headers,
//! when to answer a client's conditional request with 304, and how to
//! revalidate with the function. Pure: no I/O, and no clock is read here;
//! every function is given the times it needs.
//!
//! Where the RFCs leave room, this cache chooses (each choice is repeated
//! where it applies):
//!
//! - **No heuristic freshness** (RFC 9111 §4.2.2). A response is stored
//!   only with explicit freshness (`s-maxage`, `max-age`, `Expires`), or
//!   with `no-cache` and a validator, and is then revalidated on every use.
//!   A function that says nothing about caching is never cached: a guessed
//!   lifetime would hand one client's dynamic answer to the next.
//! - **Only what can be reused is stored**: a response stale on arrival
//!   (or `no-cache`) without a validator and without a stale window could
//!   never be served again without running the function anyway.
//! - **Statuses**: the heuristically cacheable ones (RFC 9110 §15.1) with
//!   explicit freshness; any other final status also needs `public`, so a
//!   blanket `Cache-Control: max-age=60` does not cache a 500. Never 1xx,
//!   206 (no partial content is stored) or 304 as such.
//! - **`Set-Cookie` is never stored**, whatever the directives say: a
//!   cookie belongs to one client and a shared cache must not hand it out.
//! - **Qualified `no-cache="field"` and `private="field"` count as
//!   unqualified**: stricter than RFC 9111 §5.2.2.4/§5.2.2.7 require, and
//!   it means no stored response ever needs fields cut out of it.
//! - **Repeated or invalid directives** (§4.2.1): a directive repeated with
//!   the same argument counts once. Different arguments, or one that is not
//!   delta-seconds, are read the way that serves least from the cache: a
//!   response's `max-age`/`s-maxage` becomes 0 (stale), its
//!   `stale-while-revalidate`/`stale-if-error` are dropped; a request's
//!   `max-age` becomes 0 and `min-fresh` 2^31 (both: revalidate), its
//!   `max-stale`/`stale-if-error` are dropped. Two different `Expires`
//!   (or an invalid one) mean already expired (§5.3).
//! - **A request's `stale-if-error`** (RFC 5861 §4) is honoured: it widens
//!   the window only where nothing forbids stale (`must-revalidate`,
//!   `proxy-revalidate`, `s-maxage`, `no-cache`), as RFC 9111 §4.2.4 allows.
//! - **`immutable`** (RFC 8246): while the response is fresh a request's
//!   `max-age` (a browser's reload) is ignored; `no-cache` (a forced
//!   reload) still revalidates.
//! - **`must-understand`** is not implemented, so `no-store` beside it is
//!   obeyed: the fallback §5.2.2.3 designs for caches that do not.
//! - **A 304 without validators** updates the one response the cache asked
//!   about (§4.3.4 asks for validators on both sides; functions often omit
//!   them, and this cache only ever validates one stored response).
//! - **Vary normalisation** (§4.1) is syntactic only: lines combined with
//!   ", ", whitespace around members trimmed, empty members dropped; no
//!   case folding or reordering, whose safety depends on each field.
//! - **RFC 850 dates** with two-digit years map to 1970-2069 (`httpdate`),
//!   not RFC 9110's "more than 50 years ahead is in the past".

use http::header::{
    AGE, AUTHORIZATION, CACHE_CONTROL, CONNECTION, CONTENT_LENGTH, CONTENT_RANGE, DATE, ETAG,
    EXPIRES, HeaderMap, HeaderName, HeaderValue, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH,
    IF_RANGE, IF_UNMODIFIED_SINCE, LAST_MODIFIED, PRAGMA, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION,
    RANGE, SET_COOKIE, TE, TRANSFER_ENCODING, UPGRADE, VARY,
};
use http::{Method, StatusCode};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The largest delta-seconds value kept: RFC 9111 §1.2.2 reads a larger
/// one, or a calculation that overflows, as 2^31 seconds.
pub const DELTA_SECONDS_MAX: u64 = 1 << 31;

const DELTA_MAX: Duration = Duration::from_secs(DELTA_SECONDS_MAX);

/// The last second an IMF-fixdate can show (9999-12-31T23:59:59Z).
const LATEST_HTTP_DATE: u64 = 253_402_300_799;

/// Hop-by-hop and proxy-specific fields a cache never stores
/// (RFC 9111 §3.1, RFC 9110 §7.6.1), besides those `Connection` lists.
const NOT_STORED: [HeaderName; 9] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    TE,
    TRANSFER_ENCODING,
    UPGRADE,
    PROXY_AUTHENTICATE,
    HeaderName::from_static("proxy-authentication-info"),
    PROXY_AUTHORIZATION,
];

/// Fields a 304 never changes in the stored response (RFC 9111 §3.2):
/// `Content-Length` and `Content-Range` describe the stored content, not
/// the 304; `Age` is computed when serving; `Vary` is part of the entry's
/// key, which a 304 cannot move.
const NOT_UPDATED: [HeaderName; 4] = [CONTENT_LENGTH, CONTENT_RANGE, AGE, VARY];

/// The client's own preconditions, replaced when the cache revalidates.
const CONDITIONALS: [HeaderName; 5] = [
    IF_NONE_MATCH,
    IF_MODIFIED_SINCE,
    IF_MATCH,
    IF_UNMODIFIED_SINCE,
    IF_RANGE,
];

/// Why a request is not answered from the cache, or a response not stored.
/// [`Bypass::reason`] is the short stable label for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Bypass {
    /// The method is neither GET nor HEAD.
    #[error("only GET and HEAD are cached")]
    Method,
    /// The request asks for a range; partial content is never cached.
    #[error("range requests are not answered from the cache")]
    Range,
    /// The request carries `If-Match`, `If-Unmodified-Since` or `If-Range`,
    /// preconditions meant for the function (RFC 9111 §4.3.2).
    #[error("the request has preconditions only the function can evaluate")]
    Precondition,
    /// The request says `Cache-Control: no-store`.
    #[error("the request says no-store")]
    RequestNoStore,
    /// The status is not final, is 206 or 304, or is not heuristically
    /// cacheable and the response is not `public`.
    #[error("the status code is not cached")]
    Status,
    /// The response says `no-store`.
    #[error("the response says no-store")]
    NoStore,
    /// The response says `private`: not for a shared cache.
    #[error("the response is private")]
    Private,
    /// The request carried `Authorization` and the response says none of
    /// `public`, `s-maxage`, `must-revalidate` (RFC 9111 §3.5).
    #[error("an authorized request's response is not marked shareable")]
    Authorization,
    /// The response sets a cookie, which is never shared.
    #[error("the response sets a cookie")]
    SetCookie,
    /// The response says `Vary: *`: no later request can match it.
    #[error("the response varies on everything")]
    VaryStar,
    /// A `Vary` member is not a field name.
    #[error("the response's Vary is not a list of field names")]
    VaryInvalid,
    /// No explicit freshness (and not `no-cache` with a validator): this
    /// cache does no heuristic freshness.
    #[error("the response has no explicit freshness")]
    NoFreshness,
    /// Stale on arrival or `no-cache`, with no validator and no stale
    /// window: it could never be reused.
    #[error("the response could never be reused")]
    NotReusable,
    /// A 304's validators name another response than the stored one
    /// (RFC 9111 §4.3.4).
    #[error("the 304 does not match the stored response")]
    ValidatorMismatch,
}

impl Bypass {
    /// Every reason, in a fixed order (to register metric labels up front).
    pub const ALL: [Bypass; 14] = [
        Bypass::Method,
        Bypass::Range,
        Bypass::Precondition,
        Bypass::RequestNoStore,
        Bypass::Status,
        Bypass::NoStore,
        Bypass::Private,
        Bypass::Authorization,
        Bypass::SetCookie,
        Bypass::VaryStar,
        Bypass::VaryInvalid,
        Bypass::NoFreshness,
        Bypass::NotReusable,
        Bypass::ValidatorMismatch,
    ];

    /// The short stable label: `method`, `no-store`, `vary-star`, ...
    pub fn reason(self) -> &'static str {
        match self {
            Bypass::Method => "method",
            Bypass::Range => "range",
            Bypass::Precondition => "precondition",
            Bypass::RequestNoStore => "request-no-store",
            Bypass::Status => "status",
            Bypass::NoStore => "no-store",
            Bypass::Private => "private",
            Bypass::Authorization => "authorization",
            Bypass::SetCookie => "set-cookie",
            Bypass::VaryStar => "vary-star",
            Bypass::VaryInvalid => "vary-invalid",
            Bypass::NoFreshness => "no-freshness",
            Bypass::NotReusable => "not-reusable",
            Bypass::ValidatorMismatch => "validator-mismatch",
        }
    }

    /// Whether the reason lies in this request rather than in the response:
    /// such a request may not store or update an entry, but says nothing
    /// against the entry itself (a client must not be able to evict
    /// entries by asking with `no-store` or `Authorization`).
    pub fn from_request(self) -> bool {
        matches!(
            self,
            Bypass::Method
                | Bypass::Range
                | Bypass::Precondition
                | Bypass::RequestNoStore
                | Bypass::Authorization
        )
    }
}

/// Whether a request may be answered from the cache at all: `None` if so,
/// else why not (then it goes to the function; its response may still be
/// stored, see [`storable`]). A request with `Authorization` may be
/// answered: only responses allowed to be shared are ever stored.
pub fn lookup_bypass(method: &Method, request: &HeaderMap) -> Option<Bypass> {
    if method != Method::GET && method != Method::HEAD {
        Some(Bypass::Method)
    } else if request.contains_key(RANGE) {
        Some(Bypass::Range)
    } else if [IF_MATCH, IF_UNMODIFIED_SINCE, IF_RANGE]
        .iter()
        .any(|name| request.contains_key(name))
    {
        Some(Bypass::Precondition)
    } else {
        None
    }
}

/// A request's `max-stale` (RFC 9111 §5.2.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxStale {
    /// `max-stale` without a value: stale of any age is acceptable.
    Any,
    /// `max-stale=N`: stale by at most N seconds.
    Within(u64),
}

/// A request's cache directives (RFC 9111 §5.2.1), and `Pragma: no-cache`
/// when the request has no `Cache-Control` (§5.4). Seconds are capped at
/// [`DELTA_SECONDS_MAX`]; see the module doc for invalid and repeated ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestDirectives {
    /// `no-cache` (or `Pragma: no-cache`): revalidate before using a stored
    /// response.
    pub no_cache: bool,
    /// `no-store`: store nothing of this exchange (a stored response may
    /// still answer it, §5.2.1.5).
    pub no_store: bool,
    /// `max-age=N`: no response older than N seconds.
    pub max_age: Option<u64>,
    /// `max-stale[=N]`: how stale a response the client accepts.
    pub max_stale: Option<MaxStale>,
    /// `min-fresh=N`: only a response still fresh N seconds from now.
    pub min_fresh: Option<u64>,
    /// `only-if-cached`: answer from the cache or with 504 (§5.2.1.7).
    pub only_if_cached: bool,
    /// `stale-if-error=N` (RFC 5861 §4): stale by at most N seconds is
    /// acceptable if the function fails.
    pub stale_if_error: Option<u64>,
}

impl RequestDirectives {
    /// Parses a request's `Cache-Control` (all its lines) and `Pragma`.
    /// Never fails: what is not understood is ignored.
    pub fn parse(headers: &HeaderMap) -> RequestDirectives {
        let mut parsed = RequestDirectives::default();
        let (mut max_age, mut max_stale, mut min_fresh, mut stale_if_error) =
            (Seen::Absent, Seen::Absent, Seen::Absent, Seen::Absent);
        for (name, argument) in directives(headers, &CACHE_CONTROL) {
            if is(name, "no-cache") {
                parsed.no_cache = true;
            } else if is(name, "no-store") {
                parsed.no_store = true;
            } else if is(name, "max-age") {
                max_age = max_age.add(argument);
            } else if is(name, "max-stale") {
                max_stale = max_stale.add(argument);
            } else if is(name, "min-fresh") {
                min_fresh = min_fresh.add(argument);
            } else if is(name, "only-if-cached") {
                parsed.only_if_cached = true;
            } else if is(name, "stale-if-error") {
                stale_if_error = stale_if_error.add(argument);
            }
        }
        if !headers.contains_key(CACHE_CONTROL) {
            parsed.no_cache = directives(headers, &PRAGMA).any(|(name, _)| is(name, "no-cache"));
        }
        parsed.max_age = max_age.lifetime();
        parsed.min_fresh = match min_fresh {
            Seen::Absent => None,
            Seen::Once(Argument::Seconds(n)) => Some(n),
            _ => Some(DELTA_SECONDS_MAX),
        };
        parsed.max_stale = match max_stale {
            Seen::Once(Argument::None) => Some(MaxStale::Any),
            Seen::Once(Argument::Seconds(n)) => Some(MaxStale::Within(n)),
            _ => None,
        };
        parsed.stale_if_error = stale_if_error.window();
        parsed
    }
}

/// A response's cache directives (RFC 9111 §5.2.2, RFC 5861, RFC 8246).
/// Seconds are capped at [`DELTA_SECONDS_MAX`]; see the module doc for
/// invalid and repeated ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResponseDirectives {
    /// `public`: storable even for an authorized request or an unusual
    /// status.
    pub public: bool,
    /// `private`, qualified or not: never stored here (a shared cache).
    pub private: bool,
    /// `no-store`: never stored.
    pub no_store: bool,
    /// `no-cache`, qualified or not (read as unqualified): revalidate on
    /// every use.
    pub no_cache: bool,
    /// `max-age=N`: fresh for N seconds from its generation.
    pub max_age: Option<u64>,
    /// `s-maxage=N`: the shared-cache lifetime; beats `max-age` and implies
    /// `proxy-revalidate` (§5.2.2.10).
    pub s_maxage: Option<u64>,
    /// `must-revalidate`: never served stale.
    pub must_revalidate: bool,
    /// `proxy-revalidate`: `must-revalidate` for shared caches.
    pub proxy_revalidate: bool,
    /// `stale-while-revalidate=N`: servable while stale by at most N
    /// seconds, revalidating in the background.
    pub stale_while_revalidate: Option<u64>,
    /// `stale-if-error=N`: servable while stale by at most N seconds when
    /// the function fails.
    pub stale_if_error: Option<u64>,
    /// `immutable`: will not change while fresh.
    pub immutable: bool,
}

impl ResponseDirectives {
    /// Parses a response's `Cache-Control` (all its lines). Never fails:
    /// what is not understood is ignored.
    pub fn parse(headers: &HeaderMap) -> ResponseDirectives {
        let mut parsed = ResponseDirectives::default();
        let (mut max_age, mut s_maxage, mut swr, mut sie) =
            (Seen::Absent, Seen::Absent, Seen::Absent, Seen::Absent);
        for (name, argument) in directives(headers, &CACHE_CONTROL) {
            if is(name, "public") {
                parsed.public = true;
            } else if is(name, "private") {
                parsed.private = true;
            } else if is(name, "no-store") {
                parsed.no_store = true;
            } else if is(name, "no-cache") {
                parsed.no_cache = true;
            } else if is(name, "max-age") {
                max_age = max_age.add(argument);
            } else if is(name, "s-maxage") {
                s_maxage = s_maxage.add(argument);
            } else if is(name, "must-revalidate") {
                parsed.must_revalidate = true;
            } else if is(name, "proxy-revalidate") {
                parsed.proxy_revalidate = true;
            } else if is(name, "stale-while-revalidate") {
                swr = swr.add(argument);
            } else if is(name, "stale-if-error") {
                sie = sie.add(argument);
            } else if is(name, "immutable") {
                parsed.immutable = true;
            }
        }
        parsed.max_age = max_age.lifetime();
        parsed.s_maxage = s_maxage.lifetime();
        parsed.stale_while_revalidate = swr.window();
        parsed.stale_if_error = sie.window();
        parsed
    }
}

/// One request/response exchange with the function, as
/// [`storable_exchange`] and [`updated_after_304`] judge it.
#[derive(Clone, Copy, Debug)]
pub struct Exchange<'a> {
    /// The request's method.
    pub method: &'a Method,
    /// The headers of the request the function was given.
    pub request: &'a HeaderMap,
    /// The response's status.
    pub status: StatusCode,
    /// The response's headers.
    pub response: &'a HeaderMap,
    /// When the request was sent to the function (`request_time`, §4.2.3).
    pub request_time: SystemTime,
    /// When the response's head came back (`response_time`, §4.2.3).
    pub response_time: SystemTime,
}

/// What the cache keeps beside a stored response, to judge it later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The stored response's status.
    pub status: StatusCode,
    /// How long it is fresh from its generation: `s-maxage`, else
    /// `max-age`, else `Expires` − `Date`; zero for `no-cache` without one
    /// (§4.2.1). Capped at 2^31 s.
    pub freshness_lifetime: Duration,
    /// Its age on arrival, `corrected_initial_age` of §4.2.3.
    pub initial_age: Duration,
    /// When it arrived (`response_time`), from which resident time counts.
    pub response_time: SystemTime,
    /// Its `Date`, or `response_time` when that is missing or invalid: the
    /// `Date` to store (see [`prepare_for_storage`]).
    pub date: SystemTime,
    /// `stale-while-revalidate`.
    pub stale_while_revalidate: Option<Duration>,
    /// The response's `stale-if-error` (a request's may widen it).
    pub stale_if_error: Option<Duration>,
    /// Never served stale: `must-revalidate`, `proxy-revalidate` or
    /// `s-maxage` (§5.2.2.10).
    pub must_revalidate: bool,
    /// `no-cache`: revalidated before every use.
    pub no_cache: bool,
    /// `immutable`: a request's `max-age` is ignored while it is fresh.
    pub immutable: bool,
    /// The `Vary` field names: lowercase, sorted, without duplicates.
    pub vary: Vec<HeaderName>,
    /// Its `ETag`, if a valid entity-tag.
    pub etag: Option<HeaderValue>,
    /// Its `Last-Modified`, if a valid HTTP-date.
    pub last_modified: Option<HeaderValue>,
}

/// Whether a response may be stored (RFC 9111 §3, as a shared cache, with
/// the choices in the module doc), and what to keep with it if so. `now`
/// is when the request went to the function; it stands for both
/// `request_time` and `response_time` (§4.2.3), which overestimates the
/// age by the function's run time, the safe side ([`storable_exchange`]
/// takes both). `HEAD` responses are storable too; they have no content,
/// so the caller must not answer a GET with one.
pub fn storable(
    method: &Method,
    request: &HeaderMap,
    status: StatusCode,
    response: &HeaderMap,
    now: SystemTime,
) -> Result<Stored, Bypass> {
    storable_exchange(&Exchange {
        method,
        request,
        status,
        response,
        request_time: now,
        response_time: now,
    })
}

/// [`storable`] with the exchange's two times apart.
pub fn storable_exchange(exchange: &Exchange<'_>) -> Result<Stored, Bypass> {
    evaluate(exchange, exchange.response)
}

/// [`storable`], with the `Age` read from `age_from` (the 304's own when
/// refreshing, not the stored response's).
fn evaluate(exchange: &Exchange<'_>, age_from: &HeaderMap) -> Result<Stored, Bypass> {
    if exchange.method != Method::GET && exchange.method != Method::HEAD {
        return Err(Bypass::Method);
    }
    if RequestDirectives::parse(exchange.request).no_store {
        return Err(Bypass::RequestNoStore);
    }
    let status = exchange.status;
    if status.is_informational()
        || status == StatusCode::PARTIAL_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Err(Bypass::Status);
    }
    let response = exchange.response;
    let cc = ResponseDirectives::parse(response);
    if cc.no_store {
        return Err(Bypass::NoStore);
    }
    if cc.private {
        return Err(Bypass::Private);
    }
    if !heuristically_cacheable(status) && !cc.public {
        return Err(Bypass::Status);
    }
    if exchange.request.contains_key(AUTHORIZATION)
        && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate)
    {
        return Err(Bypass::Authorization);
    }
    if response.contains_key(SET_COOKIE) {
        return Err(Bypass::SetCookie);
    }
    let vary = vary_names(response)?;
    let date = match single_date(response, &DATE) {
        Field::Valid(date) => date,
        Field::Absent | Field::Invalid => exchange.response_time,
    };
    let etag = single_value(response, &ETAG).filter(|v| EntityTag::parse(v.as_bytes()).is_some());
    let last_modified =
        single_value(response, &LAST_MODIFIED).filter(|v| parse_http_date(v).is_some());
    let has_validator = etag.is_some() || last_modified.is_some();
    let freshness_lifetime = match explicit_lifetime(&cc, response, date) {
        Some(lifetime) => lifetime,
        None if cc.no_cache && has_validator => Duration::ZERO,
        None => return Err(Bypass::NoFreshness),
    };
    let initial_age = initial_age(
        age_from,
        date,
        exchange.request_time,
        exchange.response_time,
    );
    let must_revalidate = cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage.is_some();
    let stale_while_revalidate = cc.stale_while_revalidate.map(seconds);
    let stale_if_error = cc.stale_if_error.map(seconds);
    let stale_window = [stale_while_revalidate, stale_if_error]
        .iter()
        .any(|w| w.is_some_and(|w| !w.is_zero()));
    let reusable = has_validator
        || (!cc.no_cache
            && (freshness_lifetime > initial_age || (!must_revalidate && stale_window)));
    if !reusable {
        return Err(Bypass::NotReusable);
    }
    Ok(Stored {
        status,
        freshness_lifetime,
        initial_age,
        response_time: exchange.response_time,
        date,
        stale_while_revalidate,
        stale_if_error,
        must_revalidate,
        no_cache: cc.no_cache,
        immutable: cc.immutable,
        vary,
        etag: etag.cloned(),
        last_modified: last_modified.cloned(),
    })
}

/// The statuses RFC 9110 §15.1 calls heuristically cacheable, but 206.
fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// `s-maxage`, else `max-age`, else `Expires` − `Date` (§4.2.1, §5.3: an
/// invalid `Expires` is in the past); `None` without any of them.
fn explicit_lifetime(
    cc: &ResponseDirectives,
    response: &HeaderMap,
    date: SystemTime,
) -> Option<Duration> {
    if let Some(s_maxage) = cc.s_maxage {
        return Some(seconds(s_maxage));
    }
    if let Some(max_age) = cc.max_age {
        return Some(seconds(max_age));
    }
    match single_date(response, &EXPIRES) {
        Field::Absent => None,
        Field::Invalid => Some(Duration::ZERO),
        Field::Valid(expires) => Some(whole_seconds(
            expires.duration_since(date).unwrap_or(Duration::ZERO),
        )),
    }
}

/// `corrected_initial_age` (RFC 9111 §4.2.3):
///
/// ```text
/// apparent_age = max(0, response_time - date_value)
/// response_delay = response_time - request_time
/// corrected_age_value = age_value + response_delay
/// corrected_initial_age = max(apparent_age, corrected_age_value)
/// ```
///
/// `apparent_age` in whole seconds (a `Date` has no finer ones); an `Age`
/// that is not delta-seconds is ignored (§5.1).
fn initial_age(
    age_from: &HeaderMap,
    date: SystemTime,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Duration {
    let apparent_age = whole_seconds(response_time.duration_since(date).unwrap_or(Duration::ZERO));
    let response_delay = response_time
        .duration_since(request_time)
        .unwrap_or(Duration::ZERO);
    let corrected_age_value =
        seconds(age_value(age_from).unwrap_or(0)).saturating_add(response_delay);
    apparent_age.max(corrected_age_value).min(DELTA_MAX)
}

/// The `Age` field's value: the first member of the first line (§5.1).
fn age_value(headers: &HeaderMap) -> Option<u64> {
    let first = headers.get(AGE)?.as_bytes();
    let member = first.split(|&b| b == b',').next().unwrap_or(first);
    delta_seconds(member.trim_ascii())
}

/// `current_age` (RFC 9111 §4.2.3): `corrected_initial_age` plus the time
/// since it arrived (none if `now` is earlier), capped at 2^31 s.
pub fn current_age(stored: &Stored, now: SystemTime) -> Duration {
    let resident_time = now
        .duration_since(stored.response_time)
        .unwrap_or(Duration::ZERO);
    stored
        .initial_age
        .saturating_add(resident_time)
        .min(DELTA_MAX)
}

/// The `Age` field to send with a response of age `age`: whole seconds,
/// at most 2^31 (§5.1).
pub fn age_header(age: Duration) -> HeaderValue {
    HeaderValue::from(age_seconds(age))
}

/// `age` in whole seconds, at most 2^31.
pub fn age_seconds(age: Duration) -> u64 {
    age.as_secs().min(DELTA_SECONDS_MAX)
}

/// What a stored response may be used for now. Each variant carries its
/// current age, for the `Age` header ([`age_header`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// Fresh, and acceptable to this request: serve it.
    Fresh {
        /// Its current age.
        age: Duration,
    },
    /// Stale, and nothing forbids serving it stale; the flags say when it
    /// may be. With none set, revalidate and pass on what the function
    /// answers, errors included.
    Stale {
        /// Its current age.
        age: Duration,
        /// The request's `max-stale` accepts it: serve it as is.
        client_accepts: bool,
        /// Within `stale-while-revalidate`: serve it and revalidate in the
        /// background.
        serve_while_revalidate: bool,
        /// Within `stale-if-error` (the response's or the request's):
        /// revalidate, and serve it if the function fails (5xx, trap,
        /// timeout).
        serve_if_error: bool,
    },
    /// Not usable without a successful revalidation, whatever happens:
    /// `no-cache` (response or request), a request's `max-age` it exceeds
    /// (or `max-age=0`) or `min-fresh` it fails, or stale under
    /// `must-revalidate`. If the function fails, its failure is the answer.
    MustRevalidate {
        /// Its current age.
        age: Duration,
    },
}

impl Freshness {
    /// The stored response's current age.
    pub fn age(&self) -> Duration {
        match *self {
            Freshness::Fresh { age }
            | Freshness::Stale { age, .. }
            | Freshness::MustRevalidate { age } => age,
        }
    }
}

/// How `stored` may be used at `now` for a request with `request`'s
/// directives (RFC 9111 §4.2, §4.2.4, §5.2.1; RFC 5861; RFC 8246).
pub fn freshness(stored: &Stored, now: SystemTime, request: &RequestDirectives) -> Freshness {
    let age = current_age(stored, now);
    let lifetime = stored.freshness_lifetime;
    if stored.no_cache || request.no_cache {
        return Freshness::MustRevalidate { age };
    }
    let fresh = lifetime > age;
    // RFC 8246: a reload (max-age) of an immutable response is pointless
    // while it is fresh.
    if !(fresh && stored.immutable)
        && let Some(max_age) = request.max_age
        && (max_age == 0 || age > seconds(max_age))
    {
        return Freshness::MustRevalidate { age };
    }
    if let Some(min_fresh) = request.min_fresh
        && lifetime < age.saturating_add(seconds(min_fresh))
    {
        return Freshness::MustRevalidate { age };
    }
    if fresh {
        return Freshness::Fresh { age };
    }
    if stored.must_revalidate {
        return Freshness::MustRevalidate { age };
    }
    let staleness = age.saturating_sub(lifetime);
    let within = |window: Option<Duration>| window.is_some_and(|w| staleness <= w);
    Freshness::Stale {
        age,
        client_accepts: match request.max_stale {
            Some(MaxStale::Any) => true,
            Some(MaxStale::Within(n)) => staleness <= seconds(n),
            None => false,
        },
        serve_while_revalidate: within(stored.stale_while_revalidate),
        serve_if_error: within(
            stored
                .stale_if_error
                .max(request.stale_if_error.map(seconds)),
        ),
    }
}

/// The `Vary` field names of a response: lowercase, sorted, without
/// duplicates; `Vary: *` and a member that is not a field name refuse.
pub fn vary_names(response: &HeaderMap) -> Result<Vec<HeaderName>, Bypass> {
    let mut names = Vec::new();
    for line in response.get_all(VARY) {
        for member in Members::new(line.as_bytes()) {
            if member == b"*" {
                return Err(Bypass::VaryStar);
            }
            names.push(HeaderName::from_bytes(member).map_err(|_| Bypass::VaryInvalid)?);
        }
    }
    names.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    Ok(names)
}

/// Whether a new request matches the one a response was stored for, on
/// the `Vary` names (RFC 9111 §4.1): each field normalised (lines combined
/// with ", ", whitespace around members trimmed, empty members dropped);
/// a field absent in both matches, absent in one only does not.
pub fn vary_matches(names: &[HeaderName], stored_request: &HeaderMap, request: &HeaderMap) -> bool {
    names
        .iter()
        .all(|name| normalized(stored_request, name) == normalized(request, name))
}

/// The secondary cache key of a request for the `Vary` names: equal for
/// two requests exactly when [`vary_matches`] says they match.
pub fn vary_key(names: &[HeaderName], request: &HeaderMap) -> Vec<u8> {
    let mut key = Vec::new();
    for name in names {
        key.extend_from_slice(name.as_str().as_bytes());
        // No field name holds '=' or NUL and no field value holds a
        // newline, so the key reads back one way only.
        match normalized(request, name) {
            Some(value) => {
                key.push(b'=');
                key.extend_from_slice(&value);
            }
            None => key.push(0),
        }
        key.push(b'\n');
    }
    key
}

/// The request fields named in `names`: what to keep beside a stored
/// response for [`vary_matches`].
pub fn vary_subset(names: &[HeaderName], request: &HeaderMap) -> HeaderMap {
    let mut subset = HeaderMap::new();
    for name in names {
        for value in request.get_all(name) {
            subset.append(name.clone(), value.clone());
        }
    }
    subset
}

/// A field's value normalised for `Vary` matching; `None` when absent.
fn normalized(headers: &HeaderMap, name: &HeaderName) -> Option<Vec<u8>> {
    let mut lines = headers.get_all(name).iter().peekable();
    lines.peek()?;
    let mut value = Vec::new();
    for line in lines {
        for member in Members::new(line.as_bytes()) {
            if !value.is_empty() {
                value.extend_from_slice(b", ");
            }
            value.extend_from_slice(member);
        }
    }
    Some(value)
}

/// Whether the cache may answer a client's GET or HEAD with 304 from a
/// stored response with these validators (RFC 9111 §4.3.2, RFC 9110
/// §13.1.1, §13.1.3, §13.2.2): `If-None-Match` (weak comparison, `*`,
/// lists) decides when present; otherwise a valid `If-Modified-Since` (one
/// line) not earlier than `last_modified`. An invalid date is ignored. Pass
/// the stored `Date` as `last_modified` when there is no `Last-Modified`,
/// as §4.3.2 advises. The stored response must first be usable
/// ([`freshness`]).
pub fn not_modified(
    request: &HeaderMap,
    etag: Option<&HeaderValue>,
    last_modified: Option<&HeaderValue>,
) -> bool {
    if request.contains_key(IF_NONE_MATCH) {
        let tag = etag.and_then(|v| EntityTag::parse(v.as_bytes()));
        return request
            .get_all(IF_NONE_MATCH)
            .iter()
            .any(|line| if_none_match(line.as_bytes(), tag));
    }
    let mut lines = request.get_all(IF_MODIFIED_SINCE).iter();
    let (Some(line), None) = (lines.next(), lines.next()) else {
        return false;
    };
    let Some(since) = parse_http_date(line) else {
        return false;
    };
    last_modified
        .and_then(parse_http_date)
        .is_some_and(|modified| modified <= since)
}

/// Whether one `If-None-Match` line (`*` or a list of entity-tags) matches
/// `stored` by weak comparison (RFC 9110 §13.1.2). `*` matches any stored
/// response; invalid members are skipped.
fn if_none_match(line: &[u8], stored: Option<EntityTag<'_>>) -> bool {
    let mut rest = line.trim_ascii();
    if rest == b"*" {
        return true;
    }
    loop {
        rest = rest.trim_ascii_start();
        while let [b',', tail @ ..] = rest {
            rest = tail.trim_ascii_start();
        }
        if rest.is_empty() {
            return false;
        }
        match EntityTag::parse_prefix(rest) {
            Some((tag, tail)) => {
                if stored.is_some_and(|stored| tag.weak_eq(stored)) {
                    return true;
                }
                rest = tail;
            }
            None => match rest.iter().position(|&b| b == b',') {
                Some(comma) => rest = &rest[comma + 1..],
                None => return false,
            },
        }
    }
}

/// The conditional fields the cache sends the function to revalidate
/// `stored` (RFC 9111 §4.3.1): `If-None-Match` with its `ETag`,
/// `If-Modified-Since` with its `Last-Modified`; empty if it has neither.
pub fn revalidation_headers(stored: &Stored) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(etag) = &stored.etag {
        headers.insert(IF_NONE_MATCH, etag.clone());
    }
    if let Some(last_modified) = &stored.last_modified {
        headers.insert(IF_MODIFIED_SINCE, last_modified.clone());
    }
    headers
}

/// Turns a client's request headers into the revalidation request's: the
/// client's own preconditions (which validate *its* copy, not the cache's)
/// are removed, [`revalidation_headers`] put in. The client's conditional
/// is then answered from the refreshed response with [`not_modified`].
pub fn prepare_revalidation(stored: &Stored, request: &mut HeaderMap) {
    for name in &CONDITIONALS {
        request.remove(name);
    }
    for (name, value) in revalidation_headers(stored) {
        if let Some(name) = name {
            request.insert(name, value);
        }
    }
}

/// Makes a storable response's headers the ones to store (RFC 9111 §3.1):
/// hop-by-hop and proxy fields and those `Connection` names removed, `Age`
/// removed (computed when serving), `Date` set to [`Stored::date`] when
/// missing or invalid (RFC 9110 §6.6.1).
pub fn prepare_for_storage(response: &mut HeaderMap, stored: &Stored) {
    for name in connection_listed(response) {
        response.remove(name);
    }
    for name in &NOT_STORED {
        response.remove(name);
    }
    response.remove(AGE);
    if !matches!(single_date(response, &DATE), Field::Valid(_)) {
        response.insert(DATE, format_http_date(stored.date));
    }
}

/// A stored response refreshed by a 304 ([`updated_after_304`]).
#[derive(Clone, Debug)]
pub struct Refreshed {
    /// The stored headers updated from the 304 (§3.2), ready to store and
    /// to serve with the stored content.
    pub headers: HeaderMap,
    /// What to keep now. `Err` with [`Bypass::from_request`]: this request
    /// may not update the entry, keep it as it was. Any other `Err`: the
    /// updated response may no longer be stored (e.g. the 304 said
    /// `no-store`), remove the entry. Either way `headers` answer this
    /// request.
    pub stored: Result<Stored, Bypass>,
}

/// Refreshes a stored response from the function's 304 to a revalidation
/// (RFC 9111 §4.3.3, §4.3.4, §3.2). `revalidation` is that exchange: the
/// request the cache sent, the 304, its times. The 304's fields replace the
/// stored ones of the same name, except `Content-Length`, `Content-Range`,
/// `Age`, `Vary` and hop-by-hop fields; a 304 without `Date` gets its
/// arrival time. Freshness and age are then computed afresh, with the
/// 304's `Age`. `Err` if the exchange is not a 304 (`Status`) or names
/// another response ([`Bypass::ValidatorMismatch`]: remove the entry and
/// ask again without conditions).
pub fn updated_after_304(
    stored: &Stored,
    stored_headers: &HeaderMap,
    revalidation: &Exchange<'_>,
) -> Result<Refreshed, Bypass> {
    if revalidation.status != StatusCode::NOT_MODIFIED {
        return Err(Bypass::Status);
    }
    let not_modified = revalidation.response;
    if !validators_agree(stored, not_modified) {
        return Err(Bypass::ValidatorMismatch);
    }
    let mut headers = stored_headers.clone();
    let listed = connection_listed(not_modified);
    for name in not_modified.keys() {
        if NOT_STORED.contains(name) || NOT_UPDATED.contains(name) || listed.contains(name) {
            continue;
        }
        headers.remove(name);
        for value in not_modified.get_all(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    if !not_modified.contains_key(DATE) {
        headers.insert(DATE, format_http_date(revalidation.response_time));
    }
    headers.remove(AGE);
    let merged = Exchange {
        status: stored.status,
        response: &headers,
        ..*revalidation
    };
    let refreshed = evaluate(&merged, not_modified);
    if let Ok(refreshed) = &refreshed {
        prepare_for_storage(&mut headers, refreshed);
    }
    Ok(Refreshed {
        headers,
        stored: refreshed,
    })
}

/// Whether a 304's validators allow it to update `stored` (§4.3.4): a
/// strong `ETag` must match strongly, a weak one weakly, a `Last-Modified`
/// must equal the stored one when both have one. A 304 without validators
/// agrees (see the module doc).
fn validators_agree(stored: &Stored, not_modified: &HeaderMap) -> bool {
    let stored_tag = stored
        .etag
        .as_ref()
        .and_then(|v| EntityTag::parse(v.as_bytes()));
    let new_tag = single_value(not_modified, &ETAG).and_then(|v| EntityTag::parse(v.as_bytes()));
    if let Some(new_tag) = new_tag {
        let Some(stored_tag) = stored_tag else {
            return false;
        };
        let same = if new_tag.weak {
            new_tag.weak_eq(stored_tag)
        } else {
            new_tag.strong_eq(stored_tag)
        };
        if !same {
            return false;
        }
    }
    let stored_modified = stored.last_modified.as_ref().and_then(parse_http_date);
    match (single_date(not_modified, &LAST_MODIFIED), stored_modified) {
        (Field::Valid(new), Some(old)) => new == old,
        _ => true,
    }
}

/// The field names a message's `Connection` lists (RFC 9110 §7.6.1).
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|line| Members::new(line.as_bytes()))
        .filter_map(|member| HeaderName::from_bytes(member).ok())
        .collect()
}

/// Parses an HTTP-date (RFC 9110 §5.6.7): IMF-fixdate, or the obsolete
/// RFC 850 and asctime forms. `None` if it is none of them.
pub fn parse_http_date(value: &HeaderValue) -> Option<SystemTime> {
    httpdate::parse_http_date(value.to_str().ok()?).ok()
}

/// Formats a time as an IMF-fixdate (whole seconds), clamped to what one
/// can show: 1970 to 9999.
pub fn format_http_date(time: SystemTime) -> HeaderValue {
    let time = time.clamp(
        UNIX_EPOCH,
        UNIX_EPOCH + Duration::from_secs(LATEST_HTTP_DATE),
    );
    HeaderValue::try_from(httpdate::fmt_http_date(time))
        .expect("an IMF-fixdate is a valid field value")
}

/// A field that is a single value: absent, valid, or invalid (unparsable,
/// or several lines that differ: §4.2.1 reads that as invalid).
enum Field<T> {
    Absent,
    Valid(T),
    Invalid,
}

/// A field's value when every line of it is the same; `None` if absent or
/// if its lines differ.
fn single_value<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    let mut lines = headers.get_all(name).iter();
    let first = lines.next()?;
    lines.all(|line| line == first).then_some(first)
}

/// A single HTTP-date field.
fn single_date(headers: &HeaderMap, name: &HeaderName) -> Field<SystemTime> {
    if !headers.contains_key(name) {
        return Field::Absent;
    }
    match single_value(headers, name).and_then(parse_http_date) {
        Some(time) => Field::Valid(time),
        None => Field::Invalid,
    }
}

/// `n` seconds, capped at 2^31.
fn seconds(n: u64) -> Duration {
    Duration::from_secs(n.min(DELTA_SECONDS_MAX))
}

/// `d` without its fraction of a second.
fn whole_seconds(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

/// `delta-seconds = 1*DIGIT` (§1.2.2), capped at 2^31.
fn delta_seconds(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = digits.iter().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    });
    Some(value.min(DELTA_SECONDS_MAX))
}

/// The members of one list-based field line (RFC 9110 §5.6.1): split at
/// commas outside quoted strings, trimmed, empty members skipped.
struct Members<'a> {
    rest: &'a [u8],
}

impl<'a> Members<'a> {
    fn new(line: &'a [u8]) -> Members<'a> {
        Members { rest: line }
    }
}

impl<'a> Iterator for Members<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        while !self.rest.is_empty() {
            let line = self.rest;
            let mut quoted = false;
            let mut end = 0;
            while end < line.len() {
                match line[end] {
                    b'\\' if quoted => end += 1,
                    b'"' => quoted = !quoted,
                    b',' if !quoted => break,
                    _ => {}
                }
                end += 1;
            }
            let end = end.min(line.len());
            self.rest = line.get(end + 1..).unwrap_or(&[]);
            let member = line[..end].trim_ascii();
            if !member.is_empty() {
                return Some(member);
            }
        }
        None
    }
}

/// A cache directive's argument, as far as the rules care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Argument {
    /// No `=value`.
    None,
    /// delta-seconds, as a token or a quoted string.
    Seconds(u64),
    /// Anything else (a field list, junk, an empty value).
    Other,
}

/// `token [ "=" ( token / quoted-string ) ]` (RFC 9111 §5.2), whitespace
/// around the `=` tolerated.
fn directive(member: &[u8]) -> (&[u8], Argument) {
    let Some(eq) = member.iter().position(|&b| b == b'=') else {
        return (member, Argument::None);
    };
    let value = member[eq + 1..].trim_ascii();
    let seconds = match value {
        [b'"', inner @ .., b'"'] => unquote(inner).and_then(|v| delta_seconds(&v)),
        _ => delta_seconds(value),
    };
    (
        member[..eq].trim_ascii(),
        seconds.map_or(Argument::Other, Argument::Seconds),
    )
}

/// The content of a quoted string, `\` escapes resolved; `None` if it ends
/// inside an escape or holds an unescaped quote.
fn unquote(inner: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(inner.len());
    let mut bytes = inner.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'\\' => out.push(*bytes.next()?),
            b'"' => return None,
            _ => out.push(b),
        }
    }
    Some(out)
}

/// Every directive in every line of a directive list field.
fn directives<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> impl Iterator<Item = (&'a [u8], Argument)> + use<'a> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|line| Members::new(line.as_bytes()))
        .map(directive)
}

/// Whether a directive's name is `known` (names are case-insensitive).
fn is(name: &[u8], known: &str) -> bool {
    name.eq_ignore_ascii_case(known.as_bytes())
}

/// What was seen of a directive that takes an argument, across repeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    Absent,
    Once(Argument),
    /// Repeated with different arguments (§4.2.1).
    Conflicting,
}

impl Seen {
    fn add(self, argument: Argument) -> Seen {
        match self {
            Seen::Absent => Seen::Once(argument),
            Seen::Once(seen) if seen == argument => self,
            _ => Seen::Conflicting,
        }
    }

    /// A lifetime or age limit: invalid or conflicting reads as 0.
    fn lifetime(self) -> Option<u64> {
        match self {
            Seen::Absent => None,
            Seen::Once(Argument::Seconds(n)) => Some(n),
            _ => Some(0),
        }
    }

    /// A stale window: invalid or conflicting reads as none.
    fn window(self) -> Option<u64> {
        match self {
            Seen::Once(Argument::Seconds(n)) => Some(n),
            _ => None,
        }
    }
}

/// An entity-tag (RFC 9110 §8.8.3): `[ W/ ] DQUOTE *etagc DQUOTE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct EntityTag<'a> {
    weak: bool,
    /// Between the quotes.
    opaque: &'a [u8],
}

impl<'a> EntityTag<'a> {
    /// The entity-tag `value` is, alone.
    fn parse(value: &'a [u8]) -> Option<EntityTag<'a>> {
        match EntityTag::parse_prefix(value.trim_ascii())? {
            (tag, []) => Some(tag),
            _ => None,
        }
    }

    /// The entity-tag `value` starts with, and what follows it.
    fn parse_prefix(value: &'a [u8]) -> Option<(EntityTag<'a>, &'a [u8])> {
        let (weak, rest) = match value.strip_prefix(b"W/") {
            Some(rest) => (true, rest),
            None => (false, value),
        };
        let rest = rest.strip_prefix(b"\"")?;
        let end = rest.iter().position(|&b| b == b'"')?;
        let opaque = &rest[..end];
        // etagc = %x21 / %x23-7E / obs-text
        if !opaque
            .iter()
            .all(|&b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80)
        {
            return None;
        }
        Some((EntityTag { weak, opaque }, &rest[end + 1..]))
    }

    /// Strong comparison (RFC 9110 §8.8.3.2): both strong, same opaque tag.
    fn strong_eq(self, other: EntityTag<'_>) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }

    /// Weak comparison: the same opaque tag, weak or not.
    fn weak_eq(self, other: EntityTag<'_>) -> bool {
        self.opaque == other.opaque
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wed, 21 Oct 2015 07:28:00 GMT.
    const T0: u64 = 1_445_412_480;

    fn at(offset: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(T0.checked_add_signed(offset).unwrap())
    }

    fn date(offset: i64) -> String {
        httpdate::fmt_http_date(at(offset))
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn req(pairs: &[(&str, &str)]) -> RequestDirectives {
        RequestDirectives::parse(&headers(pairs))
    }

    fn resp(cc: &str) -> ResponseDirectives {
        ResponseDirectives::parse(&headers(&[("cache-control", cc)]))
    }

    /// A GET at T0 answered at once with `status` and `response`.
    fn store_with(
        request: &[(&str, &str)],
        status: u16,
        response: &[(&str, &str)],
    ) -> Result<Stored, Bypass> {
        let (request, response) = (headers(request), headers(response));
        storable_exchange(&Exchange {
            method: &Method::GET,
            request: &request,
            status: StatusCode::from_u16(status).unwrap(),
            response: &response,
            request_time: at(0),
            response_time: at(0),
        })
    }

    fn store(response: &[(&str, &str)]) -> Result<Stored, Bypass> {
        store_with(&[], 200, response)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    // --- Directive syntax (RFC 9111 §5.2, §4.2.1, §1.2.2) ---

    #[test]
    fn rfc9111_5_2_arguments_in_token_and_quoted_form_names_in_any_case() {
        assert_eq!(resp("max-age=5").max_age, Some(5));
        // §5.2.1.1/§5.2.2.1: 'max-age=5', not 'max-age="5"', but recipients
        // accept both.
        assert_eq!(resp("max-age=\"5\"").max_age, Some(5));
        assert_eq!(resp("MAX-AGE=5, Public").max_age, Some(5));
        assert!(resp("MAX-AGE=5, Public").public);
        assert_eq!(resp("max-age = 5").max_age, Some(5));
        assert_eq!(resp("  ,, max-age=5 ,").max_age, Some(5));
        assert_eq!(resp("max-age=\"\\5\"").max_age, Some(5));
    }

    #[test]
    fn rfc9111_5_2_3_an_unknown_extension_is_ignored() {
        // The RFC's own example: a cache that does not know `community`
        // still sees `private`.
        let cc = resp("private, community=\"UCI\"");
        assert!(cc.private);
        assert_eq!(
            cc,
            ResponseDirectives {
                private: true,
                ..Default::default()
            }
        );
    }

    #[test]
    fn quoted_commas_do_not_split_directives() {
        let cc = resp("no-cache=\"set-cookie, x-a\", max-age=60");
        assert!(cc.no_cache);
        assert_eq!(cc.max_age, Some(60));
        let cc = resp("private=\"a,max-age=9\"");
        assert!(cc.private);
        assert_eq!(cc.max_age, None);
    }

    #[test]
    fn qualified_no_cache_and_private_count_as_unqualified() {
        assert!(resp("no-cache=\"set-cookie\"").no_cache);
        assert!(resp("private=\"x-user\"").private);
        assert_eq!(
            store(&[("cache-control", "private=\"x-user\", max-age=60")]),
            Err(Bypass::Private)
        );
    }

    #[test]
    fn rfc9111_4_2_1_repeated_directives_count_once_or_make_it_stale() {
        assert_eq!(resp("max-age=60, max-age=60").max_age, Some(60));
        assert_eq!(resp("max-age=60, max-age=120").max_age, Some(0));
        let two_lines = headers(&[
            ("cache-control", "max-age=60"),
            ("cache-control", "max-age=5"),
        ]);
        assert_eq!(ResponseDirectives::parse(&two_lines).max_age, Some(0));
        assert_eq!(resp("s-maxage=1, s-maxage=2").s_maxage, Some(0));
        assert_eq!(
            resp("stale-if-error=1, stale-if-error=2").stale_if_error,
            None
        );
        assert_eq!(
            req(&[("cache-control", "max-age=5, max-age=6")]).max_age,
            Some(0)
        );
    }

    #[test]
    fn rfc9111_4_2_1_invalid_max_age_is_stale() {
        for cc in [
            "max-age=abc",
            "max-age=-1",
            "max-age=",
            "max-age=1.5",
            "max-age",
            "max-age=\"5",
            "max-age=5 6",
        ] {
            assert_eq!(resp(cc).max_age, Some(0), "{cc}");
        }
        let stored = store(&[("cache-control", "max-age=abc"), ("etag", "\"v\"")]).unwrap();
        assert_eq!(stored.freshness_lifetime, Duration::ZERO);
        assert!(matches!(
            freshness(&stored, at(0), &RequestDirectives::default()),
            Freshness::Stale { .. }
        ));
    }

    #[test]
    fn rfc9111_1_2_2_delta_seconds_saturate_at_2_pow_31() {
        assert_eq!(resp("max-age=2147483648").max_age, Some(DELTA_SECONDS_MAX));
        assert_eq!(
            resp("max-age=99999999999999999999999").max_age,
            Some(DELTA_SECONDS_MAX)
        );
    }

    #[test]
    fn request_directives() {
        assert_eq!(
            req(&[(
                "cache-control",
                "no-cache, no-store, max-age=10, max-stale=5, min-fresh=3, only-if-cached, stale-if-error=7"
            )]),
            RequestDirectives {
                no_cache: true,
                no_store: true,
                max_age: Some(10),
                max_stale: Some(MaxStale::Within(5)),
                min_fresh: Some(3),
                only_if_cached: true,
                stale_if_error: Some(7),
            }
        );
        assert_eq!(
            req(&[("cache-control", "max-stale")]).max_stale,
            Some(MaxStale::Any)
        );
        assert_eq!(req(&[("cache-control", "max-stale=x")]).max_stale, None);
        assert_eq!(
            req(&[("cache-control", "min-fresh=x")]).min_fresh,
            Some(DELTA_SECONDS_MAX)
        );
        assert_eq!(req(&[]), RequestDirectives::default());
    }

    #[test]
    fn rfc9111_5_4_pragma_no_cache_only_without_cache_control() {
        assert!(req(&[("pragma", "no-cache")]).no_cache);
        assert!(req(&[("pragma", "x-foo, No-Cache")]).no_cache);
        assert!(!req(&[("pragma", "no-cache"), ("cache-control", "max-age=5")]).no_cache);
        assert!(!req(&[("pragma", "x-foo")]).no_cache);
    }

    #[test]
    fn response_directives_all_parsed() {
        // RFC 5861's and RFC 8246's examples.
        let cc = resp("max-age=600, stale-while-revalidate=30");
        assert_eq!(
            (cc.max_age, cc.stale_while_revalidate),
            (Some(600), Some(30))
        );
        let cc = resp("max-age=600, stale-if-error=1200");
        assert_eq!(cc.stale_if_error, Some(1200));
        let cc = resp("max-age=31536000, immutable");
        assert!(cc.immutable);
        let cc = resp("public, no-store, s-maxage=3, must-revalidate, proxy-revalidate");
        assert!(cc.public && cc.no_store && cc.must_revalidate && cc.proxy_revalidate);
        assert_eq!(cc.s_maxage, Some(3));
    }

    // --- Storing (RFC 9111 §3) ---

    #[test]
    fn a_fresh_200_is_stored_with_what_the_cache_needs() {
        let stored = store(&[
            (
                "cache-control",
                "public, max-age=60, stale-while-revalidate=5, stale-if-error=9",
            ),
            ("etag", "\"v1\""),
            ("last-modified", "Wed, 21 Oct 2015 07:00:00 GMT"),
            ("vary", "Accept-Language"),
            ("date", &date(0)),
        ])
        .unwrap();
        assert_eq!(
            stored,
            Stored {
                status: StatusCode::OK,
                freshness_lifetime: secs(60),
                initial_age: Duration::ZERO,
                response_time: at(0),
                date: at(0),
                stale_while_revalidate: Some(secs(5)),
                stale_if_error: Some(secs(9)),
                must_revalidate: false,
                no_cache: false,
                immutable: false,
                vary: vec![HeaderName::from_static("accept-language")],
                etag: Some(HeaderValue::from_static("\"v1\"")),
                last_modified: Some(HeaderValue::from_static("Wed, 21 Oct 2015 07:00:00 GMT")),
            }
        );
    }

    #[test]
    fn bypass_method() {
        let (empty, response) = (
            HeaderMap::new(),
            headers(&[("cache-control", "max-age=60")]),
        );
        let exchange = Exchange {
            method: &Method::POST,
            request: &empty,
            status: StatusCode::OK,
            response: &response,
            request_time: at(0),
            response_time: at(0),
        };
        assert_eq!(storable_exchange(&exchange), Err(Bypass::Method));
        let head = Exchange {
            method: &Method::HEAD,
            ..exchange
        };
        assert!(storable_exchange(&head).is_ok());
        assert!(storable(&Method::HEAD, &empty, StatusCode::OK, &response, at(0)).is_ok());
        assert_eq!(lookup_bypass(&Method::PUT, &empty), Some(Bypass::Method));
        assert_eq!(lookup_bypass(&Method::GET, &empty), None);
        assert_eq!(lookup_bypass(&Method::HEAD, &empty), None);
    }

    #[test]
    fn bypass_range_and_precondition() {
        let lookup = |pairs: &[(&str, &str)]| lookup_bypass(&Method::GET, &headers(pairs));
        assert_eq!(lookup(&[("range", "bytes=0-9")]), Some(Bypass::Range));
        assert_eq!(lookup(&[("if-match", "\"a\"")]), Some(Bypass::Precondition));
        assert_eq!(
            lookup(&[("if-unmodified-since", "Wed, 21 Oct 2015 07:28:00 GMT")]),
            Some(Bypass::Precondition)
        );
        assert_eq!(lookup(&[("if-range", "\"a\"")]), Some(Bypass::Precondition));
        // A cache evaluates these two itself.
        assert_eq!(lookup(&[("if-none-match", "\"a\"")]), None);
        assert_eq!(lookup(&[("authorization", "Bearer x")]), None);
    }

    #[test]
    fn bypass_request_no_store() {
        assert_eq!(
            store_with(
                &[("cache-control", "no-store")],
                200,
                &[("cache-control", "max-age=60")]
            ),
            Err(Bypass::RequestNoStore)
        );
    }

    #[test]
    fn bypass_status() {
        let fresh = [("cache-control", "max-age=60")];
        let public = [("cache-control", "public, max-age=60")];
        for status in [100, 101, 206, 304] {
            assert_eq!(
                store_with(&[], status, &public),
                Err(Bypass::Status),
                "{status}"
            );
        }
        for status in [500, 302, 307, 403] {
            assert_eq!(
                store_with(&[], status, &fresh),
                Err(Bypass::Status),
                "{status}"
            );
            assert!(store_with(&[], status, &public).is_ok(), "{status}");
        }
        for status in [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501] {
            assert!(store_with(&[], status, &fresh).is_ok(), "{status}");
        }
        // No freshness at all: a 500 is refused for its status first.
        assert_eq!(store_with(&[], 500, &[]), Err(Bypass::Status));
    }

    #[test]
    fn bypass_no_store() {
        assert_eq!(
            store(&[("cache-control", "public, max-age=60, no-store")]),
            Err(Bypass::NoStore)
        );
        // must-understand is not implemented, so no-store holds.
        assert_eq!(
            store(&[("cache-control", "must-understand, no-store, max-age=60")]),
            Err(Bypass::NoStore)
        );
    }

    #[test]
    fn bypass_private() {
        assert_eq!(
            store(&[("cache-control", "private, max-age=60")]),
            Err(Bypass::Private)
        );
    }

    #[test]
    fn rfc9111_3_5_authorization_needs_public_s_maxage_or_must_revalidate() {
        let auth = [("authorization", "Bearer secret")];
        assert_eq!(
            store_with(&auth, 200, &[("cache-control", "max-age=60")]),
            Err(Bypass::Authorization)
        );
        for cc in [
            "public, max-age=60",
            "s-maxage=60",
            "max-age=60, must-revalidate",
        ] {
            assert!(
                store_with(&auth, 200, &[("cache-control", cc)]).is_ok(),
                "{cc}"
            );
        }
    }

    #[test]
    fn bypass_set_cookie() {
        assert_eq!(
            store(&[
                ("cache-control", "public, max-age=60"),
                ("set-cookie", "s=1")
            ]),
            Err(Bypass::SetCookie)
        );
    }

    #[test]
    fn bypass_vary_star_and_invalid_vary() {
        assert_eq!(
            store(&[("cache-control", "max-age=60"), ("vary", "accept, *")]),
            Err(Bypass::VaryStar)
        );
        assert_eq!(
            store(&[("cache-control", "max-age=60"), ("vary", "accept language")]),
            Err(Bypass::VaryInvalid)
        );
    }

    #[test]
    fn bypass_no_freshness_without_heuristics() {
        assert_eq!(store(&[]), Err(Bypass::NoFreshness));
        assert_eq!(
            store(&[("cache-control", "public")]),
            Err(Bypass::NoFreshness)
        );
        // A validator alone is no freshness: no heuristic from Last-Modified.
        assert_eq!(
            store(&[("last-modified", "Wed, 21 Oct 2015 07:00:00 GMT")]),
            Err(Bypass::NoFreshness)
        );
    }

    #[test]
    fn no_cache_with_a_validator_is_stored_and_always_revalidated() {
        let stored = store(&[("cache-control", "no-cache"), ("etag", "W/\"1\"")]).unwrap();
        assert!(stored.no_cache);
        assert_eq!(stored.freshness_lifetime, Duration::ZERO);
        assert_eq!(
            freshness(&stored, at(0), &RequestDirectives::default()),
            Freshness::MustRevalidate {
                age: Duration::ZERO
            }
        );
        let stored =
            store(&[("cache-control", "no-cache, max-age=60"), ("etag", "\"1\"")]).unwrap();
        assert!(matches!(
            freshness(&stored, at(1), &RequestDirectives::default()),
            Freshness::MustRevalidate { .. }
        ));
    }

    #[test]
    fn bypass_not_reusable() {
        assert_eq!(
            store(&[("cache-control", "max-age=0")]),
            Err(Bypass::NotReusable)
        );
        // Bare no-cache has no freshness to begin with.
        assert_eq!(
            store(&[("cache-control", "no-cache")]),
            Err(Bypass::NoFreshness)
        );
        assert_eq!(
            store(&[("cache-control", "no-cache, max-age=60")]),
            Err(Bypass::NotReusable)
        );
        // Already older than its lifetime on arrival.
        assert_eq!(
            store(&[("cache-control", "max-age=60"), ("age", "60")]),
            Err(Bypass::NotReusable)
        );
        // An invalid ETag is no validator.
        assert_eq!(
            store(&[("cache-control", "max-age=0"), ("etag", "v1")]),
            Err(Bypass::NotReusable)
        );
        // A stale window or a validator makes it reusable...
        assert!(store(&[("cache-control", "max-age=0, stale-if-error=60")]).is_ok());
        assert!(store(&[("cache-control", "max-age=0"), ("etag", "\"1\"")]).is_ok());
        // ...but not a window must-revalidate forbids using.
        assert_eq!(
            store(&[(
                "cache-control",
                "max-age=0, must-revalidate, stale-if-error=60"
            )]),
            Err(Bypass::NotReusable)
        );
    }

    #[test]
    fn every_bypass_has_a_distinct_reason() {
        let reasons: std::collections::HashSet<_> =
            Bypass::ALL.iter().map(|b| b.reason()).collect();
        assert_eq!(reasons.len(), Bypass::ALL.len());
        assert_eq!(Bypass::NoStore.reason(), "no-store");
        assert!(Bypass::RequestNoStore.from_request());
        assert!(!Bypass::NoStore.from_request());
    }

    // --- Freshness lifetime (§4.2.1, §5.3) ---

    #[test]
    fn s_maxage_beats_max_age_and_expires_and_forbids_stale() {
        let stored = store(&[
            (
                "cache-control",
                "max-age=10, s-maxage=100, stale-while-revalidate=60",
            ),
            ("date", &date(0)),
            ("expires", &date(5)),
        ])
        .unwrap();
        assert_eq!(stored.freshness_lifetime, secs(100));
        assert!(stored.must_revalidate);
        let none = RequestDirectives::default();
        assert!(matches!(
            freshness(&stored, at(50), &none),
            Freshness::Fresh { .. }
        ));
        assert!(matches!(
            freshness(&stored, at(101), &none),
            Freshness::MustRevalidate { .. }
        ));
    }

    #[test]
    fn rfc9111_5_3_max_age_beats_expires() {
        let stored = store(&[
            ("cache-control", "max-age=10"),
            ("date", &date(0)),
            ("expires", &date(1000)),
        ])
        .unwrap();
        assert_eq!(stored.freshness_lifetime, secs(10));
    }

    #[test]
    fn rfc9111_4_2_1_expires_minus_date() {
        let stored = store(&[("date", &date(-10)), ("expires", &date(50))]).unwrap();
        assert_eq!(stored.freshness_lifetime, secs(60));
        assert_eq!(stored.initial_age, secs(10));
        // Without Date, the time it arrived stands in for it.
        let stored = store(&[("expires", &date(50))]).unwrap();
        assert_eq!(stored.freshness_lifetime, secs(50));
        assert_eq!(stored.date, at(0));
        // The RFC's example date is long past: lifetime 0.
        let stored = store(&[
            ("expires", "Thu, 01 Dec 1994 16:00:00 GMT"),
            ("etag", "\"1\""),
        ])
        .unwrap();
        assert_eq!(stored.freshness_lifetime, Duration::ZERO);
    }

    #[test]
    fn rfc9111_5_3_an_invalid_expires_is_already_expired() {
        for expires in ["0", "-1", "tomorrow", "Wed, 21 Oct 2015 07:28:00"] {
            let stored = store(&[("expires", expires), ("etag", "\"1\"")]).unwrap();
            assert_eq!(stored.freshness_lifetime, Duration::ZERO, "{expires}");
            assert!(matches!(
                freshness(&stored, at(0), &RequestDirectives::default()),
                Freshness::Stale { .. }
            ));
        }
        assert_eq!(store(&[("expires", "0")]), Err(Bypass::NotReusable));
        // Two differing Expires lines: stale as well.
        let stored = store(&[
            ("expires", &date(60)),
            ("expires", &date(120)),
            ("etag", "\"1\""),
        ])
        .unwrap();
        assert_eq!(stored.freshness_lifetime, Duration::ZERO);
    }

    #[test]
    fn proxy_revalidate_means_must_revalidate_here() {
        let stored = store(&[("cache-control", "max-age=1, proxy-revalidate")]).unwrap();
        assert!(stored.must_revalidate);
    }

    // --- Age (§4.2.3, §5.1) ---

    #[test]
    fn rfc9111_4_2_3_age_calculation() {
        // Sent at T0, answered 2 s later; the function's clock says it
        // generated the response 3 s before T0, an upstream said Age: 10.
        //   apparent_age          = max(0, (T0+2) - (T0-3))  = 5
        //   response_delay        = (T0+2) - T0              = 2
        //   corrected_age_value   = 10 + 2                   = 12
        //   corrected_initial_age = max(5, 12)               = 12
        //   current_age at T0+32  = 12 + (T0+32 - (T0+2))    = 42
        let (request, response) = (
            HeaderMap::new(),
            headers(&[
                ("cache-control", "max-age=100"),
                ("date", &date(-3)),
                ("age", "10"),
            ]),
        );
        let stored = storable_exchange(&Exchange {
            method: &Method::GET,
            request: &request,
            status: StatusCode::OK,
            response: &response,
            request_time: at(0),
            response_time: at(2),
        })
        .unwrap();
        assert_eq!(stored.initial_age, secs(12));
        assert_eq!(current_age(&stored, at(32)), secs(42));
        assert_eq!(
            freshness(&stored, at(32), &RequestDirectives::default()),
            Freshness::Fresh { age: secs(42) }
        );
        // The apparent age wins when the Date is older than Age says.
        let stored = store(&[
            ("cache-control", "max-age=1000"),
            ("date", &date(-100)),
            ("age", "7"),
        ])
        .unwrap();
        assert_eq!(stored.initial_age, secs(100));
        // A Date in the future (a fast clock) gives no negative age.
        let stored = store(&[("cache-control", "max-age=100"), ("date", &date(30))]).unwrap();
        assert_eq!(stored.initial_age, Duration::ZERO);
        // A clock that goes back gives no negative resident time.
        assert_eq!(current_age(&stored, at(-5)), Duration::ZERO);
    }

    #[test]
    fn rfc9111_5_1_age_first_member_invalid_ignored() {
        let age = |value: &str| {
            store(&[
                ("cache-control", "max-age=100"),
                ("age", value),
                ("etag", "\"e\""),
            ])
            .unwrap()
            .initial_age
        };
        assert_eq!(age("60"), secs(60));
        assert_eq!(age("10, 20"), secs(10));
        assert_eq!(age("abc"), Duration::ZERO);
        assert_eq!(age("-5"), Duration::ZERO);
        assert_eq!(age("99999999999999"), DELTA_MAX);
    }

    #[test]
    fn age_header_is_whole_saturating_seconds() {
        assert_eq!(age_header(Duration::from_millis(59_999)), "59");
        assert_eq!(age_header(Duration::ZERO), "0");
        assert_eq!(age_header(Duration::MAX), "2147483648");
        assert_eq!(
            age_seconds(Duration::from_secs(DELTA_SECONDS_MAX + 5)),
            DELTA_SECONDS_MAX
        );
    }

    // --- Freshness (§4.2, §4.2.4, §5.2.1) ---

    fn fresh_for(cc: &str) -> Stored {
        store(&[("cache-control", cc), ("etag", "\"e\"")]).unwrap()
    }

    #[test]
    fn fresh_then_stale() {
        let stored = fresh_for("max-age=60");
        let none = RequestDirectives::default();
        assert_eq!(
            freshness(&stored, at(59), &none),
            Freshness::Fresh { age: secs(59) }
        );
        assert_eq!(
            freshness(&stored, at(60), &none),
            Freshness::Stale {
                age: secs(60),
                client_accepts: false,
                serve_while_revalidate: false,
                serve_if_error: false,
            }
        );
    }

    #[test]
    fn rfc9111_5_2_1_1_request_max_age() {
        let stored = fresh_for("max-age=60");
        let max_age = |n: u64| RequestDirectives {
            max_age: Some(n),
            ..Default::default()
        };
        assert!(matches!(
            freshness(&stored, at(10), &max_age(10)),
            Freshness::Fresh { .. }
        ));
        assert!(matches!(
            freshness(&stored, at(11), &max_age(10)),
            Freshness::MustRevalidate { .. }
        ));
        assert!(matches!(
            freshness(&stored, at(0), &max_age(0)),
            Freshness::MustRevalidate { .. }
        ));
        // Within max-age but stale: only with max-stale.
        let stored = fresh_for("max-age=5");
        assert!(matches!(
            freshness(&stored, at(8), &max_age(10)),
            Freshness::Stale {
                client_accepts: false,
                ..
            }
        ));
        let both = RequestDirectives {
            max_age: Some(10),
            max_stale: Some(MaxStale::Any),
            ..Default::default()
        };
        assert!(matches!(
            freshness(&stored, at(8), &both),
            Freshness::Stale {
                client_accepts: true,
                ..
            }
        ));
        // max-stale does not lift max-age's bound on the age.
        assert!(matches!(
            freshness(&stored, at(11), &both),
            Freshness::MustRevalidate { .. }
        ));
    }

    #[test]
    fn rfc9111_5_2_1_3_request_min_fresh() {
        let stored = fresh_for("max-age=60");
        let min_fresh = RequestDirectives {
            min_fresh: Some(20),
            ..Default::default()
        };
        assert!(matches!(
            freshness(&stored, at(40), &min_fresh),
            Freshness::Fresh { .. }
        ));
        assert!(matches!(
            freshness(&stored, at(41), &min_fresh),
            Freshness::MustRevalidate { .. }
        ));
    }

    #[test]
    fn rfc9111_5_2_1_2_request_max_stale() {
        let stored = fresh_for("max-age=60");
        let within = RequestDirectives {
            max_stale: Some(MaxStale::Within(10)),
            ..Default::default()
        };
        assert!(matches!(
            freshness(&stored, at(70), &within),
            Freshness::Stale {
                client_accepts: true,
                ..
            }
        ));
        assert!(matches!(
            freshness(&stored, at(71), &within),
            Freshness::Stale {
                client_accepts: false,
                ..
            }
        ));
        let any = req(&[("cache-control", "max-stale")]);
        assert!(matches!(
            freshness(&stored, at(100_000), &any),
            Freshness::Stale {
                client_accepts: true,
                ..
            }
        ));
    }

    #[test]
    fn request_no_cache_always_revalidates() {
        let stored = fresh_for("max-age=60");
        assert!(matches!(
            freshness(&stored, at(0), &req(&[("cache-control", "no-cache")])),
            Freshness::MustRevalidate { .. }
        ));
        assert!(matches!(
            freshness(&stored, at(0), &req(&[("pragma", "no-cache")])),
            Freshness::MustRevalidate { .. }
        ));
    }

    #[test]
    fn rfc5861_stale_while_revalidate_and_stale_if_error_windows() {
        let stored = fresh_for("max-age=600, stale-while-revalidate=30, stale-if-error=1200");
        let none = RequestDirectives::default();
        assert_eq!(
            freshness(&stored, at(630), &none),
            Freshness::Stale {
                age: secs(630),
                client_accepts: false,
                serve_while_revalidate: true,
                serve_if_error: true,
            }
        );
        assert!(matches!(
            freshness(&stored, at(631), &none),
            Freshness::Stale {
                serve_while_revalidate: false,
                serve_if_error: true,
                ..
            }
        ));
        assert!(matches!(
            freshness(&stored, at(1801), &none),
            Freshness::Stale {
                serve_while_revalidate: false,
                serve_if_error: false,
                ..
            }
        ));
    }

    #[test]
    fn a_requests_stale_if_error_widens_the_window() {
        let stored = fresh_for("max-age=60");
        let request = req(&[("cache-control", "stale-if-error=100")]);
        assert!(matches!(
            freshness(&stored, at(160), &request),
            Freshness::Stale {
                serve_if_error: true,
                ..
            }
        ));
        assert!(matches!(
            freshness(&stored, at(161), &request),
            Freshness::Stale {
                serve_if_error: false,
                ..
            }
        ));
    }

    #[test]
    fn must_revalidate_beats_stale_if_error_swr_and_max_stale() {
        let stored =
            fresh_for("max-age=60, must-revalidate, stale-while-revalidate=60, stale-if-error=60");
        let generous = req(&[("cache-control", "max-stale, stale-if-error=1000")]);
        assert!(matches!(
            freshness(&stored, at(59), &generous),
            Freshness::Fresh { .. }
        ));
        assert_eq!(
            freshness(&stored, at(61), &generous),
            Freshness::MustRevalidate { age: secs(61) }
        );
    }

    #[test]
    fn rfc8246_immutable_ignores_a_reload_while_fresh() {
        let stored = fresh_for("max-age=31536000, immutable");
        let reload = req(&[("cache-control", "max-age=0")]);
        assert!(matches!(
            freshness(&stored, at(100), &reload),
            Freshness::Fresh { .. }
        ));
        let forced = req(&[("cache-control", "no-cache")]);
        assert!(matches!(
            freshness(&stored, at(100), &forced),
            Freshness::MustRevalidate { .. }
        ));
    }

    // --- Vary (§4.1) ---

    #[test]
    fn rfc9111_4_1_vary_names_are_normalised() {
        // RFC 9110 §12.5.5's example, in other cases, twice and over two lines.
        let stored = store(&[
            ("cache-control", "max-age=60"),
            ("vary", "Accept-Language, accept-encoding"),
            ("vary", " ACCEPT-LANGUAGE ,,"),
        ])
        .unwrap();
        assert_eq!(
            stored.vary,
            [
                HeaderName::from_static("accept-encoding"),
                HeaderName::from_static("accept-language")
            ]
        );
        assert_eq!(vary_names(&HeaderMap::new()), Ok(vec![]));
    }

    #[test]
    fn rfc9111_4_1_vary_matching_after_normalisation() {
        let names = [
            HeaderName::from_static("accept-encoding"),
            HeaderName::from_static("accept-language"),
        ];
        let a = headers(&[("accept-encoding", "gzip,br"), ("accept-language", "en")]);
        // Whitespace added, one line split in two: the same.
        let b = headers(&[
            ("accept-encoding", " gzip"),
            ("accept-encoding", "br "),
            ("accept-language", "en"),
            ("user-agent", "other"),
        ]);
        assert!(vary_matches(&names, &a, &b));
        assert_eq!(vary_key(&names, &a), vary_key(&names, &b));
        // Another order is another value.
        let c = headers(&[("accept-encoding", "br, gzip"), ("accept-language", "en")]);
        assert!(!vary_matches(&names, &a, &c));
        // Absent in both matches; absent in one only does not, even
        // against an empty value.
        let none = HeaderMap::new();
        assert!(vary_matches(
            &names,
            &none,
            &headers(&[("user-agent", "x")])
        ));
        let empty = headers(&[("accept-encoding", ""), ("accept-language", "")]);
        assert!(!vary_matches(&names, &none, &empty));
        assert_ne!(vary_key(&names, &none), vary_key(&names, &empty));
        // A comma inside a quoted string is not a separator.
        let name = [HeaderName::from_static("x-q")];
        assert!(!vary_matches(
            &name,
            &headers(&[("x-q", "\"a,b\"")]),
            &headers(&[("x-q", "\"a, b\"")])
        ));
    }

    #[test]
    fn vary_subset_keeps_only_the_named_fields() {
        let names = [HeaderName::from_static("accept-language")];
        let request = headers(&[
            ("accept-language", "en"),
            ("accept-language", "fr"),
            ("cookie", "x"),
        ]);
        let subset = vary_subset(&names, &request);
        assert_eq!(subset.len(), 2);
        assert!(vary_matches(&names, &subset, &request));
    }

    // --- Conditional requests (RFC 9110 §8.8.3.2, §13.1, §13.2.2) ---

    #[test]
    fn rfc9110_8_8_3_2_weak_and_strong_comparison_table() {
        let tag = |s: &'static str| EntityTag::parse(s.as_bytes()).unwrap();
        // ETag 1 | ETag 2 | Strong | Weak
        let table = [
            ("W/\"1\"", "W/\"1\"", false, true),
            ("W/\"1\"", "W/\"2\"", false, false),
            ("W/\"1\"", "\"1\"", false, true),
            ("\"1\"", "\"1\"", true, true),
        ];
        for (a, b, strong, weak) in table {
            assert_eq!(tag(a).strong_eq(tag(b)), strong, "{a} {b}");
            assert_eq!(tag(a).weak_eq(tag(b)), weak, "{a} {b}");
            assert_eq!(tag(b).weak_eq(tag(a)), weak, "{b} {a}");
        }
        for invalid in ["1", "\"1", "w/\"1\"", "\"a b\"", "\"1\"x", ""] {
            assert_eq!(EntityTag::parse(invalid.as_bytes()), None, "{invalid}");
        }
    }

    /// `not_modified` against a stored response's own validators.
    fn nm(request: &HeaderMap, stored: &Stored) -> bool {
        not_modified(request, stored.etag.as_ref(), stored.last_modified.as_ref())
    }

    fn with_etag(etag: &str) -> Stored {
        store(&[("cache-control", "max-age=60"), ("etag", etag)]).unwrap()
    }

    #[test]
    fn rfc9110_13_1_2_if_none_match() {
        let stored = with_etag("\"xyzzy\"");
        let inm = |value: &str| nm(&headers(&[("if-none-match", value)]), &stored);
        // The RFC's examples.
        assert!(inm("\"xyzzy\""));
        assert!(inm("W/\"xyzzy\""));
        assert!(inm("\"xyzzy\", \"r2d2xxxx\", \"c3piozzzz\""));
        assert!(inm("W/\"r2d2xxxx\", W/\"xyzzy\", W/\"c3piozzzz\""));
        assert!(inm("*"));
        assert!(!inm("\"r2d2xxxx\", \"c3piozzzz\""));
        // Commas inside tags, junk members skipped.
        let stored = with_etag("\"a,b\"");
        let inm = |value: &str| nm(&headers(&[("if-none-match", value)]), &stored);
        assert!(inm("\"x\", \"a,b\""));
        assert!(inm("junk, \"a,b\""));
        assert!(!inm("\"a\", \"b\""));
        // Over two lines.
        let two = headers(&[("if-none-match", "\"x\""), ("if-none-match", "\"a,b\"")]);
        assert!(nm(&two, &stored));
        // `*` matches a stored response without an ETag; a tag does not.
        let stored = store(&[("cache-control", "max-age=60")]).unwrap();
        assert!(nm(&headers(&[("if-none-match", "*")]), &stored));
        assert!(!nm(&headers(&[("if-none-match", "\"x\"")]), &stored));
    }

    #[test]
    fn rfc9110_13_2_2_if_none_match_takes_precedence_over_if_modified_since() {
        let stored = store(&[
            ("cache-control", "max-age=60"),
            ("etag", "\"v2\""),
            ("last-modified", "Sat, 29 Oct 1994 19:43:31 GMT"),
        ])
        .unwrap();
        let request = headers(&[
            ("if-none-match", "\"v1\""),
            ("if-modified-since", "Sat, 29 Oct 1994 19:43:31 GMT"),
        ]);
        assert!(!nm(&request, &stored));
        let request = headers(&[("if-modified-since", "Sat, 29 Oct 1994 19:43:31 GMT")]);
        assert!(nm(&request, &stored));
    }

    #[test]
    fn rfc9110_13_1_3_if_modified_since() {
        // The RFC's example date.
        let stored = store(&[
            ("cache-control", "max-age=60"),
            ("last-modified", "Sat, 29 Oct 1994 19:43:31 GMT"),
        ])
        .unwrap();
        let ims = |value: &str| nm(&headers(&[("if-modified-since", value)]), &stored);
        assert!(ims("Sat, 29 Oct 1994 19:43:31 GMT"));
        assert!(ims("Sun, 30 Oct 1994 19:43:31 GMT"));
        assert!(!ims("Fri, 28 Oct 1994 19:43:31 GMT"));
        // The obsolete forms count; an invalid date is ignored.
        assert!(ims("Sunday, 30-Oct-94 19:43:31 GMT"));
        assert!(ims("Sun Oct 30 19:43:31 1994"));
        assert!(!ims("yesterday"));
        assert!(!ims(
            "Sat, 29 Oct 1994 19:43:31 GMT, Sat, 29 Oct 1994 19:43:31 GMT"
        ));
        let two = headers(&[
            ("if-modified-since", "Sat, 29 Oct 1994 19:43:31 GMT"),
            ("if-modified-since", "Sat, 29 Oct 1994 19:43:31 GMT"),
        ]);
        assert!(!nm(&two, &stored));
        // Without Last-Modified nothing is compared...
        let stored = store(&[("cache-control", "max-age=60"), ("date", &date(-10))]).unwrap();
        assert!(!nm(&headers(&[("if-modified-since", &date(-10))]), &stored));
        // ...unless the caller passes the stored Date (RFC 9111 §4.3.2).
        let dated = format_http_date(stored.date);
        let by_date = |since: &str| {
            not_modified(
                &headers(&[("if-modified-since", since)]),
                None,
                Some(&dated),
            )
        };
        assert!(by_date(&date(-10)));
        assert!(!by_date(&date(-11)));
        assert!(!not_modified(&HeaderMap::new(), None, Some(&dated)));
    }

    // --- Dates (RFC 9110 §5.6.7) ---

    #[test]
    fn rfc9110_5_6_7_the_three_date_forms_are_one_time() {
        let forms = [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ];
        let expected = UNIX_EPOCH + Duration::from_secs(784_111_777);
        for form in forms {
            assert_eq!(
                parse_http_date(&HeaderValue::from_static(form)),
                Some(expected),
                "{form}"
            );
        }
        assert_eq!(format_http_date(expected), forms[0]);
        assert_eq!(format_http_date(at(0)), "Wed, 21 Oct 2015 07:28:00 GMT");
        assert_eq!(parse_http_date(&HeaderValue::from_static("0")), None);
    }

    #[test]
    fn dates_out_of_range_are_clamped_when_formatted() {
        assert_eq!(
            format_http_date(UNIX_EPOCH - Duration::from_secs(5)),
            "Thu, 01 Jan 1970 00:00:00 GMT"
        );
        assert_eq!(
            format_http_date(UNIX_EPOCH + Duration::from_secs(LATEST_HTTP_DATE * 2)),
            "Fri, 31 Dec 9999 23:59:59 GMT"
        );
    }

    // --- Revalidation (§4.3) ---

    #[test]
    fn rfc9111_4_3_1_revalidation_sends_the_stored_validators() {
        let stored = store(&[
            ("cache-control", "max-age=60"),
            ("etag", "W/\"7\""),
            ("last-modified", "Wed, 21 Oct 2015 07:00:00 GMT"),
        ])
        .unwrap();
        let sent = revalidation_headers(&stored);
        assert_eq!(sent[IF_NONE_MATCH], "W/\"7\"");
        assert_eq!(sent[IF_MODIFIED_SINCE], "Wed, 21 Oct 2015 07:00:00 GMT");
        assert!(
            revalidation_headers(&store(&[("cache-control", "max-age=6")]).unwrap()).is_empty()
        );

        let mut request = headers(&[
            ("if-none-match", "\"client\""),
            ("if-match", "\"x\""),
            ("accept", "text/html"),
        ]);
        prepare_revalidation(&stored, &mut request);
        assert_eq!(request[IF_NONE_MATCH], "W/\"7\"");
        assert_eq!(request.get_all(IF_NONE_MATCH).iter().count(), 1);
        assert!(!request.contains_key(IF_MATCH));
        assert_eq!(request["accept"], "text/html");
        // A stored response without Last-Modified drops the client's IMS.
        let stored = with_etag("\"1\"");
        let mut request = headers(&[("if-modified-since", "Wed, 21 Oct 2015 07:00:00 GMT")]);
        prepare_revalidation(&stored, &mut request);
        assert!(!request.contains_key(IF_MODIFIED_SINCE));
    }

    #[test]
    fn rfc9111_3_1_prepare_for_storage() {
        let stored = store(&[("cache-control", "max-age=60")]).unwrap();
        let mut response = headers(&[
            ("cache-control", "max-age=60"),
            ("connection", "x-hop, close"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("age", "3"),
            ("content-type", "text/plain"),
        ]);
        prepare_for_storage(&mut response, &stored);
        assert_eq!(
            response,
            headers(&[
                ("cache-control", "max-age=60"),
                ("content-type", "text/plain"),
                ("date", "Wed, 21 Oct 2015 07:28:00 GMT"),
            ])
        );
    }

    /// A stored response from T0 and its stored headers.
    fn stored_at_t0(pairs: &[(&str, &str)]) -> (Stored, HeaderMap) {
        let stored = store(pairs).unwrap();
        let mut stored_headers = headers(pairs);
        prepare_for_storage(&mut stored_headers, &stored);
        (stored, stored_headers)
    }

    fn revalidate(
        stored: &Stored,
        stored_headers: &HeaderMap,
        request: &[(&str, &str)],
        not_modified: &[(&str, &str)],
        at_offset: i64,
    ) -> Result<Refreshed, Bypass> {
        let (request, response) = (headers(request), headers(not_modified));
        updated_after_304(
            stored,
            stored_headers,
            &Exchange {
                method: &Method::GET,
                request: &request,
                status: StatusCode::NOT_MODIFIED,
                response: &response,
                request_time: at(at_offset),
                response_time: at(at_offset),
            },
        )
    }

    #[test]
    fn rfc9111_4_3_4_a_304_refreshes_freshness_and_headers() {
        let (stored, stored_headers) = stored_at_t0(&[
            ("cache-control", "max-age=60"),
            ("etag", "\"v1\""),
            ("content-length", "5"),
            ("x-version", "1"),
            ("vary", "accept-language"),
        ]);
        let refreshed = revalidate(
            &stored,
            &stored_headers,
            &[],
            &[
                ("cache-control", "max-age=120"),
                ("etag", "\"v1\""),
                ("content-length", "0"),
                ("x-version", "2"),
                ("vary", "accept-encoding"),
                ("date", &date(100)),
                ("age", "4"),
            ],
            100,
        )
        .unwrap();
        let updated = refreshed.stored.unwrap();
        assert_eq!(updated.freshness_lifetime, secs(120));
        assert_eq!(updated.initial_age, secs(4));
        assert_eq!(updated.response_time, at(100));
        assert_eq!(updated.date, at(100));
        assert_eq!(updated.vary, [HeaderName::from_static("accept-language")]);
        assert_eq!(
            freshness(&updated, at(110), &RequestDirectives::default()),
            Freshness::Fresh { age: secs(14) }
        );
        let h = &refreshed.headers;
        assert_eq!(h["content-length"], "5");
        assert_eq!(h["x-version"], "2");
        assert_eq!(h.get_all("x-version").iter().count(), 1);
        assert_eq!(h["vary"], "accept-language");
        assert_eq!(h["date"], date(100).as_str());
        assert!(!h.contains_key(AGE));
    }

    #[test]
    fn a_304_without_date_or_cache_control_keeps_the_stored_directives() {
        let (stored, stored_headers) = stored_at_t0(&[
            ("cache-control", "max-age=60"),
            ("last-modified", "Wed, 21 Oct 2015 07:00:00 GMT"),
        ]);
        let refreshed = revalidate(&stored, &stored_headers, &[], &[], 200).unwrap();
        let updated = refreshed.stored.unwrap();
        assert_eq!(updated.freshness_lifetime, secs(60));
        assert_eq!(updated.initial_age, Duration::ZERO);
        assert_eq!(refreshed.headers["date"], date(200).as_str());
        // Expires − the new Date, when that is how it was fresh.
        let (stored, stored_headers) = stored_at_t0(&[("expires", &date(300)), ("etag", "\"1\"")]);
        let updated = revalidate(&stored, &stored_headers, &[], &[("date", &date(200))], 200)
            .unwrap()
            .stored
            .unwrap();
        assert_eq!(updated.freshness_lifetime, secs(100));
    }

    #[test]
    fn bypass_validator_mismatch() {
        let (stored, stored_headers) =
            stored_at_t0(&[("cache-control", "max-age=60"), ("etag", "\"v1\"")]);
        let result = |etag: &str| revalidate(&stored, &stored_headers, &[], &[("etag", etag)], 10);
        assert_eq!(result("\"v2\"").unwrap_err(), Bypass::ValidatorMismatch);
        assert!(result("W/\"v1\"").is_ok());
        let (weak, weak_headers) =
            stored_at_t0(&[("cache-control", "max-age=60"), ("etag", "W/\"v1\"")]);
        assert_eq!(
            revalidate(&weak, &weak_headers, &[], &[("etag", "\"v1\"")], 10).unwrap_err(),
            Bypass::ValidatorMismatch
        );
        let (dated, dated_headers) = stored_at_t0(&[
            ("cache-control", "max-age=60"),
            ("last-modified", "Wed, 21 Oct 2015 07:00:00 GMT"),
        ]);
        assert_eq!(
            revalidate(
                &dated,
                &dated_headers,
                &[],
                &[("last-modified", "Wed, 21 Oct 2015 07:01:00 GMT")],
                10
            )
            .unwrap_err(),
            Bypass::ValidatorMismatch
        );
        // Not a 304 at all.
        let (request, response) = (HeaderMap::new(), HeaderMap::new());
        let exchange = Exchange {
            method: &Method::GET,
            request: &request,
            status: StatusCode::OK,
            response: &response,
            request_time: at(0),
            response_time: at(0),
        };
        assert_eq!(
            updated_after_304(&stored, &stored_headers, &exchange).unwrap_err(),
            Bypass::Status
        );
    }

    #[test]
    fn a_304_that_forbids_storing_removes_the_entry_a_request_that_does_keeps_it() {
        let (stored, stored_headers) =
            stored_at_t0(&[("cache-control", "max-age=60"), ("etag", "\"v1\"")]);
        let by = |request: &[(&str, &str)], response: &[(&str, &str)]| {
            revalidate(&stored, &stored_headers, request, response, 10)
                .unwrap()
                .stored
                .unwrap_err()
        };
        assert_eq!(by(&[], &[("set-cookie", "s=1")]), Bypass::SetCookie);
        assert_eq!(by(&[], &[("cache-control", "no-store")]), Bypass::NoStore);
        let kept = by(&[("cache-control", "no-store")], &[]);
        assert_eq!(kept, Bypass::RequestNoStore);
        assert!(kept.from_request());
        let kept = by(&[("authorization", "Basic x")], &[]);
        assert_eq!(kept, Bypass::Authorization);
        assert!(kept.from_request());
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    /// Pieces that make field values the parsers have to think about.
    fn fragment() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::sample::select(vec![
                "max-age",
                "s-maxage",
                "no-cache",
                "private",
                "public",
                "no-store",
                "must-revalidate",
                "stale-if-error",
                "stale-while-revalidate",
                "max-stale",
                "min-fresh",
                "immutable",
                "=",
                "\"",
                "\\",
                ",",
                " ",
                "\t",
                "W/",
                "*",
                "0",
                "60",
                "99999999999999999999",
                "-1",
                "Sun, 06 Nov 1994 08:49:37 GMT",
                "Sunday, 06-Nov-94 08:49:37 GMT",
                "Sun Nov  6 08:49:37 1994",
                "accept",
            ])
            .prop_map(|s| s.as_bytes().to_vec()),
            prop::collection::vec(any::<u8>(), 0..6),
        ]
    }

    /// A valid field value built from fragments (bytes a field value cannot
    /// hold are dropped).
    fn value() -> impl Strategy<Value = HeaderValue> {
        prop::collection::vec(fragment(), 0..8).prop_map(|parts| {
            let mut bytes = parts.concat();
            bytes.retain(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f));
            HeaderValue::from_bytes(&bytes).unwrap()
        })
    }

    const NAMES: [HeaderName; 10] = [
        CACHE_CONTROL,
        PRAGMA,
        EXPIRES,
        DATE,
        AGE,
        VARY,
        ETAG,
        LAST_MODIFIED,
        IF_NONE_MATCH,
        IF_MODIFIED_SINCE,
    ];

    fn header_map() -> impl Strategy<Value = HeaderMap> {
        prop::collection::vec((0..NAMES.len(), value()), 0..10).prop_map(|fields| {
            let mut map = HeaderMap::new();
            for (i, value) in fields {
                map.append(NAMES[i].clone(), value);
            }
            map
        })
    }

    fn time() -> impl Strategy<Value = SystemTime> {
        prop_oneof![
            (0u64..4_000_000_000).prop_map(|s| UNIX_EPOCH + Duration::from_secs(s)),
            Just(UNIX_EPOCH),
            Just(UNIX_EPOCH + Duration::from_secs(u64::MAX / 4)),
        ]
    }

    proptest! {
        #[test]
        fn no_field_value_makes_the_rules_panic(
            request in header_map(),
            response in header_map(),
            status in 100u16..600,
            times in (time(), time(), time()),
        ) {
            let (request_time, response_time, now) = times;
            let request_directives = RequestDirectives::parse(&request);
            let _ = ResponseDirectives::parse(&response);
            let _ = lookup_bypass(&Method::GET, &request);
            let _ = vary_names(&response);
            let exchange = Exchange {
                method: &Method::GET,
                request: &request,
                status: StatusCode::from_u16(status).unwrap(),
                response: &response,
                request_time,
                response_time,
            };
            if let Ok(stored) = storable_exchange(&exchange) {
                prop_assert!(stored.freshness_lifetime <= DELTA_MAX);
                let f = freshness(&stored, now, &request_directives);
                prop_assert!(f.age() <= DELTA_MAX);
                let _ = age_header(f.age());
                let _ = not_modified(&request, stored.etag.as_ref(), stored.last_modified.as_ref());
                let _ = not_modified(&request, response.get(ETAG), response.get(LAST_MODIFIED));
                let mut sent = request.clone();
                prepare_revalidation(&stored, &mut sent);
                let mut kept = response.clone();
                prepare_for_storage(&mut kept, &stored);
                let _ = vary_key(&stored.vary, &request);
                let revalidation = Exchange {
                    status: StatusCode::NOT_MODIFIED,
                    response: &request,
                    ..exchange
                };
                let _ = updated_after_304(&stored, &kept, &revalidation);
            }
        }

        #[test]
        fn vary_key_equality_is_vary_matching(a in header_map(), b in header_map()) {
            let names = NAMES.to_vec();
            prop_assert_eq!(
                vary_key(&names, &a) == vary_key(&names, &b),
                vary_matches(&names, &a, &b)
            );
            prop_assert!(vary_matches(&names, &a, &vary_subset(&names, &a)));
        }

        #[test]
        fn max_age_reads_back(n in any::<u64>(), quoted in any::<bool>()) {
            let cc = if quoted { format!("max-age=\"{n}\"") } else { format!("max-age={n}") };
            let mut map = HeaderMap::new();
            map.insert(CACHE_CONTROL, HeaderValue::try_from(cc).unwrap());
            prop_assert_eq!(
                ResponseDirectives::parse(&map).max_age,
                Some(n.min(DELTA_SECONDS_MAX))
            );
        }

        #[test]
        fn http_dates_read_back(s in 0u64..=LATEST_HTTP_DATE) {
            let time = UNIX_EPOCH + Duration::from_secs(s);
            prop_assert_eq!(parse_http_date(&format_http_date(time)), Some(time));
        }
    }
}
