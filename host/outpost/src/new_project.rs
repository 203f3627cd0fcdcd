//! `outpost new NAME`: writes a function project, in Rust, JavaScript or
//! Python, that builds into a component ready to drop into a node's modules
//! folder.
//!
//! Everything a project needs is embedded in this binary: the templates
//! (`host/outpost/templates/`), the WIT (`wit/`) and, for Rust, the SDK's
//! source. The SDK is not on crates.io, a git dependency needs a network
//! and a path into this repository only works where the repository still
//! is, so a Rust project gets its own copy of the SDK (`outpost-sdk/`),
//! the one this binary was built with, and a `Cargo.lock` pinning its
//! dependencies to the versions this repository tests: it builds offline
//! (once those crates are in cargo's cache), from any folder, and matches
//! the host that serves it.

use anyhow::{Context, bail};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The componentize-py release the project pins: the one the test suite
/// builds its Python guest with (`tests/xtask.rs`).
const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";
/// The componentize-js release the project pins, as in `tests/xtask.rs`.
const COMPONENTIZE_JS_VERSION: &str = "0.23.0";
/// The wasi:http version StarlingMonkey (inside componentize-js 0.23)
/// exports; the JavaScript project's WIT must name exactly that version.
const COMPONENTIZE_JS_WASI: &str = "0.2.10";
/// The WASI version of the WIT in `wit/deps`.
const VENDORED_WASI: &str = "0.2.12";

/// The WASI WIT packages, as vendored in `wit/deps`.
const WASI_DEPS: &[(&str, &str)] = &[
    ("cli.wit", include_str!("../../../wit/deps/cli.wit")),
    ("clocks.wit", include_str!("../../../wit/deps/clocks.wit")),
    (
        "filesystem.wit",
        include_str!("../../../wit/deps/filesystem.wit"),
    ),
    ("http.wit", include_str!("../../../wit/deps/http.wit")),
    ("io.wit", include_str!("../../../wit/deps/io.wit")),
    ("random.wit", include_str!("../../../wit/deps/random.wit")),
    ("sockets.wit", include_str!("../../../wit/deps/sockets.wit")),
];
/// Outpost's own WIT package (`outpost:edge`), which the SDK binds.
const OUTPOST_WIT: &[(&str, &str)] = &[
    ("world.wit", include_str!("../../../wit/world.wit")),
    ("kv.wit", include_str!("../../../wit/kv.wit")),
];
/// The SDK's manifest and the workspace manifest it inherits from.
const SDK_MANIFEST: &str = include_str!("../../../guest-sdk/Cargo.toml");
const WORKSPACE_MANIFEST: &str = include_str!("../../../Cargo.toml");
const SDK_LIB: &str = include_str!("../../../guest-sdk/src/lib.rs");
/// The workspace's lockfile: the SDK's dependencies at the versions the
/// repository builds and tests it with.
const WORKSPACE_LOCK: &str = include_str!("../../../Cargo.lock");
/// Where the SDK finds its WIT: the repository's `wit/`, beside it. The
/// copy keeps its WIT inside itself instead, so it can be moved as a whole.
const SDK_WIT_PATH: &str = r#"path: "../wit","#;
const VENDORED_SDK_WIT_PATH: &str = r#"path: "wit","#;

const FUNCTION_TOML: &str = include_str!("../templates/function.toml");
const RUST_CARGO_TOML: &str = include_str!("../templates/rust/Cargo.toml.tmpl");
const RUST_LIB: &str = include_str!("../templates/rust/src/lib.rs");
const RUST_README: &str = include_str!("../templates/rust/README.md");
const RUST_GITIGNORE: &str = include_str!("../templates/rust/gitignore");
const JS_APP: &str = include_str!("../templates/js/app.js");
const JS_PACKAGE: &str = include_str!("../templates/js/package.json");
const JS_README: &str = include_str!("../templates/js/README.md");
const JS_GITIGNORE: &str = include_str!("../templates/js/gitignore");
const PY_APP: &str = include_str!("../templates/python/app.py");
const PY_REQUIREMENTS: &str = include_str!("../templates/python/requirements.txt");
const PY_README: &str = include_str!("../templates/python/README.md");
const PY_GITIGNORE: &str = include_str!("../templates/python/gitignore");

/// The language of a new project.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// A crate over the Outpost SDK, built with cargo.
    Rust,
    /// A componentize-js project.
    Js,
    /// A componentize-py project.
    Python,
}

