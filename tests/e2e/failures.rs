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

/// An SDK handler's `Err` (here an ungranted store) answers like the
/// host's errors, with an id the log line carries next to the cause; the
/// refusal's own line says which setting would grant the store.
#[test]
fn an_sdk_handler_error_answers_json_with_an_id_and_logs_the_cause() {
    let node = Node::start(&[("kv", "kvtest")]);
    let reply = node.request(
        "GET",
        "/kv/vault/sdk-open",
        &[("x-request-id", "sdk-err-1")],
        b"",
    );
    assert_eq!(reply.status, 500, "{}", reply.body);
    let doc = reply.json();
    assert_eq!(doc["error"], "handler-error");
    let id = doc["id"].as_str().expect("error id").to_owned();
    assert_eq!(id.len(), 12, "{id}");
    assert_eq!(reply.header("x-outpost-error-id"), Some(id.as_str()));
    assert!(
        !reply.body.contains("AccessDenied"),
        "no internals: {}",
        reply.body
    );
    let line = node.wait_log(&format!("ERROR.*error_id={id}"));
    assert!(line.contains("AccessDenied"), "the cause: {line}");
    assert!(
        line.contains("function=kv") && line.contains("request_id=sdk-err-1"),
        "{line}"
    );
    let denied = node.wait_log("WARN.*kv open refused");
    assert!(denied.contains("store 'vault' is not granted"), "{denied}");
    assert!(
        denied.contains("`stores` under `[kv]` in kv.toml"),
        "{denied}"
    );
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
