//! The edge admin's side of the conflict explorer, over HTTP: its copy of
//! a store (`/kv`, tombstones included, the same versions as the cloud's
//! once converged), its store list, and the cloud's conflict filters,
//! counts, key history and reviews passed through with the node's own
//! credential.

use crate::harness::{Cloud, Node, Proxy, encode, eventually, replicating_edge};
use crate::replication::{call, get, set};
use serde_json::{Value, json};

const ADMIN: [(&str, &str); 1] = [("authorization", "Bearer s3cret")];

/// Every item of `node`'s `/kv` listing of `store`, following pages of
/// `limit`.
fn listing(node: &Node, store: &str, limit: usize) -> Vec<Value> {
    let mut items = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut path = format!("/kv?store={}&limit={limit}", encode(store));
        if let Some(after) = &after {
            path.push_str(&format!("&after={}", encode(after)));
        }
        let reply = node.admin_get(&path, &ADMIN);
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        let page = reply.json();
        let got = page["items"].as_array().unwrap().clone();
        assert!(got.len() <= limit, "{page}");
        items.extend(got);
        match page["next"].as_str() {
            Some(next) => {
                assert_eq!(items.last().unwrap()["key"], next, "next is the last key");
                after = Some(next.to_owned());
            }
            None => return items,
        }
    }
}

/// The cloud's current version and value of each key in `items`, in the
/// `/kv` item shape.
fn at_cloud(cloud: &Cloud, store: &str, items: &[Value]) -> Vec<Value> {
    items
        .iter()
        .map(|item| {
            let key = item["key"].as_str().unwrap();
            let reply = cloud.get(&format!(
                "/v1/kv?store={}&key={}",
                encode(store),
                encode(key)
            ));
            assert_eq!(reply.status, 200, "{key}: {}", reply.body);
            let current = reply.json();
            json!({ "key": key, "version": current["version"], "value": current["value"] })
        })
        .collect()
}

fn admin_post(node: &Node, path: &str, body: &str) -> crate::harness::Reply {
    node.admin_request("POST", path, &ADMIN, body.as_bytes())
}

