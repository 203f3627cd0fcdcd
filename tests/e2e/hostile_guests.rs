//! Guests that misbehave: each gets a clear status and an error id, and
//! the host keeps serving everyone else meanwhile.

use crate::harness::{Node, prepare, write_settings};

/// A node with the hostile guest under tight limits, and hello beside it.
fn node() -> Node {
    let dir = prepare(&[("hostile", "hostile"), ("hello", "hello")]);
    write_settings(
        &dir,
        "hostile",
        "[limits]\ntimeout-ms = 1500\nmax-memory-bytes = 33554432\nmax-response-body-bytes = 1048576\n",
    );
    Node::spawn(dir, Vec::new(), None)
}

/// Asserts `path` answers `status` with error `code`, logged under its id.
fn assert_error(node: &Node, path: &str, status: u16, code: &str) {
    let reply = node.get(path);
    assert_eq!(reply.status, status, "{path}: {}", reply.body);
    let doc = reply.json();
    assert_eq!(doc["error"], code, "{path}");
    let id = doc["id"].as_str().unwrap();
    node.wait_log(&format!("error_id={id}"));
    assert_eq!(node.get("/hello").status, 200, "others keep being served");
}

#[test]
fn an_infinite_loop_hits_the_deadline() {
    let node = node();
    let hello = node.url("/hello");
    // While the loop spins, other requests are still answered: the guest
    // yields at every epoch tick.
    let others = std::thread::spawn(move || {
        (0..20).all(|_| ureq::get(&hello).call().is_ok_and(|r| r.status() == 200))
    });
    assert_error(&node, "/hostile/loop", 504, "deadline");
    assert!(others.join().unwrap());
}

#[test]
fn a_guest_blocked_in_a_host_call_hits_the_deadline() {
    let node = node();
    assert_eq!(node.get("/hostile/sleep?ms=10").body, "woke");
    assert_error(&node, "/hostile/sleep?ms=600000", 504, "deadline");
}

#[test]
fn a_memory_bomb_hits_the_memory_limit() {
    let node = node();
    assert_error(&node, "/hostile/memory", 500, "memory-limit");
    assert_error(&node, "/hostile/memory", 500, "memory-limit");
}

#[test]
fn deep_recursion_is_a_trap() {
    let node = node();
    // Rust keeps big frames in linear memory; running out of that stack
    // ends in an out-of-bounds access.
    let reply = node.get("/hostile/recurse");
    assert_eq!(reply.status, 500, "{}", reply.body);
    assert_eq!(reply.json()["error"], "guest-trap");
    let id = reply.json()["id"].as_str().unwrap().to_string();
    let line = node.wait_log(&format!("error_id={id}"));
    assert!(line.contains("recurse"), "{line}");
    // Small frames live on the wasm stack: the engine's stack limit stops it.
    let reply = node.get("/hostile/recurse-native");
    assert_eq!(reply.status, 500, "{}", reply.body);
    let id = reply.json()["id"].as_str().unwrap().to_string();
    let line = node.wait_log(&format!("error_id={id}"));
    assert!(line.contains("call stack exhausted"), "{line}");
    assert_eq!(node.get("/hello").status, 200);
}

#[test]
fn a_body_that_streams_forever_is_cut_at_the_size_limit() {
    let node = node();
    // The response starts (200), then is cut off: the client sees an
    // incomplete body, the log says why.
    let result = ureq::get(&node.url("/hostile/stream-forever")).call();
    match result {
        Ok(response) => {
            let mut body = Vec::new();
            let read = std::io::Read::read_to_end(&mut response.into_reader(), &mut body);
            assert!(
                read.is_err() || body.len() <= 1024 * 1024,
                "{} bytes",
                body.len()
            );
        }
        Err(e) => panic!("{e}"),
    }
    node.wait_log(r"response cut off.*code=response-too-large");
    assert_eq!(node.get("/hello").status, 200);
}

#[test]
fn a_body_within_the_limit_streams_whole() {
    let node = node();
    let response = ureq::get(&node.url("/hostile/big?mib=1")).call().unwrap();
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut response.into_reader(), &mut body).unwrap();
    assert_eq!(body.len(), 1024 * 1024);
}

#[test]
fn a_stdout_flood_is_capped_per_request() {
    let node = node();
    assert_eq!(node.get("/hostile/flood?mib=8").body, "flooded");
    node.wait_log(r"guest output over the per-request budget was dropped.*function=hostile");
    let logged = node.log_matches(r"stream=stdout").len();
    // 64 KiB of 1 KiB lines, not 8 MiB of them.
    assert!(logged <= 70, "{logged} lines logged");
    assert_eq!(node.get("/hello").status, 200);
}