/// `outpost new`'s arguments.
#[derive(clap::Args)]
pub struct NewArgs {
    /// The function's name: it is deployed as NAME.wasm and serves /NAME.
    pub name: String,
    /// The language to write the function in.
    #[arg(long, value_enum, default_value = "rust")]
    pub lang: Lang,
    /// The project folder to create [default: ./NAME]; it may exist if it is empty.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Writes the project and prints what to do next.
pub fn run(args: NewArgs) -> anyhow::Result<()> {
    if !outpost_wire::names::is_valid(&args.name) {
        bail!(
            "{:?} is not a valid function name: use {}",
            args.name,
            outpost_wire::names::RULE
        );
    }
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    let files = project_files(&args.name, args.lang)?;
    write_project(&dir, &files)?;
    print!("{}", next_steps(&args.name, args.lang, &dir));
    Ok(())
}

/// The Rust package name for function `name`: the name itself, unless
/// cargo refuses it as a package name (a leading digit, a keyword, a
/// standard crate's name).
fn crate_name(name: &str) -> String {
    const RESERVED: &[&str] = &[
        "abstract",
        "alloc",
        "as",
        "async",
        "await",
        "become",
        "box",
        "break",
        "const",
        "continue",
        "core",
        "crate",
        "do",
        "dyn",
        "else",
        "enum",
        "extern",
        "false",
        "final",
        "fn",
        "for",
        "gen",
        "if",
        "impl",
        "in",
        "let",
        "loop",
        "macro",
        "match",
        "mod",
        "move",
        "mut",
        "override",
        "priv",
        "proc_macro",
        "proc-macro",
        "pub",
        "ref",
        "return",
        "self",
        "static",
        "std",
        "struct",
        "super",
        "test",
        "trait",
        "true",
        "try",
        "type",
        "typeof",
        "unsafe",
        "unsized",
        "use",
        "virtual",
        "where",
        "while",
        "yield",
    ];
    let starts_with_digit = name.starts_with(|c: char| c.is_ascii_digit());
    if starts_with_digit || RESERVED.contains(&name) {
        format!("fn-{name}")
    } else {
        name.to_owned()
    }
}

/// The file name (without `.wasm`) cargo gives a cdylib of `crate_name`.
fn artifact_name(crate_name: &str) -> String {
    crate_name.replace('-', "_")
}

/// Where cargo puts the Rust project's component, relative to the project.
fn rust_artifact(name: &str) -> String {
    format!(
        "target/wasm32-wasip2/release/{}.wasm",
        artifact_name(&crate_name(name))
    )
}

/// The project's files: path relative to the project folder, and contents.
fn project_files(name: &str, lang: Lang) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let krate = crate_name(name);
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{crate}}", &krate)
            .replace("{{artifact}}", &artifact_name(&krate))
            .replace(
                "{{env_prefix}}",
                &name.to_ascii_uppercase().replace('-', "_"),
            )
            .replace("{{componentize_py}}", COMPONENTIZE_PY)
            .replace("{{componentize_js_version}}", COMPONENTIZE_JS_VERSION)
    };
    let mut files: Vec<(PathBuf, String)> =
        vec![(PathBuf::from(format!("{name}.toml")), fill(FUNCTION_TOML))];
    match lang {
        Lang::Rust => {
            files.push(("Cargo.toml".into(), fill(RUST_CARGO_TOML)));
            files.push(("src/lib.rs".into(), fill(RUST_LIB)));
            files.push(("README.md".into(), fill(RUST_README)));
            files.push((".gitignore".into(), RUST_GITIGNORE.to_owned()));
            files.push(("Cargo.lock".into(), lockfile(&krate)?));
            files.push(("outpost-sdk/Cargo.toml".into(), vendored_sdk_manifest()?));
            files.push(("outpost-sdk/src/lib.rs".into(), vendored_sdk_lib()?));
            for (file, text) in OUTPOST_WIT {
                files.push((Path::new("outpost-sdk/wit").join(file), (*text).to_owned()));
            }
            for (file, text) in WASI_DEPS {
                files.push((
                    Path::new("outpost-sdk/wit/deps").join(file),
                    (*text).to_owned(),
                ));
            }
        }
        Lang::Js => {
            files.push(("app.js".into(), fill(JS_APP)));
            files.push(("package.json".into(), fill(JS_PACKAGE)));
            files.push(("README.md".into(), fill(JS_README)));
            files.push((".gitignore".into(), JS_GITIGNORE.to_owned()));
            files.extend(proxy_wit(COMPONENTIZE_JS_WASI));
        }
        Lang::Python => {
            files.push(("app.py".into(), fill(PY_APP)));
            files.push(("requirements.txt".into(), fill(PY_REQUIREMENTS)));
            files.push(("README.md".into(), fill(PY_README)));
            files.push((".gitignore".into(), PY_GITIGNORE.to_owned()));
            files.extend(proxy_wit(VENDORED_WASI));
        }
    }
    Ok(files)
}

