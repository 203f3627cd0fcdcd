//! The client side of `outpost lab link ...` and `outpost lab status`:
//! calls on a running lab's API, answers printed for a person.

use crate::fetch::Fetch;
use crate::link::FaultChange;
use bytes::Bytes;
use http::Method;

/// Where a lab listens unless told otherwise.
pub const DEFAULT_LAB: &str = "127.0.0.1:7700";

/// Sends `change` for `edge` to the lab at `lab` (`http://HOST:PORT`);
/// returns the line to print.
pub async fn link(lab: &str, edge: &str, change: &FaultChange) -> anyhow::Result<String> {
    let url = format!("{}/api/links/{edge}", base(lab));
    let answer = Fetch::default()
        .send(
            Method::POST,
            &url,
            &[("content-type".into(), "application/json".into())],
            Bytes::from(serde_json::to_string(change)?),
        )
        .await?;
    let json = answer.json().unwrap_or_default();
    anyhow::ensure!(
        answer.status.is_success(),
        "{}",
        json["message"].as_str().map_or_else(
            || String::from_utf8_lossy(&answer.body).into_owned(),
            str::to_owned
        )
    );
    Ok(format!("{edge}: {}", faults_line(&json["faults"])))
}

/// The lab's status as lines for a terminal.
pub async fn status(lab: &str) -> anyhow::Result<String> {
    let url = format!("{}/api/status", base(lab));
    let status = Fetch::default().get_json(&url, None).await?;
    let mut out = format!(
        "cloud   {}\ndashboard {}\n",
        status["cloud"]["url"].as_str().unwrap_or("?"),
        status["dashboard"].as_str().unwrap_or("?")
    );
    for edge in status["edges"].as_array().into_iter().flatten() {
        let outbox = &edge["outbox"];
        out.push_str(&format!(
            "{:<8} {}  link: {}  outbox: {}  cloud: {}\n",
            edge["name"].as_str().unwrap_or("?"),
            edge["url"].as_str().unwrap_or("?"),
            faults_line(&edge["link"]["faults"]),
            outbox["records"],
            match outbox["reachable"].as_bool() {
                Some(true) => "reachable",
                Some(false) => "unreachable",
                None => "unknown",
            },
        ));
    }
    Ok(out)
}

/// `http://` + `lab` unless it has a scheme already.
pub fn base(lab: &str) -> String {
    let lab = lab.trim_end_matches('/');
    if lab.contains("://") {
        lab.to_owned()
    } else {
        format!("http://{lab}")
    }
}

/// A link's faults in a few words: `cut`, `ok`, `latency 150±20 ms, loss 10%`.
pub fn faults_line(faults: &serde_json::Value) -> String {
    if faults["cut"].as_bool() == Some(true) {
        return "cut".into();
    }
    let mut parts = Vec::new();
    let latency = faults["latency_ms"].as_u64().unwrap_or(0);
    let jitter = faults["jitter_ms"].as_u64().unwrap_or(0);
    if latency > 0 || jitter > 0 {
        parts.push(if jitter > 0 {
            format!("latency {latency}+0..{jitter} ms")
        } else {
            format!("latency {latency} ms")
        });
    }
    let loss = faults["loss"].as_f64().unwrap_or(0.0);
    if loss > 0.0 {
        parts.push(format!("loss {}%", (loss * 1000.0).round() / 10.0));
    }
    let bandwidth = faults["bandwidth"].as_u64().unwrap_or(0);
    if bandwidth > 0 {
        parts.push(format!("bandwidth {bandwidth} B/s"));
    }
    if parts.is_empty() {
        "ok".into()
    } else {
        parts.join(", ")
    }
}
