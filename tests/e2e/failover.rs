//! An edge given several cloud replicas (`--cloud URL,URL`): when one is
//! dead or dies mid-run, shipping and the change feed move to the next,
//! and every write still arrives exactly once.

use crate::harness::{Cloud, Node, Proxy, TOKEN, eventually, free_port, replicating_edge};
use crate::observability::Metrics;
use crate::replication::{enqueue, get, set, wait_for_events};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};

fn payloads(cloud: &Cloud, topic: &str) -> Vec<String> {
    use base64::Engine as _;
    cloud
        .events(topic)
        .iter()
        .map(|e| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(e["payload"].as_str().unwrap())
                .unwrap();
            String::from_utf8(bytes).unwrap()
        })
        .collect()
}

/// The edge's view of its cloud link, from the admin API.
fn cloud_link(node: &Node) -> Value {
    node.admin_get("/outbox", &[]).json()["cloud"].clone()
}

fn scrape(node: &Node) -> Metrics {
    Metrics::parse(&node.admin_get("/metrics", &[]))
}

#[test]
fn an_edge_passes_over_a_dead_replica_for_shipping_and_the_feed() {
    let cloud = Cloud::start();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let a = replicating_edge("edge-a", &format!("{dead},{}", cloud.url()), TOKEN, &[]);
    let b = replicating_edge("edge-b", &cloud.url(), TOKEN, &[]);

    set(&a, "from-a", "1");
    enqueue(&a, "t", "a0");
    eventually("a's write at the cloud", || cloud.value("@kv", "from-a"));
    wait_for_events(&cloud, "t", &BTreeSet::from(["a0".to_owned()]));
    set(&b, "from-b", "2");
    eventually("b's write on a, through the feed", || {
        (get(&a, "from-b").as_deref() == Some("2")).then_some(())
    });

    let line = a.wait_log(r"cloud replica failed; moving to the next");
    assert!(line.contains(&dead), "{line}");
    let link = eventually("a's link reachable", || {
        let link = cloud_link(&a);
        (link["reachable"] == true).then_some(link)
    });
    assert_eq!(link["url"], cloud.url(), "{link}");
    assert_eq!(
        link["replicas"],
        serde_json::json!([dead, cloud.url()]),
        "{link}"
    );
    let m = scrape(&a);
    assert_eq!(
        m.value("outpost_cloud_replica", &[("url", &cloud.url())]),
        1.0
    );
    assert_eq!(m.value("outpost_cloud_replica", &[("url", &dead)]), 0.0);
    assert!(m.value("outpost_cloud_failovers", &[]) >= 1.0);
    assert_eq!(m.value("outpost_cloud_reachable", &[]), 1.0);
}

#[test]
fn a_replica_cut_mid_run_loses_and_doubles_nothing_and_the_feed_moves_on() {
    let cloud = Cloud::start();
    let mut proxy = Proxy::start(cloud.addr);
    let a = replicating_edge(
        "edge-a",
        &format!("{},{}", proxy.url(), cloud.url()),
        TOKEN,
        // Small batches, so a batch is likely in flight at the cut.
        &["--ship-batch", "2"],
    );
    let b = replicating_edge("edge-b", &cloud.url(), TOKEN, &[]);

    // Before the cut, both directions go through the proxy.
    set(&a, "before", "1");
    eventually("a's write at the cloud", || cloud.value("@kv", "before"));
    set(&b, "b-before", "1");
    eventually("b's write on a", || get(&a, "b-before"));
    assert_eq!(cloud_link(&a)["url"], proxy.url());
    assert!(proxy.carried() > 0);

    // A writer that keeps writing while the proxy is cut; the second half
    // of its writes waits for the cut, so some surely come after it.
    const N: usize = 60;
    let expected: BTreeSet<String> = (0..N).map(|i| format!("e{i:03}")).collect();
    let cut_done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            for (i, payload) in expected.iter().enumerate() {
                if i == N / 2 {
                    while !cut_done.load(Ordering::SeqCst) {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                }
                enqueue(&a, "mid", payload);
                set(&a, &format!("k{i:03}"), payload);
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        });
        eventually("the first events at the cloud", || {
            (payloads(&cloud, "mid").len() >= 5).then_some(())
        });
        proxy.cut();
        cut_done.store(true, Ordering::SeqCst);
        writer.join().unwrap();
    });

    wait_for_events(&cloud, "mid", &expected);
    for (i, payload) in expected.iter().enumerate() {
        let key = format!("k{i:03}");
        eventually(&key, || cloud.value("@kv", &key).filter(|v| v == payload));
    }
    // The feed goes on from the other replica: b's write reaches a.
    set(&b, "b-after", "2");
    eventually("b's write on a after the cut", || {
        (get(&a, "b-after").as_deref() == Some("2")).then_some(())
    });
    let line = a.wait_log(r"cloud replica failed; moving to the next");
    assert!(line.contains(&proxy.url()), "{line}");
    assert_eq!(cloud_link(&a)["url"], cloud.url());

    // Nothing more arrives later: everything went exactly once.
    enqueue(&a, "mid", "last");
    let mut all = expected.clone();
    all.insert("last".to_owned());
    wait_for_events(&cloud, "mid", &all);
    eventually("a's outbox drained", || {
        (a.admin_get("/outbox", &[]).json()["records"] == 0).then_some(())
    });
    assert_eq!(payloads(&cloud, "mid").len(), N + 1);
}