/// `wit/`: the WASI packages relabelled as `version` (the same 0.2
/// interfaces; a toolchain may only accept the version it was built for)
/// and a world `app` that is the `wasi:http/proxy` world.
fn proxy_wit(version: &str) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    for (file, text) in WASI_DEPS {
        let mut text = text.replace(&format!("@{VENDORED_WASI}"), &format!("@{version}"));
        if version != VENDORED_WASI {
            // A feature gate may not name a version newer than its package.
            for newer in ["0.2.11", "0.2.12"] {
                text = text.replace(
                    &format!("@since(version = {newer})"),
                    "@since(version = 0.2.0)",
                );
            }
        }
        files.push((Path::new("wit/deps").join(file), text));
    }
    files.push((
        "wit/world.wit".into(),
        format!(
            "// The function's world: a wasi:http handler. Outpost also offers\n\
             // the wasi:cli imports and its own kv and queue interfaces.\n\
             package local:app;\n\nworld app {{\n  include wasi:http/proxy@{version};\n}}\n"
        ),
    ));
    files
}

/// The SDK's `lib.rs`, reading its WIT from inside its own folder.
fn vendored_sdk_lib() -> anyhow::Result<String> {
    if SDK_LIB.matches(SDK_WIT_PATH).count() != 1 {
        bail!("the embedded SDK does not name its WIT as `{SDK_WIT_PATH}`: cannot vendor it");
    }
    Ok(SDK_LIB.replace(SDK_WIT_PATH, VENDORED_SDK_WIT_PATH))
}

/// The SDK's manifest with everything it inherits from the Outpost
/// workspace written out, so it builds outside that workspace.
fn vendored_sdk_manifest() -> anyhow::Result<String> {
    let sdk: toml::Table = SDK_MANIFEST.parse().context("the SDK's Cargo.toml")?;
    let root: toml::Table = WORKSPACE_MANIFEST
        .parse()
        .context("the workspace Cargo.toml")?;
    let workspace = root
        .get("workspace")
        .and_then(toml::Value::as_table)
        .context("the workspace Cargo.toml has no [workspace]")?;
    let empty = toml::Table::new();
    let table = |key: &str| {
        workspace
            .get(key)
            .and_then(toml::Value::as_table)
            .unwrap_or(&empty)
    };
    let (inherited_package, inherited_deps) = (table("package"), table("dependencies"));
    let inherits = |value: &toml::Value| {
        value
            .as_table()
            .and_then(|t| t.get("workspace"))
            .and_then(toml::Value::as_bool)
            == Some(true)
    };

    let mut out = toml::Table::new();
    for (section, value) in sdk {
        match section.as_str() {
            "package" => {
                let mut package = value.as_table().cloned().unwrap_or_default();
                for (key, value) in package.iter_mut() {
                    if inherits(value) {
                        *value = inherited_package
                            .get(key)
                            .cloned()
                            .with_context(|| format!("workspace.package.{key} is not set"))?;
                    }
                }
                package.insert("publish".into(), false.into());
                out.insert(section, package.into());
            }
            "dependencies" | "build-dependencies" => {
                let mut deps = value.as_table().cloned().unwrap_or_default();
                for (dep, spec) in deps.iter_mut() {
                    if !inherits(spec) {
                        continue;
                    }
                    let mut resolved = match inherited_deps.get(dep) {
                        Some(toml::Value::String(version)) => {
                            toml::Table::from_iter([("version".into(), version.clone().into())])
                        }
                        Some(toml::Value::Table(t)) => t.clone(),
                        _ => bail!("workspace.dependencies.{dep} is not set"),
                    };
                    if resolved.contains_key("path") || resolved.contains_key("git") {
                        bail!("the SDK's dependency {dep} is not from crates.io: cannot vendor it");
                    }
                    let own = spec.as_table().cloned().unwrap_or_default();
                    for (key, value) in own {
                        match key.as_str() {
                            "workspace" => {}
                            // Features add to the workspace's, as in cargo.
                            "features" => {
                                let mut features = resolved
                                    .get("features")
                                    .and_then(toml::Value::as_array)
                                    .cloned()
                                    .unwrap_or_default();
                                for f in value.as_array().cloned().unwrap_or_default() {
                                    if !features.contains(&f) {
                                        features.push(f);
                                    }
                                }
                                resolved.insert(key, features.into());
                            }
                            _ => {
                                resolved.insert(key, value);
                            }
                        }
                    }
                    *spec = resolved.into();
                }
                out.insert(section, deps.into());
            }
            // Tests, lints and the like stay with the repository: they may
            // name files and crates that are not copied.
            "dev-dependencies" | "lints" => {}
            _ => {
                out.insert(section, value);
            }
        }
    }
    // Written by hand, not by `toml::to_string`, to keep cargo's usual
    // order ([package] first, name first) and one line per dependency.
    let mut body = String::new();
    let mut sections: Vec<(String, toml::Value)> = out.into_iter().collect();
    sections.sort_by_key(|(section, _)| section != "package");
    for (section, value) in sections {
        let Some(entries) = value.as_table() else {
            let _ = writeln!(body, "{section} = {value}\n");
            continue;
        };
        let _ = writeln!(body, "[{section}]");
        let mut keys: Vec<&String> = entries.keys().collect();
        let first = ["name", "version", "edition"];
        keys.sort_by_key(|k| (first.iter().position(|f| f == k).unwrap_or(first.len()), *k));
        for key in keys {
            let _ = writeln!(body, "{key} = {}", entries[key]);
        }
        body.push('\n');
    }
    Ok(format!(
        "# The Outpost guest SDK, copied by `outpost new` from Outpost {}.\n\
         # Its WIT is in wit/ (kv.wit documents the key-value store and queue).\n\n{}",
        env!("CARGO_PKG_VERSION"),
        body.trim_end()
    ) + "\n")
}

