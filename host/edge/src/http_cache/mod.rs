//! The node's shared HTTP cache in front of every function (RFC 9111, a
//! shared cache): a GET or HEAD the cache can answer never runs the
//! function. The rules are in [`rules`], the memory in [`store`], the
//! body that fills an entry as it streams to the client in
//! [`crate::body::tee`].
//!
//! What a request gets, in `x-outpost-cache`:
//! - `hit`: a fresh stored response (or a 304 for the client's validator);
//! - `stale`: a stale one, inside `stale-while-revalidate` (one background
//!   refresh per entry, however many requests see it stale) or inside
//!   `stale-if-error` when the function failed (5xx, trap, deadline);
//! - `miss`: the function ran; its response was stored if it may be;
//! - `bypass`: the cache did not look (a method other than GET/HEAD, or
//!   the function turned its cache off).

pub mod rules;
pub mod store;

use crate::activity::CacheCounts;
use crate::body::OutBody;
pub use crate::config::CacheSettings;
use crate::function::Function;
use crate::invoke::{self, admission::Admission};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use store::{Entry, Key, Store};

/// The response header that says what the cache did.
pub const CACHE_HEADER: &str = "x-outpost-cache";
/// The response header whose values (space-separated) name the entry for
/// purges, as Fastly's `Surrogate-Key`.
pub const SURROGATE_KEY: &str = "surrogate-key";

/// What the cache did for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered from a fresh entry.
    Hit,
    /// The function ran.
    Miss,
    /// Answered from a stale entry.
    Stale,
    /// Not looked at.
    Bypass,
}

impl Outcome {
    /// The header value and metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Stale => "stale",
            Outcome::Bypass => "bypass",
        }
    }
}

