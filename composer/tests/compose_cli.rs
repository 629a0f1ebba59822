//! `netsvc compose` as a user runs it (no root): the conflist on stdout,
//! `--explain` on stderr, a broken catalog named.

use std::process::Command;

fn netsvc(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_netsvc")).args(args).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

fn spec_file(dir: &std::path::Path) -> String {
    let path = dir.join("spec.yaml");
    std::fs::write(
        &path,
        "name: shop\nsubnets: [10.89.0.0/24]\nportMappings: true\n\
         services:\n  - {type: netsvc-qos, egressRate: 10mbit}\n  - {type: netsvc-firewall}\n",
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn explain_says_why_each_plugin_stands_where_it_does() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_file(dir.path());
    let catalog = dir.path().join("none").display().to_string();
    let (code, stdout, stderr) = netsvc(&["compose", &spec, "--explain", "--catalog", &catalog]);
    assert_eq!(code, 0, "{stderr}");
    let list: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let types: Vec<&str> = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["bridge", "netsvc-qos", "netsvc-firewall", "portmap"]);
    assert!(
        stderr.contains("2. netsvc-qos: after bridge (provides interface, provides host-veth)"),
        "{stderr}"
    );
    assert!(stderr.contains("4. portmap: after bridge"), "{stderr}");
    // The same input, byte for byte the same output.
    assert_eq!(netsvc(&["compose", &spec, "--catalog", &catalog]).1, stdout);
}

#[test]
fn a_broken_catalog_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_file(dir.path());
    std::fs::write(
        dir.path().join("acme.json"),
        r#"{"type": "acme", "requires": ["teleport"]}"#,
    )
    .unwrap();
    let (code, _, stderr) = netsvc(&["compose", &spec, "--catalog", &dir.path().display().to_string()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("acme.json"), "{stderr}");
}

#[test]
fn graph_draws_a_spec_in_chain_order() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_file(dir.path());
    let catalog = dir.path().join("none").display().to_string();
    let (code, dot, stderr) = netsvc(&["graph", &spec, "--format", "dot", "--catalog", &catalog]);
    assert_eq!(code, 0, "{stderr}");
    assert!(dot.starts_with("digraph chain {"), "{dot}");
    assert!(
        dot.contains("p0 [label=\"0: bridge\"]") && dot.contains("p3 [label=\"3: portmap\"]"),
        "{dot}"
    );
    assert!(dot.contains("p0 -> p1 [label=\"interface, host-veth\"]"), "{dot}");
    let (_, text, _) = netsvc(&["graph", &spec, "--catalog", &catalog]);
    assert!(
        text.contains("2: netsvc-firewall  <- interface, ip from 0: bridge"),
        "{text}"
    );
    let (_, mermaid, _) = netsvc(&["graph", &spec, "--format", "mermaid", "--catalog", &catalog]);
    assert!(
        mermaid.starts_with("flowchart LR") && mermaid.contains("p0 -->|interface, ip| p3"),
        "{mermaid}"
    );
}
