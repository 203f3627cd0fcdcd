//! The dependency rules of ARCHITECTURE.md, checked: which host crates may
//! link the wasm runtime, and that no crate's modules import each other in
//! a loop. Cargo keeps a crate from importing what it does not depend on;
//! these tests keep the dependency lists themselves honest.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The normal (non-dev, non-build) dependency tree of `package`, one crate
/// name per line.
fn dependencies(package: &str) -> BTreeSet<String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(root())
        .args([
            "tree",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
            "-p",
            package,
        ])
        .output()
        .expect("run cargo tree");
    assert!(
        output.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_cloud_wire_http_store_and_lab_crates_do_not_link_wasmtime() {
    for package in [
        "outpost-cloud",
        "outpost-wire",
        "outpost-http",
        "outpost-store",
        "outpost-sled-guard",
        "outpost-lab",
    ] {
        let deps = dependencies(package);
        assert!(
            deps.contains(package),
            "{package} is in its own tree: {deps:?}"
        );
        let wasm: Vec<_> = deps
            .iter()
            .filter(|d| d.starts_with("wasmtime") || d.starts_with("cranelift"))
            .collect();
        assert!(wasm.is_empty(), "{package} links {wasm:?}");
    }
}

#[test]
fn the_layers_depend_only_downwards() {
    // (crate, host crates it must not depend on)
    let rules: &[(&str, &[&str])] = &[
        // A low layer like wire: store and cloud use it, it uses no host crate.
        (
            "outpost-sled-guard",
            &[
                "outpost-wire",
                "outpost-http",
                "outpost-store",
                "outpost-cloud",
                "outpost-caps",
                "outpost-edge",
            ],
        ),
        (
            "outpost-wire",
            &[
                "outpost-http",
                "outpost-store",
                "outpost-cloud",
                "outpost-caps",
                "outpost-edge",
            ],
        ),
        (
            "outpost-http",
            &[
                "outpost-store",
                "outpost-cloud",
                "outpost-caps",
                "outpost-edge",
            ],
        ),
        (
            "outpost-store",
            &[
                "outpost-http",
                "outpost-cloud",
                "outpost-caps",
                "outpost-edge",
            ],
        ),
        (
            "outpost-cloud",
            &["outpost-store", "outpost-caps", "outpost-edge"],
        ),
        (
            "outpost-caps",
            &["outpost-edge", "outpost-cloud", "outpost-http"],
        ),
        // The lab runs the tiers as processes and talks HTTP to them.
        (
            "outpost-lab",
            &[
                "outpost-edge",
                "outpost-cloud",
                "outpost-store",
                "outpost-caps",
            ],
        ),
    ];
    for (package, forbidden) in rules {
        let deps = dependencies(package);
        for f in *forbidden {
            assert!(!deps.contains(*f), "{package} depends on {f}");
        }
    }
}

/// Module name -> the sibling modules it names with `crate::`, for the
/// top-level modules of the crate in `src`.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let reference = regex::Regex::new(r"crate::([a-z_][a-z0-9_]*)").unwrap();
    let group = regex::Regex::new(r"use crate::\{([^}]*)\}").unwrap();
    let name = regex::Regex::new(r"(?:^|,)\s*([a-z_][a-z0-9_]*)").unwrap();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).unwrap();
            let top = relative
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy();
            let top = top.trim_end_matches(".rs").to_owned();
            if top == "lib" || top == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // Tests may reach anywhere; code and docs may not.
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            let code: String = code
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            let mut names: BTreeSet<String> = reference
                .captures_iter(&code)
                .map(|c| c[1].to_owned())
                .collect();
            for g in group.captures_iter(&code) {
                names.extend(name.captures_iter(&g[1]).map(|c| c[1].to_owned()));
            }
            names.remove(&top);
            graph.entry(top).or_default().extend(names);
        }
    }
    graph
}

/// A loop among `graph`'s modules, if there is one.
fn find_loop(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if !done.insert(node.to_owned()) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if graph.contains_key(next)
                && let Some(cycle) = visit(next, graph, path, done)
            {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_host_crate_has_an_import_loop() {
    for krate in [
        "outpost",
        "edge",
        "caps",
        "store",
        "cloud",
        "wire",
        "http",
        "sled-guard",
        "lab",
    ] {
        let graph = module_graph(&root().join("host").join(krate).join("src"));
        assert!(!graph.is_empty(), "host/{krate}: no modules found");
        if let Some(cycle) = find_loop(&graph) {
            panic!(
                "host/{krate}: modules import each other in a loop: {}",
                cycle.join(" -> ")
            );
        }
    }
}

#[test]
fn the_loop_finder_finds_loops() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", &["b"][..]),
        ("b", &["c"][..]),
        ("c", &["a"][..]),
        ("d", &[][..]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.iter().map(|s| s.to_string()).collect()))
    .collect();
    assert_eq!(find_loop(&graph).map(|c| c.len()), Some(4));
    let mut acyclic = graph.clone();
    acyclic.get_mut("c").unwrap().clear();
    assert_eq!(find_loop(&acyclic), None);
}
