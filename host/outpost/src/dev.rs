//! `outpost dev [PATH...]`: builds function projects (Rust, or the
//! JavaScript and Python projects `outpost new` writes), serves them on a
//! local node, and rebuilds and reloads each on every source change. A build that fails is shown in the
//! terminal and the previous build keeps serving.
//!
//! A build is put into the node's modules folder by a rename (written
//! beside it first), so the node loads it as soon as it lands: no wait for
//! a file cargo is still writing, and none of cargo's own files in the
//! modules folder.

use anyhow::{Context, bail};
use notify::{RecursiveMode, Watcher};
use outpost_edge::config::ServeConfig;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

const TARGET: &str = "wasm32-wasip2";

/// How long source events may keep coming before a rebuild starts: an
/// editor's save is often several writes and a rename.
const SETTLE: Duration = Duration::from_millis(150);

/// Flags for `outpost dev`.
#[derive(clap::Args)]
pub struct DevArgs {
    /// Project folders: a Rust crate that builds a cdylib, or a JavaScript
    /// or Python project as `outpost new` writes them [default: .].
    paths: Vec<PathBuf>,
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Admin listener: dashboard and metrics.
    #[arg(long, default_value = "127.0.0.1:9901")]
    admin_listen: SocketAddr,
    /// The dev node's own folder: its modules, data and build staging.
    #[arg(long, default_value = ".outpost-dev")]
    data: PathBuf,
}

/// One project being developed.
#[derive(Debug, Clone)]
struct Project {
    /// Its folder, canonical (events are matched against it).
    dir: PathBuf,
    /// The function name it is served as: the package name (the folder's
    /// name for Python).
    name: String,
    /// Where the build writes the component.
    artifact: PathBuf,
    kind: Kind,
}

/// How a project is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `cargo build --release --target wasm32-wasip2`.
    Rust,
    /// `npm install` (once), then `npm run build`.
    JavaScript,
    /// A `.venv` with `requirements.txt` (once), then componentize-py.
    Python,
}

/// Where the dev node keeps things.
#[derive(Debug, Clone)]
struct Folders {
    modules: PathBuf,
    staging: PathBuf,
}

