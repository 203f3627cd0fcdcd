//! Connection deadlines against real sockets: `outpost_http::run` on
//! 127.0.0.1 with short limits, and clients that stall in each way a slow
//! or hostile one can (HTTP/2 preface only, idle keep-alive, a trickled
//! body), beside ones that must not be cut (a slow download, a steady
//! upload). Bounds on closing are generous (the machine is shared); the
//! configured limits are short. The TLS tests run the same listener with a
//! certificate made for the test: HTTP/2 and HTTP/1.1 by ALPN, a stalled
//! handshake, and the idle and body deadlines over TLS.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full as FullBody};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use outpost_http::reply::{BoxError, Full};
use outpost_http::{ConnectionLimits, Handler, RequestBody};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Sleep, sleep, timeout};

/// How long anything may take to close before a test calls it stuck.
const CLOSE_BOUND: Duration = Duration::from_secs(20);

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
const EMPTY_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

/// Chunks of `/drip`, one per [`DRIP_EVERY`].
const DRIP_CHUNKS: u32 = 12;
const DRIP_EVERY: Duration = Duration::from_millis(250);

/// What the handler saw of request bodies, in order.
type Seen = Arc<Mutex<Vec<String>>>;

#[derive(Clone)]
struct TestHandler {
    seen: Seen,
}

impl Handler for TestHandler {
    type Body = TestBody;

    fn call(
        &self,
        req: Request<RequestBody>,
    ) -> impl Future<Output = Response<TestBody>> + Send + 'static + use<> {
        let seen = self.seen.clone();
        async move {
            match req.uri().path() {
                "/drip" => Response::new(TestBody::drip()),
                "/echo" => match req.into_body().collect().await {
                    Ok(body) => {
                        let len = body.to_bytes().len();
                        seen.lock().unwrap().push(format!("read {len}"));
                        Response::new(Full::new(len.to_string()).into())
                    }
                    Err(e) => {
                        let what = if e.is_too_slow() { "too slow" } else { "error" };
                        seen.lock().unwrap().push(what.to_owned());
                        let mut response = Response::new(Full::new(e.to_string()).into());
                        *response.status_mut() = StatusCode::BAD_REQUEST;
                        response
                    }
                },
                _ => Response::new(Full::new("hello").into()),
            }
        }
    }
}

/// A response body made whole, or one dripped a chunk at a time.
enum TestBody {
    Full(Full),
    Drip { left: u32, next: Pin<Box<Sleep>> },
}

impl TestBody {
    fn drip() -> Self {
        TestBody::Drip {
            left: DRIP_CHUNKS,
            next: Box::pin(sleep(DRIP_EVERY)),
        }
    }
}

impl From<Full> for TestBody {
    fn from(full: Full) -> Self {
        TestBody::Full(full)
    }
}

impl Body for TestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            TestBody::Full(full) => Pin::new(full).poll_frame(cx),
            TestBody::Drip { left: 0, .. } => Poll::Ready(None),
            TestBody::Drip { left, next } => {
                std::task::ready!(next.as_mut().poll(cx));
                *left -= 1;
                next.as_mut()
                    .reset(tokio::time::Instant::now() + DRIP_EVERY);
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"chunk\n")))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            TestBody::Full(full) => full.is_end_stream(),
            TestBody::Drip { left, .. } => *left == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            TestBody::Full(full) => full.size_hint(),
            TestBody::Drip { .. } => SizeHint::default(),
        }
    }
}

/// A request body that sends `chunk` bytes every `every`, `count` times.
struct Trickle {
    chunk: usize,
    left: usize,
    every: Duration,
    next: Pin<Box<Sleep>>,
}

impl Trickle {
    fn new(chunk: usize, count: usize, every: Duration) -> Self {
        Self {
            chunk,
            left: count,
            every,
            next: Box::pin(sleep(every)),
        }
    }
}

impl Body for Trickle {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        std::task::ready!(self.next.as_mut().poll(cx));
        self.left -= 1;
        let every = self.every;
        self.next
            .as_mut()
            .reset(tokio::time::Instant::now() + every);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; self.chunk])))))
    }
}

type ClientBody = BoxBody<Bytes, BoxError>;

fn empty() -> ClientBody {
    Empty::new().map_err(|e| match e {}).boxed()
}

struct Server {
    addr: SocketAddr,
    seen: Seen,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(header_read_timeout: Duration, max_connections: usize) -> Server {
        Self::start_with(header_read_timeout, max_connections, None).await
    }

