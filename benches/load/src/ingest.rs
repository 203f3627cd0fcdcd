//! `load ingest`: records/s into the cloud tier (`outpost cloud`) on each
//! backend, sled and PostgreSQL, from 1 and 4 simulated edges through 1 and
//! 2 replicas, then how fast the change feed pages out what was ingested,
//! and where the CPU went meanwhile (cloud processes, PostgreSQL, this
//! harness).
//!
//! Each simulated edge is a thread with its own node id, epoch and
//! keep-alive connection, and keeps one batch in flight, as a real edge's
//! shipper does. Bodies are built before the clock starts: on a real
//! deployment the edges serialize on their own machines, so the load
//! generator's CPU here should be the cloud's to use.

use crate::cli::Flags;
use crate::prereq::Paths;
use crate::report;
use crate::servers::{self, Launch, Scratch, Server};
use base64::Engine as _;
use outpost_pg_cluster::{PgCluster, PgOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The development token every simulated edge and the feed reader use.
pub const TOKEN: &str = "load-ingest-token";

/// The store every record writes: a function's own store, as most edge
/// writes are.
const STORE: &str = "@load";

/// Bytes of each record's value before base64: a small JSON document's worth.
const VALUE_BYTES: usize = 100;

/// The cloud's limit on entries per batch (`MAX_BATCH_ENTRIES`), which is
/// also the most an edge ever sends.
pub const MAX_BATCH: usize = 4096;

/// The cloud's most changes per feed page (`MAX_LIMIT` in its API).
const FEED_PAGE: usize = 1000;

/// How long one answer may take before the run is declared stuck.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// The cloud's database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sled,
    Pg,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sled => "sled",
            Backend::Pg => "postgres",
        }
    }

    /// The backends a `--backend` value names: sled, pg (or postgres), both.
    pub fn parse_list(value: &str) -> Result<Vec<Backend>, String> {
        match value {
            "sled" => Ok(vec![Backend::Sled]),
            "pg" | "postgres" => Ok(vec![Backend::Pg]),
            "both" => Ok(vec![Backend::Sled, Backend::Pg]),
            other => Err(format!("--backend {other}: expected sled, pg or both")),
        }
    }
}

/// One measured configuration.
#[derive(Clone, Copy, Debug)]
struct Config {
    backend: Backend,
    replicas: usize,
    edges: usize,
}

/// What the run sends per configuration.
struct Plan {
    /// Records each configuration times, over all its edges.
    records: usize,
    /// Records sent first, untimed, over all edges (connections, pools,
    /// prepared statements and the first pages of every table warm up).
    warmup: usize,
    /// Records per batch.
    batch: usize,
    /// `--database-pool` of each PostgreSQL replica (`None`: its default;
    /// `--pool 0` asks for that too).
    pool: Option<usize>,
}

/// CPU seconds used during the timed ingest, by whom.
#[derive(Clone, Copy, Default, Debug)]
struct Cpu {
    cloud: f64,
    postgres: f64,
    harness: f64,
    /// The whole machine (`/proc/stat`): what the others do not account
    /// for is the kernel's own threads (writeback of what was fsynced) and
    /// anyone else's work; much of the latter makes the numbers suspect.
    machine: f64,
}

impl Cpu {
    /// Machine CPU nobody measured here used: kernel threads, or a build or
    /// another benchmark running meanwhile.
    fn other(&self) -> f64 {
        (self.machine - self.cloud - self.postgres - self.harness).max(0.0)
    }
}

/// What one configuration measured.
struct Outcome {
    config: Config,
    batch: usize,
    records: usize,
    secs: f64,
    /// Batch round trips in the timed part, in milliseconds, sorted.
    latencies_ms: Vec<f64>,
    cpu: Cpu,
    feed_changes: usize,
    feed_secs: f64,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.records as f64 / self.secs
    }

    fn feed_rate(&self) -> f64 {
        self.feed_changes as f64 / self.feed_secs
    }

    fn latency(&self, quantile: f64) -> f64 {
        let at = ((self.latencies_ms.len() as f64 - 1.0) * quantile).round() as usize;
        self.latencies_ms.get(at).copied().unwrap_or(0.0)
    }
}

