//! Hostile and normal traffic together for about ten seconds: every normal
//! request succeeds, and the host's memory stays bounded.

use crate::harness::{Node, prepare, rss_bytes, write_host_config, write_settings};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[test]
fn hostile_traffic_does_not_hurt_normal_traffic() {
    let dir = prepare(&[("hostile", "hostile"), ("hello", "hello"), ("echo", "echo")]);
    write_settings(
        &dir,
        "hostile",
        "[limits]\ntimeout-ms = 1000\nmax-memory-bytes = 33554432\nmax-response-body-bytes = 1048576\n",
    );
    write_host_config(&dir, "header-read-timeout-ms = 1000\n");
    let node = Node::spawn(dir, Vec::new(), None);
    let stop = Arc::new(AtomicBool::new(false));
    let run_for = Duration::from_secs(10);
    let started = Instant::now();

    let mut hostile = Vec::new();
    for path in [
        "/hostile/loop",
        "/hostile/memory",
        "/hostile/recurse",
        "/hostile/flood?mib=4",
        "/hostile/stream-forever",
        "/hostile/sleep?ms=100000",
    ] {
        let (url, stop) = (node.url(path), stop.clone());
        hostile.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // Any outcome is fine for these; they must not take the
                // host down.
                if let Ok(response) = ureq::get(&url).call() {
                    let _ = std::io::copy(&mut response.into_reader(), &mut std::io::sink());
                }
            }
        }));
    }
    // Slowloris clients trickling headers.
    {
        let (addr, stop) = (node.addr, stop.clone());
        hostile.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(mut s) = std::net::TcpStream::connect(addr) {
                    let _ = s.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }));
    }

    let ok = Arc::new(AtomicU64::new(0));
    let normal: Vec<_> = (0..2)
        .map(|i| {
            let (hello, echo, stop, ok) = (
                node.url("/hello"),
                node.url("/echo/x"),
                stop.clone(),
                ok.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let response = if i == 0 {
                        ureq::get(&hello).call()
                    } else {
                        ureq::post(&echo).send_string("payload")
                    };
                    let response =
                        response.unwrap_or_else(|e| panic!("a normal request failed: {e}"));
                    assert_eq!(response.status(), 200);
                    response.into_string().unwrap();
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let mut peak_rss = 0;
    while started.elapsed() < run_for {
        peak_rss = peak_rss.max(rss_bytes(node.pid()));
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for thread in normal {
        thread.join().expect("normal traffic failed");
    }
    for thread in hostile {
        let _ = thread.join();
    }
    assert!(ok.load(Ordering::Relaxed) > 0);
    assert!(peak_rss > 0, "could not read the host's memory use");
    // Memory bombs are capped at 32 MiB per instance and the rest is
    // bounded by the limits: the host stays far below this.
    assert!(
        peak_rss < 1024 * 1024 * 1024,
        "peak RSS {} MiB",
        peak_rss >> 20
    );
    assert_eq!(node.get("/hello").status, 200);
}
