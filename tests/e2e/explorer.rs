//! The conflict explorer through the cloud's real HTTP API: a benign and a
//! divergent conflict made by two edges cut off from each other, then
//! filters, stats, a key's history, the key listing a convergence check
//! reads, and reviews (who, when, kept across a restart, refused to
//! readers and to nodes that wrote neither side, replaced by the
//! operator's, notes without control characters).

use crate::harness::{
    Backend, Cloud, Node, Reply, TOKEN, edge_on, encode, eventually, free_port, prepare,
    write_settings,
};
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// An edge for a cloud on `port` serving `kvtest` as `kv` and as `kv2`,
/// both with their own store replicated (`@kv`, `@kv2`).
fn edge(node_id: &str, port: u16) -> Node {
    let dir = prepare(&[("kv", "kvtest"), ("kv2", "kvtest")]);
    for function in ["kv", "kv2"] {
        write_settings(&dir, function, "[kv]\nreplicated = [\"default\"]\n");
    }
    edge_on(
        dir,
        node_id,
        &format!("http://127.0.0.1:{port}"),
        TOKEN,
        &[],
    )
}

/// Calls kvtest's `op` on `function`'s own store and returns its `ok`.
fn kv(node: &Node, function: &str, op: &str, key: &str, body: &str) -> Value {
    let reply = node.request(
        "POST",
        &format!("/{function}/default/{op}?key={}", encode(key)),
        &[],
        body.as_bytes(),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let value = reply.json();
    assert!(value.get("ok").is_some(), "{value}");
    value["ok"].clone()
}

/// A cloud in development mode on `port`, on `backend`.
fn cloud_at(backend: Backend, port: u16) -> Cloud {
    match backend {
        Backend::Sled => Cloud::start_at(port),
        Backend::Postgres => {
            Cloud::start_pg_at(port, &outpost_pg_cluster::fresh_database("e2e"), &[])
        }
    }
}

/// The ids of the conflicts `GET /v1/conflicts?QUERY` lists, and the page.
fn listed(cloud: &Cloud, query: &str) -> (Vec<u64>, Value) {
    let reply = cloud.get(&format!("/v1/conflicts?{query}"));
    assert_eq!(reply.status, 200, "{query}: {}", reply.body);
    let page = reply.json();
    let ids = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_u64().unwrap())
        .collect();
    (ids, page)
}