pub fn run(args: &[String]) -> Result<(), String> {
    let flags = Flags::parse(
        args,
        &[
            "backend", "records", "warmup", "batch", "edges", "replicas", "pool", "bin",
        ],
        &["json"],
    )?;
    let backends = Backend::parse_list(flags.str("backend").unwrap_or("both"))?;
    let edges = number_list(flags.str("edges").unwrap_or("1,4"), "edges")?;
    let replicas = number_list(flags.str("replicas").unwrap_or("1,2"), "replicas")?;
    let plan = Plan {
        records: flags.get("records", 200_000)?,
        warmup: flags.get("warmup", 20_000)?,
        batch: flags.get("batch", 1000)?,
        pool: Some(flags.get("pool", 0)?).filter(|&p| p > 0),
    };
    if !(1..=MAX_BATCH).contains(&plan.batch) {
        return Err(format!(
            "--batch must be 1..={MAX_BATCH} (the cloud's limit)"
        ));
    }
    if plan.records == 0 {
        return Err("--records must be at least 1".into());
    }

    let mut configs = Vec::new();
    for &backend in &backends {
        // sled is one process's database: it cannot have a second replica.
        let replicas: &[usize] = match backend {
            Backend::Sled => &[1],
            Backend::Pg => &replicas,
        };
        for &replicas in replicas {
            for &edges in &edges {
                configs.push(Config {
                    backend,
                    replicas,
                    edges,
                });
            }
        }
    }

    // `--bin` measures another build, e.g. one from before the PostgreSQL
    // backend existed (sled only: it has no --database).
    let outpost = Paths::discover().outpost_or(flags.str("bin"))?;
    // One cluster for the run, a fresh database per configuration.
    let cluster = pg_cluster(&backends, "ingest")?;

    let mut outcomes = Vec::new();
    for (n, config) in configs.iter().enumerate() {
        let database = database(cluster.as_ref(), config.backend, &format!("ingest_{n}"))?;
        let outcome = measure(
            &outpost,
            *config,
            &plan,
            database.as_deref(),
            cluster.as_ref(),
        )?;
        eprintln!(
            "load: ingest: {} x{} replicas, {} edges: {:.0} records/s, feed {:.0} changes/s",
            config.backend.name(),
            config.replicas,
            config.edges,
            outcome.rate(),
            outcome.feed_rate()
        );
        outcomes.push(outcome);
    }
    print_outcomes(&outcomes, &plan, flags.has("json"));
    Ok(())
}

/// `1,4` as numbers, each at least 1.
fn number_list(list: &str, flag: &str) -> Result<Vec<usize>, String> {
    list.split(',')
        .map(|n| match n.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("--{flag} {list}: expected numbers like 1,4")),
        })
        .collect()
}

