//! How the in-process request path scales from one core to two: the same
//! hello loop (fresh instance per request, as in `instantiate`) on one
//! pinned worker thread, then on two, alternated in short rounds so that
//! the machine's drift hits both alike, and the median of each round's
//! two-to-one ratio reported. Two ways of running the two workers:
//!
//! - `engine per core`: as `outpost serve` runs, one function version with
//!   an engine per core; each worker instantiates from its own engine;
//! - `one shared engine`: `--engines 1`; both workers instantiate from
//!   the same engine, whose instance pool and reference counts then bounce
//!   between the cores.
//!
//! Both share one admission, as the server's requests do. Workers live for
//! the whole run, like a runtime's worker threads. Needs two CPUs and the
//! guests (`cargo xtask guests`).
//!
//! Run: `cargo bench -p outpost --bench scaling [-- --rounds 40 --round-ms 250 --guest hello]`

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

mod support;

/// The allocator `outpost serve` runs with (see `host/outpost/src/main.rs`).
#[global_allocator]
static ALLOCATOR: outpost::alloc::Mimalloc = outpost::alloc::Mimalloc;

/// What one phase asks of the workers.
struct Phase {
    /// Index into the functions under test.
    function: AtomicUsize,
    /// Workers that serve in this phase (the others sit it out).
    active: AtomicUsize,
    stop: AtomicBool,
    start: Barrier,
    end: Barrier,
    /// Requests each worker completed in the last phase.
    done: [AtomicU64; 2],
}

fn flag(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_owned())
}

fn main() {
    // `cargo bench` passes its own flags (`--bench`); only ours are read.
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = flag(&args, "--rounds", "40").parse().expect("--rounds N");
    let round = Duration::from_millis(
        flag(&args, "--round-ms", "250")
            .parse()
            .expect("--round-ms MS"),
    );
    let guest = flag(&args, "--guest", "hello");
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    if cores.len() < 2 {
        eprintln!(
            "scaling: needs two CPUs to pin to; this process may use {}",
            cores.len()
        );
        return;
    }
    let (per_core, _storage, _) = support::load_with(&guest, "hello", 2);
    let (shared, _shared_storage, _) = support::load_with(&guest, "hello", 1);
    let functions = [("engine per core", per_core), ("one shared engine", shared)];
    let admission = Arc::new(support::admission());
    let phase = Arc::new(Phase {
        function: AtomicUsize::new(0),
        active: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        start: Barrier::new(3),
        end: Barrier::new(3),
        done: [AtomicU64::new(0), AtomicU64::new(0)],
    });
    for (worker, core) in cores.into_iter().take(2).enumerate() {
        let functions: Vec<_> = functions.iter().map(|(_, f)| f.clone()).collect();
        let (admission, phase) = (admission.clone(), phase.clone());
        std::thread::spawn(move || {
            assert!(
                core_affinity::set_for_current(core),
                "cannot pin to {core:?}"
            );
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            loop {
                phase.start.wait();
                let hello = &functions[phase.function.load(Ordering::SeqCst)];
                let mut done = 0;
                if worker < phase.active.load(Ordering::SeqCst) {
                    while !phase.stop.load(Ordering::Relaxed) {
                        runtime.block_on(support::hello_request(hello, &admission));
                        done += 1;
                    }
                }
                phase.done[worker].store(done, Ordering::SeqCst);
                phase.end.wait();
            }
        });
    }
    // Requests per second with `active` workers serving `function`.
    let run = |function: usize, active: usize| -> f64 {
        phase.function.store(function, Ordering::SeqCst);
        phase.active.store(active, Ordering::SeqCst);
        phase.stop.store(false, Ordering::SeqCst);
        phase.start.wait();
        let started = Instant::now();
        std::thread::sleep(round);
        phase.stop.store(true, Ordering::SeqCst);
        phase.end.wait();
        let done: u64 = phase.done.iter().map(|d| d.load(Ordering::SeqCst)).sum();
        done as f64 / started.elapsed().as_secs_f64()
    };
    // Warm both workers and both functions before measuring.
    for function in 0..functions.len() {
        run(function, 2);
    }
    let mut results = vec![(Vec::new(), 0.0, 0.0); functions.len()];
    for _ in 0..rounds {
        for (function, (ratios, one_sum, two_sum)) in results.iter_mut().enumerate() {
            let one = run(function, 1);
            let two = run(function, 2);
            ratios.push(two / one);
            *one_sum += one;
            *two_sum += two;
        }
    }
    println!(
        "\n{guest}: {rounds} rounds of {} ms on one worker, then on two\n",
        round.as_millis()
    );
    println!(
        "| engines | one worker req/s | two workers req/s | two / one (median of rounds) | quartiles |"
    );
    println!("|---|---:|---:|---:|---|");
    for ((name, _), (ratios, one_sum, two_sum)) in functions.iter().zip(&mut results) {
        ratios.sort_by(f64::total_cmp);
        let at = |q: usize| ratios[(ratios.len() - 1) * q / 4];
        println!(
            "| {name} | {:.0} | {:.0} | {:.2}x | {:.2}-{:.2} |",
            *one_sum / rounds as f64,
            *two_sum / rounds as f64,
            at(2),
            at(1),
            at(3)
        );
    }
}
