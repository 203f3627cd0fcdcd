//! A private PostgreSQL cluster for tests: `initdb` and `pg_ctl` from the
//! installed server binaries, in a temp dir, on a free port of 127.0.0.1,
//! run by an unprivileged user (the `postgres` user when the tests run as
//! root, since PostgreSQL refuses to run as root).
//!
//! Nothing has to be running before the tests start, and nothing outlives
//! them: dropping a [`PgCluster`] stops its server and removes its
//! directory, and a watchdog process does the same when the test process
//! ends without dropping it (killed, or a cluster in a static, which is
//! never dropped).
//!
//! One cluster per test process is [`shared`]; [`fresh_database`] gives
//! each test its own database in it, so the tests of one binary run in
//! parallel. A test that stops or restarts the server starts its own
//! [`PgCluster`] instead.

use std::ffi::{CString, OsString};
use std::fmt;
use std::io::Write as _;
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The superuser `initdb` creates; every URL names it, and `-A trust` lets
/// it in without a password.
pub const USER: &str = "outpost";

/// Env var naming the directory that holds `initdb` and `pg_ctl`, to use
/// other binaries than the installed ones.
pub const BIN_ENV: &str = "OUTPOST_PG_BIN";

/// Where Debian's `postgresql-NN` packages put their binaries
/// (`/usr/lib/postgresql/NN/bin`).
const DEBIAN_LIB: &str = "/usr/lib/postgresql";

/// Fresh ports to try: the one picked can be taken by someone else between
/// our probe and the server's bind.
const PORT_ATTEMPTS: usize = 5;

/// Seconds `pg_ctl` waits for a start or stop; crash recovery after an
/// immediate stop on a loaded machine can take a while.
const PG_CTL_TIMEOUT: &str = "60";

/// Lines of the server log an error carries.
const LOG_TAIL_LINES: usize = 40;

/// Run by the watchdog (`sh -c`, `$1` = the cluster's dir, the rest = the
/// stop command). Its stdin is a pipe whose write end only the test
/// process holds (close-on-exec, so no other child inherits it): `read`
/// sees EOF exactly when the cluster is dropped or the process dies, however
/// it dies. That is exact where polling `kill -0 PID` is not (a zombie
/// answers, a pid is reused) and costs no wake-ups meanwhile. When Drop has
/// already cleaned up, the data dir is gone and this exits at once.
const WATCHDOG: &str = r#"
trap '' HUP INT
dir=$1
shift
while read -r _; do :; done
if [ -d "$dir/data" ]; then
    cd "$dir" && "$@"
    cd /
fi
rm -rf "$dir"
"#;

/// Settings of a cluster that tests may want to change.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// `fsync`, on by default like production. Off is faster; a killed
    /// server *process* loses nothing it acknowledged either way (the
    /// kernel still holds the pages), only a machine crash would.
    pub fsync: bool,
    /// `max_connections`: 200 by default, room for several replicas' pools
    /// at once (PostgreSQL's default is 100).
    pub max_connections: u32,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            fsync: true,
            max_connections: 200,
        }
    }
}

/// What went wrong starting or driving a cluster: one message, carrying the
/// command's output or the server log's tail where there is one.
pub struct Error(String);

