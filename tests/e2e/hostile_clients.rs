//! Clients that misbehave, over raw TCP: each gets a clear outcome and
//! none can starve the others.

use crate::harness::{Node, prepare, write_host_config};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A node with short client timeouts and a small connection limit.
fn node() -> Node {
    let dir = prepare(&[("hello", "hello"), ("hostile", "hostile")]);
    write_host_config(
        &dir,
        "header-read-timeout-ms = 1000\nmax-connections = 40\n[limits]\nmax-request-body-bytes = 1048576\n",
    );
    Node::spawn(dir, Vec::new(), None)
}

fn connect(node: &Node) -> TcpStream {
    let stream = TcpStream::connect(node.addr).unwrap();
    stream.set_read_timeout(Some(crate::harness::WAIT)).unwrap();
    stream
}

/// Sends `raw` and reads until the server closes; returns what came back.
fn exchange(node: &Node, raw: &[u8]) -> String {
    let mut stream = connect(node);
    stream.write_all(raw).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn slowloris_is_cut_off_by_the_header_timeout() {
    let node = node();
    let mut stream = connect(&node);
    stream
        .write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // Never finish the headers: the server closes the connection.
    let mut rest = Vec::new();
    let read = stream.read_to_end(&mut rest);
    assert!(read.is_ok(), "the server closed the connection: {read:?}");
    assert_eq!(node.get("/hello").status, 200);
}

#[test]
fn malformed_http_gets_400() {
    let node = node();
    let answer = exchange(&node, b"THIS IS NOT HTTP\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    let answer = exchange(
        &node,
        b"GET /hello HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    assert_eq!(node.get("/hello").status, 200);
}

#[test]
fn thousands_of_headers_or_huge_ones_get_431() {
    let node = node();
    let mut many = String::from("GET /hello HTTP/1.1\r\nHost: x\r\n");
    for i in 0..3000 {
        many.push_str(&format!("x-h{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let answer = exchange(&node, many.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.80}");

    let huge = format!(
        "GET /hello HTTP/1.1\r\nHost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let answer = exchange(&node, huge.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.80}");
    assert_eq!(node.get("/hello").status, 200);
}

#[test]
fn oversized_bodies_get_413_declared_or_chunked() {
    let node = node();
    // A declared length over the limit is refused before any body byte is
    // read. (The body is not sent: a client still writing a large body when
    // the server answers and closes may see a reset instead of the 413.)
    let answer = exchange(
        &node,
        b"POST /hostile/read-body HTTP/1.1\r\nHost: x\r\nContent-Length: 1048577\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:.80}");
    assert!(answer.contains("body-too-large"), "{answer}");

    // Without a length up front: the host counts as the guest reads.
    let mut raw = b"POST /hostile/read-body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..20 {
        raw.extend_from_slice(format!("{:x}\r\n", 64 * 1024).as_bytes());
        raw.extend_from_slice(&[b'y'; 64 * 1024]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let answer = exchange(&node, &raw);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:.80}");

    // Within the limit, the guest gets every byte.
    let reply = node.request("POST", "/hostile/read-body", &[], &vec![b'z'; 1024 * 1024]);
    assert_eq!(reply.body, "1048576 false");
}

#[test]
fn idle_connections_are_limited_and_timed_out() {
    let node = node();
    // Fill every connection slot with idle sockets.
    let idle: Vec<TcpStream> = (0..40).map(|_| connect(&node)).collect();
    std::thread::sleep(Duration::from_millis(200));
    // One more is closed at once.
    let mut extra = connect(&node);
    let _ = extra.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut answer = Vec::new();
    let _ = extra.read_to_end(&mut answer);
    assert!(answer.is_empty(), "served past the connection limit");
    node.wait_log(r"connection limit reached");
    // The idle ones are closed by the header timeout, which frees the slots.
    for mut socket in idle {
        let mut rest = Vec::new();
        let read = socket.read_to_end(&mut rest);
        assert!(read.is_ok(), "{read:?}");
    }
    let url = node.url("/hello");
    crate::harness::eventually("a free slot", || {
        ureq::get(&url)
            .call()
            .is_ok_and(|r| r.status() == 200)
            .then_some(())
    });
}

#[test]
fn a_keep_alive_connection_left_idle_is_closed() {
    let node = node();
    let mut stream = connect(&node);
    stream
        .write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Keep-alive, then silence: the header timeout closes it.
    let mut rest = Vec::new();
    let read = stream.read_to_end(&mut rest);
    assert!(read.is_ok(), "{read:?}");
}

#[test]
fn more_requests_than_instance_slots_get_503_with_retry_after() {
    let dir = prepare(&[("slow", "slow"), ("hello", "hello")]);
    write_host_config(&dir, "max-instances = 2\nqueue-timeout-ms = 200\n");
    let node = Node::spawn(dir, Vec::new(), None);
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let url = node.url("/slow?ms=3000");
            std::thread::spawn(move || ureq::get(&url).call().map(|r| r.status()).ok())
        })
        .collect();
    // Both slots are taken: the next request waits its queue time, then 503.
    let reply = crate::harness::eventually("a 503", || {
        let reply = node.get("/hello");
        (reply.status == 503).then_some(reply)
    });
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(reply.json()["error"], "overloaded");
    for request in busy {
        assert_eq!(request.join().unwrap(), Some(200));
    }
    assert_eq!(node.get("/hello").status, 200, "slots free again");
}

/// Clients that ask for a large answer and then read nothing must not make
/// the server hold those answers in memory: the guest waits on the client
/// (backpressure), and the answer arrives whole once it reads. (hyper's
/// `pipeline_flush` breaks this: it lifts the write buffer's limit on
/// every connection, so hyper pulls the whole body in.)
#[test]
fn clients_that_read_nothing_do_not_make_the_server_buffer_their_answers() {
    const MIB: u64 = 32;
    const CLIENTS: u64 = 4;
    let dir = prepare(&[("hostile", "hostile"), ("hello", "hello")]);
    // Room to stream the answer after the test has held it for seconds,
    // on a slow machine too.
    write_host_config(&dir, "[limits]\ntimeout-ms = 120000\n");
    let node = Node::spawn(dir, Vec::new(), None);
    let before = crate::harness::rss_bytes(node.pid());
    let mut streams: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| {
            let mut stream = connect(&node);
            let raw = format!(
                "GET /hostile/big?mib={MIB} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
            );
            stream.write_all(raw.as_bytes()).unwrap();
            stream
        })
        .collect();
    // Buffering the answers would take CLIENTS * MIB. Watch RSS for five
    // seconds, then until it has not risen for two.
    let mut peak = before;
    let mut last_rise = std::time::Instant::now();
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(5)
        || (last_rise.elapsed() < Duration::from_secs(2)
            && started.elapsed() < crate::harness::WAIT)
    {
        std::thread::sleep(Duration::from_millis(100));
        let now = crate::harness::rss_bytes(node.pid());
        if now > peak {
            peak = now;
            last_rise = std::time::Instant::now();
        }
    }
    let grew_mib = peak.saturating_sub(before) >> 20;
    assert!(
        grew_mib < CLIENTS * MIB / 2,
        "the server grew by {grew_mib} MiB while {CLIENTS} clients left {MIB} MiB answers unread"
    );
    let mut answer = Vec::new();
    streams[0].read_to_end(&mut answer).unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&answer[..answer.len().min(200)])
    );
    assert!(answer.len() as u64 > MIB << 20, "{} bytes", answer.len());
    drop(streams);
    assert_eq!(node.get("/hello").status, 200);
}

