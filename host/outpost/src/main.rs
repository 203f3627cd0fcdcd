//! The `outpost` command line: `outpost serve` runs an edge node, `outpost
//! cloud` the cloud tier.

mod cloud_file;
mod dev;
mod lab_cli;
mod new_project;

use clap::{Parser, Subcommand};
use outpost_edge::config::{AllocatorChoice, FileConfig, FlagConfig, ServeConfig};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "outpost", version, about = "WebAssembly edge-function host")]
struct Cli {
    /// Log format (no env: logging starts before the settings are read).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
// Parsed once at start-up; boxing the big variant would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Serve every NAME.wasm in the modules folder at /NAME, reloading on change.
    Serve(ServeArgs),
    /// Build Rust function projects, serve them, and rebuild and reload each on every change.
    Dev(dev::DevArgs),
    /// Run the cloud tier that edges ship to and pull changes from.
    Cloud(CloudArgs),
    /// Measure a component on this machine.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Write a new function project (Rust, JavaScript or Python) to build and deploy.
    New(new_project::NewArgs),
    /// A local cloud and N edges behind links you can cut, slow and make lossy; scenario files for partition tests.
    Lab(lab_cli::LabArgs),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Compile time, cache-hit load time, instantiate time, first-request
    /// latency and warm p50/p99 of one component, in process.
    ColdStart {
        /// The component (.wasm) to measure.
        path: PathBuf,
        /// Warm requests to time after the first.
        #[arg(long, default_value_t = 1000)]
        requests: usize,
        /// Path to request (the guest sees it as is).
        #[arg(long, default_value = "/")]
        path_and_query: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `outpost cloud`: run the cloud tier, or manage its credentials.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct CloudArgs {
    #[command(subcommand)]
    action: Option<CloudAction>,
    #[command(flatten)]
    run: CloudRunArgs,
}

/// Flags for running the cloud tier.
#[derive(clap::Args)]
struct CloudRunArgs {
    /// Settings file (TOML; keys named like these flags, `_` for `-`; a flag or env var wins over it).
    #[arg(long, env = "OUTPOST_CLOUD_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:9090].
    #[arg(long, env = "OUTPOST_CLOUD_LISTEN")]
    listen: Option<SocketAddr>,
    /// Cloud data folder [default: ./.outpost-cloud].
    #[arg(long, env = "OUTPOST_CLOUD_DATA")]
    data: Option<PathBuf>,
    /// The operator's token: enrols and revokes credentials [default: generated into DATA/admin-token].
    #[arg(long, env = "OUTPOST_CLOUD_ADMIN_TOKEN")]
    admin_token: Option<String>,
    /// Development mode: one shared token every edge and reader may use, as any node (it replaces the old --token, which no longer exists).
    #[arg(long, env = "OUTPOST_CLOUD_DEV_TOKEN")]
    dev_token: Option<String>,
    /// Largest value or event payload accepted, in bytes [default: 16 MiB].
    #[arg(long)]
    max_value_bytes: Option<usize>,
    /// How far ahead of this machine's clock a record's HLC may be, in milliseconds [default: 5 minutes].
    #[arg(long)]
    max_clock_skew_ms: Option<u64>,
    /// Serve HTTPS with this PEM certificate chain, leaf first (with --tls-key) [default: plain HTTP].
    #[arg(long, env = "OUTPOST_CLOUD_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "OUTPOST_CLOUD_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Refuse ingests (503, not applied) while the data dir's disk has less than this many bytes free; they resume by themselves once it has room (0: off) [default: 64 MiB].
    #[arg(long, env = "OUTPOST_CLOUD_MIN_FREE_BYTES")]
    min_free_bytes: Option<u64>,
    /// Keep the cloud's state in PostgreSQL (postgres://USER[:PASS]@HOST[:PORT]/DB): any number of replicas given the same URL serve the same edges [default: the embedded database under --data].
    #[arg(long, env = "OUTPOST_CLOUD_DATABASE")]
    database: Option<String>,
    /// Connections each replica keeps to PostgreSQL [default: 16].
    #[arg(long, env = "OUTPOST_CLOUD_DATABASE_POOL")]
    database_pool: Option<usize>,
    /// PEM file of the CA the database server's certificate must chain to, for a URL with sslmode=require [default: the public roots].
    #[arg(long, env = "OUTPOST_CLOUD_DATABASE_CA")]
    database_ca: Option<PathBuf>,
}

/// Managing credentials on a running cloud.
#[derive(Subcommand)]
enum CloudAction {
    /// Enrol an edge: print a new credential bound to NODE_ID (give it to the edge as --cloud-token).
    Enrol {
        /// The edge's node id (its --node-id).
        node_id: String,
        /// Stores the edge may write: store ids (@FUNCTION, shared names) or * and @* [default: *].
        #[arg(long, value_delimiter = ',')]
        stores: Option<Vec<String>>,
        /// Topics the edge may publish to: topics, PREFIX.* or * [default: *].
        #[arg(long, value_delimiter = ',')]
        topics: Option<Vec<String>>,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Print a new read-only credential (feed, events, conflicts, keys, metrics).
    Reader {
        /// A name for the reader, shown in listings.
        name: String,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// List the credentials issued (never their tokens).
    Credentials {
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Revoke a credential by id: its token stops working at once.
    Revoke {
        /// The credential id (from `enrol` or `credentials`).
        id: String,
        #[command(flatten)]
        target: AdminTarget,
    },
}

/// Which cloud to manage, and the operator's token for it.
#[derive(clap::Args)]
struct AdminTarget {
    /// The cloud's base URL (https://, or http:// on this machine).
    #[arg(long, default_value = "http://127.0.0.1:9090")]
    cloud: String,
    /// PEM file of the CA the cloud's certificate must chain to [default: the public roots].
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The admin token [default: read from DATA/admin-token].
    #[arg(long, env = "OUTPOST_CLOUD_ADMIN_TOKEN")]
    admin_token: Option<String>,
    /// The cloud's data folder, to read its admin token from.
    #[arg(long, env = "OUTPOST_CLOUD_DATA", default_value = "./.outpost-cloud")]
    data: PathBuf,
}

impl AdminTarget {
    fn token(&self) -> anyhow::Result<String> {
        if let Some(token) = &self.admin_token {
            return Ok(token.clone());
        }
        let path = outpost_cloud::admin_token_path(&self.data);
        outpost_cloud::read_token_file(&path)?.ok_or_else(|| {
            anyhow::anyhow!(
                "no --admin-token given and {} does not exist",
                path.display()
            )
        })
    }
}

/// Runs one credentials command against a running cloud and prints the
/// answer: a new token alone on stdout (for scripts), the rest as JSON.
async fn manage(action: CloudAction) -> anyhow::Result<()> {
    use http::Method;
    let (target, method, path, body) = match &action {
        CloudAction::Enrol {
            node_id,
            stores,
            topics,
            target,
        } => (
            target,
            Method::POST,
            "/v1/credentials".to_owned(),
            Some(
                serde_json::json!({ "role": "node", "node": node_id, "stores": stores, "topics": topics }),
            ),
        ),
        CloudAction::Reader { name, target } => (
            target,
            Method::POST,
            "/v1/credentials".to_owned(),
            Some(serde_json::json!({ "role": "reader", "label": name })),
        ),
        CloudAction::Credentials { target } => {
            (target, Method::GET, "/v1/credentials".to_owned(), None)
        }
        CloudAction::Revoke { id, target } => (
            target,
            Method::DELETE,
            format!("/v1/credentials/{id}"),
            None,
        ),
    };
    let answer = outpost_cloud::admin_client::call(
        &target.cloud,
        target.ca.as_deref(),
        &target.token()?,
        method,
        &path,
        body,
    )
    .await?;
    match answer.get("token").and_then(|t| t.as_str()) {
        Some(token) => {
            eprintln!(
                "credential {} issued; the token is shown once:",
                answer["id"].as_str().unwrap_or("?")
            );
            println!("{token}");
        }
        None => println!("{}", serde_json::to_string_pretty(&answer)?),
    }
    Ok(())
}

/// Flags for `outpost serve`. Each overrides `outpost.toml`, which overrides
/// the matching `OUTPOST_*` environment variable.
#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080; env OUTPOST_LISTEN].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Folder of NAME.wasm functions [default: ./modules; env OUTPOST_MODULES].
    #[arg(long)]
    modules: Option<PathBuf>,
    /// Node data folder: compiled-code cache and node state [default: ./.outpost; env OUTPOST_DATA].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Host config file [default: ./outpost.toml if present; no env].
    #[arg(long)]
    config: Option<PathBuf>,
    /// Milliseconds in-flight requests get after SIGINT/SIGTERM [default: 30000; env OUTPOST_SHUTDOWN_GRACE_MS].
    #[arg(long)]
    shutdown_grace_ms: Option<u64>,
    /// Quiet milliseconds after a module file changes before it is loaded [default: 200; env OUTPOST_RELOAD_DEBOUNCE_MS].
    #[arg(long)]
    reload_debounce_ms: Option<u64>,
    /// Instance allocator [default: auto; env OUTPOST_ALLOCATOR].
    #[arg(long, value_enum)]
    allocator: Option<AllocatorChoice>,
    /// Instances that may run at once [default: 1000; env OUTPOST_MAX_INSTANCES].
    #[arg(long)]
    max_instances: Option<u32>,
    /// Wasmtime engines, one per serving core; each has its own instance pool and compiled code [default: the CPUs this process may use, at most 8; env OUTPOST_ENGINES].
    #[arg(long)]
    engines: Option<usize>,
    /// This node's replication id [default: generated once, kept in the data folder; env OUTPOST_NODE_ID].
    #[arg(long)]
    node_id: Option<String>,
    /// Cloud tier base URL, e.g. https://cloud.example.com or http://127.0.0.1:9090, or several replicas' separated by commas (https://a.example.com,https://b.example.com): when one fails (no connection, no answer in time, a 5xx) the edge moves to the next [default: none, writes stay local; env OUTPOST_CLOUD].
    #[arg(long)]
    cloud: Option<String>,
    /// This node's credential for the cloud tier [default: none; env OUTPOST_CLOUD_TOKEN].
    #[arg(long)]
    cloud_token: Option<String>,
    /// PEM file of the CA an https cloud's certificate must chain to, trusted instead of the public roots [default: the public web roots; env OUTPOST_CLOUD_CA].
    #[arg(long)]
    cloud_ca: Option<PathBuf>,
    /// Take a new database epoch before serving, renumbering the outbox: for a data dir copied from another node, or one the cloud refuses for a sequence gap [default: off; no env: a one-off].
    #[arg(long)]
    new_epoch: bool,
    /// Most outbox records per upload [default: 4096, the most the cloud takes; env OUTPOST_SHIP_BATCH].
    #[arg(long)]
    ship_batch: Option<usize>,
    /// Admin listener: metrics, admin API, dashboard [default: 127.0.0.1:9901; env OUTPOST_ADMIN_LISTEN].
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Bearer token the admin listener requires [default: none; env OUTPOST_ADMIN_TOKEN].
    #[arg(long)]
    admin_token: Option<String>,
    /// Log one line per request (target outpost::access: function, method, path, status, ms, request id, instantiate µs) [default: off; env OUTPOST_ACCESS_LOG=true].
    #[arg(long)]
    access_log: bool,
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    // Every host log line keeps its `outpost::MODULE` target (set in each
    // call), whatever crate the module lives in now, so `RUST_LOG`
    // directives and log routing written for those targets keep working.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    let which = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = which, "shutdown requested");
}

fn serve_config(args: ServeArgs) -> anyhow::Result<ServeConfig> {
    let (config_path, required) = match args.config {
        Some(path) => (path, true),
        None => (PathBuf::from("outpost.toml"), false),
    };
    let file = FileConfig::read(&config_path, required)?;
    let new_epoch = args.new_epoch;
    let flags = FlagConfig {
        listen: args.listen,
        modules: args.modules,
        data: args.data,
        shutdown_grace_ms: args.shutdown_grace_ms,
        reload_debounce_ms: args.reload_debounce_ms,
        allocator: args.allocator,
        max_instances: args.max_instances,
        engines: args.engines,
        node_id: args.node_id,
        cloud: args.cloud,
        cloud_token: args.cloud_token,
        cloud_ca: args.cloud_ca,
        ship_batch: args.ship_batch,
        admin_listen: args.admin_listen,
        admin_token: args.admin_token,
        access_log: args.access_log.then_some(true),
    };
    let mut config = ServeConfig::resolve(flags, file, &|key| std::env::var(key).ok())?;
    config.new_epoch = new_epoch;
    Ok(config)
}

/// mimalloc: a request allocates and frees a few hundred small objects
/// (wasmtime's per-instance tables, wasi-http resources, hyper's buffers).
#[global_allocator]
static ALLOCATOR: outpost::alloc::Mimalloc = outpost::alloc::Mimalloc;

/// The cloud's settings: flags and env vars, then `--config`, then the
/// defaults.
fn cloud_config(run: CloudRunArgs) -> anyhow::Result<outpost_cloud::CloudConfig> {
    use cloud_file::pick;
    let file = match &run.config {
        Some(path) => cloud_file::CloudFile::load(path)?,
        None => cloud_file::CloudFile::default(),
    };
    let defaults = outpost_cloud::CloudConfig::default();
    let tls_cert = pick(run.tls_cert, file.tls_cert);
    let tls_key = pick(run.tls_key, file.tls_key);
    anyhow::ensure!(
        tls_cert.is_some() == tls_key.is_some(),
        "a TLS certificate and its key go together (--tls-cert with --tls-key)"
    );
    Ok(outpost_cloud::CloudConfig {
        listen: pick(run.listen, file.listen).unwrap_or(defaults.listen),
        data_dir: pick(run.data, file.data).unwrap_or(defaults.data_dir),
        admin_token: run.admin_token,
        dev_token: run.dev_token,
        rules: outpost_wire::validate::Rules {
            max_value_bytes: pick(run.max_value_bytes, file.max_value_bytes)
                .unwrap_or(outpost_wire::validate::MAX_VALUE_BYTES),
            max_key_bytes: outpost_wire::validate::MAX_KEY_BYTES,
            max_clock_skew_ms: pick(run.max_clock_skew_ms, file.max_clock_skew_ms)
                .unwrap_or(outpost_wire::validate::DEFAULT_MAX_CLOCK_SKEW_MS),
        },
        tls_cert,
        tls_key,
        min_free_bytes: pick(run.min_free_bytes, file.min_free_bytes)
            .unwrap_or(defaults.min_free_bytes),
        database: pick(run.database, file.database),
        pg: outpost_cloud::pg::PgOptions {
            pool_size: pick(run.database_pool, file.database_pool).unwrap_or(defaults.pg.pool_size),
            ca: pick(run.database_ca, file.database_ca),
            ..defaults.pg
        },
    })
}

fn main() -> anyhow::Result<()> {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // Errors (guest traps included) would otherwise capture a host
        // backtrace each time RUST_BACKTRACE is set: microseconds per
        // failed request, and noise in the log. Panics keep theirs.
        // SAFETY: first thing in main, before any thread exists.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::New(args) => new_project::run(args),
        Command::Lab(args) => {
            let code = lab_cli::run(args, shutdown_signal())?;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        Command::Dev(args) => dev::run(args, shutdown_signal()),
        Command::Serve(args) => {
            let config = serve_config(args)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(outpost_edge::serve(config, shutdown_signal()))
        }
        Command::Bench(BenchCommand::ColdStart {
            path,
            requests,
            path_and_query,
            json,
        }) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let report = runtime.block_on(outpost_edge::cold_start::run(
                &path,
                requests,
                &path_and_query,
            ))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table());
            }
            Ok(())
        }
        Command::Cloud(CloudArgs {
            action: Some(action),
            ..
        }) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(manage(action))
        }
        Command::Cloud(CloudArgs { action: None, run }) => {
            let config = cloud_config(run)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(outpost_cloud::serve(config, shutdown_signal()))
        }
    }
}
