//! `netsvc repair`: drift injected by hand into the firewall's and the load
//! balancer's tables is listed exactly by `--dry-run`, fixed by a repair
//! (traffic proves it), and a second run finds nothing.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use netsvc_tests::chain::{CallArgs, json_of, netsvc};
use netsvc_tests::{EchoServer, TestNode};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(5);
const VIP: &str = "10.96.0.20";
const STRAY: &str = "10.252.0.99";

fn conflist(node: &TestNode) -> Value {
    node.bridge_conflist(
        "drift",
        "1.0.0",
        "10.252.0.0/24",
        vec![
            json!({"type": "netsvc-firewall", "defaultIngress": "deny", "policies": [
                {"name": "api-from-web", "select": {"labels": {"tier": "api"}},
                 "ingress": [{"from": [{"labels": {"tier": "web"}}], "ports": [{"protocol": "tcp", "port": 8080}]}]}]}),
            json!({"type": "netsvc-lb", "services": [
                {"name": "api", "vip": VIP, "select": {"labels": {"tier": "api"}},
                 "ports": [{"port": 80, "targetPort": 8080}]}]}),
        ],
    )
}

/// The name of the set or map in `table` whose name ends with `suffix`.
fn named(node: &TestNode, table: &str, suffix: &str) -> String {
    let ruleset = node.nft_ruleset().unwrap();
    ruleset["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i.get("set").or_else(|| i.get("map")))
        .filter(|s| s["table"] == table)
        .filter_map(|s| s["name"].as_str())
        .find(|n| n.ends_with(suffix))
        .unwrap_or_else(|| panic!("no set ending {suffix} in {table}"))
        .to_string()
}

/// `netsvc repair [extra…] --format json` on the node: its differences as
/// `<service> <kind> <object>` lines.
fn repair(node: &TestNode, extra: &[&str]) -> BTreeSet<String> {
    let mut args = vec!["repair", "--format", "json"];
    args.extend(extra);
    let out = json_of(&netsvc(node, &args), "netsvc repair");
    assert_eq!(out["errors"], json!([]), "{out}");
    out["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            format!(
                "{} {} {}",
                d["service"].as_str().unwrap(),
                d["kind"].as_str().unwrap(),
                d["object"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn repair_lists_exactly_the_injected_drift_fixes_it_and_then_finds_none() {
    let node = TestNode::new().unwrap();
    node.ip(["link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1"])
        .unwrap();
    node.ip(["link", "set", "uplink0", "up"]).unwrap();
    node.ip(["link", "set", "uplink1", "up"]).unwrap();
    node.ip(["route", "add", "default", "dev", "uplink0"]).unwrap();
    let chain = node.chain(&conflist(&node)).unwrap();
    let (api, web) = (node.container("api").unwrap(), node.container("web").unwrap());
    let r = chain
        .add_with(&api, "eth0", &CallArgs::endpoint("api", Some("tier:api")))
        .unwrap();
    let api_ip: IpAddr = netsvc_tests::chain::container_ip(&r, "eth0").unwrap();
    chain
        .add_with(&web, "eth0", &CallArgs::endpoint("web", Some("tier:web")))
        .unwrap();
    let _srv = EchoServer::start(api.ns(), "0.0.0.0:8080".parse().unwrap(), "api").unwrap();
    let direct = SocketAddr::new(api_ip, 8080);
    let via_vip = SocketAddr::new(VIP.parse().unwrap(), 80);
    assert_eq!(web.tcp_echo(direct, "hi", T).unwrap().identity, "api");
    assert_eq!(web.tcp_echo(via_vip, "hi", T).unwrap().identity, "api");
    assert_eq!(
        repair(&node, &["--dry-run"]),
        BTreeSet::new(),
        "a fresh network has no drift"
    );

    // Drift: the server leaves its selector set, a stranger joins the
    // web set, and the service's only slot is lost.
    let selected = named(&node, "netsvc_firewall", "_sel4");
    let from_web = named(&node, "netsvc_firewall", "_i0p04");
    let slots = named(&node, "netsvc_lb", "_slots");
    let nft = |args: &[&str]| node.exec("nft", args).unwrap();
    nft(&[
        "delete",
        "element",
        "inet",
        "netsvc_firewall",
        &selected,
        &format!("{{ {api_ip} }}"),
    ]);
    nft(&[
        "add",
        "element",
        "inet",
        "netsvc_firewall",
        &from_web,
        &format!("{{ {STRAY} }}"),
    ]);
    nft(&["delete", "element", "ip", "netsvc_lb", &slots, "{ 0 }"]);
    assert!(
        web.tcp_echo(via_vip, "hi", Duration::from_millis(800)).is_err(),
        "the VIP lost its backend"
    );

    let injected: BTreeSet<String> = [
        format!("netsvc-firewall missing element {api_ip} of set inet netsvc_firewall {selected}"),
        format!("netsvc-firewall extra element {STRAY} of set inet netsvc_firewall {from_web}"),
        format!("netsvc-lb missing element 0 : {api_ip} of map ip netsvc_lb {slots}"),
    ]
    .into();
    assert_eq!(
        repair(&node, &["--dry-run"]),
        injected,
        "the dry run lists exactly the drift"
    );
    assert_eq!(
        repair(&node, &["--dry-run", "--network", "drift"]),
        injected,
        "and so does one network's"
    );
    assert!(
        web.tcp_echo(via_vip, "hi", Duration::from_millis(800)).is_err(),
        "a dry run changes nothing"
    );

    assert_eq!(repair(&node, &[]), injected, "the repair fixes what the dry run found");
    assert_eq!(web.tcp_echo(via_vip, "hi", T).unwrap().identity, "api");
    assert_eq!(web.tcp_echo(direct, "hi", T).unwrap().identity, "api");
    let listed = node
        .exec("nft", ["list", "set", "inet", "netsvc_firewall", &from_web])
        .unwrap();
    assert!(!listed.contains(STRAY), "the stranger is gone: {listed}");
    assert_eq!(
        repair(&node, &["--dry-run"]),
        BTreeSet::new(),
        "a second run finds nothing"
    );
    assert_eq!(repair(&node, &[]), BTreeSet::new(), "nor does a second repair");
}
