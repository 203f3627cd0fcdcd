//! Guest failures: each answers with a status and an error id that names a
//! log line, and the host keeps serving.

use crate::harness::Node;

/// Asserts `path` fails with `status` and `code`, and that the log carries
/// the returned error id; returns that log line.
fn assert_fails(node: &Node, path: &str, status: u16, code: &str) -> String {
    let reply = node.get(path);
    assert_eq!(reply.status, status, "{path}: {}", reply.body);
    let doc = reply.json();
    assert_eq!(doc["error"], code, "{path}");
    let id = doc["id"].as_str().expect("error id").to_string();
    assert_eq!(reply.header("x-outpost-error-id"), Some(id.as_str()));
    node.wait_log(&format!("ERROR.*error_id={id}"))
}

#[test]
fn traps_answer_500_and_the_next_request_succeeds() {
    let node = Node::start(&[("trap", "trap")]);
    let line = assert_fails(&node, "/trap/panic", 500, "guest-trap");
    assert!(line.contains("function=trap"), "{line}");
    // The cause on the line, the stack compact and named for the function.
    assert!(line.contains("detail=wasm trap"), "{line}");
    assert!(line.contains("backtrace=trap!abort < trap!"), "{line}");
    assert!(!line.contains(".wasm!") && !line.contains("std["), "{line}");
    // The panic message reaches the log through the guest's stderr: one
    // WARN record with the message and where it panicked.
    let panic = node.wait_log(r"WARN.*guest panicked: trap guest panics on request");
    assert!(panic.contains("function=trap"), "{panic}");
    assert!(
        panic.contains("at=tests/guests/trap/src/lib.rs:"),
        "{panic}"
    );
    assert!(panic.contains("stream=stderr"), "{panic}");
    assert_eq!(node.get("/trap/ok").body, "ok\n");

    let line = assert_fails(&node, "/trap/unreachable", 500, "guest-trap");
    assert!(line.contains("unreachable"), "{line}");
    assert_eq!(node.get("/trap/ok").body, "ok\n");
}

#[test]
fn a_handler_that_never_responds_answers_500() {
    let node = Node::start(&[("trap", "trap")]);
    assert_fails(&node, "/trap/no-response", 500, "no-response");
    assert_fails(&node, "/trap/error-code", 500, "guest-error");
    assert_eq!(node.get("/trap/ok").status, 200);
}

#[test]
fn many_failures_in_a_row_do_not_wear_the_host_down() {
    let node = Node::start(&[("trap", "trap"), ("hello", "hello")]);
    for _ in 0..50 {
        assert_eq!(node.get("/trap/panic").status, 500);
        assert_eq!(node.get("/hello").status, 200);
    }
}
