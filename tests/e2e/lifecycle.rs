//! Process lifecycle: the compiled-code cache across restarts, graceful
//! shutdown, and the allocator fallback.

use crate::harness::{Node, WAIT, eventually, prepare};
use std::time::Duration;

#[test]
fn a_restart_loads_from_the_code_cache() {
    let node = Node::start(&[("hello", "hello"), ("echo", "echo")]);
    node.wait_log(r"function=hello.*source=compiled");
    node.wait_log(r"function=echo.*source=compiled");
    let cached: Vec<_> = std::fs::read_dir(node.data_dir().join("cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cwasm"))
        .collect();
    assert_eq!(cached.len(), 2, "{cached:?}");

    let node = node.restart();
    node.wait_log(r"function=hello.*source=cache");
    node.wait_log(r"function=echo.*source=cache");
    assert!(node.log_matches("source=compiled").is_empty());
    assert_eq!(node.get("/hello").status, 200);
}

#[test]
fn a_corrupt_cache_entry_is_recompiled() {
    let node = Node::start(&[("hello", "hello")]);
    node.wait_log(r"function=hello.*source=compiled");
    for entry in std::fs::read_dir(node.data_dir().join("cache")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::write(&path, b"not machine code").unwrap();
    }
    let node = node.restart();
    node.wait_log(r"dropping unreadable cache entry");
    node.wait_log(r"function=hello.*source=compiled");
    assert_eq!(node.get("/hello").status, 200);
}

#[test]
fn sigterm_drains_in_flight_requests_then_exits() {
    let mut node = Node::start(&[("slow", "slow")]);
    let url = node.url("/slow?ms=1500");
    let in_flight = std::thread::spawn(move || {
        let response = ureq::get(&url).call().unwrap();
        (response.status(), response.into_string().unwrap())
    });
    std::thread::sleep(Duration::from_millis(300));
    node.terminate();
    node.wait_log(r"shutting down");
    let addr = node.addr;
    eventually("the listener to close", || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))
            .is_err()
            .then_some(())
    });
    assert_eq!(in_flight.join().unwrap(), (200, "slow 1500\n".to_string()));
    assert_eq!(node.wait_exit(), Some(0));
    node.wait_log(r"all connections drained");
}

#[test]
fn shutdown_on_ctrl_c_is_bounded_by_the_grace_period() {
    let mut node = Node::start_with(&[("slow", "slow")], &["--shutdown-grace-ms", "300"]);
    // Far longer than the harness waits for the exit: only the grace period
    // can end this process in time.
    let url = node.url(&format!("/slow?ms={}", WAIT.as_millis() * 2));
    let in_flight = std::thread::spawn(move || ureq::get(&url).call().is_err());
    std::thread::sleep(Duration::from_millis(300));
    node.interrupt();
    assert_eq!(node.wait_exit(), Some(0));
    node.wait_log(r"grace period over");
    assert!(
        in_flight.join().unwrap(),
        "the cut-off request must not look successful"
    );
}

/// Enough address space to run, far too little for a pool of 1000 4-GiB
/// memory reservations.
const SMALL_ADDRESS_SPACE: u64 = 64 << 30;

#[test]
fn falls_back_to_on_demand_allocation_when_the_pool_cannot_be_reserved() {
    let node = Node::start_with_address_limit(&[("hello", "hello")], &[], SMALL_ADDRESS_SPACE);
    node.wait_log(r"falling back to on-demand allocation");
    node.wait_log(r"engines ready.*allocator=on-demand");
    for _ in 0..5 {
        assert_eq!(node.get("/hello").status, 200);
    }
}

#[test]
fn uses_the_pooling_allocator_by_default() {
    let node = Node::start(&[("hello", "hello")]);
    node.wait_log(r"engines ready.*allocator=pooling");
    assert_eq!(node.get("/hello").status, 200);
}

#[test]
fn forcing_the_pool_without_address_space_fails_clearly() {
    let dir = prepare(&[("hello", "hello")]);
    let mut cmd = Node::command(
        &dir,
        &["--allocator".into(), "pooling".into()],
        Some(SMALL_ADDRESS_SPACE),
    );
    let output = cmd.output().expect("run outpost");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.to_lowercase().contains("error"), "{stderr}");
}

