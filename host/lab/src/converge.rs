//! Whether the lab has converged: every edge's outbox is empty and every
//! replicated store holds, on every edge, exactly the versions the cloud
//! holds (key by key, deletions included).

use crate::Lab;
use crate::fetch::FetchError;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Most keys compared per store; past it the check says it did not finish.
const MAX_KEYS: usize = 100_000;
/// Most differences reported.
const MAX_DIFFERENCES: usize = 20;

/// One key's version (HLC and node) and its value as the API gives it
/// (base64, `None` for a deletion): equal versions with different values
/// would be a corrupt copy, and must not pass as converged.
type Version = (u64, String, Option<String>);

/// The answer of one check.
#[derive(Debug, Clone, Serialize)]
pub struct Convergence {
    /// Every outbox empty and every store equal.
    pub converged: bool,
    /// Records waiting in each edge's outbox (`None`: the edge did not
    /// answer).
    pub outbox: BTreeMap<String, Option<u64>>,
    /// The replicated stores compared.
    pub stores: Vec<String>,
    /// Keys compared across all stores.
    pub keys: usize,
    /// What differs, first [`MAX_DIFFERENCES`] (`edge-2 store/key: ...`).
    pub differences: Vec<String>,
}

/// Compares every edge with the cloud now.
pub async fn check(lab: &Lab) -> Convergence {
    let mut differences = Vec::new();
    let mut outbox = BTreeMap::new();
    let mut stores = BTreeSet::new();
    for edge in &lab.edges {
        let name = &edge.node.name;
        let admin = admin_url(edge);
        let records = lab
            .fetch
            .get_json(&format!("{admin}/outbox"), None)
            .await
            .ok()
            .and_then(|o| o["records"].as_u64());
        match records {
            Some(0) => {}
            Some(n) => differences.push(format!("{name}: {n} records not yet acknowledged")),
            None => differences.push(format!("{name}: its admin API did not answer")),
        }
        outbox.insert(name.clone(), records);
        match lab.fetch.get_json(&format!("{admin}/stores"), None).await {
            Ok(listed) => stores.extend(store_names(&listed)),
            Err(e) => differences.push(format!("{name}: cannot list its stores: {e}")),
        }
    }
    let mut keys = 0;
    for store in &stores {
        let cloud = match versions(lab, None, store).await {
            Ok(v) => v,
            Err(e) => {
                differences.push(format!("cloud {store}: {e}"));
                continue;
            }
        };
        keys += cloud.len();
        for edge in &lab.edges {
            let name = &edge.node.name;
            let here = match versions(lab, Some(&admin_url(edge)), store).await {
                Ok(v) => v,
                Err(e) => {
                    differences.push(format!("{name} {store}: {e}"));
                    continue;
                }
            };
            differences.extend(compare(name, store, &cloud, &here));
        }
    }
    let converged = differences.is_empty();
    differences.truncate(MAX_DIFFERENCES);
    Convergence {
        converged,
        outbox,
        stores: stores.into_iter().collect(),
        keys,
        differences,
    }
}

fn admin_url(edge: &crate::Edge) -> String {
    edge.node
        .admin
        .map_or_else(String::new, |a| format!("http://{a}"))
}

/// Store ids from an edge's `/stores`: a list, or an object with a
/// `replicated` list.
fn store_names(listed: &serde_json::Value) -> Vec<String> {
    let list = listed
        .as_array()
        .or_else(|| listed["replicated"].as_array());
    list.into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

/// Every key of `store` with its version, at the cloud (`admin` is
/// `None`) or at the edge whose admin API is `admin`.
async fn versions(
    lab: &Lab,
    admin: Option<&str>,
    store: &str,
) -> Result<BTreeMap<String, Version>, String> {
    let mut all = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let mut query = format!("store={}&limit=1000", encode(store));
        if let Some(after) = &after {
            query.push_str(&format!("&after={}", encode(after)));
        }
        let page = match admin {
            Some(admin) => {
                lab.fetch
                    .get_json(&format!("{admin}/kv?{query}"), None)
                    .await
            }
            None => {
                lab.fetch
                    .get_json(
                        &format!("{}/v1/kv?{query}", lab.cloud_url()),
                        Some(&lab.token),
                    )
                    .await
            }
        }
        .map_err(|e: FetchError| e.to_string())?;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        for item in &items {
            let (Some(key), Some(hlc), Some(node)) = (
                item["key"].as_str(),
                item["version"]["hlc"].as_u64(),
                item["version"]["node"].as_str(),
            ) else {
                return Err(format!("an item without key or version: {item}"));
            };
            let value = item["value"].as_str().map(str::to_owned);
            all.insert(key.to_owned(), (hlc, node.to_owned(), value));
        }
        if all.len() > MAX_KEYS {
            return Err(format!("more than {MAX_KEYS} keys: not compared"));
        }
        match page["next"].as_str() {
            Some(next) if !items.is_empty() => after = Some(next.to_owned()),
            _ => return Ok(all),
        }
    }
}

/// What differs between the cloud's and one edge's versions of a store.
fn compare(
    edge: &str,
    store: &str,
    cloud: &BTreeMap<String, Version>,
    here: &BTreeMap<String, Version>,
) -> Vec<String> {
    let show = |v: Option<&Version>| {
        v.map_or_else(|| "nothing".to_owned(), |(h, n, _)| format!("{n}@{h}"))
    };
    let keys: BTreeSet<&String> = cloud.keys().chain(here.keys()).collect();
    keys.into_iter()
        .filter(|k| cloud.get(*k) != here.get(*k))
        .map(|k| match (here.get(k), cloud.get(k)) {
            (Some((h, n, _)), Some((ch, cn, _))) if h == ch && n == cn => {
                format!("{edge} {store}/{k}: same version {n}@{h} as the cloud, another value")
            }
            (mine, theirs) => format!(
                "{edge} {store}/{k}: has {}, the cloud {}",
                show(mine),
                show(theirs)
            ),
        })
        .collect()
}

/// Percent-encodes a query value.
pub fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_key_a_different_version_and_a_different_value_are_differences() {
        let v = |h: u64, n: &str, value: &str| (h, n.to_owned(), Some(value.to_owned()));
        let cloud = BTreeMap::from([
            ("a".to_owned(), v(2, "edge-1", "AA==")),
            ("b".to_owned(), v(1, "edge-2", "AA==")),
            ("c".to_owned(), v(1, "edge-2", "AA==")),
        ]);
        let here = BTreeMap::from([
            ("a".to_owned(), v(1, "edge-2", "AA==")),
            ("c".to_owned(), v(1, "edge-2", "AQ==")),
        ]);
        let found = compare("edge-2", "s", &cloud, &here);
        assert_eq!(
            found,
            vec![
                "edge-2 s/a: has edge-2@1, the cloud edge-1@2".to_owned(),
                "edge-2 s/b: has nothing, the cloud edge-2@1".to_owned(),
                "edge-2 s/c: same version edge-2@1 as the cloud, another value".to_owned(),
            ]
        );
        assert!(compare("edge-1", "s", &cloud, &cloud).is_empty());
    }

    #[test]
    fn stores_are_read_from_a_list_or_an_object() {
        let list = serde_json::json!(["x", "y"]);
        assert_eq!(store_names(&list), ["x", "y"]);
        let object = serde_json::json!({ "replicated": ["z"], "local": ["w"] });
        assert_eq!(store_names(&object), ["z"]);
    }
}
