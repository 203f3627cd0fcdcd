//! `load drain`: how fast an edge catches up after a cloud outage. An
//! `outpost serve` told about a cloud that is not running fills its outbox
//! with N replicated writes through HTTP; once it has been away long
//! enough for the edge's reconnect backoff to grow, `outpost cloud` (sled
//! or PostgreSQL) starts on that port, and the harness times the first ack
//! and the empty outbox from the admin API, then checks at the cloud that
//! exactly N writes arrived.

use crate::cli::{self, Flags};
use crate::ingest::{self, Backend, Conn};
use crate::kv_write;
use crate::prereq::{self, Paths};
use crate::report;
use crate::servers::{self, Scratch};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How often the admin API's `/outbox` is read while draining.
const POLL: Duration = Duration::from_millis(5);

/// What each write stores: a small JSON document.
const VALUE: &str = r#"{"user":"u-1234","cart":[1,2,3],"at":1764600000}"#;

/// What one backend measured.
struct Outcome {
    backend: Backend,
    records: usize,
    /// Filling the outbox through HTTP.
    fill_secs: f64,
    /// From the edge's start to the cloud's: how long the cloud was away.
    away_secs: f64,
    /// From spawning the cloud to its health endpoint answering 200.
    cloud_start_ms: f64,
    /// From the cloud answering to the outbox first shrinking (or a
    /// `last_ack` appearing).
    first_ack_ms: f64,
    /// From the cloud answering to the outbox empty.
    empty_secs: f64,
    /// Feed changes the cloud serves afterwards (one per distinct key).
    feed_changes: usize,
    /// The cloud's `outpost_cloud_entries_total` by result.
    cloud_applied: u64,
    cloud_duplicates: u64,
    cloud_refused: u64,
    /// The edge's own `down_ms=` from its "cloud reachable again" line.
    edge_down_ms: Option<u64>,
    /// The longest time between the first ack and the empty outbox in
    /// which the outbox did not shrink: a stall, a retry, a backoff.
    longest_stall_ms: f64,
    /// How many times the outbox was seen shrinking.
    steps: usize,
}

impl Outcome {
    /// Records/s from the first ack to the empty outbox: the drain itself.
    fn drain_rate(&self) -> f64 {
        self.records as f64 / (self.empty_secs - self.first_ack_ms / 1000.0).max(1e-9)
    }

    /// Records/s from the cloud answering to the empty outbox: what an
    /// operator waits, the edge's backoff included.
    fn overall_rate(&self) -> f64 {
        self.records as f64 / self.empty_secs.max(1e-9)
    }
}

/// What a run asks for, from the command line.
struct Plan {
    records: usize,
    away: Duration,
    connections: usize,
    server_cpus: String,
    client_cpus: String,
    /// `--ship-batch` for the edge; `None` leaves its default.
    ship_batch: Option<usize>,
}

pub fn run(args: &[String]) -> Result<(), String> {
    let flags = Flags::parse(
        args,
        &[
            "records",
            "backend",
            "away-secs",
            "connections",
            "server-core",
            "client-core",
            "ship-batch",
            "bin",
        ],
        &["json"],
    )?;
    let backends = Backend::parse_list(flags.str("backend").unwrap_or("sled"))?;
    let (server_cpus, client_cpus) = cli::pinning(&flags);
    cli::cpu_count(&server_cpus)?;
    cli::cpu_count(&client_cpus)?;
    let plan = Plan {
        records: flags.get("records", 100_000)?,
        away: Duration::from_secs(flags.get("away-secs", 30)?),
        connections: flags.get("connections", 32)?,
        server_cpus,
        client_cpus,
        ship_batch: Some(flags.get("ship-batch", 0)?).filter(|&b| b > 0),
    };
    if plan.records == 0 || plan.connections == 0 {
        return Err("--records and --connections must be at least 1".into());
    }
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    eprintln!(
        "load: drain: --records {} --backend {} --away-secs {} --connections {} \
         --server-core {} --client-core {} --ship-batch {}; nproc {nproc}",
        plan.records,
        flags.str("backend").unwrap_or("sled"),
        plan.away.as_secs(),
        plan.connections,
        plan.server_cpus,
        plan.client_cpus,
        plan.ship_batch
            .map_or("(the edge's default)".to_owned(), |b| b.to_string()),
    );

    prereq::taskset()?;
    let paths = Paths::discover();
    let outpost = paths.outpost_or(flags.str("bin"))?;
    // fsync on: every ack is a durable commit, as in production.
    let cluster = ingest::pg_cluster(&backends, "drain")?;

    let mut outcomes = Vec::new();
    for (n, &backend) in backends.iter().enumerate() {
        let database = ingest::database(cluster.as_ref(), backend, &format!("drain_{n}"))?;
        let outcome = measure(&paths, &outpost, backend, &plan, database.as_deref())?;
        eprintln!(
            "load: drain: {}: first ack {:.0} ms after the cloud answered, empty after {:.2} s: \
             {:.0} records/s draining, {:.0} overall",
            backend.name(),
            outcome.first_ack_ms,
            outcome.empty_secs,
            outcome.drain_rate(),
            outcome.overall_rate()
        );
        outcomes.push(outcome);
    }
    print_outcomes(&outcomes, &plan, nproc, flags.has("json"));
    Ok(())
}

