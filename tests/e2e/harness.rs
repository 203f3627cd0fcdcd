//! Test harness: starts the real `outpost` binary on an ephemeral port with
//! its own modules and data folders, captures its log, and talks HTTP to it.

use regex::Regex;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Upper bound for anything a test waits for (a load, a log line, a reload).
/// Generous because a cold compile in the dev profile on 2 cores takes a
/// while; tests never assert on how long things take.
pub const WAIT: Duration = Duration::from_secs(240);

/// `target/<profile>/` of the running test binary (`target/debug/deps/e2e-*`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// The newest modification time of any file under `dir`.
fn newest_under(dir: &Path) -> std::time::SystemTime {
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let modified = if path.is_dir() {
            newest_under(&path)
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(newest)
        };
        newest = newest.max(modified);
    }
    newest
}

/// The `outpost` binary, built by `cargo xtask test`; refuses a binary
/// older than the host's sources, so a test never runs stale code.
pub fn outpost_bin() -> PathBuf {
    let bin = profile_dir().join("outpost");
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} is missing: run the suite with `cargo xtask test`",
                bin.display()
            )
        });
    let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("../host");
    assert!(
        newest_under(&sources) <= built,
        "{} is older than the sources in host/: run the suite with `cargo xtask test`",
        bin.display()
    );
    bin
}

/// A guest component built by `cargo xtask test` (or `cargo xtask guests`):
/// a Rust guest by crate name, or `foreign/python`, `foreign/javascript`
/// for the guests built with other toolchains.
pub fn guest(name: &str) -> PathBuf {
    let target = profile_dir().parent().expect("target dir").to_path_buf();
    let path = match name.strip_prefix("foreign/") {
        Some(foreign) => target.join("foreign").join(format!("{foreign}.wasm")),
        None => target
            .join("wasm32-wasip2")
            .join("guest")
            .join(format!("{}.wasm", name.replace('-', "_"))),
    };
    assert!(
        path.exists(),
        "guest {} is missing: run the suite with `cargo xtask test`",
        path.display()
    );
    path
}

pub fn guest_bytes(name: &str) -> Vec<u8> {
    std::fs::read(guest(name)).expect("read guest")
}

/// Polls `check` until it returns `Some`, or panics after [`WAIT`].
pub fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The captured log of one process, shared with its reader thread.
#[derive(Default)]
struct Log {
    lines: Mutex<Vec<String>>,
    grew: Condvar,
}

/// One HTTP exchange's result.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// A temporary folder with `modules/` holding `functions` (name, guest).
pub fn prepare(functions: &[(&str, &str)]) -> Arc<tempfile::TempDir> {
    let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
    std::fs::create_dir_all(dir.path().join("modules")).unwrap();
    for (name, guest_name) in functions {
        std::fs::copy(
            guest(guest_name),
            dir.path().join("modules").join(format!("{name}.wasm")),
        )
        .unwrap();
    }
    dir
}

/// Writes the host config, `outpost.toml`, in the node's working folder.
pub fn write_host_config(dir: &tempfile::TempDir, toml: &str) {
    std::fs::write(dir.path().join("outpost.toml"), toml).unwrap();
}

/// Resident memory of process `pid`, in bytes (from /proc).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A child process whose stdout and stderr are captured line by line.
pub struct Process {
    child: Child,
    log: Arc<Log>,
}

