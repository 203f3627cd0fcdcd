//! The example functions that `cargo xtask serve` deploys, exercised the
//! way the README's curl lines do, against a real cloud tier.

use crate::harness::{Cloud, Node, TOKEN, eventually, prepare, write_settings};

/// The settings file shipped beside an example's crate.
fn example_settings(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
        .join(format!("{name}.toml"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn counter_profile_and_orders_work_as_documented() {
    let cloud = Cloud::start();
    let dir = prepare(&[
        ("counter", "counter"),
        ("profile", "profile"),
        ("orders", "orders"),
    ]);
    write_settings(&dir, "profile", &example_settings("profile"));
    let args = [
        "--cloud",
        &cloud.url(),
        "--cloud-token",
        TOKEN,
        "--node-id",
        "edge-x",
    ];
    let node = Node::spawn(dir, args.iter().map(|s| s.to_string()).collect(), None);

    // counter: increments survive a restart (they are on disk).
    assert_eq!(node.get("/counter/visits").body, "0\n");
    assert_eq!(
        node.request("POST", "/counter/visits", &[], b"").body,
        "1\n"
    );
    assert_eq!(
        node.request("POST", "/counter/visits", &[], b"").body,
        "2\n"
    );
    assert_eq!(
        node.request("POST", "/counter", &[], b"").body,
        "1\n",
        "default name"
    );
    let node = node.restart();
    assert_eq!(node.get("/counter/visits").body, "2\n");

    // profile: JSON documents, replicated (they reach the cloud).
    assert_eq!(node.get("/profile/ada").status, 404);
    let doc = r#"{"name":"Ada","langs":["en"]}"#;
    let reply = node.request(
        "PUT",
        "/profile/ada",
        &[("content-type", "application/json")],
        doc.as_bytes(),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(node.get("/profile/ada").body, doc);
    assert_eq!(
        node.request("PUT", "/profile/ada", &[], b"not json").status,
        400
    );
    eventually("the profile at the cloud", || {
        cloud.value("@profile", "user/ada").filter(|v| v == doc)
    });

    // orders: the Idempotency-Key header makes a retry harmless.
    let order = br#"{"sku":"a1","qty":2}"#;
    let first = node.request("POST", "/orders", &[("idempotency-key", "order-1")], order);
    assert_eq!(first.status, 202, "{}", first.body);
    let retry = node.request("POST", "/orders", &[("idempotency-key", "order-1")], order);
    assert_eq!(retry.json()["id"], first.json()["id"]);
    let other = node.request("POST", "/orders", &[("idempotency-key", "order-2")], order);
    assert_ne!(other.json()["id"], first.json()["id"]);
    assert_eq!(node.request("POST", "/orders", &[], b"{oops").status, 400);
    let events = eventually("two orders at the cloud", || {
        let events = cloud.events("orders");
        (events.len() >= 2).then_some(events)
    });
    assert_eq!(events.len(), 2, "{events:?}");
    let keys: Vec<_> = events
        .iter()
        .map(|e| e["idempotency_key"].clone())
        .collect();
    assert_eq!(
        keys,
        [serde_json::json!("order-1"), serde_json::json!("order-2")]
    );
}