/// One backend: edge up with the cloud away, fill, wait, cloud up, drain,
/// verify.
fn measure(
    paths: &Paths,
    outpost: &Path,
    backend: Backend,
    plan: &Plan,
    database: Option<&str>,
) -> Result<Outcome, String> {
    let scratch = Scratch::new("drain")?;
    kv_write::install_kv(paths, &scratch.modules())?;
    // Outside the ephemeral range: the fill's own connections must not be
    // able to take the port the cloud binds minutes later.
    let cloud_port = servers::quiet_port()?;
    let admin = loop {
        let port = servers::free_port()?;
        if port != cloud_port {
            break port;
        }
    };
    let cloud_url = format!("http://127.0.0.1:{cloud_port}");
    let ship_batch = plan.ship_batch.map(|b| b.to_string());
    let mut extra = vec!["--cloud", &cloud_url, "--cloud-token", ingest::TOKEN];
    if let Some(batch) = &ship_batch {
        extra.extend(["--ship-batch", batch]);
    }
    // info for the shipper and host lines only (no per-request lines at
    // info): the edge's own `down_ms=` is worth reporting next to ours.
    let mut edge = servers::outpost_with_admin(
        outpost,
        &scratch,
        Some(&plan.server_cpus),
        "warn,outpost=info",
        admin,
        &extra,
    )?;
    edge.wait_for(
        "/kv/default/get?key=probe",
        Duration::from_secs(120),
        Duration::from_millis(20),
        |status, body| status == 200 && body.starts_with(br#"{"ok""#),
    )?;

    eprintln!(
        "load: drain: {}: filling the outbox with {} writes over {} connections (cloud away at {cloud_url})",
        backend.name(),
        plan.records,
        plan.connections
    );
    let filled = Instant::now();
    fill(edge.port, plan)?;
    let fill_secs = filled.elapsed().as_secs_f64();
    let state = outbox(&mut Conn::open(admin)?)?;
    let records = state["records"].as_u64().unwrap_or(0) as usize;
    if records != plan.records {
        return Err(format!(
            "the outbox holds {records} records after {} writes; expected one each: {state}",
            plan.records
        ));
    }
    if !state["last_ack"].is_null() {
        return Err(format!(
            "the outbox was acked while no cloud runs on {cloud_url}: {state}"
        ));
    }
    eprintln!(
        "load: drain: filled in {fill_secs:.1} s ({:.0} writes/s); cloud away since the edge started",
        plan.records as f64 / fill_secs
    );

    // A real outage lasts long enough for the reconnect backoff to grow;
    // starting the cloud at once would measure a backoff still at 200 ms.
    let cloud_at = edge.started() + plan.away;
    if let Some(wait) = cloud_at.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    } else {
        eprintln!(
            "load: drain: the fill took longer than --away-secs {}; starting the cloud now",
            plan.away.as_secs()
        );
    }
    let away_secs = edge.started().elapsed().as_secs_f64();
    let spawned = Instant::now();
    let mut cloud = ingest::cloud_at(outpost, &scratch, 0, cloud_port, database, None)?;
    cloud.wait_for("/_outpost/health", Duration::from_secs(60), POLL, |s, _| {
        s == 200
    })?;
    let up = Instant::now();
    let cloud_start_ms = (up - spawned).as_secs_f64() * 1000.0;

    // Generous: the backoff alone may be 30 s, then a few hundred records/s
    // at worst.
    let deadline = up + Duration::from_secs(120) + Duration::from_millis(plan.records as u64 * 5);
    let mut admin_conn = Conn::open(admin)?;
    let mut first_ack = None;
    let (mut last_left, mut last_progress) = (plan.records as u64, up);
    let (mut longest_stall, mut steps) = (Duration::ZERO, 0);
    let mut next_report = up + Duration::from_secs(1);
    let empty = loop {
        let state = match outbox(&mut admin_conn) {
            Ok(state) => state,
            // A dropped keep-alive connection, not a finding: reconnect.
            Err(_) => {
                admin_conn = Conn::open(admin)?;
                outbox(&mut admin_conn)?
            }
        };
        let now = Instant::now();
        let left = state["records"].as_u64().unwrap_or(u64::MAX);
        if first_ack.is_none() && (left < plan.records as u64 || !state["last_ack"].is_null()) {
            first_ack = Some(now);
            last_progress = now;
        }
        if left < last_left {
            if first_ack.is_some() {
                longest_stall = longest_stall.max(now - last_progress);
            }
            (last_left, last_progress) = (left, now);
            steps += 1;
        }
        if now >= next_report {
            eprintln!(
                "load: drain: {:.0} s after the cloud came up: {left} records left",
                (now - up).as_secs_f64()
            );
            next_report += Duration::from_secs(1);
        }
        if left == 0 {
            break now;
        }
        cloud.check_running()?;
        if let Some(blocked) = state["cloud"]["blocked"].as_object() {
            return Err(format!("the edge's stream is blocked: {blocked:?}"));
        }
        if now > deadline {
            return Err(format!(
                "the outbox still holds {left} of {} records {:.0} s after the cloud came up: {state}",
                plan.records,
                (now - up).as_secs_f64()
            ));
        }
        std::thread::sleep(POLL);
    };
    let first_ack = first_ack.unwrap_or(empty);
    let quarantined = outbox(&mut Conn::open(admin)?)?["quarantined"]
        .as_u64()
        .unwrap_or(0);
    if quarantined > 0 {
        return Err(format!(
            "{quarantined} records were quarantined: the cloud refused them"
        ));
    }

    // Acked means durable at the cloud, so its feed and counters are final.
    let (feed_changes, _) = ingest::read_feed(cloud_port)?;
    let (status, metrics) = Conn::open(cloud_port)?.request("GET", "/metrics", b"")?;
    let metrics = String::from_utf8_lossy(&metrics);
    let entries = |result: &str| {
        servers::metric_value(
            &metrics,
            &format!("outpost_cloud_entries_total{{result=\"{result}\"}}"),
        )
        .unwrap_or(0.0) as u64
    };
    let (cloud_applied, cloud_duplicates, cloud_refused) =
        (entries("applied"), entries("duplicate"), entries("refused"));
    if status != 200 {
        return Err(format!(
            "the cloud's GET /metrics answered {status}: {metrics}"
        ));
    }
    if feed_changes != plan.records || cloud_applied != plan.records as u64 || cloud_refused > 0 {
        return Err(format!(
            "{} distinct keys were written, but the cloud's feed serves {feed_changes} changes \
             and it counts {cloud_applied} entries applied, {cloud_refused} refused",
            plan.records
        ));
    }
    let edge_down_ms = down_ms(&scratch.path().join("outpost.log"));
    // The edge first: its puller's long poll would hold the cloud in its
    // 10 s shutdown grace.
    edge.stop();
    cloud.stop();
    Ok(Outcome {
        backend,
        records: plan.records,
        fill_secs,
        away_secs,
        cloud_start_ms,
        first_ack_ms: (first_ack - up).as_secs_f64() * 1000.0,
        empty_secs: (empty - up).as_secs_f64(),
        feed_changes,
        cloud_applied,
        cloud_duplicates,
        cloud_refused,
        edge_down_ms,
        longest_stall_ms: longest_stall.as_secs_f64() * 1000.0,
        steps,
    })
}

