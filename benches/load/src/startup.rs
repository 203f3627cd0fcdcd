//! `load startup`: time from spawning `outpost serve` over N distinct
//! modules until its health endpoint counts all N, first with an empty data
//! dir (everything compiles) and then on the same data dir (the code cache).

use crate::cli::{self, Flags};
use crate::prereq::Paths;
use crate::servers::{self, Scratch};
use crate::{report, wasm};
use std::time::Duration;

/// Cached restarts measured; the first start is the only cold one possible.
const CACHED_RUNS: usize = 5;

struct Start {
    wall_ms: f64,
    ready_ms: Option<u64>,
}

pub fn run(args: &[String]) -> Result<(), String> {
    let flags = Flags::parse(args, &["modules", "server-core", "server-cores"], &["json"])?;
    let count: usize = flags.get("modules", 50)?;
    if count == 0 {
        return Err("--modules must be at least 1".into());
    }
    // Unpinned unless asked: compiling N modules in parallel is part of
    // what a cold start costs on a real node.
    let cpus = flags.str("server-cores").or(flags.str("server-core"));
    if let Some(cpus) = cpus {
        cli::cpu_count(cpus)?;
        crate::prereq::taskset()?;
    }

    let paths = Paths::discover();
    let hello = paths.hello_wasm()?;
    let outpost = paths.outpost()?;
    let original = std::fs::read(&hello).map_err(|e| format!("cannot read {hello:?}: {e}"))?;
    let scratch = Scratch::new("startup")?;
    for i in 0..count {
        // A distinct section per file gives each its own hash, so nothing
        // is shared through the cache.
        let bytes = wasm::with_custom_section(&original, &format!("outpost-bench-{i}"), b"");
        let to = scratch.modules().join(format!("fn{i}.wasm"));
        std::fs::write(&to, bytes).map_err(|e| format!("cannot write {to:?}: {e}"))?;
    }

    let cold = start(&outpost, &scratch, cpus, count)?;
    eprintln!("load: startup: cold {:.1} ms", cold.wall_ms);
    let mut cached = Vec::new();
    for run in 1..=CACHED_RUNS {
        let start = start(&outpost, &scratch, cpus, count)?;
        eprintln!("load: startup: cached #{run} {:.1} ms", start.wall_ms);
        cached.push(start);
    }
    let walls: Vec<f64> = cached.iter().map(|s| s.wall_ms).collect();
    let readies: Vec<f64> = cached
        .iter()
        .filter_map(|s| s.ready_ms.map(|ms| ms as f64))
        .collect();
    let min = walls.iter().copied().fold(f64::INFINITY, f64::min);
    let median = report::median(&walls);
    let ready_min = readies.iter().copied().reduce(f64::min);
    let ready_median = (!readies.is_empty()).then(|| report::median(&readies));

    if flags.has("json") {
        let json = serde_json::json!({
            "mode": "startup",
            "modules": count,
            "server_cpus": cpus,
            "cold": { "wall_ms": cold.wall_ms, "ready_ms": cold.ready_ms },
            "cached": cached
                .iter()
                .map(|s| serde_json::json!({ "wall_ms": s.wall_ms, "ready_ms": s.ready_ms }))
                .collect::<Vec<_>>(),
            "cached_wall_ms": { "min": min, "median": median },
            "cached_ready_ms": { "min": ready_min, "median": ready_median },
        });
        println!("{json:#}");
        return Ok(());
    }
    let ready = |ms: Option<u64>| ms.map_or("-".into(), |ms| ms.to_string());
    let readyf = |ms: Option<f64>| ms.map_or("-".into(), |ms| format!("{ms:.0}"));
    let mut rows = vec![vec![
        "cold (empty data dir)".into(),
        format!("{:.1}", cold.wall_ms),
        ready(cold.ready_ms),
    ]];
    for (i, s) in cached.iter().enumerate() {
        rows.push(vec![
            format!("cached #{}", i + 1),
            format!("{:.1}", s.wall_ms),
            ready(s.ready_ms),
        ]);
    }
    rows.push(vec![
        "**cached min**".into(),
        format!("{min:.1}"),
        readyf(ready_min),
    ]);
    rows.push(vec![
        "**cached median**".into(),
        format!("{median:.1}"),
        readyf(ready_median),
    ]);
    println!(
        "### startup: {count} distinct modules, spawn until /_outpost/health counts {count}\n"
    );
    print!(
        "{}",
        report::table(&["start", "wall ms", "host `ready` ms="], &rows)
    );
    Ok(())
}

/// One start: spawn, poll health every 2 ms until it counts `count`
/// functions, collect the `ready` line, stop.
fn start(
    outpost: &std::path::Path,
    scratch: &Scratch,
    cpus: Option<&str>,
    count: usize,
) -> Result<Start, String> {
    let mut server = servers::outpost(outpost, scratch, cpus, "info", &[])?;
    server.wait_for(
        "/_outpost/health",
        Duration::from_secs(600),
        Duration::from_millis(2),
        |status, body| {
            status == 200
                && serde_json::from_slice::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| v.get("functions")?.as_u64())
                    == Some(count as u64)
        },
    )?;
    let wall_ms = server.started().elapsed().as_secs_f64() * 1000.0;
    // The log line may trail the health answer by a moment.
    for _ in 0..500 {
        if server.ready_ms().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let ready_ms = server.ready_ms();
    server.stop();
    Ok(Start { wall_ms, ready_ms })
}
