//! `outpost lab`: the command line of the lab (`outpost_lab`): start one,
//! change a running lab's links, print its status, run a scenario file.

use outpost_lab::control::DEFAULT_LAB;
use outpost_lab::link::FaultChange;
use outpost_lab::{Lab, LabConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// `outpost lab`: start a lab, or act on a running one.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct LabArgs {
    #[command(subcommand)]
    action: Option<LabAction>,
    #[command(flatten)]
    start: StartArgs,
}

/// Flags for starting a lab.
#[derive(clap::Args)]
struct StartArgs {
    /// Edges to start (edge-1, edge-2, ...).
    #[arg(long, default_value_t = 2)]
    edges: usize,
    /// The modules folder every edge serves.
    #[arg(long, default_value = "modules")]
    modules: PathBuf,
    /// Where the lab's dashboard and API listen (loopback only).
    #[arg(long, default_value = DEFAULT_LAB)]
    listen: SocketAddr,
    /// Keep data dirs and logs in this folder (default: a temporary one, removed at exit).
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
enum LabAction {
    /// Change one edge's link on a running lab.
    Link {
        /// The edge (edge-1, edge-2, ...).
        edge: String,
        #[command(subcommand)]
        fault: Fault,
        /// The running lab.
        #[arg(long, env = "OUTPOST_LAB", default_value = DEFAULT_LAB, global = true)]
        lab: String,
    },
    /// Print a running lab's edges, links and outboxes.
    Status {
        /// The running lab.
        #[arg(long, env = "OUTPOST_LAB", default_value = DEFAULT_LAB)]
        lab: String,
    },
    /// Start a lab, run a scenario file in it, check its expectations and stop;
    /// exits 1 if one failed, 2 if the file or the lab is wrong or the run was interrupted.
    Run {
        /// The scenario (TOML).
        file: PathBuf,
        /// Edges to start (default: the file's `edges`, else 2).
        #[arg(long)]
        edges: Option<usize>,
        /// The modules folder (default: the file's `modules`, else ./modules).
        #[arg(long)]
        modules: Option<PathBuf>,
        /// Where the lab's API listens while the scenario runs.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Keep data dirs and logs in this folder.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Print the checks as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Subcommand)]
enum Fault {
    /// Close every connection and refuse new ones.
    Cut,
    /// Carry connections again (other faults stay).
    Heal,
    /// Clear every fault.
    Reset,
    /// Delay each chunk by MS (plus up to --jitter MS more).
    Latency {
        /// One-way delay in ms.
        ms: u64,
        /// Up to this much more, at random, per chunk.
        #[arg(long)]
        jitter: Option<u64>,
    },
    /// Reset a connection with chance RATE per chunk carried (0.1 = 10%).
    Loss {
        /// 0 to 1.
        rate: f64,
    },
    /// Cap each direction at BYTES_PER_S (0: no cap).
    Bandwidth {
        /// Bytes per second.
        bytes_per_s: u64,
    },
}

impl Fault {
    fn change(&self) -> FaultChange {
        let none = FaultChange::default();
        match *self {
            Fault::Cut => FaultChange {
                cut: Some(true),
                ..none
            },
            Fault::Heal => FaultChange {
                cut: Some(false),
                ..none
            },
            Fault::Reset => FaultChange {
                reset: true,
                ..none
            },
            Fault::Latency { ms, jitter } => FaultChange {
                latency_ms: Some(ms),
                jitter_ms: Some(jitter.unwrap_or(0)),
                ..none
            },
            Fault::Loss { rate } => FaultChange {
                loss: Some(rate),
                ..none
            },
            Fault::Bandwidth { bytes_per_s } => FaultChange {
                bandwidth: Some(bytes_per_s),
                ..none
            },
        }
    }
}

/// Runs `outpost lab ...`; returns the process's exit code.
pub fn run(args: LabArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.action {
        Some(LabAction::Link { edge, fault, lab }) => {
            let line =
                runtime.block_on(outpost_lab::control::link(&lab, &edge, &fault.change()))?;
            println!("{line}");
            Ok(0)
        }
        Some(LabAction::Status { lab }) => {
            print!("{}", runtime.block_on(outpost_lab::control::status(&lab))?);
            Ok(0)
        }
        Some(LabAction::Run {
            file,
            edges,
            modules,
            listen,
            dir,
            json,
        }) => runtime.block_on(scenario(file, edges, modules, listen, dir, json, shutdown)),
        None => {
            let start = args.start;
            // Everything in block_on: the children must be forked by this
            // thread, which lives as long as the lab (see `Lab::start`).
            runtime.block_on(async {
                let mut shutdown = std::pin::pin!(shutdown);
                listen_for_signals(shutdown.as_mut()).await;
                let listener = outpost_lab::bind(start.listen).await?;
                let listen = listener.local_addr()?;
                let lab = Lab::start(LabConfig {
                    edges: start.edges,
                    modules: start.modules,
                    dir: start.dir,
                    binary: std::env::current_exe()?,
                })
                .await?;
                print!("{}", outpost_lab::banner(&lab, listen));
                outpost_lab::serve(Arc::new(lab), listener, shutdown).await;
                anyhow::Ok(0)
            })
        }
    }
}

/// Polls `shutdown` once, which installs its signal handlers: a signal
/// while the lab starts is then caught and acted on once it has started,
/// instead of killing the process with the lab half made.
async fn listen_for_signals(shutdown: std::pin::Pin<&mut impl Future<Output = ()>>) {
    tokio::select! {
        biased;
        () = shutdown => {}
        () = std::future::ready(()) => {}
    }
}

async fn scenario(
    file: PathBuf,
    edges: Option<usize>,
    modules: Option<PathBuf>,
    listen: SocketAddr,
    dir: Option<PathBuf>,
    json: bool,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<i32> {
    use outpost_lab::scenario::Scenario;
    let mut shutdown = std::pin::pin!(shutdown);
    listen_for_signals(shutdown.as_mut()).await;
    let scenario = match Scenario::load(&file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(2);
        }
    };
    let edges = edges.or(scenario.edges).unwrap_or(2);
    if let Some(name) = scenario.edges_named().into_iter().find(|name| {
        name.strip_prefix("edge-")
            .and_then(|n| n.parse::<usize>().ok())
            .is_none_or(|n| n == 0 || n > edges)
    }) {
        eprintln!(
            "error: {}: a step names {name:?}, but the lab has edge-1 to edge-{edges}",
            file.display()
        );
        return Ok(2);
    }
    let listener = match outpost_lab::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(2);
        }
    };
    let listen = listener.local_addr()?;
    let lab = match Lab::start(LabConfig {
        edges,
        modules: modules
            .or_else(|| scenario.modules.clone())
            .unwrap_or_else(|| PathBuf::from("modules")),
        dir,
        binary: std::env::current_exe()?,
    })
    .await
    {
        Ok(lab) => Arc::new(lab),
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(2);
        }
    };
    eprint!("{}", outpost_lab::banner(&lab, listen));
    // The API runs while the scenario does, so a person can watch it on
    // the dashboard; it stops with the lab.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(outpost_lab::serve(lab.clone(), listener, async {
        let _ = stopped.await;
    }));
    let mut out = std::io::stderr();
    // A CI job's timeout or a Ctrl-C stops the children and removes the
    // lab's folder, instead of leaving both behind.
    let checks = tokio::select! {
        checks = outpost_lab::scenario::run(&lab, &scenario, &mut out) => Some(checks),
        () = &mut shutdown => None,
    };
    let _ = stop.send(());
    let _ = server.await;
    let Some(checks) = checks else {
        eprintln!("error: interrupted before the scenario ended");
        return Ok(2);
    };
    let failed = checks.iter().filter(|c| !c.ok).count();
    if json {
        println!(
            "{}",
            serde_json::json!({ "passed": failed == 0, "checks": checks })
        );
    } else {
        for c in &checks {
            println!(
                "{} {}: {}",
                if c.ok { "ok  " } else { "FAIL" },
                c.what,
                c.detail
            );
        }
        println!(
            "{}: {} checks, {failed} failed",
            if failed == 0 { "passed" } else { "FAILED" },
            checks.len()
        );
    }
    Ok(if failed == 0 { 0 } else { 1 })
}
