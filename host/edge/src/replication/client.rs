//! HTTP client for the cloud tier's API (`/v1/ingest`, `/v1/feed`,
//! `/v1/conflicts`).

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use outpost_wire::{Ack, FeedPage};
use std::time::Duration;

/// Longest a batch upload may take before it counts as failed.
const INGEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the cloud may hold a feed request open waiting for changes.
pub const FEED_WAIT: Duration = Duration::from_secs(20);
/// Largest answer read from the cloud: a feed page holds at most 8 MiB of
/// changes, or one change of the largest value (16 MiB, base64 in JSON).
/// Anything bigger is not an answer this client asked for.
pub const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    #[error("cloud URL {0:?} is not supported: use http://HOST:PORT")]
    BadUrl(String),
    #[error("cannot reach the cloud: {0}")]
    Unreachable(String),
    #[error("the cloud did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the cloud refused the token (401)")]
    Unauthorized,
    #[error("the cloud answered {status}: {body}")]
    Status {
        status: StatusCode,
        /// The `error` code of an Outpost JSON error body; `None` when the
        /// answer is not one (a proxy, a load balancer), which is never
        /// taken as the cloud's verdict.
        code: Option<String>,
        body: String,
    },
    #[error("the cloud's answer is over {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    #[error("cannot decode the cloud's answer: {0}")]
    Decode(String),
}

/// The `error` field of an Outpost error body
/// (`{"error": CODE, "message": ..., "id": ...}`), if `body` is one.
fn outpost_error_code(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: String,
        #[allow(dead_code)]
        message: String,
        #[allow(dead_code)]
        id: String,
    }
    serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .map(|b| b.error)
}

pub struct CloudClient {
    /// `http://host:port`, without a trailing slash.
    base: String,
    token: Option<String>,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl CloudClient {
    pub fn new(base: &str, token: Option<String>) -> Result<Self, CloudError> {
        let base = base.trim_end_matches('/');
        let uri: http::Uri = base.parse().map_err(|_| CloudError::BadUrl(base.into()))?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(CloudError::BadUrl(base.into()));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.set_nodelay(true);
        Ok(Self {
            base: base.to_owned(),
            token,
            http: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, CloudError> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| CloudError::BadUrl(e.to_string()))?;
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| CloudError::Unreachable(format!("{e:#}")))?;
            let status = response.status();
            let body = http_body_util::Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        CloudError::TooLarge
                    } else {
                        CloudError::Unreachable(format!("{e:#}"))
                    }
                })?
                .to_bytes();
            match status {
                StatusCode::OK => Ok(body),
                StatusCode::UNAUTHORIZED => Err(CloudError::Unauthorized),
                status => Err(CloudError::Status {
                    status,
                    code: outpost_error_code(&body),
                    body: String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
                }),
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| CloudError::Timeout(timeout))?
    }

    /// Uploads a batch (already JSON) and returns the cloud's ack.
    pub async fn ingest(&self, batch: Bytes) -> Result<Ack, CloudError> {
        let body = self
            .call(Method::POST, "/v1/ingest", batch, INGEST_TIMEOUT)
            .await?;
        serde_json::from_slice(&body).map_err(|e| CloudError::Decode(e.to_string()))
    }

    /// A page of recorded conflicts, as the cloud's JSON (the admin API
    /// passes it through unchanged).
    pub async fn conflicts(&self, since: u64, limit: usize) -> Result<Bytes, CloudError> {
        let path = format!("/v1/conflicts?since={since}&limit={limit}");
        self.call(Method::GET, &path, Bytes::new(), Duration::from_secs(10))
            .await
    }

    /// Changes after `since`, waiting up to [`FEED_WAIT`] for some to arrive.
    pub async fn feed(&self, since: u64, limit: usize) -> Result<FeedPage, CloudError> {
        let path = format!(
            "/v1/feed?since={since}&limit={limit}&wait={}",
            FEED_WAIT.as_secs()
        );
        let body = self
            .call(Method::GET, &path, Bytes::new(), FEED_WAIT + INGEST_TIMEOUT)
            .await?;
        serde_json::from_slice(&body).map_err(|e| CloudError::Decode(e.to_string()))
    }
}
