//! The cloud tier's HTTP API. Everything but health needs
//! `Authorization: Bearer TOKEN`, and what a token may do depends on whose
//! it is (see [`crate::credentials`]):
//!
//! | Method, path | What | Who |
//! |---|---|---|
//! | `GET /_outpost/health` | 200, or 503 (`storage-failing`, since when, why) while storage refuses writes | anyone |
//! | `POST /v1/ingest` | apply a [`Batch`], answer an [`outpost_wire::Ack`] once durable | the batch's node |
//! | `GET /v1/feed?since=C&limit=N&wait=S` | accepted KV writes after cursor C, long-polling up to S seconds | nodes (their stores), readers |
//! | `GET /v1/conflicts?since=I&limit=N&store=S&prefix=P&node=N&kind=K&reviewed=B` | recorded conflicts, explained (`wire::explain`: benign or divergent, why the winner won, wall-clock times, values decoded), each with its `review` (or null); filtered here (`store` exact, key `prefix`, either writer `node`, `kind` benign/divergent, `reviewed` true/false), scanning at most 10,000 records; a page ends before 8 MiB (values' displays measured exactly, plus the base64 values); a first conflict showing more has its values' displays cut to 8 MiB (`"cut": true`, `full_bytes`); `next` is the last one scanned | nodes (their stores), readers |
//! | `GET /v1/conflicts/stats?store=&prefix=&node=&kind=&reviewed=&bucket_s=60&window=N` | counts over the most recent `window` (default and at most 100,000) conflicts, read newest first until 256 MiB of values or 5 s: kinds, reviewed, per store, per node pair, per time bucket (of the later write), only of conflicts the caller may see; `window` (records scanned, of any store), `complete` | nodes (their stores), readers |
//! | `POST /v1/conflicts/ID/review` | marks a conflict reviewed (`{"note": ...}` or no body; a note holds no control characters but newline and tab): by whom (from the credential) and when (the cloud's clock); the first review stands, but the operator's replaces anyone else's; answers `{id, review}` with the review that stands | the operator, dev token, nodes (conflicts they wrote a side of; one in a store they may not see is 404) |
//! | `GET /v1/history?store=S&key=K&limit=N&window=W` | a key's versions the cloud accepted among the last `window` (default 20,000, at most 100,000) feed changes, newest first, each with the conflicts it won, and the writes that lost (from as many recent conflicts); its current version; both read newest first until 256 MiB of values or 5 s (`window.complete`), and listed until 8 MiB of values' displays (`window.truncated`; one larger value is shown cut, `"cut": true`, `full_bytes`) | nodes (their stores), readers |
//! | `GET /v1/events/TOPIC?since=I&limit=N` | events of a topic | readers |
//! | `GET /v1/kv?store=S&key=K` | the cloud's current value of a key | readers |
//! | `GET /v1/kv?store=S&after=K&limit=N` | the store's keys in key order, tombstones included, with versions and values (`next`: the last key, if more follow) | readers, nodes (their stores) |
//! | `GET /metrics` | Prometheus metrics | readers |
//! | `POST /v1/credentials`, `GET /v1/credentials`, `DELETE /v1/credentials/ID` | enrol, list, revoke | the operator |
//!
//! The operator (admin token) may do everything; development mode's
//! shared token may ship as any node, read, and review conflicts, not
//! manage credentials. "Readers" above are reader credentials, the
//! operator and the dev token; readers themselves never write (a review
//! from one is 403).

use crate::contract::{Checked, CloudStore, CloudStoreError, MAX_BATCH_ENTRIES, Reviewed};
use crate::credentials::{Enrol, Principal, token_hash};
use crate::guard::StorageHealth;
use crate::metrics::CloudMetrics;
use base64::Engine as _;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use outpost_http::Handler;
use outpost_http::RequestBody;
use outpost_http::reply::{self, Full};
use outpost_wire::validate::Rules;
use outpost_wire::{Batch, refusal};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub mod explorer;
pub use explorer::Scans;