/// One configuration: fresh cloud processes, warm-up, the timed ingest, the
/// feed read, stop.
fn measure(
    outpost: &Path,
    config: Config,
    plan: &Plan,
    database: Option<&str>,
    cluster: Option<&PgCluster>,
) -> Result<Outcome, String> {
    let scratch = Scratch::new("ingest")?;
    // One after the other: replicas migrating a fresh database at the same
    // instant are the e2e tests' subject, not this benchmark's (and have
    // lost that race here: `type "outpost_schema" already exists`).
    let mut clouds = Vec::new();
    for r in 0..config.replicas {
        let mut cloud = cloud(outpost, &scratch, r, database, plan.pool)?;
        cloud.wait_ok("/_outpost/health", Duration::from_secs(60))?;
        clouds.push(cloud);
    }
    let ports: Vec<u16> = clouds.iter().map(|c| c.port).collect();

    // Even shares in whole batches, so every edge works for the whole run.
    let batches_each = |records: usize| records.div_ceil(plan.batch * config.edges);
    let (warm_batches, timed_batches) = (batches_each(plan.warmup), batches_each(plan.records));
    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let hlc = now_hlc();
    let edges: Vec<EdgeLoad> = (0..config.edges)
        .map(|i| {
            let edge = Edge {
                index: i,
                node: format!("load-edge-{i}"),
                // Distinct per edge and per run; below 2^63 because the
                // PostgreSQL store keeps epochs as INT8.
                epoch: (run_id % (1 << 40)) * 1_000_000 + i as u64 + 1,
            };
            EdgeLoad::build(edge, warm_batches, timed_batches, plan.batch, hlc)
        })
        .collect();
    let timed_records = timed_batches * plan.batch * config.edges;
    let total_records = (warm_batches + timed_batches) * plan.batch * config.edges;

    // Every edge thread and this one meet when warm-up is done; the clock
    // starts there.
    let start_line = Arc::new(Barrier::new(config.edges + 1));
    let threads: Vec<_> = edges
        .into_iter()
        .map(|load| {
            let port = ports[load.edge.index % ports.len()];
            let start_line = start_line.clone();
            std::thread::spawn(move || load.run(port, &start_line))
        })
        .collect();
    start_line.wait();
    let cpu_before = cpu_now(&clouds, cluster)?;
    let started = Instant::now();
    let mut latencies_ms = Vec::new();
    let mut failure = None;
    for thread in threads {
        match thread.join() {
            Ok(Ok(mut latencies)) => latencies_ms.append(&mut latencies),
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(_) => failure = failure.or(Some("an edge thread panicked".to_owned())),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu_after = cpu_now(&clouds, cluster)?;
    if let Some(e) = failure {
        return Err(e);
    }
    latencies_ms.sort_by(f64::total_cmp);
    let cpu = Cpu {
        cloud: cpu_after.cloud - cpu_before.cloud,
        postgres: cpu_after.postgres - cpu_before.postgres,
        harness: cpu_after.harness - cpu_before.harness,
        machine: cpu_after.machine - cpu_before.machine,
    };
    // sled's writeback alone keeps kernel threads at about 0.2 cores.
    if cpu.other() / secs > 0.35 {
        eprintln!(
            "load: ingest: warning: other processes used {:.2} cores during this run; \
             its numbers are not a quiet machine's",
            cpu.other() / secs
        );
    }

    let (feed_changes, feed_secs) = read_feed(ports[0])?;
    if feed_changes != total_records {
        return Err(format!(
            "the feed served {feed_changes} changes, but {total_records} distinct keys were written"
        ));
    }
    for cloud in &mut clouds {
        cloud.stop();
    }
    Ok(Outcome {
        config,
        batch: plan.batch,
        records: timed_records,
        secs,
        latencies_ms,
        cpu,
        feed_changes,
        feed_secs,
    })
}

/// `outpost cloud` replica `r` in development mode, over `database` or
/// else its own sled database under its data dir.
fn cloud(
    outpost: &Path,
    scratch: &Scratch,
    r: usize,
    database: Option<&str>,
    pool: Option<usize>,
) -> Result<Server, String> {
    cloud_at(outpost, scratch, r, servers::free_port()?, database, pool)
}

/// [`cloud`] on a port the caller chose, e.g. one an edge has been told
/// about before any cloud listens there.
pub fn cloud_at(
    outpost: &Path,
    scratch: &Scratch,
    r: usize,
    port: u16,
    database: Option<&str>,
    pool: Option<usize>,
) -> Result<Server, String> {
    let data = scratch.data().join(format!("cloud-{r}"));
    let mut args: Vec<std::ffi::OsString> = vec![
        "cloud".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}").into(),
        "--data".into(),
        data.into(),
        "--dev-token".into(),
        TOKEN.into(),
    ];
    if let Some(url) = database {
        args.extend(["--database".into(), url.into()]);
        if let Some(pool) = pool {
            args.extend(["--database-pool".into(), pool.to_string().into()]);
        }
    }
    Server::spawn(Launch {
        name: &format!("cloud-{r}"),
        program: outpost,
        args,
        // warn: a per-batch log line would be work the measurement counts.
        rust_log: Some("warn"),
        // Unpinned: the cloud, PostgreSQL and the edges share the machine's
        // cores the way a small deployment would.
        cpus: None,
        graceful: true,
        port,
        dir: scratch.path(),
    })
}

/// An HLC stamp for now (wall-clock ms in the high 48 bits): the cloud
/// refuses stamps more than its skew limit ahead of its clock.
pub fn now_hlc() -> u64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    ms << 16
}

/// A simulated edge's identity.
#[derive(Clone, Debug)]
pub struct Edge {
    pub index: usize,
    pub node: String,
    pub epoch: u64,
}

