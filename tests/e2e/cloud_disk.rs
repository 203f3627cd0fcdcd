//! The cloud on a full disk (issue 15, finding 6), with the real binaries:
//! its data dir on a small tmpfs that fills up. Its health turns 503, its
//! ingests answer 503 storage-unavailable instead of hanging (the edge
//! keeps its records), reads go on, and once space is freed ingests
//! resume without a restart and every record arrives exactly once.
//! Mounting needs root: without it this test fails (it does not skip).

use crate::harness::{Cloud, Node, TOKEN, eventually, prepare, write_settings};
use crate::observability::Metrics;
use outpost_sled_guard::tmpfs::Tmpfs;
use std::time::Duration;

const TOPIC: &str = "disk";

/// An edge serving `kvtest` as `kv`, shipping to `cloud_url` as `node_id`.
fn edge(node_id: &str, cloud_url: &str) -> Node {
    let dir = prepare(&[("kv", "kvtest")]);
    write_settings(&dir, "kv", "[kv]\nreplicated = [\"default\"]\n");
    let args = [
        "--cloud",
        cloud_url,
        "--cloud-token",
        TOKEN,
        "--node-id",
        node_id,
    ];
    Node::spawn(dir, args.iter().map(|s| s.to_string()).collect(), None)
}

fn enqueue(node: &Node, payload: &str) {
    let reply = node.request(
        "POST",
        &format!("/kv/_/enqueue?topic={TOPIC}"),
        &[],
        payload.as_bytes(),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.json().get("ok").is_some(), "{}", reply.body);
}

/// A payload large enough that a few of them need new blocks on the
/// cloud's disk: `eN:xxx...`.
fn payload(i: usize) -> String {
    format!("e{i}:{}", "x".repeat(64 * 1024))
}

/// The names (`eN`) of the cloud's events, sorted; duplicates stay.
fn arrived(cloud: &Cloud) -> Vec<String> {
    let mut names: Vec<String> = cloud
        .events(TOPIC)
        .iter()
        .map(|e| {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(e["payload"].as_str().unwrap())
                .unwrap();
            let text = String::from_utf8(bytes).unwrap();
            text.split(':').next().unwrap().to_owned()
        })
        .collect();
    names.sort();
    names
}

fn outbox_records(node: &Node) -> u64 {
    node.admin_get("/outbox", &[]).json()["records"]
        .as_u64()
        .unwrap()
}

#[test]
fn a_full_cloud_disk_answers_503_keeps_the_edges_records_and_recovers_without_a_restart() {
    let disk = Tmpfs::mount("32m");
    // The guard off, so that sled itself meets the full disk (the hard
    // case; the guard is tested in host/cloud/tests/disk_full.rs).
    let cloud = Cloud::start_in(disk.temp_dir(), &["--min-free-bytes", "0"]);
    let node = edge("edge-disk", &cloud.url());
    let mut sent = vec!["e0".to_owned()];
    enqueue(&node, &payload(0));
    eventually("e0 at the cloud", || {
        (arrived(&cloud) == sent).then_some(())
    });
    assert_eq!(cloud.get("/_outpost/health").status, 200);

    let filler = disk.fill_up("filler");
    // Ship until the cloud's storage refuses.
    let mut failing = None;
    for i in 1..=200 {
        enqueue(&node, &payload(i));
        sent.push(format!("e{i}"));
        std::thread::sleep(Duration::from_millis(200));
        let health = cloud.get("/_outpost/health");
        if health.status == 503 {
            failing = Some(health);
            break;
        }
    }
    let health = failing.expect("the cloud's health never turned 503 on a full disk");
    let report = health.json();
    assert_eq!(report["status"], "storage-failing", "{report}");
    assert!(
        report["storage"]["failing_since"].is_string(),
        "says since when: {report}"
    );
    assert!(health.header("retry-after").is_some());

    // An ingest now is refused at once, typed, with Retry-After.
    let probe = serde_json::json!({"node": "probe", "epoch": 4242, "entries": [
        {"seq": 1, "record": {"kind": "event", "topic": "probe", "payload": "cHJvYmU=",
                              "idempotency_key": null, "hlc": 1}}]});
    let refused = cloud.post("/v1/ingest", &probe.to_string());
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.json()["error"], "storage-unavailable");
    assert!(refused.header("retry-after").is_some());
    // Reads and authentication go on.
    let before = arrived(&cloud);
    assert!(before.contains(&"e0".to_owned()), "{before:?}");
    eventually("the cloud counts the refused ingests", || {
        let m = Metrics::parse(&cloud.get("/metrics"));
        (m.get("outpost_cloud_storage_writable", &[]) == Some(0.0)
            && m.value("outpost_cloud_batches_total", &[("result", "unavailable")]) >= 2.0)
            .then_some(())
    });
    // The edge keeps what the cloud has not taken, and more piles up.
    for i in sent.len()..sent.len() + 3 {
        enqueue(&node, &payload(i));
        sent.push(format!("e{i}"));
    }
    assert!(outbox_records(&node) >= 3, "the edge keeps its records");

    std::fs::remove_file(&filler).expect("free the filler");
    eventually("the cloud's health back to 200", || {
        (cloud.get("/_outpost/health").status == 200).then_some(())
    });
    sent.sort();
    eventually("every record at the cloud, each once", || {
        (arrived(&cloud) == sent).then_some(())
    });
    eventually("the edge's outbox drained", || {
        (outbox_records(&node) == 0).then_some(())
    });
    assert!(
        !cloud
            .log_matches("the database accepts writes again")
            .is_empty(),
        "the same cloud process recovered"
    );
    let m = Metrics::parse(&cloud.get("/metrics"));
    assert_eq!(m.get("outpost_cloud_storage_writable", &[]), Some(1.0));
    drop(node);
    drop(cloud);
}