/// Largest ingest body accepted.
pub const MAX_BATCH_BYTES: usize = 32 * 1024 * 1024;
/// Largest enrolment request.
const MAX_ENROL_BYTES: usize = 64 * 1024;
/// Largest review request: a note of 1 KiB, even written all in JSON
/// escapes.
const MAX_REVIEW_BYTES: usize = 8 * 1024;
/// Most items one read returns.
const MAX_LIMIT: usize = 1000;
/// Longest a feed read may wait for changes.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// How callers prove who they are.
#[derive(Clone)]
pub struct Auth {
    /// SHA-256 (hex) of the operator's token, which may do everything,
    /// including enrolment. A hash, so that replicas over one database need
    /// not hold the token itself (only the one that made it does).
    pub admin_token_sha256: Option<Arc<str>>,
    /// Development mode: one token for every edge and reader, any node id.
    pub dev_token: Option<Arc<str>>,
}

/// Most batches being read or applied at once, across all edges: each
/// may hold up to [`MAX_BATCH_BYTES`] in memory.
pub const MAX_CONCURRENT_INGESTS: usize = 16;

/// The API's handler, over any [`CloudStore`] backend.
#[derive(Clone)]
pub struct Cloud<S> {
    /// The database.
    pub store: S,
    /// The fixed tokens (per-node and reader credentials are in `store`).
    pub auth: Auth,
    /// What every record must satisfy.
    pub rules: Rules,
    /// The tier's metrics.
    pub metrics: Arc<CloudMetrics>,
    /// Ingests in progress: one per node (an edge ships one batch at a
    /// time, so a second is a misbehaving or duplicated sender), and at
    /// most [`MAX_CONCURRENT_INGESTS`] in all.
    pub ingesting: Arc<Ingesting>,
    /// Whether the store accepts writes now, for health and metrics.
    pub storage: StorageStatus,
    /// Set when the tier shuts down: waiting feed reads answer at once
    /// (an empty page), so the drain does not sit out their long polls.
    pub stopping: Arc<Stopping>,
    /// The explorer's windowed scans (stats, history), one at a time.
    pub scans: Arc<Scans>,
}

/// The shutdown signal a waiting feed read listens for.
#[derive(Debug, Default)]
pub struct Stopping {
    stopped: std::sync::atomic::AtomicBool,
    wake: tokio::sync::Notify,
}

impl Stopping {
    /// Wakes every waiting feed read, now and from now on.
    pub fn stop(&self) {
        self.stopped
            .store(true, std::sync::atomic::Ordering::Release);
        self.wake.notify_waiters();
    }

    /// Resolves once [`Stopping::stop`] has been called.
    async fn stopped(&self) {
        let woken = self.wake.notified();
        if self.stopped.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        woken.await;
    }
}

/// Where [`Cloud`] learns whether its store accepts writes (for sled,
/// [`crate::sled_store::SledStore::health`]). Cheap; asked per request.
pub type StorageStatus = Arc<dyn Fn() -> StorageHealth + Send + Sync>;

/// Seconds an edge is told to wait before sending again while storage
/// fails (the store probes for a way back every second or so).
const STORAGE_RETRY_AFTER: &str = "5";

/// Who is ingesting now; see [`Cloud::ingesting`].
#[derive(Debug)]
pub struct Ingesting {
    nodes: std::sync::Mutex<std::collections::HashSet<String>>,
    slots: Arc<tokio::sync::Semaphore>,
}

impl Default for Ingesting {
    fn default() -> Self {
        Self {
            nodes: std::sync::Mutex::default(),
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_INGESTS)),
        }
    }
}

/// One ingest's claim on its node and a slot; released on drop.
struct IngestTurn {
    ingesting: Arc<Ingesting>,
    node: Option<String>,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for IngestTurn {
    fn drop(&mut self) {
        if let Some(node) = &self.node {
            let mut nodes = self
                .ingesting
                .nodes
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            nodes.remove(node);
        }
    }
}

impl Ingesting {
    /// A turn for `node` (`None`: not known before the body is read), or
    /// `None` when that node is already ingesting or every slot is taken.
    fn turn(self: &Arc<Self>, node: Option<&str>) -> Option<IngestTurn> {
        let slot = self.slots.clone().try_acquire_owned().ok()?;
        if let Some(node) = node {
            let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
            if !nodes.insert(node.to_owned()) {
                return None;
            }
        }
        Some(IngestTurn {
            ingesting: self.clone(),
            node: node.map(str::to_owned),
            _slot: slot,
        })
    }
}

fn busy(detail: &str) -> Response<Full> {
    let mut response = error(
        StatusCode::TOO_MANY_REQUESTS,
        "busy",
        "another batch of this node (or too many batches) is being ingested; retry",
        detail,
    );
    response.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("1"),
    );
    response
}

