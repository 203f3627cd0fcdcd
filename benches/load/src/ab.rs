//! `load ab`: two `outpost` builds alternated under the same wrk load, so a
//! tuning lever is judged against run-to-run drift, not against one run.

use crate::cli::{self, Flags};
use crate::prereq::Paths;
use crate::servers::{self, Scratch};
use crate::{report, wrk};
use std::path::PathBuf;
use std::time::Duration;

const WARM_UP_SECS: u64 = 2;

pub fn run(args: &[String]) -> Result<(), String> {
    let flags = Flags::parse(
        args,
        &[
            "a",
            "b",
            "rounds",
            "duration",
            "connections",
            "server-core",
            "server-cores",
            "client-core",
            "pipeline",
        ],
        &["json"],
    )?;
    let builds: Vec<PathBuf> = ["a", "b"]
        .iter()
        .map(|k| {
            flags
                .str(k)
                .map(PathBuf::from)
                .ok_or_else(|| format!("--{k} BINARY is required (an outpost build)"))
        })
        .collect::<Result<_, _>>()?;
    let rounds: usize = flags.get("rounds", 3)?;
    let duration: u64 = flags.get("duration", 5)?;
    let connections: u32 = flags.get("connections", 64)?;
    let pipeline: u32 = flags.get("pipeline", 1)?;
    let load = wrk::Load {
        pipeline: pipeline.max(1),
        ..wrk::Load::plain(connections, duration)
    };
    let (server_cpus, client_cpus) = cli::pinning(&flags);
    let hello = Paths::discover().hello_wasm()?;
    let mut rps: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 1..=rounds {
        // Which build goes first alternates, so a drift within a round
        // favours neither.
        let order = if round % 2 == 1 { [0, 1] } else { [1, 0] };
        for i in order {
            let bin = &builds[i];
            let scratch = Scratch::new("ab")?;
            let to = scratch.modules().join("hello.wasm");
            std::fs::copy(&hello, &to).map_err(|e| format!("cannot copy to {to:?}: {e}"))?;
            let mut server = servers::outpost(bin, &scratch, Some(&server_cpus), "warn", &[])?;
            server.wait_ok("/hello", Duration::from_secs(120))?;
            let url = format!("http://127.0.0.1:{}/hello", server.port);
            let warm_up = wrk::Load {
                secs: WARM_UP_SECS,
                ..load
            };
            wrk::start(&client_cpus, warm_up, &url)?.finish()?;
            let measured = wrk::start(&client_cpus, load, &url)?.finish()?;
            server.stop();
            if measured.failed() > 0 {
                return Err(format!(
                    "{}: {} of {} requests failed",
                    bin.display(),
                    measured.failed(),
                    measured.requests
                ));
            }
            eprintln!(
                "load: round {round}, {}: {} req/s",
                bin.display(),
                report::rps(measured.rps)
            );
            rps[i].push(measured.rps);
        }
    }
    if flags.has("json") {
        let json =
            serde_json::json!({ "a": builds[0], "b": builds[1], "a_rps": rps[0], "b_rps": rps[1] });
        println!("{json:#}");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = builds
        .iter()
        .zip(&rps)
        .map(|(bin, runs)| {
            vec![
                bin.display().to_string(),
                runs.iter()
                    .map(|r| report::rps(*r))
                    .collect::<Vec<_>>()
                    .join(" / "),
                report::rps(report::median(runs)),
            ]
        })
        .collect();
    println!(
        "### ab: hello, {rounds} alternating rounds of `wrk -t1 -c{connections} -d{duration}s`, {} request(s) in flight per connection, server CPUs {server_cpus}, wrk CPU {client_cpus}\n",
        load.pipeline
    );
    println!(
        "{}",
        report::table(&["build", "req/s per round", "median"], &rows)
    );
    println!(
        "b / a (medians): {}",
        report::ratio(report::median(&rps[1]), report::median(&rps[0]))
    );
    Ok(())
}