impl Process {
    fn spawn(mut cmd: Command, tag: &'static str) -> Process {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start outpost");
        let log = Arc::new(Log::default());
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    eprintln!("[{tag}] {line}");
                    log.lines.lock().unwrap().push(line);
                    log.grew.notify_all();
                }
            });
        }
        Process { child, log }
    }

    /// The address captured by `pattern` in the first log line it matches.
    fn wait_addr(&self, pattern: &str) -> SocketAddr {
        let line = self.wait_log(pattern);
        Regex::new(pattern).unwrap().captures(&line).unwrap()[1]
            .parse()
            .expect("listen address")
    }

    /// All log lines so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lines.lock().unwrap().clone()
    }

    /// Lines matching `pattern` so far.
    pub fn log_matches(&self, pattern: &str) -> Vec<String> {
        let re = Regex::new(pattern).unwrap();
        self.log_lines()
            .into_iter()
            .filter(|l| re.is_match(l))
            .collect()
    }

    /// Waits for a log line matching `pattern` (a regex) and returns it.
    pub fn wait_log(&self, pattern: &str) -> String {
        self.wait_log_after(pattern, 0)
    }

    /// Like [`Process::wait_log`], considering only lines from index `from` on.
    pub fn wait_log_after(&self, pattern: &str, from: usize) -> String {
        let re = Regex::new(pattern).unwrap();
        let deadline = Instant::now() + WAIT;
        let mut lines = self.log.lines.lock().unwrap();
        loop {
            if let Some(line) = lines.iter().skip(from).find(|l| re.is_match(l)) {
                return line.clone();
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "timed out waiting for a log line matching {pattern:?}"
            );
            lines = self.log.grew.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }

    /// Number of log lines so far: a marker for [`Process::wait_log_after`].
    pub fn log_len(&self) -> usize {
        self.log.lines.lock().unwrap().len()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Sends SIGINT (Ctrl-C).
    pub fn interrupt(&self) {
        self.signal(libc::SIGINT);
    }

    fn signal(&self, signal: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "outpost did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

fn http_agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(WAIT)
        .max_idle_connections(0)
        .build()
}

/// Sends a request; any status is a `Reply`, only transport errors panic.
fn send(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut req = agent.request(method, url);
    for (name, value) in headers {
        req = req.set(name, value);
    }
    let response = match req.send_bytes(body) {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = response.status();
    let headers = response
        .headers_names()
        .into_iter()
        .flat_map(|name| {
            response
                .all(&name)
                .into_iter()
                .map(|v| (name.clone(), v.to_string()))
                .collect::<Vec<_>>()
        })
        .collect();
    let body = response.into_string().expect("read body");
    Reply {
        status,
        body,
        headers,
    }
}

/// Any request with its own agent, to any URL.
pub fn http_request(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    send(&http_agent(), method, url, headers, body)
}

/// A GET with its own agent, to any URL.
pub fn http_get(url: &str, headers: &[(&str, &str)]) -> Reply {
    send(&http_agent(), "GET", url, headers, b"")
}

/// A free TCP port on loopback, for a process started later.
///
/// Taken below the kernel's ephemeral range: a port from that range that
/// nothing listens on yet (a cloud started later, with edges already
/// dialling it) can be taken meanwhile as the local end of some outgoing
/// connection, even one of the edges' own attempts to reach it, and the
/// server then fails to bind. Each call moves on to the next port, so
/// tests running at once do not pick the same one.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let span = low.saturating_sub(10_000).max(1);
    // Spread by PID so two test processes rarely start at the same port.
    let start = std::process::id() % span;
    loop {
        let i = NEXT.fetch_add(1, Ordering::Relaxed);
        if i >= span {
            break;
        }
        let port = (10_000 + (start + i) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes a function's settings file, `modules/NAME.toml`.
pub fn write_settings(dir: &tempfile::TempDir, name: &str, toml: &str) {
    std::fs::write(
        dir.path().join("modules").join(format!("{name}.toml")),
        toml,
    )
    .unwrap();
}

/// A running `outpost serve` with its own temporary folders.
pub struct Node {
    process: Process,
    pub addr: SocketAddr,
    /// The admin listener (metrics, admin API, dashboard).
    pub admin: SocketAddr,
    /// Holds the modules and data folders; both outlive restarts.
    pub dir: Arc<tempfile::TempDir>,
    agent: ureq::Agent,
    extra_args: Vec<String>,
}

impl std::ops::Deref for Node {
    type Target = Process;
    fn deref(&self) -> &Process {
        &self.process
    }
}

impl std::ops::DerefMut for Node {
    fn deref_mut(&mut self) -> &mut Process {
        &mut self.process
    }
}

impl Node {
    /// Starts a node whose modules folder holds `functions` (name, guest).
    pub fn start(functions: &[(&str, &str)]) -> Node {
        Self::start_with(functions, &[])
    }

    pub fn start_with(functions: &[(&str, &str)], args: &[&str]) -> Node {
        Self::spawn(prepare(functions), strings(args), None)
    }

    /// Starts a node whose address space is capped at `bytes` (`ulimit -v`).
    pub fn start_with_address_limit(functions: &[(&str, &str)], args: &[&str], bytes: u64) -> Node {
        Self::spawn(prepare(functions), strings(args), Some(bytes))
    }

    /// Starts a node whose log filter is `rust_log` instead of the usual
    /// `info,outpost=debug` (not kept across [`Node::restart`]).
    pub fn start_with_log_filter(
        functions: &[(&str, &str)],
        args: &[&str],
        rust_log: &str,
    ) -> Node {
        let dir = prepare(functions);
        let mut cmd = Self::command(&dir, &strings(args), None);
        cmd.env("RUST_LOG", rust_log);
        Self::spawn_command(dir, strings(args), cmd)
    }

    /// Starts `outpost serve` on the folders in `dir`.
    pub fn spawn(
        dir: Arc<tempfile::TempDir>,
        extra_args: Vec<String>,
        address_limit: Option<u64>,
    ) -> Node {
        let cmd = Self::command(&dir, &extra_args, address_limit);
        Self::spawn_command(dir, extra_args, cmd)
    }

    /// Runs `cmd` (from [`Node::command`] on `dir` and `extra_args`) and
    /// waits until it listens.
    fn spawn_command(dir: Arc<tempfile::TempDir>, extra_args: Vec<String>, cmd: Command) -> Node {
        let process = Process::spawn(cmd, "outpost");
        let addr = process.wait_addr(r#"(?:: |")listening on http://(\S+?)"?(?:\s|,|$)"#);
        let admin = process.wait_addr(r#"admin listening on http://(\S+?)"?(?:\s|,|$)"#);
        Node {
            process,
            addr,
            admin,
            dir,
            agent: http_agent(),
            extra_args,
        }
    }

    /// The `outpost serve` command line for the folders in `dir`.
    pub fn command(
        dir: &tempfile::TempDir,
        extra_args: &[String],
        address_limit: Option<u64>,
    ) -> Command {
        let mut cmd = Command::new(outpost_bin());
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--modules")
            .arg(dir.path().join("modules"))
            .arg("--data")
            .arg(dir.path().join("data"))
            .args(extra_args)
            .current_dir(dir.path());
        if !extra_args.iter().any(|a| a == "--admin-listen") {
            // Many nodes run at once: never the fixed default port.
            cmd.arg("--admin-listen").arg("127.0.0.1:0");
        }
        cmd.env("RUST_LOG", "info,outpost=debug");
        if let Some(bytes) = address_limit {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; nothing else runs
            // between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let limit = libc::rlimit {
                        rlim_cur: bytes,
                        rlim_max: bytes,
                    };
                    if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        cmd
    }

    /// Stops this process (SIGKILL) and starts a new one on the same folders.
    pub fn restart(mut self) -> Node {
        self.kill();
        let dir = self.dir.clone();
        let args = std::mem::take(&mut self.extra_args);
        drop(self);
        Self::spawn(dir, args, None)
    }

    /// Writes `modules/NAME.toml`.
    pub fn write_settings(&self, name: &str, toml: &str) {
        write_settings(&self.dir, name, toml);
    }

    pub fn modules_dir(&self) -> PathBuf {
        self.dir.path().join("modules")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn module_path(&self, name: &str) -> PathBuf {
        self.modules_dir().join(format!("{name}.wasm"))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends a request; any status is a `Reply`, only transport errors panic.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        send(&self.agent, method, &self.url(path), headers, body)
    }

    pub fn get(&self, path: &str) -> Reply {
        self.request("GET", path, &[], b"")
    }

    /// GET on the admin listener.
    pub fn admin_get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let url = format!("http://{}{}", self.admin, path);
        send(&self.agent, "GET", &url, headers, b"")
    }

    /// A request of any method to the admin listener.
    pub fn admin_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        let url = format!("http://{}{}", self.admin, path);
        send(&self.agent, method, &url, headers, body)
    }

    /// Waits until GET `path` answers `status` with `body`.
    pub fn wait_for(&self, path: &str, status: u16, body: &str) {
        eventually(&format!("GET {path} -> {status} {body:?}"), || {
            let reply = self.get(path);
            (reply.status == status && reply.body == body).then_some(())
        });
    }
}

/// Where a test cloud keeps its state.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    /// The embedded sled database in its data dir.
    Sled,
    /// A fresh database in the run's private PostgreSQL cluster.
    Postgres,
}

/// Runs each named `fn(Backend)` test once per backend, as
/// `NAME::sled` and `NAME::postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn sled() {
                    super::$name($crate::harness::Backend::Sled)
                }
                #[test]
                fn postgres() {
                    super::$name($crate::harness::Backend::Postgres)
                }
            }
        )*
    };
}

