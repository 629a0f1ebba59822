//! `netsvc status` names the file store's quarantined documents: a record
//! that did not parse reads as absent, and an operator must learn of it.

use std::process::Command;

use netsvc_core::store::{FileStore, Store};
use serde_json::{Value, json};

fn status(state: &std::path::Path, format: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_netsvc"))
        .args(["status", "--format", format, "--state-dir"])
        .arg(state)
        .env_remove("NETSVC_STORE")
        .output()
        .expect("run netsvc");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "netsvc status: {stderr}");
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn status_lists_a_quarantined_document() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path();
    let s = FileStore::open(state).expect("open");
    s.put("networks/shop", &json!({"name": "shop", "subnets": ["10.89.0.0/24"]}))
        .expect("network");
    let bad_key = "networks/shop/endpoints/c1:eth0";
    s.put(bad_key, &json!({"network": "shop"})).expect("endpoint");
    let bad = state.join("kv/networks/shop/endpoints/c1:eth0.json");
    std::fs::write(&bad, b"{\"revision\": 2, \"val").expect("truncate");

    // Reading the networks finds the bad document; status still answers.
    let text = status(state, "text");
    assert!(text.contains("network shop  subnets 10.89.0.0/24"), "{text}");
    assert!(text.contains("quarantined documents (1)"), "{text}");
    let q = s.quarantined();
    assert_eq!(q.len(), 1, "{q:?}");
    let line = format!("  {bad_key}  {}  ", q[0].path.display());
    assert!(text.contains(&line), "{text}");

    let json: Value = serde_json::from_str(&status(state, "json")).expect("json");
    assert_eq!(json["networks"][0]["name"], "shop");
    assert_eq!(json["networks"][0]["endpoints"], json!([]));
    assert_eq!(json["quarantined"][0]["key"], bad_key);
    assert_eq!(json["quarantined"][0]["path"], q[0].path.display().to_string());
    assert!(json["quarantined"][0]["why"].is_string(), "{json}");
}

#[test]
fn status_says_nothing_of_quarantine_when_there_is_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    FileStore::open(dir.path()).expect("open");
    assert!(!status(dir.path(), "text").contains("quarantined"));
    let json: Value = serde_json::from_str(&status(dir.path(), "json")).expect("json");
    assert_eq!(json, json!({"networks": [], "quarantined": []}));
}
