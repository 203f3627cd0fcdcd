//! Edges the cloud does not fully trust, links that lie and data dirs that
//! were copied: per-node credentials, records checked at the door, the
//! feed kept to replicating stores, clones and gaps refused loudly, and a
//! proxy's errors never taken for the cloud's verdict.

use crate::harness::{
    Backend, Cloud, Node, TOKEN, edge_on, encode, eventually, free_port, prepare, write_settings,
};
use crate::observability::Metrics;
use serde_json::{Value, json};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};

fn edge(node_id: &str, cloud_url: &str, token: &str, extra: &[&str]) -> Node {
    crate::harness::replicating_edge(node_id, cloud_url, token, extra)
}

fn kv_call(node: &Node, op: &str, query: &str, body: &[u8]) -> Value {
    let reply = node.request("POST", &format!("/kv/{op}?{query}"), &[], body);
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

fn set(node: &Node, key: &str, value: &str) {
    let answer = kv_call(
        node,
        "default/set",
        &format!("key={}", encode(key)),
        value.as_bytes(),
    );
    assert!(answer.get("ok").is_some(), "{answer}");
}

fn get(node: &Node, key: &str) -> Option<String> {
    kv_call(node, "default/get", &format!("key={}", encode(key)), b"")["ok"]
        .as_str()
        .map(str::to_owned)
}

fn enqueue(node: &Node, topic: &str, payload: &str) {
    let answer = kv_call(
        node,
        "_/enqueue",
        &format!("topic={topic}"),
        payload.as_bytes(),
    );
    assert!(answer.get("ok").is_some(), "{answer}");
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn kv_record(store: &str, key: &str, value: &[u8], hlc: u64, node: &str) -> Value {
    json!({"kind": "kv", "store": store, "key": key, "value": b64(value),
           "version": {"hlc": hlc, "node": node}, "seen": null})
}

fn batch(node: &str, epoch: u64, first_seq: u64, records: Vec<Value>) -> String {
    let entries: Vec<Value> = records
        .into_iter()
        .enumerate()
        .map(|(i, record)| json!({"seq": first_seq + i as u64, "record": record}))
        .collect();
    json!({"node": node, "epoch": epoch, "entries": entries}).to_string()
}

/// An HLC stamp for now.
fn now_hlc() -> u64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    ms << 16
}

fn outbox(node: &Node) -> Value {
    node.admin_get("/outbox", &[]).json()
}

fn a_node_credential_ships_only_as_its_own_node_and_epoch(backend: Backend) {
    let cloud = Cloud::start_on(backend, false, &[]);
    let token_a = cloud.enrol("edge-a", &[]);
    let token_b = cloud.enrol("edge-b", &[]);
    let a = edge("edge-a", &cloud.url(), &token_a, &[]);
    set(&a, "k", "from-a-1");
    eventually("edge-a's first write at the cloud", || {
        (cloud.value("@kv", "k").as_deref() == Some("from-a-1")).then_some(())
    });
    let epoch_a = outbox(&a)["epoch"]
        .as_u64()
        .expect("the outbox names the epoch");

    // B's token cannot ship as A, nor stamp A's versions, nor take A's
    // epoch (the old attack: seq 2^63 made A's next records "duplicates").
    let as_a = batch(
        "edge-a",
        99,
        1,
        vec![kv_record("@kv", "k", b"forged", u64::MAX, "edge-a")],
    );
    let reply = cloud.request_as(&token_b, "POST", "/v1/ingest", as_a.as_bytes());
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert_eq!(reply.json()["error"], "wrong-node");
    let stamped_a = batch(
        "edge-b",
        98,
        1,
        vec![kv_record("@kv", "k", b"forged", now_hlc(), "edge-a")],
    );
    let reply = cloud.request_as(&token_b, "POST", "/v1/ingest", stamped_a.as_bytes());
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["refused"][0]["code"], "foreign-node");
    let future = batch(
        "edge-b",
        97,
        1,
        vec![kv_record("@kv", "k", b"forged", u64::MAX, "edge-b")],
    );
    let reply = cloud.request_as(&token_b, "POST", "/v1/ingest", future.as_bytes());
    assert_eq!(
        reply.json()["refused"][0]["code"],
        "clock-skew",
        "{}",
        reply.body
    );
    let mut theft = serde_json::from_str::<Value>(&batch(
        "edge-b",
        epoch_a,
        1 << 63,
        vec![kv_record("@kv", "k", b"forged", now_hlc(), "edge-b")],
    ))
    .unwrap();
    theft["entries"][0]["seq"] = json!(1u64 << 63);
    let reply = cloud.request_as(&token_b, "POST", "/v1/ingest", theft.to_string().as_bytes());
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert_eq!(reply.json()["error"], "epoch-owned");

    // A's later writes still win and arrive.
    set(&a, "k", "from-a-2");
    eventually("edge-a's second write at the cloud", || {
        (cloud.value("@kv", "k").as_deref() == Some("from-a-2")).then_some(())
    });

    // A reader reads and cannot ship; the old shared token means nothing
    // without --dev-token; a revoked credential stops at once.
    let reader = cloud.manage(&["reader", "dashboard"]);
    assert_eq!(
        cloud.request_as(&reader, "GET", "/v1/feed", b"").status,
        200
    );
    let refused = cloud.request_as(&reader, "POST", "/v1/ingest", future.as_bytes());
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(cloud.request_as(TOKEN, "GET", "/v1/feed", b"").status, 401);
    assert_eq!(
        cloud
            .request_as(&token_b, "GET", "/v1/events/t", b"")
            .status,
        403
    );
    let list: Value = serde_json::from_str(&cloud.manage(&["credentials"])).unwrap();
    let b_id = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["node"] == "edge-b")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        !list.to_string().contains(&token_b),
        "tokens are never listed"
    );
    cloud.manage(&["revoke", &b_id]);
    assert_eq!(
        cloud.request_as(&token_b, "GET", "/v1/feed", b"").status,
        401
    );
    cloud.wait_log("a revoked credential was used");
}

