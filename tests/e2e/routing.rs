//! Routing, the host's own endpoints, and per-request isolation.

use crate::harness::Node;

#[test]
fn serves_each_function_at_its_name() {
    let node = Node::start(&[("hello", "hello"), ("greeter", "hello")]);
    for path in ["/hello", "/hello/", "/hello/deeper/path?q=1", "/greeter"] {
        let reply = node.get(path);
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.body, "Hello from Outpost!\n", "{path}");
    }
}

#[test]
fn a_finished_guests_response_carries_its_length() {
    // hello has returned by the time its response goes out, so the host
    // sends the body whole with a content-length instead of chunked. The
    // exception is a guest that yielded between setting its response and
    // returning (an epoch tick, or the OS descheduling a busy test
    // machine's thread for 10 ms): its body streams, chunked. So a few
    // requests are tried, and at least one must come whole; a host that
    // never sends a length fails every time.
    let node = Node::start(&[("hello", "hello")]);
    let mut lengths = Vec::new();
    for _ in 0..5 {
        let reply = node.get("/hello");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, "Hello from Outpost!\n");
        let length = reply.header("content-length").map(str::to_owned);
        if length.is_some() {
            assert_eq!(reply.header("transfer-encoding"), None);
        }
        lengths.push(length);
    }
    assert!(
        lengths.contains(&Some("20".to_owned())),
        "no answer carried its length: {lengths:?}"
    );
}

#[test]
fn the_benchmarks_bare_hello_answers_like_the_sdk_hello() {
    // Benchmarks put `bare-hello` (wasi:http without the SDK) beside the
    // SDK's hello; the comparison only holds if both answer the same.
    let node = Node::start(&[("hello", "hello"), ("bare", "bare-hello")]);
    let sdk = node.get("/hello");
    let bare = node.get("/bare");
    assert_eq!((bare.status, sdk.status), (200, 200));
    assert_eq!(bare.body, sdk.body);
    for name in ["content-type", "content-length"] {
        assert_eq!(bare.header(name), sdk.header(name), "{name}");
    }
}

#[test]
fn echo_round_trips_method_path_query_headers_and_body() {
    let node = Node::start(&[("echo", "echo")]);
    let reply = node.request(
        "PUT",
        "/echo/a/b?x=1&y=two",
        &[("x-test", "abc"), ("content-type", "text/plain")],
        b"payload \xe2\x9c\x93",
    );
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let doc = reply.json();
    assert_eq!(doc["method"], "PUT");
    assert_eq!(doc["path"], "/echo/a/b", "the guest sees the original path");
    assert_eq!(doc["query"], "x=1&y=two");
    assert_eq!(doc["body"], "payload ✓");
    let headers = doc["headers"].as_array().unwrap();
    assert!(
        headers.iter().any(|h| h[0] == "x-test" && h[1] == "abc"),
        "{headers:?}"
    );

    let binary: Vec<u8> = (0u8..=255).collect();
    let reply = node.request("POST", "/echo", &[], &binary);
    let hex: String = binary.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(reply.json()["body_hex"], hex.as_str());
}

