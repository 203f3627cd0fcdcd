//! Scenario files: a partition test as TOML. Steps run in order (each at
//! its `at-ms` after the start, if given): requests to an edge, link
//! changes, waits; then the expectations are checked and every failure
//! is reported, so `outpost lab run FILE` can gate a team's CI.
//!
//! ```toml
//! edges = 2                      # optional; the command line's --edges wins
//! modules = "modules"            # optional, relative to this file
//!
//! [[step]]
//! link = "edge-2"                # a link change: cut, latency-ms, jitter-ms, loss, bandwidth, reset
//! cut = true
//!
//! [[step]]
//! at-ms = 500
//! edge = "edge-1"
//! request = "PUT /profile/alice"
//! body = '{"name": "Alice"}'
//! headers = { "content-type" = "application/json" }
//! status = 200                   # optional: the status expected
//! write = { store = "@profile", key = "user/alice" }  # an acknowledged write that must not be lost
//!
//! [[step]]
//! wait = "converged"             # or sleep-ms = N
//! within-ms = 30000
//!
//! [expect]
//! converged = true               # default
//! lost-writes = 0                # default
//! conflicts = 1                  # optional: total, benign, divergent
//! divergent = 1
//! ```

use crate::Lab;
use crate::link::FaultChange;
use base64::Engine as _;
use bytes::Bytes;
use http::Method;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long the final convergence check waits unless told.
const DEFAULT_WITHIN: Duration = Duration::from_secs(30);
/// Longest wait a scenario may ask for.
const MAX_WAIT_MS: u64 = 600_000;

/// A scenario file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct File {
    edges: Option<usize>,
    modules: Option<PathBuf>,
    #[serde(default)]
    step: Vec<StepFile>,
    #[serde(default)]
    expect: Expect,
}

/// One `[[step]]` as written: exactly one of `request`, `link`, `wait`,
/// `sleep-ms` says what it is.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct StepFile {
    at_ms: Option<u64>,
    // A request.
    edge: Option<String>,
    request: Option<String>,
    body: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    status: Option<u16>,
    write: Option<Write>,
    // A link change.
    link: Option<String>,
    cut: Option<bool>,
    latency_ms: Option<u64>,
    jitter_ms: Option<u64>,
    loss: Option<f64>,
    bandwidth: Option<u64>,
    #[serde(default)]
    reset: bool,
    // A wait.
    wait: Option<String>,
    within_ms: Option<u64>,
    sleep_ms: Option<u64>,
}

/// A write a request makes, to check it is not lost.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Write {
    /// The store id (`@NAME` is function NAME's own store).
    pub store: String,
    /// The key.
    pub key: String,
    /// The value written; the request's body unless given.
    pub value: Option<String>,
}

/// What must hold at the end.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Expect {
    /// Every edge equal to the cloud, outboxes empty (default true).
    #[serde(default = "yes")]
    pub converged: bool,
    /// Acknowledged writes (steps with `write` answered 2xx) found neither
    /// in the cloud's history of their key nor as a recorded conflict's
    /// loser (default 0).
    #[serde(default)]
    pub lost_writes: usize,
    /// Conflicts the cloud recorded.
    pub conflicts: Option<u64>,
    /// Of those, benign (both values equal).
    pub benign: Option<u64>,
    /// Of those, divergent.
    pub divergent: Option<u64>,
    /// How long to wait for convergence at the end (ms).
    pub within_ms: Option<u64>,
}

impl Default for Expect {
    fn default() -> Self {
        Expect {
            converged: true,
            lost_writes: 0,
            conflicts: None,
            benign: None,
            divergent: None,
            within_ms: None,
        }
    }
}

fn yes() -> bool {
    true
}

/// A step, checked.
#[derive(Debug)]
pub enum Action {
    /// Send a request to an edge.
    Request {
        /// The edge.
        edge: String,
        /// Its method.
        method: Method,
        /// Path and query.
        path: String,
        /// Headers.
        headers: Vec<(String, String)>,
        /// Body.
        body: String,
        /// The status expected, if any.
        status: Option<u16>,
        /// The write it makes, if any.
        write: Option<Write>,
    },
    /// Change a link.
    Link {
        /// The edge whose link.
        edge: String,
        /// The change.
        change: FaultChange,
    },
    /// Wait until converged.
    Converged {
        /// For at most this long.
        within: Duration,
    },
    /// Wait.
    Sleep(Duration),
}

/// A step with its time.
#[derive(Debug)]
pub struct Step {
    /// When, after the start; `None`: right after the step before.
    pub at: Option<Duration>,
    /// What.
    pub action: Action,
}

