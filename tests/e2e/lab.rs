//! `outpost lab`: a cloud and edges behind the lab's links, controlled
//! from its CLI and API; scenario files and their exit codes.

use crate::harness::*;
use std::time::{Duration, Instant};

/// A modules folder with the `profile` example, its store replicated.
fn profile_modules() -> std::sync::Arc<tempfile::TempDir> {
    let dir = prepare(&[("profile", "profile")]);
    write_settings(&dir, "profile", "[kv]\nreplicated = [\"default\"]\n");
    dir
}

fn put(url: &str, body: &str) -> Reply {
    http_request(
        "PUT",
        url,
        &[("content-type", "application/json")],
        body.as_bytes(),
    )
}

fn converged(lab: &Lab) -> serde_json::Value {
    eventually("the lab converges", || {
        let c = lab.get("/api/converged");
        (c["converged"] == true).then_some(c)
    })
}

#[test]
fn a_cut_edge_keeps_serving_and_after_heal_the_lab_converges_and_shows_the_conflict() {
    let lab = Lab::start(profile_modules(), 2);
    let (edge1, edge2) = (&lab.edges[0], &lab.edges[1]);
    // Both edges serve before anything is cut.
    eventually("both edges serve profile", || {
        lab.edges
            .iter()
            .all(|e| http_get(&format!("{e}/profile/nobody"), &[]).status == 404)
            .then_some(())
    });

    let cut = lab.cli(&["link", "edge-2", "cut"]);
    assert!(cut.status.success(), "{cut:?}");
    assert_eq!(String::from_utf8_lossy(&cut.stdout).trim(), "edge-2: cut");
    lab.process
        .wait_log("link changed link=edge-2 faults=Faults \\{ cut: true");

    let one = put(&format!("{edge1}/profile/alice"), r#"{"city":"Lisbon"}"#);
    assert_eq!(one.status, 200, "{}", one.body);
    let two = put(&format!("{edge2}/profile/alice"), r#"{"city":"Porto"}"#);
    assert_eq!(two.status, 200, "{}", two.body);
    assert_eq!(two.header("x-write"), Some("queued"));
    // The cut edge answers from its own copy, and says it is cut off.
    let read = http_get(&format!("{edge2}/profile/alice"), &[]);
    assert_eq!(read.status, 200);
    assert!(read.body.contains("Porto"), "{}", read.body);

    // Cut shows as failed shipping: the write waits in edge-2's outbox,
    // the link refuses its attempts, and the lab is not converged.
    let status = eventually("edge-2's shipping fails on the cut link", || {
        let e = lab.edge_status(2);
        (e["outbox"]["records"] == 1
            && e["outbox"]["reachable"] == false
            && e["link"]["stats"]["refused"].as_u64() > Some(0))
        .then_some(e)
    });
    assert_eq!(status["link"]["faults"]["cut"], true);
    let apart = lab.get("/api/converged");
    assert_eq!(apart["converged"], false);
    assert_eq!(apart["outbox"]["edge-2"], 1);

    // Heal through the API: the outbox drains and every edge agrees.
    let healed = lab.call("POST", "/api/links/edge-2/heal", "");
    assert_eq!(healed.status, 200, "{}", healed.body);
    assert_eq!(healed.json()["faults"]["cut"], false);
    let c = converged(&lab);
    assert_eq!(c["stores"], serde_json::json!(["@profile"]));
    assert_eq!(c["outbox"], serde_json::json!({"edge-1": 0, "edge-2": 0}));
    let winner_city = if http_get(&format!("{edge1}/profile/alice"), &[])
        .body
        .contains("Porto")
    {
        "Porto"
    } else {
        "Lisbon"
    };
    for edge in &lab.edges {
        let body = http_get(&format!("{edge}/profile/alice"), &[]).body;
        assert!(body.contains(winner_city), "{edge}: {body}");
    }

    // The conflict, explained, through the lab's API.
    let conflicts = lab.get("/api/conflicts");
    let items = conflicts["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{conflicts}");
    let conflict = &items[0];
    assert_eq!(conflict["store"], "@profile");
    assert_eq!(conflict["key"], "user/alice");
    assert_eq!(conflict["kind"], "divergent");
    let mut nodes = [
        conflict["winner"]["node"].as_str().unwrap(),
        conflict["loser"]["node"].as_str().unwrap(),
    ];
    nodes.sort();
    assert_eq!(nodes, ["edge-1", "edge-2"]);
    assert!(
        conflict["winner_shown"]["text"]
            .as_str()
            .unwrap()
            .contains(winner_city)
    );
    let history = lab.get("/api/history?store=%40profile&key=user%2Falice");
    assert_eq!(history["lost"].as_array().unwrap().len(), 1, "{history}");
    assert_eq!(history["lost"][0]["conflict"], conflict["id"]);
    // A review through the lab is recorded at the cloud.
    let reviewed = lab.call(
        "POST",
        &format!("/api/conflicts/{}/review", conflict["id"]),
        r#"{"note":"Porto is right"}"#,
    );
    assert_eq!(reviewed.status, 200, "{}", reviewed.body);
    assert_eq!(
        lab.get("/api/conflicts?reviewed=true")["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Unknown edges and bad faults are refused with a reason.
    let unknown = lab.call("POST", "/api/links/edge-9/cut", "");
    assert_eq!(unknown.status, 404);
    assert!(unknown.body.contains("edge-1, edge-2"), "{}", unknown.body);
    let bad = lab.call("POST", "/api/links/edge-1", r#"{"loss": 3}"#);
    assert_eq!(bad.status, 400);
    assert!(bad.json()["message"].as_str().unwrap().contains("loss"));
    let cli_bad = lab.cli(&["link", "edge-1", "loss", "3"]);
    assert!(!cli_bad.status.success());
    assert!(String::from_utf8_lossy(&cli_bad.stderr).contains("loss must be"));
}

#[test]
fn latency_shows_in_round_trip_time_and_loss_shows_as_failed_shipping_until_reset() {
    let lab = Lab::start(profile_modules(), 1);
    let edge = &lab.edges[0];
    let link = format!(
        "http://{}",
        lab.edge_status(1)["link"]["addr"].as_str().unwrap()
    );
    let health = format!("{link}/_outpost/health");
    assert_eq!(http_get(&health, &[]).status, 200);

    let set = lab.cli(&["link", "edge-1", "latency", "300", "--jitter", "50"]);
    assert!(set.status.success(), "{set:?}");
    assert_eq!(
        String::from_utf8_lossy(&set.stdout).trim(),
        "edge-1: latency 300+0..50 ms"
    );
    // The link holds the connection and each way at least 300 ms: a floor
    // the link guarantees, not a timing race.
    let start = Instant::now();
    assert_eq!(http_get(&health, &[]).status, 200);
    let slow = start.elapsed();
    assert!(slow >= Duration::from_millis(900), "{slow:?}");
    // The edge's own writes still ship, only later.
    assert_eq!(
        put(&format!("{edge}/profile/bob"), r#"{"n":1}"#).status,
        200
    );
    converged(&lab);

    let lossy = lab.cli(&["link", "edge-1", "loss", "1"]);
    assert!(lossy.status.success(), "{lossy:?}");
    let before = lab.edge_status(1)["link"]["stats"].clone();
    assert_eq!(
        put(&format!("{edge}/profile/carol"), r#"{"n":2}"#).status,
        200
    );
    let e = eventually("shipping fails on a lossy link", || {
        let e = lab.edge_status(1);
        let s = &e["link"]["stats"];
        let broken = s["refused"].as_u64().unwrap() + s["reset_by_loss"].as_u64().unwrap();
        let was = before["refused"].as_u64().unwrap() + before["reset_by_loss"].as_u64().unwrap();
        (broken > was && e["outbox"]["records"] == 1).then_some(e)
    });
    assert_eq!(e["link"]["faults"]["loss"], 1.0);
    let reset = lab.cli(&["link", "edge-1", "reset"]);
    assert!(reset.status.success(), "{reset:?}");
    assert_eq!(String::from_utf8_lossy(&reset.stdout).trim(), "edge-1: ok");
    let c = converged(&lab);
    assert_eq!(c["keys"], 2);

    let status = lab.cli(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("edge-1") && text.contains("link: ok") && text.contains("outbox: 0"),
        "{text}"
    );
}

/// Runs `outpost lab run FILE` on a scenario written into `dir`.
fn run_scenario(dir: &tempfile::TempDir, name: &str, text: &str) -> std::process::Output {
    let file = dir.path().join(name);
    std::fs::write(&file, text).unwrap();
    std::process::Command::new(outpost_bin())
        .args(["lab", "run"])
        .arg(&file)
        .arg("--modules")
        .arg(dir.path().join("modules"))
        .env("RUST_LOG", "info")
        .output()
        .expect("run outpost lab run")
}

#[test]
fn a_scenario_that_holds_exits_0_one_that_fails_exits_1_and_a_bad_file_exits_2() {
    let dir = profile_modules();
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab/split-brain.toml"),
    )
    .unwrap();
    // The scenario the repository ships, as a user runs it.
    let passed = run_scenario(&dir, "split-brain.toml", &shipped);
    let out = String::from_utf8_lossy(&passed.stdout);
    assert_eq!(
        passed.status.code(),
        Some(0),
        "{out}\n{}",
        String::from_utf8_lossy(&passed.stderr)
    );
    assert!(out.contains("ok   1 divergent conflicts"), "{out}");
    assert!(
        out.contains("ok   0 lost acknowledged writes (of 2)"),
        "{out}"
    );
    assert!(out.contains("passed: "), "{out}");

    // The same run expecting no conflict fails, and says which check.
    let wrong = shipped.replace("conflicts = 1", "conflicts = 0");
    let failed = run_scenario(&dir, "wrong.toml", &wrong);
    let out = String::from_utf8_lossy(&failed.stdout);
    assert_eq!(failed.status.code(), Some(1), "{out}");
    assert!(out.contains("FAIL 0 conflicts: 1 recorded"), "{out}");
    assert!(out.contains("FAILED: "), "{out}");

    // A step that says it writes but is not acknowledged fails: a 404 is
    // not a write, and must not be left out of the count unnoticed.
    let unacknowledged = run_scenario(
        &dir,
        "unacknowledged.toml",
        r#"
        [[step]]
        edge = "edge-1"
        request = "GET /profile/nobody"
        write = { store = "@profile", key = "user/nobody", value = "never written" }
        "#,
    );
    let out = String::from_utf8_lossy(&unacknowledged.stdout);
    assert_eq!(unacknowledged.status.code(), Some(1), "{out}");
    assert!(
        out.contains("FAIL step 1: edge-1 GET /profile/nobody acknowledges its write: 404"),
        "{out}"
    );
    // A write the cloud has no trace of is lost: here the step claims a
    // value its request does not write.
    let claimed = run_scenario(
        &dir,
        "claimed.toml",
        r#"
        [[step]]
        edge = "edge-1"
        request = "PUT /profile/erin"
        body = '{"n": 1}'
        write = { store = "@profile", key = "user/erin", value = "some other value" }
        "#,
    );
    let out = String::from_utf8_lossy(&claimed.stdout);
    assert_eq!(claimed.status.code(), Some(1), "{out}");
    assert!(out.contains("is nowhere at the cloud"), "{out}");

    // A malformed file is refused before anything starts, naming the step.
    let bad = run_scenario(&dir, "bad.toml", "[[step]]\nedge = \"edge-1\"\n");
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("bad.toml: step 1: give exactly one of"),
        "{err}"
    );
    let unknown = run_scenario(
        &dir,
        "edge9.toml",
        "[[step]]\nlink = \"edge-9\"\ncut = true\n",
    );
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("edge-1 to edge-2"));
}

/// The pids of `pid`'s children, from /proc.
fn children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        found.extend(
            list.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    found
}

/// Whether `pid` still runs (a zombie waiting to be reaped does not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .to_owned();
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

#[test]
fn a_lab_killed_with_sigkill_takes_its_cloud_and_edges_with_it() {
    let mut lab = Lab::start(profile_modules(), 2);
    let kids = children(lab.process.pid());
    assert_eq!(kids.len(), 3, "a cloud and two edges: {kids:?}");
    assert!(kids.iter().all(|&p| running(p)));
    lab.process.kill();
    eventually("the children die with the lab", || {
        kids.iter().all(|&p| !running(p)).then_some(())
    });
}

#[test]
fn the_lab_api_refuses_other_hosts_and_posts_a_web_page_could_send() {
    let lab = Lab::start(profile_modules(), 1);
    let url = format!("{}/api/links/edge-1/cut", lab.api);
    // DNS rebinding: a page on evil.example resolving to 127.0.0.1.
    let rebound = http_request(
        "GET",
        &format!("{}/api/status", lab.api),
        &[("host", "evil.example:7700")],
        b"",
    );
    assert_eq!(rebound.status, 403, "{}", rebound.body);
    assert!(
        rebound.body.contains("answers requests for 127.0.0.1:"),
        "{}",
        rebound.body
    );
    // A form post or a no-cors fetch: no JSON content type.
    let form = http_request("POST", &url, &[("content-type", "text/plain")], b"x");
    assert_eq!(form.status, 403, "{}", form.body);
    let foreign = http_request(
        "POST",
        &url,
        &[
            ("content-type", "application/json"),
            ("origin", "http://evil.example"),
        ],
        b"",
    );
    assert_eq!(foreign.status, 403, "{}", foreign.body);
    assert_eq!(lab.edge_status(1)["link"]["faults"]["cut"], false);
    // The lab's own dashboard and tools still get through.
    let ok = lab.call("POST", "/api/links/edge-1/cut", "");
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(lab.edge_status(1)["link"]["faults"]["cut"], true);
}

#[test]
fn an_interrupted_scenario_stops_its_lab_and_exits_2() {
    let dir = profile_modules();
    let file = dir.path().join("long.toml");
    std::fs::write(&file, "[[step]]\nsleep-ms = 600000\n").unwrap();
    let lab_dir = dir.path().join("kept");
    let mut run = std::process::Command::new(outpost_bin())
        .args(["lab", "run"])
        .arg(&file)
        .arg("--modules")
        .arg(dir.path().join("modules"))
        .arg("--dir")
        .arg(&lab_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = run.id();
    let kids = eventually("the lab's cloud and edge are up", || {
        let kids = children(pid);
        (kids.len() == 2 && lab_dir.join("edge-1.log").exists()).then_some(kids)
    });
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(2));
    assert!(kids.iter().all(|&p| !running(p)), "children left running");
}
