//! Edges and the cloud tier: partitions, crashes mid-drain, exactly-once
//! delivery, and convergence of two edges through one cloud.

use crate::harness::{
    Backend, Cloud, Node, Proxy, TOKEN, encode, eventually, free_port, prepare, replicating_edge,
    write_settings,
};
use serde_json::Value;
use std::collections::BTreeSet;

/// An edge running `kvtest` as `kv` with a replicated default store.
fn edge(node_id: &str, cloud_port: u16, extra: &[&str]) -> Node {
    let dir = prepare(&[("kv", "kvtest")]);
    write_settings(&dir, "kv", "[kv]\nreplicated = [\"default\"]\n");
    let mut args = vec![
        "--cloud".to_string(),
        format!("http://127.0.0.1:{cloud_port}"),
        "--cloud-token".to_string(),
        TOKEN.to_string(),
        "--node-id".to_string(),
        node_id.to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Node::spawn(dir, args, None)
}

pub(crate) fn call(node: &Node, store_op: &str, query: &str, body: &[u8]) -> Value {
    let reply = node.request("POST", &format!("/kv/{store_op}?{query}"), &[], body);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let value = reply.json();
    assert!(value.get("ok").is_some(), "{value}");
    value["ok"].clone()
}

pub(crate) fn set(node: &Node, key: &str, value: &str) {
    call(
        node,
        "default/set",
        &format!("key={}", encode(key)),
        value.as_bytes(),
    );
}

pub(crate) fn get(node: &Node, key: &str) -> Option<String> {
    call(node, "default/get", &format!("key={}", encode(key)), b"")
        .as_str()
        .map(str::to_owned)
}

pub(crate) fn enqueue(node: &Node, topic: &str, payload: &str) -> u64 {
    call(
        node,
        "_/enqueue",
        &format!("topic={topic}"),
        payload.as_bytes(),
    )
    .as_u64()
    .unwrap()
}

/// Waits until the cloud holds exactly the events `expected` (by payload)
/// on `topic`, and checks none arrived twice.
pub(crate) fn wait_for_events(cloud: &Cloud, topic: &str, expected: &BTreeSet<String>) {
    let events = eventually(&format!("{} events on {topic}", expected.len()), || {
        let events = cloud.events(topic);
        (events.len() >= expected.len()).then_some(events)
    });
    let payloads: Vec<String> = events
        .iter()
        .map(|e| {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(e["payload"].as_str().unwrap())
                .unwrap();
            String::from_utf8(bytes).unwrap()
        })
        .collect();
    let unique: BTreeSet<String> = payloads.iter().cloned().collect();
    assert_eq!(payloads.len(), unique.len(), "an event arrived twice");
    assert_eq!(&unique, expected);
}

#[test]
fn a_partitioned_edge_keeps_working_and_everything_arrives_exactly_once() {
    let cloud = Cloud::start();
    let node = edge("edge-a", cloud.addr.port(), &[]);
    set(&node, "before", "1");
    eventually("first write at the cloud", || cloud.value("@kv", "before"));

    let stopped = cloud.stop();
    const N: usize = 50;
    let mut expected = BTreeSet::new();
    for i in 0..N {
        set(&node, &format!("k{i:03}"), &format!("v{i}"));
        let payload = format!("event-{i}");
        enqueue(&node, "partition", &payload);
        expected.insert(payload);
        assert_eq!(
            get(&node, &format!("k{i:03}")).as_deref(),
            Some(format!("v{i}").as_str()),
            "reads work while cut off"
        );
    }
    node.wait_log(r"cannot ship to the cloud");

    let cloud = Cloud::resume(stopped);
    wait_for_events(&cloud, "partition", &expected);
    for i in 0..N {
        let key = format!("k{i:03}");
        eventually(&key, || {
            cloud.value("@kv", &key).filter(|v| *v == format!("v{i}"))
        });
    }
    node.wait_log(r"cloud reachable again");
    // Nothing more arrives later: the outbox drained exactly once.
    set(&node, "after", "1");
    eventually("a later write", || cloud.value("@kv", "after"));
    assert_eq!(cloud.events("partition").len(), N);
}

/// Fills the outbox of a cut-off edge with `n` events, shipped one per batch.
fn edge_with_backlog(node_id: &str, n: usize) -> (Node, u16, BTreeSet<String>) {
    let port = free_port();
    let node = edge(node_id, port, &["--ship-batch", "1"]);
    let mut expected = BTreeSet::new();
    for i in 0..n {
        let payload = format!("e{i:04}");
        enqueue(&node, "drain", &payload);
        expected.insert(payload);
    }
    (node, port, expected)
}

/// Waits until the cloud has some but not all of the `n` events.
pub(crate) fn wait_mid_drain(cloud: &Cloud, n: usize) -> usize {
    let count = eventually("the drain to start", || {
        let count = cloud.events("drain").len();
        (count >= 5).then_some(count)
    });
    assert!(
        count < n,
        "the drain finished before the crash; the test proves nothing"
    );
    count
}

#[test]
fn killing_the_edge_mid_drain_loses_and_doubles_nothing() {
    const N: usize = 300;
    let (node, port, expected) = edge_with_backlog("edge-k", N);
    let cloud = Cloud::start_at(port);
    wait_mid_drain(&cloud, N);
    let node = node.restart();
    wait_for_events(&cloud, "drain", &expected);
    drop(node);
}

#[test]
fn restarting_the_cloud_mid_drain_loses_and_doubles_nothing() {
    const N: usize = 300;
    let (_node, port, expected) = edge_with_backlog("edge-c", N);
    let cloud = Cloud::start_at(port);
    wait_mid_drain(&cloud, N);
    let cloud = cloud.restart();
    wait_for_events(&cloud, "drain", &expected);
}

#[test]
fn two_edges_converge_through_the_cloud() {
    let cloud = Cloud::start();
    let a = edge("edge-a", cloud.addr.port(), &[]);
    let b = edge("edge-b", cloud.addr.port(), &[]);
    for i in 0..10 {
        set(&a, &format!("a{i}"), &format!("from-a-{i}"));
        set(&b, &format!("b{i}"), &format!("from-b-{i}"));
    }
    for node in [&a, &b] {
        for i in 0..10 {
            let (ka, kb) = (format!("a{i}"), format!("b{i}"));
            let (va, vb) = (format!("from-a-{i}"), format!("from-b-{i}"));
            eventually(&ka, || get(node, &ka).filter(|v| *v == va));
            eventually(&kb, || get(node, &kb).filter(|v| *v == vb));
        }
    }
    // A delete replicates too.
    call(&a, "default/delete", "key=a0", b"");
    eventually("the delete on b", || get(&b, "a0").is_none().then_some(()));
}

/// Two edges (`edge-a`, `edge-b`) for a cloud on `port` that is not up
/// yet, each having written key `contested` without seeing the other's
/// write; `edge-b` wrote last.
pub(crate) fn contested_edges(port: u16) -> (Node, Node) {
    let a = edge("edge-a", port, &[]);
    let b = edge("edge-b", port, &[]);
    set(&a, "contested", "from-a");
    std::thread::sleep(std::time::Duration::from_millis(5));
    set(&b, "contested", "from-b");
    (a, b)
}

#[test]
fn concurrent_writes_converge_to_the_last_writer_and_record_a_conflict() {
    let port = free_port();
    let (a, b) = contested_edges(port);

    let cloud = Cloud::start_at(port);
    for node in [&a, &b] {
        eventually("both edges on the last writer", || {
            (get(node, "contested").as_deref() == Some("from-b")).then_some(())
        });
    }
    assert_eq!(cloud.value("@kv", "contested").as_deref(), Some("from-b"));
    let conflicts = eventually("the conflict record", || {
        let conflicts = cloud.conflicts();
        (!conflicts.is_empty()).then_some(conflicts)
    });
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    let conflict = &conflicts[0];
    assert_eq!(conflict["key"], "contested");
    assert_eq!(conflict["store"], "@kv");
    assert_eq!(conflict["winner"]["node"], "edge-b");
    assert_eq!(conflict["loser"]["node"], "edge-a");
    // Explained for people: a lost write, why it lost, when, and what.
    assert_eq!(conflict["kind"], "divergent");
    assert_eq!(conflict["reason"], "higher-hlc");
    assert!(conflict["winner_ms"].as_u64().unwrap() >= conflict["loser_ms"].as_u64().unwrap());
    assert_eq!(conflict["loser_shown"]["text"], "from-a");
    assert_eq!(conflict["winner_shown"]["format"], "text");
}

fn the_cloud_refuses_requests_without_the_token(backend: Backend) {
    let cloud = Cloud::start_on(backend, true, &[]);
    let url = cloud.url();
    for (method, path) in [
        ("POST", "/v1/ingest"),
        ("GET", "/v1/feed"),
        ("GET", "/v1/conflicts"),
    ] {
        let reply = ureq::request(method, &format!("{url}{path}"))
            .set("authorization", "Bearer wrong")
            .call();
        match reply {
            Err(ureq::Error::Status(401, r)) => {
                let id = r.header("x-outpost-error-id").unwrap().to_string();
                cloud.wait_log(&format!("error_id={id}"));
            }
            other => panic!("{method} {path}: {other:?}"),
        }
        assert!(matches!(
            ureq::request(method, &format!("{url}{path}")).call(),
            Err(ureq::Error::Status(401, _))
        ));
    }
    assert_eq!(cloud.get("/_outpost/health").status, 200);

    // An edge with the wrong token says so, and keeps its writes.
    let dir = prepare(&[("kv", "kvtest")]);
    write_settings(&dir, "kv", "[kv]\nreplicated = [\"default\"]\n");
    let args = ["--cloud", &url, "--cloud-token", "wrong"];
    let node = Node::spawn(dir, args.iter().map(|s| s.to_string()).collect(), None);
    set(&node, "k", "v");
    node.wait_log(r"the cloud refuses this node.s stream.*does not accept this node.s token");
    assert_eq!(get(&node, "k").as_deref(), Some("v"));
    assert_eq!(cloud.value("@kv", "k"), None);
}

#[test]
fn a_cloud_that_is_down_is_retried_with_backoff_not_hammered() {
    // A "cloud" that accepts connections and drops them at once.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let attempts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let attempts = attempts.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(stream);
            }
        });
    }
    let node = edge("edge-down", port, &[]);
    set(&node, "k", "v");
    node.wait_log(r"cannot ship to the cloud");
    let before = attempts.load(std::sync::atomic::Ordering::SeqCst);
    std::thread::sleep(std::time::Duration::from_secs(5));
    let during = attempts.load(std::sync::atomic::Ordering::SeqCst) - before;
    // Shipper and puller each back off from 200 ms, doubling, and probe
    // the health endpoint about once a second while they wait: about ten
    // attempts each in five seconds. A retry loop without backoff would
    // make thousands.
    assert!(during < 40, "{during} connection attempts in 5 s");
    assert_eq!(
        node.log_matches(r"cannot ship to the cloud").len(),
        1,
        "one warning per outage, not one per retry"
    );
    assert_eq!(
        get(&node, "k").as_deref(),
        Some("v"),
        "the node keeps serving"
    );
}