/// A scenario, checked and ready to run.
#[derive(Debug)]
pub struct Scenario {
    /// Edges it wants, if it says.
    pub edges: Option<usize>,
    /// Modules folder it wants (resolved against the file), if it says.
    pub modules: Option<PathBuf>,
    /// The steps in order.
    pub steps: Vec<Step>,
    /// The expectations.
    pub expect: Expect,
}

/// Why a scenario file cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// Unreadable.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not the format (the message names the line).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// TOML's message, on one line.
        message: String,
    },
    /// A step that says too little or too much.
    #[error("{path}: step {index}: {message}")]
    Step {
        /// The file.
        path: String,
        /// 1-based.
        index: usize,
        /// What is wrong.
        message: String,
    },
}

impl Scenario {
    /// Reads and checks the scenario at `path`.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut scenario = Scenario::parse(&text).map_err(|e| match e {
            ScenarioError::Parse { message, .. } => ScenarioError::Parse {
                path: path.display().to_string(),
                message,
            },
            ScenarioError::Step { index, message, .. } => ScenarioError::Step {
                path: path.display().to_string(),
                index,
                message,
            },
            other => other,
        })?;
        if let Some(modules) = &scenario.modules {
            let base = path.parent().unwrap_or(Path::new("."));
            scenario.modules = Some(base.join(modules));
        }
        Ok(scenario)
    }

    /// Checks a scenario's text.
    pub fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        let file: File = toml::from_str(text).map_err(|e| ScenarioError::Parse {
            path: String::new(),
            message: e.to_string().replace('\n', " "),
        })?;
        let steps = file
            .step
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                step(s).map_err(|message| ScenarioError::Step {
                    path: String::new(),
                    index: i + 1,
                    message,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Scenario {
            edges: file.edges,
            modules: file.modules,
            steps,
            expect: file.expect,
        })
    }

    /// Edge names the steps use, to check against the lab before running.
    pub fn edges_named(&self) -> Vec<&str> {
        self.steps
            .iter()
            .filter_map(|s| match &s.action {
                Action::Request { edge, .. } | Action::Link { edge, .. } => Some(edge.as_str()),
                _ => None,
            })
            .collect()
    }
}

fn step(s: StepFile) -> Result<Step, String> {
    let kinds = [
        s.request.is_some(),
        s.link.is_some(),
        s.wait.is_some(),
        s.sleep_ms.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() != 1 {
        return Err("give exactly one of `request`, `link`, `wait` or `sleep-ms`".into());
    }
    let link_fields = s.cut.is_some()
        || s.latency_ms.is_some()
        || s.jitter_ms.is_some()
        || s.loss.is_some()
        || s.bandwidth.is_some()
        || s.reset;
    let request_fields =
        s.body.is_some() || !s.headers.is_empty() || s.status.is_some() || s.write.is_some();
    let at = s.at_ms.map(Duration::from_millis);
    let action = if let Some(request) = s.request {
        if link_fields {
            return Err("a request step has no link fields (cut, latency-ms, ...)".into());
        }
        let edge = s.edge.ok_or("a request step needs `edge` (edge-1, ...)")?;
        let (method, path) = request
            .split_once(' ')
            .ok_or("`request` is \"METHOD /path\", e.g. \"PUT /profile/alice\"")?;
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| format!("{method:?} is not an HTTP method"))?;
        if !path.starts_with('/') {
            return Err(format!("the path {path:?} must start with /"));
        }
        Action::Request {
            edge,
            method,
            path: path.to_owned(),
            headers: s.headers.into_iter().collect(),
            body: s.body.unwrap_or_default(),
            status: s.status,
            write: s.write,
        }
    } else if let Some(edge) = s.link {
        if request_fields || s.edge.is_some() {
            return Err("a link step names its edge in `link` and has no request fields".into());
        }
        let change = FaultChange {
            cut: s.cut,
            latency_ms: s.latency_ms,
            jitter_ms: s.jitter_ms,
            loss: s.loss,
            bandwidth: s.bandwidth,
            reset: s.reset,
        };
        change
            .apply(crate::link::Faults::default())
            .map_err(|e| e.to_string())?;
        Action::Link { edge, change }
    } else if let Some(wait) = s.wait {
        if wait != "converged" {
            return Err(format!("`wait = {wait:?}`: the one wait is \"converged\""));
        }
        let within = s.within_ms.map_or(DEFAULT_WITHIN, Duration::from_millis);
        if within > Duration::from_millis(MAX_WAIT_MS) {
            return Err(format!("`within-ms` is at most {MAX_WAIT_MS}"));
        }
        Action::Converged { within }
    } else {
        let ms = s.sleep_ms.expect("one kind is set");
        if ms > MAX_WAIT_MS {
            return Err(format!("`sleep-ms` is at most {MAX_WAIT_MS}"));
        }
        Action::Sleep(Duration::from_millis(ms))
    };
    Ok(Step { at, action })
}

