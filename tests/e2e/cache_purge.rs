//! A function purges its own entries from the node's HTTP cache by
//! surrogate key (`outpost:edge/cache`), from inside a request: the real
//! binary and the `cachetest` guest, whose `?purge=KEY` purges first and
//! answers `"purged"` (how many entries went, or the error's name), and
//! whose `nonce` tells a fresh run from a cache hit.

use crate::harness::*;
use crate::http_cache::{cache, nonce};

/// Stores `path` (a miss, then a hit) and returns the stored nonce.
fn stored(node: &Node, path: &str) -> String {
    let first = node.get(path);
    assert_eq!(first.status, 200, "{path}: {}", first.body);
    let second = node.get(path);
    assert_eq!(cache(&second), "hit", "{path}");
    assert_eq!(nonce(&second), nonce(&first), "{path}");
    nonce(&first)
}

/// A request that purges by `key` (itself never stored: no `cc`); its
/// `"purged"`.
fn purge(node: &Node, function: &str, key: &str) -> serde_json::Value {
    let reply = node.get(&format!("/{function}/x?purge={}", encode(key)));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_ne!(cache(&reply), "hit");
    reply.json()["purged"].clone()
}

#[test]
fn a_guest_purges_its_own_entries_by_surrogate_key_and_no_other_functions() {
    let node = Node::start(&[("c", "cachetest"), ("d", "cachetest")]);
    let c_news = "/c/one?cc=public,max-age=600&sk=news";
    let c_both = "/c/two?cc=public,max-age=600&sk=sports%20news";
    let c_sports = "/c/three?cc=public,max-age=600&sk=sports";
    let d_news = "/d/one?cc=public,max-age=600&sk=news";
    let before: Vec<String> = [c_news, c_both, c_sports, d_news]
        .iter()
        .map(|p| stored(&node, p))
        .collect();

    let from = node.log_len();
    assert_eq!(purge(&node, "c", "news"), 2);
    let line = node.wait_log_after("guest purged", from);
    assert!(
        line.contains("INFO")
            && line.contains("outpost::cache")
            && line.contains("function=c")
            && line.contains("key=\"news\"")
            && line.contains("entries=2"),
        "{line}"
    );
    // Nothing of c's is tagged `news` any more.
    assert_eq!(purge(&node, "c", "news"), 0);

    // c's two `news` pages run again; its `sports`-only page and d's
    // `news` page are still served from the cache.
    for (path, old) in [(c_news, &before[0]), (c_both, &before[1])] {
        let again = node.get(path);
        assert_eq!(cache(&again), "miss", "{path}");
        assert_ne!(&nonce(&again), old, "{path}");
    }
    for (path, old) in [(c_sports, &before[2]), (d_news, &before[3])] {
        let kept = node.get(path);
        assert_eq!(cache(&kept), "hit", "{path}");
        assert_eq!(&nonce(&kept), old, "{path}");
    }

    // d purges its own `news` entry, and only that one.
    assert_eq!(purge(&node, "d", "news"), 1);
    assert_eq!(cache(&node.get(d_news)), "miss");
    assert_eq!(cache(&node.get(c_news)), "hit");

    // A key no Surrogate-Key header can carry is refused, nothing purged.
    for bad in ["", "two words", &"k".repeat(1025)] {
        assert_eq!(purge(&node, "c", bad), "invalid-key", "{bad:?}");
    }
    assert_eq!(cache(&node.get(c_news)), "hit");
    let stats = node.admin_get("/cache", &[]).json();
    assert_eq!(stats["functions"]["c"]["entries"], 3, "{stats}");
}

#[test]
fn without_a_host_cache_a_purge_is_unavailable() {
    let dir = prepare(&[("c", "cachetest")]);
    write_host_config(&dir, "[cache]\nenabled = false\n");
    let node = Node::spawn(dir, vec![], None);
    assert_eq!(purge(&node, "c", "news"), "unavailable");
    // The key is checked first: a bad one is a bad one, cache or not.
    assert_eq!(purge(&node, "c", ""), "invalid-key");
    // The function still serves; nothing is stored.
    let path = "/c/one?cc=public,max-age=600&sk=news";
    assert_ne!(nonce(&node.get(path)), nonce(&node.get(path)));
}
