//! The admin listener, apart from the public port: Prometheus metrics, the
//! JSON admin API and the live dashboard, behind an optional bearer token.
//!
//! | Path | What |
//! |---|---|
//! | `GET /` | the dashboard (static; it calls the API with the token from `#token=`) |
//! | `GET /metrics` | Prometheus (OpenMetrics text) |
//! | `GET /functions` | every function: version, source, load error, request counts, latency, what the HTTP cache did for it (`cache`: hits, misses, stale, bypass, hit_ratio) |
//! | `GET /events?limit=N` | recent loads, reloads, removals and failures, newest first |
//! | `GET /outbox` | outbox depth and age, epoch, last ack, cloud link (the replica in use, all replicas, blocked or not), replication lag |
//! | `GET /outbox/quarantine?since=I&limit=N` | records the cloud refused for good, with its reason |
//! | `POST /outbox/quarantine/ID/resend` | put a quarantined record back in the outbox (new sequence number) |
//! | `GET /explorer.js` | the conflict explorer the dashboard mounts (static, [`outpost_http::CONFLICT_EXPLORER_JS`]) |
//! | `GET /kv?store=S&after=K&limit=N` (or `&key=K` for one key) | this node's copy of a store in key order, tombstones included: `{"items": [{"key", "version", "value": base64\|null}], "next": key\|null}` |
//! | `GET /stores` | store ids: `replicated` (ever, on this node) and `local` (what serving functions may open that does not replicate) |
//! | `GET /conflicts?since=I&limit=N&store=S&prefix=P&node=N&kind=K&reviewed=B` | the cloud tier's conflicts, filtered there, passed through |
//! | `GET /conflicts/stats?store=S&prefix=P&node=N&kind=K&reviewed=B&bucket_s=T&window=W` | the cloud's conflict counts (per store, node pair, over time), passed through |
//! | `POST /conflicts/ID/review` | mark a conflict reviewed at the cloud (body `{"note": ...}`, optional), as this node (`node:ID`) |
//! | `GET /history?store=S&key=K&limit=N&window=W` | one key's history at the cloud (versions, lost writes), passed through |
//!
//! What goes to the cloud is this node's request with its own credential:
//! the query's names are checked against each endpoint's list (an unknown
//! one is refused, not dropped), numbers checked, values re-encoded, empty
//! ones left out.

use crate::activity::{Activity, rfc3339};
use crate::invoke::admission::Admission;
use crate::metrics::{self, Metrics};
use crate::registry::Registry;
use crate::replication::client::{CloudClient, CloudError};
use crate::replication::status::ReplicationStatus;
use http::{Method, Request, Response, StatusCode};
use outpost_http::reply::{self, Full};
use outpost_http::{Handler, RequestBody};
use outpost_store::Storage;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::SystemTime;

const DASHBOARD: &str = include_str!("dashboard.html");

/// Most items one `/events`, `/conflicts` or `/kv` read returns.
const MAX_LIMIT: usize = 1000;

/// Largest review body (`{"note": ...}`) accepted.
const MAX_REVIEW_BYTES: usize = 16 * 1024;

/// What each pass-through endpoint may ask the cloud: its query names, and
/// which of them are numbers.
struct CloudQuery {
    names: &'static [&'static str],
    numbers: &'static [&'static str],
}

const CONFLICTS_QUERY: CloudQuery = CloudQuery {
    names: &[
        "since", "limit", "store", "prefix", "node", "kind", "reviewed",
    ],
    numbers: &["since", "limit"],
};
const STATS_QUERY: CloudQuery = CloudQuery {
    names: &[
        "store", "prefix", "node", "kind", "reviewed", "bucket_s", "window",
    ],
    numbers: &["bucket_s", "window"],
};
const HISTORY_QUERY: CloudQuery = CloudQuery {
    names: &["store", "key", "limit", "window"],
    numbers: &["limit", "window"],
};

