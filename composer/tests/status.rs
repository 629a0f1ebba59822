//! `netsvc status`: a store holding something of every service shows the
//! same text and JSON whichever service shows what, and the file store's
//! quarantined documents are named (a record that did not parse reads as
//! absent, and an operator must learn of it).

use std::process::Command;

use netsvc_core::store::{FileStore, Store};
use serde_json::{Value, json};

fn status(state: &std::path::Path, format: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_netsvc"))
        .args(["status", "--format", format, "--state-dir"])
        .arg(state)
        .env_remove("NETSVC_STORE")
        .env("NETSVC_NODE_NAME", "n1")
        .output()
        .expect("run netsvc");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "netsvc status: {stderr}");
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn status_shows_every_services_part_in_its_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path();
    let s = FileStore::open(state).expect("open");
    let puts = [
        (
            "networks/shop",
            json!({"name": "shop", "subnets": ["10.89.0.0/24"], "gateway": "10.89.0.1", "bridge": "br0"}),
        ),
        (
            "networks/shop/endpoints/c1:eth0",
            json!({"network": "shop", "containerId": "c1", "ifname": "eth0", "ips": ["10.89.0.2/24"],
                   "names": ["web"], "labels": {"app": "web"}, "services": ["netsvc-firewall", "netsvc-qos"],
                   "node": "n1"}),
        ),
        (
            "networks/shop/nodes/n1/netsvc-firewall/settings",
            json!({"conf": {"defaultIngress": "deny", "policies": [{"name": "web-in"}]}, "digest": "d", "endpoints": 1}),
        ),
        (
            "networks/shop/shaping/c1:eth0",
            json!({"endpoint": "c1:eth0", "ingressRate": 50_000_000u64, "egressRate": 10_000_000u64}),
        ),
        (
            "networks/shop/peers/n2",
            json!({"name": "n2", "publicKey": "cHVibGlj", "endpoint": "192.0.2.2:51820", "allowedIps": ["10.90.0.0/24"]}),
        ),
        ("networks/other", json!({"name": "other", "subnets": ["10.91.0.0/24"]})),
    ];
    for (k, v) in puts {
        s.put(k, &v).expect(k);
    }
    let text = status(state, "text");
    let expected = "\
network other  subnets 10.91.0.0/24  gateway -  on -
  endpoints (0):
network shop  subnets 10.89.0.0/24  gateway 10.89.0.1  on br0
  endpoints (1):
    c1:eth0  10.89.0.2/24  names web  labels app=web  held by netsvc-firewall,netsvc-qos
  firewall  default ingress deny  policies web-in
  shaping c1:eth0  to it 50.000 Mbit/s  from it 10.000 Mbit/s
  mesh node n2 at 192.0.2.2:51820  pod subnets 10.90.0.0/24
    public key cHVibGlj
";
    assert_eq!(text, expected);
    let json = status(state, "json");
    let expected = json!({"networks": [
        {"name": "other", "subnets": ["10.91.0.0/24"], "endpoints": [], "services": [], "shaping": []},
        {"name": "shop", "subnets": ["10.89.0.0/24"], "gateway": "10.89.0.1", "bridge": "br0",
         "endpoints": [{"network": "shop", "containerId": "c1", "ifname": "eth0", "ips": ["10.89.0.2/24"],
                        "names": ["web"], "labels": {"app": "web"},
                        "services": ["netsvc-firewall", "netsvc-qos"], "node": "n1"}],
         "services": [],
         "firewall": {"defaultIngress": "deny", "policies": [{"name": "web-in"}]},
         "shaping": [{"endpoint": "c1:eth0", "ingressRate": 50_000_000u64, "egressRate": 10_000_000u64}],
         "vpn": {"network": "shop", "tunnels": [], "mesh": [
             {"node": "n2", "publicKey": "cHVibGlj", "endpoint": "192.0.2.2:51820",
              "podSubnets": ["10.90.0.0/24"], "device": null, "live": null}]}}
    ], "quarantined": []});
    assert_eq!(
        json,
        serde_json::to_string_pretty(&expected).unwrap() + "\n",
        "keys in their order"
    );
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