fn ok_json(reply: Reply) -> Value {
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

fn bad_request(reply: &Reply, what: &str) {
    assert_eq!(reply.status, 400, "{what}: {}", reply.body);
    assert_eq!(reply.json()["error"], "bad-request", "{what}");
}

fn the_explorer_filters_counts_links_and_keeps_reviews(backend: Backend) {
    let port = free_port();
    let a = edge("edge-a", port);
    let b = edge("edge-b", port);
    // The cloud is not up yet: neither edge sees the other's writes. Both
    // write the same to one key (benign) and different values to another
    // (divergent: edge-b's, made later, wins).
    kv(&a, "kv", "set", "div/contested", "from-a");
    kv(&a, "kv2", "set", "ben/same", "same");
    std::thread::sleep(std::time::Duration::from_millis(5));
    kv(&b, "kv", "set", "div/contested", "from-b");
    kv(&b, "kv2", "set", "ben/same", "same");

    let cloud = cloud_at(backend, port);
    let all = eventually("both conflicts at the cloud", || {
        let all = cloud.conflicts();
        (all.len() >= 2).then_some(all)
    });
    assert_eq!(all.len(), 2, "{all:?}");
    let id_of = |key: &str| {
        all.iter()
            .find(|c| c["key"] == key)
            .unwrap_or_else(|| panic!("{key}: {all:?}"))["id"]
            .as_u64()
            .unwrap()
    };
    let (div, ben) = (id_of("div/contested"), id_of("ben/same"));
    for node in [&a, &b] {
        eventually("the edges converge on the last writer", || {
            (kv(node, "kv", "get", "div/contested", "") == "from-b").then_some(())
        });
    }

    // Filters, server-side.
    assert_eq!(listed(&cloud, "kind=divergent").0, [div]);
    assert_eq!(listed(&cloud, "kind=benign").0, [ben]);
    assert_eq!(listed(&cloud, "store=%40kv").0, [div]);
    assert_eq!(listed(&cloud, "store=%40kv2").0, [ben]);
    assert_eq!(listed(&cloud, "prefix=div%2F").0, [div]);
    assert_eq!(
        listed(&cloud, "prefix=ben%2F&kind=divergent").0,
        Vec::<u64>::new()
    );
    let mut both = vec![div, ben];
    both.sort();
    assert_eq!(listed(&cloud, "node=edge-a").0, both);
    let (none, page) = listed(&cloud, "node=edge-c");
    assert!(none.is_empty());
    assert_eq!(page["next"], both[1], "next is the last record scanned");
    let (unreviewed, page) = listed(&cloud, "reviewed=false");
    assert_eq!(unreviewed, both);
    assert!(
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["review"].is_null())
    );
    assert_eq!(listed(&cloud, "reviewed=true").0, Vec::<u64>::new());
    let (_, page) = listed(&cloud, "kind=divergent");
    let item = &page["items"][0];
    assert_eq!(
        (
            item["winner"]["node"].as_str(),
            item["loser"]["node"].as_str()
        ),
        (Some("edge-b"), Some("edge-a"))
    );
    assert_eq!(item["loser_shown"]["text"], "from-a");
    bad_request(&cloud.get("/v1/conflicts?kind=lost"), "kind=lost");
    bad_request(&cloud.get("/v1/conflicts?reviewed=maybe"), "reviewed=maybe");
    bad_request(&cloud.get("/v1/conflicts/stats?bucket_s=0"), "bucket_s=0");

    // Counts.
    let stats = ok_json(cloud.get("/v1/conflicts/stats"));
    assert_eq!(
        (
            &stats["total"],
            &stats["benign"],
            &stats["divergent"],
            &stats["reviewed"]
        ),
        (&json!(2), &json!(1), &json!(1), &json!(0)),
        "{stats}"
    );
    assert_eq!(
        stats["by_store"],
        json!([
            {"store": "@kv", "count": 1, "benign": 0, "divergent": 1},
            {"store": "@kv2", "count": 1, "benign": 1, "divergent": 0},
        ])
    );
    assert_eq!(
        stats["by_pair"],
        json!([{"nodes": ["edge-a", "edge-b"], "count": 2}])
    );
    let over_time = stats["over_time"].as_array().unwrap();
    let counted: u64 = over_time.iter().map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(counted, 2);
    assert!(
        over_time
            .iter()
            .all(|b| b["at_ms"].as_u64().unwrap() % 60_000 == 0)
    );
    assert_eq!(
        (&stats["window"], &stats["complete"]),
        (&json!(2), &json!(true))
    );
    let hourly = ok_json(cloud.get("/v1/conflicts/stats?kind=divergent&bucket_s=3600"));
    assert_eq!(hourly["total"], 1);
    assert_eq!(hourly["by_store"][0]["store"], "@kv");
    assert_eq!(
        hourly["over_time"][0]["at_ms"].as_u64().unwrap() % 3_600_000,
        0
    );
    assert_eq!(
        ok_json(cloud.get("/v1/conflicts/stats?node=edge-c"))["total"],
        0
    );

    // The divergent key's history: edge-b's version current, edge-a's
    // write lost to it, linked to the conflict.
    let history = ok_json(cloud.get("/v1/history?store=%40kv&key=div%2Fcontested"));
    assert_eq!(history["current"]["version"]["node"], "edge-b");
    assert_eq!(
        history["current"]["shown"],
        json!({"format": "text", "text": "from-b"})
    );
    let newest = &history["versions"][0];
    assert_eq!(newest["version"], history["current"]["version"]);
    assert_eq!(newest["conflicts"], json!([div]));
    assert!(newest["cursor"].as_u64().unwrap() >= 1);
    let lost = history["lost"].as_array().unwrap();
    assert_eq!(lost.len(), 1, "{history}");
    assert_eq!(lost[0]["conflict"], div);
    assert_eq!(lost[0]["version"]["node"], "edge-a");
    assert_eq!(lost[0]["shown"]["text"], "from-a");
    assert_eq!(lost[0]["lost_to"], history["current"]["version"]);
    // Whether edge-a's write was accepted first (and then overwritten) or
    // arrived second and lost, both versions are there.
    let writers: BTreeSet<&str> = history["versions"]
        .as_array()
        .unwrap()
        .iter()
        .chain(lost)
        .map(|v| v["version"]["node"].as_str().unwrap())
        .collect();
    assert_eq!(writers, BTreeSet::from(["edge-a", "edge-b"]));
    assert_eq!(history["window"]["complete"], true);
    assert_eq!(history["window"]["truncated"], false);
    let unknown = ok_json(cloud.get("/v1/history?store=%40kv&key=never"));
    assert_eq!(
        (&unknown["current"], &unknown["versions"], &unknown["lost"]),
        (&Value::Null, &json!([]), &json!([]))
    );
    bad_request(
        &cloud.get("/v1/history?store=%40kv"),
        "history without a key",
    );

    // The key listing a convergence check compares each edge with.
    let keys = ok_json(cloud.get("/v1/kv?store=%40kv"));
    assert_eq!(keys["next"], Value::Null);
    let listed_key = &keys["items"][0];
    assert_eq!(listed_key["key"], "div/contested");
    assert_eq!(listed_key["version"], history["current"]["version"]);
    assert_eq!(listed_key["value"], "ZnJvbS1i", "base64 of from-b");
    for node in [&a, &b] {
        let at_edge = kv(node, "kv", "versioned", "div/contested", "");
        assert_eq!(
            json!({"hlc": at_edge["hlc"], "node": at_edge["node"]}),
            listed_key["version"],
            "the edge holds the cloud's version"
        );
    }

    // Reviews: who is the credential's, never the body's.
    let reader = cloud.manage(&["reader", "dashboard"]);
    let refused = review(&cloud, &reader, &div.to_string(), "");
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(review(&cloud, TOKEN, "9999", "").status, 404);
    bad_request(&review(&cloud, TOKEN, "first", ""), "a non-numeric id");
    bad_request(&review(&cloud, TOKEN, "", ""), "no id");
    bad_request(
        &cloud.request_as(TOKEN, "POST", "/v1/conflicts/review", b""),
        "no id, one slash",
    );
    bad_request(
        &review(&cloud, TOKEN, &div.to_string(), r#"{"by": "someone else"}"#),
        "by in the body",
    );
    let wrong_method = cloud.get(&format!("/v1/conflicts/{div}/review"));
    assert_eq!(wrong_method.status, 405);

    let before = outpost_now_ms();
    let admin = cloud.admin_token();
    let reviewed = ok_json(review(
        &cloud,
        &admin,
        &div.to_string(),
        r#"{"note": "from-a was a test write"}"#,
    ));
    let after = outpost_now_ms();
    assert_eq!(reviewed["id"], div);
    assert_eq!(reviewed["review"]["by"], "operator");
    assert_eq!(reviewed["review"]["note"], "from-a was a test write");
    let at_ms = reviewed["review"]["at_ms"].as_u64().unwrap();
    assert!(
        (before..=after).contains(&at_ms),
        "{before} <= {at_ms} <= {after}"
    );
    cloud.wait_log(&format!(r"conflict reviewed.*conflict={div}\b"));
    // Again, by someone else: the first review stands.
    let again = ok_json(review(&cloud, TOKEN, &div.to_string(), ""));
    assert_eq!(again["review"], reviewed["review"]);

    // A node reviews only conflicts it wrote a side of. One in a store it
    // may not see is answered as a missing id is (nothing of other stores
    // leaks); one between others in its own store is refused, so it can
    // hide no conflict of others from review.
    let missing = review(&cloud, &cloud.enrol("edge-x", &["@elsewhere"]), "9999", "");
    let outsider = cloud.enrol("edge-a", &["@elsewhere"]);
    let hidden = review(&cloud, &outsider, &ben.to_string(), "{}");
    assert_eq!(hidden.status, 404, "{}", hidden.body);
    assert_eq!(missing.status, 404, "{}", missing.body);
    assert_eq!(hidden.json()["error"], missing.json()["error"]);
    assert_eq!(hidden.json()["message"], missing.json()["message"]);
    let bystander = cloud.enrol("edge-r", &["@kv2"]);
    let refused = review(&cloud, &bystander, &ben.to_string(), "{}");
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        refused.json()["message"]
            .as_str()
            .unwrap()
            .contains("only conflicts it wrote one side of"),
        "{}",
        refused.body
    );
    // A note with a control character other than newline and tab is
    // refused before anything is stored (PostgreSQL's TEXT refuses NUL).
    let writer = cloud.enrol("edge-a", &["@kv2"]);
    for bad in [r#"{"note": "a\u0000b"}"#, r#"{"note": "\u001b[2J"}"#] {
        bad_request(&review(&cloud, &writer, &ben.to_string(), bad), bad);
    }
    assert_eq!(listed(&cloud, "reviewed=false").0, [ben], "nothing stored");
    let by_node = ok_json(review(
        &cloud,
        &writer,
        &ben.to_string(),
        r#"{"note": "same on both\n\tfine"}"#,
    ));
    assert_eq!(by_node["review"]["by"], "node:edge-a");
    assert_eq!(by_node["review"]["note"], "same on both\n\tfine");
    // Anyone but the operator reviewing again keeps it.
    let again = ok_json(review(&cloud, TOKEN, &ben.to_string(), ""));
    assert_eq!(again["review"], by_node["review"]);
    // The operator's replaces it, and then stands.
    let by_operator = ok_json(review(
        &cloud,
        &admin,
        &ben.to_string(),
        r#"{"note": "looked at it"}"#,
    ));
    assert_eq!(by_operator["id"], ben);
    assert_eq!(by_operator["review"]["by"], "operator");
    assert_eq!(by_operator["review"]["note"], "looked at it");
    for token in [writer.as_str(), TOKEN, admin.as_str()] {
        let again = ok_json(review(&cloud, token, &ben.to_string(), r#"{"note": "x"}"#));
        assert_eq!(again["review"], by_operator["review"]);
    }

    let (ids, page) = listed(&cloud, "reviewed=true");
    assert_eq!(ids, both);
    let kept: Vec<Value> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["review"].clone())
        .collect();
    assert_eq!(listed(&cloud, "reviewed=false").0, Vec::<u64>::new());
    assert_eq!(ok_json(cloud.get("/v1/conflicts/stats"))["reviewed"], 2);

    // Durable: the same reviews after a restart.
    let cloud = cloud.restart();
    let (ids, page) = listed(&cloud, "reviewed=true");
    assert_eq!(ids, both);
    let after_restart: Vec<Value> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["review"].clone())
        .collect();
    assert_eq!(after_restart, kept);
    assert_eq!(
        ok_json(review(&cloud, TOKEN, &div.to_string(), ""))["review"],
        reviewed["review"]
    );
}

/// `POST /v1/conflicts/ID/review` with `token` and `body`.
fn review(cloud: &Cloud, token: &str, id: &str, body: &str) -> Reply {
    cloud.request_as(
        token,
        "POST",
        &format!("/v1/conflicts/{id}/review"),
        body.as_bytes(),
    )
}

/// Milliseconds since the Unix epoch, as the cloud's clock counts them.
fn outpost_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

crate::on_both_backends!(the_explorer_filters_counts_links_and_keeps_reviews);
