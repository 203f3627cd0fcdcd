//! `load feed-apply`: how fast a fresh edge applies the cloud's change
//! feed. A simulated other node ingests N writes to the store the edge's
//! `kv` function replicates (`@kv`) into `outpost cloud`; then an
//! `outpost serve` pointed at that cloud starts, and the harness times,
//! from the admin `/metrics`, until its puller has applied all N.

use crate::cli::{self, Flags};
use crate::ingest::{self, Backend, Conn, Edge};
use crate::kv_write;
use crate::prereq::{self, Paths};
use crate::report;
use crate::servers::{self, Scratch};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The store the simulated node writes: the `kv` function's own default
/// store, which `kv.toml` makes replicate on the edge. A store that does
/// not replicate there would be refused by its puller, not applied.
const STORE: &str = "@kv";

/// How often the edge's `/metrics` is read while it applies.
const POLL: Duration = Duration::from_millis(10);

/// The puller's counters of applied feed changes (`older`: the edge held a
/// newer version already; counted as done, since it was considered).
const APPLIED: &str = r#"outpost_remote_writes_total{result="applied"}"#;
const OLDER: &str = r#"outpost_remote_writes_total{result="older"}"#;

/// The counters of changes the puller would not apply: any is a failure.
const REFUSED: [&str; 2] = [
    r#"outpost_remote_writes_total{result="refused"}"#,
    r#"outpost_remote_writes_total{result="not-replicated"}"#,
];

/// What one backend measured.
struct Outcome {
    backend: Backend,
    changes: usize,
    /// The simulated node's ingest into the cloud, for scale.
    ingest_secs: f64,
    /// From spawning the edge to the first poll that saw changes applied.
    first_secs: f64,
    /// How many that poll saw: they were applied before `first_secs`, so
    /// the applying rate leaves them out.
    first_count: u64,
    /// From spawning the edge to all N applied.
    done_secs: f64,
    /// The host's own `ready ... ms=` (functions loaded), if logged.
    ready_ms: Option<u64>,
    applied: u64,
    older: u64,
}

impl Outcome {
    /// Changes/s from the first poll that saw changes applied to the one
    /// that saw all: the puller's pace.
    fn apply_rate(&self) -> f64 {
        (self.changes as u64).saturating_sub(self.first_count) as f64
            / (self.done_secs - self.first_secs).max(1e-9)
    }

    /// Changes/s from the edge's start: what a new edge waits to catch up.
    fn overall_rate(&self) -> f64 {
        self.changes as f64 / self.done_secs.max(1e-9)
    }
}

pub fn run(args: &[String]) -> Result<(), String> {
    let flags = Flags::parse(
        args,
        &["changes", "backend", "batch", "server-core", "bin"],
        &["json"],
    )?;
    let changes: usize = flags.get("changes", 100_000)?;
    let batch: usize = flags.get("batch", 1000)?;
    let backends = Backend::parse_list(flags.str("backend").unwrap_or("sled"))?;
    let (server_cpus, _) = cli::pinning(&flags);
    cli::cpu_count(&server_cpus)?;
    if changes == 0 {
        return Err("--changes must be at least 1".into());
    }
    if !(1..=ingest::MAX_BATCH).contains(&batch) {
        return Err(format!(
            "--batch must be 1..={} (the cloud's limit)",
            ingest::MAX_BATCH
        ));
    }
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    eprintln!(
        "load: feed-apply: --changes {changes} --backend {} --batch {batch} --server-core \
         {server_cpus}; nproc {nproc}",
        flags.str("backend").unwrap_or("sled")
    );

    prereq::taskset()?;
    let paths = Paths::discover();
    let outpost = paths.outpost_or(flags.str("bin"))?;
    let cluster = ingest::pg_cluster(&backends, "feed-apply")?;

    let mut outcomes = Vec::new();
    for (n, &backend) in backends.iter().enumerate() {
        let database = ingest::database(cluster.as_ref(), backend, &format!("feed_apply_{n}"))?;
        let outcome = measure(
            &paths,
            &outpost,
            backend,
            changes,
            batch,
            &server_cpus,
            database.as_deref(),
        )?;
        eprintln!(
            "load: feed-apply: {}: first change applied {:.2} s after the edge started, all {} \
             after {:.2} s: {:.0} changes/s applying, {:.0} from the start",
            backend.name(),
            outcome.first_secs,
            changes,
            outcome.done_secs,
            outcome.apply_rate(),
            outcome.overall_rate()
        );
        outcomes.push(outcome);
    }
    print_outcomes(&outcomes, batch, &server_cpus, nproc, flags.has("json"));
    Ok(())
}