/// One check of the run and how it went.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// What was checked.
    pub what: String,
    /// Whether it held.
    pub ok: bool,
    /// What was found.
    pub detail: String,
}

/// A write a request acknowledged.
#[derive(Debug, Clone)]
struct Acknowledged {
    step: usize,
    write: Write,
    /// What it wrote (`None`: a DELETE).
    value: Option<Vec<u8>>,
    /// The version the edge gave it, read from the edge right after the
    /// answer; `None` if the key already held something else by then (a
    /// newer write from the feed), and the value is all there is to go on.
    version: Option<Version>,
}

/// A version as the APIs give it: HLC and node.
type Version = (u64, String);

fn version_of(v: &serde_json::Value) -> Option<Version> {
    Some((v["hlc"].as_u64()?, v["node"].as_str()?.to_owned()))
}

/// The version `edge` holds for the write's key, if it holds `value`.
async fn version_at_edge(
    lab: &Lab,
    edge: &str,
    write: &Write,
    value: Option<&[u8]>,
) -> Option<Version> {
    let admin = lab.edge(edge)?.node.admin?;
    let url = format!(
        "http://{admin}/kv?store={}&key={}",
        crate::converge::encode(&write.store),
        crate::converge::encode(&write.key)
    );
    let page = lab.fetch.get_json(&url, None).await.ok()?;
    let item = page["items"].get(0)?;
    let held = match item["value"].as_str() {
        Some(b64) => Some(base64::engine::general_purpose::STANDARD.decode(b64).ok()?),
        None => None,
    };
    if held.as_deref() == value {
        version_of(&item["version"])
    } else {
        None
    }
}