/// Everything the admin listener reads; the things it changes are a
/// re-send of a quarantined record and, at the cloud, a conflict's review.
#[derive(Clone)]
pub struct Admin {
    /// When set, every path but `/` needs `Authorization: Bearer TOKEN`.
    pub token: Option<Arc<str>>,
    pub metrics: Arc<Metrics>,
    pub activity: Arc<Activity>,
    pub registry: Arc<Registry>,
    pub admission: Arc<Admission>,
    pub storage: Arc<Storage>,
    /// The cloud link, when the node replicates.
    pub cloud: Option<(Arc<ReplicationStatus>, Arc<CloudClient>)>,
    /// The HTTP cache, unless turned off.
    pub cache: Option<Arc<crate::http_cache::HttpCache>>,
}

impl Handler for Admin {
    type Body = Full;

    fn call(
        &self,
        req: Request<RequestBody>,
    ) -> impl Future<Output = Response<Full>> + Send + 'static + use<> {
        let admin = self.clone();
        async move { admin.handle(req).await }
    }
}

use reply::logged_error as error;

/// `name`'s value in the query string, as a number; `Err` holds the
/// offending text.
fn number(req: &Request<RequestBody>, name: &str) -> Result<Option<u64>, String> {
    let query = req.uri().query().unwrap_or("");
    match form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name) {
        None => Ok(None),
        Some((_, v)) => v.parse().map(Some).map_err(|_| format!("{name}={v}")),
    }
}

fn bad_number(given: &str) -> Response<Full> {
    error(
        StatusCode::BAD_REQUEST,
        "bad-request",
        "since and limit must be non-negative integers",
        given,
    )
}

/// A query the admin API will not pass on: what is wrong, and the
/// offending text (for the log).
struct BadQuery {
    message: String,
    detail: String,
}

impl BadQuery {
    fn reply(&self) -> Response<Full> {
        error(
            StatusCode::BAD_REQUEST,
            "bad-request",
            &self.message,
            &self.detail,
        )
    }
}

/// `req`'s query for the cloud under `rules`: an unknown or repeated name
/// is refused (a typo must not widen a filter silently), a number must be
/// one, `limit` is held to `1..=MAX_LIMIT`, empty values are left out;
/// the rest re-encoded, in the order given.
fn cloud_query(
    req: &Request<RequestBody>,
    rules: &CloudQuery,
) -> Result<Vec<(String, String)>, BadQuery> {
    let query = req.uri().query().unwrap_or("");
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if !rules.names.contains(&name.as_ref()) {
            return Err(BadQuery {
                message: format!(
                    "unknown query parameter {name:?}; this endpoint takes {}",
                    rules.names.join(", ")
                ),
                detail: name.into_owned(),
            });
        }
        if pairs.iter().any(|(n, _)| *n == name) {
            return Err(BadQuery {
                message: format!("query parameter {name:?} given twice"),
                detail: name.into_owned(),
            });
        }
        if value.is_empty() {
            continue;
        }
        let mut value = value.into_owned();
        if rules.numbers.contains(&name.as_ref()) {
            let Ok(number) = value.parse::<u64>() else {
                return Err(BadQuery {
                    message: format!("{name} must be a non-negative integer"),
                    detail: format!("{name}={value}"),
                });
            };
            if name == "limit" {
                value = number.clamp(1, MAX_LIMIT as u64).to_string();
            }
        }
        pairs.push((name.into_owned(), value));
    }
    Ok(pairs)
}

/// What the pass-through endpoints answer on a node without a cloud tier.
fn no_cloud() -> Response<Full> {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "no-cloud",
        "this node has no cloud tier configured (--cloud); conflicts live there",
        "",
    )
}

