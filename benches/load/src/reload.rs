//! `load reload`: hot reload under load. wrk drives /hello while hello.wasm
//! is atomically replaced every few milliseconds by an equivalent copy with
//! another hash; the claim under test is that no request fails meanwhile.

use crate::cli::{self, Flags};
use crate::prereq::{self, Paths};
use crate::servers::{self, Scratch};
use crate::{report, wasm, wrk};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Temporary name for a replacement: neither `NAME.wasm` nor `NAME.toml`,
/// so the host's modules folder treats it as an unrelated file (see
/// `modules::classify`) until the rename makes it `hello.wasm`.
const TMP_NAME: &str = ".hello.tmp";

pub fn run(args: &[String]) -> Result<(), String> {
    let flags = Flags::parse(
        args,
        &[
            "duration",
            "every-ms",
            "connections",
            "server-core",
            "server-cores",
            "client-core",
        ],
        &["json"],
    )?;
    let duration: u64 = flags.get("duration", 10)?;
    let every_ms: u64 = flags.get("every-ms", 100)?;
    let connections: u32 = flags.get("connections", 64)?;
    let (server_cpus, client_cpus) = cli::pinning(&flags);
    cli::cpu_count(&server_cpus)?;
    cli::cpu_count(&client_cpus)?;

    prereq::taskset()?;
    prereq::wrk()?;
    let paths = Paths::discover();
    let hello = paths.hello_wasm()?;
    let outpost = paths.outpost()?;

    let original = std::fs::read(&hello).map_err(|e| format!("cannot read {hello:?}: {e}"))?;
    let versions = [
        original.clone(),
        wasm::with_custom_section(&original, "outpost-bench-1", b"reload"),
    ];
    let scratch = Scratch::new("reload")?;
    let modules = scratch.modules();
    let target = modules.join("hello.wasm");
    std::fs::write(&target, &versions[0]).map_err(|e| format!("cannot write {target:?}: {e}"))?;

    // info, because the reload count comes from the host's log lines.
    let mut server = servers::outpost(
        &outpost,
        &scratch,
        Some(&server_cpus),
        "info",
        &["--reload-debounce-ms", "10"],
    )?;
    server.wait_ok("/hello", Duration::from_secs(120))?;
    let reloads_before = server.reloads();

    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let stop = stop.clone();
        let modules = modules.clone();
        std::thread::spawn(move || -> Result<u64, String> {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(every_ms));
                swaps += 1;
                replace(&modules, &versions[(swaps % 2) as usize])?;
            }
            Ok(swaps)
        })
    };
    let url = format!("http://127.0.0.1:{}/hello", server.port);
    eprintln!(
        "load: reload: {duration} s of wrk -c{connections} on {url}, hello.wasm replaced every {every_ms} ms"
    );
    let measured = wrk::run(&client_cpus, connections, duration, &url);
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper
        .join()
        .map_err(|_| "the swapper thread panicked".to_owned())??;
    let measured = measured?;
    // The last swap's reload lands within the debounce plus a load.
    std::thread::sleep(Duration::from_millis(500));
    server.wait_ok("/hello", Duration::from_secs(10))?;
    let reloads = server.reloads() - reloads_before;
    server.stop();

    if flags.has("json") {
        let json = serde_json::json!({
            "mode": "reload",
            "duration_s": duration,
            "every_ms": every_ms,
            "connections": connections,
            "server_cpus": server_cpus,
            "client_cpus": client_cpus,
            "files_replaced": swaps,
            "reloads_logged": reloads,
            "requests": measured.requests,
            "failed": measured.failed(),
            "wrk": measured.json(),
        });
        println!("{json:#}");
        return Ok(());
    }
    println!(
        "### reload: hello.wasm replaced every {every_ms} ms under `wrk -t1 -c{connections} -d{duration}s`, server CPUs {server_cpus}, wrk CPU {client_cpus}\n"
    );
    let rows = vec![
        vec!["requests".into(), measured.requests.to_string()],
        vec![
            "failed (non-2xx + socket errors)".into(),
            format!(
                "{} ({} + {})",
                measured.failed(),
                measured.non_2xx,
                measured.socket_errors
            ),
        ],
        vec!["req/s".into(), report::rps(measured.rps)],
        vec!["p50".into(), report::ms(measured.p50_us)],
        vec!["p99".into(), report::ms(measured.p99_us)],
        vec!["files replaced".into(), swaps.to_string()],
        vec!["reloads logged by the host".into(), reloads.to_string()],
    ];
    print!("{}", report::table(&["reload", "value"], &rows));
    Ok(())
}

/// Write-then-rename, so the host never sees a half-written hello.wasm.
fn replace(modules: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = modules.join(TMP_NAME);
    std::fs::write(&tmp, bytes).map_err(|e| format!("cannot write {tmp:?}: {e}"))?;
    let to = modules.join("hello.wasm");
    std::fs::rename(&tmp, &to).map_err(|e| format!("cannot rename {tmp:?} to {to:?}: {e}"))
}