/// The development-mode shared token test clouds use (see [`Cloud::start`]).
pub const TOKEN: &str = "test-token";

/// A running `outpost cloud` with its own data folder.
pub struct Cloud {
    process: Process,
    pub addr: SocketAddr,
    pub dir: Arc<tempfile::TempDir>,
    agent: ureq::Agent,
    /// Development mode (the shared [`TOKEN`]); otherwise per-node
    /// credentials only, and this harness uses the admin token.
    dev: bool,
    /// The extra flags it was started with (`--database URL`, ...), given
    /// again by [`Cloud::restart`].
    extra: Vec<String>,
}

impl std::ops::Deref for Cloud {
    type Target = Process;
    fn deref(&self) -> &Process {
        &self.process
    }
}

impl std::ops::DerefMut for Cloud {
    fn deref_mut(&mut self) -> &mut Process {
        &mut self.process
    }
}

impl Cloud {
    /// Starts a cloud on a fresh port.
    pub fn start() -> Cloud {
        Self::start_at(free_port())
    }

    /// Starts a cloud on `port` (reserved earlier with [`free_port`]).
    pub fn start_at(port: u16) -> Cloud {
        Self::spawn(
            port,
            Arc::new(tempfile::tempdir().expect("tempdir")),
            true,
            &[],
        )
    }