/// Runs `scenario` on `lab` and returns every check, in order. The run
/// passed if every check is `ok`.
pub async fn run(lab: &Lab, scenario: &Scenario, out: &mut impl std::io::Write) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut acknowledged = Vec::new();
    let start = Instant::now();
    for (i, step) in scenario.steps.iter().enumerate() {
        let index = i + 1;
        if let Some(at) = step.at {
            tokio::time::sleep_until((start + at).into()).await;
        }
        let elapsed = start.elapsed().as_millis();
        match &step.action {
            Action::Request {
                edge,
                method,
                path,
                headers,
                body,
                status,
                write,
            } => {
                let Some(target) = lab.edge(edge) else {
                    checks.push(fail(format!("step {index}"), format!("no edge {edge:?}")));
                    continue;
                };
                let url = format!("http://{}{path}", target.node.addr);
                let answer = lab
                    .fetch
                    .send(method.clone(), &url, headers, Bytes::from(body.clone()))
                    .await;
                let got = answer.as_ref().map(|a| a.status.as_u16());
                let _ = writeln!(
                    out,
                    "{elapsed:>6} ms  step {index}: {edge} {method} {path} -> {}",
                    match &got {
                        Ok(s) => s.to_string(),
                        Err(e) => format!("no answer ({e})"),
                    }
                );
                if let Some(expected) = status {
                    checks.push(Check {
                        what: format!("step {index}: {edge} {method} {path} answers {expected}"),
                        ok: got.as_ref().ok() == Some(expected),
                        detail: match &answer {
                            Ok(a) => format!("{} {}", a.status, one_line(&a.body)),
                            Err(e) => e.to_string(),
                        },
                    });
                }
                if let Some(write) = write {
                    match &answer {
                        Ok(a) if a.status.is_success() => {
                            let value = (method != Method::DELETE).then(|| {
                                write
                                    .value
                                    .clone()
                                    .unwrap_or_else(|| body.clone())
                                    .into_bytes()
                            });
                            let version = version_at_edge(lab, edge, write, value.as_deref()).await;
                            acknowledged.push(Acknowledged {
                                step: index,
                                write: write.clone(),
                                value,
                                version,
                            });
                        }
                        // A step that says it writes expects its write to
                        // be acknowledged: anything else is a failure, not
                        // a write quietly left out of the count.
                        other => checks.push(fail(
                            format!("step {index}: {edge} {method} {path} acknowledges its write"),
                            match other {
                                Ok(a) => format!("{} {}", a.status, one_line(&a.body)),
                                Err(e) => e.to_string(),
                            },
                        )),
                    }
                }
            }
            Action::Link { edge, change } => {
                let result = match lab.edge(edge) {
                    Some(e) => e.link.change(change).map_err(|e| e.to_string()),
                    None => Err(format!("no edge {edge:?}")),
                };
                let _ = writeln!(
                    out,
                    "{elapsed:>6} ms  step {index}: link {edge} -> {}",
                    match &result {
                        Ok(f) => crate::control::faults_line(&serde_json::json!(f)),
                        Err(e) => e.clone(),
                    }
                );
                if let Err(e) = result {
                    checks.push(fail(format!("step {index}: link {edge}"), e));
                }
            }
            Action::Converged { within } => {
                let (ok, detail) = converge_within(lab, *within).await;
                let _ = writeln!(
                    out,
                    "{:>6} ms  step {index}: converged: {}",
                    start.elapsed().as_millis(),
                    if ok { "yes" } else { "no" }
                );
                checks.push(Check {
                    what: format!("step {index}: converged within {} ms", within.as_millis()),
                    ok,
                    detail,
                });
            }
            Action::Sleep(d) => tokio::time::sleep(*d).await,
        }
    }
    let expect = &scenario.expect;
    if expect.converged {
        let within = expect
            .within_ms
            .map_or(DEFAULT_WITHIN, Duration::from_millis);
        let (converged, detail) = converge_within(lab, within).await;
        checks.push(Check {
            what: format!("converged within {} ms", within.as_millis()),
            ok: converged,
            detail,
        });
        if !acknowledged.is_empty() {
            // Writes were made, so something must have been compared: a
            // lab of empty stores converges trivially.
            let c = crate::converge::check(lab).await;
            checks.push(Check {
                what: "the writes' stores were compared".into(),
                ok: acknowledged
                    .iter()
                    .all(|a| c.stores.contains(&a.write.store)),
                detail: format!("stores compared: {:?}", c.stores),
            });
        }
    }
    let lost = lost_writes(lab, &acknowledged).await;
    checks.push(Check {
        what: format!(
            "{} lost acknowledged writes (of {})",
            expect.lost_writes,
            acknowledged.len()
        ),
        ok: lost.len() == expect.lost_writes,
        detail: if lost.is_empty() {
            "every acknowledged write is current, in its key's history, or a recorded conflict's loser".into()
        } else {
            lost.join("; ")
        },
    });
    if expect.conflicts.is_some() || expect.benign.is_some() || expect.divergent.is_some() {
        match conflict_counts(lab).await {
            Ok((total, benign, divergent)) => {
                for (name, want, got) in [
                    ("conflicts", expect.conflicts, total),
                    ("benign conflicts", expect.benign, benign),
                    ("divergent conflicts", expect.divergent, divergent),
                ] {
                    if let Some(want) = want {
                        checks.push(Check {
                            what: format!("{want} {name}"),
                            ok: got == want,
                            detail: format!("{got} recorded"),
                        });
                    }
                }
            }
            Err(e) => checks.push(fail("conflict counts".into(), e)),
        }
    }
    checks
}

fn fail(what: String, detail: String) -> Check {
    Check {
        what,
        ok: false,
        detail,
    }
}

fn one_line(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.chars().count() > 200 {
        format!("{}...", text.chars().take(200).collect::<String>())
    } else {
        text
    }
}