/// One edge's batches, built before the clock starts.
struct EdgeLoad {
    edge: Edge,
    warmup: Vec<Vec<u8>>,
    timed: Vec<Vec<u8>>,
    batch: usize,
}

impl EdgeLoad {
    fn build(edge: Edge, warm: usize, timed: usize, batch: usize, hlc: u64) -> Self {
        let body = |b: usize| batch_body(&edge, (b * batch) as u64 + 1, batch, hlc);
        Self {
            warmup: (0..warm).map(body).collect(),
            timed: (warm..warm + timed).map(body).collect(),
            edge,
            batch,
        }
    }

    /// Sends the warm-up, waits at `start_line`, sends the timed batches;
    /// returns their round trips in ms. Any answer but a full apply fails
    /// the run: a refused or half-applied batch would make the rate a lie.
    fn run(self, port: u16, start_line: &Barrier) -> Result<Vec<f64>, String> {
        let mut conn = match Conn::open(port) {
            Ok(conn) => conn,
            Err(e) => {
                // The main thread waits at the barrier; do not strand it.
                start_line.wait();
                return Err(e);
            }
        };
        let mut seq = 0;
        let mut warm = Ok(());
        for body in &self.warmup {
            seq += self.batch as u64;
            warm = self.send(&mut conn, body, seq);
            if warm.is_err() {
                break;
            }
        }
        start_line.wait();
        warm?;
        let mut latencies = Vec::with_capacity(self.timed.len());
        for body in &self.timed {
            seq += self.batch as u64;
            let sent = Instant::now();
            self.send(&mut conn, body, seq)?;
            latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
        }
        Ok(latencies)
    }

    fn send(&self, conn: &mut Conn, body: &[u8], through: u64) -> Result<(), String> {
        send_batch(conn, &self.edge.node, body, self.batch, through)
    }
}

/// POSTs one batch body of `batch` records from `node`, whose last sequence
/// number is `through`, and checks the ack. Any answer but a full apply is
/// an error: a refused or half-applied batch would make a rate a lie.
pub fn send_batch(
    conn: &mut Conn,
    node: &str,
    body: &[u8],
    batch: usize,
    through: u64,
) -> Result<(), String> {
    let (status, reply) = conn.request("POST", "/v1/ingest", body)?;
    let text = || {
        String::from_utf8_lossy(&reply)
            .chars()
            .take(500)
            .collect::<String>()
    };
    if status != 200 {
        return Err(format!(
            "{node}: POST /v1/ingest through seq {through} answered {status}: {}",
            text()
        ));
    }
    let ack: serde_json::Value = serde_json::from_slice(&reply)
        .map_err(|e| format!("{node}: the ack is not JSON ({e}): {}", text()))?;
    let applied = ack["applied"].as_u64();
    if applied != Some(batch as u64) || ack["through"].as_u64() != Some(through) {
        return Err(format!(
            "{node}: batch through seq {through} of {batch} records was not applied in full: {}",
            text()
        ));
    }
    Ok(())
}

/// The JSON of a [`outpost_wire::Batch`] of `count` KV writes from `edge`,
/// sequence numbers from `first_seq`, each to a key of its own. Written by
/// hand: the shape is fixed and this keeps serde's derive out of the
/// harness. `origin` is left out, as the edge's serializer leaves out a
/// `None` origin.
fn batch_body(edge: &Edge, first_seq: u64, count: usize, hlc_base: u64) -> Vec<u8> {
    batch_body_in(edge, STORE, first_seq, count, hlc_base)
}

/// [`batch_body`] writing to `store`, e.g. the store an edge under test
/// replicates.
pub fn batch_body_in(
    edge: &Edge,
    store: &str,
    first_seq: u64,
    count: usize,
    hlc_base: u64,
) -> Vec<u8> {
    let mut out = String::with_capacity(count * 280 + 64);
    out.push_str(&format!(
        r#"{{"node":"{}","epoch":{},"entries":["#,
        edge.node, edge.epoch
    ));
    for i in 0..count as u64 {
        let seq = first_seq + i;
        if i > 0 {
            out.push(',');
        }
        // Keys distinct across edges too, so every write wins and reaches
        // the feed, and edges never contend for a row.
        let key = format!("e{}-{seq:010}", edge.index);
        let mut value = format!("{{\"edge\":{},\"seq\":{seq},\"pad\":\"", edge.index).into_bytes();
        value.resize(VALUE_BYTES - 2, b'x');
        value.extend_from_slice(b"\"}");
        out.push_str(&format!(
            r#"{{"seq":{seq},"record":{{"kind":"kv","store":"{store}","key":"{key}","value":"{}","version":{{"hlc":{},"node":"{}"}},"seen":null}}}}"#,
            base64::engine::general_purpose::STANDARD.encode(&value),
            // One stamp per write, increasing in sequence order as an
            // edge's clock would; a few ms ahead at most for 200k records.
            hlc_base + seq,
            edge.node,
        ));
    }
    out.push_str("]}");
    out.into_bytes()
}

