//! `load kv-write`: what a durable KV write (set, incr) and a queue enqueue
//! cost over HTTP next to a KV read and next to hello, on one pinned
//! `outpost serve` whose replicated store has no cloud (so the outbox only
//! grows), under wrk at 64 connections (throughput) and at 1 (latency).
//!
//! Every answer's body is checked by wrk's Lua `response` hook: the test
//! guest answers 200 even for `{"error":...}`, and a write that fails fast
//! must fail the run instead of being measured as fast. hello gets the
//! same hook, so every operation costs wrk the same per answer.

use crate::cli::{self, Flags};
use crate::ingest::{self, Conn};
use crate::prereq::{self, Paths};
use crate::servers::{self, Scratch, Server};
use crate::{report, wrk};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Keys set and read are spread over this many, so no single hot key (one
/// sled page, one lock) is what gets measured.
const KEYS: usize = 10_000;

/// Each operation's warm-up before the first round, at 64 connections:
/// compiles, fills the instance pool and sled's cache.
const WARM_UP_SECS: u64 = 1;

/// The connection counts measured: the throughput load, then latency alone.
const CONNECTIONS: [u32; 2] = [64, 1];

/// What a write stores: a small JSON document, as a session or a cart line.
const VALUE: &str = r#"{"user":"u-1234","cart":[1,2,3],"at":1764600000}"#;

/// The settings that make the test guest's own store (`@kv`) replicate, so
/// each write also appends an outbox record, as in production.
pub const KV_SETTINGS: &str = "[kv]\nreplicated = [\"default\"]\n";

/// One request shape wrk sends over and over.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Hello,
    /// The kvtest guest answering without a kv call: what its kv ops cost
    /// is measured against this, the same guest's own price.
    Ping,
    Get,
    Set,
    Incr,
    Enqueue,
}

const OPS: [Op; 6] = [Op::Hello, Op::Ping, Op::Get, Op::Set, Op::Incr, Op::Enqueue];

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Hello => "hello",
            Op::Ping => "kv hello",
            Op::Get => "get",
            Op::Set => "set",
            Op::Incr => "incr",
            Op::Enqueue => "enqueue",
        }
    }

    fn method(self) -> &'static str {
        match self {
            Op::Hello | Op::Ping | Op::Get => "GET",
            Op::Set | Op::Incr | Op::Enqueue => "POST",
        }
    }

    /// The path, `%d` standing for a key number in 1..=[`KEYS`]. set and
    /// get share the `k` keys; incr has its own, since incrementing a JSON
    /// value set by `set` is an error (`not-a-number`).
    fn path(self) -> &'static str {
        match self {
            Op::Hello => "/hello",
            Op::Ping => "/kv/_/hello",
            Op::Get => "/kv/default/get?key=k%d",
            Op::Set => "/kv/default/set?key=k%d",
            Op::Incr => "/kv/default/incr?key=n%d",
            Op::Enqueue => "/kv/_/enqueue?topic=load",
        }
    }

    fn body(self) -> &'static str {
        match self {
            Op::Set | Op::Enqueue => VALUE,
            Op::Hello | Op::Ping | Op::Get | Op::Incr => "",
        }
    }

    /// What every answer's body starts with; hello's is whatever it
    /// answered before the clock started (status 200 is checked too).
    fn expect(self, hello: &str) -> String {
        match self {
            Op::Hello => hello.to_owned(),
            _ => r#"{"ok""#.to_owned(),
        }
    }

    fn writes(self) -> bool {
        matches!(self, Op::Set | Op::Incr | Op::Enqueue)
    }
}

/// wrk's script for every operation. Arguments: method, path (`%d` for a
/// random key number), key count (0: the path is fixed), body (empty for
/// none), and the prefix every answer must start with. Answers that do
/// not (or are not 200) are counted per thread and summed in `done`,
/// where the harness reads them from wrk's output.
const SCRIPT: &str = r#"
local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  method, path, keys, body, expect = args[1], args[2], tonumber(args[3]), args[4], args[5]
  if body == "" then body = nil end
  bad, first_bad = 0, ""
  math.randomseed(os.time() * 1000 + id)
  if keys == 0 then fixed = wrk.format(method, path, nil, body) end
end

function request()
  if fixed then return fixed end
  return wrk.format(method, string.format(path, math.random(keys)), nil, body)
end