/// Runs `outpost dev` until `shutdown` resolves.
pub fn run(args: DevArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        args.paths.clone()
    };
    let projects = paths
        .iter()
        .map(|p| inspect(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for (i, p) in projects.iter().enumerate() {
        if projects[..i].iter().any(|q| q.name == p.name) {
            bail!(
                "two projects are both named {}: {}",
                p.name,
                p.dir.display()
            );
        }
    }
    if projects.iter().any(|p| p.kind == Kind::Rust) {
        ensure_target()?;
    }
    let folders = Folders {
        modules: args.data.join("modules"),
        staging: args.data.join("staging"),
    };
    std::fs::create_dir_all(&folders.modules)
        .and_then(|()| std::fs::create_dir_all(&folders.staging))
        .with_context(|| format!("cannot create {}", args.data.display()))?;
    for project in &projects {
        build_and_install(project, &folders);
    }

    let (events, changes) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(events).context("cannot watch the projects")?;
    for project in &projects {
        watcher
            .watch(&project.dir, RecursiveMode::Recursive)
            .with_context(|| format!("cannot watch {}", project.dir.display()))?;
    }
    {
        let (projects, folders) = (projects.clone(), folders.clone());
        std::thread::Builder::new()
            .name("outpost-dev".into())
            .spawn(move || rebuild_on_change(&projects, &folders, &changes))?;
    }

    for project in &projects {
        println!(
            "outpost dev: {} at http://{}/{}",
            project.name, args.listen, project.name
        );
    }
    println!("outpost dev: dashboard at http://{}/", args.admin_listen);
    println!("outpost dev: watching for changes; Ctrl-C stops");

    let config = ServeConfig {
        listen: args.listen,
        admin_listen: args.admin_listen,
        modules_dir: folders.modules.clone(),
        data_dir: args.data.join("data"),
        // A rename lands whole: no need to wait long for quiet.
        reload_debounce: Duration::from_millis(20),
        shutdown_grace: Duration::from_secs(1),
        ..ServeConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let served = runtime.block_on(outpost_edge::serve(config, shutdown));
    drop(watcher);
    served
}

/// The project at `dir`: its package name (the function's name) and where
/// its component is built.
fn inspect(dir: &Path) -> anyhow::Result<Project> {
    if dir.join("Cargo.toml").is_file() {
        return inspect_rust(dir);
    }
    let canonical = dir
        .canonicalize()
        .with_context(|| format!("no project at {}", dir.display()))?;
    let (name, kind) = if dir.join("package.json").is_file() {
        let text = std::fs::read_to_string(dir.join("package.json"))?;
        let package: serde_json::Value =
            serde_json::from_str(&text).context("package.json is not JSON")?;
        if package["scripts"]["build"].as_str().is_none() {
            bail!("{}/package.json has no `build` script", dir.display());
        }
        let name = package["name"].as_str().unwrap_or_default().to_owned();
        (name, Kind::JavaScript)
    } else if dir.join("requirements.txt").is_file() && dir.join("app.py").is_file() {
        let name = canonical
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        (name, Kind::Python)
    } else {
        bail!(
            "{} is no project `outpost dev` knows: a Rust crate (Cargo.toml), a JavaScript project (package.json with a build script) or a Python one (app.py and requirements.txt); `outpost new NAME` makes one",
            dir.display()
        );
    };
    if !outpost_wire::names::is_valid(&name) {
        bail!(
            "{name:?} cannot be a function name: names are {}",
            outpost_wire::names::RULE
        );
    }
    Ok(Project {
        artifact: canonical.join(format!("{name}.wasm")),
        dir: canonical,
        name,
        kind,
    })
}

/// A Rust crate: its package name and where cargo writes its component.
fn inspect_rust(dir: &Path) -> anyhow::Result<Project> {
    let manifest = dir.join("Cargo.toml");
    let output = Command::new("cargo")
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .context("cannot run cargo metadata")?;
    if !output.status.success() {
        bail!(
            "cargo metadata failed for {}: {}",
            manifest.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("cargo metadata's answer")?;
    let canonical = manifest.canonicalize()?;
    let package = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["manifest_path"].as_str().map(Path::new) == Some(canonical.as_path()))
        .with_context(|| format!("{} has no [package]", manifest.display()))?;
    let name = package["name"].as_str().unwrap_or_default().to_owned();
    if !outpost_wire::names::is_valid(&name) {
        bail!(
            "the package name {name:?} cannot be a function name: names are {}",
            outpost_wire::names::RULE
        );
    }
    let library = package["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| {
            t["crate_types"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c == "cdylib"))
        })
        .with_context(|| {
            format!(
                "{} builds no component: add `[lib] crate-type = [\"cdylib\"]`",
                manifest.display()
            )
        })?;
    let file = library["name"]
        .as_str()
        .unwrap_or_default()
        .replace('-', "_");
    let target_dir = metadata["target_directory"]
        .as_str()
        .context("cargo metadata gave no target directory")?;
    Ok(Project {
        dir: canonical
            .parent()
            .expect("a manifest is in a folder")
            .to_owned(),
        name,
        artifact: Path::new(target_dir)
            .join(TARGET)
            .join("release")
            .join(format!("{file}.wasm")),
        kind: Kind::Rust,
    })
}

/// Adds the wasm32-wasip2 target when rustup lacks it.
fn ensure_target() -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("rustup is needed to add the wasm32-wasip2 target")?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == TARGET)
    {
        return Ok(());
    }
    println!("outpost dev: adding the {TARGET} target");
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()?;
    if !status.success() {
        bail!("rustup target add {TARGET} failed");
    }
    Ok(())
}

/// Builds `project`; on success puts the component (and `NAME.toml`, when
/// the project has one) into the modules folder. A failure leaves what is
/// there, so the previous build keeps serving.
fn build_and_install(project: &Project, folders: &Folders) {
    println!("outpost dev: building {}", project.name);
    match build(project) {
        Ok(s) if s.success() => {}
        Ok(_) => {
            println!(
                "outpost dev: {} failed to build (above); the previous build keeps serving",
                project.name
            );
            return;
        }
        Err(e) => {
            println!("outpost dev: cannot run cargo: {e}");
            return;
        }
    }
    let settings = project.dir.join(format!("{}.toml", project.name));
    let installed = (|| -> std::io::Result<()> {
        if settings.is_file() {
            place(&settings, folders, &format!("{}.toml", project.name))?;
        }
        place(
            &project.artifact,
            folders,
            &format!("{}.wasm", project.name),
        )
    })();
    match installed {
        Ok(()) => println!("outpost dev: {} built; serving it", project.name),
        Err(e) => println!(
            "outpost dev: cannot install {}: {e}",
            project.artifact.display()
        ),
    }
}

/// Runs the project's build, its output in the terminal.
fn build(project: &Project) -> std::io::Result<std::process::ExitStatus> {
    let run = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .current_dir(&project.dir)
            .status()
    };
    match project.kind {
        Kind::Rust => Command::new("cargo")
            .args(["build", "--release", "--target", TARGET, "--manifest-path"])
            .arg(project.dir.join("Cargo.toml"))
            .status(),
        Kind::JavaScript => {
            if !project.dir.join("node_modules").is_dir() {
                let installed = run("npm", &["install"])?;
                if !installed.success() {
                    return Ok(installed);
                }
            }
            run("npm", &["run", "build"])
        }
        Kind::Python => {
            let venv = project.dir.join(".venv");
            if !venv.join("bin/componentize-py").is_file() {
                let made = run("python3", &["-m", "venv", ".venv"])?;
                if !made.success() {
                    return Ok(made);
                }
                let installed = run(".venv/bin/pip", &["install", "-r", "requirements.txt"])?;
                if !installed.success() {
                    return Ok(installed);
                }
            }
            let out = format!("{}.wasm", project.name);
            run(
                ".venv/bin/componentize-py",
                &[
                    "-d",
                    "wit",
                    "-w",
                    "app",
                    "componentize",
                    "-p",
                    ".",
                    "app",
                    "-o",
                    &out,
                ],
            )
        }
    }
}