/// The HTTP/2 client preface and an empty SETTINGS frame: a connection
/// that speaks h2 and then asks for nothing.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// Opens `n` h2c connections to `addr` that send only the preface, and
/// checks the server closes every one of them (reads end).
fn preface_only_connections_are_closed(addr: std::net::SocketAddr, n: usize) {
    let sockets: Vec<TcpStream> = (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(crate::harness::WAIT)).unwrap();
            s.write_all(H2_PREFACE).unwrap();
            s
        })
        .collect();
    for mut socket in sockets {
        let mut rest = Vec::new();
        let read = socket.read_to_end(&mut rest);
        assert!(
            read.is_ok(),
            "an idle h2 connection was not closed: {read:?}"
        );
    }
}

#[test]
fn idle_http2_connections_cannot_lock_out_the_edge() {
    let node = node();
    // Every slot taken by h2c connections that never open a stream: they
    // are closed at the idle deadline, and real clients get in again.
    preface_only_connections_are_closed(node.addr, 40);
    let url = node.url("/hello");
    crate::harness::eventually("a request after the h2 flood", || {
        ureq::get(&url)
            .call()
            .is_ok_and(|r| r.status() == 200)
            .then_some(())
    });
}

#[test]
fn idle_http2_connections_cannot_lock_out_the_cloud() {
    let cloud = crate::harness::Cloud::start();
    preface_only_connections_are_closed(cloud.addr, 200);
    assert_eq!(cloud.get("/v1/feed").status, 200);
}

/// Sends a request whose body trickles in at one byte per 300 ms and
/// returns the answer.
fn trickle(addr: std::net::SocketAddr, head: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(crate::harness::WAIT)).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        std::thread::spawn(move || {
            for _ in 0..1000 {
                if stream.write_all(b"x").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    drop(writer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn a_body_sent_at_a_byte_a_moment_is_cut_off_with_408() {
    let node = node();
    let answer = trickle(
        node.addr,
        "POST /hostile/read-body HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:.200}");
    node.wait_log("request body too slow");
    let cloud = crate::harness::Cloud::start();
    let answer = trickle(
        cloud.addr,
        &format!(
            "POST /v1/ingest HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 100000\r\n\r\n",
            crate::harness::TOKEN
        ),
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:.200}");
    cloud.wait_log("request body too slow");
}