    async fn start_with(
        header_read_timeout: Duration,
        max_connections: usize,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Seen::default();
        let handler = TestHandler { seen: seen.clone() };
        let (stop, stopped) = oneshot::channel::<()>();
        let limits = ConnectionLimits {
            max_connections,
            header_read_timeout,
            max_header_bytes: 16 * 1024,
            grace: Duration::from_secs(10),
        };
        let task = tokio::spawn(outpost_http::run_tls(
            listener,
            handler,
            async move {
                let _ = stopped.await;
            },
            limits,
            tls,
        ));
        Server {
            addr,
            seen,
            stop: Some(stop),
            task,
        }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// An HTTP/2 connection; its task ends when the connection closes.
    async fn h2(&self) -> (SendRequest<ClientBody>, JoinHandle<()>) {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let (send, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .unwrap();
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        (send, task)
    }

    /// `GET /` over a fresh HTTP/1 connection; `None` when it failed.
    async fn get_h1(&self) -> Option<StatusCode> {
        let tcp = TcpStream::connect(self.addr).await.ok()?;
        let (mut send, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .ok()?;
        tokio::spawn(connection);
        let req = Request::get("/")
            .header("host", "test")
            .body(empty())
            .unwrap();
        let response = send.send_request(req).await.ok()?;
        Some(response.status())
    }
}

fn get(path: &str) -> Request<ClientBody> {
    Request::get(format!("http://test{path}"))
        .body(empty())
        .unwrap()
}

fn post(
    path: &str,
    body: impl Body<Data = Bytes, Error = BoxError> + Send + Sync + 'static,
) -> Request<ClientBody> {
    Request::post(format!("http://test{path}"))
        .body(body.boxed())
        .unwrap()
}

async fn text(response: Response<hyper::body::Incoming>) -> String {
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// Whether the server closed `stream` (EOF or reset) within [`CLOSE_BOUND`],
/// reading and discarding whatever it sends meanwhile.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    timeout(CLOSE_BOUND, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Whether the client's connection task ended within [`CLOSE_BOUND`].
async fn ended(connection: JoinHandle<()>) -> bool {
    timeout(CLOSE_BOUND, connection).await.is_ok()
}

#[tokio::test]
async fn preface_only_h2_connections_are_closed_and_free_their_slots() {
    let max = 8;
    let server = Server::start(Duration::from_millis(300), max).await;
    let mut attackers = Vec::new();
    for _ in 0..max {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(H2_PREFACE).await.unwrap();
        stream.write_all(EMPTY_SETTINGS).await.unwrap();
        attackers.push(stream);
    }
    for (i, stream) in attackers.iter_mut().enumerate() {
        assert!(
            closed_by_server(stream).await,
            "preface-only connection {i} still open after {CLOSE_BOUND:?}"
        );
    }
    // The slot is released just after the socket closes: allow a moment.
    let mut status = None;
    for _ in 0..100 {
        status = server.get_h1().await;
        if status.is_some() {
            break;
        }
        sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, Some(StatusCode::OK), "a real client gets in again");
}

#[tokio::test]
async fn idle_h2_connection_is_closed_after_its_last_request() {
    let server = Server::start(Duration::from_secs(1), 16).await;
    let (mut send, connection) = server.h2().await;
    for _ in 0..2 {
        let response = send.send_request(get("/")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(text(response).await, "hello");
    }
    // The client keeps its end open (and answers pings): only the server's
    // idle deadline can end this connection.
    assert!(
        ended(connection).await,
        "idle HTTP/2 connection still open after {CLOSE_BOUND:?}"
    );
    drop(send);
}

#[tokio::test]
async fn slow_streaming_response_outlives_the_idle_timeout() {
    let idle = Duration::from_millis(500);
    let server = Server::start(idle, 16).await;
    let (mut send, connection) = server.h2().await;
    let started = std::time::Instant::now();
    let response = send.send_request(get("/drip")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = text(response).await;
    assert_eq!(
        body.lines().count(),
        DRIP_CHUNKS as usize,
        "the whole slow body arrived"
    );
    assert!(
        started.elapsed() > idle * 4,
        "the body streamed for several idle timeouts"
    );
    // Once it has ended, the connection is idle like any other.
    assert!(
        ended(connection).await,
        "HTTP/2 connection still open {CLOSE_BOUND:?} after its response"
    );
}

#[tokio::test]
async fn trickled_h2_body_is_cut_with_408_and_the_connection_closed() {
    let server = Server::start(Duration::from_millis(300), 16).await;
    let (mut send, connection) = server.h2().await;
    // 1 byte per 200 ms, for far longer than the test waits.
    let req = post("/echo", Trickle::new(1, 1000, Duration::from_millis(200)));
    let response = timeout(CLOSE_BOUND, send.send_request(req))
        .await
        .expect("an answer within the bound")
        .unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    assert!(
        response
            .headers()
            .contains_key(outpost_http::reply::ERROR_ID_HEADER)
    );
    assert!(text(response).await.contains("request-timeout"));
    assert_eq!(server.seen(), ["too slow"], "the handler saw the cut");
    assert!(
        ended(connection).await,
        "connection of a too-slow client still open after {CLOSE_BOUND:?}"
    );
}

#[tokio::test]
async fn trickled_h1_body_is_cut_with_408_and_the_connection_closed() {
    let server = Server::start(Duration::from_millis(300), 16).await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    write
        .write_all(b"POST /echo HTTP/1.1\r\nhost: test\r\ncontent-length: 1000\r\n\r\n")
        .await
        .unwrap();
    let trickle = tokio::spawn(async move {
        for _ in 0..1000 {
            if write.write_all(b"x").await.is_err() {
                return;
            }
            sleep(Duration::from_millis(200)).await;
        }
    });
    let mut answer = Vec::new();
    let read_all = timeout(CLOSE_BOUND, read.read_to_end(&mut answer)).await;
    trickle.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(
        read_all.is_ok(),
        "the server closed the connection: {answer}"
    );
    assert_eq!(server.seen(), ["too slow"]);
}

#[tokio::test]
async fn steady_uploads_are_not_cut() {
    // Window 1 s, 1 KiB each: 2 KiB every 150 ms keeps well ahead.
    let server = Server::start(Duration::from_secs(1), 16).await;
    let (mut send, _connection) = server.h2().await;
    let response = send
        .send_request(post(
            "/echo",
            Trickle::new(2048, 10, Duration::from_millis(150)),
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(text(response).await, "20480");
    let big = FullBody::new(Bytes::from(vec![b'x'; 256 * 1024])).map_err(|e| match e {});
    let response = send.send_request(post("/echo", big)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(text(response).await, (256 * 1024).to_string());
    assert_eq!(server.seen(), ["read 20480", "read 262144"]);
}

#[tokio::test]
async fn silent_connection_is_closed() {
    let server = Server::start(Duration::from_millis(300), 16).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    assert!(closed_by_server(&mut stream).await);
}

#[tokio::test]
async fn shutdown_lets_a_streaming_response_finish() {
    let mut server = Server::start(Duration::from_millis(500), 16).await;
    let (mut send, _connection) = server.h2().await;
    let response = send.send_request(get("/drip")).await.unwrap();
    server.stop.take().unwrap().send(()).unwrap();
    assert_eq!(text(response).await.lines().count(), DRIP_CHUNKS as usize);
    assert!(
        timeout(CLOSE_BOUND, &mut server.task).await.is_ok(),
        "run returned once the last connection drained"
    );
}

/// A CA and a server certificate it signed for 127.0.0.1, written as PEM
/// files: what an operator hands `outpost cloud --tls-cert --tls-key`.
struct TestCerts {
    dir: tempfile::TempDir,
}

impl TestCerts {
    fn new() -> TestCerts {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        TestCerts { dir }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn server(&self) -> Arc<rustls::ServerConfig> {
        outpost_http::tls::server_config(&self.path("cert.pem"), &self.path("key.pem")).unwrap()
    }

    /// A client that trusts the test CA and offers `alpn`.
    fn client(&self, alpn: &[u8]) -> tokio_rustls::TlsConnector {
        let config = outpost_http::tls::client_config(Some(&self.path("ca.pem"))).unwrap();
        let mut config = (*config).clone();
        config.alpn_protocols = vec![alpn.to_vec()];
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}

type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

impl Server {
    async fn start_tls(
        header_read_timeout: Duration,
        max_connections: usize,
    ) -> (Server, TestCerts) {
        let certs = TestCerts::new();
        let server =
            Self::start_with(header_read_timeout, max_connections, Some(certs.server())).await;
        (server, certs)
    }

    /// A finished TLS handshake offering `alpn`.
    async fn tls(&self, certs: &TestCerts, alpn: &[u8]) -> TlsStream {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        certs.client(alpn).connect(name, tcp).await.unwrap()
    }

    /// An HTTP/2 connection over TLS (ALPN h2).
    async fn h2_tls(&self, certs: &TestCerts) -> (SendRequest<ClientBody>, JoinHandle<()>) {
        let tls = self.tls(certs, b"h2").await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (send, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        (send, task)
    }

    /// `GET /` over a fresh HTTP/1.1 TLS connection; `None` when it failed.
    async fn get_h1_tls(&self, certs: &TestCerts) -> Option<StatusCode> {
        let tcp = TcpStream::connect(self.addr).await.ok()?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let tls = certs.client(b"http/1.1").connect(name, tcp).await.ok()?;
        if tls.get_ref().1.alpn_protocol() != Some(b"http/1.1") {
            return None;
        }
        let (mut send, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .ok()?;
        tokio::spawn(connection);
        let req = Request::get("/")
            .header("host", "test")
            .body(empty())
            .unwrap();
        let response = send.send_request(req).await.ok()?;
        Some(response.status())
    }
}

#[tokio::test]
async fn tls_serves_h2_and_http1_as_alpn_settles() {
    let (server, certs) = Server::start_tls(Duration::from_secs(5), 16).await;
    let (mut send, _connection) = server.h2_tls(&certs).await;
    let response = send.send_request(get("/")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(text(response).await, "hello");
    assert_eq!(server.get_h1_tls(&certs).await, Some(StatusCode::OK));
}

#[tokio::test]
async fn stalled_tls_handshakes_are_closed_and_free_their_slots() {
    let max = 4;
    let (server, certs) = Server::start_tls(Duration::from_millis(300), max).await;
    let mut stalled = Vec::new();
    for i in 0..max {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        if i % 2 == 1 {
            // The start of a ClientHello record that never comes whole.
            stream
                .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
                .await
                .unwrap();
        }
        stalled.push(stream);
    }
    for (i, stream) in stalled.iter_mut().enumerate() {
        assert!(
            closed_by_server(stream).await,
            "stalled handshake {i} still open after {CLOSE_BOUND:?}"
        );
    }
    let mut status = None;
    for _ in 0..100 {
        status = server.get_h1_tls(&certs).await;
        if status.is_some() {
            break;
        }
        sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, Some(StatusCode::OK), "a real client gets in again");
}

#[tokio::test]
async fn plain_http_to_a_tls_listener_gets_no_http_answer() {
    let (server, _certs) = Server::start_tls(Duration::from_millis(500), 16).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = timeout(CLOSE_BOUND, stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server closed the connection");
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(server.seen().is_empty());
}

#[tokio::test]
async fn idle_tls_h2_connection_is_closed_after_its_last_request() {
    let (server, certs) = Server::start_tls(Duration::from_secs(1), 16).await;
    let (mut send, connection) = server.h2_tls(&certs).await;
    let response = send.send_request(get("/")).await.unwrap();
    assert_eq!(text(response).await, "hello");
    assert!(
        ended(connection).await,
        "idle HTTP/2 connection over TLS still open after {CLOSE_BOUND:?}"
    );
    drop(send);
}

#[tokio::test]
async fn trickled_body_over_tls_is_cut_with_408() {
    let (server, certs) = Server::start_tls(Duration::from_millis(300), 16).await;
    let (mut send, connection) = server.h2_tls(&certs).await;
    let req = post("/echo", Trickle::new(1, 1000, Duration::from_millis(200)));
    let response = timeout(CLOSE_BOUND, send.send_request(req))
        .await
        .expect("an answer within the bound")
        .unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(server.seen(), ["too slow"]);
    assert!(
        ended(connection).await,
        "connection of a too-slow TLS client still open after {CLOSE_BOUND:?}"
    );
}

#[test]
fn a_key_that_is_not_the_certificates_is_refused() {
    let certs = TestCerts::new();
    let other = rcgen::KeyPair::generate().unwrap();
    let wrong = certs.path("other-key.pem");
    std::fs::write(&wrong, other.serialize_pem()).unwrap();
    let err = outpost_http::tls::server_config(&certs.path("cert.pem"), &wrong).unwrap_err();
    assert!(
        matches!(err, outpost_http::tls::TlsError::Identity { .. }),
        "{err}"
    );
    // A certificate file where the key should be: no key in it.
    let err = outpost_http::tls::server_config(&certs.path("cert.pem"), &certs.path("cert.pem"))
        .unwrap_err();
    assert!(err.to_string().contains("private key"), "{err}");
}
