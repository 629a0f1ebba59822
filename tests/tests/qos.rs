//! netsvc-qos's verbs on real namespaces: ADD/DEL cycles leave nothing
//! behind, bad input is refused whole, a chain without a host veth is told
//! why, CHECK sees a lost tree, GC removes orphaned ifbs.

use netsvc_tests::TestNode;
use netsvc_tests::chain::CallArgs;
use serde_json::{Value, json};

fn qos(extra: Value) -> Value {
    let mut v = json!({"type": "netsvc-qos"});
    v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    v
}

/// Every qdisc (but the defaults a link starts with) and class on the node.
fn shaping_left(node: &TestNode) -> Vec<String> {
    let mut left = Vec::new();
    for link in node.links().unwrap() {
        let qdiscs = node.exec("tc", ["qdisc", "show", "dev", &link.ifname]).unwrap();
        left.extend(
            qdiscs
                .lines()
                .filter(|l| !l.contains("noqueue") && !l.starts_with("qdisc pfifo_fast"))
                .map(|l| format!("{}: {l}", link.ifname)),
        );
        let classes = node.exec("tc", ["class", "show", "dev", &link.ifname]).unwrap();
        left.extend(classes.lines().map(|l| format!("{}: {l}", link.ifname)));
    }
    left
}

#[test]
fn two_hundred_add_del_cycles_leave_no_ifb_qdisc_or_class() {
    let node = TestNode::new().unwrap();
    let conf = qos(json!({"ingressRate": "10mbit", "egressRate": "20mbit",
        "classes": [{"name": "ssh", "rate": "5mbit", "match": {"ports": [{"protocol": "tcp", "port": 22}]}},
                    {"name": "rest", "rate": "1mbit", "default": true}],
        "unshapedSubnets": ["10.246.0.0/24"]}));
    let chain = node
        .chain(&node.bridge_conflist("qoscyc", "1.0.0", "10.246.0.0/24", vec![conf]))
        .unwrap();
    let c = node.container("c").unwrap();
    for i in 0..200 {
        chain
            .add_with(&c, "eth0", &CallArgs::endpoint("c", None))
            .unwrap_or_else(|e| panic!("ADD {i}: {e}"));
        if i == 0 {
            let host = c.veth_peer_in("eth0", &node).unwrap();
            let tree = node.exec("tc", ["class", "show", "dev", &host]).unwrap();
            let htb = tree.lines().filter(|l| l.starts_with("class htb")).count();
            assert_eq!(htb, 4, "rate, ssh, rest, unlimited: {tree}");
            assert_eq!(node.links_of_kind("ifb").unwrap().len(), 1);
            chain.check(&c, "eth0").unwrap();
        }
        chain.del(&c, "eth0").unwrap_or_else(|e| panic!("DEL {i}: {e}"));
    }
    assert_eq!(node.links_of_kind("ifb").unwrap(), Vec::<String>::new());
    assert_eq!(shaping_left(&node), Vec::<String>::new());
    // DEL again, with everything gone: still fine.
    chain.del(&c, "eth0").unwrap();
}

#[test]
fn bad_input_is_code_7_naming_the_field_and_nothing_is_applied() {
    let node = TestNode::new().unwrap();
    let class = |extra: Value| {
        let mut c = json!({"name": "a", "rate": "1mbit", "match": {"ports": [{"port": 22}]}});
        c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        c
    };
    for (extra, field) in [
        (json!({"egressRate": 0}), "egressRate"),
        (json!({"egressRate": "10mbit", "egressBurst": "4gb"}), "egressBurst"),
        (json!({"egressRate": "1kbit", "egressBurst": "100mb"}), "egressBurst"),
        (
            json!({"egressRate": "10mbit", "classes": [class(json!({"ceil": "500kbit"}))]}),
            "classes[0].ceil",
        ),
        (
            json!({"egressRate": "10mbit", "classes": [class(json!({"default": true})), class(json!({"name": "b", "default": true}))]}),
            "classes[1].default",
        ),
        (json!({"egressRate": "10 megabits"}), "egressRate"),
        (
            json!({"egressRate": "10mbit", "shapedSubnets": ["10.0.0.0/8"], "unshapedSubnets": ["192.168.0.0/16"]}),
            "shapedSubnets",
        ),
    ] {
        let chain = node
            .chain(&node.bridge_conflist("qosbad", "1.0.0", "10.246.1.0/24", vec![qos(extra.clone())]))
            .unwrap();
        let c = node.container("c").unwrap();
        let err = chain.add_with(&c, "eth0", &CallArgs::endpoint("c", None)).unwrap_err();
        assert_eq!(err.cni().code, 7, "{extra}: {err}");
        assert!(err.cni().msg.contains(field), "{extra}: {err} does not name {field}");
        assert_eq!(node.links_of_kind("ifb").unwrap(), Vec::<String>::new(), "{extra}");
        assert_eq!(shaping_left(&node), Vec::<String>::new(), "{extra}");
    }
}

