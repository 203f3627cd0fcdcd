//! Operating a node: Prometheus metrics (parsed, not string-matched), the
//! admin API and its token, request ids, guest output in the log, and the
//! cloud tier's own metrics.

use crate::harness::{Cloud, Node, Reply, eventually, free_port, guest_bytes, prepare};
use crate::replication::contested_edges;
use prometheus_parse::{Scrape, Value};
use std::collections::HashMap;

/// A parsed `/metrics` answer.
pub struct Metrics {
    scrape: Scrape,
    /// Family name -> its `# TYPE` (OpenMetrics names a counter's family
    /// without the `_total` its samples carry, so the parser cannot type
    /// those samples itself).
    types: HashMap<String, String>,
}

impl Metrics {
    pub fn parse(reply: &Reply) -> Metrics {
        assert_eq!(reply.status, 200, "{}", reply.body);
        let lines = reply.body.lines().map(|l| Ok(l.to_owned()));
        let types = reply
            .body
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .map(|(name, kind)| (name.to_owned(), kind.trim().to_owned()))
            .collect();
        Metrics {
            scrape: Scrape::parse(lines).expect("Prometheus text"),
            types,
        }
    }

    /// The `# TYPE` of the family `name` (`counter`, `gauge`, ...).
    pub fn type_of(&self, name: &str) -> Option<&str> {
        self.types.get(name).map(String::as_str)
    }

    /// The value of the sample `name` whose labels include `labels`;
    /// several matches are summed. `None` if there is no such sample.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let values: Vec<f64> = self
            .scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .filter_map(|s| match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
                _ => None,
            })
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }

    /// Like [`get`](Self::get), with a missing sample read as zero (a
    /// labelled counter appears on first use).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    pub fn has_histogram(&self, name: &str) -> bool {
        self.scrape
            .samples
            .iter()
            .any(|s| s.metric == name && matches!(s.value, Value::Histogram(_)))
    }
}

fn scrape(node: &Node) -> Metrics {
    let reply = node.admin_get("/metrics", &[]);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        reply.headers
    );
    Metrics::parse(&reply)
}