#[test]
fn a_cloud_back_after_a_long_outage_gets_the_backlog_at_once_not_after_the_backoff() {
    let cloud = Cloud::start();
    let mut proxy = Proxy::start(cloud.addr);
    let a = replicating_edge("edge-away", &proxy.url(), TOKEN, &[]);
    set(&a, "before", "1");
    eventually("the first write at the cloud", || {
        cloud.value("@kv", "before")
    });

    proxy.cut();
    set(&a, "during", "2");
    a.wait_log(r"cannot ship to the cloud");
    // Long enough for the backoff to reach waits of 13-26 s: a retry that
    // only waited them out would come seconds after the link is back.
    std::thread::sleep(std::time::Duration::from_secs(25));
    assert_eq!(cloud.value("@kv", "during"), None, "the link was cut");
    proxy.heal();
    let healed = std::time::Instant::now();
    a.wait_log(r"the cloud answers its health check again; retrying now");
    eventually("the backlog at the cloud", || cloud.value("@kv", "during"));
    // How soon is the drain benchmark's to measure (`load drain`: time to
    // first ack); here, that the probe, not the backoff, ended the wait.
    eprintln!(
        "the backlog arrived {:?} after the link came back",
        healed.elapsed()
    );
}

#[test]
fn a_delete_beats_an_older_write_it_never_saw() {
    let port = free_port();
    let a = edge("edge-a", port, &[]);
    let b = edge("edge-b", port, &[]);
    // b writes first; a, which never saw that write, deletes the key later.
    set(&b, "doomed", "from-b");
    std::thread::sleep(std::time::Duration::from_millis(5));
    call(&a, "default/delete", "key=doomed", b"");

    let cloud = Cloud::start_at(port);
    for node in [&a, &b] {
        eventually("the delete to win everywhere", || {
            // Wait until b has caught up with the feed, then check.
            (get(node, "doomed").is_none() && cloud.value("@kv", "doomed").is_none()).then_some(())
        });
    }
    // And it stays deleted once everything has drained.
    set(&a, "marker", "1");
    eventually("b caught up", || get(&b, "marker"));
    assert_eq!(get(&b, "doomed"), None);
    assert_eq!(get(&a, "doomed"), None);
}

