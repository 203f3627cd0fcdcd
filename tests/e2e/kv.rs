//! The `kv` and `queue` interfaces as a guest sees them: semantics, limits,
//! namespaces, and durability across kill -9. The `kvtest` guest exposes
//! every operation over HTTP (`/FN/STORE/OP?...`).

use crate::harness::{Cloud, Node, TOKEN, encode, eventually, free_port, prepare, write_settings};
use serde_json::{Value, json};

/// Calls `OP` on `STORE` through function `function`, returning the JSON
/// answer (`{"ok": ...}` or `{"error": ...}`).
pub(crate) fn op(
    node: &Node,
    function: &str,
    store: &str,
    op: &str,
    query: &[(&str, &str)],
    body: &[u8],
) -> Value {
    let query: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    let reply = node.request(
        "POST",
        &format!("/{function}/{store}/{op}?{}", query.join("&")),
        &[],
        body,
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

pub(crate) fn ok(v: Value) -> Value {
    v.get("ok")
        .cloned()
        .unwrap_or_else(|| panic!("expected ok, got {v}"))
}

pub(crate) fn err(v: Value) -> String {
    v.get("error")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("expected an error, got {v}"))
        .to_string()
}

#[test]
fn every_operation_behaves_as_documented() {
    let node = Node::start(&[("kv", "kvtest")]);
    let call = |o: &str, q: &[(&str, &str)], body: &[u8]| op(&node, "kv", "default", o, q, body);

    // get / set / exists / delete
    assert_eq!(ok(call("get", &[("key", "a")], b"")), Value::Null);
    assert_eq!(ok(call("exists", &[("key", "a")], b"")), json!(false));
    ok(call("set", &[("key", "a")], b"one"));
    assert_eq!(ok(call("get", &[("key", "a")], b"")), json!("one"));
    assert_eq!(ok(call("exists", &[("key", "a")], b"")), json!(true));
    ok(call("set", &[("key", "a")], b"two"));
    assert_eq!(ok(call("get", &[("key", "a")], b"")), json!("two"));
    ok(call("delete", &[("key", "a")], b""));
    assert_eq!(ok(call("get", &[("key", "a")], b"")), Value::Null);
    ok(call("delete", &[("key", "never-set")], b""));

    // increment
    assert_eq!(ok(call("incr", &[("key", "n")], b"")), json!(1));
    assert_eq!(
        ok(call("incr", &[("key", "n"), ("delta", "41")], b"")),
        json!(42)
    );
    assert_eq!(
        ok(call("incr", &[("key", "n"), ("delta", "-50")], b"")),
        json!(-8)
    );
    assert_eq!(ok(call("get", &[("key", "n")], b"")), json!("-8"));
    ok(call("set", &[("key", "word")], b"abc"));
    assert_eq!(err(call("incr", &[("key", "word")], b"")), "not-a-number");
    ok(call(
        "set",
        &[("key", "big")],
        i64::MAX.to_string().as_bytes(),
    ));
    assert_eq!(err(call("incr", &[("key", "big")], b"")), "overflow");
    assert_eq!(
        ok(call("get", &[("key", "big")], b"")),
        json!(i64::MAX.to_string()),
        "an overflowing increment changes nothing"
    );

    // compare-and-swap
    ok(call("cas", &[("key", "c"), ("absent", "1")], b"v1"));
    assert_eq!(
        err(call("cas", &[("key", "c"), ("absent", "1")], b"v2")),
        "conflict"
    );
    assert_eq!(
        err(call("cas", &[("key", "c"), ("expected", "nope")], b"v2")),
        "conflict"
    );
    assert_eq!(
        ok(call("get", &[("key", "c")], b"")),
        json!("v1"),
        "a failed CAS changes nothing"
    );
    ok(call("cas", &[("key", "c"), ("expected", "v1")], b"v2"));
    assert_eq!(ok(call("get", &[("key", "c")], b"")), json!("v2"));
    assert_eq!(
        err(call("cas", &[("key", "gone"), ("expected", "x")], b"y")),
        "conflict"
    );
}

#[test]
fn list_keys_pages_in_lexicographic_order() {
    let node = Node::start(&[("kv", "kvtest")]);
    let call = |o: &str, q: &[(&str, &str)], body: &[u8]| op(&node, "kv", "default", o, q, body);
    let mut expected = Vec::new();
    for i in (0..25).rev() {
        let key = format!("p/{i:02}");
        ok(call("set", &[("key", &key)], b"x"));
        expected.push(key);
    }
    expected.sort();
    ok(call("set", &[("key", "q/1")], b"x"));
    ok(call("set", &[("key", "o/1")], b"x"));
    ok(call("set", &[("key", "p/dead")], b"x"));
    ok(call("delete", &[("key", "p/dead")], b""));

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut query = vec![("prefix", "p/"), ("limit", "10")];
        if let Some(c) = &cursor {
            query.push(("cursor", c));
        }
        let page = ok(call("list", &query, b""));
        let keys: Vec<String> = serde_json::from_value(page["keys"].clone()).unwrap();
        assert!(keys.len() <= 10);
        seen.extend(keys);
        pages += 1;
        match page["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, expected, "every key once, in order, no deleted ones");
    let all = ok(call("list", &[("prefix", ""), ("limit", "1000")], b""));
    assert_eq!(all["keys"].as_array().unwrap().len(), 27);
}

#[test]
fn functions_see_only_their_own_store_and_granted_ones() {
    let dir = prepare(&[("a", "kvtest"), ("b", "kvtest"), ("c", "kvtest")]);
    write_settings(&dir, "a", "[kv]\nstores = [\"shared\"]\n");
    write_settings(&dir, "b", "[kv]\nstores = [\"shared\"]\n");
    let node = Node::spawn(dir, Vec::new(), None);

    ok(op(
        &node,
        "a",
        "default",
        "set",
        &[("key", "secret")],
        b"from-a",
    ));
    ok(op(
        &node,
        "b",
        "default",
        "set",
        &[("key", "secret")],
        b"from-b",
    ));
    assert_eq!(
        ok(op(&node, "a", "default", "get", &[("key", "secret")], b"")),
        json!("from-a")
    );
    assert_eq!(
        ok(op(&node, "b", "default", "get", &[("key", "secret")], b"")),
        json!("from-b")
    );
    assert_eq!(
        ok(op(&node, "c", "default", "get", &[("key", "secret")], b"")),
        Value::Null
    );

    // No name reaches another function's own store.
    for name in ["b", "@b", "default@b", "a"] {
        let e = err(op(&node, "a", name, "get", &[("key", "secret")], b""));
        assert!(e == "access-denied" || e == "no-such-store", "{name}: {e}");
    }
    assert_eq!(
        err(op(&node, "a", "b", "get", &[("key", "k")], b"")),
        "access-denied"
    );
    assert_eq!(
        err(op(&node, "a", "@b", "get", &[("key", "k")], b"")),
        "no-such-store"
    );

    // A shared store is shared only with the functions granted it.
    ok(op(&node, "a", "shared", "set", &[("key", "x")], b"1"));
    assert_eq!(
        ok(op(&node, "b", "shared", "get", &[("key", "x")], b"")),
        json!("1")
    );
    assert_eq!(
        err(op(&node, "c", "shared", "get", &[("key", "x")], b"")),
        "access-denied"
    );

    // Granting takes effect on a settings change, without a restart.
    node.write_settings("c", "[kv]\nstores = [\"shared\"]\n");
    eventually("c's new grant", || {
        let v = op(&node, "c", "shared", "get", &[("key", "x")], b"");
        (v.get("ok") == Some(&json!("1"))).then_some(())
    });
}

#[test]
fn oversized_keys_and_values_get_clear_errors() {
    let dir = prepare(&[("kv", "kvtest"), ("tight", "kvtest")]);
    write_settings(
        &dir,
        "tight",
        "[kv]\nmax-value-bytes = 10\nmax-key-bytes = 8\n",
    );
    let node = Node::spawn(dir, Vec::new(), None);

    let key_ok = "k".repeat(512);
    let key_long = "k".repeat(513);
    ok(op(&node, "kv", "default", "set", &[("key", &key_ok)], b"v"));
    assert_eq!(
        err(op(
            &node,
            "kv",
            "default",
            "set",
            &[("key", &key_long)],
            b"v"
        )),
        "invalid-key"
    );
    assert_eq!(
        err(op(
            &node,
            "kv",
            "default",
            "get",
            &[("key", &key_long)],
            b""
        )),
        "invalid-key"
    );
    assert_eq!(
        err(op(&node, "kv", "default", "set", &[("key", "")], b"v")),
        "invalid-key"
    );

    let mib = vec![b'v'; 1024 * 1024];
    ok(op(&node, "kv", "default", "set", &[("key", "big")], &mib));
    let over = vec![b'v'; 1024 * 1024 + 1];
    assert_eq!(
        err(op(&node, "kv", "default", "set", &[("key", "big")], &over)),
        "value-too-large"
    );
    assert_eq!(
        err(op(
            &node,
            "kv",
            "default",
            "cas",
            &[("key", "big"), ("absent", "1")],
            &over
        )),
        "value-too-large"
    );
    assert_eq!(
        ok(op(&node, "kv", "default", "get", &[("key", "big")], b""))
            .as_str()
            .unwrap()
            .len(),
        mib.len()
    );

    // A function's settings tighten the limits.
    ok(op(
        &node,
        "tight",
        "default",
        "set",
        &[("key", "k")],
        b"0123456789",
    ));
    assert_eq!(
        err(op(
            &node,
            "tight",
            "default",
            "set",
            &[("key", "k")],
            b"0123456789a"
        )),
        "value-too-large"
    );
    assert_eq!(
        err(op(
            &node,
            "tight",
            "default",
            "set",
            &[("key", "123456789")],
            b"v"
        )),
        "invalid-key"
    );

    // Queue payloads share the value limit; topics and keys are checked.
    let e = op(
        &node,
        "tight",
        "_",
        "enqueue",
        &[("topic", "t")],
        b"0123456789a",
    );
    assert_eq!(err(e), "payload-too-large");
    assert_eq!(
        err(op(
            &node,
            "kv",
            "_",
            "enqueue",
            &[("topic", "Bad Topic")],
            b"x"
        )),
        "invalid-topic"
    );
    let long_key = "i".repeat(257);
    assert_eq!(
        err(op(
            &node,
            "kv",
            "_",
            "enqueue",
            &[("topic", "t"), ("idem", &long_key)],
            b"x"
        )),
        "invalid-idempotency-key"
    );
}

#[test]
fn a_write_acknowledged_before_kill_9_survives_with_its_outbox_record() {
    // The cloud is not running yet, so nothing can leave the node before
    // the kill: after the restart, the write and its outbox record must
    // both be on disk, and the record must reach the cloud exactly once.
    let port = free_port();
    let cloud_url = format!("http://127.0.0.1:{port}");
    let dir = prepare(&[("kv", "kvtest")]);
    write_settings(&dir, "kv", "[kv]\nreplicated = [\"default\"]\n");
    let args = vec![
        "--cloud".to_string(),
        cloud_url,
        "--cloud-token".to_string(),
        TOKEN.to_string(),
        "--node-id".to_string(),
        "edge-a".to_string(),
    ];
    let mut node = Node::spawn(dir, args, None);
    ok(op(
        &node,
        "kv",
        "default",
        "set",
        &[("key", "durable")],
        b"yes",
    ));
    let id = ok(op(
        &node,
        "kv",
        "_",
        "enqueue",
        &[("topic", "audit")],
        b"event-1",
    ));
    node.kill();

    let node = node.restart();
    assert_eq!(
        ok(op(
            &node,
            "kv",
            "default",
            "get",
            &[("key", "durable")],
            b""
        )),
        json!("yes")
    );

    let cloud = Cloud::start_at(port);
    eventually("the write at the cloud", || {
        cloud.value("@kv", "durable").filter(|v| v == "yes")
    });
    let events = eventually("the event at the cloud", || {
        let events = cloud.events("audit");
        (!events.is_empty()).then_some(events)
    });
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["seq"], id);
    assert_eq!(events[0]["node"], "edge-a");
}

#[test]
fn idempotency_keys_deduplicate_on_the_node() {
    let node = Node::start(&[("kv", "kvtest")]);
    let first = ok(op(
        &node,
        "kv",
        "_",
        "enqueue",
        &[("topic", "orders"), ("idem", "order-1")],
        b"a",
    ));
    let again = ok(op(
        &node,
        "kv",
        "_",
        "enqueue",
        &[("topic", "orders"), ("idem", "order-1")],
        b"a",
    ));
    let other = ok(op(
        &node,
        "kv",
        "_",
        "enqueue",
        &[("topic", "orders"), ("idem", "order-2")],
        b"b",
    ));
    let other_topic = ok(op(
        &node,
        "kv",
        "_",
        "enqueue",
        &[("topic", "refunds"), ("idem", "order-1")],
        b"c",
    ));
    assert_eq!(first, again);
    assert_ne!(first, other);
    assert_ne!(first, other_topic);
}

#[test]
fn a_function_cannot_raise_the_hosts_kv_limits() {
    let dir = prepare(&[("kv", "kvtest"), ("greedy", "kvtest")]);
    write_settings(&dir, "greedy", "[kv]\nmax-value-bytes = 2097152\n");
    crate::harness::write_host_config(&dir, "[kv]\nmax-value-bytes = 1048576\n");
    let node = Node::spawn(dir, Vec::new(), None);
    node.wait_log(r"max-value-bytes = 2097152 is above the host's limit of 1048576");
    let refused = node.get("/greedy");
    assert_eq!(
        (refused.status, refused.json()["error"].as_str()),
        (503, Some("load-failed")),
        "not served with a raised limit"
    );
    // Lowering it is fine, and takes effect on the settings change.
    node.write_settings("greedy", "[kv]\nmax-value-bytes = 10\n");
    eventually("greedy served", || {
        (node.get("/greedy").status != 503).then_some(())
    });
    let v = op(
        &node,
        "greedy",
        "default",
        "set",
        &[("key", "k")],
        &[b'v'; 11],
    );
    assert_eq!(v["error"], "value-too-large", "{v}");
}
