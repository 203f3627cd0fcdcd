//! `load callgrind`: instructions per HTTP request, counted by valgrind's
//! callgrind and split by where they run (wasmtime, the guest, hyper, the
//! allocator, ...). Instruction counts repeat run after run whatever else
//! the machine does, so a lever too small to see through a noisy VM's
//! req/s shows here. It says nothing about the kernel (syscalls, page
//! faults) or about cache misses: confirm a win with `ab`.
//!
//! Two runs of the same build under the same light load, one short and one
//! long; start-up, loading and shutdown cost the same in both, so
//! `(long - short) / (requests_long - requests_short)` is what a request
//! costs. Work that scales with wall time rather than requests (the epoch
//! ticker, which under valgrind's slowdown also makes requests yield, sled's
//! background threads, timers) does not cancel and is charged to requests,
//! so the figure is an upper bound; comparing two builds cancels it.
//!
//! The server runs the pooling allocator, as in production. Valgrind cannot
//! reserve a 1000-slot pool's address space, and `--allocator auto` would
//! then fall back to on-demand allocation and measure a path production
//! does not take, so the pool is sized to the load's connections and the
//! server is told to fail rather than fall back.

use crate::cli::Flags;
use crate::prereq::{self, Paths};
use crate::servers::{self, Scratch};
use crate::{report, wrk};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Where an instruction ran, from the `file:function` callgrind reports:
/// by the source file (inlined code counts where its source is), and when
/// that is std or core, by the crate of the function it was inlined into.
pub fn part(name: &str) -> &'static str {
    const OTHER: &str = "other (std, core, inlined generics)";
    if name.starts_with("???:0x") {
        return "guest (JIT-compiled wasm)";
    }
    let (file, function) = name.split_once(':').unwrap_or(("", name));
    classify(file)
        .or_else(|| classify(function))
        .unwrap_or(OTHER)
}

fn classify(text: &str) -> Option<&'static str> {
    const RULES: &[(&str, &[&str])] = &[
        (
            "wasi-http host functions",
            &["wasmtime-wasi-http", "wasmtime_wasi_http::"],
        ),
        (
            "wasi host functions",
            &["wasmtime-wasi", "wasmtime_wasi::", "wasmtime_wasi_io::"],
        ),
        (
            "hyper",
            &["/hyper-1", "/hyper-util-", "hyper::", "hyper_util::"],
        ),
        ("tokio", &["/tokio-1", "tokio::"]),
        (
            "wasmtime runtime",
            &[
                "wasmtime-48",
                "wasmtime-internal",
                "wasmtime-environ",
                "cranelift",
                "wasmtime::",
                "wasmtime_environ::",
                "wasmtime_internal",
            ],
        ),
        (
            "allocator",
            &[
                "malloc",
                "mimalloc",
                "__rust_alloc",
                "__rust_dealloc",
                "__rust_realloc",
                "__rdl_",
                "raw_vec",
            ],
        ),
        ("memcpy, memset", &["memmove", "memcpy", "memset", "memcmp"]),
        // The host's crates: `host/<crate>/src/`, symbols `outpost_<crate>::`
        // (and `outpost::` for the binary).
        ("outpost", &["/host/", "outpost::", "outpost_"]),
        (
            "http, httparse, bytes",
            &[
                "/http-1",
                "/httparse-",
                "/bytes-1",
                "/http-body",
                "http::",
                "httparse::",
                "bytes::",
            ],
        ),
        ("metrics, logging", &["prometheus", "tracing"]),
        ("libc, loader", &["libc.so", "nptl", "ld-linux"]),
    ];
    RULES
        .iter()
        .find(|(_, needles)| needles.iter().any(|n| text.contains(n)))
        .map(|(part, _)| *part)
}

/// One line of `callgrind_annotate` output: `1,234 (5.67%)  file:function [obj]`.
pub fn parse_line(line: &str) -> Option<(u64, &str)> {
    let line = line.trim_start();
    let end = line.find(' ').unwrap_or(line.len());
    let count = line[..end].replace(',', "").parse().ok()?;
    let mut rest = line[end..].trim_start();
    if rest.starts_with('(') {
        rest = rest[rest.find(')')? + 1..].trim_start();
    }
    (!rest.is_empty()).then_some((count, rest))
}

