//! `load throughput`: the same hello component behind Outpost, wasmtime
//! serve and a native hyper server, one after another under identical wrk
//! load, so the ratios show what Outpost's routing and bookkeeping cost.
//!
//! `outpost-nocache` is Outpost with its HTTP cache turned off, for what
//! the cache costs a response it cannot store (`--only
//! outpost,outpost-nocache`); `--path` sends another path and query to
//! Outpost and wasmtime serve, such as the `cachetest` guest's
//! `/hello?cc=public,max-age=60` for a response Outpost's cache answers.

use crate::cli::{self, Flags};
use crate::prereq::{self, Paths};
use crate::servers::{self, Scratch, Server};
use crate::{report, wrk};
use std::time::Duration;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Outpost,
    OutpostNoCache,
    Wasmtime,
    Native,
}

impl Kind {
    fn parse(name: &str) -> Result<Self, String> {
        match name.trim() {
            "outpost" => Ok(Self::Outpost),
            "outpost-nocache" => Ok(Self::OutpostNoCache),
            "wasmtime" => Ok(Self::Wasmtime),
            "native" => Ok(Self::Native),
            other => Err(format!(
                "--only: unknown server {other:?} (outpost, outpost-nocache, wasmtime, native)"
            )),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Outpost => "outpost",
            Self::OutpostNoCache => "outpost, cache off",
            Self::Wasmtime => "wasmtime serve",
            Self::Native => "native hyper",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Self::Outpost => "outpost",
            Self::OutpostNoCache => "outpost_nocache",
            Self::Wasmtime => "wasmtime",
            Self::Native => "native",
        }
    }
}

/// Long enough to compile, fill caches and reach a steady connection pool.
const WARM_UP_SECS: u64 = 2;

