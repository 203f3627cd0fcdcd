//! HTTP client for the cloud tier's API (`/v1/ingest`, `/v1/feed`,
//! `/v1/conflicts`), over https (the server verified against the
//! `webpki-roots` set or a given CA) or, for development, plain http.

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use outpost_http::tls::{self, HttpsConnector, TlsError};
use outpost_wire::{Ack, FeedPage};
use std::path::Path;
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
    #[error(
        "cloud URL {0:?} is not supported: use https://HOST[:PORT] (or http:// for development)"
    )]
    BadUrl(String),
    #[error("a CA for the cloud is given, but the cloud URL {0:?} is not https://")]
    CaWithoutTls(String),
    #[error("cannot set up TLS for the cloud: {0}")]
    Tls(TlsError),
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

/// Why a request never got an answer, as one line: hyper's own error says
/// only "client error (Connect)", so the causes under it are spelled out,
/// and a failed TLS handshake (an untrusted certificate, most often) says
/// so and where the fix goes.
fn unreachable(error: &(dyn std::error::Error + 'static)) -> CloudError {
    let chain = tls::error_chain(error);
    if tls::is_tls_error(error) {
        CloudError::Unreachable(format!(
            "TLS with the cloud failed ({chain}); a cloud whose certificate is not from a public CA needs its CA given with --cloud-ca"
        ))
    } else {
        CloudError::Unreachable(chain)
    }
}

pub struct CloudClient {
    /// `https://host:port` or `http://host:port`, without a trailing slash.
    base: String,
    token: Option<String>,
    /// The token would go over plain http to another machine.
    in_clear: bool,
    http: Client<HttpsConnector, Full<Bytes>>,
}

impl CloudClient {
    /// A client of the cloud at `base` that verifies an https cloud
    /// against the `webpki-roots` set.
    pub fn new(base: &str, token: Option<String>) -> Result<Self, CloudError> {
        Self::with_ca(base, token, None)
    }

    /// A client of the cloud at `base` (`https://` or `http://`); an https
    /// cloud is verified against the certificates in the PEM file `ca`
    /// only, or without one against the `webpki-roots` set.
    /// The cloud's base URL, as given.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn with_ca(
        base: &str,
        token: Option<String>,
        ca: Option<&Path>,
    ) -> Result<Self, CloudError> {
        let base = base.trim_end_matches('/');
        let uri: http::Uri = base.parse().map_err(|_| CloudError::BadUrl(base.into()))?;
        let Some(host) = uri.host().filter(|h| !h.is_empty()) else {
            return Err(CloudError::BadUrl(base.into()));
        };
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(CloudError::BadUrl(base.into())),
        };
        if !https && ca.is_some() {
            // The operator thinks the link is verified; it would not be.
            return Err(CloudError::CaWithoutTls(base.into()));
        }
        let in_clear = !https && token.is_some() && !tls::is_loopback_host(host);
        let connector = tls::connector(
            tls::client_config(ca).map_err(CloudError::Tls)?,
            Duration::from_secs(5),
        );
        Ok(Self {
            base: base.to_owned(),
            token,
            in_clear,
            http: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// Whether the token goes in clear over a network: plain http to a
    /// host that is not this machine.
    pub fn sends_credential_in_clear(&self) -> bool {
        self.in_clear
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
                .map_err(|e| unreachable(&e))?;
            let status = response.status();
            let body = http_body_util::Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        CloudError::TooLarge
                    } else {
                        unreachable(&*e)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_https_and_http_urls_only() {
        for url in [
            "https://cloud.example.com",
            "https://127.0.0.1:9090/",
            "http://127.0.0.1:9090",
        ] {
            assert!(CloudClient::new(url, None).is_ok(), "{url}");
        }
        for url in ["ftp://cloud", "cloud:9090", "https://", "not a url"] {
            assert!(
                matches!(CloudClient::new(url, None), Err(CloudError::BadUrl(_))),
                "{url}"
            );
        }
    }

    #[test]
    fn a_ca_with_plain_http_is_refused() {
        let err = CloudClient::with_ca(
            "http://cloud.example.com",
            None,
            Some(Path::new("/nonexistent/ca.pem")),
        )
        .err()
        .unwrap();
        assert!(matches!(err, CloudError::CaWithoutTls(_)), "{err}");
        let err = CloudClient::with_ca(
            "https://cloud.example.com",
            None,
            Some(Path::new("/nonexistent/ca.pem")),
        )
        .err()
        .unwrap();
        assert!(matches!(err, CloudError::Tls(_)), "{err}");
    }

    #[test]
    fn a_token_over_plain_http_to_another_host_is_in_clear() {
        let token = || Some("t".to_owned());
        let in_clear = |url: &str, token: Option<String>| {
            CloudClient::new(url, token)
                .unwrap()
                .sends_credential_in_clear()
        };
        assert!(in_clear("http://cloud.example.com:9090", token()));
        assert!(in_clear("http://10.1.2.3", token()));
        assert!(!in_clear("http://127.0.0.1:9090", token()));
        assert!(!in_clear("http://localhost:9090", token()));
        assert!(!in_clear("http://[::1]:9090", token()));
        assert!(!in_clear("https://cloud.example.com", token()));
        assert!(!in_clear("http://cloud.example.com", None));
    }
}