/// Writes `plan.records` distinct keys through `plan.connections` keep-alive
/// connections as fast as the edge takes them; each must answer `{"ok"`.
/// The threads run on the client CPU, away from the edge's.
fn fill(port: u16, plan: &Plan) -> Result<(), String> {
    let next = Arc::new(AtomicUsize::new(0));
    let client_core: Option<usize> = plan.client_cpus.parse().ok();
    let total = plan.records;
    let threads: Vec<_> = (0..plan.connections)
        .map(|_| {
            let next = next.clone();
            std::thread::spawn(move || -> Result<(), String> {
                if let Some(id) = client_core {
                    core_affinity::set_for_current(core_affinity::CoreId { id });
                }
                let mut conn = Conn::open(port)?;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return Ok(());
                    }
                    let path = format!("/kv/default/set?key=d{i:08}");
                    conn.post_ok(&path, VALUE.as_bytes())?;
                }
            })
        })
        .collect();
    let mut failure = None;
    for thread in threads {
        match thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(_) => failure = failure.or(Some("a fill thread panicked".to_owned())),
        }
    }
    failure.map_or(Ok(()), Err)
}

/// The admin API's `/outbox`.
fn outbox(conn: &mut Conn) -> Result<serde_json::Value, String> {
    let (status, body) = conn.request("GET", "/outbox", b"")?;
    if status != 200 {
        return Err(format!(
            "GET /outbox answered {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    serde_json::from_slice(&body).map_err(|e| format!("GET /outbox: not JSON ({e})"))
}

/// The `down_ms=` of the edge's "cloud reachable again" line, if it logged one.
fn down_ms(log: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .filter(|l| l.contains("cloud reachable again"))
        .find_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("down_ms="))
                .and_then(|ms| ms.parse().ok())
        })
}

