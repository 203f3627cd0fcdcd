//! HTTP client for the cloud tier's API (`/v1/ingest`, `/v1/feed`,
//! `/v1/conflicts` with its stats and reviews, `/v1/history`), over https
//! (the server verified against the `webpki-roots` set or a given CA) or,
//! for development, plain http; with several cloud replicas, a request
//! that one of them fails (no connection, no answer in time, a 5xx) goes
//! to the next.

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use outpost_http::tls::{self, HttpsConnector, TlsError};
use outpost_wire::{Ack, FeedPage};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Longest a batch upload may take before it counts as failed.
const INGEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the cloud may hold a feed request open waiting for changes.
pub const FEED_WAIT: Duration = Duration::from_secs(20);
/// Largest answer read from the cloud: a feed page holds at most 8 MiB of
/// changes, or one change of the largest value (16 MiB, base64 in JSON).
/// Anything bigger is not an answer this client asked for.
pub const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// Why the cloud did not do what was asked, or a cloud setting is wrong.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    #[error(
        "cloud URL {0:?} is not supported: use https://HOST[:PORT] (or http:// for development)"
    )]
    BadUrl(String),
    #[error(
        "the cloud URL list {0:?} has an empty item: give one URL, or several separated by commas (https://a.example.com,https://b.example.com)"
    )]
    EmptyUrl(String),
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

/// One replica of the cloud tier.
struct Replica {
    /// `https://host:port` or `http://host:port`, without a trailing slash.
    base: String,
    /// Whether its last exchange got an answer; a replica that keeps failing
    /// is warned about once per outage, not once per retry.
    answering: AtomicBool,
}

/// How long an operator's read of conflicts, or a review, may take.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a windowed scan (stats, a key's history) may take: the cloud
/// runs one at a time and may first wait its turn for up to 10 s.
const SCAN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a health probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A client of the cloud tier: one or more replicas serving the same API
/// over the same database, any of which may take any request.
pub struct CloudClient {
    /// In the order given; never empty.
    replicas: Vec<Replica>,
    /// The replica a request goes to first: the one that last answered.
    /// Requests stay on it until it fails, so they do not wander between
    /// replicas that all work.
    current: AtomicUsize,
    /// Times a failure moved requests to the next replica, since start.
    failovers: AtomicU64,
    token: Option<String>,
    /// The token would go over plain http to another machine.
    in_clear: bool,
    http: Client<HttpsConnector, Full<Bytes>>,
}

/// The items of a comma-separated list of cloud URLs, trimmed; an empty
/// item (`a,,b`, a trailing comma, an empty list) is an error rather than
/// skipped, as it is most likely a mistake in a script or template.
fn split_urls(list: &str) -> Result<Vec<&str>, CloudError> {
    let items: Vec<&str> = list.split(',').map(str::trim).collect();
    if items.iter().any(|item| item.is_empty()) {
        return Err(CloudError::EmptyUrl(list.to_owned()));
    }
    Ok(items)
}

/// Whether `error` says this replica is failing (so another may serve the
/// request), rather than giving the cloud's verdict on it: a 4xx (401
/// included) would be the same at every replica of one database.
fn fails_over(error: &CloudError) -> bool {
    match error {
        CloudError::Unreachable(_) | CloudError::Timeout(_) => true,
        CloudError::Status { status, .. } => status.is_server_error(),
        _ => false,
    }
}

impl CloudClient {
    /// A client of the cloud at `urls` (one URL or several, separated by
    /// commas) that verifies an https cloud against the `webpki-roots` set.
    pub fn new(urls: &str, token: Option<String>) -> Result<Self, CloudError> {
        Self::with_ca(urls, token, None)
    }

