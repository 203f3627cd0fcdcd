//! `outpost bench cold-start`: the user-facing benchmark runs on a real
//! component and reports every phase; a bad file is a clear error.

use crate::harness::{guest, outpost_bin};
use std::process::Command;

fn cold_start(args: &[&str]) -> std::process::Output {
    Command::new(outpost_bin())
        .args(["bench", "cold-start"])
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run outpost bench")
}

#[test]
fn cold_start_reports_every_phase_as_json_and_as_a_table() {
    let hello = guest("hello");
    let output = cold_start(&[hello.to_str().unwrap(), "--requests", "50", "--json"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    for field in [
        "compile_us",
        "cache_load_us",
        "instantiate_us",
        "first_request_us",
        "warm_p50_us",
        "warm_p99_us",
    ] {
        assert!(
            report[field].as_u64().is_some_and(|us| us > 0),
            "{field}: {report}"
        );
    }
    assert!(report["warm_p50_us"].as_u64() <= report["warm_p99_us"].as_u64());
    assert_eq!(report["requests"], 50);
    assert_eq!(report["first_status"], 200);
    assert_eq!(report["warm_failures"], 0);
    assert_eq!(report["bytes"], std::fs::metadata(&hello).unwrap().len());

    let output = cold_start(&[hello.to_str().unwrap(), "--requests", "5"]);
    assert!(output.status.success());
    let table = String::from_utf8(output.stdout).unwrap();
    for phase in [
        "compile",
        "load from cache",
        "instantiate",
        "first request",
        "p50",
        "p99",
    ] {
        assert!(table.contains(phase), "{phase} missing:\n{table}");
    }
}

#[test]
fn cold_start_counts_failing_requests_and_refuses_bad_files() {
    let trap = guest("trap");
    let output = cold_start(&[
        trap.to_str().unwrap(),
        "--requests",
        "3",
        "--path-and-query",
        "/trap/panic",
        "--json",
    ]);
    assert!(output.status.success());
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["first_status"], 500);
    assert_eq!(report["warm_failures"], 3);

    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm").unwrap();
    let output = cold_start(&[junk.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("does not load"), "{stderr}");
    let output = cold_start(&["/no/such/file.wasm"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read"));
}
