//! `load cores`: how far this machine's cores scale on plain work, one
//! pinned thread against two. Outpost's request path scaling below this
//! is Outpost's (or wasmtime's) problem; scaling like this is the
//! machine's. Compare with `cargo bench -p outpost --bench instantiate --
//! hello/threads`.

use crate::cli::Flags;
use crate::report;
use std::time::{Duration, Instant};

/// A kind of work, run in batches until time is up; returns batches done.
struct Workload {
    name: &'static str,
    run: fn(Duration) -> Result<u64, String>,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "arithmetic (no memory)",
        run: |d| Ok(arithmetic(d)),
    },
    Workload {
        name: "memset 128 KiB + 64 small allocations (a slot reset's shape)",
        run: |d| Ok(reset_shape(d)),
    },
    Workload {
        name: "random read-modify-write over 4 MiB",
        run: |d| Ok(random_access(d, 4)),
    },
    Workload {
        name: "random read-modify-write over 64 MiB",
        run: |d| Ok(random_access(d, 64)),
    },
    Workload {
        name: "dirty 40 pages + PAGEMAP_SCAN ioctl (a pooled slot's reset)",
        run: dirty_and_scan,
    },
];

pub fn run(args: &[String]) -> Result<(), String> {
    let flags = Flags::parse(args, &["seconds"], &["json"])?;
    let secs: u64 = flags.get("seconds", 3)?;
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    if cores.len() < 2 {
        return Err(format!(
            "needs two CPUs to pin to, this process may use {}",
            cores.len()
        ));
    }
    let duration = Duration::from_secs(secs);
    let mut rows = Vec::new();
    let mut json = Vec::new();
    for work in WORKLOADS {
        let one =
            pinned(&cores[..1], work.run, duration).map_err(|e| format!("{}: {e}", work.name))?;
        let two =
            pinned(&cores[..2], work.run, duration).map_err(|e| format!("{}: {e}", work.name))?;
        rows.push(vec![
            work.name.to_owned(),
            format!("{:.0}", one),
            format!("{:.0}", two),
            report::ratio(two, one),
        ]);
        json.push(serde_json::json!({ "work": work.name, "one": one, "two": two }));
    }
    if flags.has("json") {
        println!("{:#}", serde_json::Value::Array(json));
        return Ok(());
    }
    println!("### cores: batches/s on one pinned thread vs two ({secs} s each)\n");
    println!(
        "{}",
        report::table(&["work", "one thread", "two threads", "two / one"], &rows)
    );
    Ok(())
}

/// Runs `work` on one thread per core in `cores` at once; batches per second
/// summed over the threads. Any thread that cannot pin itself or fails
/// fails the whole measurement: a silent zero would read as poor scaling.
fn pinned(
    cores: &[core_affinity::CoreId],
    work: fn(Duration) -> Result<u64, String>,
    duration: Duration,
) -> Result<f64, String> {
    let threads: Vec<_> = cores
        .iter()
        .map(|&core| {
            std::thread::spawn(move || {
                if !core_affinity::set_for_current(core) {
                    return Err(format!("cannot pin a thread to {core:?}"));
                }
                work(duration)
            })
        })
        .collect();
    let mut batches = 0;
    for thread in threads {
        batches += thread
            .join()
            .map_err(|_| "a worker thread panicked".to_string())??;
    }
    Ok(batches as f64 / duration.as_secs_f64())
}

fn lcg(x: u64) -> u64 {
    x.wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407)
}

fn arithmetic(duration: Duration) -> u64 {
    let started = Instant::now();
    let (mut batches, mut x) = (0, 1u64);
    while started.elapsed() < duration {
        for _ in 0..10_000 {
            x = lcg(x);
        }
        batches += 1;
    }
    std::hint::black_box(x);
    batches
}

fn reset_shape(duration: Duration) -> u64 {
    let mut slot = vec![0u8; 128 * 1024];
    let started = Instant::now();
    let mut batches = 0u64;
    while started.elapsed() < duration {
        slot.fill(batches as u8);
        let small: Vec<Box<[u8; 64]>> = (0..64).map(|i| Box::new([i as u8; 64])).collect();
        std::hint::black_box((&slot, small));
        batches += 1;
    }
    batches
}

fn random_access(duration: Duration, mib: usize) -> u64 {
    let mut buf = vec![1u64; mib * 1024 * 1024 / 8];
    let started = Instant::now();
    let (mut batches, mut x, mut acc) = (0, 7u64, 0u64);
    while started.elapsed() < duration {
        for _ in 0..10_000 {
            x = lcg(x);
            let i = (x >> 17) as usize % buf.len();
            acc = acc.wrapping_add(buf[i]);
            buf[i] = acc;
        }
        batches += 1;
    }
    std::hint::black_box(acc);
    batches
}

/// `struct pm_scan_arg` of linux/fs.h.
#[repr(C)]
#[derive(Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// `struct page_region` of linux/fs.h.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

/// `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: u64 = 0xC060_6610;
const PAGE_IS_WRITTEN: u64 = 1 << 1;
const PAGE_IS_FILE: u64 = 1 << 2;
const PAGE_IS_PRESENT: u64 = 1 << 3;
const PAGE_IS_PFNZERO: u64 = 1 << 5;

/// What wasmtime's pooling allocator does per request with PAGEMAP_SCAN:
/// the guest dirties some pages of its slot, then one ioctl finds them
/// (up to 32) so only those are reset. Fails where the kernel has no
/// PAGEMAP_SCAN (before 6.7).
fn dirty_and_scan(duration: Duration) -> Result<u64, String> {
    const LEN: usize = 2 << 20;
    const PAGE: usize = 4096;
    let pagemap = std::fs::File::open("/proc/self/pagemap")
        .map_err(|e| format!("cannot open /proc/self/pagemap: {e}"))?;
    // The ioctl wants a page-aligned range.
    let mut buffer = vec![0u8; LEN + PAGE];
    let skip = buffer.as_ptr().align_offset(PAGE);
    let slot = &mut buffer[skip..skip + LEN];
    let mut regions = [PageRegion::default(); 32];
    let started = Instant::now();
    let mut batches = 0u64;
    while started.elapsed() < duration {
        for page in 0..40 {
            slot[page * PAGE + (batches as usize % 64)] = batches as u8;
        }
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            start: slot.as_ptr() as u64,
            end: slot.as_ptr() as u64 + LEN as u64,
            vec: regions.as_mut_ptr() as u64,
            vec_len: regions.len() as u64,
            max_pages: 32,
            category_inverted: PAGE_IS_PFNZERO | PAGE_IS_FILE,
            category_mask: PAGE_IS_WRITTEN | PAGE_IS_PRESENT | PAGE_IS_PFNZERO | PAGE_IS_FILE,
            ..Default::default()
        };
        // SAFETY: `arg` and `regions` outlive the call, `vec_len` is the
        // length of `regions`, and the range is memory this thread owns.
        let rc = unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&pagemap),
                PAGEMAP_SCAN as _,
                &mut arg,
            )
        };
        if rc < 0 {
            return Err(format!(
                "PAGEMAP_SCAN failed (Linux >= 6.7 has it): {}",
                std::io::Error::last_os_error()
            ));
        }
        batches += 1;
    }
    Ok(batches)
}
