//! `outpost new`: each language's project, built with the real toolchain
//! the way its printed next steps say, serves its greeting from a running
//! node; bad names and used folders are refused.
//!
//! The toolchains are the ones `cargo xtask test` installs (the
//! wasm32-wasip2 target, componentize-js and componentize-py under
//! `target/foreign/`), as for `toolchains.rs`.

use crate::harness::{Node, outpost_bin};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository's `target/`.
fn target_dir() -> PathBuf {
    outpost_bin()
        .parent()
        .and_then(Path::parent)
        .expect("the binary lives in target/<profile>/")
        .to_path_buf()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Runs `outpost new ARGS` in `cwd`.
fn outpost_new(cwd: &Path, args: &[&str]) -> Output {
    Command::new(outpost_bin())
        .current_dir(cwd)
        .arg("new")
        .args(args)
        .output()
        .expect("run outpost new")
}

/// Runs `cmd`, panicking with its output if it fails.
fn run(cmd: &mut Command) {
    let output = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        output.status.success(),
        "{cmd:?} failed with {}:\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The (name, version) pairs of the project's `Cargo.lock`.
fn locked_packages(project: &Path) -> BTreeSet<(String, String)> {
    let lock = std::fs::read_to_string(project.join("Cargo.lock")).expect("Cargo.lock");
    let value = |line: &str, key: &str| {
        line.strip_prefix(key)
            .map(|v| v.trim_matches('"').to_owned())
    };
    let mut packages = BTreeSet::new();
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if let Some(name) = value(line, "name = ") {
            let version = lines.next().and_then(|l| value(l, "version = "));
            packages.insert((name, version.expect("version after name")));
        }
    }
    packages
}

/// What `outpost new` told the user to run: the build command and the
/// component's path (the `cp` line's source), both relative to the project.
struct NextSteps {
    build: String,
    artifact: String,
}

/// Creates the project `name` in a new temporary folder.
fn create(name: &str, lang: &str) -> (tempfile::TempDir, PathBuf, NextSteps) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let output = outpost_new(tmp.path(), &[name, "--lang", lang]);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "outpost new {name} --lang {lang}: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let step = |prefix: &str| {
        stdout
            .lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` step in:\n{stdout}"))
            .to_owned()
    };
    assert_eq!(step("cd "), name, "{stdout}");
    let build = stdout
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("cd "))
        .nth(1)
        .unwrap_or_else(|| panic!("no build step in:\n{stdout}"))
        .to_owned();
    let copy = step("cp ");
    let (artifact, to) = copy.split_once(' ').expect("cp FROM TO");
    assert_eq!(to, format!("MODULES/{name}.wasm"), "{stdout}");
    let project = tmp.path().join(name);
    assert!(project.join(format!("{name}.toml")).is_file());
    let readme = std::fs::read_to_string(project.join("README.md")).expect("README.md");
    assert!(readme.contains(artifact), "{readme}");
    let steps = NextSteps {
        build,
        artifact: artifact.to_owned(),
    };
    (tmp, project, steps)
}

/// Deploys `wasm` and the project's settings file as `name` on a fresh
/// node, and checks the template's greeting.
fn serves_greeting(name: &str, project: &Path, wasm: &Path) {
    let node = Node::start(&[]);
    let settings = format!("{name}.toml");
    std::fs::copy(project.join(&settings), node.modules_dir().join(&settings)).unwrap();
    std::fs::copy(wasm, node.module_path(name)).unwrap();
    node.wait_for(
        &format!("/{name}?ada"),
        200,
        &format!("hello, ada, from {name}\n"),
    );
    node.wait_for(
        &format!("/{name}"),
        200,
        &format!("hello, stranger, from {name}\n"),
    );
}

#[test]
fn a_rust_project_builds_outside_any_workspace_and_serves() {
    // A dash in the name: cargo names the file with an underscore, and the
    // steps must say so.
    let name = "hello-rs";
    let (_tmp, project, steps) = create(name, "rust");
    assert_eq!(steps.build, "cargo build --release --target wasm32-wasip2");
    assert_eq!(steps.artifact, "target/wasm32-wasip2/release/hello_rs.wasm");
    // A target dir of its own, kept across runs so the SDK's dependencies
    // build once; the project cannot share the workspace's.
    let target = target_dir().join("templates").join("rust");
    let pinned = locked_packages(&project);
    assert!(
        pinned.iter().any(|(name, _)| name == "wit-bindgen"),
        "{pinned:?}"
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run(Command::new(cargo)
        .current_dir(&project)
        .env("CARGO_TARGET_DIR", &target)
        .args(steps.build.split(' ').skip(1)));
    // The SDK built with the versions the repository tests it with: cargo
    // may only drop entries (features the workspace enables), not move any.
    let built = locked_packages(&project);
    let moved: Vec<_> = built.difference(&pinned).collect();
    assert!(moved.is_empty(), "cargo changed the lockfile: {moved:?}");
    let relative = steps.artifact.strip_prefix("target/").unwrap();
    serves_greeting(name, &project, &target.join(relative));
}

#[test]
fn a_rust_project_inside_the_repository_is_not_taken_by_its_workspace() {
    // The project is never built here (a_rust_project_... builds one):
    // `cargo metadata` is enough to show which workspace it belongs to.
    // Under the repository's own target/ (ignored by git), which the
    // repository's workspace would claim without the project's own.
    let parent = repo().join("target").join("templates").join("in-repo");
    std::fs::create_dir_all(&parent).unwrap();
    let tmp = tempfile::tempdir_in(&parent).unwrap();
    let output = outpost_new(tmp.path(), &["inside"]);
    assert!(output.status.success(), "{output:?}");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(tmp.path().join("inside"))
        .args(["locate-project", "--workspace", "--message-format", "plain"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let root = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert_eq!(
        Path::new(&root),
        tmp.path().join("inside").join("Cargo.toml")
    );
}

#[test]
fn a_javascript_project_builds_with_componentize_js_and_serves() {
    let name = "hello-js";
    let (_tmp, project, steps) = create(name, "js");
    assert_eq!(steps.build, "npm install && npm run build");
    // The componentize-js `cargo xtask test` installed stands in for
    // `npm install`: `npm run` finds it on the PATH.
    let bin = target_dir().join("foreign/js/node_modules/.bin");
    assert!(
        bin.join("componentize-js").exists(),
        "componentize-js is missing: run the suite with `cargo xtask test`"
    );
    let path = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    run(Command::new("npm")
        .current_dir(&project)
        .env("PATH", path)
        .args(["run", "build"]));
    serves_greeting(name, &project, &project.join(&steps.artifact));
}

#[test]
fn a_python_project_builds_with_componentize_py_and_serves() {
    let name = "hello-py";
    let (_tmp, project, steps) = create(name, "python");
    // The steps make a venv and install the pinned componentize-py in it;
    // the one `cargo xtask test` installed runs the same last command.
    let componentize = steps
        .build
        .rsplit("&& ")
        .next()
        .unwrap()
        .strip_prefix(".venv/bin/componentize-py ")
        .unwrap_or_else(|| panic!("unexpected build step {:?}", steps.build))
        .to_owned();
    let venv_bin = target_dir().join("foreign/pyenv/bin/componentize-py");
    assert!(
        venv_bin.exists(),
        "componentize-py is missing: run the suite with `cargo xtask test`"
    );
    run(Command::new(venv_bin)
        .current_dir(&project)
        .args(componentize.split(' ')));
    serves_greeting(name, &project, &project.join(&steps.artifact));
}

#[test]
fn the_projects_pin_the_toolchains_the_suite_uses() {
    let xtask = std::fs::read_to_string(repo().join("tests/xtask.rs")).unwrap();
    let pinned = |constant: &str| {
        let line = xtask
            .lines()
            .find(|l| l.starts_with(&format!("const {constant}: &str = ")))
            .unwrap_or_else(|| panic!("no {constant} in tests/xtask.rs"));
        line.split('"').nth(1).unwrap().to_owned()
    };
    let tmp = tempfile::tempdir().unwrap();
    assert!(
        outpost_new(tmp.path(), &["p", "--lang", "python"])
            .status
            .success()
    );
    assert!(
        outpost_new(tmp.path(), &["j", "--lang", "js"])
            .status
            .success()
    );
    let requirements = std::fs::read_to_string(tmp.path().join("p/requirements.txt")).unwrap();
    assert_eq!(requirements.trim(), pinned("COMPONENTIZE_PY"));
    let package: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("j/package.json")).unwrap())
            .unwrap();
    let js = pinned("COMPONENTIZE_JS");
    let (package_name, version) = js.rsplit_once('@').unwrap();
    assert_eq!(package["devDependencies"][package_name], version);
    let world = std::fs::read_to_string(tmp.path().join("j/wit/world.wit")).unwrap();
    assert!(
        world.contains(&format!(
            "wasi:http/proxy@{}",
            pinned("COMPONENTIZE_JS_WASI")
        )),
        "{world}"
    );
}

#[test]
fn a_bad_name_and_a_used_folder_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for bad in ["Greet", "-x", "a/b", "a.b", ""] {
        // After `--`, so clap hands "-x" over as a name, not a flag.
        let output = outpost_new(tmp.path(), &["--", bad]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{bad:?} was taken");
        assert!(
            stderr.contains("is not a valid function name") && stderr.contains("lowercase"),
            "{bad:?}: {stderr}"
        );
    }
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);

    let used = tmp.path().join("used");
    std::fs::create_dir(&used).unwrap();
    std::fs::write(used.join("mine.txt"), "keep me").unwrap();
    let output = outpost_new(tmp.path(), &["used"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("already exists and is not empty"),
        "{stderr}"
    );
    let entries: Vec<_> = std::fs::read_dir(&used).unwrap().collect();
    assert_eq!(entries.len(), 1);
    assert_eq!(
        std::fs::read_to_string(used.join("mine.txt")).unwrap(),
        "keep me"
    );

    let output = outpost_new(tmp.path(), &["other", "--dir", "used/mine.txt"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("is not a folder"));

    // An empty folder is fine, and --dir picks it.
    std::fs::create_dir(tmp.path().join("empty")).unwrap();
    let output = outpost_new(tmp.path(), &["fresh", "--dir", "empty"]);
    assert!(output.status.success(), "{output:?}");
    assert!(tmp.path().join("empty/Cargo.toml").is_file());
    assert!(tmp.path().join("empty/fresh.toml").is_file());
}