/// The Rust project's `Cargo.lock`: the workspace's entries for the SDK
/// and everything it depends on, so a project builds with what the SDK
/// was tested with, and offline from cargo's cache (`--offline`). The
/// workspace may enable more features than the SDK alone does; cargo drops
/// the entries those bring in on the first build, and keeps the versions.
fn lockfile(krate: &str) -> anyhow::Result<String> {
    let lock: toml::Table = WORKSPACE_LOCK.parse().context("the workspace Cargo.lock")?;
    let packages: Vec<&toml::Table> = lock
        .get("package")
        .and_then(toml::Value::as_array)
        .context("the workspace Cargo.lock lists no packages")?
        .iter()
        .filter_map(toml::Value::as_table)
        .collect();
    let field =
        |p: &toml::Table, key: &str| p.get(key).and_then(toml::Value::as_str).map(str::to_owned);
    // A lockfile names a dependency "NAME", or "NAME VERSION" and maybe
    // "(SOURCE)" where NAME alone is ambiguous.
    let find = |id: &str| -> anyhow::Result<&toml::Table> {
        let mut parts = id.split(' ');
        let name = parts.next().unwrap_or_default();
        let version = parts.next();
        packages
            .iter()
            .copied()
            .find(|p| {
                field(p, "name").as_deref() == Some(name)
                    && version.is_none_or(|v| field(p, "version").as_deref() == Some(v))
            })
            .with_context(|| format!("the workspace Cargo.lock has no package {id:?}"))
    };
    let mut wanted = vec![find("outpost-sdk")?];
    let mut seen = std::collections::BTreeMap::new();
    while let Some(package) = wanted.pop() {
        let key = (field(package, "name"), field(package, "version"));
        if seen.insert(key, package).is_some() {
            continue;
        }
        for dep in package
            .get("dependencies")
            .and_then(toml::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(toml::Value::as_str)
        {
            wanted.push(find(dep)?);
        }
    }
    let mut root = toml::Table::new();
    root.insert("name".into(), krate.into());
    root.insert("version".into(), "0.1.0".into());
    root.insert(
        "dependencies".into(),
        toml::Value::Array(vec!["outpost-sdk".into()]),
    );
    seen.insert((Some(krate.to_owned()), Some("0.1.0".to_owned())), &root);

    let versions_of = |name: &str| {
        seen.keys()
            .filter(|(n, _)| n.as_deref() == Some(name))
            .count()
    };
    let mut out = String::from(
        "# This file is automatically @generated by Cargo.\n\
         # It is not intended for manual editing.\n",
    );
    let _ = writeln!(
        out,
        "version = {}",
        lock.get("version").map_or("4".into(), ToString::to_string)
    );
    for package in seen.values() {
        out.push_str("\n[[package]]\n");
        for key in ["name", "version", "source", "checksum"] {
            if let Some(value) = package.get(key) {
                let _ = writeln!(out, "{key} = {value}");
            }
        }
        if let Some(deps) = package.get("dependencies").and_then(toml::Value::as_array) {
            out.push_str("dependencies = [\n");
            for dep in deps.iter().filter_map(toml::Value::as_str) {
                // As cargo writes it: the version only where two share a name.
                let name = dep.split(' ').next().unwrap_or(dep);
                let dep = if versions_of(name) > 1 { dep } else { name };
                let _ = writeln!(out, " {},", toml::Value::from(dep));
            }
            out.push_str("]\n");
        }
    }
    Ok(out)
}

/// Writes `files` under `dir`, which must not exist or be empty. A folder
/// that does not exist yet is filled beside it and renamed into place, so
/// a failure leaves no half project behind.
fn write_project(dir: &Path, files: &[(PathBuf, String)]) -> anyhow::Result<()> {
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => {
            bail!("{} already exists and is not a folder", dir.display())
        }
        Ok(_) => {
            let mut entries = std::fs::read_dir(dir)
                .with_context(|| format!("cannot read the folder {}", dir.display()))?;
            if entries.next().is_some() {
                bail!(
                    "{} already exists and is not empty: choose another name, or another folder with --dir",
                    dir.display()
                );
            }
            // An existing folder may be the shell's working folder: fill
            // it in place rather than replacing it.
            write_files(dir, files)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let absolute = std::path::absolute(dir)
                .with_context(|| format!("cannot resolve {}", dir.display()))?;
            let (Some(parent), Some(file_name)) = (absolute.parent(), absolute.file_name()) else {
                bail!("{} cannot be a project folder", dir.display());
            };
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
            let staging = parent.join(format!(
                ".{}.outpost-new-{}",
                file_name.to_string_lossy(),
                std::process::id()
            ));
            let result = write_files(&staging, files).and_then(|()| {
                std::fs::rename(&staging, &absolute)
                    .with_context(|| format!("cannot create {}", dir.display()))
            });
            if result.is_err() {
                let _ = std::fs::remove_dir_all(&staging);
            }
            result
        }
        Err(e) => Err(e).with_context(|| format!("cannot look at {}", dir.display())),
    }
}

