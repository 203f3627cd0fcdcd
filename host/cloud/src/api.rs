//! The cloud tier's HTTP API. Everything but health needs
//! `Authorization: Bearer TOKEN`.
//!
//! | Method, path | What |
//! |---|---|
//! | `GET /_outpost/health` | 200 |
//! | `POST /v1/ingest` | apply a [`Batch`], answer an [`outpost_wire::Ack`] once durable |
//! | `GET /v1/feed?since=C&limit=N&wait=S` | accepted KV writes after cursor C, long-polling up to S seconds |
//! | `GET /v1/conflicts?since=I&limit=N` | recorded conflicts |
//! | `GET /v1/events/TOPIC?since=I&limit=N` | events of a topic |
//! | `GET /v1/kv?store=S&key=K` | the cloud's current value of a key |
//! | `GET /metrics` | Prometheus metrics |

use crate::contract::{CloudStore, CloudStoreError};
use crate::metrics::CloudMetrics;
use base64::Engine as _;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use outpost_http::Handler;
use outpost_http::reply::{self, Full};
use outpost_wire::Batch;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Largest ingest body accepted.
pub const MAX_BATCH_BYTES: usize = 32 * 1024 * 1024;
/// Most items one read returns.
const MAX_LIMIT: usize = 1000;
/// Longest a feed read may wait for changes.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// The API's handler, over any [`CloudStore`] backend.
#[derive(Clone)]
pub struct Cloud<S> {
    /// The database.
    pub store: S,
    /// The bearer token every edge and reader must present.
    pub token: Arc<str>,
    /// The tier's metrics.
    pub metrics: Arc<CloudMetrics>,
}

impl<S: CloudStore> Handler for Cloud<S> {
    type Body = Full;

    fn call(
        &self,
        req: Request<Incoming>,
    ) -> impl Future<Output = Response<Full>> + Send + 'static + use<S> {
        let cloud = self.clone();
        async move { cloud.handle(req).await }
    }
}

use reply::logged_error as error;

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
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
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "storage",
        "the cloud's database failed",
        &e.to_string(),
    )
}

impl<S: CloudStore> Cloud<S> {
    fn authorized(&self, req: &Request<Incoming>) -> bool {
        outpost_http::bearer::authorized(req.headers(), &self.token)
    }

    async fn handle(self, req: Request<Incoming>) -> Response<Full> {
        let path = req.uri().path().to_owned();
        if path == "/_outpost/health" {
            return reply::json(StatusCode::OK, serde_json::json!({ "status": "ok" }));
        }
        if !self.authorized(&req) {
            self.metrics.unauthorized.inc();
            return error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong bearer token",
                &path,
            );
        }
        match (req.method(), path.as_str()) {
            (&Method::POST, "/v1/ingest") => {
                let response = self.ingest(req).await;
                let result = match response.status() {
                    StatusCode::OK => "accepted",
                    StatusCode::BAD_REQUEST => "malformed",
                    StatusCode::PAYLOAD_TOO_LARGE => "too-large",
                    _ => "failed",
                };
                CloudMetrics::count(&self.metrics.batches, result, 1);
                response
            }
            (&Method::GET, "/metrics") => {
                match self.store.conflict_count().await {
                    Ok(n) => self.metrics.conflicts.set(n as i64),
                    Err(e) => return storage_failure(e),
                };
                reply::ok(crate::metrics::CONTENT_TYPE, self.metrics.render())
            }
            (&Method::GET, "/v1/feed") => self.feed(&req).await,
            (&Method::GET, "/v1/conflicts") => match Paging::parse(&query(&req)) {
                Ok(p) => self
                    .store
                    .conflicts(p.since, p.limit)
                    .await
                    .map_or_else(storage_failure, |page| json(&page)),
                Err(message) => error(StatusCode::BAD_REQUEST, "bad-request", &message, ""),
            },
            (&Method::GET, "/v1/kv") => {
                let params = query(&req);
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
            (&Method::GET, p) if p.starts_with("/v1/events/") => {
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

    async fn ingest(&self, req: Request<Incoming>) -> Response<Full> {
        let too_large = |detail: &str| {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                &format!("batches are limited to {MAX_BATCH_BYTES} bytes"),
                detail,
            )
        };
        // A declared length over the limit is refused before any byte is
        // read; an undeclared one is cut off by `Limited` as it streams.
        let declared = hyper::body::Body::size_hint(req.body()).lower();
        if declared > MAX_BATCH_BYTES as u64 {
            return too_large(&format!("declared {declared} bytes"));
        }
        let body = match Limited::new(req.into_body(), MAX_BATCH_BYTES)
            .collect()
            .await
        {
            Ok(body) => body.to_bytes(),
            Err(e) => {
                return if e
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    too_large("")
                } else {
                    error(
                        StatusCode::BAD_REQUEST,
                        "bad-request",
                        "cannot read the body",
                        &e.to_string(),
                    )
                };
            }
        };
        let batch: Batch = match serde_json::from_slice(&body) {
            Ok(batch) => batch,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "malformed-batch",
                    "the body is not a valid batch",
                    &e.to_string(),
                );
            }
        };
        let node = batch.node.clone();
        match self.store.ingest(batch).await {
            Ok(ack) => {
                CloudMetrics::count(&self.metrics.entries, "applied", ack.applied);
                CloudMetrics::count(&self.metrics.entries, "duplicate", ack.duplicates);
                tracing::debug!(target: "outpost::cloud::api", node = %node, applied = ack.applied, duplicates = ack.duplicates, through = ack.through, "batch ingested");
                json(&ack)
            }
            Err(e @ CloudStoreError::OutOfOrder(..)) => error(
                StatusCode::BAD_REQUEST,
                "malformed-batch",
                "entries are not in sequence order",
                &e.to_string(),
            ),
            Err(e) => storage_failure(e),
        }
    }

    async fn feed(&self, req: &Request<Incoming>) -> Response<Full> {
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
                Ok(page) if !page.changes.is_empty() => {
                    self.metrics.feed_changes.inc_by(page.changes.len() as u64);
                    return json(&page);
                }
                Ok(page) => {
                    if tokio::time::timeout_at(deadline, grew).await.is_err() {
                        return json(&page);
                    }
                }
                Err(e) => return storage_failure(e),
            }
        }
    }
}