/// What the feed reader needs of a page. The changes are skipped, not
/// built: a `serde_json::Value` per change cost this harness half a core,
/// the cloud's CPU to use.
#[derive(serde::Deserialize)]
struct FeedPage {
    changes: Vec<serde::de::IgnoredAny>,
    next: u64,
}

/// Pages the whole feed from cursor 0 through `port`; returns the changes
/// read and the seconds it took.
pub fn read_feed(port: u16) -> Result<(usize, f64), String> {
    let mut conn = Conn::open(port)?;
    let started = Instant::now();
    let (mut since, mut changes) = (0u64, 0usize);
    loop {
        let path = format!("/v1/feed?since={since}&limit={FEED_PAGE}");
        let (status, body) = conn.request("GET", &path, b"")?;
        if status != 200 {
            return Err(format!(
                "GET {path} answered {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        let page: FeedPage = serde_json::from_slice(&body)
            .map_err(|e| format!("GET {path}: not a feed page ({e})"))?;
        let (got, next) = (page.changes.len(), page.next);
        if got == 0 || next <= since {
            break;
        }
        changes += got;
        since = next;
    }
    Ok((changes, started.elapsed().as_secs_f64()))
}

/// CPU seconds so far: the cloud processes, every process of the
/// PostgreSQL cluster, and this harness.
fn cpu_now(clouds: &[Server], cluster: Option<&PgCluster>) -> Result<Cpu, String> {
    let mut cpu = Cpu::default();
    for cloud in clouds {
        cpu.cloud += cloud.cpu_time()?.as_secs_f64();
    }
    if let Some(pid) = cluster.and_then(PgCluster::postmaster_pid) {
        cpu.postgres = postgres_cpu(pid);
    }
    cpu.harness = servers::process_cpu_time(std::process::id())?.as_secs_f64();
    cpu.machine = machine_busy()?;
    Ok(cpu)
}

/// Busy CPU seconds of the whole machine since boot: the `cpu` line of
/// `/proc/stat` less idle and iowait.
pub fn machine_busy() -> Result<f64, String> {
    let stat = std::fs::read_to_string("/proc/stat")
        .map_err(|e| format!("cannot read /proc/stat: {e}"))?;
    busy_ticks(&stat)
        .map(|ticks| ticks as f64 / servers::clock_ticks_per_sec())
        .ok_or_else(|| "/proc/stat: no cpu line".to_owned())
}

/// user + nice + system + irq + softirq + steal of the first `cpu` line
/// (guest time is already inside user).
fn busy_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let at = |i: usize| fields.get(i).copied().unwrap_or(0);
    Some(at(0) + at(1) + at(2) + at(5) + at(6) + at(7))
}

/// The postmaster's own time and its reaped children's (short-lived
/// autovacuum workers), plus every live child's (backends, WAL writer,
/// checkpointer): all of PostgreSQL's CPU.
fn postgres_cpu(postmaster: u32) -> f64 {
    let ticks = servers::clock_ticks_per_sec();
    let mut total = 0.0;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may exit between the listing and the read.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(fields) = stat_fields(&stat) else {
            continue;
        };
        let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        if pid == postmaster {
            // utime, stime, cutime, cstime.
            total += (11..=14).filter_map(field).sum::<u64>() as f64 / ticks;
        } else if field(1) == Some(u64::from(postmaster)) {
            total += (11..=12).filter_map(field).sum::<u64>() as f64 / ticks;
        }
    }
    total
}

/// The fields of a `/proc/PID/stat` line after the command name (state
/// first, ppid second), which may itself hold spaces.
pub fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    Some(stat[stat.rfind(')')? + 1..].split_whitespace().collect())
}