/// One backend: cloud up and loaded, then a fresh edge timed until it has
/// applied every change.
fn measure(
    paths: &Paths,
    outpost: &Path,
    backend: Backend,
    changes: usize,
    batch: usize,
    server_cpus: &str,
    database: Option<&str>,
) -> Result<Outcome, String> {
    let scratch = Scratch::new("feed-apply")?;
    kv_write::install_kv(paths, &scratch.modules())?;
    let mut cloud = ingest::cloud_at(outpost, &scratch, 0, servers::free_port()?, database, None)?;
    cloud.wait_ok("/_outpost/health", Duration::from_secs(60))?;

    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let other = Edge {
        index: 0,
        node: "load-other-node".into(),
        // Below 2^63: the PostgreSQL store keeps epochs as INT8.
        epoch: (run_id % (1 << 40)) * 1_000_000 + 1,
    };
    let hlc = ingest::now_hlc();
    eprintln!(
        "load: feed-apply: {}: ingesting {changes} changes to {STORE} as {}",
        backend.name(),
        other.node
    );
    let ingested = Instant::now();
    let mut conn = Conn::open(cloud.port)?;
    let mut seq = 0;
    while seq < changes {
        let count = batch.min(changes - seq);
        let body = ingest::batch_body_in(&other, STORE, seq as u64 + 1, count, hlc);
        seq += count;
        ingest::send_batch(&mut conn, &other.node, &body, count, seq as u64)?;
    }
    let ingest_secs = ingested.elapsed().as_secs_f64();
    let (feed, _) = ingest::read_feed(cloud.port)?;
    if feed != changes {
        return Err(format!(
            "the cloud's feed serves {feed} changes after {changes} distinct keys were ingested"
        ));
    }

    let admin = servers::free_port()?;
    let cloud_url = format!("http://127.0.0.1:{}", cloud.port);
    // info: the host's `ready ... ms=` line (nothing per request is logged
    // at info).
    let mut edge = servers::outpost_with_admin(
        outpost,
        &scratch,
        Some(server_cpus),
        "warn,outpost=info",
        admin,
        &["--cloud", &cloud_url, "--cloud-token", ingest::TOKEN],
    )?;
    let started = edge.started();
    let deadline =
        Instant::now() + Duration::from_secs(120) + Duration::from_millis(changes as u64 * 5);
    let mut first = None;
    let mut conn: Option<Conn> = None;
    let (done, applied, older) = loop {
        // The admin listener binds before the functions load; until then,
        // and on a dropped keep-alive connection, connect again.
        let text = match conn.as_mut().map(|c| c.request("GET", "/metrics", b"")) {
            Some(Ok((200, body))) => Some(String::from_utf8_lossy(&body).into_owned()),
            _ => {
                conn = Conn::open(admin).ok();
                None
            }
        };
        let now = Instant::now();
        if let Some(text) = text {
            let count = |series| servers::metric_value(&text, series).unwrap_or(0.0) as u64;
            let (applied, older) = (count(APPLIED), count(OLDER));
            for series in REFUSED {
                if count(series) > 0 {
                    return Err(format!(
                        "the edge refused {} feed changes ({series}); see its log",
                        count(series)
                    ));
                }
            }
            if first.is_none() && applied + older > 0 {
                first = Some((now, applied + older));
            }
            if applied + older >= changes as u64 {
                break (now, applied, older);
            }
        }
        if now > deadline {
            return Err(format!(
                "the edge had not applied {changes} changes {:.0} s after it started",
                (now - started).as_secs_f64()
            ));
        }
        edge.check_running()?;
        std::thread::sleep(POLL);
    };
    let (first, first_count) = first.unwrap_or((done, 0));

    // The first and the last write read back through the edge's function.
    for seq in [1, changes] {
        let path = format!("/kv/default/get?key=e0-{seq:010}");
        let (status, body) = Conn::open(edge.port)?.request("GET", &path, b"")?;
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let value = json["ok"].as_str().unwrap_or_default();
        if status != 200 || !value.contains(&format!("\"seq\":{seq},")) {
            return Err(format!(
                "GET {path} on the edge answered {status} {}, not the ingested value",
                String::from_utf8_lossy(&body)
            ));
        }
    }
    let ready_ms = edge.ready_ms();
    edge.stop();
    cloud.stop();
    Ok(Outcome {
        backend,
        changes,
        ingest_secs,
        first_secs: (first - started).as_secs_f64(),
        first_count,
        done_secs: (done - started).as_secs_f64(),
        ready_ms,
        applied,
        older,
    })
}