    /// Starts a cloud without development mode: edges need credentials
    /// from [`Cloud::enrol`].
    pub fn start_secure(extra: &[&str]) -> Cloud {
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        Self::spawn(free_port(), dir, false, extra)
    }

    /// Starts a cloud (development mode) on a fresh port with its data in
    /// `dir`, which the test prepared (a small tmpfs, say), and `extra` flags.
    pub fn start_in(dir: Arc<tempfile::TempDir>, extra: &[&str]) -> Cloud {
        Self::spawn(free_port(), dir, true, extra)
    }

    /// The `outpost cloud` command on `port` and `dir`.
    pub fn command(port: u16, dir: &Path, dev: bool) -> Command {
        let mut cmd = Command::new(outpost_bin());
        cmd.arg("cloud")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data")
            .arg(dir)
            .env("RUST_LOG", "info,outpost=debug");
        if dev {
            cmd.arg("--dev-token").arg(TOKEN);
        }
        cmd
    }

    /// Starts a cloud on `backend` (a fresh database), in development mode
    /// if `dev`, with `extra` flags.
    pub fn start_on(backend: Backend, dev: bool, extra: &[&str]) -> Cloud {
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        let mut args: Vec<String> = Vec::new();
        if let Backend::Postgres = backend {
            args.push("--database".into());
            args.push(outpost_pg_cluster::fresh_database("e2e"));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Self::spawn(free_port(), dir, dev, &args)
    }

    /// Starts a replica (development mode, its own fresh data dir) over the
    /// PostgreSQL database at `url`, with `extra` flags.
    pub fn start_pg(url: &str, extra: &[&str]) -> Cloud {
        Self::start_pg_at(free_port(), url, extra)
    }

    /// A replica over `url` without development mode: edges need
    /// credentials, and the first replica on a database writes the admin
    /// token it made to its `DATA/admin-token`.
    pub fn start_pg_secure(url: &str, extra: &[&str]) -> Cloud {
        let mut args = vec!["--database", url];
        args.extend(extra);
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        Self::spawn(free_port(), dir, false, &args)
    }

    /// [`Cloud::start_pg`] on `port` (reserved earlier with [`free_port`]).
    pub fn start_pg_at(port: u16, url: &str, extra: &[&str]) -> Cloud {
        let mut args = vec!["--database", url];
        args.extend(extra);
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        Self::spawn(port, dir, true, &args)
    }

    fn spawn(port: u16, dir: Arc<tempfile::TempDir>, dev: bool, extra: &[&str]) -> Cloud {
        let mut cmd = Self::command(port, dir.path(), dev);
        cmd.args(extra);
        let process = Process::spawn(cmd, "cloud");
        let addr = process.wait_addr(r"cloud listening on https?://(\S+)");
        Cloud {
            process,
            addr,
            dir,
            agent: http_agent(),
            dev,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// SIGKILL, then a new process on the same port, data and flags.
    pub fn restart(mut self) -> Cloud {
        self.kill();
        let (port, dir, dev) = (self.addr.port(), self.dir.clone(), self.dev);
        let extra = std::mem::take(&mut self.extra);
        drop(self);
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        Self::spawn(port, dir, dev, &extra)
    }

    /// SIGKILL; the data stays for [`Cloud::resume`].
    pub fn stop(mut self) -> (u16, Arc<tempfile::TempDir>) {
        self.kill();
        (self.addr.port(), self.dir.clone())
    }

    /// Sends SIGTERM (a graceful stop).
    pub fn terminate(&self) {
        self.process.terminate();
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        self.process.wait_exit()
    }

    /// Starts again (in development mode) on the port and data of a
    /// stopped cloud.
    pub fn resume((port, dir): (u16, Arc<tempfile::TempDir>)) -> Cloud {
        Self::spawn(port, dir, true, &[])
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The operator's token, from `DATA/admin-token`.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("admin-token"))
            .expect("the cloud writes DATA/admin-token")
            .trim()
            .to_owned()
    }

    /// The token this harness calls with: [`TOKEN`] in development mode,
    /// else the admin token.
    pub fn token(&self) -> String {
        if self.dev {
            TOKEN.to_owned()
        } else {
            self.admin_token()
        }
    }

    /// Runs `outpost cloud ARGS --cloud URL --data DIR` and returns its
    /// stdout (a new token, or JSON); panics if it fails.
    pub fn manage(&self, args: &[&str]) -> String {
        let output = Command::new(outpost_bin())
            .arg("cloud")
            .args(args)
            .arg("--cloud")
            .arg(self.url())
            .arg("--data")
            .arg(self.dir.path())
            .output()
            .expect("run outpost cloud");
        assert!(
            output.status.success(),
            "outpost cloud {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    /// Enrols node `node` (stores: `--stores`, empty for the default) and
    /// returns its token.
    pub fn enrol(&self, node: &str, stores: &[&str]) -> String {
        let joined = stores.join(",");
        let mut args = vec!["enrol", node];
        if !stores.is_empty() {
            args.extend(["--stores", &joined]);
        }
        self.manage(&args)
    }

    /// A request with `token` as the bearer.
    pub fn request_as(&self, token: &str, method: &str, path: &str, body: &[u8]) -> Reply {
        let auth = format!("Bearer {token}");
        send(
            &self.agent,
            method,
            &format!("{}{path}", self.url()),
            &[("authorization", &auth)],
            body,
        )
    }

    /// POST with the harness's token.
    pub fn post(&self, path: &str, body: &str) -> Reply {
        self.request_as(&self.token(), "POST", path, body.as_bytes())
    }

    /// GET with the harness's token.
    pub fn get(&self, path: &str) -> Reply {
        self.request_as(&self.token(), "GET", path, b"")
    }

    /// Every event of `topic`, following pages.
    pub fn events(&self, topic: &str) -> Vec<serde_json::Value> {
        let mut all = Vec::new();
        let mut since = 0;
        loop {
            let page = self
                .get(&format!("/v1/events/{topic}?since={since}&limit=1000"))
                .json();
            let items = page["items"].as_array().unwrap().clone();
            if items.is_empty() {
                return all;
            }
            since = page["next"].as_u64().unwrap();
            all.extend(items);
        }
    }

    /// The cloud's value of a key as text (`None`: absent or deleted).
    pub fn value(&self, store: &str, key: &str) -> Option<String> {
        let reply = self.get(&format!(
            "/v1/kv?store={}&key={}",
            encode(store),
            encode(key)
        ));
        if reply.status == 404 {
            return None;
        }
        let value = reply.json()["value"].as_str().map(str::to_owned)?;
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value)
            .unwrap();
        Some(String::from_utf8(bytes).unwrap())
    }

    pub fn conflicts(&self) -> Vec<serde_json::Value> {
        self.get("/v1/conflicts?limit=1000").json()["items"]
            .as_array()
            .unwrap()
            .clone()
    }
}

/// Percent-encodes a query value.
pub fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Writes `bytes` to `path` atomically (temp file in the same folder, then
/// rename), the way deploy tools should.
pub fn deploy_atomic(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("wasm.partial");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// An edge serving `kvtest` as `kv` (its own store replicated) that ships
/// to `cloud_url` as `node_id` with `token`.
pub fn replicating_edge(node_id: &str, cloud_url: &str, token: &str, extra: &[&str]) -> Node {
    let dir = prepare(&[("kv", "kvtest")]);
    write_settings(&dir, "kv", "[kv]\nreplicated = [\"default\"]\n");
    edge_on(dir, node_id, cloud_url, token, extra)
}

/// `outpost serve` on the folders in `dir`, shipping to `cloud_url` as
/// `node_id` with `token`.
pub fn edge_on(
    dir: Arc<tempfile::TempDir>,
    node_id: &str,
    cloud_url: &str,
    token: &str,
    extra: &[&str],
) -> Node {
    let mut args = strings(&[
        "--cloud",
        cloud_url,
        "--cloud-token",
        token,
        "--node-id",
        node_id,
    ]);
    args.extend(strings(extra));
    Node::spawn(dir, args, None)
}

/// A TCP proxy in front of a server: a link the test can cut (every
/// connection closed, new ones dropped at once, as a partition looks to
/// both ends) and heal again.
pub struct Proxy {
    addr: SocketAddr,
    cut: Arc<std::sync::atomic::AtomicBool>,
    /// Both ends of every connection it carries, to close them on a cut.
    streams: Arc<Mutex<Vec<std::net::TcpStream>>>,
    /// Connections carried: proof a client used this link.
    carried: Arc<std::sync::atomic::AtomicUsize>,
    /// While set, bytes from clients are read but not passed on (a link
    /// that stalls): they go through once it clears.
    held: Arc<std::sync::atomic::AtomicBool>,
    /// The same for bytes from the server (answers that stall).
    held_answers: Arc<std::sync::atomic::AtomicBool>,
    /// Bytes read while held, either way.
    held_bytes: Arc<std::sync::atomic::AtomicUsize>,
}

impl Proxy {
    /// A proxy on a fresh port of 127.0.0.1 to `target`, running until the
    /// test process ends.
    pub fn start(target: SocketAddr) -> Proxy {
        use std::net::{Shutdown, TcpListener, TcpStream};
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().unwrap();
        let proxy = Proxy {
            addr,
            cut: Arc::default(),
            streams: Arc::default(),
            carried: Arc::default(),
            held: Arc::default(),
            held_answers: Arc::default(),
            held_bytes: Arc::default(),
        };
        let (cut, streams, carried, held_bytes) = (
            proxy.cut.clone(),
            proxy.streams.clone(),
            proxy.carried.clone(),
            proxy.held_bytes.clone(),
        );
        let (held_requests, held_answers) = (proxy.held.clone(), proxy.held_answers.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if cut.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                carried.fetch_add(1, Ordering::SeqCst);
                let mut all = streams.lock().unwrap();
                all.push(client.try_clone().unwrap());
                all.push(server.try_clone().unwrap());
                drop(all);
                for (mut from, mut to, held) in [
                    (
                        client.try_clone().unwrap(),
                        server.try_clone().unwrap(),
                        held_requests.clone(),
                    ),
                    (server, client, held_answers.clone()),
                ] {
                    let held_bytes = held_bytes.clone();
                    std::thread::spawn(move || {
                        use std::io::{Read as _, Write as _};
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if held.load(Ordering::SeqCst) {
                                held_bytes.fetch_add(n, Ordering::SeqCst);
                                while held.load(Ordering::SeqCst) {
                                    std::thread::sleep(std::time::Duration::from_millis(5));
                                }
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Write);
                    });
                }
            }
        });
        proxy
    }

    /// `http://` and the proxy's address.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections carried so far.
    pub fn carried(&self) -> usize {
        self.carried.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Closes every connection and drops new ones: requests in flight fail.
    pub fn cut(&mut self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for stream in self.streams.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Carries new connections again.
    pub fn heal(&mut self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Stalls the link: what clients send from now on waits in the proxy
    /// (connections stay open) until [`Proxy::release`].
    pub fn hold(&self) {
        self.held_bytes
            .store(0, std::sync::atomic::Ordering::SeqCst);
        self.held.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Stalls the answers: what the server sends from now on waits in the
    /// proxy until [`Proxy::release`] (the request got through).
    pub fn hold_answers(&self) {
        self.held_bytes
            .store(0, std::sync::atomic::Ordering::SeqCst);
        self.held_answers
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Bytes held since [`Proxy::hold`] or [`Proxy::hold_answers`].
    pub fn held_bytes(&self) -> usize {
        self.held_bytes.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Passes on what was held, and everything after it.
    pub fn release(&self) {
        self.held.store(false, std::sync::atomic::Ordering::SeqCst);
        self.held_answers
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `outpost lab` with its own modules folder: a cloud and edges behind
/// the lab's links, driven through the lab's API and CLI.
pub struct Lab {
    pub process: Process,
    /// The lab's API and dashboard, `http://ADDR`.
    pub api: String,
    /// Each edge's public URL, edge-1 first.
    pub edges: Vec<String>,
    _dir: Arc<tempfile::TempDir>,
}

impl Lab {
    /// Starts a lab of `edges` edges serving `dir`'s modules folder, its
    /// API on a fresh loopback port.
    pub fn start(dir: Arc<tempfile::TempDir>, edges: usize) -> Lab {
        let mut cmd = Command::new(outpost_bin());
        cmd.arg("lab")
            .arg("--edges")
            .arg(edges.to_string())
            .arg("--modules")
            .arg(dir.path().join("modules"))
            .arg("--dir")
            .arg(dir.path().join("lab"))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env("RUST_LOG", "info,outpost=debug");
        let process = Process::spawn(cmd, "lab");
        let api = process.wait_addr(r"dashboard\s+http://(\S+?)/");
        let edges = (1..=edges)
            .map(|i| {
                let addr = process.wait_addr(&format!(r"^\s+edge-{i}\s+http://(\S+)"));
                format!("http://{addr}")
            })
            .collect();
        Lab {
            process,
            api: format!("http://{api}"),
            edges,
            _dir: dir,
        }
    }

    /// The lab's answer to `method path` with a JSON `body`.
    pub fn call(&self, method: &str, path: &str, body: &str) -> Reply {
        send(
            &http_agent(),
            method,
            &format!("{}{path}", self.api),
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
    }

    /// `GET path` on the lab's API, as JSON.
    pub fn get(&self, path: &str) -> serde_json::Value {
        let reply = self.call("GET", path, "");
        assert_eq!(reply.status, 200, "GET {path}: {}", reply.body);
        reply.json()
    }

    /// Runs `outpost lab ARGS --lab ADDR` (the CLI against this lab).
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(outpost_bin())
            .arg("lab")
            .args(args)
            .arg("--lab")
            .arg(&self.api)
            .output()
            .expect("run outpost lab")
    }

    /// `edge-N`'s entry in the lab's status (1-based).
    pub fn edge_status(&self, n: usize) -> serde_json::Value {
        self.get("/api/status")["edges"][n - 1].clone()
    }
}