/// A keep-alive HTTP/1.1 connection with just what this mode needs:
/// requests with a body and the bearer token, answers with a length or
/// chunked.
pub struct Conn {
    port: u16,
    reader: BufReader<TcpStream>,
}

/// A private PostgreSQL cluster if any of `backends` is PostgreSQL, for
/// `mode`'s run. fsync stays on: every ack is a durable commit, as in
/// production.
pub fn pg_cluster(backends: &[Backend], mode: &str) -> Result<Option<PgCluster>, String> {
    if !backends.contains(&Backend::Pg) {
        return Ok(None);
    }
    eprintln!("load: {mode}: starting a private PostgreSQL cluster (fsync on)");
    PgCluster::start_with(&PgOptions {
        fsync: true,
        ..PgOptions::default()
    })
    .map(Some)
    .map_err(|e| format!("cannot start PostgreSQL: {e}"))
}

/// A fresh database `name` in `cluster` for a PostgreSQL `backend` (its
/// URL), or `None` for sled.
pub fn database(
    cluster: Option<&PgCluster>,
    backend: Backend,
    name: &str,
) -> Result<Option<String>, String> {
    match backend {
        Backend::Sled => Ok(None),
        Backend::Pg => {
            let cluster = cluster.expect("a cluster is started when a backend is pg");
            cluster
                .create_database(name)
                .map_err(|e| format!("cannot create database {name}: {e}"))?;
            Ok(Some(cluster.url(name)))
        }
    }
}

impl Conn {
    /// POSTs `body` to `path` and fails unless the answer is 200 with a
    /// body starting `{"ok"` (the kvtest guest's success).
    pub fn post_ok(&mut self, path: &str, body: &[u8]) -> Result<(), String> {
        let (status, answer) = self.request("POST", path, body)?;
        if status != 200 || !answer.starts_with(br#"{"ok""#) {
            return Err(format!(
                "POST {path} answered {status} {}",
                String::from_utf8_lossy(&answer)
            ));
        }
        Ok(())
    }

    pub fn open(port: u16) -> Result<Self, String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        // The head and body go out as written; Nagle would hold the body
        // back waiting for the head's ACK.
        let _ = stream.set_nodelay(true);
        stream
            .set_read_timeout(Some(ANSWER_TIMEOUT))
            .map_err(|e| e.to_string())?;
        Ok(Self {
            port,
            reader: BufReader::with_capacity(256 * 1024, stream),
        })
    }

    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), String> {
        let io = |e: std::io::Error| format!("{method} {path} on port {}: {e}", self.port);
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{}\r\nauthorization: Bearer {TOKEN}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n",
            self.port,
            body.len()
        );
        let stream = self.reader.get_mut();
        stream.write_all(head.as_bytes()).map_err(io)?;
        stream.write_all(body).map_err(io)?;
        read_response(&mut self.reader).map_err(io)
    }
}

/// Status and body of one HTTP/1.1 response.
fn read_response(reader: &mut impl BufRead) -> std::io::Result<(u16, Vec<u8>)> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(bad("the server closed the connection"));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("malformed status line"))?;
    let (mut length, mut chunked) = (None, false);
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse().map_err(|_| bad("bad content-length"))?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad("bad chunk size"))?;
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    line.clear();
                    if reader.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..])?;
            line.clear();
            reader.read_line(&mut line)?;
        }
    } else {
        body.resize(length.ok_or_else(|| bad("no content-length"))?, 0);
        reader.read_exact(&mut body)?;
    }
    Ok((status, body))
}

