//! CNI_NETNS must be a network namespace. A plugin that records the path
//! refuses ADD with anything else — a regular file, a directory, another
//! kind of namespace — with code 4 naming CNI_NETNS and the path, before it
//! changes anything; a path that is not there at all is code 3 (the
//! container is gone). DEL with such a path still succeeds.
//!
//! The interface plugin of a chain would refuse the path first, so our
//! plugins are called here alone, as a runtime would call them after it,
//! with a hand-made prevResult.

use std::path::{Path, PathBuf};

use netsvc_core::cni::CniArgs;
use netsvc_tests::chain::{CallArgs, plugin_dir};
use netsvc_tests::wireguard::{KeyPair, uapi_sockets, wireguard_go_processes};
use netsvc_tests::{Container, TestNode, with_stdin};
use netsvc_vpn::tunnel::device_name;
use serde_json::{Value, json};

/// A plugin's answer: (exit status, stdout parsed, stderr).
struct Answer {
    ok: bool,
    stdout: Value,
    stderr: String,
}

/// Runs plugin `binary` once in the node's namespace, as a runtime would.
fn call(node: &TestNode, binary: &str, command: &str, id: &str, netns: &Path, conf: &Value) -> Answer {
    let mut cmd = node.command(plugin_dir().join(binary));
    cmd.env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", cni_args(id))
        .env("CNI_PATH", plugin_dir());
    let out = with_stdin(&mut cmd, &serde_json::to_vec(conf).unwrap()).unwrap();
    Answer {
        ok: out.status.success(),
        stdout: serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// CNI_ARGS naming the endpoint `id`, as the chain tests give them.
fn cni_args(id: &str) -> String {
    CniArgs(CallArgs::endpoint(id, None).args).to_env_string()
}

/// Paths that exist but are no network namespace, and what each is.
fn not_network_namespaces(node: &TestNode) -> Vec<(PathBuf, &'static str)> {
    let file = node.state_dir().join("not-a-netns");
    std::fs::write(&file, b"").unwrap();
    let dir = node.state_dir().join("not-a-netns-dir");
    std::fs::create_dir_all(&dir).unwrap();
    vec![
        (file, "regular file"),
        (dir, "directory"),
        (PathBuf::from("/proc/self/ns/mnt"), "mount namespace"),
    ]
}

/// The endpoint documents recorded on `network`.
fn endpoint_docs(node: &TestNode, network: &str) -> Vec<String> {
    let dir = node.state_dir().join("kv/networks").join(network).join("endpoints");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Asserts a refused ADD: code `code`, naming CNI_NETNS and `path`.
fn assert_refused(answer: &Answer, code: u64, path: &Path, what: &str) {
    assert!(!answer.ok, "{what}: ADD succeeded: {}", answer.stdout);
    assert_eq!(
        answer.stdout["code"], code,
        "{what}: {} {}",
        answer.stdout, answer.stderr
    );
    let msg = answer.stdout["msg"].as_str().unwrap_or_default();
    assert!(msg.contains("CNI_NETNS"), "{what}: {msg}");
    assert!(msg.contains(&path.display().to_string()), "{what}: {msg}");
}

const FW_NET: &str = "fwnetns";

/// The firewall's config with a prevResult as the bridge plugin gives it:
/// the bridge, the host veth and `eth0` in `netns` holding `ip`.
fn firewall_conf(netns: &Path, ip: &str) -> Value {
    json!({
        "cniVersion": "1.0.0", "name": FW_NET, "type": "netsvc-firewall", "defaultIngress": "deny",
        "policies": [{"name": "web", "select": {"names": ["b"]}, "ingress": [{"from": [{"names": ["a"]}]}]}],
        "prevResult": {
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "br-fwnetns", "mac": "aa:bb:cc:00:00:01"},
                {"name": "veth0abc", "mac": "aa:bb:cc:00:00:02"},
                {"name": "eth0", "mac": "aa:bb:cc:00:00:03", "sandbox": netns.display().to_string()}
            ],
            "ips": [{"address": format!("{ip}/24"), "gateway": "10.251.0.1", "interface": 2}]
        }
    })
}

fn firewall_table(node: &TestNode) -> String {
    node.exec("nft", ["list", "table", "inet", "netsvc_firewall"])
        .unwrap_or_default()
}

#[test]
fn firewall_add_refuses_a_netns_path_that_is_no_network_namespace_and_changes_nothing() {
    let node = TestNode::new().unwrap();
    let a = node.container("a").unwrap();
    // A first endpoint, so the network, the table and a member exist.
    let first = call(
        &node,
        "netsvc-firewall",
        "ADD",
        "a",
        a.netns_path(),
        &firewall_conf(a.netns_path(), "10.251.0.2"),
    );
    assert!(first.ok, "{} {}", first.stdout, first.stderr);
    let table = firewall_table(&node);
    assert!(table.contains("10.251.0.2"), "a is a member: {table}");
    let docs = endpoint_docs(&node, FW_NET);
    assert_eq!(docs.len(), 1, "{docs:?}");

    let bad_ip = "10.251.0.3";
    let mut cases: Vec<(PathBuf, u64, &str)> = not_network_namespaces(&node)
        .into_iter()
        .map(|(p, what)| (p, 4, what))
        .collect();
    cases.push((node.state_dir().join("gone"), 3, "missing path"));
    for (path, code, what) in &cases {
        let answer = call(&node, "netsvc-firewall", "ADD", "b", path, &firewall_conf(path, bad_ip));
        assert_refused(&answer, *code, path, what);
        assert_eq!(endpoint_docs(&node, FW_NET), docs, "{what}: no endpoint recorded");
        let now = firewall_table(&node);
        assert!(!now.contains(bad_ip), "{what}: no element for b: {now}");
        assert_eq!(now, table, "{what}: the table is as it was");
        // As a runtime does after a failed ADD: DEL, which must succeed.
        let del = call(&node, "netsvc-firewall", "DEL", "b", path, &firewall_conf(path, bad_ip));
        assert!(del.ok, "{what}: DEL fails: {} {}", del.stdout, del.stderr);
    }

    // The same call with b's real namespace is taken: the refusals were
    // about the path alone.
    let b = node.container("b").unwrap();
    let taken = call(
        &node,
        "netsvc-firewall",
        "ADD",
        "b",
        b.netns_path(),
        &firewall_conf(b.netns_path(), bad_ip),
    );
    assert!(taken.ok, "{} {}", taken.stdout, taken.stderr);
    assert!(firewall_table(&node).contains(bad_ip));
    assert_eq!(endpoint_docs(&node, FW_NET).len(), 2);
}

const VPN_NET: &str = "vpnnetns";

fn tunnel_conf(peer: &KeyPair) -> Value {
    json!({"cniVersion": "1.0.0", "name": VPN_NET, "type": "netsvc-vpn", "mode": "tunnel",
           "address": "10.200.0.2/32",
           "peers": [{"publicKey": peer.public, "endpoint": "10.98.0.2:51820", "allowedIPs": ["10.50.0.0/16"]}]})
}

/// Nothing of the tunnel of `id`/eth0: no socket, no wireguard-go, no
/// device of ours on the node, no endpoint recorded.
fn assert_no_tunnel(node: &TestNode, id: &str, what: &str) {
    let device = device_name(id, "eth0");
    assert_eq!(uapi_sockets(&device), Vec::<String>::new(), "{what}");
    assert_eq!(wireguard_go_processes(&device), Vec::<String>::new(), "{what}");
    let links = node.ip(["-o", "link", "show"]).unwrap();
    assert!(!links.contains("nsv"), "{what}: {links}");
    assert_eq!(endpoint_docs(node, VPN_NET), Vec::<String>::new(), "{what}");
}

#[test]
fn vpn_tunnel_add_refuses_a_netns_path_that_is_no_network_namespace_and_leaves_nothing() {
    let node = TestNode::new().unwrap();
    let peer = KeyPair::generate().unwrap();
    let conf = tunnel_conf(&peer);
    let mut cases: Vec<(PathBuf, u64, &str)> = not_network_namespaces(&node)
        .into_iter()
        .map(|(p, what)| (p, 4, what))
        .collect();
    cases.push((node.state_dir().join("gone"), 3, "missing path"));
    for (path, code, what) in &cases {
        let answer = call(&node, "netsvc-vpn", "ADD", "t", path, &conf);
        assert_refused(&answer, *code, path, what);
        assert_no_tunnel(&node, "t", what);
        let del = call(&node, "netsvc-vpn", "DEL", "t", path, &conf);
        assert!(del.ok, "{what}: DEL fails: {} {}", del.stdout, del.stderr);
        assert_no_tunnel(&node, "t", what);
    }

    // A real namespace is taken, and its DEL leaves nothing.
    let c: Container = node.container("t").unwrap();
    let taken = call(&node, "netsvc-vpn", "ADD", "t", c.netns_path(), &conf);
    assert!(taken.ok, "{} {}", taken.stdout, taken.stderr);
    assert!(c.ip(["link", "show", "eth0"]).is_ok());
    let del = call(&node, "netsvc-vpn", "DEL", "t", c.netns_path(), &conf);
    assert!(del.ok, "{} {}", del.stdout, del.stderr);
    assert_no_tunnel(&node, "t", "after DEL");
}