fn print_outcomes(outcomes: &[Outcome], plan: &Plan, nproc: usize, json: bool) {
    if json {
        let rows: Vec<_> = outcomes
            .iter()
            .map(|o| {
                serde_json::json!({
                    "backend": o.backend.name(),
                    "records": o.records,
                    "fill_seconds": o.fill_secs,
                    "fill_writes_per_sec": o.records as f64 / o.fill_secs,
                    "away_seconds": o.away_secs,
                    "cloud_start_ms": o.cloud_start_ms,
                    "first_ack_ms": o.first_ack_ms,
                    "empty_seconds": o.empty_secs,
                    "drain_records_per_sec": o.drain_rate(),
                    "overall_records_per_sec": o.overall_rate(),
                    "feed_changes": o.feed_changes,
                    "cloud_entries": {
                        "applied": o.cloud_applied,
                        "duplicate": o.cloud_duplicates,
                        "refused": o.cloud_refused,
                    },
                    "edge_down_ms": o.edge_down_ms,
                    "longest_stall_ms": o.longest_stall_ms,
                    "outbox_shrank_times": o.steps,
                })
            })
            .collect();
        let json = serde_json::json!({
            "mode": "drain",
            "records": plan.records,
            "away_secs": plan.away.as_secs(),
            "connections": plan.connections,
            "server_cpus": plan.server_cpus,
            "client_cpus": plan.client_cpus,
            "ship_batch": plan.ship_batch,
            "nproc": nproc,
            "results": rows,
        });
        println!("{json:#}");
        return;
    }
    println!(
        "### drain: {} writes into the outbox over {} connections with the cloud away, then \
         `outpost cloud` on that port; edge on CPU {}, fill on CPU {}, cloud unpinned; \
         ship batch {}; nproc {nproc}\n",
        plan.records,
        plan.connections,
        plan.server_cpus,
        plan.client_cpus,
        plan.ship_batch
            .map_or("(edge default)".to_owned(), |b| b.to_string()),
    );
    let rows: Vec<Vec<String>> = outcomes
        .iter()
        .map(|o| {
            vec![
                o.backend.name().into(),
                format!(
                    "{:.1} s ({} /s)",
                    o.fill_secs,
                    report::rps(o.records as f64 / o.fill_secs)
                ),
                format!("{:.1} s", o.away_secs),
                format!("{:.0} ms", o.cloud_start_ms),
                format!("{:.0} ms", o.first_ack_ms),
                format!("{:.2} s", o.empty_secs),
                format!("**{}**", report::rps(o.drain_rate())),
                report::rps(o.overall_rate()),
                format!(
                    "{} / {} / {}",
                    o.feed_changes, o.cloud_applied, o.cloud_duplicates
                ),
                o.edge_down_ms
                    .map_or("-".to_owned(), |ms| format!("{:.1} s", ms as f64 / 1000.0)),
                format!("{:.0} ms ({} steps)", o.longest_stall_ms, o.steps),
            ]
        })
        .collect();
    print!(
        "{}",
        report::table(
            &[
                "backend",
                "fill",
                "away",
                "cloud start",
                "first ack",
                "empty",
                "records/s draining",
                "records/s overall",
                "feed / applied / dup",
                "edge down_ms",
                "longest stall",
            ],
            &rows
        )
    );
    println!(
        "\nfirst ack and empty: from the cloud's health endpoint answering 200; draining = N / \
         (empty − first ack), overall = N / empty. feed / applied / dup: changes the cloud's \
         feed serves afterwards, its `entries_total` applied and duplicate (redeliveries, \
         deduplicated); both of the first must equal N. edge down_ms: the edge's own \
         outage length in its log. longest stall: the longest the outbox did not shrink \
         while draining (steps: times it was seen shrinking, polled every 5 ms)."
    );
}
