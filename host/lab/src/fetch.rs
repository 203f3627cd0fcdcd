//! The lab's HTTP client: plain HTTP on loopback to its own cloud and
//! edges (their APIs, and the requests a scenario sends), one pooled
//! client, every exchange under a deadline.

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// Longest one exchange may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// An answer: status, headers, body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON, or why it is not.
    pub fn json(&self) -> Result<serde_json::Value, FetchError> {
        serde_json::from_slice(&self.body).map_err(|e| FetchError::NotJson(e.to_string()))
    }
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No answer: refused, reset or timed out.
    #[error("{url}: {why}")]
    Unreachable {
        /// What was asked.
        url: String,
        /// Why there was no answer.
        why: String,
    },
    /// The request itself was malformed (a bad header in a scenario).
    #[error("bad request: {0}")]
    Bad(String),
    /// An answer that should have been JSON.
    #[error("not JSON: {0}")]
    NotJson(String),
}

/// A pooled client for the lab's calls.
#[derive(Clone, Debug)]
pub struct Fetch {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Fetch {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        Fetch {
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }
}

impl Fetch {
    /// Sends `method url` with `headers` and `body`; any status is an
    /// answer.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(String, String)],
        body: Bytes,
    ) -> Result<Answer, FetchError> {
        let mut request = Request::builder().method(method).uri(url);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| FetchError::Bad(e.to_string()))?;
        let unreachable = |why: String| FetchError::Unreachable {
            url: url.to_owned(),
            why,
        };
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| unreachable(outpost_http::tls::error_chain(&e)))?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| unreachable(format!("no answer within {}s", TIMEOUT.as_secs())))?
    }

    /// `GET url` with a bearer `token`, as JSON; a non-2xx is an error
    /// that says what the server answered.
    pub async fn get_json(
        &self,
        url: &str,
        token: Option<&str>,
    ) -> Result<serde_json::Value, FetchError> {
        let headers: Vec<(String, String)> = token
            .map(|t| (header::AUTHORIZATION.to_string(), format!("Bearer {t}")))
            .into_iter()
            .collect();
        let answer = self.send(Method::GET, url, &headers, Bytes::new()).await?;
        if !answer.status.is_success() {
            return Err(FetchError::Unreachable {
                url: url.to_owned(),
                why: format!(
                    "answered {}: {}",
                    answer.status,
                    String::from_utf8_lossy(&answer.body)
                ),
            });
        }
        answer.json()
    }
}
