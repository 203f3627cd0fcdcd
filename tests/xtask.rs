//! `cargo xtask`: the project's two commands, with all their set-up.
//!
//! - `cargo xtask serve [ARGS...]` adds the wasm32-wasip2 target if missing,
//!   builds the example functions into `modules/`, and runs
//!   `outpost serve ARGS...` (release build) with the default data dir.
//! - `cargo xtask test` adds the target, builds every guest once, installs
//!   chromium and chromedriver (for the dashboard test) and PostgreSQL's
//!   server binaries (for the tests that start a private cluster) with
//!   apt-get if missing, checks formatting and clippy, and runs the whole
//!   test suite.
//! - `cargo xtask guests` only builds the guests.
//!
//! Std only, so `cargo xtask` itself compiles in seconds.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const TARGET: &str = "wasm32-wasip2";
/// Cargo profile for guests (see the workspace Cargo.toml).
const GUEST_PROFILE: &str = "guest";
/// Example functions: built by `serve` into `modules/`.
const EXAMPLES: &[&str] = &["hello", "echo", "counter", "profile", "orders"];
/// Test-only guests, built for `test` beside the examples, and the
/// benchmarks' reference guest (`bare-hello`, checked by a test too).
const TEST_GUESTS: &[&str] = &[
    "stateful",
    "trap",
    "slow",
    "bad-import",
    "kvtest",
    "hostile",
    "configtest",
    "kvstd",
    "cachetest",
    "bare-hello",
];
/// Pinned versions of the other toolchains the suite builds guests with.
const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";
const COMPONENTIZE_JS: &str = "@bytecodealliance/componentize-js@0.23.0";
/// The wasi:http version StarlingMonkey (inside componentize-js 0.23)
/// exports; its WIT must name exactly that version.
const COMPONENTIZE_JS_WASI: &str = "0.2.10";
/// The WASI version vendored in `wit/deps`.
const VENDORED_WASI: &str = "0.2.12";

/// The workspace root. `cargo run` passes the package's directory at run
/// time; that wins over the one compiled in, because two checkouts sharing
/// one `CARGO_TARGET_DIR` share this binary, and the compiled-in path would
/// then point at whichever checkout built it last.
fn root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest_dir
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

/// Whether `program` runs (is on PATH).
fn on_path(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether PostgreSQL's server binaries are where `outpost-pg-cluster`
/// looks for them: `$OUTPOST_PG_BIN`, `pg_config --bindir`, or
/// `/usr/lib/postgresql/*/bin`.
fn postgres_installed() -> bool {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("OUTPOST_PG_BIN") {
        // Set means meant: the cluster uses only this dir, so apt can't help.
        return has_server(Path::new(&dir));
    }
    let pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .is_ok_and(|o| {
            o.status.success() && has_server(Path::new(String::from_utf8_lossy(&o.stdout).trim()))
        });
    pg_config
        || std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .any(|entry| has_server(&entry.path().join("bin")))
}

/// Installs with apt-get (one update, one install) the Debian packages the
/// suite needs when they are missing: chromium and chromedriver, which the
/// dashboard test drives, and `postgresql`, whose initdb and pg_ctl the
/// tests use to start their own private cluster (the package also creates
/// the `postgres` user the server runs as when the tests run as root).
fn ensure_apt_packages() -> Result<(), String> {
    let mut missing = Vec::new();
    if !on_path("chromedriver") {
        eprintln!("xtask: installing chromium and chromium-driver for the dashboard test");
        missing.extend(["chromium", "chromium-driver"]);
    }
    if !postgres_installed() {
        if std::env::var_os("OUTPOST_PG_BIN").is_some() {
            return Err("OUTPOST_PG_BIN is set but holds no initdb and pg_ctl".into());
        }
        eprintln!("xtask: installing postgresql for the tests that start a PostgreSQL cluster");
        missing.push("postgresql");
    }
    if missing.is_empty() {
        return Ok(());
    }
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    run(Command::new("apt-get")
        // tzdata, which postgresql pulls in, would ask for a time zone.
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing))
}

/// True when `out` exists and is newer than `source`.
fn fresh(out: &Path, source: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    matches!((modified(out), modified(source)), (Some(o), Some(s)) if o >= s)
}

