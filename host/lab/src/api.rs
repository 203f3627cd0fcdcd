//! The lab's HTTP API and dashboard, on loopback only (it has no
//! credentials: whoever reaches it controls the links).
//!
//! | Method, path | What |
//! |---|---|
//! | `GET /` | the dashboard: edges, links with their buttons, outboxes, convergence, the conflict explorer |
//! | `GET /explorer.js` | the conflict explorer, the same code the edge dashboard runs |
//! | `GET /api/lab` | the cloud, the edges (URLs, logs) and each link's faults and counters |
//! | `GET /api/status` | the same, plus each edge's outbox and whether it reaches the cloud |
//! | `POST /api/links/EDGE` | change a link's faults: JSON `{"cut", "latency_ms", "jitter_ms", "loss", "bandwidth", "reset"}`, absent fields unchanged |
//! | `POST /api/links/EDGE/cut`, `/heal`, `/reset` | the same for one fault |
//! | `GET /api/converged` | every outbox empty and every store equal to the cloud's, with what differs |
//! | `GET /api/conflicts...`, `GET /api/history`, `POST /api/conflicts/ID/review` | the cloud's `/v1/...` conflict explorer API, passed through with the lab's token |

use crate::Lab;
use crate::link::FaultChange;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use outpost_http::reply::{self, Full};
use outpost_http::{Handler, RequestBody};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;

const DASHBOARD: &str = include_str!("dashboard.html");
/// Largest request body the lab reads (a fault change, a review note).
const MAX_BODY: usize = 16 * 1024;

/// The lab's handler.
#[derive(Clone)]
pub struct Api {
    /// The lab it controls.
    pub lab: Arc<Lab>,
    /// Where it listens, for links in its answers.
    pub listen: SocketAddr,
}

impl Handler for Api {
    type Body = Full;

    fn call(
        &self,
        req: Request<RequestBody>,
    ) -> impl Future<Output = Response<Full>> + Send + 'static + use<> {
        let api = self.clone();
        async move { api.handle(req).await }
    }
}

