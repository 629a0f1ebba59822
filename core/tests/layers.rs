//! The core's modules import only downward: each top-level module of
//! `core/src` has a layer, and a `crate::X` path in its code (comments
//! aside) must name a module of a lower layer. A new module must be given
//! a layer here; the developer guide (docs/src/developer/layers.md) says
//! what each layer is for.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Lowest first. Modules of one layer do not import each other.
const LAYERS: &[&[&str]] = &[
    // Values and helpers that know nothing of ours.
    &["naming", "inet", "spawn", "test_support"],
    // Who this node is.
    &["node"],
    // The CNI protocol: config, environment, result, errors, the verbs.
    &["cni"],
    // Test failpoints; running work inside a network namespace.
    &["failpoint", "netns"],
    // The kernel (rtnetlink, nf_tables) and the store.
    &["netlink", "nft", "store"],
    // The service graph, kept in the store.
    &["graph"],
    // What services share above the graph.
    &["attachment", "bridged", "reconcile"],
    // A service as the composer sees it.
    &["service"],
    // The plugin process: dispatch, logging, the DEL queue.
    &["runtime"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The top-level modules of `core/src` and their source files.
fn modules(src: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(src).unwrap().flatten() {
        let path = entry.path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if name == "lib" {
            continue;
        }
        let files = if path.is_dir() { rust_files(&path) } else { vec![path] };
        out.insert(name, files);
    }
    out
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The modules a source file names as `crate::X` or `crate::{X, …}`, with
/// the line, comments left out.
fn imports(text: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let names: Vec<&str> = match rest.strip_prefix('{') {
                Some(group) => group
                    .split('}')
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .map(|s| s.trim().split("::").next().unwrap_or_default())
                    .collect(),
                None => vec![
                    rest.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                        .next()
                        .unwrap_or_default(),
                ],
            };
            out.extend(
                names
                    .into_iter()
                    .filter(|m| !m.is_empty())
                    .map(|m| (m.to_string(), n + 1)),
            );
        }
    }
    out
}

#[test]
fn core_modules_import_only_downward() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut wrong = Vec::new();
    for (module, files) in modules(&src) {
        let Some(own) = layer_of(&module) else {
            wrong.push(format!("{module}: no layer (add it to LAYERS in core/tests/layers.rs)"));
            continue;
        };
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (target, line) in imports(&text) {
                if target == module {
                    continue;
                }
                match layer_of(&target) {
                    Some(l) if l < own => {}
                    Some(l) => wrong.push(format!(
                        "{}:{line}: {module} (layer {own}) imports {target} (layer {l})",
                        file.strip_prefix(&src).unwrap().display()
                    )),
                    None => wrong.push(format!("{}:{line}: {target} has no layer", file.display())),
                }
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the layers:\n{}", wrong.join("\n"));
}

#[test]
fn the_check_sees_every_form_of_import() {
    let found: Vec<String> = imports(
        "use crate::graph::Graph;\n// crate::store in a comment\nuse crate::{cni, nft::Batch};\nlet x = crate::netns::open(p);",
    )
    .into_iter()
    .map(|(m, _)| m)
    .collect();
    assert_eq!(found, ["graph", "cni", "nft", "netns"]);
}