impl<S: CloudStore> Handler for Cloud<S> {
    type Body = Full;

    fn call(
        &self,
        req: Request<RequestBody>,
    ) -> impl Future<Output = Response<Full>> + Send + 'static + use<S> {
        let cloud = self.clone();
        async move { cloud.handle(req).await }
    }
}

use reply::logged_error as error;

fn query(req: &Request<RequestBody>) -> HashMap<String, String> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// `since`, `limit` and `wait` from a read's query string.
struct Paging {
    since: u64,
    limit: usize,
    wait: Duration,
}

impl Paging {
    fn parse(params: &HashMap<String, String>) -> Result<Self, String> {
        let number = |name: &str, default: u64| match params.get(name) {
            None => Ok(default),
            Some(raw) => raw.parse::<u64>().map_err(|_| {
                format!("query parameter {name} must be a non-negative integer, not {raw:?}")
            }),
        };
        Ok(Self {
            since: number("since", 0)?,
            limit: (number("limit", 100)? as usize).clamp(1, MAX_LIMIT),
            wait: Duration::from_secs(number("wait", 0)?).min(MAX_WAIT),
        })
    }
}

fn json<T: serde::Serialize>(value: &T) -> Response<Full> {
    reply::json_bytes(
        StatusCode::OK,
        serde_json::to_vec(value).expect("serializes"),
    )
}

fn storage_failure(e: CloudStoreError) -> Response<Full> {
    let mut response = match &e {
        CloudStoreError::Unavailable(_) | CloudStoreError::Db(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage-unavailable",
            "the cloud's storage is failing; nothing was applied that is not acknowledged: retry later",
            &e.to_string(),
        ),
        _ => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage",
            "the cloud's database failed",
            &e.to_string(),
        ),
    };
    if response.status() == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static(STORAGE_RETRY_AFTER),
        );
    }
    response
}

/// The storage part of the health report: the edge's shape, so one
/// dashboard reads both.
pub fn storage_json(health: &StorageHealth) -> serde_json::Value {
    serde_json::json!({
        "writable": health.writable,
        "failing_since": health
            .failing_since
            .map(|at| humantime::format_rfc3339_millis(at).to_string()),
        "last_error": health.last_error,
        "free_bytes": health.free_bytes,
        "writes_refused": health.refused,
        "writes_outcome_unknown": health.outcome_unknown,
        "reopens": health.reopens,
    })
}

/// `GET /_outpost/health`: 503 while storage refuses writes (a balancer
/// should send this cloud no ingests; reads still work), else 200.
fn health(storage: &StorageHealth) -> Response<Full> {
    let (code, status) = if storage.writable {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "storage-failing")
    };
    let mut response = reply::json(
        code,
        serde_json::json!({ "status": status, "storage": storage_json(storage) }),
    );
    if !storage.writable {
        response.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static(STORAGE_RETRY_AFTER),
        );
    }
    response
}

fn forbidden(what: &str, principal: &Principal) -> Response<Full> {
    error(
        StatusCode::FORBIDDEN,
        refusal::FORBIDDEN,
        &format!("this credential may not {what}"),
        &principal.describe(),
    )
}

fn method_not_allowed(allowed: &'static str, path: &str) -> Response<Full> {
    let mut response = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        &format!("use {allowed}"),
        path,
    );
    response
        .headers_mut()
        .insert(http::header::ALLOW, http::HeaderValue::from_static(allowed));
    response
}

/// Reads a whole body of at most `limit` bytes; `Err` is the reply.
async fn read_body(
    req: Request<RequestBody>,
    limit: usize,
) -> Result<bytes::Bytes, Response<Full>> {
    let too_large = |detail: &str| {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            refusal::TOO_LARGE,
            &format!("bodies here are limited to {limit} bytes"),
            detail,
        )
    };
    // A declared length over the limit is refused before any byte is
    // read; an undeclared one is cut off by `Limited` as it streams.
    let declared = hyper::body::Body::size_hint(req.body()).lower();
    if declared > limit as u64 {
        return Err(too_large(&format!("declared {declared} bytes")));
    }
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(body) => Ok(body.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large(""))
        }
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "cannot read the body",
            &e.to_string(),
        )),
    }
}

