//! Everything a run needs besides this binary: the built servers, the hello
//! guest, wrk, taskset and wasmtime-cli, each built or installed when missing
//! so anyone can run the harness with one cargo command.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The wasmtime-cli release Outpost embeds (host/Cargo.toml pins `=48.0.8`),
/// so the comparison is between hosts, not between wasmtime versions.
pub const WASMTIME_VERSION: &str = "48.0.8";

pub struct Paths {
    pub root: PathBuf,
    pub target: PathBuf,
}

impl Paths {
    pub fn discover() -> Self {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = manifest
            .join("..")
            .join("..")
            .canonicalize()
            .unwrap_or_else(|_| manifest.join("..").join(".."));
        // Cargo resolves a relative CARGO_TARGET_DIR against the directory it
        // runs in; the children run in the workspace root, so fix it now.
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => std::env::current_dir()
                .map(|cwd| cwd.join(&dir))
                .unwrap_or_else(|_| PathBuf::from(dir)),
            None => root.join("target"),
        };
        Self { root, target }
    }

    fn cargo(&self) -> Command {
        let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cmd.current_dir(&self.root)
            .env("CARGO_TARGET_DIR", &self.target);
        cmd
    }

    /// The build `--bin` names (for A/B runs, or a build from before a
    /// feature), or else this tree's (see [`Paths::outpost`]).
    pub fn outpost_or(&self, bin: Option<&str>) -> Result<PathBuf, String> {
        match bin {
            Some(bin) => std::fs::canonicalize(bin).map_err(|e| format!("--bin {bin}: {e}")),
            None => self.outpost(),
        }
    }

    /// `target/release/outpost`. Always asks cargo (a no-op when fresh): a
    /// binary left over from an older tree may not even take today's flags.
    /// If the tree does not build right now, an existing binary still serves.
    pub fn outpost(&self) -> Result<PathBuf, String> {
        let bin = self.target.join("release").join("outpost");
        let built =
            run(self
                .cargo()
                .args(["build", "--release", "-p", "outpost", "--bin", "outpost"]));
        match built {
            Err(e) if bin.exists() => {
                eprintln!(
                    "load: warning: {e}; measuring the existing {}",
                    bin.display()
                )
            }
            Err(e) => return Err(e),
            Ok(()) => {}
        }
        existing(bin)
    }

    /// `target/release/native-hello`. Always asks cargo (a no-op when fresh):
    /// `cargo run` of the harness builds only the harness binary.
    pub fn native_hello(&self) -> Result<PathBuf, String> {
        run(self.cargo().args([
            "build",
            "--release",
            "-p",
            "outpost-load",
            "--bin",
            "native-hello",
        ]))?;
        existing(self.target.join("release").join("native-hello"))
    }

    /// The component a mode serves: `--wasm PATH` made absolute (`wasmtime
    /// serve` runs in its scratch directory), or else the SDK's hello.
    pub fn served_wasm(&self, wasm: Option<&str>) -> Result<PathBuf, String> {
        match wasm {
            Some(wasm) => std::fs::canonicalize(wasm).map_err(|e| format!("--wasm {wasm}: {e}")),
            None => self.hello_wasm(),
        }
    }

    /// The hello guest, built with `cargo xtask guests` if missing.
    pub fn hello_wasm(&self) -> Result<PathBuf, String> {
        let wasm = self
            .target
            .join("wasm32-wasip2")
            .join("guest")
            .join("hello.wasm");
        if !wasm.exists() {
            // xtask goes on to the Python and JS guests after the Rust ones;
            // hello.wasm is all this needs, so their failure is only a warning.
            if let Err(e) = run(self.cargo().args(["xtask", "guests"])) {
                eprintln!("load: warning: {e}");
            }
        }
        existing(wasm)
    }

    /// A wasmtime-cli binary at [`WASMTIME_VERSION`]: `$OUTPOST_WASMTIME`,
    /// else `wasmtime` on PATH, else `<target>/bench-tools/bin/wasmtime`,
    /// else installed there with `cargo install`.
    pub fn wasmtime(&self) -> Result<PathBuf, String> {
        if let Some(bin) = std::env::var_os("OUTPOST_WASMTIME") {
            let bin = PathBuf::from(bin);
            match version(&bin) {
                Some(v) if v.contains(WASMTIME_VERSION) => {}
                Some(v) => eprintln!(
                    "load: warning: OUTPOST_WASMTIME reports {v:?}, not {WASMTIME_VERSION}"
                ),
                None => return Err(format!("OUTPOST_WASMTIME={bin:?} does not run")),
            }
            return Ok(bin);
        }
        let tools = self.target.join("bench-tools");
        let installed = tools.join("bin").join("wasmtime");
        for candidate in [PathBuf::from("wasmtime"), installed.clone()] {
            if version(&candidate).is_some_and(|v| v.contains(WASMTIME_VERSION)) {
                return Ok(candidate);
            }
        }
        eprintln!(
            "load: wasmtime {WASMTIME_VERSION} not found (set OUTPOST_WASMTIME to use one); \
             installing wasmtime-cli into {}: this takes about 20 minutes, once",
            tools.display()
        );
        run(self
            .cargo()
            .args([
                "install",
                "--locked",
                &format!("wasmtime-cli@{WASMTIME_VERSION}"),
                "--root",
            ])
            .arg(&tools))?;
        existing(installed)
    }
}

/// First line of `bin --version`, if it runs and succeeds.
fn version(bin: &Path) -> Option<String> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn existing(path: PathBuf) -> Result<PathBuf, String> {
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} is still missing after building it",
            path.display()
        ))
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    eprintln!("load: running {cmd:?}");
    let status = cmd
        .status()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed with {status}"))
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// wrk from Debian, installed with apt-get when missing.
pub fn wrk() -> Result<(), String> {
    if on_path("wrk") {
        return Ok(());
    }
    eprintln!("load: wrk is not on PATH; installing Debian's package");
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get").args(["install", "-y", "-qq", "wrk"]))?;
    if on_path("wrk") {
        Ok(())
    } else {
        Err("wrk is still not on PATH after apt-get install".into())
    }
}

/// valgrind (callgrind and callgrind_annotate) from Debian, installed with
/// apt-get when missing.
pub fn valgrind() -> Result<(), String> {
    if on_path("valgrind") && on_path("callgrind_annotate") {
        return Ok(());
    }
    eprintln!("load: valgrind is not on PATH; installing Debian's package");
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get").args(["install", "-y", "-qq", "valgrind"]))?;
    if on_path("valgrind") && on_path("callgrind_annotate") {
        Ok(())
    } else {
        Err("valgrind is still not on PATH after apt-get install".into())
    }
}

/// Pinning is what makes runs comparable; refuse to measure without it.
pub fn taskset() -> Result<(), String> {
    if on_path("taskset") {
        Ok(())
    } else {
        Err("taskset (util-linux) is needed to pin servers and wrk to cores".into())
    }
}
