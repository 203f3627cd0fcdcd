//! Hot reload: every change to the modules folder takes effect without a
//! restart, and no bad or half-written file ever replaces a working version.

use crate::harness::{Node, deploy_atomic, eventually, guest_bytes};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const HELLO: &str = "Hello from Outpost!\n";

fn is_echo(body: &str) -> bool {
    body.starts_with("{\"")
}

#[test]
fn replacing_a_file_serves_the_new_version() {
    let node = Node::start(&[("app", "hello")]);
    assert_eq!(node.get("/app").body, HELLO);
    // A plain overwrite, as `cp` does it.
    std::fs::write(node.module_path("app"), guest_bytes("echo")).unwrap();
    eventually("the new version", || {
        is_echo(&node.get("/app").body).then_some(())
    });
    node.wait_log(r"reloaded.*function=app|function=app.*reloaded");
}

#[test]
fn a_new_file_is_served_and_a_deleted_one_answers_404() {
    let node = Node::start(&[("hello", "hello")]);
    assert_eq!(node.get("/later").status, 404);
    deploy_atomic(&node.module_path("later"), &guest_bytes("hello"));
    node.wait_for("/later", 200, HELLO);

    std::fs::remove_file(node.module_path("later")).unwrap();
    eventually("404 after delete", || {
        (node.get("/later").status == 404).then_some(())
    });
    node.wait_log(r"function=later.*removed|removed.*function=later");
    assert_eq!(
        node.get("/hello").status,
        200,
        "other functions are untouched"
    );
}

#[test]
fn renaming_moves_the_route() {
    let node = Node::start(&[("before", "hello")]);
    std::fs::rename(node.module_path("before"), node.module_path("after")).unwrap();
    node.wait_for("/after", 200, HELLO);
    eventually("old name gone", || {
        (node.get("/before").status == 404).then_some(())
    });
}

#[test]
fn invalid_files_never_replace_the_serving_version() {
    let node = Node::start(&[("app", "hello")]);
    let hello = guest_bytes("hello");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "random bytes",
            (0..4096).map(|i| (i * 7919 % 251) as u8).collect(),
            "not a WebAssembly binary",
        ),
        ("empty file", Vec::new(), "file is empty"),
        (
            "truncated component",
            hello[..hello.len() / 2].to_vec(),
            "invalid component",
        ),
        (
            "core module",
            b"\0asm\x01\0\0\0".to_vec(),
            "core WebAssembly module, not a component",
        ),
        (
            "unknown import",
            guest_bytes("bad-import"),
            "imports something Outpost does not provide.*outpost:test/nope",
        ),
    ];
    for (what, bytes, reason) in cases {
        let mark = node.log_len();
        std::fs::write(node.module_path("app"), &bytes).unwrap();
        let line = node.wait_log_after(r"load failed", mark);
        assert!(
            regex::Regex::new(reason).unwrap().is_match(&line),
            "{what}: {line}"
        );
        assert!(line.contains("keeps serving"), "{what}: {line}");
        let reply = node.get("/app");
        assert_eq!((reply.status, reply.body.as_str()), (200, HELLO), "{what}");
    }
    // And a good file after all that is picked up again.
    std::fs::write(node.module_path("app"), guest_bytes("echo")).unwrap();
    eventually("recovery", || is_echo(&node.get("/app").body).then_some(()));
}