impl<S: CloudStore> Cloud<S> {
    /// Who sent `req`, or the reply refusing it.
    async fn authenticate(&self, req: &Request<RequestBody>) -> Result<Principal, Response<Full>> {
        let path = req.uri().path();
        let refuse = |why: &str| {
            self.metrics.unauthorized.inc();
            error(StatusCode::UNAUTHORIZED, "unauthorized", why, path)
        };
        let Some(token) = outpost_http::bearer::presented(req.headers()) else {
            return Err(refuse("missing bearer token"));
        };
        let presented_hash = token_hash(token);
        if let Some(admin) = &self.auth.admin_token_sha256
            && outpost_http::bearer::same(presented_hash.as_bytes(), admin.as_bytes())
        {
            return Ok(Principal::Admin);
        }
        if let Some(dev) = &self.auth.dev_token
            && outpost_http::bearer::same(token.as_bytes(), dev.as_bytes())
        {
            return Ok(Principal::Dev);
        }
        // Looked up by hash: the table holds no tokens, and a lookup by a
        // 256-bit hash reveals nothing about how close a guess came.
        match self.store.credential_by_hash(&presented_hash).await {
            Ok(Some(credential)) if credential.revoked_ms.is_none() => {
                Ok(Principal::Holder(credential))
            }
            Ok(Some(credential)) => {
                tracing::warn!(target: "outpost::cloud::api", credential = %credential.id, path, "a revoked credential was used");
                Err(refuse("this credential was revoked"))
            }
            Ok(None) => Err(refuse("unknown bearer token")),
            Err(e) => Err(storage_failure(e)),
        }
    }

