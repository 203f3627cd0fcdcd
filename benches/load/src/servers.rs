//! The servers under test as child processes: started pinned with taskset,
//! polled over plain HTTP until they answer, and always stopped, since a
//! server left running would skew every later measurement on the machine.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A private folder under the system temp dir, removed when dropped.
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    pub fn new(tag: &str) -> Result<Self, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("outpost-load-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        for dir in [path.join("modules"), path.join("data")] {
            std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {dir:?}: {e}"))?;
        }
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn modules(&self) -> PathBuf {
        self.path.join("modules")
    }

    pub fn data(&self) -> PathBuf {
        self.path.join("data")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // LOAD_KEEP=1 keeps the servers' logs and data for a look afterwards.
        if std::env::var_os("LOAD_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A port nobody listens on right now. The server binds it a moment later;
/// the gap is a race in theory only on a quiet benchmark machine.
pub fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

/// A free port outside the kernel's ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`), for a server started long
/// after the port is picked: a [`free_port`] can meanwhile become the local
/// end of one of the harness's own outgoing connections, and then the
/// server cannot bind it. Falls back to [`free_port`] if no such port is
/// free.
pub fn quiet_port() -> Result<u16, String> {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    // Spread the starting point by PID so two harnesses rarely collide.
    let span = low.saturating_sub(10_000).max(1);
    let start = (std::process::id() % u32::from(span)) as u16;
    for i in 0..span.min(2000) {
        let port = 10_000 + (start + i) % span;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    free_port()
}

/// The value of one series in Prometheus or OpenMetrics text: `series` is
/// the name with its labels as the exporter writes them
/// (`outpost_outbox_records`, `outpost_remote_writes_total{result="applied"}`).
/// `None` when the series is absent, as a labelled counter is until first
/// counted.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        // `name 5` or `name{...} 5`, never `name_other 5`.
        if !rest.starts_with(' ') {
            return None;
        }
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// `GET path` over HTTP/1.0, so the reply is never chunked and the server
/// closes the connection: status and body with std alone.
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed HTTP reply");
    let head_end = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(bad)?;
    let status = std::str::from_utf8(&reply[..head_end])
        .ok()
        .and_then(|head| head.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, reply[head_end + 4..].to_vec()))
}

/// What the harness learns from a server's stderr while it runs.
#[derive(Default)]
struct Watch {
    reloaded: AtomicU64,
    ready_ms: Mutex<Option<u64>>,
}

/// The `ms=` of Outpost's `ready` line (`... INFO outpost: ready functions=N ... ms=M`);
/// `engines ready` and other lines with the word do not carry `functions=`.
fn ready_ms(line: &str) -> Option<u64> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "ready")?;
    if at == 0 || !words[at - 1].ends_with(':') {
        return None;
    }
    let rest = &words[at + 1..];
    if !rest.iter().any(|w| w.starts_with("functions=")) {
        return None;
    }
    rest.iter()
        .find_map(|w| w.strip_prefix("ms="))
        .and_then(|ms| ms.parse().ok())
}

/// How to start one server.
pub struct Launch<'a> {
    pub name: &'a str,
    pub program: &'a Path,
    pub args: Vec<OsString>,
    pub rust_log: Option<&'a str>,
    /// `taskset -c` list; `None` runs unpinned.
    pub cpus: Option<&'a str>,
    /// SIGTERM first (lets Outpost close its stores); otherwise SIGKILL.
    pub graceful: bool,
    pub port: u16,
    /// Working directory (so no stray `outpost.toml` is picked up) and log home.
    pub dir: &'a Path,
}

/// A running server; stopped on drop, so a panic or an early `?` cannot
/// leave it behind.
pub struct Server {
    pub name: String,
    pub port: u16,
    child: Child,
    graceful: bool,
    log: PathBuf,
    started: Instant,
    watch: Arc<Watch>,
    stopped: bool,
}

