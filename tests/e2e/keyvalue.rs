//! The standard `wasi:keyvalue@0.2.0-draft` interfaces as a component
//! written against them sees them: the `kvstd` guest (no Outpost SDK)
//! exposes every `store`, `atomics` and `batch` call over HTTP
//! (`/FN/BUCKET/OP?...`, BUCKET `-` for the empty identifier). Its buckets
//! are the function's Outpost stores, so `kvtest` (the SDK's kv) sees the
//! same values in a store granted to both.

use crate::harness::{Cloud, Node, TOKEN, eventually, prepare, write_settings};
use serde_json::{Value, json};

// kvstd answers as kvtest does: `/FUNCTION/BUCKET/OP`, `{"ok": ...}` or
// `{"error": ...}`.
use crate::kv::{err, ok, op};

fn keys(v: &Value) -> Vec<String> {
    serde_json::from_value(v["keys"].clone()).unwrap()
}

#[test]
fn the_standard_guest_round_trips_on_its_own_store() {
    let dir = prepare(&[("std", "kvstd")]);
    write_settings(&dir, "std", "[kv]\nmax-value-bytes = 10\n");
    let node = Node::spawn(dir, Vec::new(), None);
    let call = |b: &str, o: &str, q: &[(&str, &str)], body: &[u8]| op(&node, "std", b, o, q, body);

    assert_eq!(
        ok(call("default", "get", &[("key", "a")], b"")),
        Value::Null
    );
    assert_eq!(
        ok(call("default", "exists", &[("key", "a")], b"")),
        json!(false)
    );
    ok(call("default", "set", &[("key", "a")], b"one"));
    assert_eq!(
        ok(call("default", "get", &[("key", "a")], b"")),
        json!("one")
    );
    assert_eq!(
        ok(call("default", "exists", &[("key", "a")], b"")),
        json!(true)
    );
    // The empty identifier, the WIT's usual one, is the same store.
    assert_eq!(ok(call("-", "get", &[("key", "a")], b"")), json!("one"));
    ok(call("-", "set", &[("key", "b")], b"two"));
    assert_eq!(
        ok(call("default", "get", &[("key", "b")], b"")),
        json!("two")
    );

    let page = ok(call("default", "list", &[], b""));
    assert_eq!(keys(&page), ["a", "b"]);
    assert_eq!(page["cursor"], Value::Null, "one page: no cursor");

    ok(call("default", "delete", &[("key", "a")], b""));
    assert_eq!(
        ok(call("default", "get", &[("key", "a")], b"")),
        Value::Null
    );
    ok(call("default", "delete", &[("key", "never-set")], b""));
    assert_eq!(keys(&ok(call("default", "list", &[], b""))), ["b"]);

    // kv's limits, as `other` with kv's error name first.
    let e = err(call("default", "set", &[("key", &"k".repeat(513))], b"v"));
    assert!(e.starts_with("other: invalid-key"), "{e}");
    let e = err(call("default", "get", &[("key", "")], b""));
    assert!(e.starts_with("other: invalid-key"), "{e}");
    let e = err(call("default", "set", &[("key", "big")], b"0123456789x"));
    assert!(e.starts_with("other: value-too-large"), "{e}");
    assert!(e.contains("10 bytes"), "{e}");
    assert_eq!(
        ok(call("default", "get", &[("key", "big")], b"")),
        Value::Null
    );

    // Counted beside kv's calls, and every refusal logged for the function.
    let metrics = node.admin_get("/metrics", &[]).body;
    for series in [
        r#"outpost_kv_operations_total{op="wasi.set",result="ok"} 2"#,
        r#"outpost_kv_operations_total{op="wasi.set",result="value-too-large"} 1"#,
        r#"outpost_kv_operations_total{op="wasi.get",result="invalid-key"} 1"#,
    ] {
        assert!(metrics.contains(series), "{series} in:\n{metrics}");
    }
    node.wait_log("wasi:keyvalue call refused.*std");
}

#[test]
fn list_keys_pages_with_a_u64_cursor_within_and_across_requests() {
    let node = Node::start(&[("std", "kvstd")]);
    let call = |o: &str, q: &[(&str, &str)]| op(&node, "std", "default", o, q, b"");
    ok(call("setmany", &[("count", "1005"), ("prefix", "k")]));
    ok(call("deletemany", &[("keys", "k00003")]));
    let expected: Vec<String> = (0..1005)
        .filter(|i| *i != 3)
        .map(|i| format!("k{i:05}"))
        .collect();

    // Every page in one request (the handle remembers where it stopped).
    let all = ok(call("listall", &[]));
    assert_eq!(keys(&all), expected);
    assert_eq!(all["pages"], json!(2));

    // Page by page, each in its own request: the cursor counts keys.
    let first = ok(call("list", &[]));
    assert_eq!(keys(&first), expected[..1000]);
    assert_eq!(first["cursor"], json!(1000));
    let second = ok(call("list", &[("cursor", "1000")]));
    assert_eq!(keys(&second), expected[1000..]);
    assert_eq!(second["cursor"], Value::Null);
    let past = ok(call("list", &[("cursor", "5000")]));
    assert!(keys(&past).is_empty());
    assert_eq!(past["cursor"], Value::Null);
}

