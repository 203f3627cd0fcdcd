//! What a function can see and choose of consistency: freshness on reads
//! (versions, acknowledgement, lag, pending writes) while connected, cut
//! off and healed; `forward` stores whose writes wait for the cloud, with
//! their `fail` and `queue` fallbacks; a kill -9 while a forward write
//! waits; and the loser of two forwarding edges told it was superseded.

use crate::harness::{
    Cloud, Node, Proxy, TOKEN, edge_on, encode, eventually, prepare, write_settings,
};
use crate::observability::Metrics;
use serde_json::Value;
use std::time::Duration;

/// `kvtest`'s answer to `/kv/STORE/OP?key=KEY&EXTRA`, as JSON.
fn op(node: &Node, store: &str, op: &str, key: &str, extra: &str, body: &[u8]) -> Value {
    let path = format!("/kv/{store}/{op}?key={}&{extra}", encode(key));
    let reply = node.request("POST", &path, &[], body);
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

fn freshness(node: &Node, store: &str) -> Value {
    op(node, store, "freshness", "_", "", b"")["ok"].clone()
}

fn versioned(node: &Node, store: &str, key: &str) -> Value {
    op(node, store, "versioned", key, "", b"")["ok"].clone()
}

fn write(node: &Node, store: &str, key: &str, value: &str) -> Value {
    op(node, store, "write", key, "", value.as_bytes())
}

/// An edge serving `kvtest` as `kv` with `settings`, shipping to `cloud`.
fn edge(node_id: &str, cloud: &str, settings: &str) -> Node {
    let dir = prepare(&[("kv", "kvtest")]);
    write_settings(&dir, "kv", settings);
    edge_on(dir, node_id, cloud, TOKEN, &[])
}

fn wait_connected(node: &Node, store: &str, connected: bool) {
    eventually(&format!("connected = {connected}"), || {
        let f = freshness(node, store);
        (f["connected"] == connected && (!connected || f["stale_ms"] == 0)).then_some(())
    });
}

#[test]
fn freshness_shows_lag_and_pending_writes_while_cut_off_and_clears_after_heal() {
    let cloud = Cloud::start();
    let mut proxy = Proxy::start(cloud.addr);
    let node = edge(
        "edge-fresh",
        &proxy.url(),
        "[kv]\nreplicated = [\"default\"]\nlag-header = true\n",
    );
    op(&node, "default", "set", "before", "", b"1");
    eventually("the first write at the cloud", || {
        cloud.value("@kv", "before")
    });
    wait_connected(&node, "default", true);
    let f = freshness(&node, "default");
    assert_eq!(f["replicated"], true);
    assert_eq!(f["pending"], 0, "{f}");
    assert_eq!(f["mode"], "local");
    let v = versioned(&node, "default", "before");
    assert_eq!(
        (v["value"].as_str(), v["node"].as_str()),
        (Some("1"), Some("edge-fresh"))
    );
    assert_eq!(v["acknowledged"], true, "{v}");
    let connected = node.get("/kv/default/hello");
    assert_eq!(connected.header("x-outpost-replication-lag-ms"), Some("0"));

    proxy.cut();
    for i in 0..3 {
        op(&node, "default", "set", &format!("cut{i}"), "", b"x");
    }
    node.wait_log(r"cannot ship to the cloud");
    wait_connected(&node, "default", false);
    let first = freshness(&node, "default");
    assert_eq!(first["pending"], 3, "{first}");
    let v = versioned(&node, "default", "cut0");
    assert_eq!(
        v["acknowledged"], false,
        "a write the cloud has not seen: {v}"
    );
    assert_eq!(
        versioned(&node, "default", "before")["acknowledged"],
        true,
        "an older write stays acknowledged"
    );
    std::thread::sleep(Duration::from_millis(300));
    let later = freshness(&node, "default");
    assert!(
        later["stale_ms"].as_u64().unwrap() > first["stale_ms"].as_u64().unwrap(),
        "the lag grows while cut off: {first} then {later}"
    );
    let lag: u64 = node
        .get("/kv/default/hello")
        .header("x-outpost-replication-lag-ms")
        .unwrap()
        .parse()
        .unwrap();
    assert!(lag > 0, "the host's header shows the lag too");

    proxy.heal();
    eventually("the backlog acknowledged", || {
        let f = freshness(&node, "default");
        (f["pending"] == 0 && f["connected"] == true && f["stale_ms"] == 0).then_some(())
    });
    assert_eq!(versioned(&node, "default", "cut2")["acknowledged"], true);
    assert_eq!(cloud.value("@kv", "cut2").as_deref(), Some("x"));
    eventually("the header back to 0", || {
        (node
            .get("/kv/default/hello")
            .header("x-outpost-replication-lag-ms")
            == Some("0"))
        .then_some(())
    });
}

/// Two forwarding stores: `strict` fails while the cloud is away, `lenient`
/// queues.
const FORWARDING: &str = "[kv]\nstores = [\"strict\", \"lenient\"]\nreplicated = [\"default\", \"strict\", \"lenient\"]\n\
    [kv.write.strict]\nmode = \"forward\"\nfallback = \"fail\"\n\
    [kv.write.lenient]\nmode = \"forward\"\nfallback = \"queue\"\n";

#[test]
fn a_forward_write_is_on_the_cloud_when_the_guest_hears_applied_and_cut_off_it_fails_or_queues() {
    let cloud = Cloud::start();
    let mut proxy = Proxy::start(cloud.addr);
    let node = edge("edge-fwd", &proxy.url(), FORWARDING);
    wait_connected(&node, "strict", true);
    assert_eq!(freshness(&node, "strict")["mode"], "forward");
    assert_eq!(freshness(&node, "default")["mode"], "local");

    let answer = write(&node, "strict", "k", "v1");
    assert_eq!(answer["ok"]["outcome"], "applied", "{answer}");
    assert_eq!(answer["ok"]["version"]["node"], "edge-fwd");
    // Read at once, no waiting: the guest heard "applied" after the cloud did.
    assert_eq!(cloud.value("strict", "k").as_deref(), Some("v1"));
    assert_eq!(versioned(&node, "strict", "k")["acknowledged"], true);
    // The plain calls wait the same way.
    op(&node, "lenient", "set", "plain", "", b"p");
    assert_eq!(cloud.value("lenient", "plain").as_deref(), Some("p"));
    let n = op(&node, "strict", "incr", "n", "delta=5", b"");
    assert_eq!(n["ok"], 5);
    assert_eq!(cloud.value("strict", "n").as_deref(), Some("5"));

    proxy.cut();
    node.wait_log(r"cannot (ship to the cloud|read the cloud's change feed)");
    wait_connected(&node, "strict", false);
    let refused = write(&node, "strict", "k", "v2");
    assert_eq!(refused["error"], "unavailable", "{refused}");
    let plain = op(&node, "strict", "set", "other", "", b"x");
    assert!(
        plain["error"]
            .as_str()
            .unwrap()
            .starts_with("io: unavailable"),
        "{plain}"
    );
    assert_eq!(
        op(&node, "strict", "get", "k", "", b"")["ok"],
        "v1",
        "a refused forward write wrote nothing"
    );
    assert_eq!(
        op(&node, "strict", "get", "other", "", b"")["ok"],
        Value::Null
    );
    assert_eq!(freshness(&node, "strict")["pending"], 0);

    let queued = write(&node, "lenient", "q", "later");
    assert_eq!(queued["ok"]["outcome"], "queued", "{queued}");
    assert_eq!(op(&node, "lenient", "get", "q", "", b"")["ok"], "later");
    assert_eq!(freshness(&node, "lenient")["pending"], 1);
    assert_eq!(versioned(&node, "lenient", "q")["acknowledged"], false);

    proxy.heal();
    eventually("the queued write at the cloud", || {
        cloud.value("lenient", "q")
    });
    wait_connected(&node, "strict", true);
    let after = write(&node, "strict", "k", "v3");
    assert_eq!(after["ok"]["outcome"], "applied", "{after}");
    assert_eq!(cloud.value("strict", "k").as_deref(), Some("v3"));
    let m = Metrics::parse(&node.admin_get("/metrics", &[]));
    assert_eq!(
        m.value(
            "outpost_kv_operations_total",
            &[("op", "write"), ("result", "unavailable")]
        ),
        1.0
    );
}

#[test]
fn killing_the_edge_while_a_forward_write_waits_loses_and_doubles_nothing() {
    let cloud = Cloud::start();
    let proxy = Proxy::start(cloud.addr);
    let node = edge(
        "edge-kill",
        &proxy.url(),
        "[kv]\nstores = [\"strict\"]\nreplicated = [\"strict\"]\n[kv.write.strict]\nmode = \"forward\"\ntimeout-ms = 30000\n",
    );
    wait_connected(&node, "strict", true);
    // The cloud applies the write, and its ack stalls on the way back.
    proxy.hold_answers();
    let url = node.url("/kv/strict/write?key=crash");
    let waiting = std::thread::spawn(move || {
        // The edge dies under this request: any answer, or none.
        let _ = ureq::post(&url).send_bytes(b"survives");
    });
    eventually("the write at the cloud", || cloud.value("strict", "crash"));
    eventually("its ack held in the link", || {
        (proxy.held_bytes() > 0).then_some(())
    });
    let mut node = node;
    node.kill();
    let _ = waiting.join();
    proxy.release();
    // The restarted edge never heard the ack: it sends the write again.
    let node = node.restart();
    eventually("the restarted edge's outbox empty", || {
        (freshness(&node, "strict")["pending"] == 0).then_some(())
    });
    assert_eq!(
        op(&node, "strict", "get", "crash", "", b"")["ok"],
        "survives",
        "the write was durable on the edge before it waited"
    );
    let after = write(&node, "strict", "next", "1");
    assert_eq!(after["ok"]["outcome"], "applied", "{after}");
    // The restarted edge sent the write again; the cloud knew it.
    let c = Metrics::parse(&cloud.get("/metrics"));
    assert_eq!(
        c.value("outpost_cloud_entries_total", &[("result", "duplicate")]),
        1.0,
        "the redelivery was skipped, not applied again"
    );
    assert!(cloud.conflicts().is_empty());
}

#[test]
fn of_two_edges_forwarding_to_one_key_the_loser_is_told_it_was_superseded() {
    let cloud = Cloud::start();
    let slow = Proxy::start(cloud.addr);
    let settings = "[kv]\nstores = [\"stock\"]\nreplicated = [\"stock\"]\n[kv.write.stock]\nmode = \"forward\"\ntimeout-ms = 20000\n";
    let a = edge("edge-a", &slow.url(), settings);
    let b = edge("edge-b", &cloud.url(), settings);
    wait_connected(&a, "stock", true);
    wait_connected(&b, "stock", true);

    // A writes first, but its link stalls...
    slow.hold();
    let url = a.url("/kv/stock/write?key=item");
    let a_write = std::thread::spawn(move || {
        let reply = ureq::post(&url).send_bytes(b"from-a").unwrap();
        serde_json::from_str::<Value>(&reply.into_string().unwrap()).unwrap()
    });
    // Committed on A (durable before it waits), so its stamp is older.
    eventually("A's write committed on A", || {
        (op(&a, "stock", "get", "item", "", b"")["ok"] == "from-a").then_some(())
    });
    // ...so B's later (newer) write reaches the cloud first.
    let b_write = write(&b, "stock", "item", "from-b");
    assert_eq!(b_write["ok"]["outcome"], "applied", "{b_write}");
    slow.release();

    let a_write = a_write.join().unwrap();
    assert_eq!(a_write["ok"]["outcome"], "superseded", "{a_write}");
    assert_eq!(
        a_write["ok"]["version"]["node"], "edge-b",
        "the winner: {a_write}"
    );
    assert_eq!(
        a_write["ok"]["version"]["hlc"], b_write["ok"]["version"]["hlc"],
        "the winner is B's write"
    );
    assert_eq!(cloud.value("stock", "item").as_deref(), Some("from-b"));
    eventually("A converges on the winner", || {
        (op(&a, "stock", "get", "item", "", b"")["ok"] == "from-b").then_some(())
    });
}
