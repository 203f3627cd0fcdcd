//! `load`: Outpost's load harness. Measures throughput against wasmtime
//! serve and a native hyper server, hot reload under load, startup with and
//! without the code cache, two builds alternated (`ab`), instructions per
//! request under callgrind, how plain work scales across cores (`cores`),
//! one server per core against one for all (`percore`), ingest into the
//! cloud tier on sled and PostgreSQL (`ingest`), durable KV writes against
//! reads and hello (`kv-write`), an outbox draining after a cloud outage
//! (`drain`), and an edge applying the change feed (`feed-apply`); prints
//! markdown (or JSON with `--json`).

mod ab;
mod callgrind;
mod cli;
mod cores;
mod drain;
mod feed_apply;
mod ingest;
mod kv_write;
mod percore;
mod prereq;
mod reload;
mod report;
mod servers;
mod startup;
mod throughput;
mod wasm;
mod wrk;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo run --release -p outpost-load -- <mode> [flags] [--json]

  throughput [--duration 10] [--connections 64] [--server-core 0 | --server-cores 0,1]
             [--client-core 1] [--only outpost,outpost-nocache,wasmtime,native]
             [--wasm PATH (default: the SDK's hello)] [--path /hello?QUERY]
  reload     [--duration 10] [--every-ms 100] [--connections 64]
             [--server-core 0] [--client-core 1]
  startup    [--modules 50] [--server-core CPUS (default: unpinned)]
  ab         --a OUTPOST_BIN --b OUTPOST_BIN [--rounds 3] [--duration 5]
             [--connections 64] [--pipeline 1] [--server-core 0] [--client-core 1]
  callgrind  [--bin OUTPOST_BIN] [--wasm PATH] [--short 6] [--long 24] [--connections 4]
             [--client-core 1]   (instructions per request, by part)
  cores      [--seconds 3]       (how plain work scales from one core to two)
  percore    [--rounds 3] [--duration 5] [--connections 64] [--cpus 0,1]
             (one server on all CPUs vs one server per CPU, CPU per request)
  ingest     [--backend sled|pg|both] [--records 200000] [--warmup 20000] [--batch 1000]
             [--edges 1,4] [--replicas 1,2 (pg only)] [--pool N (pg connections per replica)]
             [--bin OUTPOST_BIN (default: target/release/outpost, built)]
             (records/s into `outpost cloud`, feed changes/s, CPU by process; pg runs a
             private cluster with initdb/pg_ctl, fsync on)
  kv-write   [--duration 5] [--rounds 3] [--bin OUTPOST_BIN] [--server-core 0] [--client-core 1]
             (hello, kv get, set, incr, enqueue under wrk at 64 and 1 connections;
             every answer's body checked; ratios to get and hello)
  drain      [--bin OUTPOST_BIN] [--records 100000] [--backend sled|pg|both (default sled)] [--away-secs 30]
             [--connections 32] [--ship-batch N] [--server-core 0] [--client-core 1]
             (fill an edge's outbox with the cloud away, start the cloud, time first ack
             and empty outbox, check the cloud got exactly N)
  feed-apply [--bin OUTPOST_BIN] [--changes 100000] [--backend sled|pg|both (default sled)] [--batch 1000]
             [--server-core 0]
             (a fresh edge applying N feed changes another node wrote; changes/s)

env: OUTPOST_WASMTIME=/path/to/wasmtime (48.0.8) skips the wasmtime-cli install";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or_default();
    let result = match args.first().map(String::as_str) {
        Some("throughput") => throughput::run(rest),
        Some("reload") => reload::run(rest),
        Some("startup") => startup::run(rest),
        Some("ab") => ab::run(rest),
        Some("callgrind") => callgrind::run(rest),
        Some("cores") => cores::run(rest),
        Some("percore") => percore::run(rest),
        Some("ingest") => ingest::run(rest),
        Some("kv-write") => kv_write::run(rest),
        Some("drain") => drain::run(rest),
        Some("feed-apply") => feed_apply::run(rest),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => Err(USAGE.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load: {e}");
            ExitCode::FAILURE
        }
    }
}