#[test]
fn a_wiped_edge_recovers_its_own_writes_from_the_cloud() {
    let cloud = Cloud::start();
    let mut a = edge("edge-a", cloud.addr.port(), &[]);
    set(&a, "mine", "v1");
    eventually("the write at the cloud", || cloud.value("@kv", "mine"));
    a.kill();
    std::fs::remove_dir_all(a.data_dir()).unwrap();
    let a = a.restart();
    eventually("its own write back from the feed", || {
        (get(&a, "mine").as_deref() == Some("v1")).then_some(())
    });
}

#[test]
fn an_edge_follows_a_replaced_cloud_database() {
    let cloud = Cloud::start();
    let port = cloud.addr.port();
    let a = edge("edge-a", port, &[]);
    let b = edge("edge-b", port, &[]);
    for i in 0..5 {
        set(&b, &format!("old{i}"), "x");
    }
    eventually("a caught up with the first cloud", || get(&a, "old4"));

    // The cloud's database is replaced by an empty one on the same address:
    // a's cursor is now past its end.
    let (port, _old_dir) = cloud.stop();
    let cloud = Cloud::start_at(port);
    set(&b, "new", "after-the-swap");
    eventually("a reads the new cloud's feed", || {
        (get(&a, "new").as_deref() == Some("after-the-swap")).then_some(())
    });
    a.wait_log(r"cloud's database changed");
    drop(cloud);
}

crate::on_both_backends!(the_cloud_refuses_requests_without_the_token);