#[test]
fn a_node_ships_only_the_stores_and_topics_its_credential_names() {
    let cloud = Cloud::start_secure(&[]);
    let token = cloud.manage(&[
        "enrol", "edge-s", "--stores", "sessions", "--topics", "orders.*",
    ]);
    let event = |topic: &str, key: &str| json!({"kind": "event", "topic": topic, "payload": b64(b"e"), "idempotency_key": key, "hlc": now_hlc()});
    let body = batch(
        "edge-s",
        5,
        1,
        vec![
            kv_record("@kv", "k", b"x", now_hlc(), "edge-s"),
            kv_record("sessions", "k", b"y", now_hlc(), "edge-s"),
            // Another node's topic: with cross-node idempotency keys, a
            // node free to publish anywhere could claim another's keys.
            event("payments", "p-1"),
            event("orders.eu", "o-1"),
        ],
    );
    let reply = cloud.request_as(&token, "POST", "/v1/ingest", body.as_bytes());
    assert_eq!(reply.status, 200, "{}", reply.body);
    let ack = reply.json();
    assert_eq!(ack["applied"], 2, "{ack}");
    assert_eq!(ack["refused"][0]["code"], "store-not-allowed");
    assert_eq!(ack["refused"][1]["code"], "topic-not-allowed");
    assert_eq!(cloud.value("@kv", "k"), None);
    assert_eq!(cloud.value("sessions", "k").as_deref(), Some("y"));
    assert!(cloud.events("payments").is_empty());
    assert_eq!(cloud.events("orders.eu").len(), 1);
}

#[test]
fn the_feed_never_writes_a_store_that_does_not_replicate_here() {
    let cloud = Cloud::start();
    // `kv`'s own store does not replicate on this edge.
    let dir = prepare(&[("kv", "kvtest")]);
    let node = edge_on(dir, "edge-local", &cloud.url(), TOKEN, &[]);
    set(&node, "k", "mine");
    // Someone with a dev token writes `@kv` at the cloud.
    let forged = batch(
        "intruder",
        11,
        1,
        vec![kv_record("@kv", "k", b"forged", now_hlc(), "intruder")],
    );
    assert_eq!(cloud.post("/v1/ingest", &forged).status, 200);
    eventually("the edge to refuse the change", || {
        let m = Metrics::parse(&node.admin_get("/metrics", &[]));
        (m.value(
            "outpost_remote_writes_total",
            &[("result", "not-replicated")],
        ) >= 1.0)
            .then_some(())
    });
    node.wait_log("does not replicate on this node");
    assert_eq!(get(&node, "k").as_deref(), Some("mine"));
}

