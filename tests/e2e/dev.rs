//! `outpost dev`: a real Rust project built with the real toolchain,
//! served, and rebuilt and reloaded on each source change; a build that
//! fails is shown and the previous build keeps serving.

use crate::harness::{WAIT, eventually, free_port, outpost_bin};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A project whose handler answers `text`.
fn write_handler(dir: &Path, text: &str) {
    std::fs::write(
        dir.join("src/lib.rs"),
        format!(
            "fn handle(_req: outpost_sdk::Request) -> &'static str {{\n    \"{text}\"\n}}\n\noutpost_sdk::export!(handle);\n"
        ),
    )
    .unwrap();
}

/// `outpost dev` running, its stdout and stderr kept line by line.
struct Dev {
    child: Child,
    output: Arc<Mutex<Vec<String>>>,
}

impl Dev {
    fn wait_output(&self, needle: &str, from: usize) -> usize {
        let deadline = Instant::now() + WAIT;
        loop {
            let lines = self.output.lock().unwrap().clone();
            if let Some(i) = lines[from.min(lines.len())..]
                .iter()
                .position(|l| l.contains(needle))
            {
                return from + i + 1;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in:\n{}",
                lines.join("\n")
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    fn len(&self) -> usize {
        self.output.lock().unwrap().len()
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get(url: &str) -> Option<(u16, String)> {
    match ureq::get(url).call() {
        Ok(r) => Some((r.status(), r.into_string().unwrap())),
        Err(ureq::Error::Status(s, r)) => Some((s, r.into_string().unwrap())),
        Err(_) => None,
    }
}

#[test]
fn dev_builds_serves_and_reloads_on_each_change_and_keeps_the_last_good_build() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let project = tempfile::tempdir().unwrap();
    let dir = project.path();
    std::fs::create_dir(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"devfn\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\noutpost-sdk = {{ path = \"{}\" }}\n\n[workspace]\n",
            repo.join("guest-sdk").display()
        ),
    )
    .unwrap();
    write_handler(dir, "one");
    let (port, admin) = (free_port(), free_port());
    let mut child = Command::new(outpost_bin())
        .arg("dev")
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .arg("--data")
        .arg(dir.join(".outpost-dev"))
        // Shared with the template tests: the SDK's dependencies build once.
        .env("CARGO_TARGET_DIR", repo.join("target/templates/rust"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = Arc::new(Mutex::new(Vec::new()));
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let output = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                output.lock().unwrap().push(line);
            }
        });
    }
    let dev = Dev { child, output };
    let url = format!("http://127.0.0.1:{port}/devfn");
    dev.wait_output(&format!("devfn at {url}"), 0);
    dev.wait_output(&format!("dashboard at http://127.0.0.1:{admin}/"), 0);
    eventually("the first build served", || {
        (get(&url) == Some((200, "one".into()))).then_some(())
    });

    write_handler(dir, "two");
    eventually("the change served", || {
        (get(&url) == Some((200, "two".into()))).then_some(())
    });

    // A broken build: the error is shown, and "two" keeps serving.
    let mark = dev.len();
    std::fs::write(dir.join("src/lib.rs"), "fn handle( {\n").unwrap();
    let after = dev.wait_output("devfn failed to build", mark);
    let shown = dev.output.lock().unwrap()[mark..after].join("\n");
    assert!(shown.contains("error"), "the compiler's error: {shown}");
    assert_eq!(get(&url), Some((200, "two".into())));

    write_handler(dir, "three");
    eventually("the fix served", || {
        (get(&url) == Some((200, "three".into()))).then_some(())
    });
    // Nothing of cargo's in the node's modules folder, nothing skipped.
    let lines = dev.output.lock().unwrap().clone();
    assert!(!lines.iter().any(|l| l.contains("skipping")), "{lines:#?}");
}
