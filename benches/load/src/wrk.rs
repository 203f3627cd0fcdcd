//! Driving wrk (pinned with taskset) and reading the numbers out of its report.

use std::process::Command;

/// What one wrk run measured. Latencies in microseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub requests: u64,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub non_2xx: u64,
    /// connect + read + write + timeout.
    pub socket_errors: u64,
}

impl Run {
    pub fn failed(&self) -> u64 {
        self.non_2xx + self.socket_errors
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "requests": self.requests,
            "requests_per_sec": self.rps,
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "non_2xx": self.non_2xx,
            "socket_errors": self.socket_errors,
        })
    }
}

/// How wrk loads a server.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// wrk threads (`-t`).
    pub threads: u32,
    pub connections: u32,
    pub secs: u64,
    /// Requests each connection sends before reading the answers; 1 is
    /// wrk's usual one at a time.
    pub pipeline: u32,
}

impl Load {
    /// One wrk thread, no pipelining.
    pub fn plain(connections: u32, secs: u64) -> Self {
        Self {
            threads: 1,
            connections,
            secs,
            pipeline: 1,
        }
    }
}

/// Sends each connection's requests `depth` at a time: wrk's `request`
/// hook returns the same GET `depth` times over in one buffer.
const PIPELINE_LUA: &str = r#"
init = function(args)
  local depth = tonumber(args[1])
  local one = wrk.format(nil)
  local all = {}
  for i = 1, depth do all[i] = one end
  batch = table.concat(all)
end
request = function() return batch end
"#;

/// Runs `wrk -t1 -c<connections> -d<secs>s --latency <url>` on `cpus`.
pub fn run(cpus: &str, connections: u32, secs: u64, url: &str) -> Result<Run, String> {
    start(cpus, Load::plain(connections, secs), url)?.finish()
}

/// A wrk run under way; [`Pending::finish`] waits for its report.
pub struct Pending {
    command: String,
    /// `None` once [`Pending::finish`] has taken it.
    child: Option<std::process::Child>,
    /// The Lua script (pipelining or the caller's), removed once wrk is done.
    script: Option<std::path::PathBuf>,
}

/// Starts wrk on `cpus` with `load` against `url`, without waiting, so
/// several can run at once.
pub fn start(cpus: &str, load: Load, url: &str) -> Result<Pending, String> {
    if load.pipeline > 1 {
        spawn(
            cpus,
            load,
            url,
            Some((PIPELINE_LUA, &[load.pipeline.to_string()])),
        )
    } else {
        spawn(cpus, load, url, None)
    }
}

/// Starts wrk like [`start`] with the Lua `script` (its source) given
/// `script_args`, for requests other than a plain GET; `load.pipeline` is
/// the script's business, so it must be 1. What the script's `done` hook
/// prints comes back from [`Pending::finish_with_output`].
pub fn start_script(
    cpus: &str,
    load: Load,
    url: &str,
    script: &str,
    script_args: &[String],
) -> Result<Pending, String> {
    if load.pipeline > 1 {
        return Err("a wrk script run does its own pipelining, if any".into());
    }
    spawn(cpus, load, url, Some((script, script_args)))
}

fn spawn(
    cpus: &str,
    load: Load,
    url: &str,
    script: Option<(&str, &[String])>,
) -> Result<Pending, String> {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", cpus, "wrk"])
        .arg(format!("-t{}", load.threads))
        .arg(format!("-c{}", load.connections))
        .arg(format!("-d{}s", load.secs))
        .arg("--latency");
    cmd.arg(url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // Dropped on an early return: removes the script.
    let mut pending = Pending {
        command: String::new(),
        child: None,
        script: None,
    };
    if let Some((source, script_args)) = script {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("outpost-load-wrk-{}-{n}.lua", std::process::id()));
        std::fs::write(&path, source).map_err(|e| format!("cannot write {path:?}: {e}"))?;
        // wrk's getopt takes options after the URL too; what follows `--`
        // reaches the script as its arguments.
        cmd.arg("-s").arg(&path).arg("--").args(script_args);
        pending.script = Some(path);
    }
    pending.command = format!("{cmd:?}");
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", pending.command))?;
    pending.child = Some(child);
    Ok(pending)
}

impl Pending {
    /// Waits for wrk to end and reads its report.
    pub fn finish(self) -> Result<Run, String> {
        self.finish_with_output().map(|(run, _)| run)
    }

