//! `netsvc exec` and the runtime it shares with the tests, driving the
//! Debian reference plugins (bridge + host-local) and ours, with real traffic.

use std::path::{Path, PathBuf};
use std::time::Duration;

use netsvc_tests::chain::{container_ip, json_of, netsvc_exec as exec};
use netsvc_tests::{Container, TestNode};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(10);

fn write_conflist(node: &TestNode, v: &Value) -> PathBuf {
    let path = node
        .state_dir()
        .join(format!("{}.conflist", v["name"].as_str().unwrap_or("net")));
    std::fs::write(&path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
    path
}

fn ok_json(out: &std::process::Output) -> Value {
    let v = json_of(out, "netsvc exec");
    assert!(!v.is_null(), "netsvc exec printed no result JSON");
    v
}

fn has_link(c: &Container, ifname: &str) -> bool {
    c.links().unwrap().iter().any(|l| l.ifname == ifname)
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn exec_add_bridge_gives_two_containers_a_working_network() {
    let node = TestNode::new().unwrap();
    let (a, b) = (node.container("a").unwrap(), node.container("b").unwrap());
    let list = write_conflist(&node, &node.bridge_conflist("br2", "1.0.0", "10.231.0.0/24", vec![]));

    let ra = ok_json(&exec(&node, &["add", p(&list), p(a.netns_path())]));
    let rb = ok_json(&exec(&node, &["add", p(&list), p(b.netns_path())]));
    assert_eq!(ra["cniVersion"], "1.0.0");
    let (ip_a, ip_b) = (container_ip(&ra, "eth0").unwrap(), container_ip(&rb, "eth0").unwrap());
    assert_ne!(ip_a, ip_b);
    assert!(has_link(&a, "eth0") && has_link(&b, "eth0"));

    a.ping_check(ip_b, 1, T).expect("a reaches b over the bridge");
    b.ping_check(ip_a, 1, T).expect("b reaches a over the bridge");

    let check = exec(&node, &["check", p(&list), p(a.netns_path())]);
    assert!(
        check.status.success(),
        "CHECK: {}",
        String::from_utf8_lossy(&check.stdout)
    );

    let del = exec(&node, &["del", p(&list), p(a.netns_path())]);
    assert!(del.status.success(), "DEL: {}", String::from_utf8_lossy(&del.stdout));
    assert!(!has_link(&a, "eth0"), "DEL removed a's interface");
    assert!(
        !b.ping(ip_a, 1, Duration::from_secs(2)),
        "a's address no longer answers"
    );
    let again = exec(&node, &["del", p(&list), p(a.netns_path())]);
    assert!(
        again.status.success(),
        "a second DEL succeeds: {}",
        String::from_utf8_lossy(&again.stdout)
    );

    // CHECK of a deleted attachment fails: its cached result is gone.
    assert!(!exec(&node, &["check", p(&list), p(a.netns_path())]).status.success());
    b.ping_check("10.231.0.1".parse().unwrap(), 1, T)
        .expect("b still reaches its gateway");
}

#[test]
fn exec_del_without_netns_and_gc() {
    let node = TestNode::new().unwrap();
    let a = node.container("a").unwrap();
    let extra = vec![json!({"type": "netsvc-testplugin"})];
    let list = write_conflist(&node, &node.bridge_conflist("gcnet", "1.0.0", "10.232.0.0/24", extra));
    ok_json(&exec(&node, &["add", p(&list), p(a.netns_path())]));
    let records = node.state_dir().join("testplugin");
    assert_eq!(std::fs::read_dir(&records).unwrap().count(), 1);
    // DEL as a runtime sends it after the container died: no netns.
    let del = exec(&node, &["del", p(&list), "--container-id", a.name()]);
    assert!(del.status.success(), "{}", String::from_utf8_lossy(&del.stdout));
    assert_eq!(std::fs::read_dir(&records).unwrap().count(), 0);
}

#[test]
fn exec_version_negotiates_with_the_reference_plugins() {
    let node = TestNode::new().unwrap();
    let a = node.container("a").unwrap();
    let mut conf = node.bridge_conflist(
        "neg",
        "1.1.0",
        "10.233.0.0/24",
        vec![json!({"type": "netsvc-testplugin"})],
    );
    conf["cniVersions"] = json!(["0.4.0", "1.0.0", "1.1.0"]);
    let list = write_conflist(&node, &conf);
    let v = ok_json(&exec(&node, &["version", p(&list)]));
    assert_eq!(v["cniVersion"], "1.0.0", "Debian's bridge stops at 1.0.0: {v}");
    assert!(
        v["plugins"]["netsvc-testplugin"]
            .as_array()
            .unwrap()
            .contains(&json!("1.1.0"))
    );
    let r = ok_json(&exec(&node, &["add", p(&list), p(a.netns_path())]));
    assert_eq!(r["cniVersion"], "1.0.0");
    let gw = "10.233.0.1".parse().unwrap();
    a.ping_check(gw, 1, T).expect("the negotiated chain works");
}

#[test]
fn failing_plugin_error_is_shown_and_add_is_undone() {
    let node = TestNode::new().unwrap();
    let a = node.container("a").unwrap();
    let typo = vec![json!({"type": "netsvc-testplugin", "test": {"mrk": "typo"}})];
    let list = write_conflist(&node, &node.bridge_conflist("bad", "1.0.0", "10.234.0.0/24", typo));
    let out = exec(&node, &["add", p(&list), p(a.netns_path())]);
    assert!(!out.status.success());
    let err: Value = serde_json::from_slice(&out.stdout).expect("error JSON on stdout");
    assert_eq!(err["code"], 7);
    assert!(err["msg"].as_str().unwrap().contains("mrk"), "{err}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("plugin #1 (netsvc-testplugin)"),
        "names the plugin: {stderr}"
    );
    assert!(!has_link(&a, "eth0"), "the bridge's half of the failed ADD was deleted");
}

#[test]
fn runtime_chains_every_reference_version() {
    for (i, version) in ["0.3.0", "0.3.1", "0.4.0", "1.0.0"].into_iter().enumerate() {
        let node = TestNode::new().unwrap();
        let (a, b) = (node.container("a").unwrap(), node.container("b").unwrap());
        let subnet = format!("10.235.{i}.0/24");
        let conf = node.bridge_conflist("ver", version, &subnet, vec![json!({"type": "netsvc-testplugin"})]);
        let chain = node.chain(&conf).unwrap();
        let ra = chain.add(&a, "eth0").unwrap_or_else(|e| panic!("{version}: {e}"));
        let rb = chain.add(&b, "eth0").unwrap();
        assert_eq!(ra["cniVersion"], version);
        if version.starts_with("0.") {
            assert_eq!(ra["ips"][0]["version"], "4", "{version} results carry ips[].version");
        }
        a.ping_check(container_ip(&rb, "eth0").unwrap(), 1, T)
            .unwrap_or_else(|e| panic!("{version}: {e}"));
        if version != "0.3.0" && version != "0.3.1" {
            chain.check(&a, "eth0").unwrap_or_else(|e| panic!("{version}: {e}"));
        }
        chain.del(&a, "eth0").unwrap();
        chain.del(&a, "eth0").unwrap();
        chain.del_without_netns(b.name(), "eth0").unwrap();
        assert!(!has_link(&a, "eth0"), "{version}: DEL removed the interface");
    }
}

#[test]
fn runtime_runs_the_reference_meta_plugins() {
    let node = TestNode::new().unwrap();
    let (a, b) = (node.container("a").unwrap(), node.container("b").unwrap());
    let extra = vec![
        json!({"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.accept_redirects": "0"}}),
        json!({"type": "firewall", "backend": "iptables"}),
        json!({"type": "bandwidth", "ingressRate": 100_000_000, "ingressBurst": 1_000_000,
               "egressRate": 100_000_000, "egressBurst": 1_000_000}),
        json!({"type": "netsvc-testplugin"}),
    ];
    let chain = node
        .chain(&node.bridge_conflist("meta", "1.0.0", "10.236.9.0/24", extra))
        .unwrap();
    let ra = chain.add(&a, "eth0").unwrap_or_else(|e| panic!("ADD: {e}"));
    let rb = chain.add(&b, "eth0").unwrap();
    let sysctl = a.sysctl("net.ipv4.conf.eth0.accept_redirects").unwrap();
    assert_eq!(sysctl.trim(), "0", "tuning ran in the container");
    let ifb = node.links().unwrap().iter().any(|l| l.kind() == Some("ifb"));
    assert!(ifb, "bandwidth made its ifb on the node");
    a.ping_check(container_ip(&rb, "eth0").unwrap(), 1, T)
        .expect("traffic passes the whole chain");
    assert_eq!(
        ra["interfaces"][2]["name"], "eth0",
        "the result passes through every plugin intact"
    );
    chain.check(&a, "eth0").unwrap_or_else(|e| panic!("CHECK: {e}"));
    chain.del(&a, "eth0").unwrap_or_else(|e| panic!("DEL: {e}"));
    chain.del(&a, "eth0").expect("a second DEL");
    chain.del(&b, "eth0").unwrap();
    let ifb = node.links().unwrap().iter().any(|l| l.kind() == Some("ifb"));
    assert!(!ifb, "bandwidth's ifb went with DEL");
}
