//! `netsvc repair`: drift injected by hand into the firewall's and the load
//! balancer's tables is listed exactly by `--dry-run`, fixed by a repair
//! (traffic proves it), and a second run finds nothing.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use netsvc_tests::chain::{CallArgs, netsvc_repair};
use netsvc_tests::{Container, Daemon, EchoServer, TestNode};
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
    netsvc_repair(node, extra)
        .into_iter()
        .map(|(service, difference)| format!("{service} {difference}"))
        .collect()
}

/// A node with `api` (tier api, serving 8080), `web` (tier web) and `db`
/// (tier db) attached to the firewall and the load balancer.
struct Scene {
    node: TestNode,
    web: Container,
    db: Container,
    api_ip: IpAddr,
    _api: Container,
    _server: EchoServer,
}

impl Scene {
    fn new() -> Scene {
        let node = TestNode::new().unwrap();
        node.ip(["link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1"])
            .unwrap();
        node.ip(["link", "set", "uplink0", "up"]).unwrap();
        node.ip(["link", "set", "uplink1", "up"]).unwrap();
        node.ip(["route", "add", "default", "dev", "uplink0"]).unwrap();
        let chain = node.chain(&conflist(&node)).unwrap();
        let attach = |name: &str| {
            let c = node.container(name).unwrap();
            let r = chain
                .add_with(&c, "eth0", &CallArgs::endpoint(name, Some(&format!("tier:{name}"))))
                .unwrap();
            (c, netsvc_tests::chain::container_ip(&r, "eth0").unwrap())
        };
        let ((api, api_ip), (web, _), (db, _)) = (attach("api"), attach("web"), attach("db"));
        let server = EchoServer::start(api.ns(), "0.0.0.0:8080".parse().unwrap(), "api").unwrap();
        drop(chain);
        Scene {
            node,
            web,
            db,
            api_ip,
            _api: api,
            _server: server,
        }
    }

    fn direct(&self) -> SocketAddr {
        SocketAddr::new(self.api_ip, 8080)
    }

    /// Whether every probe says what the policy and the VIP say: web
    /// reaches api directly and through the VIP; db does not reach api.
    fn all_as_configured(&self, wait: Duration) -> bool {
        let via_vip = SocketAddr::new(VIP.parse().unwrap(), 80);
        let answers = |from: &Container, to| from.tcp_echo(to, "hi", wait).is_ok_and(|r| r.identity == "api");
        answers(&self.web, self.direct()) && answers(&self.web, via_vip) && !answers(&self.db, self.direct())
    }
}

#[test]
fn repair_lists_exactly_the_injected_drift_fixes_it_and_then_finds_none() {
    let scene = Scene::new();
    let (node, web, api_ip) = (&scene.node, &scene.web, scene.api_ip);
    let (direct, via_vip) = (scene.direct(), SocketAddr::new(VIP.parse().unwrap(), 80));
    assert!(scene.all_as_configured(Duration::from_millis(800)), "before any drift");
    assert_eq!(
        repair(node, &["--dry-run"]),
        BTreeSet::new(),
        "a fresh network has no drift"
    );

    // Drift: the server leaves its selector set, a stranger joins the
    // web set, and the service's only slot is lost.
    let selected = named(node, "netsvc_firewall", "_sel4");
    let from_web = named(node, "netsvc_firewall", "_i0p04");
    let slots = named(node, "netsvc_lb", "_slots");
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
    // CHECK of any attachment of the network names the first difference.
    let chain = node.chain(&conflist(node)).unwrap();
    let err = chain
        .check(web, "eth0")
        .expect_err("CHECK sees the drift")
        .cni()
        .clone();
    assert_eq!(err.code, 120, "{err}");
    let first = format!("missing element {api_ip} of set inet netsvc_firewall {selected}");
    assert!(err.msg.contains(&first), "{err}");
    assert_eq!(
        repair(node, &["--dry-run"]),
        injected,
        "the dry run lists exactly the drift"
    );
    assert_eq!(
        repair(node, &["--dry-run", "--network", "drift"]),
        injected,
        "and so does one network's"
    );
    assert!(
        web.tcp_echo(via_vip, "hi", Duration::from_millis(800)).is_err(),
        "a dry run changes nothing"
    );

    assert_eq!(repair(node, &[]), injected, "the repair fixes what the dry run found");
    assert_eq!(web.tcp_echo(via_vip, "hi", T).unwrap().identity, "api");
    assert_eq!(web.tcp_echo(direct, "hi", T).unwrap().identity, "api");
    let listed = node
        .exec("nft", ["list", "set", "inet", "netsvc_firewall", &from_web])
        .unwrap();
    assert!(!listed.contains(STRAY), "the stranger is gone: {listed}");
    assert_eq!(
        repair(node, &["--dry-run"]),
        BTreeSet::new(),
        "a second run finds nothing"
    );
    assert_eq!(repair(node, &[]), BTreeSet::new(), "nor does a second repair");
    assert!(scene.all_as_configured(Duration::from_millis(800)), "after the repair");
}