#[test]
fn a_shared_store_is_shared_with_the_sdk_guest_and_an_ungranted_one_is_refused() {
    let dir = prepare(&[("std", "kvstd"), ("kv", "kvtest")]);
    write_settings(&dir, "std", "[kv]\nstores = [\"shared\"]\n");
    write_settings(&dir, "kv", "[kv]\nstores = [\"shared\"]\n");
    let node = Node::spawn(dir, Vec::new(), None);

    ok(op(
        &node,
        "std",
        "shared",
        "set",
        &[("key", "k")],
        b"from-std",
    ));
    assert_eq!(
        ok(op(&node, "kv", "shared", "get", &[("key", "k")], b"")),
        json!("from-std")
    );
    ok(op(
        &node,
        "kv",
        "shared",
        "set",
        &[("key", "k2")],
        b"from-kv",
    ));
    assert_eq!(
        ok(op(&node, "std", "shared", "get", &[("key", "k2")], b"")),
        json!("from-kv")
    );
    assert_eq!(
        keys(&ok(op(&node, "std", "shared", "list", &[], b""))),
        ["k", "k2"]
    );

    // The own stores stay apart.
    ok(op(
        &node,
        "std",
        "default",
        "set",
        &[("key", "own")],
        b"std",
    ));
    assert_eq!(
        ok(op(&node, "kv", "default", "get", &[("key", "own")], b"")),
        Value::Null
    );

    assert_eq!(
        err(op(&node, "std", "sessions", "get", &[("key", "k")], b"")),
        "access-denied"
    );
    assert_eq!(
        err(op(&node, "std", "kv", "get", &[("key", "k")], b"")),
        "access-denied",
        "another function's name is just an ungranted shared store"
    );
    for name in ["@kv", "Bad%20Name"] {
        assert_eq!(
            err(op(&node, "std", name, "get", &[("key", "k")], b"")),
            "no-such-store",
            "{name}"
        );
    }
}

#[test]
fn increment_keeps_kvs_decimal_counter() {
    let dir = prepare(&[("std", "kvstd"), ("kv", "kvtest")]);
    write_settings(&dir, "std", "[kv]\nstores = [\"counters\"]\n");
    write_settings(&dir, "kv", "[kv]\nstores = [\"counters\"]\n");
    let node = Node::spawn(dir, Vec::new(), None);
    let std = |o: &str, q: &[(&str, &str)], body: &[u8]| op(&node, "std", "counters", o, q, body);

    assert_eq!(
        ok(std("incr", &[("key", "n"), ("delta", "5")], b"")),
        json!(5)
    );
    assert_eq!(ok(std("incr", &[("key", "n")], b"")), json!(6));
    // Stored as decimal text, as kv's increment stores it.
    assert_eq!(ok(std("get", &[("key", "n")], b"")), json!("6"));
    assert_eq!(
        ok(op(
            &node,
            "kv",
            "counters",
            "incr",
            &[("key", "n"), ("delta", "4")],
            b""
        )),
        json!(10)
    );
    assert_eq!(
        ok(std("incr", &[("key", "n"), ("delta", "0")], b"")),
        json!(10)
    );

    ok(std("set", &[("key", "word")], b"abc"));
    let e = err(std("incr", &[("key", "word")], b""));
    assert!(e.starts_with("other: not-a-number"), "{e}");
    assert_eq!(ok(std("get", &[("key", "word")], b"")), json!("abc"));

    let e = err(std(
        "incr",
        &[("key", "n"), ("delta", &u64::MAX.to_string())],
        b"",
    ));
    assert!(e.starts_with("other: overflow"), "{e}");
    ok(std(
        "set",
        &[("key", "big")],
        i64::MAX.to_string().as_bytes(),
    ));
    let e = err(std("incr", &[("key", "big")], b""));
    assert!(e.starts_with("other: overflow"), "{e}");
    assert_eq!(
        ok(std("get", &[("key", "big")], b"")),
        json!(i64::MAX.to_string()),
        "an overflowing increment changes nothing"
    );

    // kv's counters may go below 0; a u64 cannot say so.
    ok(op(
        &node,
        "kv",
        "counters",
        "incr",
        &[("key", "neg"), ("delta", "-3")],
        b"",
    ));
    let e = err(std("incr", &[("key", "neg"), ("delta", "10")], b""));
    assert!(e.starts_with("other: not-a-number"), "{e}");
    assert_eq!(ok(std("get", &[("key", "neg")], b"")), json!("-3"));
}