pub fn run(args: &[String]) -> Result<(), String> {
    let flags = Flags::parse(
        args,
        &[
            "duration",
            "connections",
            "server-core",
            "server-cores",
            "client-core",
            "only",
            "wasm",
            "path",
        ],
        &["json"],
    )?;
    let duration: u64 = flags.get("duration", 10)?;
    let connections: u32 = flags.get("connections", 64)?;
    let (server_cpus, client_cpus) = cli::pinning(&flags);
    let server_threads = cli::cpu_count(&server_cpus)?;
    cli::cpu_count(&client_cpus)?;
    let kinds = flags
        .str("only")
        .unwrap_or("outpost,wasmtime,native")
        .split(',')
        .map(Kind::parse)
        .collect::<Result<Vec<_>, _>>()?;

    prereq::taskset()?;
    prereq::wrk()?;
    let paths = Paths::discover();
    // The same component behind Outpost and `wasmtime serve`: the SDK's
    // hello unless another is named (say, the bare wasi:http one).
    let hello = paths.served_wasm(flags.str("wasm"))?;
    let served_path = flags.str("path").unwrap_or("/hello").to_owned();
    if !served_path.starts_with("/hello") {
        return Err("--path must start with /hello (the component is served as hello)".into());
    }
    // Resolve every binary before measuring anything: a 20-minute wasmtime
    // install between two runs would leave the machine in another state.
    let mut bins = Vec::new();
    for &kind in &kinds {
        bins.push(match kind {
            Kind::Outpost | Kind::OutpostNoCache => paths.outpost()?,
            Kind::Wasmtime => paths.wasmtime()?,
            Kind::Native => paths.native_hello()?,
        });
    }

    let mut results: Vec<(Kind, wrk::Run)> = Vec::new();
    let mut first_body: Option<Vec<u8>> = None;
    for (&kind, bin) in kinds.iter().zip(&bins) {
        let scratch = Scratch::new(kind.key())?;
        let cpus = Some(server_cpus.as_str());
        let (mut server, path): (Server, &str) = match kind {
            Kind::Outpost | Kind::OutpostNoCache => {
                let to = scratch.modules().join("hello.wasm");
                std::fs::copy(&hello, &to).map_err(|e| format!("cannot copy to {to:?}: {e}"))?;
                if kind == Kind::OutpostNoCache {
                    let config = scratch.path().join("outpost.toml");
                    std::fs::write(&config, "[cache]\nenabled = false\n")
                        .map_err(|e| format!("cannot write {config:?}: {e}"))?;
                }
                // Logging at info would measure the log writer too.
                (
                    servers::outpost(bin, &scratch, cpus, "warn", &[])?,
                    served_path.as_str(),
                )
            }
            Kind::Wasmtime => (
                servers::wasmtime(bin, &scratch, &hello, cpus)?,
                served_path.as_str(),
            ),
            Kind::Native => (servers::native(bin, &scratch, cpus, server_threads)?, "/"),
        };
        let body = server.wait_ok(path, Duration::from_secs(120))?;
        match &first_body {
            None => first_body = Some(body),
            Some(first) if *first != body => eprintln!(
                "load: warning: {} answers {:?}, the first server answered {:?}",
                kind.label(),
                String::from_utf8_lossy(&body),
                String::from_utf8_lossy(first)
            ),
            Some(_) => {}
        }
        let url = format!("http://127.0.0.1:{}{path}", server.port);
        eprintln!(
            "load: {}: warm-up {WARM_UP_SECS} s, then {duration} s of wrk -c{connections} on {url}",
            kind.label()
        );
        wrk::run(&client_cpus, connections, WARM_UP_SECS, &url)?;
        let measured = wrk::run(&client_cpus, connections, duration, &url)?;
        server.stop();
        eprintln!(
            "load: {}: {} req/s, p99 {}",
            kind.label(),
            report::rps(measured.rps),
            report::ms(measured.p99_us)
        );
        results.push((kind, measured));
    }

    let find = |kind| results.iter().find(|(k, _)| *k == kind).map(|(_, r)| r);
    let ratios: Vec<(Kind, &wrk::Run)> = match find(Kind::Outpost) {
        Some(_) => [Kind::OutpostNoCache, Kind::Wasmtime, Kind::Native]
            .into_iter()
            .filter_map(|k| find(k).map(|r| (k, r)))
            .collect(),
        None => Vec::new(),
    };

    if flags.has("json") {
        let outpost = find(Kind::Outpost);
        let json = serde_json::json!({
            "mode": "throughput",
            "wasm": hello,
            "path": served_path,
            "duration_s": duration,
            "connections": connections,
            "server_cpus": server_cpus,
            "client_cpus": client_cpus,
            "results": results
                .iter()
                .map(|(k, r)| (k.key().to_owned(), r.json()))
                .collect::<serde_json::Map<_, _>>(),
            "ratios": ratios
                .iter()
                .map(|(k, r)| {
                    let o = outpost.expect("ratios need outpost");
                    (
                        format!("outpost/{}", k.key()),
                        serde_json::json!({
                            "requests_per_sec": o.rps / r.rps,
                            "p50": o.p50_us / r.p50_us,
                            "p99": o.p99_us / r.p99_us,
                        }),
                    )
                })
                .collect::<serde_json::Map<_, _>>(),
        });
        println!("{json:#}");
        return Ok(());
    }

    println!(
        "### throughput: {} at {served_path}, `wrk -t1 -c{connections} -d{duration}s`, server CPUs {server_cpus}, wrk CPU {client_cpus}\n",
        hello.display()
    );
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|(k, r)| {
            vec![
                k.label().into(),
                report::rps(r.rps),
                report::ms(r.p50_us),
                report::ms(r.p99_us),
                r.non_2xx.to_string(),
                r.socket_errors.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        report::table(
            &["server", "req/s", "p50", "p99", "non-2xx", "socket errors"],
            &rows
        )
    );
    if let Some(o) = find(Kind::Outpost)
        && !ratios.is_empty()
    {
        let rows: Vec<Vec<String>> = ratios
            .iter()
            .map(|(k, r)| {
                vec![
                    format!("outpost / {}", k.label()),
                    report::ratio(o.rps, r.rps),
                    report::ratio(o.p50_us, r.p50_us),
                    report::ratio(o.p99_us, r.p99_us),
                ]
            })
            .collect();
        println!();
        print!(
            "{}",
            report::table(&["ratio", "req/s", "p50", "p99"], &rows)
        );
    }
    Ok(())
}