/// A client may send several requests before reading any answer (HTTP/1.1
/// pipelining): each gets its own answer, in the order sent, and the
/// connection stays usable.
#[test]
fn pipelined_requests_are_answered_in_order() {
    use std::io::{Read, Write};
    let node = Node::start(&[("echo", "echo"), ("hello", "hello")]);
    let mut stream = std::net::TcpStream::connect(node.addr).unwrap();
    stream.set_read_timeout(Some(crate::harness::WAIT)).unwrap();
    let mut batch = Vec::new();
    for (i, path) in [
        "/echo/one",
        "/hello",
        "/echo/two",
        "/nowhere",
        "/echo/three",
    ]
    .iter()
    .enumerate()
    {
        let body = format!("body {i}");
        let close = if i == 4 { "connection: close\r\n" } else { "" };
        batch.extend_from_slice(
            format!(
                "POST {path} HTTP/1.1\r\nhost: x\r\n{close}content-length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    }
    stream.write_all(&batch).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer);
    let statuses: Vec<&str> = answer
        .match_indices("HTTP/1.1 ")
        .map(|(at, _)| &answer[at + 9..at + 12])
        .collect();
    assert_eq!(statuses, ["200", "200", "200", "404", "200"], "{answer}");
    let order: Vec<usize> = ["\"/echo/one\"", "Hello", "\"/echo/two\"", "\"/echo/three\""]
        .iter()
        .map(|needle| {
            answer
                .find(needle)
                .unwrap_or_else(|| panic!("no {needle}: {answer}"))
        })
        .collect();
    assert!(order.is_sorted(), "answers out of order: {answer}");
    assert!(answer.contains("\"body 4\""), "{answer}");
}

#[test]
fn unknown_paths_answer_404_with_an_error_id() {
    let node = Node::start(&[("hello", "hello")]);
    for path in [
        "/nope",
        "/nope/x",
        "/",
        "/Hello",
        "/hel%6co",
        "/_outpost/nope",
    ] {
        let reply = node.get(path);
        assert_eq!(reply.status, 404, "{path}");
        let doc = reply.json();
        assert_eq!(doc["error"], "not-found", "{path}");
        let id = doc["id"].as_str().unwrap();
        assert!(!id.is_empty());
        assert_eq!(reply.header("x-outpost-error-id"), Some(id));
    }
    let reply = node.get("/nope");
    assert!(
        reply.json()["message"].as_str().unwrap().contains("'nope'"),
        "{}",
        reply.body
    );
    // Not a name at all: what a name is, and the deployed one a different
    // case would reach.
    let message = node.get("/Hello/x").json()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("did you mean /hello?"), "{message}");
    assert!(message.contains("lowercase letters, digits"), "{message}");
    let message = node.get("/Nope").json()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!message.contains("did you mean"), "{message}");
    assert!(
        message.contains("'Nope' is not a function name"),
        "{message}"
    );
}

#[test]
fn health_answers_and_cannot_be_shadowed() {
    let node = Node::start(&[("hello", "hello"), ("_outpost", "hello")]);
    let reply = node.get("/_outpost/health");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["status"], "ok");
    assert_eq!(
        reply.json()["functions"],
        1,
        "_outpost.wasm is not a function"
    );
    node.wait_log(r"WARN.*skipping.*file=_outpost\.wasm");
    assert_eq!(node.get("/_outpost").status, 404);
    assert_eq!(node.get("/_outpost/anything").status, 404);
    assert_eq!(
        node.request("POST", "/_outpost/health", &[], b"").status,
        405
    );
}

#[test]
fn files_that_are_not_functions_are_skipped_with_a_warning() {
    let node = Node::start(&[
        ("ok-name_1", "hello"),
        ("Upper", "hello"),
        ("has space", "hello"),
        ("dot.dot", "hello"),
    ]);
    std::fs::write(node.modules_dir().join("notes.txt"), "hi").unwrap();
    assert_eq!(node.get("/ok-name_1").status, 200);
    for file in ["Upper.wasm", "has space.wasm", "dot.dot.wasm"] {
        node.wait_log(&format!("WARN.*skipping.*file={}", regex::escape(file)));
    }
    // Not a .wasm at all: said at debug only (a cargo target folder as
    // --modules would otherwise warn about every file cargo keeps there).
    node.wait_log(r"DEBUG.*skipping: not a .wasm or .toml file.*file=notes\.txt");
    assert!(node.log_matches(r"WARN.*notes\.txt").is_empty());
    assert_eq!(node.get("/_outpost/health").json()["functions"], 1);
}

#[test]
fn every_request_gets_a_fresh_instance() {
    let node = Node::start(&[("stateful", "stateful")]);
    // Built on older bindings than the host's 0.2.12: they must link.
    let imports = node.wait_log(r"component imports function=stateful");
    let oldest = regex::Regex::new(r"wasi:http/types@0\.2\.(\d+)")
        .unwrap()
        .captures(&imports)
        .map(|c| c[1].parse::<u32>().unwrap())
        .expect("stateful imports wasi:http/types");
    assert!(oldest < 12, "{imports}");
    for _ in 0..20 {
        let reply = node.get("/stateful");
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.body, "1\n",
            "a static survived from an earlier request"
        );
    }
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let url = node.url("/stateful");
            std::thread::spawn(move || {
                (0..10)
                    .map(|_| ureq::get(&url).call().unwrap().into_string().unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for thread in threads {
        for body in thread.join().unwrap() {
            assert_eq!(body, "1\n");
        }
    }
}
