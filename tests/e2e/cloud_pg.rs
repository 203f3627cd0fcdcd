//! The cloud tier on PostgreSQL, end to end: replicas over one database in
//! the run's private cluster, edges on different replicas converging
//! through it, a replica killed and the database stopped mid-ingest.

use crate::harness::{Cloud, Node, Proxy, TOKEN, eventually, free_port, replicating_edge};
use crate::observability::Metrics;
use crate::replication::{enqueue, get, set, wait_for_events, wait_mid_drain};
use std::collections::BTreeSet;

/// Fills `node`'s outbox with `count` events on `topic` (`PREFIX-i`).
fn backlog(
    node: &Node,
    topic: &str,
    prefix: &str,
    range: std::ops::Range<usize>,
) -> BTreeSet<String> {
    range
        .map(|i| {
            let payload = format!("{prefix}-{i:04}");
            enqueue(node, topic, &payload);
            payload
        })
        .collect()
}

#[test]
fn two_replicas_converge_edges_that_were_partitioned_through_the_database() {
    let url = outpost_pg_cluster::fresh_database("e2e_converge");
    let one = Cloud::start_pg(&url, &[]);
    let two = Cloud::start_pg(&url, &[]);
    let mut link_a = Proxy::start(one.addr);
    let mut link_b = Proxy::start(two.addr);
    let a = replicating_edge("edge-a", &link_a.url(), TOKEN, &[]);
    let b = replicating_edge("edge-b", &link_b.url(), TOKEN, &[]);
    set(&a, "hello", "from-a");
    eventually("b sees a's write, through the other replica", || {
        get(&b, "hello").filter(|v| v == "from-a")
    });

    link_a.cut();
    link_b.cut();
    let mut events = BTreeSet::new();
    for i in 0..20 {
        set(&a, &format!("a{i}"), &format!("from-a-{i}"));
        set(&b, &format!("b{i}"), &format!("from-b-{i}"));
    }
    events.extend(backlog(&a, "pg", "a", 0..20));
    events.extend(backlog(&b, "pg", "b", 0..20));
    // Both write one key without seeing the other's write; b writes last.
    set(&a, "contested", "from-a");
    std::thread::sleep(std::time::Duration::from_millis(5));
    set(&b, "contested", "from-b");
    assert_eq!(
        get(&a, "contested").as_deref(),
        Some("from-a"),
        "cut off, a reads its own"
    );

    link_a.heal();
    link_b.heal();
    for node in [&a, &b] {
        for i in 0..20 {
            let (ka, kb) = (format!("a{i}"), format!("b{i}"));
            let (va, vb) = (format!("from-a-{i}"), format!("from-b-{i}"));
            eventually(&ka, || get(node, &ka).filter(|v| *v == va));
            eventually(&kb, || get(node, &kb).filter(|v| *v == vb));
        }
        eventually("the last writer wins on both edges", || {
            (get(node, "contested").as_deref() == Some("from-b")).then_some(())
        });
    }
    // Every event once, whichever replica is asked.
    wait_for_events(&one, "pg", &events);
    wait_for_events(&two, "pg", &events);
    // The conflict, recorded once, seen the same through both replicas.
    let conflicts = eventually("the conflict record", || {
        let conflicts = two.conflicts();
        (!conflicts.is_empty()).then_some(conflicts)
    });
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    assert_eq!(conflicts[0]["key"], "contested");
    assert_eq!(conflicts[0]["winner"]["node"], "edge-b");
    assert_eq!(conflicts[0]["loser"]["node"], "edge-a");
    assert_eq!(one.conflicts(), conflicts);
}

#[test]
fn killing_a_replica_mid_ingest_loses_and_doubles_nothing() {
    const N: usize = 400;
    let url = outpost_pg_cluster::fresh_database("e2e_kill");
    let (port_one, port_two) = (free_port(), free_port());
    let replicas = format!("http://127.0.0.1:{port_one},http://127.0.0.1:{port_two}");
    let edge = replicating_edge("edge-k", &replicas, TOKEN, &["--ship-batch", "1"]);
    let mut expected = backlog(&edge, "drain", "e", 0..N);
    let mut one = Cloud::start_pg_at(port_one, &url, &[]);
    let two = Cloud::start_pg_at(port_two, &url, &[]);
    wait_mid_drain(&one, N);
    one.kill();
    // Writes keep arriving at the edge, and it answers every one.
    expected.extend(backlog(&edge, "drain", "late", 0..50));
    set(&edge, "after-the-kill", "yes");
    wait_for_events(&two, "drain", &expected);
    eventually("the write made after the kill", || {
        two.value("@kv", "after-the-kill")
    });
    // The killed replica comes back over the same database: same answers.
    let one = Cloud::start_pg_at(port_one, &url, &[]);
    wait_for_events(&one, "drain", &expected);
}

