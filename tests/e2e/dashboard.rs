//! The dashboard in a real headless browser: Debian's chromium through
//! chromedriver, driven over WebDriver. It must load, show the
//! node's functions, and update while requests flow, without a reload.

use crate::harness::{Node, WAIT, free_port};
use crate::webdriver::Session;
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A chromedriver process on a free port, killed on drop.
struct ChromeDriver {
    child: Child,
    url: String,
}

impl ChromeDriver {
    fn start() -> ChromeDriver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "chromedriver is missing: `cargo xtask test` installs chromium and chromium-driver",
            );
        let url = format!("http://127.0.0.1:{port}");
        crate::harness::eventually("chromedriver listening", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        ChromeDriver { child, url }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn browser(driver: &ChromeDriver, profile: &std::path::Path) -> Session {
    Session::new(
        &driver.url,
        json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new",
                    // CI runs as root in a container: no sandbox, no /dev/shm.
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }),
    )
}

/// What the page shows now, read from its DOM.
fn page_state(browser: &Session) -> Value {
    browser.execute(
        r#"
        const rows = {};
        for (const tr of document.querySelectorAll('#functions tr[data-function]')) {
            rows[tr.dataset.function] = {
                requests: tr.querySelector('td.requests')?.textContent.trim(),
                errors: tr.querySelector('td.errors')?.textContent.trim(),
                version: tr.querySelector('td.version')?.textContent.trim(),
                dot: tr.querySelector('.dot')?.className,
                err_pct: tr.querySelector('td.err-pct')?.textContent.trim(),
                rate: tr.querySelector('td.rate')?.textContent.trim(),
                cache_hit: tr.querySelector('td.cache-hit')?.textContent.trim(),
            };
        }
        const text = id => document.getElementById(id)?.textContent.trim();
        const events = [...document.querySelectorAll('#events li')]
            .map(li => li.dataset.kind + ':' + li.dataset.function);
        return {
            polls: Number(document.body.dataset.polls || 0),
            rows,
            events,
            outbox: document.getElementById('outbox-records')?.textContent.trim(),
            cache: {
                held: text('cache-bytes'),
                entries: text('cache-entries'),
                evictions: text('cache-evictions'),
                hit_ratio: text('cache-hit-ratio'),
            },
        };
    "#,
    )
}