    async fn handle(self, req: Request<RequestBody>) -> Response<Full> {
        let path = req.uri().path().to_owned();
        if path == "/_outpost/health" {
            return health(&(self.storage)());
        }
        let principal = match self.authenticate(&req).await {
            Ok(principal) => principal,
            Err(reply) => return reply,
        };
        let method = req.method().clone();
        match path.as_str() {
            "/v1/ingest" => {
                if method != Method::POST {
                    return method_not_allowed("POST", &path);
                }
                let response = self.ingest(req, &principal).await;
                CloudMetrics::count(&self.metrics.batches, batch_result(&response), 1);
                response
            }
            "/v1/credentials" => match method {
                Method::POST if principal.is_admin() => self.enrol(req).await,
                Method::GET if principal.is_admin() => match self.store.credentials().await {
                    Ok(all) => json(&all.iter().map(|c| c.public()).collect::<Vec<_>>()),
                    Err(e) => storage_failure(e),
                },
                Method::POST | Method::GET => forbidden("manage credentials", &principal),
                _ => method_not_allowed("GET, POST", &path),
            },
            p if p.starts_with("/v1/credentials/") => {
                if method != Method::DELETE {
                    return method_not_allowed("DELETE", &path);
                }
                if !principal.is_admin() {
                    return forbidden("manage credentials", &principal);
                }
                let id = &p["/v1/credentials/".len()..];
                match self.store.revoke_credential(id).await {
                    Ok(true) => {
                        tracing::info!(target: "outpost::cloud::api", credential = %id, "credential revoked");
                        reply::json(StatusCode::OK, serde_json::json!({ "revoked": id }))
                    }
                    Ok(false) => {
                        error(StatusCode::NOT_FOUND, "not-found", "no such credential", id)
                    }
                    Err(e) => storage_failure(e),
                }
            }
            p if p.starts_with("/v1/conflicts/") && p.ends_with("/review") => {
                if method != Method::POST {
                    return method_not_allowed("POST", &path);
                }
                // `/v1/conflicts/review` has no id: "" (the two share a `/`).
                let id = p
                    .strip_prefix("/v1/conflicts/")
                    .and_then(|rest| rest.strip_suffix("/review"))
                    .unwrap_or("")
                    .to_owned();
                self.review(req, &principal, &id).await
            }
            _ if method != Method::GET => method_not_allowed("GET", &path),
            "/metrics" => {
                if !principal.may_read_all() {
                    return forbidden("read metrics", &principal);
                }
                // Metrics are most wanted while the database is down: the
                // conflict gauge keeps its last value then, and the storage
                // gauges say why.
                if let Ok(n) = self.store.conflict_count().await {
                    self.metrics.conflicts.set(n as i64);
                }
                let storage = (self.storage)();
                reply::ok(
                    crate::metrics::CONTENT_TYPE,
                    self.metrics.render_with(&storage),
                )
            }
            "/v1/feed" => self.feed(&req, &principal).await,
            "/v1/conflicts" => {
                let params = query(&req);
                let (paging, filter) = match Paging::parse(&params)
                    .and_then(|p| Ok((p, explorer::Filter::parse(&params)?)))
                {
                    Ok(parsed) => parsed,
                    Err(message) => {
                        return error(StatusCode::BAD_REQUEST, "bad-request", &message, "");
                    }
                };
                explorer::list(&self.store, &principal, paging.since, paging.limit, &filter)
                    .await
                    .map_or_else(storage_failure, |page| json(&page))
            }
            "/v1/conflicts/stats" => {
                let query = match explorer::StatsQuery::parse(&query(&req)) {
                    Ok(query) => query,
                    Err(message) => {
                        return error(StatusCode::BAD_REQUEST, "bad-request", &message, "");
                    }
                };
                let Some(_turn) = self.scans.turn().await else {
                    return scans_busy(&path);
                };
                explorer::stats(
                    &self.store,
                    &principal,
                    &query,
                    &explorer::ScanLimits::default(),
                )
                .await
                .map_or_else(storage_failure, |stats| json(&stats))
            }
            "/v1/history" => {
                let query = match explorer::HistoryQuery::parse(&query(&req)) {
                    Ok(query) => query,
                    Err(message) => {
                        return error(StatusCode::BAD_REQUEST, "bad-request", &message, "");
                    }
                };
                if !principal.may_see(query.store()) {
                    return forbidden("read this store's history", &principal);
                }
                let Some(_turn) = self.scans.turn().await else {
                    return scans_busy(&path);
                };
                explorer::history(&self.store, &query, &explorer::ScanLimits::default())
                    .await
                    .map_or_else(storage_failure, |history| json(&history))
            }
            "/v1/kv" => {
                let params = query(&req);
                if !params.contains_key("key") {
                    return self.keys(&params, &principal).await;
                }
                if !principal.may_read_all() {
                    return forbidden("read keys", &principal);
                }
                let (Some(store), Some(key)) = (params.get("store"), params.get("key")) else {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "bad-request",
                        "store and key are required",
                        "",
                    );
                };
                match self.store.get(store, key).await {
                    Ok(Some((version, value))) => json(&serde_json::json!({
                        "version": version,
                        "value": value.map(|v| base64::engine::general_purpose::STANDARD.encode(v)),
                    })),
                    Ok(None) => error(StatusCode::NOT_FOUND, "not-found", "no such key", key),
                    Err(e) => storage_failure(e),
                }
            }
            p if p.starts_with("/v1/events/") => {
                if !principal.may_read_all() {
                    return forbidden("read events", &principal);
                }
                let topic = &p["/v1/events/".len()..];
                match Paging::parse(&query(&req)) {
                    Ok(paging) => self
                        .store
                        .events(topic, paging.since, paging.limit)
                        .await
                        .map_or_else(storage_failure, |page| json(&page)),
                    Err(message) => error(StatusCode::BAD_REQUEST, "bad-request", &message, ""),
                }
            }
            _ => error(
                StatusCode::NOT_FOUND,
                "not-found",
                "no such endpoint",
                &path,
            ),
        }
    }

    /// `GET /v1/kv?store=S&after=K&limit=N`: the store's keys in order.
    async fn keys(
        &self,
        params: &HashMap<String, String>,
        principal: &Principal,
    ) -> Response<Full> {
        let Some(store) = params.get("store") else {
            return error(
                StatusCode::BAD_REQUEST,
                "bad-request",
                "store is required (and key, to read one key)",
                "",
            );
        };
        // Readers and operators see every store; a node, the ones it may
        // write (what a convergence check compares with its own).
        if !principal.may_see(store) {
            return forbidden("list this store's keys", principal);
        }
        let limit = match Paging::parse(params) {
            Ok(paging) => paging.limit,
            Err(message) => return error(StatusCode::BAD_REQUEST, "bad-request", &message, ""),
        };
        let after = params.get("after").map(String::as_str);
        match self.store.keys(store, after, limit).await {
            Ok(page) => json(&serde_json::json!({
                "items": page
                    .items
                    .iter()
                    .map(|(key, (version, value))| serde_json::json!({
                        "key": key,
                        "version": version,
                        "value": value.as_ref().map(|v| base64::engine::general_purpose::STANDARD.encode(v)),
                    }))
                    .collect::<Vec<_>>(),
                "next": page.next,
            })),
            Err(e) => storage_failure(e),
        }
    }

    /// `POST /v1/conflicts/ID/review`: who is the credential's, when is
    /// this cloud's clock; the first review stands, bar the operator's,
    /// which replaces anyone else's. A node reviews only conflicts it
    /// wrote a side of, and hears of one in a store it may not see what it
    /// hears of a missing id.
    async fn review(
        &self,
        req: Request<RequestBody>,
        principal: &Principal,
        id: &str,
    ) -> Response<Full> {
        let Some(by) = explorer::reviewer(principal) else {
            return forbidden("review conflicts (it is read-only)", principal);
        };
        let Ok(id) = id.parse::<u64>() else {
            return error(
                StatusCode::BAD_REQUEST,
                "bad-request",
                "a conflict id is a non-negative integer",
                &format!("{:?}", id.chars().take(40).collect::<String>()),
            );
        };
        let body = match read_body(req, MAX_REVIEW_BYTES).await {
            Ok(body) => body,
            Err(reply) => return reply,
        };
        // Checked whole before the store is touched.
        let note = match explorer::review_note(&body) {
            Ok(note) => note,
            Err(message) => return error(StatusCode::BAD_REQUEST, "bad-request", &message, ""),
        };
        let conflict = match self.store.conflicts(id.saturating_sub(1), 1).await {
            Ok(page) => page.items.into_iter().find(|c| c.id == id),
            Err(e) => return storage_failure(e),
        };
        let Some(conflict) = conflict else {
            return not_found_conflict(id);
        };
        match explorer::may_review(principal, &conflict) {
            Ok(()) => {}
            Err(explorer::NotTheirs::Hidden) => return not_found_conflict(id),
            Err(explorer::NotTheirs::NotAWriter) => {
                return error(
                    StatusCode::FORBIDDEN,
                    refusal::FORBIDDEN,
                    "a node may review only conflicts it wrote one side of (the operator may review any)",
                    &format!(
                        "{}: conflict {id} is between {} and {}",
                        principal.describe(),
                        conflict.winner.node,
                        conflict.loser.node
                    ),
                );
            }
        }
        let review = outpost_wire::explain::Review {
            by,
            at_ms: crate::credentials::now_ms(),
            note,
        };
        match self.store.review_conflict(id, review).await {
            Ok(Reviewed::Recorded(review)) => {
                tracing::info!(target: "outpost::cloud::api", conflict = id, store = %conflict.store, key = %conflict.key, by = %review.by, note = review.note.is_some(), "conflict reviewed");
                json(&serde_json::json!({ "id": id, "review": review }))
            }
            Ok(Reviewed::Already(review)) => {
                tracing::debug!(target: "outpost::cloud::api", conflict = id, by = %review.by, "conflict reviewed before; that review stands");
                json(&serde_json::json!({ "id": id, "review": review }))
            }
            Ok(Reviewed::NoSuchConflict) => not_found_conflict(id),
            Err(e) => storage_failure(e),
        }
    }

    async fn enrol(&self, req: Request<RequestBody>) -> Response<Full> {
        let body = match read_body(req, MAX_ENROL_BYTES).await {
            Ok(body) => body,
            Err(reply) => return reply,
        };
        let enrol: Enrol = match serde_json::from_slice(&body) {
            Ok(enrol) => enrol,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad-request",
                    "expected {\"role\": \"node\"|\"reader\", \"node\": ID, \"stores\": [...], \"label\": ...}",
                    &e.to_string(),
                );
            }
        };
        let (credential, token) = match enrol.issue() {
            Ok(issued) => issued,
            Err(message) => return error(StatusCode::BAD_REQUEST, "bad-request", &message, ""),
        };
        let mut public = credential.public();
        if let Err(e) = self.store.put_credential(credential.clone()).await {
            return storage_failure(e);
        }
        tracing::info!(target: "outpost::cloud::api", credential = %credential.id, role = ?credential.role, node = ?credential.node, stores = ?credential.stores, "credential issued");
        public["token"] = serde_json::Value::String(token);
        reply::json(StatusCode::CREATED, public)
    }

    async fn ingest(&self, req: Request<RequestBody>, principal: &Principal) -> Response<Full> {
        let node_credential = principal.node().cloned();
        if node_credential.is_none() && !matches!(principal, Principal::Dev) {
            return forbidden("ship batches (only a node credential may)", principal);
        }
        let bound_node = node_credential.as_ref().and_then(|c| c.node.as_deref());
        let Some(_turn) = self.ingesting.turn(bound_node) else {
            return busy(&principal.describe());
        };
        let body = match read_body(req, MAX_BATCH_BYTES).await {
            Ok(body) => body,
            Err(reply) => return reply,
        };
        let batch: Batch = match serde_json::from_slice(&body) {
            Ok(batch) => batch,
            Err(e) => {
                // serde quotes the offending input: keep the log line short.
                let detail: String = e.to_string().chars().take(300).collect();
                return error(
                    StatusCode::BAD_REQUEST,
                    refusal::MALFORMED,
                    "the body is not a valid batch",
                    &detail,
                );
            }
        };
        if batch.entries.len() > MAX_BATCH_ENTRIES {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                refusal::TOO_LARGE,
                &format!("batches are limited to {MAX_BATCH_ENTRIES} entries"),
                &format!("{} entries", batch.entries.len()),
            );
        }
        if !outpost_wire::names::is_valid_node_id(&batch.node) {
            return error(
                StatusCode::BAD_REQUEST,
                refusal::MALFORMED,
                "the batch's node id breaks the node-id rule",
                &format!("{:?}", batch.node.chars().take(80).collect::<String>()),
            );
        }
        if let Some(credential) = &node_credential
            && credential.node.as_deref() != Some(batch.node.as_str())
        {
            return error(
                StatusCode::FORBIDDEN,
                refusal::WRONG_NODE,
                "the batch names another node than this credential's",
                &format!(
                    "batch node {:?}, credential {}",
                    batch.node,
                    principal.describe()
                ),
            );
        }
        let now = outpost_wire::validate::now_ms();
        let node = batch.node.clone();
        let entries = batch
            .entries
            .into_iter()
            .map(|entry| {
                let mut verdict = self.rules.check_record(&entry.record, &node, now).err();
                if verdict.is_none()
                    && let Some(credential) = &node_credential
                {
                    use outpost_wire::validate::Invalid;
                    verdict = match &entry.record {
                        outpost_wire::Record::Kv { store, .. } if !credential.may_write(store) => {
                            Some(Invalid::StoreNotAllowed)
                        }
                        outpost_wire::Record::Event { topic, .. }
                            if !credential.may_publish(topic) =>
                        {
                            Some(Invalid::TopicNotAllowed)
                        }
                        _ => None,
                    };
                }
                (entry, verdict)
            })
            .collect();
        let checked = Checked {
            node: node.clone(),
            epoch: batch.epoch,
            entries,
        };
        match self.store.ingest(checked).await {
            Ok(ack) => {
                CloudMetrics::count(&self.metrics.entries, "applied", ack.applied);
                CloudMetrics::count(&self.metrics.entries, "duplicate", ack.duplicates);
                CloudMetrics::count(&self.metrics.entries, "refused", ack.refused.len() as u64);
                for refused in &ack.refused {
                    tracing::warn!(target: "outpost::cloud::api", node = %node, epoch = batch.epoch, seq = refused.seq, code = %refused.code, "entry refused: {}", refused.reason);
                }
                tracing::debug!(target: "outpost::cloud::api", node = %node, applied = ack.applied, duplicates = ack.duplicates, through = ack.through, "batch ingested");
                json(&ack)
            }
            Err(e @ CloudStoreError::OutOfOrder(..)) => error(
                StatusCode::BAD_REQUEST,
                refusal::MALFORMED,
                "entries are not in sequence order",
                &e.to_string(),
            ),
            Err(e @ CloudStoreError::EpochOwned { .. }) => error(
                StatusCode::CONFLICT,
                refusal::EPOCH_OWNED,
                "this database epoch belongs to another node: the data dir was copied; start this edge with --new-epoch",
                &format!("node {node}: {e}"),
            ),
            Err(e @ CloudStoreError::SequenceGap { .. }) => error(
                StatusCode::CONFLICT,
                refusal::SEQUENCE_GAP,
                "the batch skips sequence numbers: records were lost before they reached the cloud",
                &format!("node {node} epoch {}: {e}", batch.epoch),
            ),
            Err(e @ CloudStoreError::CloneDetected(_)) => error(
                StatusCode::CONFLICT,
                refusal::CLONE_DETECTED,
                "an applied sequence number came again with other content: two edges share one data dir; start one with --new-epoch",
                &format!("node {node} epoch {}: {e}", batch.epoch),
            ),
            Err(e) => storage_failure(e),
        }
    }

    async fn feed(&self, req: &Request<RequestBody>, principal: &Principal) -> Response<Full> {
        let Paging { since, limit, wait } = match Paging::parse(&query(req)) {
            Ok(paging) => paging,
            Err(message) => return error(StatusCode::BAD_REQUEST, "bad-request", &message, ""),
        };
        let deadline = tokio::time::Instant::now() + wait;
        self.metrics.feed_reads.inc();
        loop {
            // Register for wake-ups before looking, so no ingest is missed.
            let grew = self.store.feed_grew().notified();
            match self.store.feed(since, limit).await {
                Ok(mut page) if page.next > since => {
                    // A node sees only the stores it may write; the cursor
                    // still moves past the rest.
                    page.changes.retain(|c| principal.may_see(&c.store));
                    self.metrics.feed_changes.inc_by(page.changes.len() as u64);
                    return json(&page);
                }
                Ok(page) => {
                    tokio::select! {
                        () = grew => {}
                        () = tokio::time::sleep_until(deadline) => return json(&page),
                        () = self.stopping.stopped() => return json(&page),
                    }
                }
                Err(e) => return storage_failure(e),
            }
        }
    }
}

