//! Module files that are hostile or odd: each is logged clearly, and the
//! version already serving keeps serving.

use crate::harness::{Node, eventually};

const HELLO: &str = "Hello from Outpost!\n";

#[test]
fn a_huge_file_is_refused_without_being_read() {
    let node = Node::start(&[("app", "hello")]);
    // Sparse: 300 MiB on paper, nothing on disk.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(node.module_path("app"))
        .unwrap();
    file.set_len(300 * 1024 * 1024).unwrap();
    drop(file);
    let line = node.wait_log(r"load failed.*over the 268435456-byte limit");
    assert!(line.contains("keeps serving"), "{line}");
    assert_eq!(node.get("/app").body, HELLO);
}

#[test]
fn odd_file_names_are_skipped_not_served() {
    let node = Node::start(&[("hello", "hello")]);
    let bytes = std::fs::read(node.module_path("hello")).unwrap();
    for name in [
        "...wasm",
        "UPPER.wasm",
        "sp ace.wasm",
        "tab\there.wasm",
        "-dash.wasm",
        "ünï.wasm",
    ] {
        std::fs::write(node.modules_dir().join(name), &bytes).unwrap();
    }
    for name in ["UPPER", "sp%20ace", "-dash", "..", "%C3%BCn%C3%AF"] {
        eventually("the warnings", || {
            (node.log_matches("skipping").len() >= 6).then_some(())
        });
        assert_eq!(node.get(&format!("/{name}")).status, 404, "{name}");
    }
    assert_eq!(node.get("/_outpost/health").json()["functions"], 1);
}

fn mkfifo(path: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt as _;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0, "mkfifo");
}

#[test]
fn a_fifo_named_like_a_module_is_skipped_and_the_node_gets_ready() {
    let dir = crate::harness::prepare(&[("hello", "hello")]);
    // Opening a FIFO for reading blocks until a writer comes: it must not
    // hold up the first load, nor a later one.
    mkfifo(&dir.path().join("modules").join("x.wasm"));
    let node = Node::spawn(dir, Vec::new(), None);
    node.wait_log(r"x\.wasm is not a regular file");
    assert_eq!(node.get("/hello").body, HELLO);
    mkfifo(&node.modules_dir().join("y.wasm"));
    node.wait_log(r"y\.wasm is not a regular file");
    // A file by that name is there but cannot be loaded: load-failed.
    assert_eq!(node.get("/x").status, 503);
    assert_eq!(node.get("/hello").body, HELLO);
}

/// A mistyped `--modules` is not an empty node in silence: the folder is
/// created (a first run needs it) and the log says so at WARN.
#[test]
fn a_missing_modules_folder_is_created_with_a_warning() {
    let dir = crate::harness::prepare(&[]);
    std::fs::remove_dir_all(dir.path().join("modules")).unwrap();
    let node = Node::spawn(dir, Vec::new(), None);
    let line = node.wait_log(r"WARN.*the modules folder \S+ did not exist and was created");
    assert!(line.contains("--modules"), "{line}");
    assert!(node.modules_dir().is_dir());
    assert_eq!(node.get("/_outpost/health").json()["functions"], 0);
}