/// Instructions of one run, by part, and the requests wrk completed.
struct Profile {
    requests: u64,
    parts: BTreeMap<&'static str, u64>,
}

pub fn run(args: &[String]) -> Result<(), String> {
    let flags = Flags::parse(
        args,
        &["bin", "wasm", "short", "long", "connections", "client-core"],
        &["json"],
    )?;
    let paths = Paths::discover();
    let bin = match flags.str("bin") {
        Some(bin) => PathBuf::from(bin),
        None => paths.outpost()?,
    };
    let short: u64 = flags.get("short", 6)?;
    let long: u64 = flags.get("long", 24)?;
    let connections: u32 = flags.get("connections", 4)?;
    let client = flags.str("client-core").unwrap_or("1").to_owned();
    if long <= short {
        return Err("--long must be longer than --short".into());
    }
    prereq::valgrind()?;
    prereq::wrk()?;
    prereq::taskset()?;
    let scratch = Scratch::new("callgrind")?;
    let hello = paths.served_wasm(flags.str("wasm"))?;
    let to = scratch.modules().join("hello.wasm");
    std::fs::copy(&hello, &to).map_err(|e| format!("cannot copy to {to:?}: {e}"))?;
    // Valgrind's virtual CPU has other features than the real one, so the
    // code cached by a native run does not apply: fill the cache first, or
    // the first measured run would include a compile.
    eprintln!("load: filling the code cache under valgrind");
    profile(&bin, &scratch, 1, connections, &client)?;
    eprintln!("load: {short} s under callgrind");
    let a = profile(&bin, &scratch, short, connections, &client)?;
    eprintln!("load: {long} s under callgrind");
    let b = profile(&bin, &scratch, long, connections, &client)?;
    let requests = b.requests.saturating_sub(a.requests);
    if requests == 0 {
        return Err(format!(
            "the long run served no more requests than the short one ({} vs {})",
            b.requests, a.requests
        ));
    }
    let per_request: Vec<(&str, f64)> = {
        let mut parts: Vec<(&str, f64)> = b
            .parts
            .iter()
            .map(|(part, cost)| {
                let before = a.parts.get(part).copied().unwrap_or(0);
                (*part, (*cost as f64 - before as f64) / requests as f64)
            })
            .collect();
        parts.sort_by(|x, y| y.1.total_cmp(&x.1));
        parts
    };
    let total: f64 = per_request.iter().map(|(_, n)| n).sum();
    if flags.has("json") {
        let parts: serde_json::Map<String, serde_json::Value> = per_request
            .iter()
            .map(|(part, n)| (part.to_string(), serde_json::json!(n.round())))
            .collect();
        let json = serde_json::json!({
            "bin": bin,
            "wasm": hello,
            "requests": [a.requests, b.requests],
            "instructions_per_request": total.round(),
            "parts": parts,
        });
        println!("{json:#}");
        return Ok(());
    }
    println!(
        "### callgrind: instructions per `GET /hello`, {} serving {} ({} - {} requests, wrk -c{connections})\n",
        bin.display(),
        hello.display(),
        b.requests,
        a.requests
    );
    let rows: Vec<Vec<String>> = per_request
        .iter()
        .chain(std::iter::once(&("total", total)))
        .map(|(part, n)| {
            vec![
                part.to_string(),
                format!("{:.1}k", n / 1000.0),
                format!("{:.0}%", 100.0 * n / total),
            ]
        })
        .collect();
    println!(
        "{}",
        report::table(&["where", "instructions / request", "share"], &rows)
    );
    Ok(())
}