function response(status, headers, answer)
  if status ~= 200 or string.sub(answer, 1, #expect) ~= expect then
    bad = bad + 1
    if first_bad == "" then first_bad = status .. " " .. string.sub(answer, 1, 200) end
  end
end

function done(summary, latency, requests)
  local total, first = 0, ""
  for _, t in ipairs(threads) do
    total = total + t:get("bad")
    if first == "" then first = t:get("first_bad") end
  end
  io.write(string.format("outpost-load-bad: %d\n", total))
  if first ~= "" then
    io.write("outpost-load-first-bad: " .. (string.gsub(first, "\n", " ")) .. "\n")
  end
end
"#;

/// The bad-answer count the script's `done` hook printed, and the first
/// bad answer if any; `None` if the line is missing (the hook did not run).
fn bad_answers(stdout: &str) -> Option<(u64, Option<String>)> {
    let count = stdout
        .lines()
        .find_map(|l| l.strip_prefix("outpost-load-bad: "))?
        .trim()
        .parse()
        .ok()?;
    let first = stdout
        .lines()
        .find_map(|l| l.strip_prefix("outpost-load-first-bad: "))
        .map(str::to_owned);
    Some((count, first))
}

/// The test guest installed as function `kv` with a replicated default
/// store (`@kv`), in `modules`. Used by `drain` and `feed-apply` too.
pub fn install_kv(paths: &Paths, modules: &Path) -> Result<(), String> {
    let guest = kvtest_wasm(paths)?;
    let to = modules.join("kv.wasm");
    std::fs::copy(&guest, &to).map_err(|e| format!("cannot copy {guest:?} to {to:?}: {e}"))?;
    let settings = modules.join("kv.toml");
    std::fs::write(&settings, KV_SETTINGS).map_err(|e| format!("cannot write {settings:?}: {e}"))
}

/// The end-to-end tests' KV guest, built by `cargo xtask guests`.
fn kvtest_wasm(paths: &Paths) -> Result<PathBuf, String> {
    // hello_wasm builds the guests if they are missing; kvtest comes with it.
    let hello = paths.hello_wasm()?;
    let kvtest = hello.with_file_name("kvtest.wasm");
    if kvtest.exists() {
        Ok(kvtest)
    } else {
        Err(format!(
            "{} is missing: run `cargo xtask guests`",
            kvtest.display()
        ))
    }
}

/// What one operation measured at one connection count, every round.
struct Series {
    op: Op,
    connections: u32,
    runs: Vec<wrk::Run>,
    /// Cores busy with neither the server, wrk nor this harness during
    /// each run: someone else's build or benchmark, or kernel threads.
    other_cores: Vec<f64>,
}

impl Series {
    fn median(&self, of: impl Fn(&wrk::Run) -> f64) -> f64 {
        report::median(&self.runs.iter().map(of).collect::<Vec<_>>())
    }

    fn rps(&self) -> f64 {
        self.median(|r| r.rps)
    }

    fn p50_us(&self) -> f64 {
        self.median(|r| r.p50_us)
    }

    fn p99_us(&self) -> f64 {
        self.median(|r| r.p99_us)
    }

    fn other_cores(&self) -> f64 {
        report::median(&self.other_cores)
    }
}

/// Cores busy with anything but the measured processes (taken
/// before and after a run).
struct CpuMark {
    at: Instant,
    machine: f64,
    server: f64,
    harness: f64,
}

impl CpuMark {
    fn now(server: &Server) -> Result<Self, String> {
        Ok(Self {
            at: Instant::now(),
            machine: ingest::machine_busy()?,
            server: server.cpu_time()?.as_secs_f64(),
            harness: harness_cpu()?,
        })
    }

    /// Cores the rest of the machine used between `self` and `later`.
    fn other_cores(&self, later: &CpuMark) -> f64 {
        let ours = (later.server - self.server) + (later.harness - self.harness);
        let other = (later.machine - self.machine - ours).max(0.0);
        other / (later.at - self.at).as_secs_f64().max(1e-9)
    }
}

/// CPU seconds of this harness and its reaped children, which include
/// every wrk that has ended (taskset execs it): utime, stime, cutime and
/// cstime of `/proc/self/stat`.
fn harness_cpu() -> Result<f64, String> {
    let stat = std::fs::read_to_string("/proc/self/stat")
        .map_err(|e| format!("cannot read /proc/self/stat: {e}"))?;
    let fields = ingest::stat_fields(&stat).ok_or("/proc/self/stat: no command name")?;
    let ticks: u64 = (11..=14)
        .filter_map(|i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    Ok(ticks as f64 / servers::clock_ticks_per_sec())
}

pub fn run(args: &[String]) -> Result<(), String> {
    let flags = Flags::parse(
        args,
        &["duration", "rounds", "server-core", "client-core", "bin"],
        &["json"],
    )?;
    let duration: u64 = flags.get("duration", 5)?;
    let rounds: usize = flags.get("rounds", 3)?;
    if rounds == 0 || duration == 0 {
        return Err("--rounds and --duration must be at least 1".into());
    }
    let (server_cpus, client_cpus) = cli::pinning(&flags);
    cli::cpu_count(&server_cpus)?;
    cli::cpu_count(&client_cpus)?;
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    eprintln!(
        "load: kv-write: --duration {duration} --rounds {rounds} --server-core {server_cpus} \
         --client-core {client_cpus}; nproc {nproc}"
    );

    prereq::taskset()?;
    prereq::wrk()?;
    let paths = Paths::discover();
    let outpost = paths.outpost_or(flags.str("bin"))?;
    let hello = paths.hello_wasm()?;
    let scratch = Scratch::new("kv-write")?;
    let to = scratch.modules().join("hello.wasm");
    std::fs::copy(&hello, &to).map_err(|e| format!("cannot copy to {to:?}: {e}"))?;
    install_kv(&paths, &scratch.modules())?;

    let admin = servers::free_port()?;
    // warn: an info line per anything would measure the log writer too.
    let mut server =
        servers::outpost_with_admin(&outpost, &scratch, Some(&server_cpus), "warn", admin, &[])?;
    let hello_body = server.wait_ok("/hello", Duration::from_secs(120))?;
    server.wait_for(
        "/kv/default/get?key=k1",
        Duration::from_secs(120),
        Duration::from_millis(20),
        |status, body| status == 200 && body.starts_with(br#"{"ok""#),
    )?;
    // The first bytes of hello's answer, as text wrk's Lua can compare.
    let hello_prefix: String = String::from_utf8_lossy(&hello_body)
        .chars()
        .take(16)
        .filter(|c| !c.is_control())
        .collect();
    check_each_op(server.port)?;
    seed_keys(server.port)?;

    let mut series: Vec<Series> = CONNECTIONS
        .iter()
        .flat_map(|&connections| {
            OPS.iter().map(move |&op| Series {
                op,
                connections,
                runs: Vec::new(),
                other_cores: Vec::new(),
            })
        })
        .collect();
    let url = |op: Op| format!("http://127.0.0.1:{}{}", server.port, op.path());
    let measure = |op: Op, connections: u32, secs: u64| -> Result<(wrk::Run, f64), String> {
        let script_args = vec![
            op.method().to_owned(),
            op.path().to_owned(),
            if op.path().contains("%d") {
                KEYS.to_string()
            } else {
                "0".to_owned()
            },
            op.body().to_owned(),
            op.expect(&hello_prefix),
        ];
        let before = CpuMark::now(&server)?;
        let (run, stdout) = wrk::start_script(
            &client_cpus,
            wrk::Load::plain(connections, secs),
            &url(op),
            SCRIPT,
            &script_args,
        )?
        .finish_with_output()?;
        let other_cores = before.other_cores(&CpuMark::now(&server)?);
        let (bad, first) = bad_answers(&stdout).ok_or_else(|| {
            format!("wrk's script did not report its bad-answer count; wrk said:\n{stdout}")
        })?;
        if bad > 0 || run.failed() > 0 {
            return Err(format!(
                "{} at {connections} connections: {bad} answers were not {:?}, {} non-2xx, \
                 {} socket errors (first bad: {}); not measuring a failing operation",
                op.name(),
                op.expect(&hello_prefix),
                run.non_2xx,
                run.socket_errors,
                first.as_deref().unwrap_or("-")
            ));
        }
        if run.requests == 0 {
            return Err(format!(
                "{} at {connections} connections answered nothing",
                op.name()
            ));
        }
        Ok((run, other_cores))
    };

    eprintln!("load: kv-write: warm-up, {WARM_UP_SECS} s of each operation at 64 connections");
    for op in OPS {
        measure(op, 64, WARM_UP_SECS)?;
    }
    for round in 0..rounds {
        // Each round starts one operation later, so neither the outbox
        // growing all run long nor a drift of the machine favours one.
        let order: Vec<Op> = (0..OPS.len())
            .map(|i| OPS[(i + round) % OPS.len()])
            .collect();
        for connections in CONNECTIONS {
            for &op in &order {
                let (run, other_cores) = measure(op, connections, duration)?;
                eprintln!(
                    "load: kv-write: round {}, {} x{connections}: {} req/s, p50 {}, p99 {}, \
                     other processes {other_cores:.2} cores",
                    round + 1,
                    op.name(),
                    report::rps(run.rps),
                    report::ms(run.p50_us),
                    report::ms(run.p99_us)
                );
                let series = series
                    .iter_mut()
                    .find(|s| s.op == op && s.connections == connections)
                    .expect("every op and connection count has a series");
                series.runs.push(run);
                series.other_cores.push(other_cores);
            }
        }
    }
    let outbox = outbox_records(admin);
    server.stop();

    let find = |op: Op, connections: u32| {
        series
            .iter()
            .find(|s| s.op == op && s.connections == connections)
            .expect("every op and connection count has a series")
    };
    if flags.has("json") {
        let results: Vec<_> = series
            .iter()
            .map(|s| {
                let hello = find(Op::Hello, s.connections);
                let get = find(Op::Get, s.connections);
                serde_json::json!({
                    "op": s.op.name(),
                    "connections": s.connections,
                    "requests_per_sec": s.rps(),
                    "p50_us": s.p50_us(),
                    "p99_us": s.p99_us(),
                    "rounds": s.runs.iter().map(wrk::Run::json).collect::<Vec<_>>(),
                    "rps_over_get": s.rps() / get.rps(),
                    "rps_over_hello": s.rps() / hello.rps(),
                    "p50_minus_hello_ms": (s.p50_us() - hello.p50_us()) / 1000.0,
                    "other_cores": s.other_cores,
                })
            })
            .collect();
        let json = serde_json::json!({
            "mode": "kv-write",
            "duration_s": duration,
            "rounds": rounds,
            "server_cpus": server_cpus,
            "client_cpus": client_cpus,
            "nproc": nproc,
            "keys": KEYS,
            "outbox_records_at_end": outbox.as_ref().ok(),
            "results": results,
        });
        println!("{json:#}");
        return Ok(());
    }

    println!(
        "### kv-write: `wrk -t1 -d{duration}s`, {rounds} rounds (medians), server CPU {server_cpus}, \
         wrk CPU {client_cpus}, nproc {nproc}; set/get over {KEYS} keys, writes durable, \
         store replicated with no cloud\n"
    );
    let rows: Vec<Vec<String>> = series
        .iter()
        .map(|s| {
            let hello = find(Op::Hello, s.connections);
            let get = find(Op::Get, s.connections);
            vec![
                s.op.name().into(),
                s.connections.to_string(),
                s.runs
                    .iter()
                    .map(|r| report::rps(r.rps))
                    .collect::<Vec<_>>()
                    .join(" / "),
                format!("**{}**", report::rps(s.rps())),
                report::ms(s.p50_us()),
                report::ms(s.p99_us()),
                report::ratio(s.rps(), get.rps()),
                report::ratio(s.rps(), hello.rps()),
                format!("{:+.3} ms", (s.p50_us() - hello.p50_us()) / 1000.0),
                format!("{:.2}", s.other_cores()),
            ]
        })
        .collect();
    print!(
        "{}",
        report::table(
            &[
                "op",
                "conns",
                "req/s per round",
                "req/s",
                "p50",
                "p99",
                "req/s ÷ get",
                "req/s ÷ hello",
                "p50 − hello p50",
                "CPU other",
            ],
            &rows
        )
    );
    let ratio_rows: Vec<Vec<String>> = [
        ("set / get (64 conns)", Op::Set, Op::Get),
        ("incr / get (64 conns)", Op::Incr, Op::Get),
        ("enqueue / get (64 conns)", Op::Enqueue, Op::Get),
        ("set / hello (64 conns)", Op::Set, Op::Hello),
        ("incr / hello (64 conns)", Op::Incr, Op::Hello),
        ("enqueue / hello (64 conns)", Op::Enqueue, Op::Hello),
        ("get / hello (64 conns)", Op::Get, Op::Hello),
        ("get / kv hello (64 conns)", Op::Get, Op::Ping),
        ("set / kv hello (64 conns)", Op::Set, Op::Ping),
    ]
    .iter()
    .map(|&(name, a, b)| {
        vec![
            name.into(),
            report::ratio(find(a, 64).rps(), find(b, 64).rps()),
        ]
    })
    .chain(OPS.iter().filter(|op| op.writes()).map(|&op| {
        vec![
            format!("p50({}) − p50(hello), 1 conn", op.name()),
            format!(
                "{:.3} ms",
                (find(op, 1).p50_us() - find(Op::Hello, 1).p50_us()) / 1000.0
            ),
        ]
    }))
    .collect();
    println!();
    print!("{}", report::table(&["ratio", "value"], &ratio_rows));
    match outbox {
        Ok(records) => println!(
            "\nOutbox at the end: {records} records (no cloud configured; every set, incr and \
             enqueue appends one). wrk checks every answer's body in Lua, for hello too."
        ),
        Err(e) => println!("\nOutbox at the end: unknown ({e})"),
    }
    let busiest = series.iter().map(Series::other_cores).fold(0.0, f64::max);
    println!(
        "CPU other: median cores used by processes other than the server, wrk and this harness \
         during each run (kernel writeback included){}",
        if busiest > 0.25 {
            format!(
                "; up to {busiest:.2}: someone else was busy, the numbers are not a quiet machine's"
            )
        } else {
            String::new()
        }
    );
    Ok(())
}

/// One request of each operation through the harness's own client: each
/// must answer `{"ok"` before anything is timed.
fn check_each_op(port: u16) -> Result<(), String> {
    let mut conn = Conn::open(port)?;
    for op in OPS.iter().filter(|&&op| op != Op::Hello) {
        let path = op.path().replace("%d", "1");
        let (status, body) = conn.request(op.method(), &path, op.body().as_bytes())?;
        if status != 200 || !body.starts_with(br#"{"ok""#) {
            return Err(format!(
                "{} {path} answered {status} {}: the operation fails, so it is not measured",
                op.method(),
                String::from_utf8_lossy(&body)
            ));
        }
    }
    Ok(())
}

/// Sets every key get reads (k1..=k[`KEYS`]), 32 at a time, and reads one
/// back: a get of a missing key would measure a miss.
fn seed_keys(port: u16) -> Result<(), String> {
    let next = Arc::new(AtomicUsize::new(1));
    let threads: Vec<_> = (0..32)
        .map(|_| {
            let next = next.clone();
            std::thread::spawn(move || -> Result<(), String> {
                let mut conn = Conn::open(port)?;
                loop {
                    let key = next.fetch_add(1, Ordering::Relaxed);
                    if key > KEYS {
                        return Ok(());
                    }
                    let path = format!("/kv/default/set?key=k{key}");
                    conn.post_ok(&path, VALUE.as_bytes())?;
                }
            })
        })
        .collect();
    for thread in threads {
        thread
            .join()
            .map_err(|_| "a seeding thread panicked".to_owned())??;
    }
    let mut conn = Conn::open(port)?;
    let path = format!("/kv/default/get?key=k{KEYS}");
    let (_, body) = conn.request("GET", &path, b"")?;
    let expected = serde_json::json!({ "ok": VALUE });
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(got) if got == expected => Ok(()),
        _ => Err(format!(
            "GET {path} answered {}, not the value just set",
            String::from_utf8_lossy(&body)
        )),
    }
}

/// `records` of the admin API's `/outbox`.
pub fn outbox_records(admin: u16) -> Result<u64, String> {
    let (status, body) =
        servers::http_get(admin, "/outbox").map_err(|e| format!("GET /outbox: {e}"))?;
    let json: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| format!("GET /outbox answered {status}, not JSON: {e}"))?;
    json["records"]
        .as_u64()
        .ok_or_else(|| format!("GET /outbox: no records in {json}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_scripts_bad_answer_count() {
        let clean = "Requests/sec: 100.0\noutpost-load-bad: 0\n";
        assert_eq!(bad_answers(clean), Some((0, None)));
        let bad = "outpost-load-bad: 3\noutpost-load-first-bad: 200 {\"error\":\"io\"}\n";
        assert_eq!(
            bad_answers(bad),
            Some((3, Some("200 {\"error\":\"io\"}".to_owned())))
        );
        assert_eq!(bad_answers("Requests/sec: 100.0\n"), None);
    }
}