/// A name whose only file failed to load answers 503 `load-failed` with
/// an error id, not a 404 as if nothing were there; the reason stays in
/// the log. A good file ends it; deleting the bad one makes it a 404.
#[test]
fn a_bad_first_version_answers_load_failed_until_a_good_one_arrives() {
    let node = Node::start(&[("hello", "hello")]);
    std::fs::write(node.module_path("broken"), b"\0asm\x01\0\0\0").unwrap();
    node.wait_log(r"load failed; function not served.*|function=broken.*load failed");
    let reply = node.get("/broken/x");
    assert_eq!(reply.status, 503, "{}", reply.body);
    let doc = reply.json();
    assert_eq!(doc["error"], "load-failed");
    let id = doc["id"].as_str().unwrap();
    assert_eq!(reply.header("x-outpost-error-id"), Some(id));
    assert_eq!(reply.header("retry-after"), Some("5"));
    assert!(
        !reply.body.contains("wasm"),
        "no load detail for the client: {}",
        reply.body
    );
    let line = node.wait_log(&format!("WARN.*error_id={id}"));
    assert!(line.contains("function=broken"), "{line}");

    std::fs::copy(crate::harness::guest("hello"), node.module_path("broken")).unwrap();
    node.wait_for("/broken", 200, HELLO);
    std::fs::write(node.module_path("other"), b"not wasm").unwrap();
    eventually("503 for other", || {
        (node.get("/other").status == 503).then_some(())
    });
    std::fs::remove_file(node.module_path("other")).unwrap();
    eventually("404 once deleted", || {
        (node.get("/other").status == 404).then_some(())
    });
}

#[test]
fn a_slow_chunked_copy_is_never_loaded_half_written() {
    let node = Node::start(&[("app", "hello")]);
    let echo = guest_bytes("echo");
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let poller = {
        let (stop, seen, url) = (stop.clone(), seen.clone(), node.url("/app"));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let (status, body) = match ureq::get(&url).call() {
                    Ok(r) => (r.status(), r.into_string().unwrap()),
                    Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap()),
                    Err(e) => panic!("{e}"),
                };
                seen.lock().unwrap().push((status, body));
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    // Chunks arrive further apart than the reload debounce: only the close
    // of the file may trigger a load.
    let mut file = std::fs::File::create(node.module_path("app")).unwrap();
    let chunks = echo.chunks(echo.len().div_ceil(6));
    for chunk in chunks {
        file.write_all(chunk).unwrap();
        file.flush().unwrap();
        std::thread::sleep(Duration::from_millis(400));
    }
    drop(file);
    eventually("the copied version", || {
        is_echo(&node.get("/app").body).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    poller.join().unwrap();

    let seen = seen.lock().unwrap();
    assert!(seen.len() > 10, "the poller ran during the copy");
    for (status, body) in seen.iter() {
        assert_eq!(*status, 200, "{body}");
        assert!(body == HELLO || is_echo(body), "{body}");
    }
    assert!(
        node.log_matches("load failed").is_empty(),
        "a partial file was loaded"
    );
    assert_eq!(
        node.log_matches(r"reloaded").len(),
        1,
        "exactly one reload, after the copy completed"
    );
}

#[test]
fn requests_in_flight_during_a_swap_finish_on_their_version() {
    let node = Node::start(&[("app", "slow")]);
    let requests: Vec<_> = (0..16)
        .map(|_| {
            let url = node.url("/app?ms=8000");
            std::thread::spawn(move || {
                let response = ureq::get(&url).call().unwrap();
                (
                    response.status(),
                    response.into_string().unwrap(),
                    Instant::now(),
                )
            })
        })
        .collect();
    // Let the requests reach their instances, then swap the module.
    std::thread::sleep(Duration::from_millis(500));
    deploy_atomic(&node.module_path("app"), &guest_bytes("hello"));
    node.wait_for("/app", 200, HELLO);
    let swapped = Instant::now();
    for request in requests {
        let (status, body, finished) = request.join().unwrap();
        assert_eq!((status, body.as_str()), (200, "slow 8000\n"));
        assert!(
            finished > swapped,
            "this request was in flight across the swap"
        );
    }
}

#[test]
fn requests_during_repeated_swaps_all_succeed() {
    let node = Node::start(&[("app", "hello")]);
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, url) = (stop.clone(), node.url("/app"));
            std::thread::spawn(move || {
                let mut count = 0;
                while !stop.load(Ordering::Relaxed) {
                    let response = ureq::get(&url)
                        .call()
                        .expect("request failed during a swap");
                    let body = response.into_string().unwrap();
                    assert!(body == HELLO || is_echo(&body), "{body}");
                    count += 1;
                }
                count
            })
        })
        .collect();
    let versions = [guest_bytes("echo"), guest_bytes("hello")];
    for round in 0..10 {
        let mark = node.log_len();
        deploy_atomic(&node.module_path("app"), &versions[round % 2]);
        node.wait_log_after(r"reloaded", mark);
    }
    stop.store(true, Ordering::Relaxed);
    let total: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert!(total > 0);
}