fn write_files(dir: &Path, files: &[(PathBuf, String)]) -> anyhow::Result<()> {
    for (path, text) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// What to run after `outpost new`, for the user to copy.
fn next_steps(name: &str, lang: Lang, dir: &Path) -> String {
    let (what, build, artifact) = match lang {
        Lang::Rust => (
            "Rust",
            "cargo build --release --target wasm32-wasip2".to_owned(),
            rust_artifact(name),
        ),
        Lang::Js => (
            "JavaScript",
            "npm install && npm run build".to_owned(),
            format!("{name}.wasm"),
        ),
        Lang::Python => (
            "Python",
            format!(
                "python3 -m venv .venv && .venv/bin/pip install -r requirements.txt && \
                 .venv/bin/componentize-py -d wit -w app componentize -p . app -o {name}.wasm"
            ),
            format!("{name}.wasm"),
        ),
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Created the {what} function `{name}` in {}.",
        dir.display()
    );
    let _ = writeln!(out, "\nNext steps:");
    let _ = writeln!(out, "  cd {}", shell_quote(&dir.display().to_string()));
    let _ = writeln!(out, "  {build}");
    let _ = writeln!(out, "  cp {artifact} MODULES/{name}.wasm");
    let _ = writeln!(out, "  curl 'http://localhost:8080/{name}?ada'");
    let _ = writeln!(
        out,
        "\nMODULES is the node's modules folder (`outpost serve --modules`, ./modules by default);\n\
         settings go beside the component: edit {name}.toml and copy it there too."
    );
    out
}

/// `text` as one shell word.
fn shell_quote(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+,:@%".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    #[test]
    fn every_wasi_package_is_embedded() {
        let mut on_disk: Vec<String> = std::fs::read_dir(repo().join("wit/deps"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let embedded: Vec<&str> = WASI_DEPS.iter().map(|(f, _)| *f).collect();
        assert_eq!(on_disk, embedded, "update WASI_DEPS to match wit/deps");
        let mut outpost: Vec<String> = std::fs::read_dir(repo().join("wit"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        outpost.sort();
        let mut embedded: Vec<&str> = OUTPOST_WIT.iter().map(|(f, _)| *f).collect();
        embedded.sort();
        assert_eq!(outpost, embedded, "update OUTPOST_WIT to match wit/");
    }

    #[test]
    fn the_vendored_wasi_version_is_the_one_in_wit() {
        let http = WASI_DEPS.iter().find(|(f, _)| *f == "http.wit").unwrap().1;
        assert!(http.contains(&format!("package wasi:http@{VENDORED_WASI};")));
    }

    #[test]
    fn the_sdk_copy_inherits_nothing_and_finds_its_wit() {
        let manifest = vendored_sdk_manifest().unwrap();
        assert!(!manifest.contains("workspace"), "{manifest}");
        let parsed: toml::Table = manifest.parse().unwrap();
        assert_eq!(parsed["package"]["name"].as_str(), Some("outpost-sdk"));
        assert!(parsed["package"]["edition"].is_str());
        for (_, spec) in parsed["dependencies"].as_table().unwrap() {
            assert!(spec.is_str() || spec.get("version").is_some(), "{spec}");
        }
        let lib = vendored_sdk_lib().unwrap();
        assert!(lib.contains(VENDORED_SDK_WIT_PATH));
        assert!(!lib.contains(SDK_WIT_PATH));
    }

    #[test]
    fn the_lockfile_holds_the_sdk_and_what_it_needs() {
        let lock: toml::Table = lockfile("greet").unwrap().parse().unwrap();
        let names: Vec<&str> = lock["package"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        for name in ["greet", "outpost-sdk", "wit-bindgen", "wasip2", "http"] {
            assert!(names.contains(&name), "{name} in {names:?}");
        }
        // Nothing of the host's: only what the SDK depends on.
        assert!(!names.contains(&"wasmtime"), "{names:?}");
    }

    #[test]
    fn the_settings_template_names_only_real_keys() {
        let text = project_files("greet", Lang::Rust).unwrap()[0].1.clone();
        outpost_edge::function_config::FunctionConfig::parse(&text).unwrap();
        // Every key uncommented, the file still parses: no key is misspelt.
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if rest.contains(" = ") => rest,
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(uncommented.contains("\ntimeout-ms = "), "{uncommented}");
        outpost_edge::function_config::FunctionConfig::parse(&uncommented).unwrap();
    }

    #[test]
    fn every_placeholder_is_filled() {
        for lang in [Lang::Rust, Lang::Js, Lang::Python] {
            for (path, text) in project_files("my-fn", lang).unwrap() {
                assert!(!text.contains("{{name}}"), "{path:?}");
                assert!(!text.contains("{{crate}}"), "{path:?}");
                assert!(!text.contains("{{artifact}}"), "{path:?}");
                assert!(!text.contains("{{componentize"), "{path:?}");
                assert!(!text.contains("{{env_prefix}}"), "{path:?}");
            }
        }
    }

    #[test]
    fn crate_names_are_ones_cargo_takes() {
        assert_eq!(crate_name("greet"), "greet");
        assert_eq!(crate_name("my-fn"), "my-fn");
        assert_eq!(crate_name("2fa"), "fn-2fa");
        assert_eq!(crate_name("fn"), "fn-fn");
        assert_eq!(
            rust_artifact("my-fn"),
            "target/wasm32-wasip2/release/my_fn.wasm"
        );
        assert_eq!(
            rust_artifact("2fa"),
            "target/wasm32-wasip2/release/fn_2fa.wasm"
        );
    }

    #[test]
    fn the_javascript_wit_names_the_version_componentize_js_exports() {
        let files = project_files("greet", Lang::Js).unwrap();
        for (path, text) in &files {
            assert!(!text.contains(VENDORED_WASI), "{path:?}");
        }
        let world = &files
            .iter()
            .find(|(p, _)| p.ends_with("world.wit"))
            .unwrap()
            .1;
        assert!(world.contains(&format!("wasi:http/proxy@{COMPONENTIZE_JS_WASI}")));
    }

    #[test]
    fn shell_words() {
        assert_eq!(shell_quote("greet"), "greet");
        assert_eq!(shell_quote("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