#[test]
fn batch_operations_get_set_and_delete_many() {
    let node = Node::start(&[("std", "kvstd")]);
    let call = |o: &str, q: &[(&str, &str)], body: &[u8]| op(&node, "std", "default", o, q, body);

    ok(call("setmany", &[], br#"{"a": "1", "b": "2", "c": "3"}"#));
    assert_eq!(
        ok(call("getmany", &[("keys", "a,b,x,c")], b"")),
        json!([["a", "1"], ["b", "2"], null, ["c", "3"]])
    );
    ok(call("deletemany", &[("keys", "a,x,c")], b""));
    assert_eq!(
        ok(call("getmany", &[("keys", "a,b,c")], b"")),
        json!([null, ["b", "2"], null])
    );

    // A bad key anywhere refuses the whole batch before anything is written.
    let e = err(call("setmany", &[], br#"{"d": "4", "": "bad"}"#));
    assert!(e.starts_with("other: invalid-key"), "{e}");
    assert_eq!(ok(call("get", &[("key", "d")], b"")), Value::Null);
    let e = err(call("getmany", &[("keys", "b,")], b""));
    assert!(e.starts_with("other: invalid-key"), "{e}");
    let e = err(call("deletemany", &[("keys", "b,")], b""));
    assert!(e.starts_with("other: invalid-key"), "{e}");
    assert_eq!(ok(call("get", &[("key", "b")], b"")), json!("2"));
}

#[test]
fn writes_acknowledged_before_kill_9_survive() {
    let mut node = Node::start(&[("std", "kvstd")]);
    let call = |node: &Node, o: &str, q: &[(&str, &str)], body: &[u8]| {
        op(node, "std", "default", o, q, body)
    };
    ok(call(&node, "set", &[("key", "durable")], b"yes"));
    ok(call(&node, "incr", &[("key", "n"), ("delta", "7")], b""));
    ok(call(&node, "setmany", &[], br#"{"m1": "x", "m2": "y"}"#));
    node.kill();

    let node = node.restart();
    assert_eq!(
        ok(call(&node, "get", &[("key", "durable")], b"")),
        json!("yes")
    );
    assert_eq!(ok(call(&node, "get", &[("key", "n")], b"")), json!("7"));
    assert_eq!(
        ok(call(&node, "getmany", &[("keys", "m1,m2")], b"")),
        json!([["m1", "x"], ["m2", "y"]])
    );
}

#[test]
fn a_replicated_stores_writes_reach_another_edge_through_the_cloud() {
    let cloud = Cloud::start();
    let settings = "[kv]\nstores = [\"orders\"]\nreplicated = [\"orders\"]\n";
    let edge = |node_id: &str, function: &str, guest: &str| {
        let dir = prepare(&[(function, guest)]);
        write_settings(&dir, function, settings);
        let args = [
            "--cloud",
            &cloud.url(),
            "--cloud-token",
            TOKEN,
            "--node-id",
            node_id,
        ];
        Node::spawn(dir, args.iter().map(|s| s.to_string()).collect(), None)
    };
    let a = edge("edge-a", "std", "kvstd");
    let b = edge("edge-b", "kv", "kvtest");

    ok(op(
        &a,
        "std",
        "orders",
        "set",
        &[("key", "o1")],
        b"from-std",
    ));
    ok(op(&a, "std", "orders", "setmany", &[], br#"{"o2": "two"}"#));
    ok(op(
        &a,
        "std",
        "orders",
        "incr",
        &[("key", "count"), ("delta", "2")],
        b"",
    ));
    for (key, value) in [("o1", "from-std"), ("o2", "two"), ("count", "2")] {
        eventually(&format!("{key} on edge-b"), || {
            let got = ok(op(&b, "kv", "orders", "get", &[("key", key)], b""));
            (got == json!(value)).then_some(())
        });
    }
    ok(op(&a, "std", "orders", "delete", &[("key", "o1")], b""));
    eventually("the delete on edge-b", || {
        let got = ok(op(&b, "kv", "orders", "get", &[("key", "o1")], b""));
        got.is_null().then_some(())
    });
    // And back: edge-b's write reaches the standard guest on edge-a.
    ok(op(
        &b,
        "kv",
        "orders",
        "set",
        &[("key", "back")],
        b"from-kv",
    ));
    eventually("edge-b's write on edge-a", || {
        let got = ok(op(&a, "std", "orders", "get", &[("key", "back")], b""));
        (got == json!("from-kv")).then_some(())
    });
}