fn not_found_conflict(id: u64) -> Response<Full> {
    error(
        StatusCode::NOT_FOUND,
        "not-found",
        "no such conflict",
        &id.to_string(),
    )
}

/// A stats or history request that waited too long for the scan before it.
fn scans_busy(path: &str) -> Response<Full> {
    let mut response = error(
        StatusCode::TOO_MANY_REQUESTS,
        "busy",
        "another stats or history scan is running; retry",
        path,
    );
    response.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("1"),
    );
    response
}

/// The `result` label of an ingest answer.
fn batch_result(response: &Response<Full>) -> &'static str {
    match response.status() {
        StatusCode::OK => "accepted",
        StatusCode::BAD_REQUEST => "malformed",
        StatusCode::PAYLOAD_TOO_LARGE => "too-large",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::CONFLICT => "refused",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        StatusCode::TOO_MANY_REQUESTS => "busy",
        _ => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn body(response: &Response<Full>) -> serde_json::Value {
        serde_json::from_slice(response.body().0.as_deref().unwrap_or_default()).unwrap()
    }

    fn storage(writable: bool) -> StorageHealth {
        StorageHealth {
            writable,
            failing_since: (!writable).then(SystemTime::now),
            last_error: Some("the disk is nearly full".into()),
            free_bytes: Some(1024),
            refused: 3,
            outcome_unknown: 1,
            reopens: 0,
        }
    }

    #[test]
    fn health_is_503_with_since_when_and_why_while_storage_fails() {
        let failing = health(&storage(false));
        assert_eq!(failing.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(failing.headers().contains_key(http::header::RETRY_AFTER));
        let report = body(&failing);
        assert_eq!(report["status"], "storage-failing");
        assert_eq!(report["storage"]["writable"], false);
        assert!(
            report["storage"]["failing_since"].as_str().is_some(),
            "{report}"
        );
        assert_eq!(report["storage"]["last_error"], "the disk is nearly full");
        assert_eq!(report["storage"]["writes_refused"], 3);

        let fine = health(&storage(true));
        assert_eq!(fine.status(), StatusCode::OK);
        assert!(!fine.headers().contains_key(http::header::RETRY_AFTER));
        let report = body(&fine);
        assert_eq!(report["status"], "ok");
        assert!(report["storage"]["failing_since"].is_null());
    }

    #[test]
    fn a_failing_store_answers_503_with_retry_after() {
        for e in [
            CloudStoreError::Unavailable("nothing was applied: full".into()),
            CloudStoreError::Db(sled::Error::Io(std::io::Error::other("ENOSPC"))),
        ] {
            let response = storage_failure(e);
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()[http::header::RETRY_AFTER], "5");
            assert_eq!(body(&response)["error"], "storage-unavailable");
        }
    }
}