    /// A client of the cloud at `urls`: one base URL or several separated
    /// by commas, each `https://` or `http://`; an https cloud is verified
    /// against the certificates in the PEM file `ca` only, or without one
    /// against the `webpki-roots` set.
    pub fn with_ca(
        urls: &str,
        token: Option<String>,
        ca: Option<&Path>,
    ) -> Result<Self, CloudError> {
        let mut replicas = Vec::new();
        let mut in_clear = false;
        for base in split_urls(urls)? {
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
            // Any one such replica exposes the token: requests may go to each.
            in_clear |= !https && token.is_some() && !tls::is_loopback_host(host);
            replicas.push(Replica {
                base: base.to_owned(),
                answering: AtomicBool::new(true),
            });
        }
        let connector = tls::connector(
            tls::client_config(ca).map_err(CloudError::Tls)?,
            Duration::from_secs(5),
        );
        Ok(Self {
            replicas,
            current: AtomicUsize::new(0),
            failovers: AtomicU64::new(0),
            token,
            in_clear,
            http: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// The base URL of the replica requests go to now.
    pub fn base_url(&self) -> &str {
        &self.replicas[self.current_index()].base
    }

    /// Every replica's base URL, in the order given.
    pub fn replicas(&self) -> impl Iterator<Item = &str> {
        self.replicas.iter().map(|r| r.base.as_str())
    }

    /// Times a failing replica made requests move to the next, since start.
    pub fn failovers(&self) -> u64 {
        self.failovers.load(Ordering::Relaxed)
    }

    fn current_index(&self) -> usize {
        self.current.load(Ordering::Relaxed) % self.replicas.len()
    }

    /// Whether the token goes in clear over a network: plain http to a
    /// host that is not this machine.
    pub fn sends_credential_in_clear(&self) -> bool {
        self.in_clear
    }

    /// One request, to the current replica and, while replicas fail (see
    /// [`fails_over`]), to the next, each at most once; the last error if
    /// none answered. Sending a batch again elsewhere is safe: the cloud
    /// applies each (epoch, sequence) once, whichever replica gets it.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, CloudError> {
        let count = self.replicas.len();
        let first = self.current_index();
        let mut last_error = None;
        for step in 0..count {
            let index = (first + step) % count;
            let replica = &self.replicas[index];
            let result = self
                .call_one(&replica.base, method.clone(), path, body.clone(), timeout)
                .await;
            let error = match result {
                Err(error) if fails_over(&error) => error,
                answered => {
                    if !replica.answering.swap(true, Ordering::Relaxed) {
                        tracing::info!(target: "outpost::replication", replica = %replica.base, "cloud replica answers again");
                    }
                    return answered;
                }
            };
            if count > 1 {
                let next = &self.replicas[(index + 1) % count].base;
                // Only the first of concurrent failures at this replica
                // moves on: a second would skip the next replica unasked.
                if self
                    .current
                    .compare_exchange(
                        index,
                        (index + 1) % count,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    )
                    .is_ok()
                {
                    self.failovers.fetch_add(1, Ordering::Relaxed);
                }
                if replica.answering.swap(false, Ordering::Relaxed) {
                    tracing::warn!(target: "outpost::replication", replica = %replica.base, next = %next, error = %error, "cloud replica failed; moving to the next");
                } else {
                    tracing::debug!(target: "outpost::replication", replica = %replica.base, next = %next, error = %error, "cloud replica still failing");
                }
            }
            last_error = Some(error);
        }
        Err(last_error.expect("a client has at least one replica"))
    }

    /// One exchange with the replica at `base`.
    async fn call_one(
        &self,
        base: &str,
        method: Method,
        path: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, CloudError> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{base}{path}"))
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

    /// Whether a replica answers its health endpoint with 200 within
    /// [`PROBE_TIMEOUT`]: the current one first, then each other once.
    pub async fn healthy(&self) -> bool {
        self.call(Method::GET, "/_outpost/health", Bytes::new(), PROBE_TIMEOUT)
            .await
            .is_ok()
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

    /// A page of recorded conflicts matching `query` (an encoded query
    /// string: `since`, `limit` and the cloud's filters), as the cloud's
    /// JSON.
    pub async fn conflicts_matching(&self, query: &str) -> Result<Bytes, CloudError> {
        let path = format!("/v1/conflicts?{query}");
        self.call(Method::GET, &path, Bytes::new(), READ_TIMEOUT)
            .await
    }

    /// Counts of the conflicts matching `query` (per store, per node
    /// pair, over time), as the cloud's JSON.
    pub async fn conflict_stats(&self, query: &str) -> Result<Bytes, CloudError> {
        let path = format!("/v1/conflicts/stats?{query}");
        self.call(Method::GET, &path, Bytes::new(), SCAN_TIMEOUT)
            .await
    }

    /// Marks conflict `id` reviewed with this node's credential (a node
    /// credential's review is recorded as `node:<id>`); `body` is
    /// `{"note": ...}` or `{}`. The cloud's JSON answer (the first review
    /// stands).
    pub async fn review_conflict(&self, id: u64, body: Bytes) -> Result<Bytes, CloudError> {
        let path = format!("/v1/conflicts/{id}/review");
        self.call(Method::POST, &path, body, READ_TIMEOUT).await
    }

    /// One key's history at the cloud (`query`: `store`, `key`, `limit`):
    /// its versions, the writes it lost, as the cloud's JSON.
    pub async fn history(&self, query: &str) -> Result<Bytes, CloudError> {
        let path = format!("/v1/history?{query}");
        self.call(Method::GET, &path, Bytes::new(), SCAN_TIMEOUT)
            .await
    }

    /// Changes after `since`, waiting up to [`FEED_WAIT`] for some to arrive
    /// (`wait`: false answers at once, even with none).
    pub async fn feed(&self, since: u64, limit: usize, wait: bool) -> Result<FeedPage, CloudError> {
        let wait = if wait { FEED_WAIT } else { Duration::ZERO };
        let path = format!(
            "/v1/feed?since={since}&limit={limit}&wait={}",
            wait.as_secs()
        );
        let body = self
            .call(Method::GET, &path, Bytes::new(), wait + INGEST_TIMEOUT)
            .await?;
        serde_json::from_slice(&body).map_err(|e| CloudError::Decode(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

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

    #[test]
    fn a_token_sent_in_clear_to_any_replica_counts() {
        let in_clear = |urls: &str| {
            CloudClient::new(urls, Some("t".to_owned()))
                .unwrap()
                .sends_credential_in_clear()
        };
        assert!(in_clear("http://127.0.0.1:9090,http://cloud.example.com"));
        assert!(in_clear("https://a.example.com,http://10.1.2.3"));
        assert!(!in_clear("http://127.0.0.1:9090,https://cloud.example.com"));
    }

    #[test]
    fn a_list_is_split_on_commas_trimmed_and_starts_at_the_first() {
        let client = CloudClient::new(
            " https://a.example.com/ ,http://127.0.0.1:9090,https://b.example.com:8443",
            None,
        )
        .unwrap();
        assert_eq!(
            client.replicas().collect::<Vec<_>>(),
            [
                "https://a.example.com",
                "http://127.0.0.1:9090",
                "https://b.example.com:8443"
            ]
        );
        assert_eq!(client.base_url(), "https://a.example.com");
        assert_eq!(client.failovers(), 0);
    }

    #[test]
    fn an_empty_item_in_the_list_is_refused_by_name() {
        for urls in [
            "",
            " ",
            ",",
            "https://a.example.com,",
            ",https://a.example.com",
            "https://a.example.com,,https://b.example.com",
            "https://a.example.com, ,https://b.example.com",
        ] {
            let err = CloudClient::new(urls, None).err().unwrap();
            assert!(matches!(err, CloudError::EmptyUrl(_)), "{urls:?}: {err}");
            assert!(err.to_string().contains("empty item"), "{err}");
        }
    }

    #[test]
    fn one_bad_url_in_the_list_is_refused_by_name() {
        let err = CloudClient::new("https://a.example.com,ftp://b", None)
            .err()
            .unwrap();
        assert!(
            matches!(&err, CloudError::BadUrl(url) if url == "ftp://b"),
            "{err}"
        );
    }

    #[test]
    fn a_ca_with_any_plain_http_replica_is_refused() {
        let err = CloudClient::with_ca(
            "https://a.example.com,http://b.example.com",
            None,
            Some(Path::new("/nonexistent/ca.pem")),
        )
        .err()
        .unwrap();
        assert!(
            matches!(&err, CloudError::CaWithoutTls(url) if url == "http://b.example.com"),
            "{err}"
        );
    }

    #[test]
    fn no_answer_and_5xx_fail_over_and_the_clouds_verdicts_do_not() {
        let status = |status: u16| CloudError::Status {
            status: StatusCode::from_u16(status).unwrap(),
            code: None,
            body: String::new(),
        };
        for error in [
            CloudError::Unreachable("connection refused".into()),
            CloudError::Timeout(Duration::from_secs(1)),
            status(500),
            status(502),
            status(503),
            status(504),
        ] {
            assert!(fails_over(&error), "{error}");
        }
        for error in [
            CloudError::Unauthorized,
            status(400),
            status(403),
            status(404),
            status(409),
            status(413),
            status(429),
            CloudError::TooLarge,
            CloudError::Decode("x".into()),
        ] {
            assert!(!fails_over(&error), "{error}");
        }
    }

    /// A stand-in replica on a real socket: answers every request with
    /// `status` (or, with `None`, never answers), counting requests.
    async fn replica(status: Option<u16>) -> (String, Arc<AtomicUsize>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let counted = counted.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                    let Some(status) = status else {
                        // Hold the connection open, silent, until the client gives up.
                        let _ = stream.read(&mut byte).await;
                        return;
                    };
                    let body = r#"{"items":[]}"#;
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(reply.as_bytes()).await;
                });
            }
        });
        (url, requests)
    }

    /// A loopback URL nothing listens on.
    fn dead_url() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    }

    async fn get(client: &CloudClient, timeout: Duration) -> Result<Bytes, CloudError> {
        client
            .call(Method::GET, "/v1/conflicts", Bytes::new(), timeout)
            .await
    }

    /// A timeout no stand-in replica that answers comes near.
    const LONG: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn a_refused_connection_moves_to_the_next_replica_and_stays_there() {
        let (live, requests) = replica(Some(200)).await;
        let client = CloudClient::new(&format!("{},{live}", dead_url()), None).unwrap();
        get(&client, LONG).await.unwrap();
        assert_eq!(client.base_url(), live);
        assert_eq!(client.failovers(), 1);
        get(&client, LONG).await.unwrap();
        assert_eq!(requests.load(Ordering::SeqCst), 2);
        assert_eq!(client.failovers(), 1, "the working replica stays current");
    }

    #[tokio::test]
    async fn a_5xx_moves_to_the_next_replica() {
        let (unwell, _) = replica(Some(503)).await;
        let (live, requests) = replica(Some(200)).await;
        let client = CloudClient::new(&format!("{unwell},{live}"), None).unwrap();
        get(&client, LONG).await.unwrap();
        assert_eq!(client.base_url(), live);
        assert_eq!(requests.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_replica_that_does_not_answer_in_time_is_passed_over() {
        let (silent, _) = replica(None).await;
        let (live, _) = replica(Some(200)).await;
        let client = CloudClient::new(&format!("{silent},{live}"), None).unwrap();
        // Long enough for the answering replica on a loaded machine: the
        // timeout is per replica.
        get(&client, Duration::from_secs(5)).await.unwrap();
        assert_eq!(client.base_url(), live);
    }

    #[tokio::test]
    async fn a_4xx_or_401_is_the_clouds_verdict_and_does_not_fail_over() {
        for (status, unauthorized) in [(400, false), (409, false), (401, true)] {
            let (refusing, _) = replica(Some(status)).await;
            let (other, requests) = replica(Some(200)).await;
            let client = CloudClient::new(&format!("{refusing},{other}"), None).unwrap();
            let err = get(&client, LONG).await.unwrap_err();
            if unauthorized {
                assert!(matches!(err, CloudError::Unauthorized), "{err}");
            } else {
                assert!(
                    matches!(&err, CloudError::Status { status: s, .. } if s.as_u16() == status),
                    "{err}"
                );
            }
            assert_eq!(client.base_url(), refusing);
            assert_eq!(
                requests.load(Ordering::SeqCst),
                0,
                "{status} went elsewhere"
            );
        }
    }

    #[tokio::test]
    async fn when_every_replica_fails_each_is_tried_once_and_the_last_error_returned() {
        let (a, a_requests) = replica(Some(503)).await;
        let (b, b_requests) = replica(Some(502)).await;
        let client = CloudClient::new(&format!("{a},{b},{}", dead_url()), None).unwrap();
        let err = get(&client, LONG).await.unwrap_err();
        assert!(matches!(err, CloudError::Unreachable(_)), "{err}");
        assert_eq!(a_requests.load(Ordering::SeqCst), 1);
        assert_eq!(b_requests.load(Ordering::SeqCst), 1);
        // Round the list once: the next call starts where this one did.
        assert_eq!(client.base_url(), a);
        assert_eq!(client.failovers(), 3);
    }
}