/// Copies `from` into the modules folder as `file`: written in the staging
/// folder, then renamed in, so the node never sees it half-written.
fn place(from: &Path, folders: &Folders, file: &str) -> std::io::Result<()> {
    let staged = folders.staging.join(file);
    std::fs::copy(from, &staged)?;
    std::fs::rename(&staged, folders.modules.join(file))
}

/// Rebuilds each project whose sources change; build output and hidden
/// folders (`target/`, `node_modules/`, `__pycache__/`, `.git/`, `.venv/`,
/// the dev folder, any `.wasm`) are not sources.
fn rebuild_on_change(
    projects: &[Project],
    folders: &Folders,
    changes: &mpsc::Receiver<notify::Result<notify::Event>>,
) {
    let mut dirty: Vec<bool> = vec![false; projects.len()];
    while let Ok(first) = changes.recv() {
        let mut mark = |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if event.kind.is_access() {
                return;
            }
            for path in &event.paths {
                for (i, project) in projects.iter().enumerate() {
                    if is_source(&project.dir, path) {
                        dirty[i] = true;
                    }
                }
            }
        };
        mark(first);
        while let Ok(more) = changes.recv_timeout(SETTLE) {
            mark(more);
        }
        for (i, project) in projects.iter().enumerate() {
            if std::mem::take(&mut dirty[i]) {
                build_and_install(project, folders);
            }
        }
    }
}

/// Whether `path` is one of `dir`'s sources.
fn is_source(dir: &Path, path: &Path) -> bool {
    let Ok(rest) = path.strip_prefix(dir) else {
        return false;
    };
    rest.components().all(|c| {
        let part = c.as_os_str().to_string_lossy();
        !part.starts_with('.')
            && !matches!(&*part, "target" | "node_modules" | "__pycache__")
            && !part.ends_with('~')
            && !part.ends_with(".wasm")
    })
}

#[cfg(test)]
mod tests {
    use super::{Kind, inspect, is_source};
    use std::path::Path;

    #[test]
    fn javascript_and_python_projects_are_recognised_and_named() {
        let js = tempfile::tempdir().unwrap();
        std::fs::write(
            js.path().join("package.json"),
            r#"{"name":"shop","scripts":{"build":"componentize-js app.js -o shop.wasm"}}"#,
        )
        .unwrap();
        let project = inspect(js.path()).unwrap();
        assert_eq!(
            (project.name.as_str(), project.kind),
            ("shop", Kind::JavaScript)
        );
        assert!(project.artifact.ends_with("shop.wasm"));

        let root = tempfile::tempdir().unwrap();
        let py = root.path().join("greeter");
        std::fs::create_dir(&py).unwrap();
        std::fs::write(py.join("app.py"), "").unwrap();
        std::fs::write(py.join("requirements.txt"), "").unwrap();
        let project = inspect(&py).unwrap();
        assert_eq!(
            (project.name.as_str(), project.kind),
            ("greeter", Kind::Python)
        );

        let bad = tempfile::tempdir().unwrap();
        std::fs::write(
            bad.path().join("package.json"),
            r#"{"name":"Shop","scripts":{"build":"x"}}"#,
        )
        .unwrap();
        let error = inspect(bad.path()).unwrap_err().to_string();
        assert!(error.contains("cannot be a function name"), "{error}");
        let empty = tempfile::tempdir().unwrap();
        let error = inspect(empty.path()).unwrap_err().to_string();
        assert!(error.contains("outpost new NAME"), "{error}");
    }

    #[test]
    fn only_sources_count_as_changes() {
        let dir = Path::new("/p");
        assert!(is_source(dir, Path::new("/p/src/lib.rs")));
        assert!(is_source(dir, Path::new("/p/Cargo.toml")));
        assert!(!is_source(dir, Path::new("/p/target/release/x.wasm")));
        assert!(!is_source(dir, Path::new("/p/.git/index")));
        assert!(!is_source(dir, Path::new("/p/.outpost-dev/modules/x.wasm")));
        assert!(!is_source(dir, Path::new("/p/src/lib.rs~")));
        assert!(!is_source(dir, Path::new("/q/src/lib.rs")));
        assert!(is_source(dir, Path::new("/p/app.js")));
        assert!(!is_source(dir, Path::new("/p/node_modules/x/index.js")));
        assert!(!is_source(dir, Path::new("/p/app.wasm")));
        assert!(!is_source(dir, Path::new("/p/__pycache__/app.pyc")));
    }
}