fn names_sizes_and_clocks_are_checked_at_the_door(backend: Backend) {
    let cloud = Cloud::start_on(backend, true, &[]);
    // A 300-byte node id with a multi-byte character across byte 255.
    let long_node = format!("{}é{}", "n".repeat(254), "n".repeat(44));
    let reply = cloud.post("/v1/ingest", &batch(&long_node, 1, 1, vec![]));
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.post_error(), "malformed-batch");
    assert_eq!(
        cloud.post("/v1/ingest", &batch("", 1, 1, vec![])).status,
        400
    );
    let hlc = now_hlc();
    let records = vec![
        kv_record("@kv", "k", b"v", hlc, &long_node),
        kv_record("@kv", &"k".repeat(20 * 1024 * 1024), b"v", hlc, "n"),
        kv_record("", "k", b"v", hlc, "n"),
        kv_record("a\u{0}b", "k", b"v", hlc, "n"),
        kv_record("@kv", "", b"v", hlc, "n"),
        json!({"kind": "event", "topic": "Not/A/Topic", "payload": "", "idempotency_key": null, "hlc": hlc}),
        json!({"kind": "event", "topic": "t", "payload": "", "idempotency_key": "k".repeat(300), "hlc": hlc}),
        kv_record("@kv", "ok", b"v", hlc, "n"),
    ];
    let reply = cloud.post("/v1/ingest", &batch("n", 2, 1, records));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let ack = reply.json();
    let codes: Vec<&str> = ack["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        [
            "bad-node",
            "bad-key",
            "bad-store",
            "bad-store",
            "bad-key",
            "bad-topic",
            "bad-idempotency-key"
        ]
    );
    assert_eq!(ack["applied"], 1);
    assert_eq!(ack["through"], 8);
    let feed = cloud.get("/v1/feed?limit=1000").json();
    let changes = feed["changes"].as_array().unwrap();
    assert_eq!(
        changes.len(),
        1,
        "only the valid record is in the feed: {feed}"
    );
    assert_eq!(changes[0]["key"], "ok");
    // Over the cloud's value limit.
    let small = Cloud::start_on(
        backend,
        false,
        &["--max-value-bytes", "16", "--dev-token", "t2"],
    );
    let body = batch(
        "n",
        3,
        1,
        vec![kv_record("@kv", "k", &[b'x'; 17], hlc, "n")],
    );
    let ack = small
        .request_as("t2", "POST", "/v1/ingest", body.as_bytes())
        .json();
    assert_eq!(ack["refused"][0]["code"], "too-large", "{ack}");
}

trait ErrorCode {
    fn post_error(&self) -> String;
}

impl ErrorCode for crate::harness::Reply {
    fn post_error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }
}

fn gaps_and_a_second_writer_on_one_epoch_are_refused_with_their_own_codes(backend: Backend) {
    let cloud = Cloud::start_on(backend, true, &[]);
    let hlc = now_hlc();
    let event = |payload: &str| json!({"kind": "event", "topic": "t", "payload": b64(payload.as_bytes()), "idempotency_key": null, "hlc": hlc});
    let first = cloud.post("/v1/ingest", &batch("n", 21, 1, vec![event("one")]));
    assert_eq!(first.status, 200, "{}", first.body);
    let gap = cloud.post("/v1/ingest", &batch("n", 21, 5, vec![event("late")]));
    assert_eq!(gap.status, 409, "{}", gap.body);
    assert_eq!(gap.post_error(), "sequence-gap");
    let again = cloud.post("/v1/ingest", &batch("n", 21, 1, vec![event("one")]));
    assert_eq!(again.json()["duplicates"], 1);
    let clone = cloud.post(
        "/v1/ingest",
        &batch("n", 21, 1, vec![event("other"), event("two")]),
    );
    assert_eq!(clone.status, 409, "{}", clone.body);
    assert_eq!(clone.post_error(), "clone-detected");
    let taken = cloud.post("/v1/ingest", &batch("m", 21, 2, vec![event("m")]));
    assert_eq!(taken.post_error(), "epoch-owned");
    assert_eq!(cloud.events("t").len(), 1);
}

