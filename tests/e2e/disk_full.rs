//! A node whose data disk fills up: writes answer at once (outcome unknown
//! or refused), reads and other functions keep working, health says so,
//! and writes resume by themselves once there is room, with nothing
//! acknowledged lost.

use crate::harness::{Node, encode, eventually, prepare, write_host_config};
use outpost_sled_guard::tmpfs::Tmpfs;
use std::path::Path;

fn free_bytes(path: &Path) -> u64 {
    outpost_sled_guard::free_bytes(path).expect("the free space of the tmpfs")
}

fn kv(node: &Node, op: &str, key: &str, body: &[u8]) -> serde_json::Value {
    let reply = node.request(
        "POST",
        &format!("/kv/default/{op}?key={}", encode(key)),
        &[],
        body,
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

#[test]
fn a_nearly_full_disk_refuses_writes_at_once_keeps_reads_and_recovers() {
    let dir = prepare(&[("kv", "kvtest"), ("hello", "hello")]);
    let data = dir.path().join("data");
    let _disk = Tmpfs::mount_at(&data, "100m");
    let node = Node::spawn(dir.clone(), Vec::new(), None);
    let before = kv(&node, "set", "before", b"kept");
    assert!(before.get("ok").is_some(), "{before}");
    // Something else fills the disk past the node's free-space floor
    // (min-free-bytes, 64 MiB by default).
    let filler = data.join("filler");
    let room = free_bytes(&data).saturating_sub(32 * 1024 * 1024);
    std::fs::write(&filler, vec![0u8; room as usize]).unwrap();
    let refused = kv(&node, "set", "during", b"x");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .starts_with("io: storage unavailable"),
        "{refused}"
    );
    let health = node.get("/_outpost/health");
    assert_eq!(health.status, 503, "{}", health.body);
    assert_eq!(health.json()["status"], "storage-failing");
    assert_eq!(kv(&node, "get", "before", b"")["ok"], "kept", "reads go on");
    assert_eq!(
        kv(&node, "get", "during", b"")["ok"],
        serde_json::Value::Null
    );
    assert_eq!(node.get("/hello").status, 200);
    std::fs::remove_file(&filler).unwrap();
    eventually("writes to resume", || {
        kv(&node, "set", "after", b"room again")
            .get("ok")
            .is_some()
            .then_some(())
    });
    assert_eq!(node.get("/_outpost/health").status, 200);
}

#[test]
fn a_full_disk_fails_writes_fast_and_they_resume_when_space_returns() {
    let dir = prepare(&[("kv", "kvtest"), ("hello", "hello")]);
    let data = dir.path().join("data");
    let _disk = Tmpfs::mount_at(&data, "64m");
    // No early guard: let sled meet the full disk itself, with values big
    // enough to go to its blob files (the case that used to hang).
    write_host_config(&dir, "min-free-bytes = 0\n");
    let node = Node::spawn(dir.clone(), Vec::new(), None);
    let filler = data.join("filler");
    let room = free_bytes(&data).saturating_sub(6 * 1024 * 1024);
    std::fs::write(&filler, vec![0u8; room as usize]).unwrap();

    let value = vec![b'v'; 200 * 1024];
    let mut acknowledged = Vec::new();
    let failure = loop {
        assert!(acknowledged.len() < 500, "the disk never filled");
        let key = format!("k{}", acknowledged.len());
        let answer = kv(&node, "set", &key, &value);
        if answer.get("ok").is_some() {
            acknowledged.push(key);
        } else {
            break answer;
        }
    };
    let error = failure["error"].as_str().unwrap();
    assert!(
        error.starts_with("outcome-unknown") || error.starts_with("io: storage unavailable"),
        "{failure}"
    );
    // Later writes are refused at once, not after the request deadline.
    let again = kv(&node, "set", "later", b"x");
    assert!(
        again["error"]
            .as_str()
            .unwrap()
            .starts_with("io: storage unavailable"),
        "{again}"
    );
    let health = node.get("/_outpost/health");
    assert_eq!(health.status, 503, "{}", health.body);
    assert_eq!(health.json()["status"], "storage-failing");
    assert_eq!(health.json()["storage"]["writable"], false);
    // Other functions go on (their instance slots are not held by writes
    // waiting on the disk). Reads of this failed sled instance may fail
    // until it is reopened; with the default free-space floor sled never
    // meets a full disk and reads go on (the test above).
    assert_eq!(node.get("/hello").status, 200);
    let m = crate::observability::Metrics::parse(&node.admin_get("/metrics", &[]));
    assert_eq!(m.get("outpost_storage_writable", &[]), Some(0.0));

    // Room again: writes resume by themselves.
    std::fs::remove_file(&filler).unwrap();
    eventually("writes to resume", || {
        kv(&node, "set", "after", b"room again")
            .get("ok")
            .is_some()
            .then_some(())
    });
    assert_eq!(node.get("/_outpost/health").status, 200);
    node.wait_log("storage");

    // Nothing acknowledged was lost, across a kill -9.
    let node = node.restart();
    for key in acknowledged
        .iter()
        .chain(std::iter::once(&"after".to_string()))
    {
        let answer = kv(&node, "get", key, b"");
        assert!(answer["ok"].is_string(), "{key} lost: {answer}");
    }
    drop(node);
}