impl Api {
    async fn handle(self, req: Request<RequestBody>) -> Response<Full> {
        if let Err(why) = same_machine(&req, self.listen.port()) {
            return reply::error(StatusCode::FORBIDDEN, "forbidden", &why, "");
        }
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        match (method, path.as_str()) {
            (Method::GET, "/") => reply::ok("text/html; charset=utf-8", DASHBOARD),
            (Method::GET, "/explorer.js") => reply::ok(
                "application/javascript; charset=utf-8",
                outpost_http::CONFLICT_EXPLORER_JS,
            ),
            (Method::GET, "/api/lab") => {
                reply::json(StatusCode::OK, crate::describe(&self.lab, self.listen))
            }
            (Method::GET, "/api/status") => reply::json(StatusCode::OK, self.status().await),
            (Method::GET, "/api/converged") => reply::json(
                StatusCode::OK,
                json!(crate::converge::check(&self.lab).await),
            ),
            (Method::POST, p) if p.starts_with("/api/links/") => {
                let rest = &p["/api/links/".len()..];
                let (name, action) = rest.split_once('/').unwrap_or((rest, ""));
                let name = name.to_owned();
                let change = match action {
                    "" => match read_json::<FaultChange>(req).await {
                        Ok(change) => change,
                        Err(reply) => return reply,
                    },
                    "cut" => FaultChange {
                        cut: Some(true),
                        ..FaultChange::default()
                    },
                    "heal" => FaultChange {
                        cut: Some(false),
                        ..FaultChange::default()
                    },
                    "reset" => FaultChange {
                        reset: true,
                        ..FaultChange::default()
                    },
                    other => {
                        return not_found(&format!(
                            "no link action {other:?}: use cut, heal or reset"
                        ));
                    }
                };
                self.change_link(&name, &change)
            }
            (Method::GET, p) if p.starts_with("/api/conflicts") || p == "/api/history" => {
                self.to_cloud(Method::GET, &req, Bytes::new()).await
            }
            (Method::POST, p) if p.starts_with("/api/conflicts/") && p.ends_with("/review") => {
                let uri = req.uri().clone();
                let body = match read_body(req).await {
                    Ok(body) => body,
                    Err(reply) => return reply,
                };
                self.cloud_call(Method::POST, &uri, body).await
            }
            (_, p) if p == "/" || p.starts_with("/api/") || p == "/explorer.js" => reply::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                &format!("{} {p} is not supported here", req.method()),
                "",
            ),
            (_, p) => not_found(&format!("no such page {p:?}")),
        }
    }

    fn change_link(&self, name: &str, change: &FaultChange) -> Response<Full> {
        let Some(edge) = self.lab.edge(name) else {
            let names: Vec<&str> = self
                .lab
                .edges
                .iter()
                .map(|e| e.node.name.as_str())
                .collect();
            return not_found(&format!(
                "no edge {name:?}; the lab has {}",
                names.join(", ")
            ));
        };
        match edge.link.change(change) {
            Ok(faults) => reply::json(StatusCode::OK, json!({ "edge": name, "faults": faults })),
            Err(e) => reply::error(StatusCode::BAD_REQUEST, "bad-fault", &e.to_string(), ""),
        }
    }

    async fn status(&self) -> Value {
        let mut lab = crate::describe(&self.lab, self.listen);
        let outboxes = futures_join(self.lab.edges.iter().map(|edge| {
            let fetch = self.lab.fetch.clone();
            let url = edge.node.admin.map(|a| format!("http://{a}/outbox"));
            async move {
                match url {
                    Some(url) => fetch.get_json(&url, None).await.ok(),
                    None => None,
                }
            }
        }))
        .await;
        if let Some(edges) = lab["edges"].as_array_mut() {
            for (edge, outbox) in edges.iter_mut().zip(outboxes) {
                edge["outbox"] = match outbox {
                    Some(o) => json!({
                        "records": o["records"],
                        "reachable": o["cloud"]["reachable"],
                        "lag_seconds": o["replication_lag_seconds"],
                        "last_error": o["cloud"]["last_error"],
                    }),
                    None => Value::Null,
                };
            }
        }
        lab
    }

    /// Passes a read of the conflict explorer to the cloud.
    async fn to_cloud(
        &self,
        method: Method,
        req: &Request<RequestBody>,
        body: Bytes,
    ) -> Response<Full> {
        self.cloud_call(method, req.uri(), body).await
    }

    async fn cloud_call(&self, method: Method, uri: &http::Uri, body: Bytes) -> Response<Full> {
        let rest = &uri.path()["/api".len()..];
        let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
        let url = format!("{}/v1{rest}{query}", self.lab.cloud_url());
        let headers = [
            (
                "authorization".to_owned(),
                format!("Bearer {}", self.lab.token),
            ),
            ("content-type".to_owned(), "application/json".to_owned()),
        ];
        match self.lab.fetch.send(method, &url, &headers, body).await {
            Ok(answer) => {
                let mut response = reply::json_bytes(answer.status, answer.body);
                if let Some(id) = answer.headers.get(reply::ERROR_ID_HEADER) {
                    response
                        .headers_mut()
                        .insert(reply::ERROR_ID_HEADER, id.clone());
                }
                response
            }
            Err(e) => reply::logged_error(
                StatusCode::BAD_GATEWAY,
                "cloud-unreachable",
                "the lab's cloud did not answer",
                &e.to_string(),
            ),
        }
    }
}

/// Refuses what a web page in the user's browser could send: a `Host`
/// that is not this machine's loopback name (DNS rebinding), a POST from
/// another origin or without a JSON content type (a form or `no-cors`
/// fetch cannot set one without the browser asking first).
fn same_machine(req: &Request<RequestBody>, port: u16) -> Result<(), String> {
    let header = |name: http::header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let host = header(http::header::HOST).unwrap_or_default();
    let allowed = [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ];
    if !allowed.contains(&host.to_ascii_lowercase()) {
        return Err(format!(
            "the lab answers requests for {} only, not {host:?}",
            allowed.join(", ")
        ));
    }
    if req.method() == Method::POST {
        if let Some(origin) = header(http::header::ORIGIN)
            && !origin.eq_ignore_ascii_case(&format!("http://{host}"))
        {
            return Err(format!("POST from another origin ({origin})"));
        }
        let json = header(http::header::CONTENT_TYPE)
            .is_some_and(|t| t.to_ascii_lowercase().starts_with("application/json"));
        if !json {
            return Err("a POST to the lab needs content-type: application/json".into());
        }
    }
    Ok(())
}

/// Runs `futures` at once and returns their outputs in order.
async fn futures_join<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.expect("a status read does not panic"));
    }
    out
}

fn not_found(message: &str) -> Response<Full> {
    reply::error(StatusCode::NOT_FOUND, "not-found", message, "")
}

async fn read_body(req: Request<RequestBody>) -> Result<Bytes, Response<Full>> {
    Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|_| {
            reply::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                &format!("bodies here are limited to {MAX_BODY} bytes"),
                "",
            )
        })
}

async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request<RequestBody>,
) -> Result<T, Response<Full>> {
    let body = read_body(req).await?;
    serde_json::from_slice(&body).map_err(|e| {
        reply::error(
            StatusCode::BAD_REQUEST,
            "bad-request",
            &format!("the body must be a JSON fault change: {e}"),
            "",
        )
    })
}