#[test]
fn the_edge_admin_lists_its_kv_and_passes_conflict_queries_through() {
    let cloud = Cloud::start_on(crate::harness::Backend::Sled, false, &[]);
    let (token_a, token_b) = (cloud.enrol("edge-a", &[]), cloud.enrol("edge-b", &[]));
    // edge-a reaches the cloud through a link the test cuts.
    let mut link = Proxy::start(cloud.addr);
    let a = replicating_edge(
        "edge-a",
        &link.url(),
        &token_a,
        &["--admin-token", "s3cret"],
    );
    let b = replicating_edge(
        "edge-b",
        &cloud.url(),
        &token_b,
        &["--admin-token", "s3cret"],
    );

    // A delete leaves a tombstone on every node.
    set(&a, "gone", "soon");
    set(&a, "kept", "1");
    eventually("edge-a's writes on edge-b", || get(&b, "kept"));
    call(&a, "default/delete", "key=gone", b"");
    eventually("the delete at the cloud and on edge-b", || {
        (cloud.value("@kv", "gone").is_none() && get(&b, "gone").is_none()).then_some(())
    });

    // Cut off, edge-a writes what edge-b writes too: one divergent
    // conflict (a key that needs encoding), one benign.
    let contested = "a key/ü&=?";
    link.cut();
    set(&a, contested, "from-a");
    set(&a, "same", "both");
    std::thread::sleep(std::time::Duration::from_millis(5));
    set(&b, contested, "from-b");
    set(&b, "same", "both");
    eventually("edge-b's writes at the cloud", || {
        (cloud.value("@kv", contested).as_deref() == Some("from-b")
            && cloud.value("@kv", "same").is_some())
        .then_some(())
    });
    link.heal();
    let conflicts = eventually("both conflicts", || {
        let conflicts = cloud.conflicts();
        (conflicts.len() == 2).then_some(conflicts)
    });
    let divergent = conflicts
        .iter()
        .find(|c| c["key"] == contested)
        .unwrap()
        .clone();
    let divergent_id = divergent["id"].as_u64().unwrap();
    assert_eq!(divergent["kind"], "divergent");

    // Both edges' copies converge on the cloud's versions, tombstone
    // included, and page the same at any size.
    let keys = [contested, "gone", "kept", "same"];
    let converged = eventually("both edges' /kv equal to the cloud's", || {
        let (on_a, on_b) = (listing(&a, "@kv", 1000), listing(&b, "@kv", 1000));
        let names: Vec<&str> = on_a.iter().map(|i| i["key"].as_str().unwrap()).collect();
        let mut sorted = keys.to_vec();
        sorted.sort_unstable();
        (names == sorted && on_a == on_b && on_a == at_cloud(&cloud, "@kv", &on_a)).then_some(on_a)
    });
    assert_eq!(listing(&a, "@kv", 1), converged, "pages of one key");
    let gone = converged.iter().find(|i| i["key"] == "gone").unwrap();
    assert_eq!(gone["value"], Value::Null, "{gone}");
    assert_eq!(gone["version"]["node"], "edge-a", "{gone}");
    let kept = converged.iter().find(|i| i["key"] == "kept").unwrap();
    assert_eq!(kept["value"], "MQ==", "base64 of the value: {kept}");
    let won = converged.iter().find(|i| i["key"] == contested).unwrap();
    assert_eq!(won["version"], divergent["winner"], "{won}");
    // The cloud's own listing, in the same shape, agrees.
    let cloud_list = cloud.get("/v1/kv?store=%40kv&limit=1000");
    assert_eq!(cloud_list.status, 200, "{}", cloud_list.body);
    assert_eq!(
        cloud_list.json()["items"],
        json!(converged),
        "{}",
        cloud_list.body
    );
    let unknown = a.admin_get("/kv?store=never-opened", &ADMIN).json();
    assert_eq!(unknown, json!({ "items": [], "next": null }));
    assert_eq!(a.admin_get("/kv", &ADMIN).status, 400, "store is required");
    assert_eq!(a.admin_get("/kv?store=%40kv&limit=x", &ADMIN).status, 400);
    assert_eq!(a.admin_get("/kv?store=%40kv", &[]).status, 401);
    let stores = a.admin_get("/stores", &ADMIN).json();
    assert_eq!(stores["replicated"], json!(["@kv"]), "{stores}");
    assert_eq!(stores["local"], json!([]), "{stores}");

    // Filters pass through to the cloud, values re-encoded.
    let page = |path: &str| {
        let reply = a.admin_get(path, &ADMIN);
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        reply.json()
    };
    let keys_of = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["key"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(keys_of(&page("/conflicts?kind=divergent")), [contested]);
    assert_eq!(
        keys_of(&page("/conflicts?kind=benign&store=%40kv")),
        ["same"]
    );
    let prefix = format!("/conflicts?prefix={}", encode("a key/"));
    assert_eq!(keys_of(&page(&prefix)), [contested]);
    assert_eq!(keys_of(&page("/conflicts?prefix=zzz")).len(), 0);
    assert_eq!(keys_of(&page("/conflicts?node=edge-a&limit=10")).len(), 2);
    assert_eq!(keys_of(&page("/conflicts?store=other")).len(), 0);
    assert_eq!(keys_of(&page("/conflicts?reviewed=false")).len(), 2);
    assert_eq!(
        keys_of(&page("/conflicts?store=&kind=")).len(),
        2,
        "empty filters are no filter"
    );
    for bad in [
        "/conflicts?bogus=1",
        "/conflicts?limit=x",
        "/conflicts?kind=benign&kind=divergent",
        "/conflicts/stats?since=1",
        "/history?store=%40kv",
        "/history?key=k",
        "/history?store=%40kv&key=k&since=1",
    ] {
        let reply = a.admin_get(bad, &ADMIN);
        assert_eq!(reply.status, 400, "{bad}: {}", reply.body);
        assert!(reply.header("x-outpost-error-id").is_some(), "{bad}");
    }
    let refused = a.admin_get("/conflicts?kind=neither", &ADMIN);
    assert_eq!(
        refused.status, 400,
        "the cloud's verdict passes through: {}",
        refused.body
    );

    let stats = page("/conflicts/stats?store=%40kv&bucket_s=60");
    assert_eq!(
        (
            stats["total"].as_u64(),
            stats["benign"].as_u64(),
            stats["divergent"].as_u64()
        ),
        (Some(2), Some(1), Some(1)),
        "{stats}"
    );
    assert_eq!(
        stats["by_pair"][0]["nodes"],
        json!(["edge-a", "edge-b"]),
        "{stats}"
    );
    assert_eq!(page("/conflicts/stats?kind=divergent")["total"], 1);

    // The contested key's history: edge-b's version current, edge-a's
    // write lost to it in the conflict.
    let history = page(&format!(
        "/history?store=%40kv&key={}&limit=10",
        encode(contested)
    ));
    assert_eq!(history["key"], contested, "{history}");
    assert_eq!(
        history["current"]["version"], divergent["winner"],
        "{history}"
    );
    let lost = history["lost"].as_array().unwrap();
    assert_eq!(lost.len(), 1, "{history}");
    assert_eq!(lost[0]["conflict"], divergent_id);
    assert_eq!(lost[0]["version"], divergent["loser"]);
    assert_eq!(lost[0]["lost_to"], divergent["winner"]);

    // A review goes to the cloud as this node, behind the admin token.
    let path = format!("/conflicts/{divergent_id}/review");
    assert_eq!(a.admin_request("POST", &path, &[], b"{}").status, 401);
    assert_eq!(a.admin_get(&path, &ADMIN).status, 405);
    assert_eq!(admin_post(&a, "/conflicts/x/review", "{}").status, 400);
    assert_eq!(admin_post(&a, &path, "{\"note\": 5}").status, 400);
    assert_eq!(admin_post(&a, &path, "{\"by\": \"me\"}").status, 400);
    let reviewed = admin_post(&a, &path, "{\"note\": \"checked with the team\"}");
    assert_eq!(reviewed.status, 200, "{}", reviewed.body);
    let review = reviewed.json();
    assert_eq!(review["id"], divergent_id, "{review}");
    assert_eq!(review["review"]["by"], "node:edge-a", "{review}");
    assert_eq!(review["review"]["note"], "checked with the team");
    assert_eq!(keys_of(&page("/conflicts?reviewed=true")), [contested]);
    assert_eq!(page("/conflicts/stats")["reviewed"], 1);
    // Reviewing again answers the first review; a body is optional.
    let again = admin_post(&b, &format!("/conflicts/{divergent_id}/review"), "");
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(
        again.json()["review"]["by"],
        "node:edge-a",
        "{}",
        again.body
    );
    let missing = admin_post(&a, "/conflicts/999999/review", "{}");
    assert_eq!(missing.status, 404, "{}", missing.body);
    assert!(missing.header("x-outpost-error-id").is_some());

    // Without the link, the edge says the cloud is unreachable.
    link.cut();
    let unreachable = a.admin_get("/conflicts/stats", &ADMIN);
    assert_eq!(unreachable.status, 502, "{}", unreachable.body);
    assert_eq!(unreachable.json()["error"], "cloud-unreachable");
}

#[test]
fn without_a_cloud_the_explorer_endpoints_say_so_and_the_script_is_served() {
    let node = Node::start(&[("kv", "kvtest")]);
    for path in [
        "/conflicts",
        "/conflicts/stats",
        "/history?store=%40kv&key=k",
    ] {
        let reply = node.admin_get(path, &[]);
        assert_eq!(reply.status, 503, "{path}");
        assert_eq!(reply.json()["error"], "no-cloud", "{path}");
    }
    let review = node.admin_request("POST", "/conflicts/1/review", &[], b"");
    assert_eq!(review.status, 503);
    let script = node.admin_get("/explorer.js", &[]);
    assert_eq!(script.status, 200);
    assert!(
        script
            .header("content-type")
            .unwrap()
            .starts_with("application/javascript"),
        "{:?}",
        script.headers
    );
    assert!(script.body.contains("OutpostExplorer"));
    // A local store is listed as one, and its keys like any other.
    call(&node, "default/set", "key=k", b"v");
    let stores = node.admin_get("/stores", &[]).json();
    assert_eq!(stores, json!({ "replicated": [], "local": ["@kv"] }));
    let items = node.admin_get("/kv?store=%40kv", &[]).json()["items"].clone();
    assert_eq!(items[0]["key"], "k");
    assert_eq!(items[0]["value"], "dg==");
    assert_eq!(
        items[0]["version"]["node"],
        node.admin_get("/outbox", &[]).json()["node"]
    );
}