/// Polls the convergence check until it holds or `within` ends.
async fn converge_within(lab: &Lab, within: Duration) -> (bool, String) {
    let until = Instant::now() + within;
    loop {
        let c = crate::converge::check(lab).await;
        if c.converged {
            return (
                true,
                format!(
                    "{} stores, {} keys equal everywhere",
                    c.stores.len(),
                    c.keys
                ),
            );
        }
        if Instant::now() >= until {
            return (false, c.differences.join("; "));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The acknowledged writes the cloud has no trace of: not the key's
/// current version, not among the versions it accepted for the key, and
/// not the loser of a recorded conflict. A write that lost
/// last-writer-wins is not lost: the conflict records it. Writes are
/// found by their version when the edge told it (exact), else by value.
async fn lost_writes(lab: &Lab, acknowledged: &[Acknowledged]) -> Vec<String> {
    let mut lost = Vec::new();
    for a in acknowledged {
        let what = format!(
            "step {}: {}/{} = {}",
            a.step,
            a.write.store,
            a.write.key,
            a.value.as_deref().map_or_else(
                || "(deleted)".to_owned(),
                |v| format!("{:?}", String::from_utf8_lossy(v))
            )
        );
        match trace_of(lab, a).await {
            Ok(true) => {}
            Ok(false) => lost.push(format!("{what} is nowhere at the cloud")),
            Err(e) => lost.push(format!("{what}: cannot tell: {e}")),
        }
    }
    lost
}

async fn trace_of(lab: &Lab, a: &Acknowledged) -> Result<bool, String> {
    let cloud = lab.cloud_url();
    let token = Some(lab.token.as_str());
    let key = crate::converge::encode(&a.write.key);
    let store = crate::converge::encode(&a.write.store);
    let current = lab
        .fetch
        .get_json(&format!("{cloud}/v1/kv?store={store}&key={key}"), token)
        .await
        .ok();
    let history = lab
        .fetch
        .get_json(
            &format!("{cloud}/v1/history?store={store}&key={key}&limit=256"),
            token,
        )
        .await
        .map_err(|e| e.to_string())?;
    let entries = || {
        history["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(history["lost"].as_array().into_iter().flatten())
    };
    let found = match &a.version {
        Some(version) => {
            current
                .as_ref()
                .and_then(|c| version_of(&c["version"]))
                .as_ref()
                == Some(version)
                || entries().any(|e| version_of(&e["version"]).as_ref() == Some(version))
        }
        None => {
            let current_value = current.as_ref().map(|c| {
                c["value"]
                    .as_str()
                    .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
            });
            let shown = outpost_wire::explain::show(a.value.as_deref());
            current_value
                .as_ref()
                .is_some_and(|v| v.as_deref() == a.value.as_deref())
                || entries().any(|e| {
                    e["shown"]["format"].as_str() == Some(shown.format.as_str())
                        && e["shown"]["text"].as_str() == Some(shown.text.as_str())
                })
        }
    };
    if !found && history["window"]["complete"] == false {
        return Err("the key's history reaches back past the cloud's window".into());
    }
    Ok(found)
}

/// Conflicts the cloud recorded: total, benign, divergent.
async fn conflict_counts(lab: &Lab) -> Result<(u64, u64, u64), String> {
    let (mut total, mut benign, mut divergent) = (0, 0, 0);
    let mut since = 0;
    loop {
        let page = lab
            .fetch
            .get_json(
                &format!("{}/v1/conflicts?since={since}&limit=1000", lab.cloud_url()),
                Some(&lab.token),
            )
            .await
            .map_err(|e| e.to_string())?;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        for item in &items {
            total += 1;
            match item["kind"].as_str() {
                Some("benign") => benign += 1,
                _ => divergent += 1,
            }
        }
        let next = page["next"].as_u64().unwrap_or(since);
        if next == since {
            return Ok((total, benign, divergent));
        }
        since = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scenario_parses_into_steps_and_expectations() {
        let s = Scenario::parse(
            r#"
            edges = 3
            [[step]]
            link = "edge-2"
            cut = true
            [[step]]
            at-ms = 500
            edge = "edge-1"
            request = "PUT /profile/a"
            body = "{}"
            status = 200
            write = { store = "@profile", key = "user/a" }
            [[step]]
            wait = "converged"
            within-ms = 1000
            [[step]]
            sleep-ms = 10
            [expect]
            conflicts = 1
            "#,
        )
        .unwrap();
        assert_eq!(s.edges, Some(3));
        assert_eq!(s.steps.len(), 4);
        assert!(
            matches!(&s.steps[0].action, Action::Link { edge, change } if edge == "edge-2" && change.cut == Some(true))
        );
        assert_eq!(s.steps[1].at, Some(Duration::from_millis(500)));
        assert!(
            matches!(&s.steps[1].action, Action::Request { method, status: Some(200), write: Some(_), .. } if method == Method::PUT)
        );
        assert!(
            matches!(s.steps[2].action, Action::Converged { within } if within == Duration::from_secs(1))
        );
        assert!(s.expect.converged);
        assert_eq!(s.expect.conflicts, Some(1));
        assert_eq!(s.edges_named(), ["edge-2", "edge-1"]);
    }

    #[test]
    fn a_bad_step_is_named_with_its_number_and_why() {
        let err = |text: &str| Scenario::parse(text).unwrap_err().to_string();
        assert!(err("[[step]]\nedge = \"edge-1\"\n").contains("step 1: give exactly one"));
        assert!(
            err("[[step]]\nsleep-ms = 1\n[[step]]\nrequest = \"GET /x\"\n")
                .contains("step 2: a request step needs `edge`")
        );
        assert!(err("[[step]]\nlink = \"edge-1\"\nloss = 2.0\n").contains("loss must be"));
        assert!(err("[[step]]\nedge = \"e\"\nrequest = \"/x\"\n").contains("METHOD /path"));
        assert!(err("[[step]]\nwait = \"forever\"\n").contains("the one wait"));
        assert!(err("surprise = 1\n").contains("unknown field"));
    }
}