/// `pairs` as a query string.
fn encode_query(pairs: &[(String, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// The answer to a pass-through call that failed: the cloud's own
/// refusal (a 4xx: a bad filter, no such conflict, not this node's store)
/// keeps its status and code; no answer, or any other failure (the
/// cloud refusing this node's credential included), is a 502.
fn cloud_failure(e: CloudError, what: &str) -> Response<Full> {
    match e {
        CloudError::Unreachable(_) | CloudError::Timeout(_) => error(
            StatusCode::BAD_GATEWAY,
            "cloud-unreachable",
            &format!("cannot reach the cloud tier for {what}"),
            &e.to_string(),
        ),
        CloudError::Status {
            status,
            code: Some(ref code),
            ref body,
        } if status.is_client_error() => {
            let message = serde_json::from_str::<Value>(body)
                .ok()
                .and_then(|b| b["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("the cloud tier refused the request for {what}"));
            error(
                status,
                code,
                &format!("cloud tier: {message}"),
                &e.to_string(),
            )
        }
        e => error(
            StatusCode::BAD_GATEWAY,
            "cloud-error",
            &format!("the cloud tier did not answer with {what}"),
            &e.to_string(),
        ),
    }
}

/// Reads a request body of at most `limit` bytes.
async fn read_body(
    req: Request<RequestBody>,
    limit: usize,
) -> Result<bytes::Bytes, Response<Full>> {
    use http_body_util::BodyExt as _;
    match http_body_util::Limited::new(req.into_body(), limit)
        .collect()
        .await
    {
        Ok(body) => Ok(body.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            &format!("bodies here are limited to {limit} bytes"),
            "",
        )),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "cannot read the body",
            &e.to_string(),
        )),
    }
}

fn age_seconds(at: SystemTime) -> f64 {
    SystemTime::now()
        .duration_since(at)
        .unwrap_or_default()
        .as_secs_f64()
}

impl Admin {
    async fn handle(self, req: Request<RequestBody>) -> Response<Full> {
        let path = req.uri().path().to_owned();
        let resend = path
            .strip_prefix("/outbox/quarantine/")
            .and_then(|rest| rest.strip_suffix("/resend"));
        let review = path
            .strip_prefix("/conflicts/")
            .and_then(|rest| rest.strip_suffix("/review"));
        let purge = path == "/cache/purge";
        let allowed = match (resend, review) {
            (Some(_), _) | (_, Some(_)) => req.method() == Method::POST,
            _ if purge => req.method() == Method::POST,
            _ => req.method() == Method::GET || req.method() == Method::HEAD,
        };
        if !allowed {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "the admin API reads with GET; POST only for .../resend, .../review and /cache/purge",
                req.method().as_str(),
            );
        }
        match path.as_str() {
            "/" => return reply::ok("text/html; charset=utf-8", DASHBOARD),
            "/explorer.js" => {
                return reply::ok(
                    "application/javascript; charset=utf-8",
                    outpost_http::CONFLICT_EXPLORER_JS,
                );
            }
            _ => {}
        }
        if let Some(token) = &self.token
            && !outpost_http::bearer::authorized(req.headers(), token)
        {
            return error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong bearer token (see --admin-token)",
                &path,
            );
        }
        if let Some(id) = resend {
            return self.resend(id).await;
        }
        if purge {
            return self.purge(req).await;
        }
        if let Some(id) = review {
            let id = id.to_owned();
            return self.review(&id, req).await;
        }
        match path.as_str() {
            "/metrics" => reply::ok(metrics::CONTENT_TYPE, self.scrape()),
            "/functions" => reply::json(StatusCode::OK, self.functions()),
            "/events" => match number(&req, "limit") {
                Ok(limit) => {
                    let limit = limit.map_or(100, |l| l as usize).min(MAX_LIMIT);
                    reply::json(
                        StatusCode::OK,
                        json!({ "events": self.activity.events(limit) }),
                    )
                }
                Err(given) => bad_number(&given),
            },
            "/outbox" => reply::json(StatusCode::OK, self.outbox()),
            "/outbox/quarantine" => self.quarantine(&req),
            "/kv" => self.kv(&req),
            "/cache" => self.cache(),
            "/stores" => self.stores(),
            "/conflicts" => self.conflicts(&req).await,
            "/conflicts/stats" => self.conflict_stats(&req).await,
            "/history" => self.history(&req).await,
            _ => error(
                StatusCode::NOT_FOUND,
                "not-found",
                "no such admin endpoint",
                &path,
            ),
        }
    }

    /// Sets the gauges that are read from their sources, then renders.
    fn scrape(&self) -> String {
        let g = &self.metrics.gauges;
        g.functions.set(self.registry.len() as i64);
        let in_flight = self.admission.in_flight();
        g.instances_in_flight.set(in_flight as i64);
        g.instance_slots.set(self.admission.capacity() as i64);
        g.pool_saturation
            .set(in_flight as f64 / self.admission.capacity().max(1) as f64);
        g.admission_waiting.set(self.admission.waiting());
        g.outbox_records.set(self.storage.outbox_len() as i64);
        g.outbox_bytes.set(self.storage.outbox_bytes() as i64);
        let (groups, grouped) = self.storage.write_groups();
        g.storage_write_groups.set(groups as i64);
        g.storage_grouped_writes.set(grouped as i64);
        g.quarantined.set(self.storage.quarantined() as i64);
        let disk = self.storage.health();
        g.storage_writable.set(i64::from(disk.writable));
        g.storage_outcome_unknown.set(disk.outcome_unknown as i64);
        g.storage_refused.set(disk.refused as i64);
        g.storage_reopens.set(disk.reopens as i64);
        let oldest = self.storage.outbox_oldest().ok().flatten();
        g.outbox_oldest_age
            .set(oldest.map_or(0.0, |(_, at)| age_seconds(at)));
        if let Some((status, client)) = &self.cloud {
            let current = client.base_url();
            for url in client.replicas() {
                g.cloud_replica
                    .get_or_create(&metrics::ReplicaLabels { url: url.into() })
                    .set(i64::from(url == current));
            }
            g.cloud_failovers.set(client.failovers() as i64);
            let state = status.snapshot();
            g.replication_lag.set(status.lag().as_secs_f64());
            g.conflicts_seen.set(state.conflicts.unwrap_or(0) as i64);
            g.cloud_reachable
                .set(i64::from(state.reachable == Some(true)));
            g.replication_blocked
                .set(i64::from(state.blocked.is_some()));
        }
        self.scrape_cache();
        self.metrics.render()
    }

    /// Carries the HTTP cache's counts (kept per function by the request
    /// path) and its size into the metrics: a series per name the node
    /// has seen, so the label set is as small as the modules folder.
    fn scrape_cache(&self) {
        use crate::http_cache::Outcome;
        let Some(cache) = &self.cache else {
            return;
        };
        let m = &self.metrics.cache;
        let store = cache.store();
        // One pass over the shards: the totals are the per-function sums.
        let held = store.per_function();
        let (bytes, entries) = held
            .values()
            .fold((0, 0), |(b, e), &(fb, fe)| (b + fb, e + fe));
        m.bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        m.entries.set(i64::try_from(entries).unwrap_or(i64::MAX));
        metrics::raise(&m.evictions, store.evictions());
        for (name, stats, _) in self.activity.names() {
            let t = stats.cache.totals();
            let function = metrics::Name(Arc::from(name.as_str()));
            for (outcome, total) in [
                (Outcome::Hit, t.hits),
                (Outcome::Miss, t.misses),
                (Outcome::Stale, t.stale),
                (Outcome::Bypass, t.bypass),
            ] {
                let labels = metrics::CacheLabels {
                    function: function.clone(),
                    result: outcome.as_str(),
                };
                metrics::raise(&m.requests.get_or_create(&labels), total);
            }
            let labels = metrics::FunctionLabels { function };
            metrics::raise(&m.refreshes.get_or_create(&labels), t.refreshes);
            let held_bytes = held.get(name.as_str()).map_or(0, |&(b, _)| b);
            m.function_bytes
                .get_or_create(&labels)
                .set(i64::try_from(held_bytes).unwrap_or(i64::MAX));
        }
    }

    fn functions(&self) -> Value {
        let functions: Vec<Value> = self
            .activity
            .names()
            .into_iter()
            .map(|(name, stats, last_error)| {
                let serving = self.registry.get(&name);
                let latency = stats.latency.snapshot();
                let cache = stats.cache.totals();
                let buckets: Vec<Value> = latency
                    .cumulative()
                    .into_iter()
                    .map(|(le, count)| {
                        let le = if le.is_finite() {
                            json!(le)
                        } else {
                            json!("+Inf")
                        };
                        json!({ "le": le, "count": count })
                    })
                    .collect();
                json!({
                    "name": name,
                    "serving": serving.is_some(),
                    "version": serving.as_ref().map(|f| f.short_hash()),
                    "sha256": serving.as_ref().map(|f| &f.sha256),
                    "source": serving.as_ref().map(|f| f.origin.as_str()),
                    "loaded_at": serving.as_ref().map(|f| rfc3339(f.loaded_at)),
                    "load_ms": serving.as_ref().map(|f| f.load_time.as_millis() as u64),
                    "last_error": last_error,
                    "requests": stats.requests.load(std::sync::atomic::Ordering::Relaxed),
                    "errors": stats.errors.load(std::sync::atomic::Ordering::Relaxed),
                    "latency_seconds": {
                        "count": latency.count,
                        "sum": latency.sum_seconds,
                        "buckets": buckets,
                    },
                    "cache": {
                        // Whether the cache looks its requests up now (the
                        // node's cache on and the function's not turned off).
                        "enabled": serving.as_ref().map(|f| self.cache.is_some() && f.policy.cache.enabled),
                        "hits": cache.hits,
                        "misses": cache.misses,
                        "stale": cache.stale,
                        "bypass": cache.bypass,
                        "hit_ratio": cache.hit_ratio(),
                    },
                })
            })
            .collect();
        json!({ "functions": functions })
    }

    fn outbox(&self) -> Value {
        let oldest = self.storage.outbox_oldest().ok().flatten();
        let (cloud, lag, conflicts, last_ack) = match &self.cloud {
            Some((status, client)) => {
                let state = status.snapshot();
                (
                    json!({
                        "configured": true,
                        "url": client.base_url(),
                        "replicas": client.replicas().collect::<Vec<_>>(),
                        "failovers": client.failovers(),
                        "reachable": state.reachable,
                        "last_error": state.last_error,
                        "blocked": state.blocked.as_ref().map(|b| json!({
                            "code": b.code,
                            "message": b.message,
                        })),
                    }),
                    Some(status.lag().as_secs_f64()),
                    state.conflicts,
                    state.last_ack.map(|(through, at)| {
                        json!({
                            "through": through,
                            "at": rfc3339(at),
                            "age_seconds": age_seconds(at),
                        })
                    }),
                )
            }
            None => (
                json!({ "configured": false, "url": null, "replicas": [], "failovers": 0, "reachable": null, "last_error": null, "blocked": null }),
                None,
                None,
                None,
            ),
        };
        json!({
            "node": self.storage.node_id(),
            "epoch": self.storage.epoch(),
            "storage": crate::server::storage_json(&self.storage.health()),
            "records": self.storage.outbox_len(),
            "bytes": self.storage.outbox_bytes(),
            "quarantined": self.storage.quarantined(),
            "oldest": oldest.map(|(seq, at)| json!({ "seq": seq, "age_seconds": age_seconds(at) })),
            "last_ack": last_ack,
            "cloud": cloud,
            "replication_lag_seconds": lag,
            "conflicts_seen": conflicts,
        })
    }

    fn quarantine(&self, req: &Request<RequestBody>) -> Response<Full> {
        let (since, limit) = match (number(req, "since"), number(req, "limit")) {
            (Ok(since), Ok(limit)) => (since.unwrap_or(0), limit.unwrap_or(100) as usize),
            (Err(given), _) | (_, Err(given)) => return bad_number(&given),
        };
        match self
            .storage
            .quarantined_records(since, limit.clamp(1, MAX_LIMIT))
        {
            Ok(items) => {
                let next = items.last().map_or(since, |q| q.seq);
                let items: Vec<Value> = items
                    .into_iter()
                    .map(|q| {
                        json!({
                            "seq": q.seq,
                            "reason": q.reason,
                            "record": serde_json::from_slice::<Value>(&q.record)
                                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&q.record).into_owned())),
                        })
                    })
                    .collect();
                reply::json(StatusCode::OK, json!({ "items": items, "next": next }))
            }
            Err(e) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage",
                "cannot read the quarantine",
                &e.to_string(),
            ),
        }
    }

    async fn resend(&self, id: &str) -> Response<Full> {
        let Ok(id) = id.parse::<u64>() else {
            return bad_number(id);
        };
        match self.storage.resend_quarantined(id).await {
            Ok(Some(outpost_store::Written::Id(seq))) => {
                tracing::info!(target: "outpost::admin", quarantined = id, seq, "quarantined record put back in the outbox");
                reply::json(StatusCode::OK, json!({ "resent": id, "seq": seq }))
            }
            Ok(Some(_)) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "outbox-full",
                "the outbox is full; the record stays in quarantine",
                "",
            ),
            Ok(None) => error(
                StatusCode::NOT_FOUND,
                "not-found",
                "no quarantined record with this id",
                &id.to_string(),
            ),
            Err(e) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage",
                "cannot put the record back; it stays in quarantine",
                &e.to_string(),
            ),
        }
    }

    /// The cloud client, if this node has a cloud tier.
    fn cloud_client(&self) -> Option<&CloudClient> {
        self.cloud.as_ref().map(|(_, client)| &**client)
    }

    async fn conflicts(&self, req: &Request<RequestBody>) -> Response<Full> {
        let Some(client) = self.cloud_client() else {
            return no_cloud();
        };
        let mut pairs = match cloud_query(req, &CONFLICTS_QUERY) {
            Ok(pairs) => pairs,
            Err(bad) => return bad.reply(),
        };
        for (name, default) in [("since", "0"), ("limit", "100")] {
            if !pairs.iter().any(|(n, _)| n == name) {
                pairs.push((name.into(), default.into()));
            }
        }
        match client.conflicts_matching(&encode_query(&pairs)).await {
            Ok(body) => reply::ok("application/json", body),
            Err(e) => cloud_failure(e, "its conflicts"),
        }
    }

    async fn conflict_stats(&self, req: &Request<RequestBody>) -> Response<Full> {
        let Some(client) = self.cloud_client() else {
            return no_cloud();
        };
        let pairs = match cloud_query(req, &STATS_QUERY) {
            Ok(pairs) => pairs,
            Err(bad) => return bad.reply(),
        };
        match client.conflict_stats(&encode_query(&pairs)).await {
            Ok(body) => reply::ok("application/json", body),
            Err(e) => cloud_failure(e, "its conflict counts"),
        }
    }

    async fn history(&self, req: &Request<RequestBody>) -> Response<Full> {
        let Some(client) = self.cloud_client() else {
            return no_cloud();
        };
        let pairs = match cloud_query(req, &HISTORY_QUERY) {
            Ok(pairs) => pairs,
            Err(bad) => return bad.reply(),
        };
        for required in ["store", "key"] {
            if !pairs.iter().any(|(n, _)| n == required) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad-request",
                    "store and key are required",
                    required,
                );
            }
        }
        match client.history(&encode_query(&pairs)).await {
            Ok(body) => reply::ok("application/json", body),
            Err(e) => cloud_failure(e, "the key's history"),
        }
    }

    /// Marks conflict `id` reviewed at the cloud, as this node. The body
    /// is `{"note": "..."}`, `{}` or empty; only the note goes on.
    async fn review(&self, id: &str, req: Request<RequestBody>) -> Response<Full> {
        let Some(client) = self.cloud_client() else {
            return no_cloud();
        };
        let Ok(id) = id.parse::<u64>() else {
            return error(
                StatusCode::BAD_REQUEST,
                "bad-request",
                "a conflict id is a non-negative integer",
                id,
            );
        };
        let body = match read_body(req, MAX_REVIEW_BYTES).await {
            Ok(body) => body,
            Err(reply) => return reply,
        };
        let note = if body.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            match serde_json::from_slice::<Value>(&body) {
                Ok(Value::Object(fields))
                    if fields.keys().all(|k| k == "note")
                        && fields
                            .get("note")
                            .is_none_or(|n| n.is_string() || n.is_null()) =>
                {
                    fields
                        .get("note")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                }
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "bad-request",
                        "expected {\"note\": \"...\"}, {} or no body",
                        "",
                    );
                }
            }
        };
        let forward = match &note {
            Some(note) => json!({ "note": note }),
            None => json!({}),
        };
        match client.review_conflict(id, forward.to_string().into()).await {
            Ok(body) => {
                tracing::info!(target: "outpost::admin", conflict = id, "conflict marked reviewed at the cloud");
                reply::ok("application/json", body)
            }
            Err(e) => cloud_failure(e, "the review"),
        }
    }

    /// `GET /cache`: the cache's size and each function's counts.
    fn cache(&self) -> Response<Full> {
        let Some(cache) = &self.cache else {
            return reply::json(StatusCode::OK, json!({ "enabled": false }));
        };
        let store = cache.store();
        let held = store.per_function();
        let functions: serde_json::Map<String, Value> = self
            .activity
            .names()
            .into_iter()
            .map(|(name, stats, _)| {
                let t = stats.cache.totals();
                let (bytes, entries) = held.get(name.as_str()).copied().unwrap_or_default();
                (
                    name,
                    json!({
                        "hits": t.hits,
                        "misses": t.misses,
                        "stale": t.stale,
                        "bypass": t.bypass,
                        "refreshes": t.refreshes,
                        "hit_ratio": t.hit_ratio(),
                        "bytes": bytes,
                        "entries": entries,
                    }),
                )
            })
            .collect();
        reply::json(
            StatusCode::OK,
            json!({
                "enabled": true,
                "memory_bytes": cache.settings.memory_bytes,
                "max_object_bytes": cache.settings.max_object_bytes,
                "bytes": store.bytes(),
                "entries": store.entries(),
                "evictions": store.evictions(),
                "functions": functions,
            }),
        )
    }

    /// `POST /cache/purge` with one of `{"function"}`, `{"url"}`,
    /// `{"surrogate_key"[, "function"]}`.
    async fn purge(&self, req: Request<RequestBody>) -> Response<Full> {
        use crate::http_cache::Purge;
        let Some(cache) = &self.cache else {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "no-cache",
                "the HTTP cache is turned off on this node ([cache] enabled = false)",
                "",
            );
        };
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Body {
            function: Option<String>,
            url: Option<String>,
            surrogate_key: Option<String>,
        }
        let bytes = match http_body_util::BodyExt::collect(http_body_util::Limited::new(
            req.into_body(),
            MAX_REVIEW_BYTES,
        ))
        .await
        {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too-large",
                    "the purge body is too large",
                    "",
                );
            }
        };
        let body: Body = match serde_json::from_slice(&bytes) {
            Ok(b) => b,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad-request",
                    "give {\"function\": NAME}, {\"url\": URL} or {\"surrogate_key\": KEY[, \"function\": NAME]}",
                    &e.to_string(),
                );
            }
        };
        let purge = match body {
            Body {
                url: Some(url),
                function: None,
                surrogate_key: None,
            } => {
                match url.parse::<http::Uri>().ok().and_then(|u| {
                    let authority = u.authority()?.as_str().to_ascii_lowercase();
                    let path = u.path_and_query()?.as_str().to_owned();
                    let crate::router::Route::Function(name) = crate::router::route(u.path())
                    else {
                        return None;
                    };
                    Some(Purge::Url {
                        function: name.to_owned(),
                        target: format!("{authority}{path}"),
                    })
                }) {
                    Some(purge) => purge,
                    None => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "bad-request",
                            "url must be absolute (http://HOST[:PORT]/NAME/...) and name a function",
                            &url,
                        );
                    }
                }
            }
            Body {
                surrogate_key: Some(key),
                url: None,
                function,
            } => Purge::SurrogateKey { key, function },
            Body {
                function: Some(name),
                url: None,
                surrogate_key: None,
            } => Purge::Function(name),
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad-request",
                    "give exactly one of function, url, surrogate_key (a surrogate key may name its function)",
                    "",
                );
            }
        };
        let removed = cache.purge(&purge);
        reply::json(
            StatusCode::OK,
            json!({ "purged": removed.entries, "bytes": removed.bytes }),
        )
    }

    /// `/kv?store=S&key=K`: one key, in the listing's shape (no item when
    /// the key or the store does not exist; a tombstone is an item).
    fn kv_key(&self, store: &str, key: &str) -> Response<Full> {
        use base64::Engine as _;
        // An empty listing is an unknown (or empty) store: reading the key
        // would create the store's tree.
        let read = self
            .storage
            .list_versioned(store, None, 1)
            .and_then(|page| {
                if page.items.is_empty() {
                    Ok(None)
                } else {
                    self.storage.get_versioned(store, key)
                }
            });
        match read {
            Ok(found) => {
                let items: Vec<Value> = found
                    .into_iter()
                    .map(|stored| {
                        json!({
                            "key": key,
                            "version": stored.version,
                            "value": stored.value.map(|v| base64::engine::general_purpose::STANDARD.encode(v)),
                        })
                    })
                    .collect();
                reply::json(StatusCode::OK, json!({ "items": items, "next": null }))
            }
            Err(e) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage",
                "cannot read the store",
                &e.to_string(),
            ),
        }
    }

    /// This node's copy of a store, tombstones included (see the table).
    fn kv(&self, req: &Request<RequestBody>) -> Response<Full> {
        let query = req.uri().query().unwrap_or("");
        let param = |name: &str| {
            form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        let Some(store) = param("store") else {
            return error(
                StatusCode::BAD_REQUEST,
                "bad-request",
                "store is required",
                "",
            );
        };
        let limit = match number(req, "limit") {
            Ok(limit) => limit.map_or(100, |l| l as usize).clamp(1, MAX_LIMIT),
            Err(given) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad-request",
                    "limit must be a non-negative integer",
                    &given,
                );
            }
        };
        let after = param("after");
        use base64::Engine as _;
        if let Some(key) = param("key") {
            return self.kv_key(&store, &key);
        }
        match self.storage.list_versioned(&store, after.as_deref(), limit) {
            Ok(page) => {
                let items: Vec<Value> = page
                    .items
                    .into_iter()
                    .map(|(key, stored)| {
                        json!({
                            "key": key,
                            "version": stored.version,
                            "value": stored.value.map(|v| base64::engine::general_purpose::STANDARD.encode(v)),
                        })
                    })
                    .collect();
                reply::json(StatusCode::OK, json!({ "items": items, "next": page.next }))
            }
            Err(e) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage",
                "cannot read the store",
                &e.to_string(),
            ),
        }
    }

    /// Store ids: every store that ever replicated here, and the ones the
    /// serving functions may open that do not.
    fn stores(&self) -> Response<Full> {
        let replicated = match self.storage.replicated_stores() {
            Ok(stores) => stores,
            Err(e) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "storage",
                    "cannot read which stores replicate",
                    &e.to_string(),
                );
            }
        };
        let mut local = std::collections::BTreeSet::new();
        for function in self.registry.functions() {
            let kv = &function.policy.kv;
            local.insert(kv.own_store.clone());
            local.extend(kv.grants.iter().cloned());
        }
        for store in &replicated {
            local.remove(store);
        }
        let mut replicated = replicated;
        replicated.sort();
        reply::json(
            StatusCode::OK,
            json!({ "replicated": replicated, "local": local }),
        )
    }
}
