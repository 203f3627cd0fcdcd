//! `cargo xtask`: the project's two commands, with all their set-up.
//!
//! - `cargo xtask serve [ARGS...]` adds the wasm32-wasip2 target if missing,
//!   builds the example functions into `modules/`, and runs
//!   `outpost serve ARGS...` (release build) with the default data dir.
//! - `cargo xtask test` adds the target, builds every guest once, checks
//!   formatting and clippy, and runs the whole test suite.
//! - `cargo xtask guests` only builds the guests.
//!
//! Std only, so `cargo xtask` itself compiles in seconds.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const TARGET: &str = "wasm32-wasip2";
/// Cargo profile for guests (see the workspace Cargo.toml).
const GUEST_PROFILE: &str = "guest";
/// Example functions: built by `serve` into `modules/`.
const EXAMPLES: &[&str] = &["hello", "echo"];
/// Test-only guests, built for `test` beside the examples.
const TEST_GUESTS: &[&str] = &["stateful", "trap", "slow", "bad-import"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// Runs `cmd`, failing with its description if it does not succeed.
fn run(cmd: &mut Command) -> Result<(), String> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd
        .status()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed with {status}"))
    }
}

fn ensure_target() -> Result<(), String> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|e| format!("rustup is needed to add the {TARGET} target: {e}"))?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == TARGET)
    {
        return Ok(());
    }
    run(Command::new("rustup").args(["target", "add", TARGET]))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// Where a built guest lands (cargo turns `-` into `_` in library names).
fn guest_wasm(name: &str) -> PathBuf {
    target_dir()
        .join(TARGET)
        .join(GUEST_PROFILE)
        .join(format!("{}.wasm", name.replace('-', "_")))
}

fn build_guests(names: &[&str]) -> Result<(), String> {
    ensure_target()?;
    let mut cmd = cargo();
    cmd.args(["build", "--target", TARGET, "--profile", GUEST_PROFILE]);
    for name in names {
        cmd.args(["-p", name]);
    }
    run(&mut cmd)
}

fn serve(args: &[String]) -> Result<(), String> {
    build_guests(EXAMPLES)?;
    let modules = root().join("modules");
    std::fs::create_dir_all(&modules).map_err(|e| format!("cannot create {modules:?}: {e}"))?;
    for name in EXAMPLES {
        let to = modules.join(format!("{name}.wasm"));
        std::fs::copy(guest_wasm(name), &to).map_err(|e| format!("cannot copy to {to:?}: {e}"))?;
    }
    eprintln!("xtask: examples are in {}", modules.display());
    let mut cmd = cargo();
    cmd.args(["run", "--release", "-p", "outpost", "--", "serve"])
        .args(args);
    run(&mut cmd)
}

fn test(args: &[String]) -> Result<(), String> {
    let all: Vec<&str> = EXAMPLES.iter().chain(TEST_GUESTS).copied().collect();
    build_guests(&all)?;
    let lint = !args.iter().any(|a| a == "--no-lint");
    let rest: Vec<&String> = args.iter().filter(|a| *a != "--no-lint").collect();
    if lint {
        run(cargo().args(["fmt", "--all", "--", "--check"]))?;
        run(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
        let mut guests = cargo();
        guests.args(["clippy", "--target", TARGET, "--profile", GUEST_PROFILE]);
        for name in &all {
            guests.args(["-p", name]);
        }
        run(guests.args(["--", "-D", "warnings"]))?;
    }
    // The default members: host, SDK (with its doc test) and the e2e suite.
    run(cargo().args(["test"]).args(rest))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("test") => test(&args[1..]),
        Some("guests") => {
            let all: Vec<&str> = EXAMPLES.iter().chain(TEST_GUESTS).copied().collect();
            build_guests(&all)
        }
        _ => Err("usage: cargo xtask serve [outpost serve flags...] | test [--no-lint] [cargo test args...] | guests".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