/// Starts `netsvc agent` on `node` (no conflist: it repairs drift) and
/// waits until it has made its first pass.
fn agent(node: &TestNode) -> Daemon {
    let log = std::fs::File::create(node.state_dir().join("agent.log")).unwrap();
    let daemon = Daemon::spawn(
        node.command(netsvc_tests::chain::plugin_dir().join("netsvc"))
            .args(["agent", "--lease-ttl", "10"])
            .env("NETSVC_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(log),
    )
    .unwrap();
    let agent_dir = node.state_dir().join("agent");
    let ready = netsvc_tests::poll_until(Duration::from_secs(10), || {
        std::fs::read_dir(&agent_dir).ok()?.next().map(drop)
    });
    assert!(ready.is_some(), "the agent started");
    daemon
}

fn agent_log(node: &TestNode) -> String {
    std::fs::read_to_string(node.state_dir().join("agent.log")).unwrap_or_default()
}

#[test]
fn the_agent_restores_policy_and_vips_after_the_ruleset_is_flushed() {
    let scene = Scene::new();
    let _agent = agent(&scene.node);
    assert!(scene.all_as_configured(Duration::from_millis(800)), "before the flush");
    for round in 0..3 {
        let flushed = Instant::now();
        scene.node.exec("nft", ["flush", "ruleset"]).unwrap();
        let during = scene.all_as_configured(Duration::from_millis(200));
        let restored = netsvc_tests::poll_until(Duration::from_secs(5), || {
            scene
                .all_as_configured(Duration::from_millis(300))
                .then(|| flushed.elapsed())
        });
        let restored = restored.unwrap_or_else(|| panic!("round {round}: not restored:\n{}", agent_log(&scene.node)));
        eprintln!("round {round}: all as configured right after the flush: {during}; restored after {restored:?}");
    }
    let log = agent_log(&scene.node);
    assert!(
        log.contains("repaired drift: netsvc-firewall drift: missing table inet netsvc_firewall"),
        "{log}"
    );
    assert!(
        log.contains("repaired drift: netsvc-lb drift: missing table ip netsvc_lb"),
        "{log}"
    );
}

#[test]
fn the_agent_restores_a_deleted_table_and_a_lost_member() {
    let scene = Scene::new();
    let _agent = agent(&scene.node);
    let selected = named(&scene.node, "netsvc_firewall", "_sel4");
    let member = format!("{{ {} }}", scene.api_ip);
    let nft = |args: &[&str]| scene.node.exec("nft", args).unwrap();
    nft(&["delete", "table", "ip", "netsvc_lb"]);
    nft(&["delete", "element", "inet", "netsvc_firewall", &selected, &member]);
    let restored = netsvc_tests::poll_until(Duration::from_secs(5), || {
        scene.all_as_configured(Duration::from_millis(300)).then_some(())
    });
    assert!(restored.is_some(), "not restored:\n{}", agent_log(&scene.node));
    let listed = nft(&["list", "set", "inet", "netsvc_firewall", &selected]);
    assert!(listed.contains(&scene.api_ip.to_string()), "{listed}");
}

/// The HTB tree and ingress qdisc on `device`, as tc prints them (handles,
/// rates), without what the kernel numbers or counts on its own (the
/// leaves' auto-assigned handles, reference counts, a packet counter).
fn shaping_of(node: &TestNode, device: &str) -> String {
    let qdiscs = node.exec("tc", ["qdisc", "show", "dev", device]).unwrap_or_default();
    let classes = node.exec("tc", ["class", "show", "dev", device]).unwrap_or_default();
    let mut out = String::new();
    for line in format!("{qdiscs}{classes}").lines() {
        if !["qdisc htb", "qdisc ingress", "class htb"]
            .iter()
            .any(|p| line.starts_with(p))
        {
            continue;
        }
        let mut words = line.split_whitespace().peekable();
        while let Some(w) = words.next() {
            if matches!(w, "leaf" | "refcnt" | "direct_packets_stat") {
                words.next();
            } else {
                out.push_str(w);
                out.push(' ');
            }
        }
        out.push('\n');
    }
    out
}

#[test]
fn the_agent_restores_a_deleted_qdisc_and_a_deleted_ifb() {
    let node = TestNode::new().unwrap();
    let qos = json!({"type": "netsvc-qos", "ingressRate": "10mbit", "egressRate": "20mbit"});
    let chain = node
        .chain(&node.bridge_conflist("shaped", "1.0.0", "10.253.0.0/24", vec![qos]))
        .unwrap();
    let c = node.container("c").unwrap();
    chain.add_with(&c, "eth0", &CallArgs::endpoint("c", None)).unwrap();
    let veth = c.veth_peer_in("eth0", &node).unwrap();
    let ifb = node.links_of_kind("ifb").unwrap().pop().expect("the endpoint's ifb");
    let (veth_before, ifb_before) = (shaping_of(&node, &veth), shaping_of(&node, &ifb));
    assert!(
        veth_before.contains("qdisc htb 1: root") && veth_before.contains("10Mbit"),
        "{veth_before}"
    );
    assert!(
        ifb_before.contains("qdisc htb 1: root") && ifb_before.contains("20Mbit"),
        "{ifb_before}"
    );
    let _agent = agent(&node);

    // The shaping to the container: its root qdisc deleted.
    node.exec("tc", ["qdisc", "del", "dev", &veth, "root"]).unwrap();
    let restored = netsvc_tests::poll_until(Duration::from_secs(5), || {
        (shaping_of(&node, &veth) == veth_before).then_some(())
    });
    assert!(
        restored.is_some(),
        "{veth} not restored: {}\n{}",
        shaping_of(&node, &veth),
        agent_log(&node)
    );

    // The shaping from the container: its ifb deleted (and with it the redirect's target).
    node.ip(["link", "del", &ifb]).unwrap();
    let restored = netsvc_tests::poll_until(Duration::from_secs(5), || {
        (shaping_of(&node, &ifb) == ifb_before && shaping_of(&node, &veth) == veth_before).then_some(())
    });
    assert!(
        restored.is_some(),
        "{ifb} not restored: {}\n{}",
        shaping_of(&node, &ifb),
        agent_log(&node)
    );
    // Traffic from the container reaches the ifb again (the redirect points at the new one).
    let before = node.exec("tc", ["-s", "qdisc", "show", "dev", &ifb]).unwrap();
    let gateway = "10.253.0.1".parse().unwrap();
    assert!(c.ping(gateway, 3, T), "the container reaches its gateway");
    let after = node.exec("tc", ["-s", "qdisc", "show", "dev", &ifb]).unwrap();
    assert_ne!(before, after, "packets from the container pass the new ifb");
    chain.del(&c, "eth0").unwrap();
}