#[test]
fn symlinks_may_point_inside_the_folder_but_not_out_of_it() {
    let node = Node::start(&[("hello", "hello")]);
    std::os::unix::fs::symlink("hello.wasm", node.module_path("alias")).unwrap();
    node.wait_for("/alias", 200, HELLO);

    let outside = node.dir.path().join("outside.wasm");
    std::fs::copy(crate::harness::guest("hello"), &outside).unwrap();
    std::os::unix::fs::symlink(&outside, node.module_path("escape")).unwrap();
    let line = node.wait_log(r"load failed.*resolves outside the modules folder");
    assert!(line.contains("function=escape"), "{line}");
    assert_eq!(node.get("/escape").status, 503);
}

/// A refused `NAME.toml` is named in one log line (TOML's own message
/// spans several), and putting the last good content back clears the
/// error shown by the admin API, without a reload.
#[test]
fn a_bad_settings_file_is_named_on_one_line_and_undoing_it_clears_the_error() {
    let good = "[limits]\ntimeout-ms = 5000\n";
    let dir = crate::harness::prepare(&[("app", "hello")]);
    crate::harness::write_settings(&dir, "app", good);
    let node = Node::spawn(dir, Vec::new(), None);
    assert_eq!(node.get("/app").body, HELLO);
    let mark = node.log_len();
    node.write_settings("app", "[limits]\ntimeout-ms = 5000\nmax-memory = 1\n");
    let line = node.wait_log_after("load failed", mark);
    assert!(line.contains("error=app.toml: "), "{line}");
    assert!(line.contains("max-memory"), "{line}");
    assert!(line.contains("keeps serving"), "{line}");
    let stray: Vec<String> = node.log_lines()[mark..]
        .iter()
        .filter(|l| !l.contains(" outpost") && !l.starts_with('{'))
        .cloned()
        .collect();
    assert!(
        stray.is_empty(),
        "lines that are not log records: {stray:#?}"
    );
    let last_error = |node: &Node| {
        node.admin_get("/functions", &[]).json()["functions"][0]["last_error"].clone()
    };
    assert!(
        last_error(&node)["message"]
            .as_str()
            .unwrap()
            .starts_with("app.toml: ")
    );

    node.write_settings("app", good);
    eventually("the error cleared", || {
        last_error(&node).is_null().then_some(())
    });
    let events = node.admin_get("/events?limit=5", &[]).json();
    assert_eq!(events["events"][0]["kind"], "restored", "{events}");
    assert_eq!(node.get("/app").body, HELLO);
}

/// `--modules` pointed at a cargo target folder: cargo's own files are no
/// warnings, and a build that appears as a hard link (as cargo makes
/// `NAME.wasm` beside `deps/NAME.wasm`) is loaded without waiting for a
/// close that never comes (here the wait for one is made ten minutes).
#[test]
fn a_cargo_target_folder_serves_each_build_without_warnings_or_the_long_wait() {
    let dir = crate::harness::prepare(&[]);
    std::fs::write(
        dir.path().join("outpost.toml"),
        "reload-max-wait-ms = 600000\n",
    )
    .unwrap();
    let node = Node::spawn(dir, Vec::new(), None);
    let modules = node.modules_dir();
    std::fs::create_dir(modules.join("deps")).unwrap();
    std::fs::create_dir(modules.join(".fingerprint")).unwrap();
    std::fs::write(modules.join("libapp.rlib"), b"!<arch>").unwrap();
    std::fs::write(modules.join("app.d"), b"app.wasm: src/lib.rs").unwrap();
    std::fs::copy(
        crate::harness::guest("hello"),
        modules.join("deps/app.wasm"),
    )
    .unwrap();
    std::fs::hard_link(modules.join("deps/app.wasm"), modules.join("app.wasm")).unwrap();
    node.wait_for("/app", 200, HELLO);
    let warnings = node.log_matches("WARN.*skipping");
    assert!(warnings.is_empty(), "{warnings:#?}");
}