/// Polls the page until `check` accepts its state.
fn wait_until(browser: &Session, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let state = page_state(browser);
        if check(&state) {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; page: {state}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_dashboard_shows_the_nodes_functions_and_updates_live() {
    let node = Node::start(&[("hello", "hello"), ("trap", "trap"), ("c", "cachetest")]);
    for _ in 0..2 {
        assert_eq!(node.get("/hello").status, 200);
    }
    assert_eq!(node.get("/trap/panic").status, 500);
    // A miss, then a hit: half of c's looked-up requests came from the cache.
    let cached = "/c/x?cc=public,max-age=60";
    for expected in ["miss", "hit"] {
        assert_eq!(node.get(cached).header("x-outpost-cache"), Some(expected));
    }
    let driver = ChromeDriver::start();
    let profile = tempfile::tempdir().unwrap();
    let browser = browser(&driver, profile.path());
    browser.goto(&format!("http://{}/", node.admin));
    assert!(browser.has_element("canvas#latency-chart"));
    assert!(browser.has_element("canvas#outbox-chart"));
    assert!(!browser.has_element("#no-such-thing"), "lookups can fail");
    let first = wait_until(&browser, "both functions with their counts", |s| {
        s["rows"]["hello"]["requests"] == "2" && s["rows"]["trap"]["errors"] == "1"
    });
    let version = node.admin_get("/functions", &[]).json()["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "hello")
        .unwrap()["version"]
        .clone();
    assert_eq!(first["rows"]["hello"]["version"], version);
    assert!(
        first["events"]
            .as_array()
            .unwrap()
            .contains(&json!("loaded:hello")),
        "{first}"
    );
    assert_eq!(first["outbox"], "0");
    // Each function's cache hit ratio; hello's responses are not stored
    // (no freshness), so every request of it was a miss.
    let cache = wait_until(&browser, "c's cache hit ratio", |s| {
        s["rows"]["c"]["cache_hit"] == "50%"
    });
    assert_eq!(cache["rows"]["hello"]["cache_hit"], "0%", "{cache}");
    assert_eq!(cache["cache"]["entries"], "1", "{cache}");
    assert_eq!(cache["cache"]["evictions"], "0", "{cache}");
    assert!(
        cache["cache"]["held"]
            .as_str()
            .is_some_and(|t| t.contains(" of ") && !t.starts_with('0')),
        "{cache}"
    );

    // Live: more requests show up in the open page.
    for _ in 0..3 {
        assert_eq!(node.get("/hello").status, 200);
    }
    assert_eq!(node.get(cached).header("x-outpost-cache"), Some("hit"));
    let polls = first["polls"].as_u64().unwrap();
    wait_until(&browser, "the new requests", |s| {
        s["rows"]["hello"]["requests"] == "5" && s["polls"].as_u64().unwrap() > polls
    });
    let seen = wait_until(&browser, "c's new hit", |s| {
        s["rows"]["c"]["cache_hit"] == "66.7%"
    });
    // Over all functions: 2 hits of 9 looked up (hello 5, trap 1, c 3).
    assert_eq!(seen["cache"]["hit_ratio"], "22.2%", "{seen}");
    // Polls later, with no request in between, the rate still counts them
    // (it spans seconds, not one poll).
    let polls = seen["polls"].as_u64().unwrap();
    let later = wait_until(&browser, "three more polls", |s| {
        s["polls"].as_u64().unwrap() >= polls + 3
    });
    let rate = later["rows"]["hello"]["rate"].as_str().unwrap().to_owned();
    assert!(rate != "0.00" && rate != "–", "hello's req/s: {later}");

    // A function failing every request is red with its error share, not
    // green with none; a healthy one is green.
    let state = page_state(&browser);
    assert_eq!(state["rows"]["trap"]["dot"], "dot bad", "{state}");
    assert_eq!(state["rows"]["trap"]["err_pct"], "100%", "{state}");
    assert_eq!(state["rows"]["hello"]["dot"], "dot ok", "{state}");
    // A deleted function leaves the list (its events stay).
    std::fs::remove_file(node.module_path("trap")).unwrap();
    let gone = wait_until(&browser, "the deleted function gone", |s| {
        s["rows"].get("trap").is_none()
    });
    assert!(
        gone["events"]
            .as_array()
            .unwrap()
            .contains(&json!("removed:trap")),
        "{gone}"
    );
}

/// The conflict explorer as the page shows it, read from its DOM: each
/// conflict by key, the counts, and the history panel.
fn explorer_state(browser: &Session) -> Value {
    browser.execute(
        r#"
        const q = (e, id) => e && e.querySelector(`[data-testid="${id}"]`);
        const text = e => e ? e.textContent.trim() : null;
        const root = q(document, 'explorer');
        const side = s => s && {
            node: s.dataset.node,
            hlc: s.dataset.hlc,
            ms: Number(q(s, 'write-time').dataset.ms),
            value: q(s, 'write-value').textContent,
            format: q(s, 'write-value').dataset.format,
            toggle: !!q(s, 'value-toggle'),
        };
        const conflicts = {};
        for (const a of document.querySelectorAll('[data-testid="conflict"]')) {
            conflicts[a.dataset.key] = {
                id: Number(a.dataset.conflictId),
                store: a.dataset.store,
                kind: a.dataset.kind,
                badge: text(q(a, 'conflict-kind')),
                badge_class: q(a, 'conflict-kind').className,
                winner_node: text(q(a, 'conflict-winner-node')),
                reason: q(a, 'conflict-reason').dataset.reason,
                reason_text: text(q(a, 'conflict-reason')),
                reviewed: a.dataset.reviewed,
                review_by: text(q(a, 'review-by')),
                winner: side(q(a, 'conflict-winner')),
                loser: side(q(a, 'conflict-loser')),
                text: a.textContent,
            };
        }
        const history = q(document, 'history');
        return {
            loads: Number(root ? root.dataset.loads : 0),
            state: root ? root.dataset.state : null,
            error: text(q(document, 'explorer-error')),
            conflicts,
            stats: {
                total: text(q(document, 'stat-total')),
                benign: text(q(document, 'stat-benign')),
                divergent: text(q(document, 'stat-divergent')),
                reviewed: text(q(document, 'stat-reviewed')),
                stores: [...document.querySelectorAll('[data-testid="stats-by-store"] tr[data-store]')]
                    .map(tr => [tr.dataset.store, Number(tr.children[1].textContent)]),
                pairs: [...document.querySelectorAll('[data-testid="stats-by-pair"] tr[data-pair]')]
                    .map(tr => [tr.dataset.pair, Number(tr.children[1].textContent)]),
                bars: [...document.querySelectorAll('[data-testid="over-time-bar"]')]
                    .reduce((n, b) => n + Number(b.dataset.count), 0),
            },
            history: history && !history.hidden ? {
                key: history.dataset.key,
                state: history.dataset.state,
                text: history.textContent,
                versions: [...history.querySelectorAll('[data-testid="history-version"]')].map(v => ({
                    node: v.dataset.node,
                    hlc: v.dataset.hlc,
                    current: v.dataset.current,
                    value: q(v, 'write-value').textContent,
                    lost: [...v.querySelectorAll('[data-testid="history-lost"]')].map(l => ({
                        conflict: Number(l.dataset.conflictId),
                        node: q(l, 'history-lost-write').dataset.node,
                        value: q(l, 'write-value').textContent,
                    })),
                })),
            } : null,
        };
    "#,
    )
}

/// Polls the explorer until `check` accepts its state.
fn wait_explorer(browser: &Session, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let state = explorer_state(browser);
        if check(&state) {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; explorer: {state}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How the value block of one side of the conflict on `key` sits on the
/// page: whether it shows all its text (no part clipped, no horizontal
/// overflow) and its toggle's label.
fn value_box(browser: &Session, key: &str, side: &str) -> Value {
    browser.execute(&format!(
        r#"
        const a = [...document.querySelectorAll('[data-testid="conflict"]')]
            .find(a => a.dataset.key === {key});
        const pre = a.querySelector('[data-testid="conflict-{side}"] [data-testid="write-value"]');
        const toggle = a.querySelector('[data-testid="conflict-{side}"] [data-testid="value-toggle"]');
        return {{
            clipped: pre.scrollHeight > pre.clientHeight + 1,
            overflows_sideways: pre.scrollWidth > pre.clientWidth + 1,
            height: pre.clientHeight,
            toggle: toggle ? toggle.textContent : null,
            expanded: toggle ? toggle.getAttribute('aria-expanded') : null,
        }};
    "#,
        key = json!(key),
    ))
}

/// Clicks the element `selector` finds inside the conflict on `key`.
fn click_in_conflict(browser: &Session, key: &str, selector: &str) {
    let clicked = browser.execute(&format!(
        r#"
        const a = [...document.querySelectorAll('[data-testid="conflict"]')]
            .find(a => a.dataset.key === {key});
        const e = a && a.querySelector({selector});
        if (!e) return false;
        e.click();
        return true;
    "#,
        key = json!(key),
        selector = json!(selector),
    ));
    assert_eq!(clicked, json!(true), "{selector} in the conflict on {key}");
}

#[test]
fn the_conflict_explorer_shows_both_values_in_full_the_winner_and_the_kind() {
    use crate::harness::{Cloud, TOKEN, replicating_edge};
    use crate::replication::set;
    // Both edges write before the cloud is up: neither sees the other's
    // write, so every key both wrote is a conflict at the cloud.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let a = replicating_edge("edge-a", &url, TOKEN, &["--admin-token", "s3cret"]);
    let b = replicating_edge("edge-b", &url, TOKEN, &[]);
    // A value far longer than the panel is wide or tall, without a space
    // to wrap at.
    let long: String = (0..300)
        .map(|i| format!("{i:04}-abcde"))
        .collect::<String>()
        + "|END";
    assert!(long.len() > 3000);
    set(&a, "same", "one value");
    set(&a, "long", "short from a");
    std::thread::sleep(Duration::from_millis(5));
    set(&b, "same", "one value");
    set(&b, "long", &long);

    let cloud = Cloud::start_at(port);
    let conflicts = crate::harness::eventually("both conflicts at the cloud", || {
        let conflicts = cloud.conflicts();
        (conflicts.len() == 2).then_some(conflicts)
    });
    let by_key = |key: &str| {
        conflicts
            .iter()
            .find(|c| c["key"] == key)
            .unwrap_or_else(|| panic!("no conflict on {key}: {conflicts:?}"))
            .clone()
    };
    let (same, divergent) = (by_key("same"), by_key("long"));
    assert_eq!(same["kind"], "benign");
    assert_eq!(divergent["kind"], "divergent");

    let driver = ChromeDriver::start();
    let profile = tempfile::tempdir().unwrap();
    let browser = browser(&driver, profile.path());
    // The token from the address, as the rest of the dashboard takes it.
    browser.goto(&format!("http://{}/#token=s3cret", a.admin));
    let page = wait_explorer(&browser, "both conflicts and their counts", |s| {
        s["conflicts"].as_object().is_some_and(|c| c.len() == 2) && s["stats"]["total"] == "2"
    });
    assert_eq!(page["state"], "ok", "{page}");

    let shown = &page["conflicts"]["long"];
    assert_eq!(shown["id"], divergent["id"]);
    assert_eq!(shown["store"], "@kv");
    assert_eq!(shown["badge"], "divergent", "{shown}");
    assert!(
        shown["badge_class"]
            .as_str()
            .unwrap()
            .contains("ox-divergent"),
        "{shown}"
    );
    assert_eq!(shown["winner_node"], "edge-b");
    assert_eq!(shown["reason"], "higher-hlc");
    assert!(
        shown["reason_text"]
            .as_str()
            .unwrap()
            .contains("higher HLC"),
        "{shown}"
    );
    // Both values, whole, as the cloud decoded them; both writes' times.
    assert_eq!(shown["winner"]["value"], long.as_str());
    assert_eq!(shown["winner"]["node"], "edge-b");
    assert_eq!(shown["winner"]["ms"], divergent["winner_ms"]);
    assert_eq!(
        shown["winner"]["hlc"],
        divergent["winner"]["hlc"].to_string()
    );
    assert_eq!(shown["loser"]["value"], "short from a");
    assert_eq!(shown["loser"]["node"], "edge-a");
    assert_eq!(shown["loser"]["ms"], divergent["loser_ms"]);
    assert_eq!(shown["winner"]["toggle"], true, "a long value folds");
    assert_eq!(shown["loser"]["toggle"], false, "a short one does not");
    let benign = &page["conflicts"]["same"];
    assert_eq!(benign["badge"], "benign", "{benign}");
    assert!(
        benign["badge_class"]
            .as_str()
            .unwrap()
            .contains("ox-benign")
    );
    assert_eq!(benign["winner"]["value"], "one value");
    assert_eq!(benign["loser"]["value"], "one value");
    assert_eq!(benign["reviewed"], "false");
    for (key, conflict) in page["conflicts"].as_object().unwrap() {
        let text = conflict["text"].as_str().unwrap();
        assert!(
            !text.contains("null") && !text.contains("undefined"),
            "{key}: {text}"
        );
    }

    // Folded, the long value is clipped (its text all in the DOM); shown
    // in full, none of it is hidden, and it wraps rather than scrolls.
    let folded = value_box(&browser, "long", "winner");
    assert_eq!(folded["clipped"], true, "{folded}");
    assert_eq!(folded["expanded"], "false", "{folded}");
    click_in_conflict(
        &browser,
        "long",
        "[data-testid=\"conflict-winner\"] [data-testid=\"value-toggle\"]",
    );
    let open = value_box(&browser, "long", "winner");
    assert_eq!(open["clipped"], false, "{open}");
    assert_eq!(open["overflows_sideways"], false, "{open}");
    assert_eq!(open["expanded"], "true", "{open}");
    assert!(
        open["height"].as_f64() > folded["height"].as_f64(),
        "{open} vs {folded}"
    );
    assert_eq!(
        value_box(&browser, "long", "loser")["overflows_sideways"],
        false
    );

    // Counts per store and node pair, and the chart, over both.
    let stats = &page["stats"];
    assert_eq!(
        (stats["benign"].as_str(), stats["divergent"].as_str()),
        (Some("1"), Some("1")),
        "{stats}"
    );
    assert_eq!(stats["stores"], json!([["@kv", 2]]), "{stats}");
    assert_eq!(stats["pairs"], json!([["edge-a|edge-b", 2]]), "{stats}");
    assert_eq!(stats["bars"], 2, "{stats}");

    // Marked reviewed from the page: the cloud records it, as the edge's
    // credential (development mode's shared token here).
    click_in_conflict(&browser, "same", "[data-testid=\"review-button\"]");
    let reviewed = wait_explorer(&browser, "the review", |s| {
        s["conflicts"]["same"]["reviewed"] == "true"
    });
    assert_eq!(
        reviewed["conflicts"]["same"]["review_by"], "dev",
        "{reviewed}"
    );
    let text = reviewed["conflicts"]["same"]["text"].as_str().unwrap();
    assert!(
        !text.contains("null") && !text.contains("undefined"),
        "{text}"
    );
    let at_cloud = cloud.conflicts();
    let same_at_cloud = at_cloud.iter().find(|c| c["key"] == "same").unwrap();
    assert_eq!(same_at_cloud["review"]["by"], "dev", "{same_at_cloud}");
    assert!(at_cloud.iter().find(|c| c["key"] == "long").unwrap()["review"].is_null());
    // The expanded value stayed expanded through the update.
    assert_eq!(value_box(&browser, "long", "winner")["expanded"], "true");

    // The key's history: the current version, with the write it beat
    // beside it, linked to the conflict.
    click_in_conflict(&browser, "long", "[data-testid=\"conflict-key\"]");
    let history = wait_explorer(&browser, "the key's history", |s| {
        s["history"]["state"] == "ok"
    })["history"]
        .clone();
    assert_eq!(history["key"], "long");
    let text = history["text"].as_str().unwrap();
    assert!(
        !text.contains("null") && !text.contains("undefined"),
        "{text}"
    );
    let current = &history["versions"][0];
    assert_eq!(current["node"], "edge-b", "{history}");
    assert_eq!(current["current"], "true", "{history}");
    assert_eq!(current["value"], long.as_str());
    assert_eq!(
        current["lost"],
        json!([{ "conflict": divergent["id"], "node": "edge-a", "value": "short from a" }]),
        "{history}"
    );
    drop(b);
}

/// Clicks the element with `data-testid` `id` on the page.
fn click_testid(browser: &Session, id: &str) {
    let clicked = browser.execute(&format!(
        r#"
        const e = document.querySelector('[data-testid=' + JSON.stringify({id}) + ']');
        if (!e) return false;
        e.click();
        return true;
    "#,
        id = json!(id),
    ));
    assert_eq!(clicked, json!(true), "no element {id}");
}

/// The text of the element with `data-testid` `id`, or null.
fn testid_text(browser: &Session, id: &str) -> Value {
    browser.execute(&format!(
        r#"
        const e = document.querySelector('[data-testid=' + JSON.stringify({id}) + ']');
        return e ? e.textContent.trim() : null;
    "#,
        id = json!(id),
    ))
}

#[test]
fn the_lab_dashboard_cuts_and_heals_a_link_by_button_and_shows_the_conflict_in_full() {
    use crate::harness::{Lab, eventually, http_request, prepare, write_settings};
    let dir = prepare(&[("profile", "profile")]);
    write_settings(&dir, "profile", "[kv]\nreplicated = [\"default\"]\n");
    let lab = Lab::start(dir, 2);
    let driver = ChromeDriver::start();
    let profile = tempfile::tempdir().unwrap();
    let browser = browser(&driver, profile.path());
    browser.goto(&format!("{}/", lab.api));
    let link_text = |edge: &str| testid_text(&browser, &format!("link-{edge}"));
    eventually("the lab's edge cards", || {
        (link_text("edge-2") == json!("link: ok")).then_some(())
    });

    // The Cut button cuts the link in the lab (not only on the page).
    click_testid(&browser, "cut-edge-2");
    eventually("edge-2's link cut", || {
        (lab.edge_status(2)["link"]["faults"]["cut"] == true).then_some(())
    });
    eventually("the card says cut", || {
        (link_text("edge-2") == json!("link: cut")).then_some(())
    });
    let put = |edge: &str, body: &str| {
        let reply = http_request(
            "PUT",
            &format!("{edge}/profile/alice"),
            &[("content-type", "application/json")],
            body.as_bytes(),
        );
        assert_eq!(reply.status, 200, "{}", reply.body);
    };
    // Longer than the panel, and without a space to wrap at.
    let long: String = (0..300)
        .map(|i| format!("{i:04}-lab--"))
        .collect::<String>()
        + "|END";
    put(&lab.edges[0], r#"{"bio":"short"}"#);
    std::thread::sleep(Duration::from_millis(5));
    put(&lab.edges[1], &format!(r#"{{"bio":"{long}"}}"#));
    eventually("edge-2's outbox shows the queued write", || {
        (testid_text(&browser, "outbox-edge-2")
            .as_str()
            .is_some_and(|t| t.starts_with("outbox 1 records")))
        .then_some(())
    });

    click_testid(&browser, "heal-edge-2");
    eventually("the badge says converged", || {
        testid_text(&browser, "converged")
            .as_str()
            .is_some_and(|t| t.starts_with("converged"))
            .then_some(())
    });
    // The conflict, through the lab's pass-through to the cloud: both
    // values in full, the later (edge-2's) write the winner.
    let state = wait_explorer(&browser, "the conflict on the lab page", |s| {
        s["conflicts"]["user/alice"].is_object()
    });
    let conflict = &state["conflicts"]["user/alice"];
    assert_eq!(conflict["kind"], "divergent", "{conflict}");
    assert_eq!(conflict["store"], "@profile");
    assert_eq!(conflict["winner"]["node"], "edge-2");
    assert_eq!(conflict["loser"]["node"], "edge-1");
    assert_eq!(conflict["winner"]["format"], "json");
    assert!(
        conflict["winner"]["value"]
            .as_str()
            .unwrap()
            .contains(&long),
        "the long value is cut: {conflict}"
    );
    assert!(
        conflict["loser"]["value"]
            .as_str()
            .unwrap()
            .contains("short")
    );
    click_in_conflict(
        &browser,
        "user/alice",
        "[data-testid=\"conflict-winner\"] [data-testid=\"value-toggle\"]",
    );
    let open = value_box(&browser, "user/alice", "winner");
    assert_eq!(open["clipped"], false, "{open}");
    assert_eq!(open["overflows_sideways"], false, "{open}");
}