/// Builds the Python and JavaScript test guests into `target/foreign/`,
/// installing componentize-py (PyPI) and componentize-js (npm) there first.
/// They prove that components from other toolchains load and serve.
fn build_foreign_guests() -> Result<(), String> {
    let dir = target_dir().join("foreign");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {dir:?}: {e}"))?;
    let guests = root().join("tests").join("guests");

    let venv = dir.join("pyenv");
    let componentize_py = venv.join("bin").join("componentize-py");
    if !componentize_py.exists() {
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
        run(Command::new(venv.join("bin").join("pip")).args([
            "install",
            "--quiet",
            COMPONENTIZE_PY,
        ]))?;
    }
    let py_src = guests.join("python");
    let py_out = dir.join("python.wasm");
    if !fresh(&py_out, &py_src.join("app.py")) {
        run(Command::new(&componentize_py)
            .current_dir(&dir)
            .arg("-d")
            .arg(root().join("wit"))
            .args([
                "-w",
                &format!("wasi:http/proxy@{VENDORED_WASI}"),
                "componentize",
                "-p",
            ])
            .arg(&py_src)
            .args(["app", "-o"])
            .arg(&py_out))?;
    }

    let js = dir.join("js");
    let componentize_js = js.join("node_modules").join(".bin").join("componentize-js");
    if !componentize_js.exists() {
        run(Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&js)
            .arg(COMPONENTIZE_JS))?;
    }
    let js_src = guests.join("js").join("app.js");
    let js_out = dir.join("javascript.wasm");
    if !fresh(&js_out, &js_src) {
        let wit = dir.join("js-wit");
        write_wasi_wit_at(&wit, COMPONENTIZE_JS_WASI)?;
        run(Command::new(&componentize_js)
            .arg(&js_src)
            .arg("--wit")
            .arg(&wit)
            .args(["-n", "app", "-o"])
            .arg(&js_out))?;
    }
    Ok(())
}

/// Writes a copy of the vendored WASI WIT relabelled as `version` (same
/// 0.2 interfaces), plus a world that includes the proxy world at it.
fn write_wasi_wit_at(wit: &Path, version: &str) -> Result<(), String> {
    let deps = wit.join("deps");
    std::fs::create_dir_all(&deps).map_err(|e| format!("cannot create {deps:?}: {e}"))?;
    let entries = std::fs::read_dir(root().join("wit").join("deps")).map_err(|e| e.to_string())?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{path:?}: {e}"))?;
        let mut text = text.replace(&format!("@{VENDORED_WASI}"), &format!("@{version}"));
        // Feature gates may not name versions newer than the package.
        for newer in ["0.2.11", "0.2.12"] {
            text = text.replace(
                &format!("@since(version = {newer})"),
                "@since(version = 0.2.0)",
            );
        }
        std::fs::write(deps.join(path.file_name().unwrap()), text).map_err(|e| e.to_string())?;
    }
    let world =
        format!("package local:app;\nworld app {{\n  include wasi:http/proxy@{version};\n}}\n");
    std::fs::write(wit.join("world.wit"), world).map_err(|e| e.to_string())
}

fn serve(args: &[String]) -> Result<(), String> {
    build_guests(EXAMPLES)?;
    let modules = root().join("modules");
    std::fs::create_dir_all(&modules).map_err(|e| format!("cannot create {modules:?}: {e}"))?;
    for name in EXAMPLES {
        let to = modules.join(format!("{name}.wasm"));
        std::fs::copy(guest_wasm(name), &to).map_err(|e| format!("cannot copy to {to:?}: {e}"))?;
        // An example's settings (NAME.toml beside its Cargo.toml) go along.
        let settings = root()
            .join("examples")
            .join(name)
            .join(format!("{name}.toml"));
        if settings.exists() {
            let to = modules.join(format!("{name}.toml"));
            std::fs::copy(&settings, &to).map_err(|e| format!("cannot copy to {to:?}: {e}"))?;
        }
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
    build_foreign_guests()?;
    ensure_apt_packages()?;
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
    // Benchmarks only have to compile here (running them is for people,
    // not CI); the dev profile reuses the test build instead of a second,
    // optimised build of wasmtime.
    run(cargo().args(["bench", "--no-run", "--profile", "dev"]))?;
    // The e2e suite runs the `outpost` binary itself; `cargo test` alone
    // builds only its test harness variant.
    run(cargo().args(["build", "-p", "outpost", "--bin", "outpost"]))?;
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
            build_guests(&all).and_then(|()| build_foreign_guests())
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