/// Waits until `node`'s shipper is blocked with `code`, and checks that
/// health, `/outbox` and the metrics all say so, with its records kept.
fn wait_blocked(node: &Node, code: &str) {
    eventually(&format!("the shipper blocked with {code}"), || {
        let outbox = outbox(node);
        (outbox["cloud"]["blocked"]["code"] == code).then_some(())
    });
    node.wait_log(&format!("the cloud refuses this node's stream.*code={code}|code={code}.*the cloud refuses this node's stream"));
    let health = node.get("/_outpost/health").json();
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["replication"]["blocked"], code, "{health}");
    assert!(
        outbox(node)["records"].as_u64().unwrap() > 0,
        "records are kept"
    );
    let m = Metrics::parse(&node.admin_get("/metrics", &[]));
    assert_eq!(m.get("outpost_replication_blocked", &[]), Some(1.0));
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn payloads(cloud: &Cloud, topic: &str) -> Vec<String> {
    let mut all: Vec<String> = cloud
        .events(topic)
        .iter()
        .map(|e| {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(e["payload"].as_str().unwrap())
                .unwrap();
            String::from_utf8(bytes).unwrap()
        })
        .collect();
    all.sort();
    all
}

#[test]
fn a_copied_data_dir_is_refused_loudly_and_ships_after_new_epoch() {
    let cloud = Cloud::start();
    let mut a = edge("edge-a", &cloud.url(), TOKEN, &[]);
    enqueue(&a, "t", "a0");
    eventually("a0 at the cloud", || {
        (payloads(&cloud, "t") == ["a0"]).then_some(())
    });
    a.kill();
    // B starts from a copy of A's data dir, under its own node id.
    let b_dir = prepare(&[("kv", "kvtest")]);
    write_settings(&b_dir, "kv", "[kv]\nreplicated = [\"default\"]\n");
    copy_dir(&a.data_dir(), &b_dir.path().join("data"));
    let a = a.restart();
    let b = edge_on(b_dir.clone(), "edge-b", &cloud.url(), TOKEN, &[]);
    enqueue(&b, "t", "b1");
    enqueue(&a, "t", "a1");
    wait_blocked(&b, "epoch-owned");
    eventually("a1 at the cloud", || {
        (payloads(&cloud, "t") == ["a0", "a1"]).then_some(())
    });
    // The documented fix: a new epoch for the copy.
    let mut b = b;
    b.kill();
    let b = edge_on(b_dir, "edge-b", &cloud.url(), TOKEN, &["--new-epoch"]);
    b.wait_log("--new-epoch");
    eventually("b1 at the cloud", || {
        (payloads(&cloud, "t") == ["a0", "a1", "b1"]).then_some(())
    });
    eventually("B unblocked", || {
        outbox(&b)["cloud"]["blocked"].is_null().then_some(())
    });
    assert_eq!(b.get("/_outpost/health").json()["status"], "ok");
}

#[test]
fn a_copy_that_keeps_the_node_id_is_caught_as_a_clone() {
    let cloud = Cloud::start();
    let mut a = edge("edge-a", &cloud.url(), TOKEN, &[]);
    enqueue(&a, "t", "a0");
    eventually("a0 at the cloud", || {
        (payloads(&cloud, "t") == ["a0"]).then_some(())
    });
    a.kill();
    let copy = prepare(&[("kv", "kvtest")]);
    write_settings(&copy, "kv", "[kv]\nreplicated = [\"default\"]\n");
    copy_dir(&a.data_dir(), &copy.path().join("data"));
    // The copy writes while cut off, then A takes the same sequence number.
    let unreachable = format!("http://127.0.0.1:{}", free_port());
    let twin = edge_on(copy.clone(), "edge-a", &unreachable, TOKEN, &[]);
    enqueue(&twin, "t", "twin");
    drop(twin);
    let a = a.restart();
    enqueue(&a, "t", "a1");
    eventually("a1 at the cloud", || {
        (payloads(&cloud, "t") == ["a0", "a1"]).then_some(())
    });
    let twin = edge_on(copy, "edge-a", &cloud.url(), TOKEN, &[]);
    wait_blocked(&twin, "clone-detected");
    assert_eq!(
        payloads(&cloud, "t"),
        ["a0", "a1"],
        "nothing of the twin's was taken"
    );
    drop(a);
}