impl Error {
    fn new(message: impl Into<String>) -> Self {
        Error(message.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// The message as it is, so that `.expect()` shows the log tail as lines
// instead of one escaped string.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// A private PostgreSQL cluster: its server runs from [`PgCluster::start`]
/// until [`PgCluster::stop_immediate`] or drop; drop also removes its
/// directory.
#[derive(Debug)]
pub struct PgCluster {
    /// Holds `initdb`, `pg_ctl`, `createdb` and `psql`.
    bin: PathBuf,
    /// The temp dir: `data/`, `sock/` and `postgres.log`, owned by the user
    /// the server runs as.
    dir: PathBuf,
    /// The server's major version (15), for settings older servers lack.
    major: u32,
    /// TCP port on 127.0.0.1; kept across a restart so URLs handed out
    /// stay valid.
    port: u16,
    /// (uid, gid) the server commands run as when this process is root;
    /// `None` runs them as this process's user.
    run_as: Option<(u32, u32)>,
    /// Removes the cluster if this process dies without dropping it (see
    /// [`WATCHDOG`]); `None` only while `start_with` sets up.
    watchdog: Option<Child>,
    /// Numbers the databases of [`PgCluster::fresh_database`].
    next_db: AtomicU64,
}

impl PgCluster {
    /// Starts a cluster with the default [`PgOptions`].
    pub fn start() -> Result<PgCluster, Error> {
        PgCluster::start_with(&PgOptions::default())
    }

    /// Starts a cluster: `initdb` into a new temp dir, then the server on a
    /// free port of 127.0.0.1, its unix socket in the temp dir.
    pub fn start_with(options: &PgOptions) -> Result<PgCluster, Error> {
        PgCluster::start_picking(options, &mut free_port)
    }

    /// [`PgCluster::start_with`], taking ports from `pick_port` (tests hand
    /// it a taken one).
    fn start_picking(
        options: &PgOptions,
        pick_port: &mut dyn FnMut() -> Result<u16, Error>,
    ) -> Result<PgCluster, Error> {
        let bin = find_bin_dir(std::env::var_os(BIN_ENV), Path::new(DEBIAN_LIB), true)?;
        let major = server_major(&bin)?;
        let run_as = server_user()?;
        let dir = tempfile::Builder::new()
            .prefix("outpost-pg-")
            .tempdir()
            .map_err(|e| Error::new(format!("cannot create a temp dir for PostgreSQL: {e}")))?
            // Removed by Drop and the watchdog, after the server has stopped.
            .keep();
        let mut cluster = PgCluster {
            bin,
            dir,
            major,
            port: 0,
            run_as,
            watchdog: None,
            next_db: AtomicU64::new(0),
        };
        // From here on an error drops `cluster`, which cleans up.
        cluster.own(&cluster.dir)?;
        cluster.watchdog = Some(cluster.spawn_watchdog()?);
        cluster.initdb()?;
        let sock = cluster.dir.join("sock");
        std::fs::create_dir(&sock)
            .map_err(|e| Error::new(format!("cannot create {sock:?}: {e}")))?;
        cluster.own(&sock)?;
        cluster.include_settings()?;
        cluster.start_on_a_free_port(options, pick_port)?;
        Ok(cluster)
    }

    /// The URL of database `db`: `postgres://outpost@127.0.0.1:PORT/db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{db}", self.port)
    }

    /// The server's TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's temp dir (data dir, socket dir, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// The directory of the server binaries in use (for `psql`, `pg_dump`).
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// The postmaster's pid while the server runs (from `postmaster.pid`).
    pub fn postmaster_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Creates database `name` (letters, digits and `_`; it is used in URLs
    /// unquoted) with the cluster's `createdb`.
    pub fn create_database(&self, name: &str) -> Result<(), Error> {
        check_name(name)?;
        run(
            self.client("createdb").arg(name),
            &format!("createdb {name}"),
        )
        .map(drop)
    }

    /// Creates a database no other caller of this cluster gets, named
    /// `PREFIX_N`, and returns its URL.
    pub fn fresh_database(&self, prefix: &str) -> Result<String, Error> {
        let n = self.next_db.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}_{n}");
        self.create_database(&name)?;
        Ok(self.url(&name))
    }

    /// Runs `sql` in database `db` with the cluster's `psql` and returns
    /// what it printed: unaligned, tuples only, trimmed (`SELECT 1` gives
    /// `"1"`). Fails on the first SQL error.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, Error> {
        let out = run(
            self.client("psql")
                .args([
                    "-X",
                    "-q",
                    "-A",
                    "-t",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-d",
                    db,
                    "-c",
                ])
                .arg(sql),
            &format!("psql -d {db} -c {sql:?}"),
        )?;
        Ok(out.trim().to_string())
    }

    /// Serves TLS with the PEM certificate chain `cert` and key `key`
    /// (written into the data dir, readable by the server only), on the
    /// running server: clients may then use `sslmode=require`.
    pub fn enable_tls(&self, cert: &str, key: &str) -> Result<(), Error> {
        use std::os::unix::fs::PermissionsExt as _;
        let data = self.data_dir();
        for (name, text) in [("server.crt", cert), ("server.key", key)] {
            let path = data.join(name);
            std::fs::write(&path, text)
                .map_err(|e| Error::new(format!("cannot write {path:?}: {e}")))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| Error::new(format!("cannot chmod {path:?}: {e}")))?;
            self.own(&path)?;
        }
        let settings = data.join("outpost.conf");
        let mut text = std::fs::read_to_string(&settings)
            .map_err(|e| Error::new(format!("cannot read {settings:?}: {e}")))?;
        text.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(&settings, text)
            .map_err(|e| Error::new(format!("cannot write {settings:?}: {e}")))?;
        self.psql("postgres", "SELECT pg_reload_conf()")?;
        // The reload is asynchronous: wait until new sessions see it.
        for _ in 0..100 {
            if self.psql("postgres", "SHOW ssl")? == "on" {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Err(Error::new(format!(
            "the server did not turn TLS on; see {:?}",
            self.log_path()
        )))
    }

    /// Stops the server the way a crash would (`pg_ctl stop -m immediate`):
    /// no checkpoint, so the next start runs crash recovery.
    pub fn stop_immediate(&self) -> Result<(), Error> {
        let data = self.data_dir();
        run(
            self.server("pg_ctl")
                .args([
                    "stop",
                    "-w",
                    "-s",
                    "-t",
                    PG_CTL_TIMEOUT,
                    "-m",
                    "immediate",
                    "-D",
                ])
                .arg(&data),
            "pg_ctl stop -m immediate",
        )
        .map(drop)
    }

    /// Starts the server again after [`PgCluster::stop_immediate`], on the
    /// same port and data; returns once it accepts connections.
    pub fn start_again(&self) -> Result<(), Error> {
        self.pg_ctl_start().map_err(|(e, taken)| {
            if taken {
                Error::new(format!(
                    "port {} was taken while the server was stopped\n{e}",
                    self.port
                ))
            } else {
                e
            }
        })
    }

    /// Whether the server is running (`pg_ctl status`).
    pub fn is_running(&self) -> bool {
        self.server("pg_ctl")
            .arg("status")
            .arg("-D")
            .arg(self.data_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A server command (`initdb`, `pg_ctl`): run as the unprivileged user,
    /// in the cluster's dir because that user may not be able to enter this
    /// process's working dir.
    fn server(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        clean_env(&mut cmd)
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            // std drops the supplementary groups too when it leaves root.
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    /// A client command (`createdb`, `psql`) against this cluster over TCP,
    /// as this process's user: clients, unlike the server, run as root.
    fn client(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        clean_env(&mut cmd)
            .stdin(Stdio::null())
            .args(["-w", "-h", "127.0.0.1", "-U", USER, "-p"])
            .arg(self.port.to_string());
        cmd
    }

    /// Gives `path` to the user the server runs as.
    fn own(&self, path: &Path) -> Result<(), Error> {
        match self.run_as {
            Some((uid, gid)) => std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(|e| Error::new(format!("cannot chown {path:?} to {uid}:{gid}: {e}"))),
            None => Ok(()),
        }
    }

    fn spawn_watchdog(&self) -> Result<Child, Error> {
        let pg_ctl = self.bin.join("pg_ctl");
        let mut stop: Vec<OsString> = Vec::new();
        if let Some((uid, gid)) = self.run_as {
            // The watchdog stays root to remove a dir whose parent may not
            // be writable by the server's user; only pg_ctl drops to it
            // (pg_ctl refuses to run as root).
            stop.extend(
                [
                    "setpriv".to_string(),
                    format!("--reuid={uid}"),
                    format!("--regid={gid}"),
                    "--clear-groups".to_string(),
                    "--".to_string(),
                ]
                .map(OsString::from),
            );
        }
        stop.push(pg_ctl.into_os_string());
        stop.extend(
            [
                "stop",
                "-w",
                "-s",
                "-t",
                PG_CTL_TIMEOUT,
                "-m",
                "immediate",
                "-D",
            ]
            .map(OsString::from),
        );
        stop.push(self.data_dir().into_os_string());
        let mut cmd = Command::new("/bin/sh");
        clean_env(&mut cmd)
            .arg("-c")
            .arg(WATCHDOG)
            .arg("outpost-pg-watchdog")
            .arg(&self.dir)
            .args(stop)
            .current_dir("/")
            .stdin(Stdio::piped())
            // Inherited stdout/stderr would keep whoever reads the test's
            // output waiting for the watchdog.
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Out of the test's process group: a Ctrl-C to the tests must
            // not take the watchdog with them.
            .process_group(0);
        cmd.spawn().map_err(|e| {
            Error::new(format!(
                "cannot start the cluster's watchdog (/bin/sh): {e}"
            ))
        })
    }

    fn initdb(&self) -> Result<(), Error> {
        let data = self.data_dir();
        run(
            self.server("initdb").arg("-D").arg(&data).args([
                "-U",
                USER,
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ]),
            "initdb",
        )
        .map(drop)
        .map_err(|e| match self.run_as {
            Some(_) => Error::new(format!(
                "{e}\n(running as root, the server runs as the `postgres` user, which must be \
                 able to enter {:?}; point TMPDIR at a directory it can reach, such as /tmp)",
                self.dir
            )),
            None => e,
        })
    }

    /// Makes `postgresql.conf` read `outpost.conf`, the settings this crate
    /// writes (rewritten for each port tried).
    fn include_settings(&self) -> Result<(), Error> {
        let conf = self.data_dir().join("postgresql.conf");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .and_then(|mut f| {
                f.write_all(b"\n# Added by outpost-pg-cluster.\ninclude 'outpost.conf'\n")
            })
            .map_err(|e| Error::new(format!("cannot append to {conf:?}: {e}")))
    }

    fn write_settings(&self, options: &PgOptions) -> Result<(), Error> {
        let path = self.data_dir().join("outpost.conf");
        let sock = self.dir.join("sock");
        let mut text = format!(
            "# A private cluster for tests (outpost-pg-cluster).\n\
             listen_addresses = '127.0.0.1'\n\
             port = {}\n\
             unix_socket_directories = {}\n\
             max_connections = {}\n\
             fsync = {}\n",
            self.port,
            conf_string(&sock.to_string_lossy()),
            options.max_connections,
            if options.fsync { "on" } else { "off" },
        );
        if self.major >= 14 {
            // Crash recovery first fsyncs every file of the data dir, one
            // by one: seconds per restart after `stop_immediate` (over 10 s
            // on a loaded 2-core machine); one syncfs does the same job.
            text.push_str("recovery_init_sync_method = syncfs\n");
        }
        std::fs::write(&path, text)
            .map_err(|e| Error::new(format!("cannot write {path:?}: {e}")))?;
        self.own(&path)
    }

    fn start_on_a_free_port(
        &mut self,
        options: &PgOptions,
        pick_port: &mut dyn FnMut() -> Result<u16, Error>,
    ) -> Result<(), Error> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.port = pick_port()?;
            self.write_settings(options)?;
            match self.pg_ctl_start() {
                Ok(()) => return Ok(()),
                Err((_, true)) if attempt < PORT_ATTEMPTS => continue,
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// `pg_ctl start -w`; on failure, the error and whether it was because
    /// the port was taken.
    fn pg_ctl_start(&self) -> Result<(), (Error, bool)> {
        let log = self.log_path();
        // Only what this start logged goes into its error.
        let logged_before = std::fs::metadata(&log).map_or(0, |m| m.len());
        let data = self.data_dir();
        let result = run(
            self.server("pg_ctl")
                .args(["start", "-w", "-s", "-t", PG_CTL_TIMEOUT, "-D"])
                .arg(&data)
                .arg("-l")
                .arg(&log),
            "pg_ctl start",
        );
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                let logged = std::fs::read(&log).unwrap_or_default();
                let logged = String::from_utf8_lossy(
                    logged.get(logged_before as usize..).unwrap_or_default(),
                );
                let taken = logged.contains("Address already in use");
                let lines: Vec<&str> = logged.lines().collect();
                let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
                Err((
                    Error::new(format!(
                        "{e}\n--- server log ({}), last lines ---\n{tail}",
                        log.display()
                    )),
                    taken,
                ))
            }
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // A pid file means a server may be up; without one, skip a pg_ctl.
        if self.data_dir().join("postmaster.pid").exists() {
            let _ = self.stop_immediate();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(mut watchdog) = self.watchdog.take() {
            // EOF on its stdin: it finds the dir gone and exits.
            drop(watchdog.stdin.take());
            let _ = watchdog.wait();
        }
    }
}

/// The cluster of this test process, started on first use and removed by
/// its watchdog when the process exits (statics are never dropped).
///
/// Panics if it cannot start (every caller gets the same error).
pub fn shared() -> &'static PgCluster {
    static SHARED: OnceLock<Result<PgCluster, Error>> = OnceLock::new();
    match SHARED.get_or_init(PgCluster::start) {
        Ok(cluster) => cluster,
        Err(e) => panic!("cannot start the shared PostgreSQL cluster: {e}"),
    }
}

/// A new database in the [`shared`] cluster, named `PREFIX_N`; returns its
/// URL. Panics if the cluster cannot start or the database cannot be made.
pub fn fresh_database(prefix: &str) -> String {
    shared()
        .fresh_database(prefix)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Where `initdb` and `pg_ctl` are: `override_dir` (from [`BIN_ENV`]) if
/// given, else `pg_config --bindir` if `use_pg_config` and it holds them,
/// else the newest `LIB/NN/bin`.
fn find_bin_dir(
    override_dir: Option<OsString>,
    lib: &Path,
    use_pg_config: bool,
) -> Result<PathBuf, Error> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    let install = "install Debian's `postgresql` package (`apt-get install postgresql`; \
                   `cargo xtask test` installs it when missing)";
    if let Some(dir) = override_dir {
        let dir = PathBuf::from(dir);
        return if has_server(&dir) {
            Ok(dir)
        } else {
            Err(Error::new(format!(
                "{BIN_ENV}={} holds no initdb and pg_ctl; point it at PostgreSQL's bin \
                 directory, or unset it and {install}",
                dir.display()
            )))
        };
    }
    // Debian's pg_config (libpq-dev) may belong to a client-only install,
    // so its answer counts only if the server binaries are there.
    if use_pg_config
        && let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_server(&dir) {
            return Ok(dir);
        }
    }
    let newest = std::fs::read_dir(lib)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = version_key(&entry.file_name().to_string_lossy())?;
            let bin = entry.path().join("bin");
            has_server(&bin).then_some((version, bin))
        })
        .max();
    match newest {
        Some((_, bin)) => Ok(bin),
        None => Err(Error::new(format!(
            "PostgreSQL's server binaries (initdb, pg_ctl) were not found (not via {BIN_ENV}, \
             pg_config --bindir or {}/*/bin): {install}",
            lib.display()
        ))),
    }
}

/// The major version of the server in `bin`, from `pg_ctl --version`
/// (`pg_ctl (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)`).
fn server_major(bin: &Path) -> Result<u32, Error> {
    let out = run(
        Command::new(bin.join("pg_ctl")).arg("--version"),
        "pg_ctl --version",
    )?;
    out.split_once("(PostgreSQL) ")
        .and_then(|(_, v)| v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .ok_or_else(|| Error::new(format!("no version in `pg_ctl --version`: {out:?}")))
}

/// Orders Debian's version dirs: `9.6` < `15` < `17`.
fn version_key(name: &str) -> Option<(u32, u32)> {
    let (major, minor) = name.split_once('.').unwrap_or((name, "0"));
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The user the server commands run as: `None` (this process's) unless
/// this process is root, which PostgreSQL refuses; then `postgres`.
fn server_user() -> Result<Option<(u32, u32)>, Error> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    lookup_user("postgres").map(Some).ok_or_else(|| {
        Error::new(
            "running as root, which PostgreSQL refuses, and there is no `postgres` user to run \
             it as: install Debian's `postgresql` package (it creates that user)",
        )
    })
}

/// (uid, gid) of the user `name`, from the passwd database.
fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let name = CString::new(name).ok()?;
    // SAFETY: passwd is plain data; all-zero is a valid value to overwrite.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer points at a live local, buf.len() is its size,
    // and the strings written into buf are not used after this call.
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    (rc == 0 && !found.is_null()).then_some((pwd.pw_uid, pwd.pw_gid))
}

/// A port of 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16, Error> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::new(format!("cannot find a free port on 127.0.0.1: {e}")))
}

/// Drops the caller's `PG*` variables (PGHOST, PGPORT, PGDATA, ...), which
/// would point the tools at another server, and fixes the language so
/// errors read the same everywhere (the port check reads the log).
fn clean_env(cmd: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    cmd.env("LC_ALL", "C")
}

/// A database name that needs no quoting in a URL or SQL.
fn check_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::new(format!(
            "database name {name:?}: use 1-63 letters, digits and `_`, not starting with a digit"
        )))
    }
}

