//! The node's HTTP cache in front of functions (RFC 9111, a shared cache):
//! the real binary and the `cachetest` guest, which sets whatever cache
//! headers the query asks for and puts a new `nonce` in every body it
//! makes, so a hit (the stored nonce again) is told from a run.

use crate::harness::*;
use std::time::Duration;

fn node() -> Node {
    Node::start(&[("c", "cachetest")])
}

/// The nonce of a reply's body: which run of the function made it.
pub(crate) fn nonce(reply: &Reply) -> String {
    reply.json()["nonce"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// What the cache said it did.
pub(crate) fn cache(reply: &Reply) -> &str {
    reply.header("x-outpost-cache").unwrap_or("(none)")
}

#[test]
fn a_cacheable_response_is_served_from_the_cache_until_it_expires() {
    let node = node();
    let path = "/c/page?cc=public,max-age=2";
    let first = node.get(path);
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(cache(&first), "miss");
    let second = node.get(path);
    assert_eq!(cache(&second), "hit");
    assert_eq!(
        nonce(&second),
        nonce(&first),
        "a hit does not run the function"
    );
    assert!(
        second
            .header("age")
            .is_some_and(|a| a.parse::<u64>().is_ok())
    );
    // Another query is another entry.
    let other = node.get("/c/page?cc=public,max-age=2&x=1");
    assert_eq!(cache(&other), "miss");
    // Past max-age the function runs again.
    std::thread::sleep(Duration::from_millis(2200));
    let later = node.get(path);
    assert_eq!(cache(&later), "miss");
    assert_ne!(nonce(&later), nonce(&first));
    // HEAD is answered from the GET's entry, with its length.
    let head = node.request("HEAD", path, &[], b"");
    assert_eq!(cache(&head), "hit");
    assert_eq!(
        head.header("content-length"),
        Some(node.get(path).body.len().to_string().as_str())
    );
    let stats = node.admin_get("/cache", &[]).json();
    let c = &stats["functions"]["c"];
    assert_eq!(c["misses"], 3, "{stats}");
    assert!(c["hits"].as_u64() >= Some(3), "{stats}");
    assert_eq!(c["entries"], 2, "{stats}");
}

#[test]
fn what_a_shared_cache_must_not_store_runs_the_function_every_time() {
    let node = node();
    for (what, path, headers) in [
        ("no-store", "/c/a?cc=public,max-age=60,no-store", vec![]),
        ("private", "/c/b?cc=private,max-age=60", vec![]),
        ("no freshness", "/c/c", vec![]),
        (
            "set-cookie",
            "/c/d?cc=public,max-age=60&setcookie=1",
            vec![],
        ),
        (
            "authorization without public",
            "/c/e?cc=max-age=60",
            vec![("authorization", "Bearer x")],
        ),
        (
            "a request's no-store",
            "/c/f?cc=public,max-age=60",
            vec![("cache-control", "no-store")],
        ),
        // A 500 is stored only if it says `public` (RFC 9111 §3).
        ("a 500", "/c/g?cc=max-age=60&status=500", vec![]),
    ] {
        let one = node.request("GET", path, &headers, b"");
        let two = node.request("GET", path, &headers, b"");
        assert_eq!(cache(&two), "miss", "{what}");
        assert_ne!(nonce(&one), nonce(&two), "{what}: stored anyway");
    }
    // `public` lets a response to a request with credentials be shared.
    let auth = [("authorization", "Bearer x")];
    let path = "/c/h?cc=public,max-age=60";
    let one = node.request("GET", path, &auth, b"");
    let two = node.request("GET", path, &auth, b"");
    assert_eq!(cache(&two), "hit");
    assert_eq!(nonce(&one), nonce(&two));
    // A POST is never looked up, and it makes what is stored out of date.
    let post = node.request("POST", path, &[], b"x");
    assert_eq!(cache(&post), "bypass");
    assert_eq!(cache(&node.get(path)), "miss");
}

#[test]
fn vary_keeps_one_entry_per_header_value() {
    let node = node();
    let path = "/c/v?cc=public,max-age=60&vary=accept-language";
    let get = |lang: &str| node.request("GET", path, &[("accept-language", lang)], b"");
    let en = get("en");
    let fr = get("fr");
    assert_eq!((cache(&en), cache(&fr)), ("miss", "miss"));
    let en2 = get("en");
    let fr2 = get("fr");
    assert_eq!((cache(&en2), cache(&fr2)), ("hit", "hit"));
    assert_eq!(nonce(&en2), nonce(&en));
    assert_eq!(nonce(&fr2), nonce(&fr));
    assert_ne!(nonce(&en), nonce(&fr));
    assert_eq!(en2.json()["headers"]["accept-language"], "en");
    // `Vary: *` matches no later request.
    let star = "/c/s?cc=public,max-age=60&vary=*";
    node.get(star);
    assert_eq!(cache(&node.get(star)), "miss");
}

#[test]
fn a_client_validator_that_matches_gets_304_from_the_cache() {
    let node = node();
    let path = "/c/e?cc=public,max-age=60&etag=%22v1%22";
    let full = node.get(path);
    assert_eq!(full.header("etag"), Some("\"v1\""));
    let not_modified = node.request("GET", path, &[("if-none-match", "\"v1\"")], b"");
    assert_eq!(not_modified.status, 304);
    assert_eq!(cache(&not_modified), "hit");
    assert_eq!(not_modified.header("etag"), Some("\"v1\""));
    assert!(not_modified.body.is_empty());
    let weak = node.request("GET", path, &[("if-none-match", "W/\"v1\", \"x\"")], b"");
    assert_eq!(weak.status, 304, "weak comparison");
    let other = node.request("GET", path, &[("if-none-match", "\"v2\"")], b"");
    assert_eq!(other.status, 200);
    assert_eq!(cache(&other), "hit");
    assert_eq!(nonce(&other), nonce(&full));
}

#[test]
fn a_stale_entry_is_served_while_one_refresh_runs_for_fifty_waiting_clients() {
    let node = node();
    // The function takes 500 ms, so the refresh is still running while all
    // fifty requests arrive.
    let path = "/c/swr?cc=public,max-age=1,stale-while-revalidate=60&sleep_ms=500";
    let first = node.get(path);
    assert_eq!(cache(&first), "miss");
    std::thread::sleep(Duration::from_millis(1300));
    let url = node.url(path);
    let replies: Vec<Reply> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50).map(|_| s.spawn(|| http_get(&url, &[]))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &replies {
        assert_eq!(r.status, 200);
        assert_eq!(cache(r), "stale", "{:?}", r.headers);
        assert_eq!(nonce(r), nonce(&first));
    }
    let refreshed = eventually("the refresh is stored", || {
        let r = node.get(path);
        (cache(&r) == "hit" && nonce(&r) != nonce(&first)).then_some(r)
    });
    assert_eq!(refreshed.status, 200);
    let stats = node.admin_get("/cache", &[]).json();
    assert_eq!(stats["functions"]["c"]["refreshes"], 1, "{stats}");
    assert_eq!(stats["functions"]["c"]["misses"], 1, "{stats}");
}

#[test]
fn purges_by_url_surrogate_key_and_function_empty_what_they_name() {
    let node = node();
    let a = "/c/a?cc=public,max-age=60&sk=products%20p1";
    let b = "/c/b?cc=public,max-age=60&sk=products%20p2";
    let c = "/c/c?cc=public,max-age=60";
    for p in [a, b, c] {
        node.get(p);
        assert_eq!(cache(&node.get(p)), "hit", "{p}");
    }
    let purge = |body: String| {
        let r = node.admin_request("POST", "/cache/purge", &[], body.as_bytes());
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["purged"].as_u64().unwrap()
    };
    assert_eq!(purge(r#"{"surrogate_key":"p1"}"#.into()), 1);
    assert_eq!(cache(&node.get(a)), "miss");
    assert_eq!(cache(&node.get(b)), "hit");
    assert_eq!(purge(format!(r#"{{"url":"{}"}}"#, node.url(c))), 1);
    assert_eq!(cache(&node.get(c)), "miss");
    assert_eq!(
        purge(r#"{"surrogate_key":"products","function":"c"}"#.into()),
        2
    );
    assert_eq!(cache(&node.get(b)), "miss");
    // Left: b and c, stored again by the misses above.
    assert_eq!(purge(r#"{"function":"c"}"#.into()), 2);
    // Bad bodies say what to send.
    let bad = node.admin_request(
        "POST",
        "/cache/purge",
        &[],
        br#"{"function":"c","url":"x"}"#,
    );
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("exactly one"), "{}", bad.body);
    let not_absolute = node.admin_request("POST", "/cache/purge", &[], br#"{"url":"/c/a"}"#);
    assert_eq!(not_absolute.status, 400);
}

#[test]
fn a_new_version_starts_with_an_empty_cache_unless_it_keeps_it() {
    let node = node();
    let path = "/c/d?cc=public,max-age=600";
    let first = node.get(path);
    assert_eq!(cache(&node.get(path)), "hit");
    // A settings change is a new version.
    node.write_settings("c", "[cache]\nkeep-on-deploy = false\n");
    eventually("the new version serves, its cache empty", || {
        let r = node.get(path);
        (cache(&r) == "miss").then_some(())
    });
    let second = node.get(path);
    assert_eq!(cache(&second), "hit");
    assert_ne!(nonce(&second), nonce(&first));
    node.write_settings("c", "[cache]\nkeep-on-deploy = true\n");
    node.wait_log("settings changed|reloaded|deployed");
    std::thread::sleep(Duration::from_millis(1500));
    let kept = node.get(path);
    assert_eq!(cache(&kept), "hit");
    assert_eq!(nonce(&kept), nonce(&second));
    // A function may turn the cache off for itself.
    node.write_settings("c", "[cache]\nenabled = false\n");
    eventually("the cache no longer answers for c", || {
        (cache(&node.get(path)) == "bypass").then_some(())
    });
}

#[test]
fn the_memory_budget_holds_under_many_distinct_urls() {
    let dir = prepare(&[("c", "cachetest")]);
    write_host_config(
        &dir,
        "[cache]\nmemory-bytes = 4194304\nmax-object-bytes = 131072\n",
    );
    let node = Node::spawn(dir, vec![], None);
    let rss_before = rss_bytes(node.pid());
    // 600 distinct 64 KiB responses: ~38 MiB through a 4 MiB cache.
    for i in 0..600 {
        let r = node.get(&format!("/c/big/{i}?cc=public,max-age=600&bytes=65536"));
        assert_eq!(r.status, 200);
    }
    let stats = node.admin_get("/cache", &[]).json();
    assert!(stats["bytes"].as_u64().unwrap() <= 4_194_304, "{stats}");
    assert!(stats["evictions"].as_u64().unwrap() > 500, "{stats}");
    // The process did not keep what it evicted (allocator slack aside).
    let grown = rss_bytes(node.pid()).saturating_sub(rss_before);
    assert!(grown < 32 * 1024 * 1024, "RSS grew {grown} bytes");
    // A body over max-object-bytes passes through unstored.
    let big = "/c/huge?cc=public,max-age=600&bytes=200000";
    node.get(big);
    assert_eq!(cache(&node.get(big)), "miss");
}

#[test]
fn the_status_header_can_be_turned_off_and_a_bad_cache_setting_is_refused() {
    let dir = prepare(&[("c", "cachetest")]);
    write_host_config(&dir, "[cache]\nstatus-header = false\n");
    let node = Node::spawn(dir, vec![], None);
    let path = "/c/q?cc=public,max-age=60";
    let one = node.get(path);
    let two = node.get(path);
    assert_eq!(two.header("x-outpost-cache"), None);
    assert_eq!(nonce(&one), nonce(&two), "still cached");

    let dir = prepare(&[("c", "cachetest")]);
    write_host_config(&dir, "[cache]\nmemory-bytes = 1000\n");
    let output = Node::command(&dir, &[], None)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run outpost serve");
    assert!(!output.status.success());
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        log.contains("cache.memory-bytes") && log.contains("1 MiB"),
        "{log}"
    );
}

#[test]
fn a_stale_entry_answers_when_the_function_fails_within_stale_if_error() {
    let node = node();
    let path = "/c/sie?cc=public,max-age=1,stale-if-error=60";
    let first = node.get(path);
    assert_eq!(cache(&first), "miss");
    std::thread::sleep(Duration::from_millis(1300));
    // The same URL, but this run traps (the guest reads `x-trap`, which the
    // cache key does not include).
    let failed = node.request("GET", path, &[("x-trap", "1")], b"");
    assert_eq!(failed.status, 200, "{}", failed.body);
    assert_eq!(cache(&failed), "stale");
    assert_eq!(nonce(&failed), nonce(&first));
    node.wait_log("stale-if-error");
    // Without stale-if-error the failure is the answer.
    let strict = "/c/strict?cc=public,max-age=1";
    node.get(strict);
    std::thread::sleep(Duration::from_millis(1300));
    let failed = node.request("GET", strict, &[("x-trap", "1")], b"");
    assert_eq!(failed.status, 500);
    assert_eq!(cache(&failed), "miss");
}