fn print_outcomes(outcomes: &[Outcome], plan: &Plan, json: bool) {
    if json {
        let rows: Vec<_> = outcomes
            .iter()
            .map(|o| {
                serde_json::json!({
                    "backend": o.config.backend.name(),
                    "replicas": o.config.replicas,
                    "edges": o.config.edges,
                    "batch": o.batch,
                    "records": o.records,
                    "seconds": o.secs,
                    "records_per_sec": o.rate(),
                    "batch_ms": { "p50": o.latency(0.5), "p99": o.latency(0.99) },
                    "feed_changes": o.feed_changes,
                    "feed_changes_per_sec": o.feed_rate(),
                    "cpu_seconds": {
                        "cloud": o.cpu.cloud,
                        "postgres": o.cpu.postgres,
                        "harness": o.cpu.harness,
                        "other": o.cpu.other(),
                    },
                })
            })
            .collect();
        let json = serde_json::json!({ "mode": "ingest", "results": rows });
        println!("{json:#}");
        return;
    }
    let cores = |cpu: f64, o: &Outcome| format!("{:.2}", cpu / o.secs);
    let rows: Vec<Vec<String>> = outcomes
        .iter()
        .map(|o| {
            vec![
                o.config.backend.name().into(),
                o.config.replicas.to_string(),
                o.config.edges.to_string(),
                format!("**{}**", report::rps(o.rate())),
                format!("{:.1} / {:.1}", o.latency(0.5), o.latency(0.99)),
                report::rps(o.feed_rate()),
                cores(o.cpu.cloud, o),
                cores(o.cpu.postgres, o),
                cores(o.cpu.harness, o),
                cores(o.cpu.other(), o),
            ]
        })
        .collect();
    println!(
        "### ingest: {} records per configuration (after {} warm-up), batches of {}, \
         {VALUE_BYTES}-byte values, one batch in flight per edge\n",
        plan.records, plan.warmup, plan.batch
    );
    print!(
        "{}",
        report::table(
            &[
                "backend",
                "replicas",
                "edges",
                "records/s",
                "batch ms p50 / p99",
                "feed changes/s",
                "CPU cloud",
                "CPU postgres",
                "CPU harness",
                "CPU other",
            ],
            &rows
        )
    );
    println!(
        "\nCPU columns: cores busy during the timed ingest (CPU seconds / wall seconds; \
         this machine has {}); other: the rest of the machine, kernel writeback included \
         (well above 0.2: someone else was busy).",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge() -> Edge {
        Edge {
            index: 3,
            node: "load-edge-3".into(),
            epoch: 42,
        }
    }

    #[test]
    fn bodies_are_batches_the_cloud_reads() {
        let hlc = now_hlc();
        let body = batch_body(&edge(), 1001, 3, hlc);
        let batch: outpost_wire::Batch = serde_json::from_slice(&body).unwrap();
        assert_eq!((batch.node.as_str(), batch.epoch), ("load-edge-3", 42));
        let seqs: Vec<u64> = batch.entries.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1001, 1002, 1003]);
        let rules = outpost_wire::validate::Rules::default();
        for entry in &batch.entries {
            assert_eq!(entry.origin, None);
            rules
                .check_record(&entry.record, "load-edge-3", hlc >> 16)
                .unwrap();
            let outpost_wire::Record::Kv {
                store,
                key,
                value,
                version,
                seen,
            } = &entry.record
            else {
                panic!("not a kv record: {:?}", entry.record);
            };
            assert_eq!(store, STORE);
            assert_eq!(key, &format!("e3-{:010}", entry.seq));
            let value = value.as_ref().unwrap();
            assert_eq!(value.len(), VALUE_BYTES);
            assert!(serde_json::from_slice::<serde_json::Value>(value).is_ok());
            assert_eq!(version.hlc, hlc + entry.seq);
            assert_eq!(version.node, "load-edge-3");
            assert_eq!(*seen, None);
        }
    }

    #[test]
    fn reads_length_and_chunked_answers() {
        let mut two = &b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello\
            HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"[..];
        assert_eq!(read_response(&mut two).unwrap(), (200, b"hello".to_vec()));
        assert_eq!(read_response(&mut two).unwrap(), (409, b"abcde".to_vec()));
        assert!(read_response(&mut two).is_err());
    }

    #[test]
    fn machine_busy_time_skips_idle_and_iowait() {
        let stat = "cpu  100 2 30 5000 40 6 7 8 9 10\ncpu0 50 1 15 2500 20 3 3 4 4 5\n";
        assert_eq!(busy_ticks(stat), Some(100 + 2 + 30 + 6 + 7 + 8));
        assert_eq!(busy_ticks("intr 1 2"), None);
    }

    #[test]
    fn number_lists() {
        assert_eq!(number_list("1,4", "edges").unwrap(), [1, 4]);
        assert!(number_list("0", "edges").is_err());
        assert!(number_list("a", "edges").is_err());
    }
}