#[test]
fn metrics_follow_requests_loads_and_kv_calls() {
    let node = Node::start(&[("hello", "hello"), ("trap", "trap"), ("kv", "kvtest")]);
    let before = scrape(&node);
    assert_eq!(before.get("outpost_functions", &[]), Some(3.0));
    assert_eq!(before.get("outpost_instance_slots", &[]), Some(1000.0));
    assert_eq!(before.get("outpost_instances_in_flight", &[]), Some(0.0));
    assert_eq!(
        before.value("outpost_module_loads_total", &[("source", "compiled")]),
        3.0
    );
    assert!(before.has_histogram("outpost_compile_duration_seconds"));
    // A compile says so before it starts (and, when long, while it runs).
    let line = node.wait_log("compiling: not in the cache");
    assert!(line.contains("bytes="), "{line}");

    for _ in 0..3 {
        assert_eq!(node.get("/hello").status, 200);
    }
    assert_eq!(node.get("/trap/panic").status, 500);
    let set = node.request("POST", "/kv/default/set?key=k", &[], b"v");
    assert_eq!(set.json()["ok"], true);
    assert_eq!(node.get("/kv/default/get?key=k").json()["ok"], "v");
    let too_long = "k".repeat(600);
    assert_eq!(
        node.get(&format!("/kv/default/get?key={too_long}")).json()["error"],
        "invalid-key"
    );

    let after = scrape(&node);
    let delta = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    assert_eq!(
        delta(
            "outpost_requests_total",
            &[("function", "hello"), ("status", "200")]
        ),
        3.0
    );
    assert_eq!(
        delta(
            "outpost_requests_total",
            &[("function", "trap"), ("status", "500")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "outpost_request_duration_seconds_count",
            &[("function", "hello")]
        ),
        3.0
    );
    assert!(
        after.value(
            "outpost_request_duration_seconds_sum",
            &[("function", "hello")]
        ) > 0.0
    );
    assert_eq!(
        delta("outpost_instantiate_duration_seconds_count", &[]),
        7.0
    );
    assert_eq!(
        delta(
            "outpost_kv_operations_total",
            &[("op", "set"), ("result", "ok")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "outpost_kv_operations_total",
            &[("op", "get"), ("result", "ok")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "outpost_kv_operations_total",
            &[("op", "get"), ("result", "invalid-key")]
        ),
        1.0
    );
    assert_eq!(after.get("outpost_outbox_records", &[]), Some(0.0));

    // A restart loads from the cache, and the counters say so.
    let node = node.restart();
    let restarted = scrape(&node);
    assert_eq!(
        restarted.value("outpost_module_loads_total", &[("source", "cache")]),
        3.0
    );
    assert_eq!(
        restarted.value("outpost_module_loads_total", &[("source", "compiled")]),
        0.0
    );
}

#[test]
fn cache_metrics_and_function_counts_follow_hits_misses_and_stale_answers() {
    let node = Node::start(&[("c", "cachetest")]);
    let before = scrape(&node);
    for (family, kind) in [
        ("outpost_cache_requests", "counter"),
        ("outpost_cache_refreshes", "counter"),
        ("outpost_cache_evictions", "counter"),
        ("outpost_cache_bytes", "gauge"),
        ("outpost_cache_entries", "gauge"),
        ("outpost_cache_function_bytes", "gauge"),
    ] {
        assert_eq!(before.type_of(family), Some(kind), "{family}");
    }
    assert_eq!(before.get("outpost_cache_bytes", &[]), Some(0.0));
    assert_eq!(before.get("outpost_cache_entries", &[]), Some(0.0));
    assert_eq!(before.get("outpost_cache_evictions_total", &[]), Some(0.0));
    // A function the node serves has its series from the start, at zero.
    for result in ["hit", "miss", "stale", "bypass"] {
        assert_eq!(
            before.get(
                "outpost_cache_requests_total",
                &[("function", "c"), ("result", result)]
            ),
            Some(0.0),
            "{result}"
        );
    }

    let header = |r: &Reply| r.header("x-outpost-cache").unwrap_or("(none)").to_owned();
    let path = "/c/x?cc=public,max-age=60";
    assert_eq!(header(&node.get(path)), "miss");
    assert_eq!(header(&node.get(path)), "hit");
    // Never looked up (and it names another URL, so x stays stored).
    assert_eq!(
        header(&node.request("POST", "/c/other", &[], b"x")),
        "bypass"
    );
    // Stale on arrival (Age past max-age), inside stale-while-revalidate:
    // stored, then answered stale while one refresh runs.
    let swr = "/c/swr?cc=public,max-age=60,stale-while-revalidate=600&age=100";
    assert_eq!(header(&node.get(swr)), "miss");
    assert_eq!(header(&node.get(swr)), "stale");

    let after = scrape(&node);
    let requests = |m: &Metrics, result: &str| {
        m.value(
            "outpost_cache_requests_total",
            &[("function", "c"), ("result", result)],
        )
    };
    assert_eq!(
        ["hit", "miss", "stale", "bypass"].map(|r| requests(&after, r)),
        [1.0, 2.0, 1.0, 1.0]
    );
    assert_eq!(
        after.get("outpost_cache_refreshes_total", &[("function", "c")]),
        Some(1.0)
    );
    assert_eq!(after.get("outpost_cache_entries", &[]), Some(2.0));
    let bytes = after.get("outpost_cache_bytes", &[]).unwrap();
    assert!(bytes > 0.0);
    assert_eq!(
        after.get("outpost_cache_function_bytes", &[("function", "c")]),
        Some(bytes),
        "one function holds it all"
    );
    assert_eq!(after.get("outpost_cache_evictions_total", &[]), Some(0.0));

    // The same counts, and the hit ratio, per function in /functions.
    let functions = node.admin_get("/functions", &[]).json();
    let c = functions["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "c")
        .unwrap_or_else(|| panic!("{functions}"))["cache"]
        .clone();
    assert_eq!(
        c,
        serde_json::json!({
            "enabled": true, "hits": 1, "misses": 2, "stale": 1, "bypass": 1,
            // Fresh and stale answers over the requests looked up.
            "hit_ratio": 0.5,
        })
    );

    // Counters only grow: a purge empties the gauges, not the counts. (The
    // background refresh may store its answer after a purge: purge again.)
    let later = eventually("the cache emptied", || {
        let purged = node.admin_request("POST", "/cache/purge", &[], br#"{"function":"c"}"#);
        assert_eq!(purged.status, 200, "{}", purged.body);
        let m = scrape(&node);
        (m.get("outpost_cache_entries", &[]) == Some(0.0)).then_some(m)
    });
    assert_eq!(later.get("outpost_cache_bytes", &[]), Some(0.0));
    assert_eq!(
        later.get("outpost_cache_function_bytes", &[("function", "c")]),
        Some(0.0)
    );
    for result in ["hit", "miss", "stale", "bypass"] {
        assert!(
            requests(&later, result) >= requests(&after, result),
            "{result}"
        );
    }
}

#[test]
fn overload_rejections_and_saturation_are_reported() {
    let dir = prepare(&[("slow", "slow"), ("hello", "hello")]);
    crate::harness::write_host_config(&dir, "max-instances = 1\nqueue-timeout-ms = 100\n");
    let node = Node::spawn(dir, Vec::new(), None);
    let url = node.url("/slow?ms=3000");
    let busy = std::thread::spawn(move || ureq::get(&url).call().map(|r| r.status()).ok());
    let saturated = eventually("the slot taken", || {
        let m = scrape(&node);
        (m.get("outpost_instances_in_flight", &[]) == Some(1.0)).then_some(m)
    });
    assert_eq!(
        saturated.get("outpost_pool_saturation_ratio", &[]),
        Some(1.0)
    );
    eventually("a 503", || (node.get("/hello").status == 503).then_some(()));
    let m = scrape(&node);
    assert!(
        m.value(
            "outpost_overload_rejections_total",
            &[("function", "hello")]
        ) >= 1.0
    );
    assert!(
        m.value(
            "outpost_requests_total",
            &[("function", "hello"), ("status", "503")]
        ) >= 1.0
    );
    assert_eq!(busy.join().unwrap(), Some(200));
}

#[test]
fn the_admin_api_reports_functions_events_and_outbox() {
    let node = Node::start(&[("hello", "hello")]);
    std::fs::write(node.module_path("broken"), b"not a component").unwrap();
    node.wait_log("function=broken");
    assert_eq!(node.get("/hello").status, 200);

    // A name is listed as soon as its load starts; wait until the broken
    // one's load has also failed, or its error may not be there yet.
    let functions = eventually("both functions listed, the broken one failed", || {
        let reply = node.admin_get("/functions", &[]);
        assert_eq!(reply.status, 200);
        let list = reply.json()["functions"].as_array().unwrap().clone();
        let settled = list
            .iter()
            .any(|f| f["name"] == "broken" && !f["last_error"].is_null());
        (list.len() == 2 && settled).then_some(list)
    });
    let by_name: HashMap<&str, &serde_json::Value> = functions
        .iter()
        .map(|f| (f["name"].as_str().unwrap(), f))
        .collect();
    let hello = by_name["hello"];
    assert_eq!(hello["serving"], true);
    assert_eq!(hello["source"], "compiled");
    assert_eq!(hello["sha256"].as_str().unwrap().len(), 64);
    assert!(hello["version"].as_str().unwrap().len() == 12);
    assert!(hello["loaded_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(hello["requests"], 1);
    assert_eq!(hello["errors"], 0);
    assert_eq!(hello["latency_seconds"]["count"], 1);
    assert_eq!(hello["last_error"], serde_json::Value::Null);
    let broken = by_name["broken"];
    assert_eq!(broken["serving"], false);
    assert!(
        broken["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a WebAssembly"),
        "{broken}"
    );

    // A reload and a removal appear as events, newest first.
    std::fs::write(node.module_path("hello"), guest_bytes("echo")).unwrap();
    eventually("the reload", || {
        (node.get("/hello").status == 200 && node.log_matches("reloaded").len() == 1).then_some(())
    });
    std::fs::remove_file(node.module_path("hello")).unwrap();
    eventually("the removal", || {
        (node.get("/hello").status == 404).then_some(())
    });
    let events = eventually("the removal event", || {
        let events = node.admin_get("/events?limit=10", &[]).json()["events"].clone();
        (events[0]["kind"] == "removed").then_some(events)
    });
    let kinds: Vec<(&str, &str)> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["function"].as_str().unwrap(), e["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("hello", "removed"),
            ("hello", "reloaded"),
            ("broken", "failed"),
            ("hello", "loaded")
        ]
    );
    assert_eq!(events[1]["source"], "compiled");
    assert_eq!(
        node.admin_get("/events?limit=1", &[]).json()["events"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(node.admin_get("/events?limit=x", &[]).status, 400);

    let outbox = node.admin_get("/outbox", &[]).json();
    assert_eq!(outbox["records"], 0);
    assert_eq!(outbox["cloud"]["configured"], false);
    assert_eq!(outbox["oldest"], serde_json::Value::Null);

    let conflicts = node.admin_get("/conflicts", &[]);
    assert_eq!(conflicts.status, 503);
    assert_eq!(conflicts.json()["error"], "no-cloud");
    assert_eq!(node.admin_get("/nothing", &[]).status, 404);
    let dashboard = node.admin_get("/", &[]);
    assert_eq!(dashboard.status, 200);
    assert!(dashboard.body.contains("id=\"functions\""));
    // The public port serves functions, not the admin API.
    assert_eq!(node.get("/metrics").status, 404);
}

#[test]
fn the_admin_token_is_enforced_when_set() {
    let node = Node::start_with(&[("hello", "hello")], &["--admin-token", "s3cret"]);
    for path in ["/metrics", "/functions", "/events", "/outbox", "/conflicts"] {
        let missing = node.admin_get(path, &[]);
        assert_eq!(missing.status, 401, "{path}");
        assert_eq!(missing.json()["error"], "unauthorized");
        assert!(missing.header("x-outpost-error-id").is_some());
        let wrong = node.admin_get(path, &[("authorization", "Bearer s3cre")]);
        assert_eq!(wrong.status, 401, "{path}");
    }
    let good = [("authorization", "Bearer s3cret")];
    assert_eq!(node.admin_get("/functions", &good).status, 200);
    Metrics::parse(&node.admin_get("/metrics", &good));
    // The dashboard page holds no data; it asks for the token itself.
    assert_eq!(node.admin_get("/", &[]).status, 200);
}

#[test]
fn request_ids_are_kept_or_made_and_returned() {
    let node = Node::start(&[("echo", "echo"), ("trap", "trap")]);
    let given = node.request("GET", "/echo/x", &[("x-request-id", "client-id-7")], b"");
    assert_eq!(given.header("x-request-id"), Some("client-id-7"));
    assert!(
        given.body.contains("client-id-7"),
        "the guest sees the id: {}",
        given.body
    );

    let made: Vec<String> = (0..2)
        .map(|_| {
            let reply = node.get("/echo/x");
            let id = reply.header("x-request-id").expect("an id").to_owned();
            assert!(reply.body.contains(&id), "the guest sees the made id");
            id
        })
        .collect();
    assert_ne!(made[0], made[1]);
    assert!(made[0].len() == 16 && made[0].bytes().all(|b| b.is_ascii_hexdigit()));

    // An id that could break a log line is replaced.
    let odd = node.request("GET", "/echo/x", &[("x-request-id", "two words")], b"");
    assert_ne!(odd.header("x-request-id"), Some("two words"));
    // Host-made answers carry it too, and the error's log line names it.
    assert!(node.get("/nothing-here").header("x-request-id").is_some());
    let failed = node.request("GET", "/trap/panic", &[("x-request-id", "trap-id-1")], b"");
    assert_eq!(failed.status, 500);
    assert_eq!(failed.header("x-request-id"), Some("trap-id-1"));
    let id = failed.json()["id"].as_str().unwrap().to_owned();
    let line = node.wait_log(&format!("error_id={id}"));
    assert!(line.contains("request_id=trap-id-1"), "{line}");
}

/// `--access-log`: a line per request, JSON under `--log-format json`,
/// the path without its query; none without the flag.
#[test]
fn the_access_log_has_a_line_per_request_and_only_when_asked() {
    let node = Node::start_with(
        &[("hello", "hello"), ("trap", "trap")],
        &["--access-log", "--log-format", "json"],
    );
    node.request(
        "GET",
        "/hello/x?token=s3cr3t",
        &[("x-request-id", "acc-1")],
        b"",
    );
    let failed = node.request("GET", "/trap/panic", &[("x-request-id", "acc-2")], b"");
    node.request("GET", "/nope", &[("x-request-id", "acc-3")], b"");
    let record = |id: &str| -> serde_json::Value {
        let line = node.wait_log(&format!(r#""target":"outpost::access".*"request_id":"{id}"|"request_id":"{id}".*"target":"outpost::access""#));
        serde_json::from_str(&line).expect("a JSON log line")
    };
    let ok = record("acc-1");
    assert_eq!(ok["fields"]["function"], "hello", "{ok}");
    assert_eq!(ok["fields"]["method"], "GET");
    assert_eq!(ok["fields"]["path"], "/hello/x", "no query: {ok}");
    assert_eq!(ok["fields"]["status"], 200);
    assert!(ok["fields"]["ms"].as_f64().unwrap() > 0.0, "{ok}");
    assert!(ok["fields"]["instantiate_us"].as_u64().is_some(), "{ok}");
    let trapped = record("acc-2");
    assert_eq!(trapped["fields"]["status"], 500);
    assert_eq!(
        trapped["fields"]["error_id"],
        failed.json()["id"],
        "{trapped}"
    );
    let missing = record("acc-3");
    assert_eq!(
        (
            missing["fields"]["function"].as_str(),
            missing["fields"]["status"].as_u64()
        ),
        (Some("nope"), Some(404))
    );
    assert!(!node.log_lines().iter().any(|l| l.contains("s3cr3t")));

    // Without the flag: the hello's line would be in the log before the
    // next request's error line.
    let quiet = Node::start(&[("hello", "hello"), ("trap", "trap")]);
    quiet.request("GET", "/hello", &[("x-request-id", "quiet-1")], b"");
    let id = quiet.get("/trap/panic").json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    quiet.wait_log(&format!("error_id={id}"));
    assert!(quiet.log_matches("outpost::access").is_empty());
}

#[test]
fn json_logs_carry_the_same_fields() {
    let node = Node::start_with(&[("trap", "trap")], &["--log-format", "json"]);
    let failed = node.request("GET", "/trap/panic", &[("x-request-id", "json-1")], b"");
    let id = failed.json()["id"].as_str().unwrap().to_owned();
    let line = node.wait_log(&format!("\"error_id\":\"{id}\""));
    let record: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(record["level"], "ERROR");
    assert_eq!(record["fields"]["request_id"], "json-1");
    assert_eq!(record["fields"]["function"], "trap");
    for line in node.log_lines() {
        let parsed = serde_json::from_str::<serde_json::Value>(&line);
        assert!(parsed.is_ok(), "not JSON: {line}");
    }
}

#[test]
fn guest_output_is_logged_with_function_and_request_id() {
    let node = Node::start(&[("hostile", "hostile")]);
    let reply = node.request(
        "GET",
        "/hostile/say?out=line-on-stdout&err=line-on-stderr",
        &[("x-request-id", "say-1")],
        b"",
    );
    assert_eq!(reply.body, "said");
    for (stream, text) in [("stdout", "line-on-stdout"), ("stderr", "line-on-stderr")] {
        let line = node.wait_log(text);
        assert!(line.contains("function=hostile"), "{line}");
        assert!(line.contains("request_id=say-1"), "{line}");
        assert!(line.contains(&format!("stream={stream}")), "{line}");
    }
}

/// A line is one record however it was written: in pieces through fresh
/// handles (as `eprint!` does) it is still one line, and an empty line is
/// a record too.
#[test]
fn guest_output_is_one_record_per_line() {
    let node = Node::start(&[("hostile", "hostile")]);
    let reply = node.request(
        "GET",
        "/hostile/pieces",
        &[("x-request-id", "pieces-1")],
        b"",
    );
    assert_eq!(reply.body, "pieced");
    node.wait_log("after pieces");
    let guest: Vec<String> = node
        .log_matches("request_id=pieces-1")
        .into_iter()
        .filter(|l| l.contains("stream=stderr"))
        .collect();
    assert_eq!(guest.len(), 3, "{guest:#?}");
    assert!(guest[0].contains("start a print 1234"), "{guest:#?}");
    assert!(guest[2].contains("after pieces"), "{guest:#?}");
}

#[test]
fn replication_state_shows_in_outbox_metrics_and_conflicts() {
    let port = free_port();
    // Cloud down: writes pile up in the outbox, the link shows as down.
    let (a, _b) = contested_edges(port);
    let down = eventually("a failed upload", || {
        let outbox = a.admin_get("/outbox", &[]).json();
        (outbox["cloud"]["reachable"] == false).then_some(outbox)
    });
    assert_eq!(down["records"], 1);
    assert!(down["oldest"]["seq"].is_u64(), "{down}");
    assert!(down["cloud"]["last_error"].is_string());
    let m = scrape(&a);
    assert_eq!(m.get("outpost_outbox_records", &[]), Some(1.0));
    assert_eq!(m.get("outpost_cloud_reachable", &[]), Some(0.0));
    assert!(m.value("outpost_shipper_batches_total", &[("result", "failed")]) >= 1.0);
    assert!(m.get("outpost_outbox_oldest_age_seconds", &[]).unwrap() >= 0.0);
    assert!(m.get("outpost_replication_lag_seconds", &[]).unwrap() > 0.0);

    // Cloud up: the outbox drains, the link and the feed catch up, and the
    // conflict the two writes made is visible from the edge.
    let cloud = Cloud::start_at(port);
    let drained = eventually("drained and in sync", || {
        let outbox = a.admin_get("/outbox", &[]).json();
        (outbox["records"] == 0
            && outbox["cloud"]["reachable"] == true
            && outbox["replication_lag_seconds"] == 0.0
            && outbox["conflicts_seen"] == 1)
            .then_some(outbox)
    });
    assert!(
        drained["last_ack"]["through"].as_u64().unwrap() >= 1,
        "{drained}"
    );
    let m = scrape(&a);
    assert!(m.value("outpost_shipper_batches_total", &[("result", "acked")]) >= 1.0);
    assert!(m.value("outpost_shipper_bytes_total", &[]) > 0.0);
    assert_eq!(m.get("outpost_conflicts_seen", &[]), Some(1.0));
    assert_eq!(m.get("outpost_replication_lag_seconds", &[]), Some(0.0));
    assert!(m.value("outpost_remote_writes_total", &[]) >= 1.0);

    let conflicts = a.admin_get("/conflicts?since=0&limit=10", &[]);
    assert_eq!(conflicts.status, 200, "{}", conflicts.body);
    let items = conflicts.json()["items"].clone();
    assert_eq!(items[0]["key"], "contested");
    assert_eq!(items[0]["winner"]["node"], "edge-b");

    // The cloud's own metrics, behind its token.
    let unauthorized = crate::harness::http_get(&format!("{}/metrics", cloud.url()), &[]);
    assert_eq!(unauthorized.status, 401);
    let c = Metrics::parse(&cloud.get("/metrics"));
    assert!(c.value("outpost_cloud_batches_total", &[("result", "accepted")]) >= 2.0);
    assert_eq!(
        c.value("outpost_cloud_entries_total", &[("result", "applied")]),
        2.0
    );
    assert_eq!(c.get("outpost_cloud_conflicts", &[]), Some(1.0));
    assert!(c.value("outpost_cloud_feed_reads_total", &[]) >= 2.0);
    assert!(c.value("outpost_cloud_unauthorized_requests_total", &[]) >= 1.0);
}

#[test]
fn redelivered_batches_count_as_cloud_dedup_hits() {
    let cloud = Cloud::start();
    let batch = serde_json::json!({
        "node": "n1", "epoch": 7,
        "entries": [{"seq": 1, "record": {"kind": "event", "topic": "t", "payload": "eA==", "idempotency_key": null, "hlc": 1}}]
    });
    for _ in 0..2 {
        let reply = cloud.post("/v1/ingest", &batch.to_string());
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let c = Metrics::parse(&cloud.get("/metrics"));
    assert_eq!(
        c.value("outpost_cloud_entries_total", &[("result", "applied")]),
        1.0
    );
    assert_eq!(
        c.value("outpost_cloud_entries_total", &[("result", "duplicate")]),
        1.0
    );
    assert_eq!(
        c.value("outpost_cloud_batches_total", &[("result", "accepted")]),
        2.0
    );
}