#[test]
fn a_chain_without_a_host_veth_is_refused_with_why() {
    let node = TestNode::new().unwrap();
    // macvlan on a node link: the container's interface has no peer on the node.
    node.dead_end_link("uplink0").unwrap();
    let conf = json!({"cniVersion": "1.0.0", "name": "qosmv", "plugins": [
        {"type": "macvlan", "master": "uplink0", "mode": "bridge",
         "ipam": {"type": "host-local", "dataDir": node.ipam_dir(), "ranges": [[{"subnet": "10.246.2.0/24"}]]}},
        qos(json!({"egressRate": "10mbit"}))]});
    let chain = node.chain(&conf).unwrap();
    let c = node.container("c").unwrap();
    let err = chain.add_with(&c, "eth0", &CallArgs::endpoint("c", None)).unwrap_err();
    assert_eq!(err.cni().code, 7, "{err}");
    let msg = &err.cni().msg;
    assert!(msg.contains("macvlan") && msg.contains("veth"), "{msg}");
    assert_eq!(node.links_of_kind("ifb").unwrap(), Vec::<String>::new());
}

#[test]
fn check_sees_a_lost_tree_and_gc_removes_orphaned_ifbs() {
    let node = TestNode::new().unwrap();
    let conf = qos(json!({"ingressRate": "10mbit", "egressRate": "10mbit"}));
    let chain = node
        .chain(&node.bridge_conflist("qoslife", "1.0.0", "10.246.3.0/24", vec![conf.clone()]))
        .unwrap();
    // GC and STATUS exist from 1.1.0, which Debian's bridge does not speak.
    let alone = node
        .chain(&json!({"cniVersion": "1.1.0", "name": "qoslife", "plugins": [conf]}))
        .unwrap();
    let (a, b) = (node.container("a").unwrap(), node.container("b").unwrap());
    chain.add_with(&a, "eth0", &CallArgs::endpoint("a", None)).unwrap();
    chain.add_with(&b, "eth0", &CallArgs::endpoint("b", None)).unwrap();
    chain.check(&a, "eth0").unwrap();
    alone.status().unwrap();

    // A lost tree: CHECK says so (code 120).
    let host_a = a.veth_peer_in("eth0", &node).unwrap();
    node.exec("tc", ["qdisc", "del", "dev", &host_a, "root"]).unwrap();
    let err = chain.check(&a, "eth0").unwrap_err();
    assert_eq!(err.cni().code, 120, "{err}");
    assert!(err.cni().msg.contains(&host_a), "{err}");

    // An ifb of ours nobody holds (a crash between steps, say) is an orphan.
    node.ip(["link", "add", "nsq000000000000", "type", "ifb"]).unwrap();
    let before = node.links_of_kind("ifb").unwrap();
    assert_eq!(before.len(), 3, "{before:?}");
    alone.gc(&[(&a, "eth0")]).unwrap();
    let after = node.links_of_kind("ifb").unwrap();
    assert_eq!(after.len(), 1, "only a's ifb stays: {after:?}");
    assert!(before.contains(&after[0]));
    let host_b = b.veth_peer_in("eth0", &node).unwrap();
    let left = node.exec("tc", ["qdisc", "show", "dev", &host_b]).unwrap();
    assert!(
        !left.contains("htb") && !left.contains("ingress"),
        "b's shaping is gone: {left}"
    );
}

#[test]
fn serial_apply_reshapes_after_a_config_change_and_repairs_drift() {
    use netsvc_tests::shaping::{Iperf3Server, Run};
    let node = TestNode::new().unwrap();
    let conf = |rate: &str| {
        node.bridge_conflist(
            "qosapp",
            "1.0.0",
            "10.246.4.0/24",
            vec![qos(json!({"egressRate": rate}))],
        )
    };
    let chain = node.chain(&conf("10mbit")).unwrap();
    let c = node.container("c").unwrap();
    let r = chain.add_with(&c, "eth0", &CallArgs::endpoint("c", None)).unwrap();
    let gateway: std::net::IpAddr = r["ips"][0]["gateway"].as_str().unwrap().parse().unwrap();
    let path = node.state_dir().join("qosapp.conflist");
    let apply = || {
        let netsvc = netsvc_tests::chain::plugin_dir().join("netsvc");
        let out = node.command(netsvc).arg("apply").arg(&path).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    std::fs::write(&path, serde_json::to_vec(&conf("5mbit")).unwrap()).unwrap();
    let first = apply();
    assert!(first.contains("1 endpoints, 1 changes"), "{first}");
    assert!(
        apply().contains("1 endpoints, 0 changes"),
        "a second apply finds nothing to do"
    );
    // The new rate is what the wire carries.
    let ifb = node.links_of_kind("ifb").unwrap().remove(0);
    let server = Iperf3Server::start(&node, 5201).unwrap();
    let shaped = Run {
        client: c.ns(),
        server: gateway,
        port: server.port,
        reverse: false,
        seconds: 5,
        device_ns: &node,
        device: &ifb,
    }
    .measure()
    .unwrap();
    assert!(
        shaped.wire_error(5e6).abs() <= 2.0,
        "wire {:.0} bit/s after apply",
        shaped.wire
    );
    // Drift: a lost redirect is put back.
    let host = c.veth_peer_in("eth0", &node).unwrap();
    node.exec("tc", ["qdisc", "del", "dev", &host, "ingress"]).unwrap();
    assert!(apply().contains("1 endpoints, 1 changes"));
    // CHECK holds against the applied config, and no longer against the old one.
    let applied = node.chain(&conf("5mbit")).unwrap();
    applied.check(&c, "eth0").unwrap();
    assert_eq!(chain.check(&c, "eth0").unwrap_err().cni().code, 120);
    applied.del(&c, "eth0").unwrap();
    assert!(node.links_of_kind("ifb").unwrap().is_empty());
}