/// Serves `hello` under callgrind for `secs` of wrk load and reads the
/// instruction counts back.
fn profile(
    bin: &Path,
    scratch: &Scratch,
    secs: u64,
    connections: u32,
    client: &str,
) -> Result<Profile, String> {
    let out = scratch.path().join(format!("callgrind-{secs}s.out"));
    let _ = std::fs::remove_file(&out);
    let wrap: Vec<OsString> = vec![
        "valgrind".into(),
        "--tool=callgrind".into(),
        // Round-robin threads: sled's spinning threads otherwise starve
        // the request path under valgrind's one-thread-at-a-time lock.
        "--fair-sched=yes".into(),
        format!("--callgrind-out-file={}", out.display()).into(),
    ];
    // One slot per connection, plus one for the readiness probe's
    // connection that may still be closing.
    let slots = (connections + 1).to_string();
    let pool = ["--allocator", "pooling", "--max-instances", slots.as_str()];
    let mut server = servers::outpost_wrapped(&wrap, bin, scratch, None, "warn", &pool)?;
    server.wait_ok("/hello", Duration::from_secs(900))?;
    let url = format!("http://127.0.0.1:{}/hello", server.port);
    let measured = wrk::run(client, connections, secs, &url)?;
    // Callgrind writes its counts when the program exits.
    server.stop_within(Duration::from_secs(300));
    let annotated = Command::new("callgrind_annotate")
        .args(["--threshold=100", "--auto=no"])
        .arg(&out)
        .output()
        .map_err(|e| format!("cannot run callgrind_annotate: {e}"))?;
    if !annotated.status.success() {
        return Err(format!(
            "callgrind_annotate {out:?} failed: {}",
            String::from_utf8_lossy(&annotated.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&annotated.stdout);
    let mut parts = BTreeMap::new();
    // Function lines follow the header that names the sort event.
    let body = text
        .split_once("file:function")
        .map_or("", |(_, rest)| rest);
    for (count, name) in body.lines().filter_map(parse_line) {
        *parts.entry(part(name)).or_insert(0) += count;
    }
    if parts.is_empty() {
        return Err(format!("no function counts in {out:?}"));
    }
    Ok(Profile {
        requests: measured.requests,
        parts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotate_lines() {
        assert_eq!(
            parse_line(
                "  8,877,123 ( 3.20%)  ./malloc/./malloc/malloc.c:_int_free [/usr/lib/libc.so.6]"
            ),
            Some((
                8_877_123,
                "./malloc/./malloc/malloc.c:_int_free [/usr/lib/libc.so.6]"
            ))
        );
        assert_eq!(
            parse_line("1,234  ???:0x0000000007eb7c60 [???]"),
            Some((1_234, "???:0x0000000007eb7c60 [???]"))
        );
        assert_eq!(parse_line("--------"), None);
        assert_eq!(parse_line("Ir  file:function"), None);
        assert_eq!(parse_line(""), None);
    }

    #[test]
    fn parts() {
        assert_eq!(
            part("???:0x0000000007eb7c60 [???]"),
            "guest (JIT-compiled wasm)"
        );
        assert_eq!(
            part(
                "/r/hyper-1.12.0/src/proto/h1/dispatch.rs:hyper::proto::h1::Dispatcher::poll_write"
            ),
            "hyper"
        );
        assert_eq!(
            part("/r/wasmtime-wasi-http-48.0.8/src/p2/types_impl.rs:x"),
            "wasi-http host functions"
        );
        assert_eq!(
            part("/r/wasmtime-48.0.8/src/runtime/component/instance.rs:lookup_vmdef"),
            "wasmtime runtime"
        );
        assert_eq!(
            part("/work/main/host/edge/src/invoke/mod.rs:outpost_edge::invoke::invoke"),
            "outpost"
        );
        assert_eq!(
            part("/work/main/host/caps/src/kv/mod.rs:outpost_caps::kv::x"),
            "outpost"
        );
        assert_eq!(
            part("/rustc/abc/library/core/src/ptr/mod.rs:drop_in_place"),
            "other (std, core, inlined generics)"
        );
        // std code inlined into a crate's function counts for that crate;
        // a crate's code inlined into ours counts for the crate.
        assert_eq!(
            part(
                "/rustc/abc/library/core/src/ptr/mod.rs:core::ptr::drop_in_place<wasmtime::runtime::store::StoreInner<outpost::state::RequestState>>"
            ),
            "wasmtime runtime"
        );
        assert_eq!(
            part("/r/wasmtime-48.0.8/src/runtime/fiber.rs:outpost::invoke::invoke::{{closure}}"),
            "wasmtime runtime"
        );
    }
}