impl Server {
    pub fn spawn(launch: Launch) -> Result<Self, String> {
        let log = launch.dir.join(format!("{}.log", launch.name));
        let open_log = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .map_err(|e| format!("cannot open {log:?}: {e}"))
        };
        let mut cmd = match launch.cpus {
            Some(cpus) => {
                let mut cmd = Command::new("taskset");
                cmd.args(["-c", cpus]).arg(launch.program);
                cmd
            }
            None => Command::new(launch.program),
        };
        cmd.args(&launch.args)
            .current_dir(launch.dir)
            .stdin(Stdio::null())
            .stdout(open_log()?)
            .stderr(Stdio::piped())
            // Backtrace capture costs on every error path the host takes.
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .env_remove("RUST_LOG");
        // The caller's OUTPOST_* settings would make runs differ by machine.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("OUTPOST_") {
                cmd.env_remove(key);
            }
        }
        if let Some(level) = launch.rust_log {
            cmd.env("RUST_LOG", level);
        }
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
        let watch = Arc::new(Watch::default());
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut log_file = open_log()?;
        let seen = watch.clone();
        // Read to the end: a full pipe would stall the server mid-benchmark.
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut raw = Vec::new();
            while matches!(reader.read_until(b'\n', &mut raw), Ok(n) if n > 0) {
                let line = String::from_utf8_lossy(&raw);
                let _ = log_file.write_all(line.as_bytes());
                if line.contains("reloaded") {
                    seen.reloaded.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(ms) = ready_ms(&line) {
                    *seen.ready_ms.lock().unwrap() = Some(ms);
                }
                raw.clear();
            }
        });
        Ok(Self {
            name: launch.name.to_owned(),
            port: launch.port,
            child,
            graceful: launch.graceful,
            log,
            started,
            watch,
            stopped: false,
        })
    }

    /// CPU time the process has used so far, user and system, all threads
    /// (`/proc/PID/stat`; taskset execs the server, so the PID is its own).
    pub fn cpu_time(&self) -> Result<Duration, String> {
        process_cpu_time(self.child.id())
    }

    /// When the process was spawned.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// stderr lines so far that contain "reloaded".
    pub fn reloads(&self) -> u64 {
        self.watch.reloaded.load(Ordering::Relaxed)
    }

    /// The `ms=` of the host's `ready` line, once logged.
    pub fn ready_ms(&self) -> Option<u64> {
        *self.watch.ready_ms.lock().unwrap()
    }

    /// Polls `GET path` every `every` until `accept(status, body)` holds;
    /// returns the accepted body. Fails early if the server exits.
    pub fn wait_for(
        &mut self,
        path: &str,
        timeout: Duration,
        every: Duration,
        mut accept: impl FnMut(u16, &[u8]) -> bool,
    ) -> Result<Vec<u8>, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok((status, body)) = http_get(self.port, path)
                && accept(status, &body)
            {
                return Ok(body);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.stopped = true;
                return Err(format!(
                    "{} exited with {status} before GET {path} answered; its log:\n{}",
                    self.name,
                    self.log_tail()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not answer GET {path} as expected within {timeout:?}; its log:\n{}",
                    self.name,
                    self.log_tail()
                ));
            }
            std::thread::sleep(every);
        }
    }

    /// `Err` with the log's tail if the server has exited, for callers
    /// that poll something else than [`Server::wait_for`] does.
    pub fn check_running(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.stopped = true;
                Err(format!(
                    "{} exited with {status}; its log:\n{}",
                    self.name,
                    self.log_tail()
                ))
            }
            _ => Ok(()),
        }
    }

    /// Waits until `GET path` answers 200; returns the body.
    pub fn wait_ok(&mut self, path: &str, timeout: Duration) -> Result<Vec<u8>, String> {
        self.wait_for(path, timeout, Duration::from_millis(20), |status, _| {
            status == 200
        })
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    pub fn stop(&mut self) {
        self.stop_within(Duration::from_secs(10));
    }

    /// Stops the server, giving it `patience` to exit after SIGTERM before
    /// it is killed (a server under valgrind needs longer).
    pub fn stop_within(&mut self, patience: Duration) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if self.graceful {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + patience;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            eprintln!(
                "load: {} ignored SIGTERM for {patience:?}; killing it",
                self.name
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// CPU time process `pid` has used so far, user and system, all threads.
pub fn process_cpu_time(pid: u32) -> Result<Duration, String> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    cpu_ticks(&stat)
        .map(|ticks| Duration::from_secs_f64(ticks as f64 / clock_ticks_per_sec()))
        .ok_or_else(|| format!("{path}: no utime/stime in {stat:?}"))
}

/// utime + stime, in clock ticks, from a `/proc/PID/stat` line. The
/// command name in parentheses may hold spaces, so fields are counted from
/// the last `)`: state is the first after it, utime the 12th, stime the 13th.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `getconf CLK_TCK`, the unit of `/proc/PID/stat` times (100 on Linux
/// unless the kernel says otherwise).
pub fn clock_ticks_per_sec() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|&ticks: &f64| ticks > 0.0)
            .unwrap_or(100.0)
    })
}

/// `outpost serve` on `port` over the scratch folder's modules and data.
pub fn outpost(
    bin: &Path,
    scratch: &Scratch,
    cpus: Option<&str>,
    rust_log: &str,
    extra: &[&str],
) -> Result<Server, String> {
    outpost_wrapped(&[], bin, scratch, cpus, rust_log, extra)
}

/// [`outpost`] run by another program: `wrap` is that program and its
/// arguments (valgrind and its flags), followed by the outpost binary.
pub fn outpost_wrapped(
    wrap: &[OsString],
    bin: &Path,
    scratch: &Scratch,
    cpus: Option<&str>,
    rust_log: &str,
    extra: &[&str],
) -> Result<Server, String> {
    spawn_outpost(wrap, bin, scratch, cpus, rust_log, "127.0.0.1:0", extra)
}