/// Counts `outcome` for the function whose counters are `counts`.
fn count(counts: &CacheCounts, outcome: Outcome) {
    let counter = match outcome {
        Outcome::Hit => &counts.hits,
        Outcome::Miss => &counts.misses,
        Outcome::Stale => &counts.stale,
        Outcome::Bypass => &counts.bypass,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What a purge names.
#[derive(Debug, Clone)]
pub enum Purge {
    /// Every entry of a function.
    Function(String),
    /// One URL's entries (every variant): the function and the target.
    Url {
        /// The function.
        function: String,
        /// `authority` + path + `?query`.
        target: String,
    },
    /// Every entry carrying a surrogate key, in one function or in all.
    SurrogateKey {
        /// The key.
        key: String,
        /// Only this function's entries (a guest purges its own only).
        function: Option<String>,
    },
}

/// The cache.
pub struct HttpCache {
    /// The settings it runs with.
    pub settings: CacheSettings,
    store: Store,
    /// Entries being refreshed in the background: one refresh each.
    refreshing: Mutex<HashSet<(Key, Vec<u8>)>>,
}

impl HttpCache {
    /// A cache with `settings`.
    pub fn new(settings: CacheSettings) -> HttpCache {
        HttpCache {
            store: Store::new(settings.memory_bytes),
            settings,
            refreshing: Mutex::default(),
        }
    }

    /// The memory behind it, for metrics and the admin API.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Removes what `purge` names; returns how many entries went.
    pub fn purge(&self, purge: &Purge) -> store::Removed {
        let removed = match purge {
            Purge::Function(name) => self.store.purge(|k, _| &*k.function == name.as_str()),
            Purge::Url { function, target } => self.store.purge_key(&Key {
                function: Arc::from(function.as_str()),
                target: target.clone(),
            }),
            Purge::SurrogateKey { key, function } => self.store.purge(|k, e| {
                function.as_ref().is_none_or(|f| &*k.function == f.as_str())
                    && e.surrogate_keys.iter().any(|s| s == key)
            }),
        };
        tracing::info!(target: "outpost::cache", purge = ?purge, entries = removed.entries, bytes = removed.bytes, "cache purged");
        removed
    }

    /// Drops a function's entries made by other versions than `function`
    /// (a deploy), unless the function keeps them.
    pub fn deployed(&self, function: &Function) {
        if function.policy.cache.keep_on_deploy {
            return;
        }
        let removed = self
            .store
            .purge(|k, e| *k.function == *function.name && !same_version(e, function));
        if removed.entries > 0 {
            tracing::info!(target: "outpost::cache", function = %function.name, entries = removed.entries, "cache entries of the previous version dropped");
        }
    }

    /// Answers a function request through the cache.
    pub async fn handle<B>(
        self: &Arc<Self>,
        function: Arc<Function>,
        admission: &Arc<Admission>,
        req: Request<B>,
        request_id: &HeaderValue,
    ) -> Response<OutBody>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let counts = &function.stats.cache;
        let method = req.method().clone();
        if !function.policy.cache.enabled {
            return self.bypass(function, admission, req, request_id).await;
        }
        let key = Key {
            function: function.name.clone(),
            target: target(&req),
        };
        if method != Method::GET && method != Method::HEAD {
            let response = invoke::invoke(function.clone(), admission, req, request_id).await;
            // RFC 9111 §4.4: an unsafe method that succeeded makes what is
            // stored for its target out of date.
            if !method.is_safe()
                && (response.status().is_success() || response.status().is_redirection())
            {
                self.store.purge_key(&key);
            }
            count(counts, Outcome::Bypass);
            return self.mark(response, Outcome::Bypass);
        }
        if let Some(bypass) = rules::lookup_bypass(&method, req.headers()) {
            // Ranges and preconditions other than If-None-Match /
            // If-Modified-Since go to the function, as they are.
            tracing::debug!(target: "outpost::cache", function = %function.name, reason = bypass.reason(), "not looked up");
            return self.bypass(function, admission, req, request_id).await;
        }
        let now = SystemTime::now();
        let directives = rules::RequestDirectives::parse(req.headers());
        let keep = function.policy.cache.keep_on_deploy;
        let found = self.store.get(&key, |e| {
            (keep || same_version(e, &function))
                && rules::vary_key(&e.stored.vary, req.headers()) == e.variant
        });
        let stale_if_error = match &found {
            Some(entry) => match rules::freshness(&entry.stored, now, &directives) {
                rules::Freshness::Fresh { age } => {
                    count(counts, Outcome::Hit);
                    return self.answer(entry, &req, age, Outcome::Hit);
                }
                rules::Freshness::Stale {
                    age,
                    serve_while_revalidate: true,
                    ..
                } => {
                    self.refresh(&function, admission, &key, entry, &req);
                    count(counts, Outcome::Stale);
                    return self.answer(entry, &req, age, Outcome::Stale);
                }
                rules::Freshness::Stale {
                    age,
                    client_accepts: true,
                    ..
                } => {
                    count(counts, Outcome::Stale);
                    return self.answer(entry, &req, age, Outcome::Stale);
                }
                rules::Freshness::Stale {
                    age,
                    serve_if_error,
                    ..
                } => serve_if_error.then_some(age),
                rules::Freshness::MustRevalidate { .. } => None,
            },
            None if directives.only_if_cached => {
                count(counts, Outcome::Miss);
                return self.mark(gateway_timeout(), Outcome::Miss);
            }
            None => None,
        };
        let request_headers = req.headers().clone();
        let response = invoke::invoke(function.clone(), admission, req, request_id).await;
        if let (Some(age), Some(entry)) = (stale_if_error, &found)
            && response.status().is_server_error()
        {
            tracing::info!(target: "outpost::cache", function = %function.name, status = response.status().as_u16(), "the function failed; answering with the stale copy (stale-if-error)");
            count(counts, Outcome::Stale);
            let mut req = Request::new(());
            *req.method_mut() = method;
            *req.headers_mut() = request_headers;
            return self.answer(entry, &req, age, Outcome::Stale);
        }
        count(counts, Outcome::Miss);
        let response = if method == Method::GET && !directives.no_store {
            self.fill(&function, key, &request_headers, response, now)
        } else {
            response
        };
        self.mark(response, Outcome::Miss)
    }

    /// The function's answer, the cache not looked at.
    async fn bypass<B>(
        &self,
        function: Arc<Function>,
        admission: &Arc<Admission>,
        req: Request<B>,
        request_id: &HeaderValue,
    ) -> Response<OutBody>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        count(&function.stats.cache, Outcome::Bypass);
        let response = invoke::invoke(function, admission, req, request_id).await;
        self.mark(response, Outcome::Bypass)
    }

    /// `response` as it goes to the client, storing it on the way when
    /// the rules allow.
    fn fill(
        self: &Arc<Self>,
        function: &Function,
        key: Key,
        request_headers: &HeaderMap,
        response: Response<OutBody>,
        now: SystemTime,
    ) -> Response<OutBody> {
        let Ok(stored) = rules::storable(
            &Method::GET,
            request_headers,
            response.status(),
            response.headers(),
            now,
        ) else {
            return response;
        };
        let (parts, body) = response.into_parts();
        let mut headers = parts.headers.clone();
        rules::prepare_for_storage(&mut headers, &stored);
        headers.remove(CACHE_HEADER);
        headers.remove(outpost_http::request_id::HEADER);
        let entry = Entry {
            variant: rules::vary_key(&stored.vary, request_headers),
            stored,
            status: parts.status,
            headers,
            body: Bytes::new(),
            surrogate_keys: surrogate_keys(&parts.headers),
            version: (
                Arc::from(function.sha256.as_str()),
                Arc::from(function.settings_sha256.as_str()),
            ),
        };
        let limit = self.settings.max_object_bytes.min(self.store.largest());
        let cache = self.clone();
        let body = crate::body::tee::Tee::wrap(body, limit, move |bytes| {
            let mut entry = entry;
            entry.body = bytes;
            cache.store.insert(key, entry);
        });
        Response::from_parts(parts, body)
    }

    /// Starts one background refresh of `entry`, unless one runs.
    fn refresh<B>(
        self: &Arc<Self>,
        function: &Arc<Function>,
        admission: &Arc<Admission>,
        key: &Key,
        entry: &Entry,
        req: &Request<B>,
    ) {
        let slot = (key.clone(), entry.variant.clone());
        if !self
            .refreshing
            .lock()
            .expect("refreshing lock")
            .insert(slot.clone())
        {
            return;
        }
        function
            .stats
            .cache
            .refreshes
            .fetch_add(1, Ordering::Relaxed);
        let mut headers = req.headers().clone();
        for conditional in [
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::IF_MATCH,
            header::IF_UNMODIFIED_SINCE,
            header::IF_RANGE,
            header::RANGE,
        ] {
            headers.remove(conditional);
        }
        let uri = req.uri().clone();
        let (cache, function, admission) = (self.clone(), function.clone(), admission.clone());
        tokio::spawn(async move {
            let empty = http_body_util::BodyExt::map_err(
                http_body_util::Empty::<Bytes>::new(),
                (|never| match never {})
                    as fn(std::convert::Infallible) -> wasmtime_wasi_http::Error,
            );
            let mut refresh = Request::new(empty);
            *refresh.uri_mut() = uri;
            *refresh.headers_mut() = headers.clone();
            let id = outpost_http::request_id::take_or_make(&mut HeaderMap::new());
            let now = SystemTime::now();
            let response = invoke::invoke(function.clone(), &admission, refresh, &id).await;
            let status = response.status();
            let response = cache.fill(&function, slot.0.clone(), &headers, response, now);
            // Drive the body to its end: that is what stores it.
            let drained = http_body_util::BodyExt::collect(response.into_body()).await;
            tracing::debug!(target: "outpost::cache", function = %function.name, status = status.as_u16(), complete = drained.is_ok(), "background refresh done");
            cache
                .refreshing
                .lock()
                .expect("refreshing lock")
                .remove(&slot);
        });
    }

    /// A stored response for `req`: the whole entry, or a 304 when the
    /// client's validators match it.
    fn answer<B>(
        &self,
        entry: &Entry,
        req: &Request<B>,
        age: std::time::Duration,
        outcome: Outcome,
    ) -> Response<OutBody> {
        let etag = entry.headers.get(header::ETAG);
        // Without Last-Modified, the stored Date stands in (RFC 9111 §4.3.2).
        let last_modified = entry
            .headers
            .get(header::LAST_MODIFIED)
            .or_else(|| entry.headers.get(header::DATE));
        let mut response = if rules::not_modified(req.headers(), etag, last_modified) {
            let mut r = Response::new(OutBody::from(outpost_http::reply::Full::default()));
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            for name in [
                header::CACHE_CONTROL,
                header::CONTENT_LOCATION,
                header::DATE,
                header::ETAG,
                header::EXPIRES,
                header::VARY,
                header::LAST_MODIFIED,
            ] {
                for value in entry.headers.get_all(&name) {
                    r.headers_mut().append(name.clone(), value.clone());
                }
            }
            r
        } else {
            let body = if req.method() == Method::HEAD {
                outpost_http::reply::Full::default()
            } else {
                outpost_http::reply::Full::new(entry.body.clone())
            };
            let mut r = Response::new(OutBody::from(body));
            *r.status_mut() = entry.status;
            *r.headers_mut() = entry.headers.clone();
            if req.method() == Method::HEAD && !r.headers().contains_key(header::CONTENT_LENGTH) {
                // The length a GET would have, not the empty body's.
                r.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(entry.body.len()));
            }
            r
        };
        response
            .headers_mut()
            .insert(header::AGE, HeaderValue::from(rules::age_seconds(age)));
        self.mark(response, outcome)
    }

    fn mark(&self, mut response: Response<OutBody>, outcome: Outcome) -> Response<OutBody> {
        if self.settings.status_header {
            response
                .headers_mut()
                .insert(CACHE_HEADER, HeaderValue::from_static(outcome.as_str()));
        }
        response
    }
}

fn same_version(entry: &Entry, function: &Function) -> bool {
    *entry.version.0 == *function.sha256 && *entry.version.1 == *function.settings_sha256
}

/// The cache key's target: the authority the client asked for, the path
/// and the query.
fn target<B>(req: &Request<B>) -> String {
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_ascii_lowercase)
        })
        .unwrap_or_default();
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    format!("{authority}{path}")
}

fn surrogate_keys(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(SURROGATE_KEY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(str::split_whitespace)
        .map(str::to_owned)
        .collect()
}

/// `only-if-cached` with nothing stored (RFC 9111 §5.2.1.7).
fn gateway_timeout() -> Response<OutBody> {
    let id = outpost_http::reply::error_id();
    outpost_http::reply::error(
        StatusCode::GATEWAY_TIMEOUT,
        "not-cached",
        "only-if-cached, and nothing is stored for this request",
        &id,
    )
}
