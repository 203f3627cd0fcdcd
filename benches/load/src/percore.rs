//! `load percore`: the most that one acceptor and runtime per core
//! (`SO_REUSEPORT`) could give over today's one multi-thread server. It
//! runs two separate Outpost processes, one pinned to each CPU, which share
//! nothing at all (not a runtime, an engine, a listener or an allocator),
//! against one Outpost on both CPUs, in alternating rounds. wrk runs on the
//! same CPUs in both setups, since a 2-CPU machine has none to spare; the
//! servers' own CPU time per request (from `/proc`) is the figure to
//! compare, because req/s also moves with wrk's share of the CPUs.

use crate::cli::{self, Flags};
use crate::prereq::{self, Paths};
use crate::servers::{self, Scratch, Server};
use crate::{report, wrk};
use std::time::Duration;

const WARM_UP_SECS: u64 = 2;

/// What one setup measured in one round.
struct Sample {
    rps: f64,
    /// Server CPU time (all its processes) per answered request.
    cpu_us_per_request: f64,
}

pub fn run(args: &[String]) -> Result<(), String> {
    let flags = Flags::parse(
        args,
        &["rounds", "duration", "connections", "cpus"],
        &["json"],
    )?;
    let rounds: usize = flags.get("rounds", 3)?;
    let duration: u64 = flags.get("duration", 5)?;
    let connections: u32 = flags.get("connections", 64)?;
    let cpus = flags.str("cpus").unwrap_or("0,1").to_owned();
    let each: Vec<String> = cpus.split(',').map(str::to_owned).collect();
    if each.len() < 2 || cli::cpu_count(&cpus)? != each.len() {
        return Err(format!(
            "--cpus {cpus}: name two or more single CPUs, like 0,1"
        ));
    }
    prereq::taskset()?;
    prereq::wrk()?;
    let paths = Paths::discover();
    let bin = paths.outpost()?;
    let hello = paths.hello_wasm()?;

    let mut shared = Vec::new();
    let mut split = Vec::new();
    let per_cpu: Vec<&str> = each.iter().map(String::as_str).collect();
    for round in 1..=rounds {
        // Which setup goes first alternates, so a drift within a round
        // favours neither.
        let split_first = round % 2 == 0;
        for split_now in [split_first, !split_first] {
            let (name, servers): (String, &[&str]) = if split_now {
                ("one server per CPU".into(), &per_cpu)
            } else {
                (format!("one server on {cpus}"), &[cpus.as_str()])
            };
            let sample = measure(&bin, &hello, servers, &cpus, connections, duration)?;
            eprintln!(
                "load: round {round}, {name}: {} req/s, {:.1} us CPU per request",
                report::rps(sample.rps),
                sample.cpu_us_per_request
            );
            if split_now {
                split.push(sample);
            } else {
                shared.push(sample);
            }
        }
    }

    let cpu_median =
        |s: &[Sample]| report::median(&s.iter().map(|x| x.cpu_us_per_request).collect::<Vec<_>>());
    let rps_median = |s: &[Sample]| report::median(&s.iter().map(|x| x.rps).collect::<Vec<_>>());
    if flags.has("json") {
        let list = |s: &[Sample]| {
            s.iter()
                .map(|x| serde_json::json!({"rps": x.rps, "cpu_us_per_request": x.cpu_us_per_request}))
                .collect::<Vec<_>>()
        };
        let json = serde_json::json!({
            "cpus": cpus,
            "one_server": list(&shared),
            "one_server_per_cpu": list(&split),
        });
        println!("{json:#}");
        return Ok(());
    }
    let row = |name: String, s: &[Sample]| {
        vec![
            name,
            s.iter()
                .map(|x| report::rps(x.rps))
                .collect::<Vec<_>>()
                .join(" / "),
            s.iter()
                .map(|x| format!("{:.1}", x.cpu_us_per_request))
                .collect::<Vec<_>>()
                .join(" / "),
            format!("{:.1}", cpu_median(s)),
        ]
    };
    println!(
        "### percore: hello, {rounds} alternating rounds of {duration} s, {connections} connections in all, servers and wrk on CPUs {cpus}\n"
    );
    println!(
        "{}",
        report::table(
            &[
                "setup",
                "req/s per round",
                "server CPU us per request",
                "median"
            ],
            &[
                row(format!("one server on {cpus}"), &shared),
                row(format!("{} servers, one per CPU", each.len()), &split),
            ],
        )
    );
    println!(
        "req/s, per CPU / one (medians): {}; CPU per request, per CPU / one: {}",
        report::ratio(rps_median(&split), rps_median(&shared)),
        report::ratio(cpu_median(&split), cpu_median(&shared)),
    );
    Ok(())
}

/// Starts one Outpost per entry of `server_cpus`, loads them all at once
/// with `connections` split among one wrk per server (all wrks on
/// `client_cpus`), and returns their summed req/s and CPU per request.
fn measure(
    bin: &std::path::Path,
    hello: &std::path::Path,
    server_cpus: &[&str],
    client_cpus: &str,
    connections: u32,
    duration: u64,
) -> Result<Sample, String> {
    let mut running: Vec<(Scratch, Server)> = Vec::new();
    for cpus in server_cpus {
        let scratch = Scratch::new("percore")?;
        let to = scratch.modules().join("hello.wasm");
        std::fs::copy(hello, &to).map_err(|e| format!("cannot copy to {to:?}: {e}"))?;
        let mut server = servers::outpost(bin, &scratch, Some(cpus), "warn", &[])?;
        server.wait_ok("/hello", Duration::from_secs(120))?;
        running.push((scratch, server));
    }
    let per_server = (connections / server_cpus.len() as u32).max(1);
    // One wrk thread per server CPU in all, so both setups drive the same
    // number of client threads.
    let threads = if server_cpus.len() == 1 {
        cli::cpu_count(server_cpus[0])? as u32
    } else {
        1
    };
    let load = |secs| wrk::Load {
        threads,
        connections: per_server.max(threads),
        secs,
        pipeline: 1,
    };
    let urls: Vec<String> = running
        .iter()
        .map(|(_, s)| format!("http://127.0.0.1:{}/hello", s.port))
        .collect();
    let all = |secs| -> Result<Vec<wrk::Run>, String> {
        let pending = urls
            .iter()
            .map(|url| wrk::start(client_cpus, load(secs), url))
            .collect::<Result<Vec<_>, _>>()?;
        pending.into_iter().map(wrk::Pending::finish).collect()
    };
    all(WARM_UP_SECS)?;
    let before = cpu_total(&running)?;
    let runs = all(duration)?;
    let used = cpu_total(&running)? - before;
    for (_, server) in &mut running {
        server.stop();
    }
    let requests: u64 = runs.iter().map(|r| r.requests).sum();
    let failed: u64 = runs.iter().map(wrk::Run::failed).sum();
    if failed > 0 {
        return Err(format!("{failed} requests failed under load"));
    }
    Ok(Sample {
        rps: runs.iter().map(|r| r.rps).sum(),
        cpu_us_per_request: used.as_secs_f64() * 1e6 / requests.max(1) as f64,
    })
}

fn cpu_total(running: &[(Scratch, Server)]) -> Result<Duration, String> {
    running.iter().map(|(_, s)| s.cpu_time()).sum()
}
