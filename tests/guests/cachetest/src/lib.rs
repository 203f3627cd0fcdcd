//! Answers any request with the cache headers its query string asks for,
//! so the end-to-end tests can drive every rule of the edge's HTTP cache
//! through a real function. `GET /cachetest/any/path?cc=public,max-age=60`.
//!
//! The body is JSON: a `nonce` new on every run (a cache hit repeats the
//! stored one), the request's `method`, `path`, `query`, the `status`
//! answered, and the request headers the cache passes on that the tests
//! check (`accept-language`, `if-none-match`, `if-modified-since`,
//! `cache-control`, `pragma`, and whether `authorization` was there). A
//! HEAD gets the headers only.
//!
//! Query parameters (form-encoded: `%20` or `+` for a space, `%2B` for a
//! plus):
//!
//! - `cc=V`: `Cache-Control: V`; `vary=V`, `etag=V`, `lm=V`
//!   (`Last-Modified`), `expires=V`, `date=V`, `age=V`, `sk=V`
//!   (`Surrogate-Key`): that header, as given.
//! - `h=NAME:VALUE`: any other header (repeatable; replaces one of the
//!   same name set before, `content-type` included).
//! - `setcookie=1`: `Set-Cookie: s=1`.
//! - `status=N`: the status (default 200).
//! - `bytes=N`: the body padded with spaces to N bytes (still valid JSON).
//! - `sleep_ms=N`: wait N ms before answering.
//! - `trap=1`: panic, a trap, after the sleep; so does a request header
//!   `x-trap: 1` (the URL, and so the cache key, unchanged).
//! - Conditionals: where it would answer 200 with `etag` or `lm`, it
//!   answers 304 (same headers, no body) when the request's
//!   `If-None-Match` lists that tag (weak comparison, or `*`) or, without
//!   `If-None-Match`, its `If-Modified-Since` is exactly `lm`. `no304=1`
//!   always answers in full.
//! - `purge=KEY`: first purges this function's entries tagged `KEY` from
//!   the node's cache (`outpost_sdk::cache::purge`, before anything else
//!   runs); the body adds `"purged"`: the number of entries that went, or
//!   the error's name (`"invalid-key"`, `"unavailable"`). An empty
//!   `purge=` purges by the empty key, which is refused.

use outpost_sdk::{Request, Response, http};
use serde_json::json;

/// The query's parameters, in order (`h` may repeat).
struct Query(Vec<(String, String)>);

impl Query {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, name: &str) -> bool {
        self.get(name) == Some("1")
    }

    fn number(&self, name: &str) -> Option<u64> {
        self.get(name).and_then(|v| v.parse().ok())
    }
}

/// New on every run: every request runs in a fresh instance.
fn nonce() -> String {
    use wasip2::random::random::get_random_u64;
    format!("{:016x}{:016x}", get_random_u64(), get_random_u64())
}

fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// An opaque tag without its `W/`, for weak comparison.
fn opaque(tag: &str) -> &str {
    let tag = tag.trim();
    tag.strip_prefix("W/").unwrap_or(tag)
}

/// Whether the request's conditionals say the client has `etag` / `lm`.
fn client_has_it(req: &Request, query: &Query) -> bool {
    if let Some(inm) = header(req, "if-none-match") {
        return query.get("etag").is_some_and(|etag| {
            inm.trim() == "*" || inm.split(',').any(|t| opaque(t) == opaque(etag))
        });
    }
    match (header(req, "if-modified-since"), query.get("lm")) {
        (Some(since), Some(lm)) => since.trim() == lm.trim(),
        _ => false,
    }
}

fn handle(req: Request) -> Response {
    let query = Query(
        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect(),
    );
    // First, so it happens whatever the rest of the query makes of the
    // run (a trap, a 304, a HEAD).
    let purged = query
        .get("purge")
        .map(|key| match outpost_sdk::cache::purge(key) {
            Ok(entries) => json!(entries),
            Err(e) => json!(e.name()),
        });
    if let Some(ms) = query.number("sleep_ms") {
        wasip2::clocks::monotonic_clock::subscribe_duration(ms.saturating_mul(1_000_000)).block();
    }
    // `x-trap: 1` traps without changing the URL (the cache's key), so a
    // test can make a stored URL's next run fail.
    if query.flag("trap") || req.headers().get("x-trap").is_some_and(|v| v == "1") {
        panic!("cachetest traps on request (trap=1 or x-trap: 1)");
    }

    let mut status = query
        .number("status")
        .and_then(|n| u16::try_from(n).ok())
        .and_then(|n| http::StatusCode::from_u16(n).ok())
        .unwrap_or(http::StatusCode::OK);
    if status == http::StatusCode::OK
        && !query.flag("no304")
        && (query.get("etag").is_some() || query.get("lm").is_some())
        && client_has_it(&req, &query)
    {
        status = http::StatusCode::NOT_MODIFIED;
    }

    let mut response = Response::new(Vec::new());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    let mut set = |name: &str, value: &str| match (
        http::HeaderName::from_bytes(name.trim().as_bytes()),
        http::HeaderValue::from_str(value.trim()),
    ) {
        (Ok(name), Ok(value)) => {
            headers.insert(name, value);
        }
        _ => eprintln!("cachetest: skipping the header {name:?}: {value:?}"),
    };
    if status != http::StatusCode::NOT_MODIFIED {
        set("content-type", "application/json");
    }
    for (param, name) in [
        ("cc", "cache-control"),
        ("vary", "vary"),
        ("etag", "etag"),
        ("lm", "last-modified"),
        ("expires", "expires"),
        ("date", "date"),
        ("age", "age"),
        ("sk", "surrogate-key"),
    ] {
        if let Some(value) = query.get(param) {
            set(name, value);
        }
    }
    if query.flag("setcookie") {
        set("set-cookie", "s=1");
    }
    for (_, extra) in query.0.iter().filter(|(n, _)| n == "h") {
        if let Some((name, value)) = extra.split_once(':') {
            set(name, value);
        }
    }

    if status == http::StatusCode::NOT_MODIFIED || req.method() == http::Method::HEAD {
        return response;
    }
    let mut body = json!({
        "nonce": nonce(),
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": req.uri().query().unwrap_or(""),
        "status": status.as_u16(),
        "headers": {
            "accept-language": header(&req, "accept-language"),
            "if-none-match": header(&req, "if-none-match"),
            "if-modified-since": header(&req, "if-modified-since"),
            "cache-control": header(&req, "cache-control"),
            "pragma": header(&req, "pragma"),
            "authorization": req.headers().contains_key("authorization"),
        },
    });
    if let Some(purged) = purged {
        body["purged"] = purged;
    }
    let mut body = body.to_string().into_bytes();
    if let Some(size) = query.number("bytes").and_then(|n| usize::try_from(n).ok())
        && size > body.len()
    {
        body.resize(size, b' ');
    }
    *response.body_mut() = body;
    response
}

outpost_sdk::export!(handle);