/// A stand-in for a proxy in front of the cloud: answers every request
/// with `status` and an HTML page, as nginx does.
fn html_error_server(port: u16, status: u16) -> std::thread::JoinHandle<()> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let page = format!("<html><body><h1>{status}</h1>nginx</body></html>");
            let _ = write!(
                stream,
                "HTTP/1.1 {status} Whatever\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
            if std::fs::metadata(format!("/tmp/outpost-stub-stop-{port}")).is_ok() {
                break;
            }
        }
    })
}

#[test]
fn a_proxy_answering_400_or_413_loses_no_record() {
    let port = free_port();
    let stub = html_error_server(port, 400);
    let url = format!("http://127.0.0.1:{port}");
    let node = edge("edge-p", &url, TOKEN, &[]);
    for i in 0..3 {
        enqueue(&node, "t", &format!("e{i}"));
    }
    node.wait_log("not the cloud's own verdict");
    let o = outbox(&node);
    assert_eq!(o["records"], 3, "{o}");
    assert_eq!(o["quarantined"], 0, "{o}");
    // Let the stub go, and put the real cloud on its port.
    std::fs::write(format!("/tmp/outpost-stub-stop-{port}"), b"").unwrap();
    let _ = std::net::TcpStream::connect(("127.0.0.1", port));
    stub.join().unwrap();
    let _ = std::fs::remove_file(format!("/tmp/outpost-stub-stop-{port}"));
    let cloud = Cloud::start_at(port);
    eventually("every record at the cloud", || {
        (payloads(&cloud, "t") == ["e0", "e1", "e2"]).then_some(())
    });
    assert_eq!(outbox(&node)["quarantined"], 0);
}

#[test]
fn a_record_the_cloud_refuses_is_quarantined_listed_and_resent() {
    // The cloud refuses values over 16 bytes; the edge accepts them.
    let cloud = Cloud::start_secure(&["--max-value-bytes", "16", "--dev-token", TOKEN]);
    let node = edge("edge-q", &cloud.url(), TOKEN, &[]);
    set(&node, "big", &"x".repeat(17));
    set(&node, "small", "ok");
    eventually("the small write at the cloud", || {
        (cloud.value("@kv", "small").as_deref() == Some("ok")).then_some(())
    });
    eventually("the big one quarantined", || {
        (outbox(&node)["quarantined"] == 1).then_some(())
    });
    let list = node.admin_get("/outbox/quarantine", &[]).json();
    let item = &list["items"][0];
    assert!(
        item["reason"].as_str().unwrap().starts_with("too-large"),
        "{list}"
    );
    let m = Metrics::parse(&node.admin_get("/metrics", &[]));
    assert_eq!(
        m.value(
            "outpost_shipper_refused_records_total",
            &[("result", "too-large")]
        ),
        1.0
    );
    // Resent, it is refused again (the cloud's limit has not changed), and
    // is back in quarantine under its new sequence number.
    let seq = item["seq"].as_u64().unwrap();
    let reply = node.admin_request(
        "POST",
        &format!("/outbox/quarantine/{seq}/resend"),
        &[],
        b"",
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    eventually("the resent record refused again", || {
        let list = node.admin_get("/outbox/quarantine", &[]).json();
        let items = list["items"].as_array().unwrap().clone();
        (items.len() == 1 && items[0]["seq"].as_u64() != Some(seq)).then_some(())
    });
}

#[test]
fn feed_pages_stop_at_a_byte_budget() {
    let cloud = Cloud::start();
    let megabyte = vec![b'm'; 1024 * 1024];
    for chunk in 0..4u64 {
        let records = (0..10)
            .map(|i| kv_record("@kv", &format!("k{chunk}-{i}"), &megabyte, now_hlc(), "n"))
            .collect();
        let reply = cloud.post("/v1/ingest", &batch("n", 31, chunk * 10 + 1, records));
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let first = cloud.get("/v1/feed?limit=1000");
    assert!(
        first.body.len() < 16 * 1024 * 1024,
        "{} bytes",
        first.body.len()
    );
    let mut seen = first.json()["changes"].as_array().unwrap().len();
    assert!((1..40).contains(&seen), "{seen}");
    let mut since = first.json()["next"].as_u64().unwrap();
    while seen < 40 {
        let page = cloud
            .get(&format!("/v1/feed?since={since}&limit=1000"))
            .json();
        let n = page["changes"].as_array().unwrap().len();
        assert!(n > 0);
        seen += n;
        since = page["next"].as_u64().unwrap();
    }
    // An edge follows the paged feed to the end.
    let node = edge("edge-f", &cloud.url(), TOKEN, &[]);
    eventually("the last key on the edge", || {
        (get(&node, "k3-9").map(|v| v.len()) == Some(megabyte.len())).then_some(())
    });
}

#[test]
fn an_empty_admin_token_file_is_an_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin-token"), "\n").unwrap();
    let output = Cloud::command(free_port(), dir.path(), false)
        .output()
        .expect("run outpost cloud");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("admin-token is empty"), "{stderr}");
}