#[test]
fn each_worker_thread_instantiates_from_its_own_engine() {
    let node = Node::start_with_log_filter(
        &[("hello", "hello")],
        &["--engines", "3"],
        "info,outpost::invoke=trace",
    );
    node.wait_log(r"engines ready.*allocator=pooling.*engines=3");
    // One runtime worker per CPU, each on its own engine: with two CPUs or
    // more, concurrent requests are served from at least two engines.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let wanted = cpus.min(2);
    let url = node.url("/hello");
    let engines_seen = || -> std::collections::BTreeSet<String> {
        node.log_matches(r"instantiating.*engine=\d+")
            .iter()
            .filter_map(|line| line.split("engine=").nth(1))
            .map(|rest| rest.chars().take_while(char::is_ascii_digit).collect())
            .collect()
    };
    let seen = eventually("requests served from an engine per worker", || {
        let clients: Vec<_> = (0..6)
            .map(|_| {
                let url = url.clone();
                std::thread::spawn(move || {
                    (0..10)
                        .map(|_| ureq::get(&url).call().map(|r| r.status()).unwrap_or(0))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for client in clients {
            assert!(client.join().unwrap().iter().all(|&s| s == 200));
        }
        let seen = engines_seen();
        (seen.len() >= wanted).then_some(seen)
    });
    // Three engines, but no more workers than CPUs: only those serve.
    assert!(seen.len() <= cpus.min(3), "{seen:?} with {cpus} CPUs");
    assert!(seen.iter().all(|e| ["0", "1", "2"].contains(&e.as_str())));
}

/// Room for one pool of 8 instances (about 32 GiB of reservations) and the
/// process, not for two.
const ONE_SMALL_POOL: u64 = 50 << 30;

#[test]
fn an_engine_whose_pool_cannot_be_reserved_is_left_out() {
    let node = Node::start_with_address_limit(
        &[("hello", "hello")],
        &["--engines", "2", "--max-instances", "8"],
        ONE_SMALL_POOL,
    );
    node.wait_log(r"cannot build another engine.*wanted=2 built=1");
    node.wait_log(r"engines ready.*allocator=pooling.*engines=1");
    for _ in 0..5 {
        assert_eq!(node.get("/hello").status, 200);
    }
}

/// Every `serve` flag names its environment variable in `--help` in one
/// format, and that variable is one the settings code reads.
#[test]
fn serve_help_names_each_flags_environment_variable() {
    let output = std::process::Command::new(crate::harness::outpost_bin())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    let config_rs = include_str!("../../host/edge/src/config.rs");
    let flags = regex::Regex::new(r"(?m)^\s+--([a-z-]+)").unwrap();
    let mut checked = 0;
    for flag in flags.captures_iter(&help).map(|c| c[1].to_owned()) {
        let text: String = help
            .split(&format!("--{flag}"))
            .nth(1)
            .unwrap()
            .split("\n\n")
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        match flag.as_str() {
            "help" => continue,
            "config" | "new-epoch" | "log-format" => {
                assert!(text.contains("no env"), "--{flag}: {text}");
                continue;
            }
            _ => {}
        }
        let env = format!("OUTPOST_{}", flag.to_uppercase().replace('-', "_"));
        assert!(
            text.contains(&format!("; env {env}")),
            "--{flag} does not name {env}: {text}"
        );
        assert!(
            config_rs.contains(&format!("\"{env}\"")),
            "{env} is not read by config.rs"
        );
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} flags found in:\n{help}");
}

/// SIGTERM to the cloud answers a feed read that is long-polling at once
/// (an empty page, not a connection cut when the grace runs out), so the
/// cloud stops promptly while edges wait on it.
#[test]
fn the_cloud_answers_waiting_feed_reads_when_it_is_told_to_stop() {
    let mut cloud = crate::harness::Cloud::start();
    let url = format!("{}/v1/feed?since=0&wait=30", cloud.url());
    let poll = std::thread::spawn(move || {
        ureq::get(&url)
            .set(
                "authorization",
                &format!("Bearer {}", crate::harness::TOKEN),
            )
            .call()
            .map(|r| (r.status(), r.into_string().unwrap()))
            .map_err(|e| e.to_string())
    });
    // The read is waiting (nothing was ever written) when the signal comes.
    std::thread::sleep(Duration::from_millis(500));
    cloud.terminate();
    assert_eq!(cloud.wait_exit(), Some(0));
    let (status, body) = poll
        .join()
        .unwrap()
        .expect("an answer, not a cut connection");
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["changes"].as_array().map(Vec::len), Some(0), "{page}");
}
