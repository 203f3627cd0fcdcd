//! The admin listener, apart from the public port: Prometheus metrics, the
//! JSON admin API and the live dashboard, behind an optional bearer token.
//!
//! | Path | What |
//! |---|---|
//! | `GET /` | the dashboard (static; it calls the API with the token from `#token=`) |
//! | `GET /metrics` | Prometheus (OpenMetrics text) |
//! | `GET /functions` | every function: version, source, load error, request counts, latency |
//! | `GET /events?limit=N` | recent loads, reloads, removals and failures, newest first |
//! | `GET /outbox` | outbox depth and age, epoch, last ack, cloud link (the replica in use, all replicas, blocked or not), replication lag |
//! | `GET /outbox/quarantine?since=I&limit=N` | records the cloud refused for good, with its reason |
//! | `POST /outbox/quarantine/ID/resend` | put a quarantined record back in the outbox (new sequence number) |
//! | `GET /conflicts?since=I&limit=N` | the cloud tier's conflicts, passed through |

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

/// Most items one `/events` or `/conflicts` read returns.
const MAX_LIMIT: usize = 1000;

/// Everything the admin listener reads; the one thing it changes is a
/// re-send of a quarantined record.
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

fn age_seconds(at: SystemTime) -> f64 {
    SystemTime::now()
        .duration_since(at)
        .unwrap_or_default()
        .as_secs_f64()
}

impl Admin {
    async fn handle(self, req: Request<RequestBody>) -> Response<Full> {
        let path = req.uri().path();
        let resend = path
            .strip_prefix("/outbox/quarantine/")
            .and_then(|rest| rest.strip_suffix("/resend"));
        let allowed = match resend {
            Some(_) => req.method() == Method::POST,
            None => req.method() == Method::GET || req.method() == Method::HEAD,
        };
        if !allowed {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "the admin API is read-only: use GET (POST only for .../resend)",
                req.method().as_str(),
            );
        }
        if path == "/" {
            return reply::ok("text/html; charset=utf-8", DASHBOARD);
        }
        if let Some(token) = &self.token
            && !outpost_http::bearer::authorized(req.headers(), token)
        {
            return error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong bearer token (see --admin-token)",
                path,
            );
        }
        match path {
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
            _ if resend.is_some() => self.resend(resend.unwrap_or_default()).await,
            "/conflicts" => self.conflicts(&req).await,
            _ => error(
                StatusCode::NOT_FOUND,
                "not-found",
                "no such admin endpoint",
                path,
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
        self.metrics.render()
    }

    fn functions(&self) -> Value {
        let functions: Vec<Value> = self
            .activity
            .names()
            .into_iter()
            .map(|(name, stats, last_error)| {
                let serving = self.registry.get(&name);
                let latency = stats.latency.snapshot();
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

    async fn conflicts(&self, req: &Request<RequestBody>) -> Response<Full> {
        let Some((_, client)) = &self.cloud else {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "no-cloud",
                "this node has no cloud tier configured (--cloud); conflicts live there",
                "",
            );
        };
        let (since, limit) = match (number(req, "since"), number(req, "limit")) {
            (Ok(since), Ok(limit)) => (since.unwrap_or(0), limit.unwrap_or(100) as usize),
            (Err(given), _) | (_, Err(given)) => return bad_number(&given),
        };
        match client.conflicts(since, limit.clamp(1, MAX_LIMIT)).await {
            Ok(body) => reply::ok("application/json", body),
            Err(e @ (CloudError::Unreachable(_) | CloudError::Timeout(_))) => error(
                StatusCode::BAD_GATEWAY,
                "cloud-unreachable",
                "cannot reach the cloud tier for its conflicts",
                &e.to_string(),
            ),
            Err(e) => error(
                StatusCode::BAD_GATEWAY,
                "cloud-error",
                "the cloud tier did not answer with its conflicts",
                &e.to_string(),
            ),
        }
    }
}