/// `s` as a string literal of postgresql.conf.
fn conf_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Runs `cmd`, returning its stdout, or an error with its stderr.
fn run(cmd: &mut Command, what: &str) -> Result<String, Error> {
    let out = cmd
        .output()
        .map_err(|e| Error::new(format!("cannot run {what} ({:?}): {e}", cmd.get_program())))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::new(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead as _;
    use std::time::{Duration, Instant};

    /// Set for the child process of `a_killed_process_leaves_nothing`.
    const CHILD_ENV: &str = "OUTPOST_PG_CLUSTER_TEST_CHILD";

    /// Whether process `pid` is gone. A zombie counts as gone: it runs
    /// nothing, and the container's pid 1 may never reap it.
    fn gone(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            // "PID (COMM) STATE ...": COMM may hold spaces and parens.
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        }
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn a_database_is_created_and_answers_psql() {
        let cluster = PgCluster::start().unwrap();
        assert!(cluster.is_running());
        cluster.create_database("things").unwrap();
        assert_eq!(cluster.psql("things", "SELECT 1").unwrap(), "1");
        assert_eq!(
            cluster.url("things"),
            format!("postgres://outpost@127.0.0.1:{}/things", cluster.port())
        );
        assert_eq!(cluster.psql("things", "SHOW fsync").unwrap(), "on");
        assert_eq!(
            cluster.psql("things", "SHOW max_connections").unwrap(),
            "200"
        );
        assert_eq!(
            cluster.psql("things", "SHOW server_encoding").unwrap(),
            "UTF8"
        );
        assert!(cluster.psql("things", "SELECT nonsense").is_err());
        assert!(cluster.create_database("no-dashes").is_err());
    }

    #[test]
    fn options_reach_the_server() {
        let cluster = PgCluster::start_with(&PgOptions {
            fsync: false,
            max_connections: 50,
        })
        .unwrap();
        assert_eq!(cluster.psql("postgres", "SHOW fsync").unwrap(), "off");
        assert_eq!(
            cluster.psql("postgres", "SHOW max_connections").unwrap(),
            "50"
        );
    }

    #[test]
    fn fresh_databases_of_the_shared_cluster_are_distinct() {
        let a = fresh_database("fresh");
        let b = fresh_database("fresh");
        assert_ne!(a, b);
        let port = shared().port();
        for url in [&a, &b] {
            let db = url
                .strip_prefix(&format!("postgres://outpost@127.0.0.1:{port}/"))
                .unwrap();
            assert_eq!(shared().psql(db, "SELECT current_database()").unwrap(), db);
        }
        assert!(std::ptr::eq(shared(), shared()));
    }

    #[test]
    fn an_immediate_stop_keeps_committed_rows_and_the_port() {
        let cluster = PgCluster::start().unwrap();
        cluster.create_database("crash").unwrap();
        cluster
            .psql("crash", "CREATE TABLE t (v int); INSERT INTO t VALUES (7)")
            .unwrap();
        let port = cluster.port();
        cluster.stop_immediate().unwrap();
        assert!(!cluster.is_running());
        assert!(cluster.psql("crash", "SELECT 1").is_err());
        cluster.start_again().unwrap();
        assert!(cluster.is_running());
        assert_eq!(cluster.port(), port);
        assert_eq!(cluster.psql("crash", "SELECT v FROM t").unwrap(), "7");
    }

    #[test]
    fn drop_stops_the_server_and_removes_the_dir() {
        let cluster = PgCluster::start().unwrap();
        let dir = cluster.dir().to_path_buf();
        let postmaster = cluster.postmaster_pid().unwrap();
        let watchdog = cluster.watchdog.as_ref().unwrap().id();
        assert!(!gone(postmaster) && !gone(watchdog));
        drop(cluster);
        assert!(!dir.exists(), "{dir:?} is still there");
        assert!(gone(postmaster), "the postmaster {postmaster} still runs");
        assert!(gone(watchdog), "the watchdog {watchdog} still runs");
    }

    #[test]
    fn a_killed_process_leaves_no_server_and_no_dir() {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "tests::child_holds_a_cluster_until_killed",
                "--ignored",
                "--nocapture",
            ])
            .env(CHILD_ENV, "1")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let line = stdout
            .lines()
            .map(Result::unwrap)
            .find(|l| l.starts_with("CLUSTER "))
            .expect("the child printed no cluster");
        let mut fields = line.split(' ').skip(1);
        let postmaster: u32 = fields.next().unwrap().parse().unwrap();
        let port: u16 = fields.next().unwrap().parse().unwrap();
        let dir = PathBuf::from(fields.next().unwrap());
        assert!(!gone(postmaster) && dir.exists());
        child.kill().unwrap();
        child.wait().unwrap();
        wait_until("the watchdog stopped the server", || gone(postmaster));
        wait_until("the watchdog removed the dir", || !dir.exists());
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    }

    /// Not a test by itself: `a_killed_process_leaves_no_server_and_no_dir`
    /// runs it in a child process, and kills it.
    #[test]
    #[ignore = "a_killed_process_leaves_no_server_and_no_dir runs it in a child process"]
    fn child_holds_a_cluster_until_killed() {
        if std::env::var_os(CHILD_ENV).is_none() {
            return;
        }
        let cluster = PgCluster::start().unwrap();
        println!(
            "CLUSTER {} {} {}",
            cluster.postmaster_pid().unwrap(),
            cluster.port(),
            cluster.dir().display()
        );
        std::io::stdout().flush().unwrap();
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }

    #[test]
    fn a_taken_port_is_given_up_for_another() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken_port = taken.local_addr().unwrap().port();
        let mut picks = 0;
        let cluster = PgCluster::start_picking(&PgOptions::default(), &mut || {
            picks += 1;
            if picks == 1 {
                Ok(taken_port)
            } else {
                free_port()
            }
        })
        .unwrap();
        assert_eq!(picks, 2);
        assert_ne!(cluster.port(), taken_port);
        assert_eq!(cluster.psql("postgres", "SELECT 1").unwrap(), "1");
        // The failed attempt's log is in the file, not in a later error.
        let log = std::fs::read_to_string(cluster.log_path()).unwrap();
        assert!(log.contains("Address already in use"), "{log}");
    }

    #[test]
    fn a_start_failure_carries_the_log_tail() {
        let cluster = PgCluster::start().unwrap();
        cluster.stop_immediate().unwrap();
        let settings = cluster.data_dir().join("outpost.conf");
        let mut text = std::fs::read_to_string(&settings).unwrap();
        text.push_str("shared_buffers = 'plenty'\n");
        std::fs::write(&settings, text).unwrap();
        let e = cluster.start_again().unwrap_err().to_string();
        assert!(
            e.contains("server log") && e.contains("shared_buffers"),
            "{e}"
        );
    }

    #[test]
    fn without_binaries_the_error_says_what_to_install() {
        let empty = tempfile::tempdir().unwrap();
        let e = find_bin_dir(None, empty.path(), false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`postgresql`") && e.contains("cargo xtask test"),
            "{e}"
        );
        let e = find_bin_dir(Some(empty.path().into()), empty.path(), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains(BIN_ENV) && e.contains("`postgresql`"), "{e}");
    }

    #[test]
    fn the_newest_debian_version_wins() {
        let lib = tempfile::tempdir().unwrap();
        for version in ["9.6", "15", "13", "not-a-version"] {
            let bin = lib.path().join(version).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            std::fs::write(bin.join("initdb"), "").unwrap();
            std::fs::write(bin.join("pg_ctl"), "").unwrap();
        }
        assert_eq!(
            find_bin_dir(None, lib.path(), false).unwrap(),
            lib.path().join("15").join("bin")
        );
    }
}