fn print_outcomes(outcomes: &[Outcome], batch: usize, server_cpus: &str, nproc: usize, json: bool) {
    if json {
        let rows: Vec<_> = outcomes
            .iter()
            .map(|o| {
                serde_json::json!({
                    "backend": o.backend.name(),
                    "changes": o.changes,
                    "ingest_seconds": o.ingest_secs,
                    "ready_ms": o.ready_ms,
                    "first_applied_seconds": o.first_secs,
                    "first_applied_count": o.first_count,
                    "done_seconds": o.done_secs,
                    "apply_changes_per_sec": o.apply_rate(),
                    "overall_changes_per_sec": o.overall_rate(),
                    "applied": o.applied,
                    "older": o.older,
                })
            })
            .collect();
        let json = serde_json::json!({
            "mode": "feed-apply",
            "store": STORE,
            "batch": batch,
            "server_cpus": server_cpus,
            "nproc": nproc,
            "results": rows,
        });
        println!("{json:#}");
        return;
    }
    println!(
        "### feed-apply: a fresh edge (CPU {server_cpus}) pulls N changes to {STORE} that \
         another node wrote (ingested in batches of {batch}); cloud unpinned; nproc {nproc}\n"
    );
    let rows: Vec<Vec<String>> = outcomes
        .iter()
        .map(|o| {
            vec![
                o.backend.name().into(),
                o.changes.to_string(),
                format!(
                    "{:.1} s ({} /s)",
                    o.ingest_secs,
                    report::rps(o.changes as f64 / o.ingest_secs)
                ),
                o.ready_ms.map_or("-".into(), |ms| format!("{ms} ms")),
                format!("{:.2} s ({})", o.first_secs, o.first_count),
                format!("{:.2} s", o.done_secs),
                format!("**{}**", report::rps(o.apply_rate())),
                report::rps(o.overall_rate()),
                format!("{} / {}", o.applied, o.older),
            ]
        })
        .collect();
    print!(
        "{}",
        report::table(
            &[
                "backend",
                "changes",
                "ingest (other node)",
                "edge ready",
                "first seen applied (count)",
                "all applied",
                "changes/s applying",
                "changes/s from start",
                "applied / older",
            ],
            &rows
        )
    );
    println!(
        "\nTimes from spawning the edge. applying = (N − count first seen) / (all − first seen); \
         from start = N / all. \
         Counts from the edge's `outpost_remote_writes_total`, read every {} ms.",
        POLL.as_millis()
    );
}
