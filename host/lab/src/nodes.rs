//! The lab's cloud and edges: the `outpost` binary itself run as child
//! processes (`outpost cloud`, `outpost serve`), each with its own data
//! dir and log file, found by the address each logs once it listens.
//!
//! Children die with the lab: they get SIGTERM when it stops and, should
//! the lab itself be killed, SIGKILL from the kernel (`PR_SET_PDEATHSIG`).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

/// How long a child may take to listen (a first start compiles every
/// module, which can take a while for a big guest in a debug build).
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// A child process of the lab and what it logged on start.
#[derive(Debug)]
pub struct Node {
    /// `cloud`, `edge-1`, ...
    pub name: String,
    /// Its public address.
    pub addr: SocketAddr,
    /// Its admin address (edges only).
    pub admin: Option<SocketAddr>,
    /// Where its stderr goes.
    pub log: PathBuf,
    process: Mutex<Option<Child>>,
}

/// Why a child did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The binary could not be run.
    #[error("cannot run {binary}: {source}")]
    Spawn {
        /// The binary.
        binary: String,
        /// Why not.
        source: std::io::Error,
    },
    /// It exited, or did not say where it listens in time.
    #[error("{name} did not start (see {log}): {why}")]
    NotListening {
        /// The child.
        name: String,
        /// Its log.
        log: String,
        /// The last thing it logged, or the timeout.
        why: String,
    },
}

impl Node {
    /// Stops the child (SIGTERM, then SIGKILL after `grace`).
    pub fn stop(&self, grace: Duration) {
        let Some(mut child) = self.process.lock().expect("child lock").take() else {
            return;
        };
        // SAFETY: kill(2) on our own child's pid; no memory is touched.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let until = std::time::Instant::now() + grace;
        while std::time::Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The child's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process
            .lock()
            .expect("child lock")
            .as_ref()
            .map(Child::id)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// Runs `binary ARGS` as `name`, logging to `log`, and waits until it
/// logs the address(es) it listens on: `cloud listening on` for a cloud,
/// `listening on` and `admin listening on` for an edge.
pub fn spawn(
    name: &str,
    binary: &Path,
    args: &[String],
    log: PathBuf,
    edge: bool,
) -> Result<Node, StartError> {
    let mut command = Command::new(binary);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Plain text the lab can read, whatever the user's own setting.
        .env("NO_COLOR", "1")
        .env_remove("OUTPOST_LOG_FORMAT");
    if std::env::var_os("RUST_LOG").is_none() {
        command.env("RUST_LOG", "info");
    }
    die_with_parent(&mut command);
    let mut child = command.spawn().map_err(|source| StartError::Spawn {
        binary: binary.display().to_string(),
        source,
    })?;
    let stderr = child.stderr.take().expect("piped stderr");
    let (found, addresses) = std::sync::mpsc::channel();
    let log_path = log.clone();
    let child_name = name.to_owned();
    // The reader copies every line to the log file for as long as the
    // child runs, and reports the addresses as they appear.
    std::thread::Builder::new()
        .name(format!("lab-log-{name}"))
        .spawn(move || copy_log(&child_name, stderr, &log_path, edge, found))
        .expect("spawn the log thread");
    let failed = |why: String| StartError::NotListening {
        name: name.to_owned(),
        log: log.display().to_string(),
        why,
    };
    let (addr, admin) = match addresses.recv_timeout(START_TIMEOUT) {
        Ok(Ok(found)) => found,
        Ok(Err(last_line)) => {
            // Its stderr closed: it exited, or will not say more.
            let _ = child.kill();
            let _ = child.wait();
            return Err(failed(last_line));
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(failed(format!(
                "it did not listen within {}s",
                START_TIMEOUT.as_secs()
            )));
        }
    };
    Ok(Node {
        name: name.to_owned(),
        addr,
        admin,
        log,
        process: Mutex::new(Some(child)),
    })
}

type Found = Result<(SocketAddr, Option<SocketAddr>), String>;

fn copy_log(
    name: &str,
    stderr: std::process::ChildStderr,
    path: &Path,
    edge: bool,
    found: std::sync::mpsc::Sender<Found>,
) {
    let mut file = match std::fs::File::create(path) {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::warn!(target: "outpost::lab", child = name, log = %path.display(), error = %e, "cannot write the child's log");
            None
        }
    };
    let (mut addr, mut admin) = (None, None);
    let mut reported = false;
    let mut last = String::new();
    let mut reader = BufReader::new(stderr);
    let mut bytes = Vec::new();
    loop {
        bytes.clear();
        // Bytes, not `lines()`: one line that is not UTF-8 must not end the
        // copy (the pipe would close and the rest of the log be lost).
        match reader.read_until(b'\n', &mut bytes) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&bytes);
        let line = line.trim_end_matches(['\n', '\r']).to_owned();
        if let Some(f) = file.as_mut() {
            let _ = writeln!(f, "{line}");
        }
        if !reported {
            if let Some(a) = address_after(&line, "admin listening on http://") {
                admin = Some(a);
            } else if let Some(a) = address_after(&line, "listening on http://") {
                addr = Some(a);
            }
            if let Some(a) = addr
                && (!edge || admin.is_some())
            {
                reported = true;
                let _ = found.send(Ok((a, admin)));
            }
        }
        if !line.trim().is_empty() {
            last = line;
        }
    }
    if !reported {
        let _ = found.send(Err(if last.is_empty() {
            "it exited without a word".to_owned()
        } else {
            last
        }));
    }
}

/// The socket address that follows `marker` in a log line.
fn address_after(line: &str, marker: &str) -> Option<SocketAddr> {
    let at = line.find(marker)? + marker.len();
    let rest = &line[at..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '"' || c == ',')
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

#[cfg(target_os = "linux")]
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork
    // and exec.
    let parent = std::process::id() as libc::pid_t;
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The lab died between fork and prctl: the signal will never
            // come, so do not start at all.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("the lab exited"));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_: &mut Command) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_found_in_text_and_json_lines() {
        let text = "2026-12-02T01:00:00Z  INFO outpost: listening on http://127.0.0.1:4321 addr=127.0.0.1:4321";
        assert_eq!(
            address_after(text, "listening on http://"),
            Some("127.0.0.1:4321".parse().unwrap())
        );
        let json = r#"{"fields":{"message":"admin listening on http://127.0.0.1:9"}}"#;
        assert_eq!(
            address_after(json, "admin listening on http://"),
            Some("127.0.0.1:9".parse().unwrap())
        );
        assert_eq!(
            address_after("listening on http://nowhere", "listening on http://"),
            None
        );
    }
}