/// [`outpost`] with its admin listener (`/outbox`, `/metrics`) on
/// `admin_port` rather than an ephemeral port, for modes that read it: at
/// `warn` the host does not log where an ephemeral one went.
pub fn outpost_with_admin(
    bin: &Path,
    scratch: &Scratch,
    cpus: Option<&str>,
    rust_log: &str,
    admin_port: u16,
    extra: &[&str],
) -> Result<Server, String> {
    let admin = format!("127.0.0.1:{admin_port}");
    spawn_outpost(&[], bin, scratch, cpus, rust_log, &admin, extra)
}

fn spawn_outpost(
    wrap: &[OsString],
    bin: &Path,
    scratch: &Scratch,
    cpus: Option<&str>,
    rust_log: &str,
    admin: &str,
    extra: &[&str],
) -> Result<Server, String> {
    let port = free_port()?;
    let (program, mut args): (&Path, Vec<OsString>) = match wrap.split_first() {
        Some((program, wrap_args)) => {
            let mut args = wrap_args.to_vec();
            args.push(bin.into());
            (Path::new(program), args)
        }
        None => (bin, Vec::new()),
    };
    let fixed: [OsString; 11] = [
        "serve".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}").into(),
        "--admin-listen".into(),
        admin.into(),
        "--modules".into(),
        scratch.modules().into(),
        "--data".into(),
        scratch.data().into(),
        // Nothing is in flight when the harness stops it; do not wait 30 s
        // for idle keep-alive connections.
        "--shutdown-grace-ms".into(),
        "1000".into(),
    ];
    args.extend(fixed);
    args.extend(extra.iter().map(OsString::from));
    Server::spawn(Launch {
        name: "outpost",
        program,
        args,
        rust_log: Some(rust_log),
        cpus,
        graceful: true,
        port,
        dir: scratch.path(),
    })
}

/// `wasmtime serve` of one component: a fresh instance per request is its
/// default, like Outpost.
pub fn wasmtime(
    bin: &Path,
    scratch: &Scratch,
    wasm: &Path,
    cpus: Option<&str>,
) -> Result<Server, String> {
    let port = free_port()?;
    let args: Vec<OsString> = vec![
        "serve".into(),
        "-S".into(),
        "cli".into(),
        "-O".into(),
        "pooling-allocator".into(),
        // Already 48's default for WASIp2 components; spelled out so a
        // changed default cannot turn this into an instance-reuse benchmark.
        "--max-instance-reuse-count".into(),
        "1".into(),
        "--addr".into(),
        format!("127.0.0.1:{port}").into(),
        wasm.into(),
    ];
    Server::spawn(Launch {
        name: "wasmtime-serve",
        program: bin,
        args,
        rust_log: None,
        cpus,
        graceful: false,
        port,
        dir: scratch.path(),
    })
}

/// The native hyper baseline with `threads` workers.
pub fn native(
    bin: &Path,
    scratch: &Scratch,
    cpus: Option<&str>,
    threads: usize,
) -> Result<Server, String> {
    let port = free_port()?;
    let args: Vec<OsString> = vec![
        "--listen".into(),
        format!("127.0.0.1:{port}").into(),
        "--threads".into(),
        threads.to_string().into(),
    ];
    Server::spawn(Launch {
        name: "native-hello",
        program: bin,
        args,
        rust_log: None,
        cpus,
        graceful: false,
        port,
        dir: scratch.path(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_counted_past_a_command_with_spaces() {
        let stat = "4242 (tokio rt) worker) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    1234 56 0 0 20 0 3 0 100 0 0";
        assert_eq!(cpu_ticks(stat), Some(1234 + 56));
        assert_eq!(cpu_ticks("4242 (x) S 1"), None);
    }

    #[test]
    fn metric_values_by_exact_series() {
        let text = "# TYPE outpost_remote_writes counter\n\
                    outpost_remote_writes_total{result=\"applied\"} 1200\n\
                    outpost_remote_writes_total{result=\"older\"} 3\n\
                    outpost_outbox_records_bytes 99\n\
                    outpost_outbox_records 42\n# EOF\n";
        let applied = r#"outpost_remote_writes_total{result="applied"}"#;
        assert_eq!(metric_value(text, applied), Some(1200.0));
        assert_eq!(
            metric_value(text, r#"outpost_remote_writes_total{result="older"}"#),
            Some(3.0)
        );
        assert_eq!(metric_value(text, "outpost_outbox_records"), Some(42.0));
        assert_eq!(
            metric_value(text, r#"outpost_remote_writes_total{result="refused"}"#),
            None
        );
    }

    #[test]
    fn finds_the_ready_line_only() {
        let ready = "2026-04-01T10:00:00.123456Z  INFO outpost: ready functions=50 \
                     node=abc modules=/tmp/m data=/tmp/d ms=87";
        assert_eq!(ready_ms(ready), Some(87));
        let engine = "2026-04-01T10:00:00.1Z  INFO outpost::engine: engines ready allocator=pooling engines=2 ms=3";
        assert_eq!(ready_ms(engine), None);
        assert_eq!(ready_ms("INFO outpost: loaded function=fn1 ms=4"), None);
    }
}