#[test]
fn postgres_stopped_mid_ingest_answers_503_then_everything_arrives_once() {
    const N: usize = 300;
    let cluster = outpost_pg_cluster::PgCluster::start().expect("a private PostgreSQL");
    cluster.create_database("outpost").unwrap();
    let url = cluster.url("outpost");
    let port = free_port();
    let edge = replicating_edge(
        "edge-p",
        &format!("http://127.0.0.1:{port}"),
        TOKEN,
        &["--ship-batch", "1"],
    );
    let mut expected = backlog(&edge, "drain", "e", 0..N);
    let cloud = Cloud::start_pg_at(port, &url, &[]);
    wait_mid_drain(&cloud, N);
    cluster.stop_immediate().unwrap();

    // The edge answers every write meanwhile and keeps it in its outbox.
    expected.extend(backlog(&edge, "drain", "down", 0..30));
    set(&edge, "while-down", "yes");
    assert_eq!(get(&edge, "while-down").as_deref(), Some("yes"));
    // The cloud says why, with a Retry-After, and health and metrics agree.
    let reply = eventually("a 503 from the cloud", || {
        let reply = cloud.get("/v1/feed?since=0");
        (reply.status == 503).then_some(reply)
    });
    assert_eq!(
        reply.json()["error"],
        "storage-unavailable",
        "{}",
        reply.body
    );
    assert!(reply.header("retry-after").is_some());
    let health = cloud.get("/_outpost/health");
    assert_eq!(health.status, 503, "{}", health.body);
    let metrics = Metrics::parse(&cloud.get("/metrics"));
    assert_eq!(
        metrics.get("outpost_cloud_storage_writable", &[]),
        Some(0.0)
    );
    cloud.wait_log(r"the database is unavailable");
    // Give the edge a few more failed attempts: still one line.
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(cloud.log_matches(r"the database is unavailable").len(), 1);

    cluster.start_again().unwrap();
    cloud.wait_log(r"the database answers again");
    wait_for_events(&cloud, "drain", &expected);
    eventually("the write made while the database was down", || {
        cloud.value("@kv", "while-down")
    });
    eventually("health is green again", || {
        (cloud.get("/_outpost/health").status == 200).then_some(())
    });
}

#[test]
fn replicas_share_the_admin_token_and_the_database_id() {
    let url = outpost_pg_cluster::fresh_database("e2e_admin");
    let one = Cloud::start_pg_secure(&url, &[]);
    let admin = one.admin_token();
    // A second replica, given no token, checks against the database's.
    let two = Cloud::start_pg_secure(&url, &[]);
    let listed = two.request_as(&admin, "GET", "/v1/credentials", b"");
    assert_eq!(listed.status, 200, "{}", listed.body);
    // A credential enrolled at one replica works at the other.
    let token = one.enrol("edge-x", &[]);
    let feed = two.request_as(&token, "GET", "/v1/feed?since=0", b"");
    assert_eq!(feed.status, 200, "{}", feed.body);
    let other = one.request_as(&token, "GET", "/v1/feed?since=0", b"");
    assert_eq!(
        feed.json()["cloud"],
        other.json()["cloud"],
        "one database id"
    );
    // A replica given another admin token refuses to start.
    let output = Cloud::command(free_port(), tempfile::tempdir().unwrap().path(), false)
        .args(["--database", &url, "--admin-token", "op1.admin.not-the-one"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("another admin token"), "{stderr}");
}

#[test]
fn the_database_can_come_from_the_clouds_config_file() {
    let url = outpost_pg_cluster::fresh_database("e2e_config");
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let config = dir.path().join("cloud.toml");
    std::fs::write(
        &config,
        format!("database = \"{url}\"\ndatabase_pool = 4\n"),
    )
    .unwrap();
    let config = config.display().to_string();
    let from_file = Cloud::start_in(dir.clone(), &["--config", &config]);
    from_file.wait_log(r"state in PostgreSQL.*pool=4");
    // Another replica, given the URL by flag, serves the same database.
    let other = Cloud::start_pg(&url, &[]);
    let edge = replicating_edge("edge-f", &from_file.url(), TOKEN, &[]);
    set(&edge, "k", "via-the-file");
    eventually("the write, read through the other replica", || {
        other.value("@kv", "k")
    });
    // A key the file may not hold stops the start, naming it.
    std::fs::write(dir.path().join("bad.toml"), "databse = \"x\"\n").unwrap();
    let output = Cloud::command(free_port(), dir.path(), true)
        .arg("--config")
        .arg(dir.path().join("bad.toml"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("databse"), "{stderr}");
}