#[test]
fn the_bearer_scheme_is_case_insensitive_and_ingest_wants_post() {
    let cloud = Cloud::start();
    let reply = crate::harness::http_get(
        &format!("{}/v1/feed", cloud.url()),
        &[("authorization", &format!("bearer {TOKEN}"))],
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = cloud.get("/v1/ingest");
    assert_eq!(reply.status, 405, "{}", reply.body);
    assert_eq!(reply.header("allow"), Some("POST"));
}

#[test]
fn a_store_the_host_declares_replicated_receives_other_edges_writes() {
    let cloud = Cloud::start();
    let start = |node_id: &str| {
        let dir = prepare(&[("kv", "kvtest")]);
        write_settings(&dir, "kv", "[kv]\nstores = [\"sessions\"]\n");
        crate::harness::write_host_config(&dir, "[stores.sessions]\nreplicated = true\n");
        edge_on(dir, node_id, &cloud.url(), TOKEN, &[])
    };
    let a = start("edge-a");
    let b = start("edge-b");
    let answer = kv_call(&a, "sessions/set", "key=s1", b"from-a");
    assert!(answer.get("ok").is_some(), "{answer}");
    eventually("edge-b to get edge-a's session", || {
        let v = kv_call(&b, "sessions/get", "key=s1", b"");
        (v["ok"] == "from-a").then_some(())
    });
}

#[test]
fn a_store_that_starts_replicating_reads_the_feed_again_from_the_start() {
    let cloud = Cloud::start();
    let a = edge("edge-a", &cloud.url(), TOKEN, &[]);
    set(&a, "k", "from-a");
    eventually("the write at the cloud", || {
        (cloud.value("@kv", "k").as_deref() == Some("from-a")).then_some(())
    });
    // B's `kv` keeps its own store local at first: the change is not for it.
    let dir = prepare(&[("kv", "kvtest")]);
    let b = edge_on(dir, "edge-b", &cloud.url(), TOKEN, &[]);
    eventually("B to pass the change by", || {
        let m = Metrics::parse(&b.admin_get("/metrics", &[]));
        (m.value(
            "outpost_remote_writes_total",
            &[("result", "not-replicated")],
        ) >= 1.0)
            .then_some(())
    });
    assert_eq!(get(&b, "k"), None);
    // Now it replicates there: B reads the feed again and gets the write.
    b.write_settings("kv", "[kv]\nreplicated = [\"default\"]\n");
    eventually("B to get A's write", || {
        (get(&b, "k").as_deref() == Some("from-a")).then_some(())
    });
}

crate::on_both_backends!(
    a_node_credential_ships_only_as_its_own_node_and_epoch,
    names_sizes_and_clocks_are_checked_at_the_door,
    gaps_and_a_second_writer_on_one_epoch_are_refused_with_their_own_codes,
);
