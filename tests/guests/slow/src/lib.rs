//! Sleeps for `?ms=N` milliseconds (default 500), then answers `slow`.
//! Keeps requests in flight while a test swaps the module under them.

use outpost_sdk::Request;

fn handle(req: Request) -> String {
    let ms: u64 = req
        .uri()
        .query()
        .and_then(|q| q.strip_prefix("ms="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    wasip2::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
    format!("slow {ms}\n")
}

outpost_sdk::export!(handle);
