//! `netsvc validate`'s diagnostics, one golden message per kind of mistake
//! (the table in docs/src/composer.md lists them).

use netsvc_composer::catalog::Catalog;
use netsvc_composer::validate::{Diagnostic, has_errors, validate};
use serde_json::{Value, json};

fn bridge() -> Value {
    json!({"type": "bridge", "bridge": "br0", "isGateway": true,
           "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.89.0.0/24"}]]}})
}

fn list(plugins: Vec<Value>) -> Value {
    json!({"cniVersion": "1.0.0", "name": "web", "plugins": plugins})
}

fn check(conflist: &Value) -> Vec<Diagnostic> {
    validate(conflist, &Catalog::builtin())
}

fn render(found: &[Diagnostic]) -> String {
    found.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

/// Each case: a name, the conflist, whether it is an error (else a warning only).
fn cases() -> Vec<(&'static str, Value, bool)> {
    let with = |key: &str, v: Value| {
        let mut l = list(vec![bridge(), json!({"type": "netsvc-firewall"})]);
        l[key] = v;
        l
    };
    let mut no_version = list(vec![bridge()]);
    no_version.as_object_mut().unwrap().remove("cniVersion");
    let mut no_ipam = bridge();
    no_ipam.as_object_mut().unwrap().remove("ipam");
    vec![
        ("missing_version", no_version, true),
        ("bad_version", with("cniVersion", json!("9.9.9")), true),
        ("missing_name", with("name", json!("")), true),
        ("bad_name", with("name", json!("my net")), true),
        ("no_plugins", with("plugins", json!([])), true),
        ("missing_type", list(vec![bridge(), json!({"policies": []})]), true),
        (
            "version_mismatch",
            list(vec![bridge(), json!({"type": "netsvc-dns", "cniVersion": "0.4.0"})]),
            false,
        ),
        (
            "service_config_typo",
            list(vec![
                bridge(),
                json!({"type": "netsvc-qos", "egressRate": "10mbit",
            "classes": [{"name": "ssh", "rate": "1mbit", "mtch": {"ports": [{"port": 22}]}}]}),
            ]),
            true,
        ),
        (
            "service_config_value",
            list(vec![
                bridge(),
                json!({"type": "netsvc-vpn", "address": "10.200.0.2/32",
            "peers": [{"publicKey": "not-a-key", "allowedIPs": ["10.50.0.0/16"]}]}),
            ]),
            true,
        ),
        (
            "order",
            list(vec![json!({"type": "netsvc-qos", "egressRate": "1mbit"}), bridge()]),
            true,
        ),
        ("no_ipam", list(vec![no_ipam, json!({"type": "netsvc-firewall"})]), true),
        (
            "no_host_veth",
            list(vec![
                json!({"type": "macvlan", "master": "eth0",
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.89.0.0/24"}]]}}),
                json!({"type": "netsvc-qos", "egressRate": "1mbit"}),
            ]),
            true,
        ),
        (
            "no_node_path",
            list(vec![
                json!({"type": "macvlan", "master": "eth0",
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.89.0.0/24"}]]}}),
                json!({"type": "netsvc-firewall"}),
            ]),
            false,
        ),
        (
            "unmet_requirement",
            list(vec![json!({"type": "netsvc-firewall"})]),
            true,
        ),
        (
            "conflict",
            list(vec![
                bridge(),
                json!({"type": "bandwidth", "egressRate": 1000000, "egressBurst": 100000}),
                json!({"type": "netsvc-qos", "egressRate": "1mbit"}),
            ]),
            true,
        ),
        (
            "duplicate_service",
            list(vec![
                bridge(),
                json!({"type": "netsvc-dns"}),
                json!({"type": "netsvc-dns"}),
            ]),
            true,
        ),
        (
            "two_interfaces",
            list(vec![
                bridge(),
                json!({"type": "ptp",
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.90.0.0/24"}]]}}),
            ]),
            true,
        ),
        (
            "bad_capabilities",
            list(vec![
                bridge(),
                json!({"type": "portmap", "capabilities": {"portMappings": "yes"}}),
            ]),
            true,
        ),
        (
            "unknown_plugin",
            list(vec![bridge(), json!({"type": "acme-shaper"})]),
            false,
        ),
        (
            "unused_capability",
            list(vec![
                bridge(),
                json!({"type": "netsvc-firewall", "capabilities": {"portMappings": true}}),
            ]),
            false,
        ),
        (
            "static_runtime_config",
            list(vec![
                bridge(),
                json!({"type": "netsvc-qos", "runtimeConfig": {"bandwidth": {}}}),
            ]),
            false,
        ),
        (
            "interface_not_first",
            list(vec![json!({"type": "loopback"}), bridge()]),
            false,
        ),
    ]
}

#[test]
fn every_mistake_has_its_message() {
    for (name, conflist, is_error) in cases() {
        let found = check(&conflist);
        assert!(!found.is_empty(), "{name}: nothing found");
        assert_eq!(has_errors(&found), is_error, "{name}: {}", render(&found));
        insta::assert_snapshot!(name, render(&found));
    }
}

#[test]
fn a_sound_chain_has_nothing_to_say() {
    let sound = list(vec![
        bridge(),
        json!({"type": "netsvc-firewall"}),
        json!({"type": "netsvc-qos", "capabilities": {"bandwidth": true}, "egressRate": "10mbit"}),
        json!({"type": "portmap", "capabilities": {"portMappings": true}}),
    ]);
    assert_eq!(render(&check(&sound)), "");
}

#[test]
fn every_pattern_and_example_validates() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/patterns");
    for entry in std::fs::read_dir(root).unwrap().flatten() {
        if entry.path().extension().is_some_and(|x| x == "conflist") {
            let conflist: Value = serde_json::from_str(&std::fs::read_to_string(entry.path()).unwrap()).unwrap();
            let found = check(&conflist);
            assert!(!has_errors(&found), "{}: {}", entry.path().display(), render(&found));
        }
    }
}