    /// [`Pending::finish`], also returning wrk's whole stdout: the report
    /// and whatever a script printed after it.
    pub fn finish_with_output(mut self) -> Result<(Run, String), String> {
        let child = self.child.take().expect("finish runs once");
        let out = child.wait_with_output();
        let out = out.map_err(|e| format!("{} did not finish: {e}", self.command))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "{} failed with {}:\n{stdout}{}",
                self.command,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let run = parse(&stdout).map_err(|e| format!("{e}; wrk said:\n{stdout}"))?;
        Ok((run, stdout.into_owned()))
    }
}

/// A wrk left behind by an error elsewhere would load the machine under
/// the next measurement: it is stopped, and its script removed.
impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(script) = &self.script {
            let _ = std::fs::remove_file(script);
        }
    }
}

/// Reads wrk's `--latency` report.
pub fn parse(report: &str) -> Result<Run, String> {
    let mut requests = None;
    let mut rps = None;
    let (mut p50, mut p99) = (None, None);
    let mut non_2xx = 0;
    let mut socket_errors = 0;
    let mut in_distribution = false;
    for line in report.lines().map(str::trim) {
        if line == "Latency Distribution" {
            in_distribution = true;
        } else if let Some(rest) = line.strip_prefix("Requests/sec:") {
            rps = Some(number(rest.trim())?);
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            non_2xx = count(rest.trim())?;
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            for part in rest.split(',') {
                let value = part.split_whitespace().nth(1).unwrap_or_default();
                socket_errors += count(value)?;
            }
        } else if let Some((n, _)) = line.split_once(" requests in ") {
            requests = Some(count(n.trim())?);
        } else if in_distribution {
            match line.split_whitespace().collect::<Vec<_>>()[..] {
                ["50%", value] => p50 = Some(latency_us(value)?),
                ["99%", value] => p99 = Some(latency_us(value)?),
                [percent, _] if percent.ends_with('%') => {}
                _ => in_distribution = false,
            }
        }
    }
    Ok(Run {
        requests: requests.ok_or("no \"N requests in\" line")?,
        rps: rps.ok_or("no Requests/sec line")?,
        p50_us: p50.ok_or("no 50% latency line")?,
        p99_us: p99.ok_or("no 99% latency line")?,
        non_2xx,
        socket_errors,
    })
}

fn number(s: &str) -> Result<f64, String> {
    s.parse().map_err(|_| format!("not a number: {s:?}"))
}

fn count(s: &str) -> Result<u64, String> {
    s.parse().map_err(|_| format!("not a count: {s:?}"))
}

/// `523.00us`, `1.20ms`, `2.01s`, `1.50m` to microseconds.
fn latency_us(s: &str) -> Result<f64, String> {
    let (digits, scale) = if let Some(v) = s.strip_suffix("us") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1e3)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1e6)
    } else if let Some(v) = s.strip_suffix('m') {
        (v, 60e6)
    } else {
        return Err(format!("latency without a unit: {s:?}"));
    };
    Ok(number(digits)? * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "\
Running 5s test @ http://127.0.0.1:8090/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   520.12us  100.00us   2.00ms   90.00%
    Req/Sec    60.00k     2.00k   65.00k    80.00%
  Latency Distribution
     50%  500.00us
     75%  550.00us
     90%  600.00us
     99%    1.25ms
  300123 requests in 5.00s, 30.00MB read
  Socket errors: connect 1, read 2, write 0, timeout 4
  Non-2xx or 3xx responses: 5
Requests/sec:  60024.60
Transfer/sec:      6.00MB
";

    #[test]
    fn reads_every_number() {
        assert_eq!(
            parse(REPORT).unwrap(),
            Run {
                requests: 300_123,
                rps: 60_024.6,
                p50_us: 500.0,
                p99_us: 1250.0,
                non_2xx: 5,
                socket_errors: 7,
            }
        );
    }

    #[test]
    fn clean_runs_have_no_error_lines() {
        let clean: String = REPORT
            .lines()
            .filter(|l| !l.contains("errors") && !l.contains("Non-2xx"))
            .map(|l| format!("{l}\n"))
            .collect();
        let run = parse(&clean).unwrap();
        assert_eq!(run.failed(), 0);
    }

    #[test]
    fn latency_units() {
        assert_eq!(latency_us("12.00us").unwrap(), 12.0);
        assert_eq!(latency_us("1.5ms").unwrap(), 1500.0);
        assert_eq!(latency_us("2.00s").unwrap(), 2_000_000.0);
        assert!(latency_us("3.0").is_err());
    }
}
