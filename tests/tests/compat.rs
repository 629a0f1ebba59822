//! The compatibility matrix: every netsvc service chained with the
//! reference plugins (bridge, ptp, macvlan; tuning, portmap, bandwidth) in
//! every CNI version they speak, run through `netsvc exec` and through
//! podman. ADD, CHECK, DEL and GC succeed; the interface plugin's result
//! reaches the runtime intact (the very mac and address the container has);
//! traffic flows through each service; nothing is left after DEL.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use netsvc_composer::catalog::Catalog;
use netsvc_composer::validate::{has_errors, validate};
use netsvc_tests::chain::{container_ip, json_of, netsvc_exec};
use netsvc_tests::leftovers::leftovers;
use netsvc_tests::podman::{Podman, Run};
use netsvc_tests::wireguard::SITE_KEYS;
use netsvc_tests::{Container, EchoServer, Netns, TestNode};
use serde_json::{Value, json};

/// What Debian's reference plugins speak (they stop at 1.0.0).
const VERSIONS: [&str; 4] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"];
const SUBNET: &str = "10.240.0.0/24";
const GATEWAY: &str = "10.240.0.1";
const VIP: &str = "10.96.0.50";
const HOST_PORT: u16 = 18080;
const T: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Link {
    Bridge,
    Ptp,
    /// On the node's `mv0`, bridge mode: no veth on the node, so no QoS
    /// or bandwidth, and the composer warns about the firewall and LB.
    Macvlan,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Shaper {
    Qos,
    /// The reference plugin instead of netsvc-qos (the two conflict).
    Bandwidth,
    None,
}

/// The chain: the interface plugin, tuning and portmap, then every netsvc
/// service that fits behind it.
fn conflist(node: &TestNode, link: Link, shaper: Shaper, version: &str) -> Value {
    let ipam = json!({"type": "host-local", "dataDir": node.ipam_dir(),
                      "ranges": [[{"subnet": SUBNET}]], "routes": [{"dst": "0.0.0.0/0"}]});
    let mut plugins = vec![match link {
        Link::Bridge => json!({"type": "bridge", "bridge": "br-compat", "isGateway": true, "ipam": ipam}),
        Link::Ptp => json!({"type": "ptp", "ipam": ipam}),
        Link::Macvlan => json!({"type": "macvlan", "master": "mv0", "mode": "bridge", "ipam": ipam}),
    }];
    plugins.push(json!({"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.accept_redirects": "0"}}));
    plugins.push(json!({"type": "portmap", "capabilities": {"portMappings": true}}));
    // b serves 8080 to a, and to the node (portmap's connections come from it).
    plugins.push(json!({"type": "netsvc-firewall", "policies": [{
        "name": "b-from-a", "select": {"names": ["b"]},
        "ingress": [{"from": [{"names": ["a"]}, {"cidr": format!("{GATEWAY}/32")}],
                     "ports": [{"protocol": "tcp", "port": 8080}]}]}]}));
    plugins.push(json!({"type": "netsvc-lb", "services": [{
        "name": "web", "vip": VIP, "select": {"names": ["b"]},
        "ports": [{"port": 80, "targetPort": 8080, "protocol": "tcp"}]}]}));
    match shaper {
        Shaper::Qos => plugins.push(json!({"type": "netsvc-qos", "egressRate": "200mbit"})),
        Shaper::Bandwidth => plugins.push(json!({"type": "bandwidth",
            "egressRate": 200_000_000, "egressBurst": 2_000_000})),
        Shaper::None => {}
    }
    if link != Link::Macvlan {
        plugins.push(json!({"type": "netsvc-dns", "domain": "compat.internal", "listen": "gateway"}));
        plugins.push(
            json!({"type": "netsvc-vpn", "mode": "tunnel", "address": "10.200.0.2/32",
            "routes": ["10.50.0.0/16"], "peers": [{
                "publicKey": SITE_KEYS.1,
                "endpoint": "192.0.2.1:51820", "allowedIPs": ["10.50.0.0/16"]}]}),
        );
    }
    json!({"cniVersion": version, "name": "compat", "plugins": plugins})
}

fn node_for(link: Link) -> TestNode {
    let node = TestNode::new().unwrap();
    if link == Link::Macvlan {
        node.dead_end_link("mv0").unwrap();
    }
    node
}

/// The composer accepts the chain; after macvlan it warns that the
/// firewall and LB only see traffic routed through the node.
fn assert_composes(conf: &Value, link: Link) {
    let found = validate(conf, &Catalog::builtin());
    assert!(!has_errors(&found), "{found:#?}");
    let warned = found.iter().any(|d| d.check == "no-node-path");
    assert_eq!(warned, link == Link::Macvlan, "{found:#?}");
}

/// The result holds what the interface plugin made, as the container has
/// it: `eth0` with its very mac, its address with the gateway, the route.
fn assert_intact(result: &Value, version: &str, container: &Netns, link: Link) {
    assert_eq!(result["cniVersion"], version);
    let eth0 = container.link("eth0").unwrap();
    let interfaces = result["interfaces"].as_array().unwrap();
    let index = interfaces
        .iter()
        .position(|i| i["name"] == "eth0" && i["sandbox"].is_string())
        .unwrap_or_else(|| panic!("{version}: no eth0 in {result}"));
    assert_eq!(interfaces[index]["mac"].as_str(), eth0.address.as_deref(), "{version}");
    let ip = &result["ips"][0];
    let address = format!("{}/24", eth0.ips()[0]);
    assert_eq!(ip["address"], address, "{version}");
    assert_eq!(ip["interface"], index, "{version}");
    assert_eq!(ip["gateway"], GATEWAY, "{version}");
    if version.starts_with("0.") {
        assert_eq!(
            ip["version"], "4",
            "{version}: results before 1.0.0 carry ips[].version"
        );
    }
    let routes = result["routes"].as_array().unwrap();
    assert!(routes.iter().any(|r| r["dst"] == "0.0.0.0/0"), "{version}: {result}");
    if link != Link::Macvlan {
        assert_eq!(result["dns"]["nameservers"][0], GATEWAY, "{version}");
        // The tunnel's device joins the result; its routes do too.
        assert!(interfaces.iter().any(|i| i["name"] == "wg0"), "{version}");
    }
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn vpn_devices(link: Link, ids: &[&str]) -> Vec<String> {
    if link == Link::Macvlan {
        return Vec::new();
    }
    ids.iter()
        .map(|id| netsvc_vpn::tunnel::device_name(id, "eth0"))
        .collect()
}

/// Every version through `netsvc exec`, on a fresh node each.
fn via_exec(link: Link, shaper: Shaper) {
    for version in VERSIONS {
        let node = node_for(link);
        let conf = conflist(&node, link, shaper, version);
        assert_composes(&conf, link);
        let file = node.state_dir().join("compat.conflist");
        std::fs::write(&file, conf.to_string()).unwrap();
        let (a, b) = (node.container("a").unwrap(), node.container("b").unwrap());
        let add = |c: &Container, name: &str, cap_args: Value| {
            let args = format!("IgnoreUnknown=1;NETSVC_NAME={name}");
            let cap_args = cap_args.to_string();
            let out = netsvc_exec(
                &node,
                &[
                    "add",
                    p(&file),
                    p(c.netns_path()),
                    "--args",
                    &args,
                    "--cap-args",
                    &cap_args,
                ],
            );
            json_of(&out, &format!("{version}: ADD {name}"))
        };
        let mappings = json!({"portMappings": [
            {"hostPort": HOST_PORT, "containerPort": 8080, "protocol": "tcp"}]});
        let ra = add(&a, "a", json!({}));
        let rb = add(&b, "b", mappings);
        assert_intact(&ra, version, a.ns(), link);
        assert_intact(&rb, version, b.ns(), link);

        let b_ip = container_ip(&rb, "eth0").unwrap();
        let server = EchoServer::start(b.ns(), "0.0.0.0:8080".parse().unwrap(), "b").unwrap();
        let reply = a.tcp_echo(SocketAddr::new(b_ip, 8080), "direct", T);
        assert_eq!(reply.unwrap().identity, "b", "{version}: a -> b");
        if link != Link::Macvlan {
            let vip = SocketAddr::new(VIP.parse().unwrap(), 80);
            assert_eq!(a.tcp_echo(vip, "vip", T).unwrap().identity, "b", "{version}: VIP");
            let mapped = SocketAddr::new(GATEWAY.parse().unwrap(), HOST_PORT);
            let reply = node.tcp_echo(mapped, "mapped", T);
            assert_eq!(reply.unwrap().identity, "b", "{version}: portmap");
        }

        if version != "0.3.0" && version != "0.3.1" {
            for c in [&a, &b] {
                json_of(
                    &netsvc_exec(&node, &["check", p(&file), p(c.netns_path())]),
                    &format!("{version}: CHECK"),
                );
            }
        }
        let keep = format!("{}/eth0", a.name());
        json_of(&netsvc_exec(&node, &["gc", p(&file), "--valid", &keep]), "GC");
        json_of(&netsvc_exec(&node, &["del", p(&file), p(a.netns_path())]), "DEL");
        json_of(&netsvc_exec(&node, &["del", p(&file), p(a.netns_path())]), "DEL again");
        // b's container dies first, its namespace (and veth) with it: the DEL
        // a runtime then sends has no netns.
        let (a_id, b_id) = (a.name().to_string(), b.name().to_string());
        drop((server, b));
        let del = netsvc_exec(&node, &["del", p(&file), "--container-id", &b_id]);
        json_of(&del, &format!("{version}: DEL without netns"));
        let left = leftovers(&node, &vpn_devices(link, &[&a_id, &b_id])).unwrap();
        assert!(left.is_empty(), "{version}: after DEL: {left:#?}");
    }
}

/// Every version through podman: ADD at `run`, DEL at `rm`.
fn via_podman(link: Link, shaper: Shaper) {
    for version in VERSIONS {
        let node = node_for(link);
        let podman = Podman::new(&node).unwrap();
        let net = podman.add_network(conflist(&node, link, shaper, version)).unwrap();
        for (name, ports) in [("b", &[8080][..]), ("a", &[][..])] {
            podman
                .run(&Run {
                    name,
                    networks: &[&net],
                    ports,
                    ..Run::default()
                })
                .unwrap_or_else(|e| panic!("{version}: {e:#}"));
        }
        // What podman made of our result is what the container has.
        let inspect = podman.inspect("b").unwrap();
        let seen = &inspect["NetworkSettings"]["Networks"][&net];
        let eth0 = podman.netns("b").unwrap().link("eth0").unwrap();
        assert_eq!(seen["MacAddress"].as_str(), eth0.address.as_deref(), "{version}");
        assert_eq!(
            seen["IPAddress"].as_str().unwrap(),
            eth0.ips()[0].to_string(),
            "{version}"
        );
        assert_eq!(seen["Gateway"], GATEWAY, "{version}");

        let b_ip: IpAddr = seen["IPAddress"].as_str().unwrap().parse().unwrap();
        assert_eq!(podman.fetch("a", b_ip, 8080).as_deref(), Some("b"), "{version}: a -> b");
        if link != Link::Macvlan {
            let vip = VIP.parse().unwrap();
            assert_eq!(podman.fetch("a", vip, 80).as_deref(), Some("b"), "{version}: VIP");
        }
        let ids: Vec<String> = ["a", "b"].iter().map(|n| podman.id(n).unwrap()).collect();
        podman.remove_all().unwrap();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let left = leftovers(&node, &vpn_devices(link, &ids)).unwrap();
        assert!(left.is_empty(), "{version}: after podman rm -af: {left:#?}");
    }
}

#[test]
fn bridge_with_qos_via_exec() {
    via_exec(Link::Bridge, Shaper::Qos);
}

#[test]
fn bridge_with_bandwidth_via_exec() {
    via_exec(Link::Bridge, Shaper::Bandwidth);
}

#[test]
fn ptp_with_qos_via_exec() {
    via_exec(Link::Ptp, Shaper::Qos);
}

#[test]
fn macvlan_via_exec() {
    via_exec(Link::Macvlan, Shaper::None);
}

#[test]
fn bridge_with_qos_via_podman() {
    via_podman(Link::Bridge, Shaper::Qos);
}

#[test]
fn bridge_with_bandwidth_via_podman() {
    via_podman(Link::Bridge, Shaper::Bandwidth);
}

#[test]
fn ptp_with_qos_via_podman() {
    via_podman(Link::Ptp, Shaper::Qos);
}

#[test]
fn macvlan_via_podman() {
    via_podman(Link::Macvlan, Shaper::None);
}

/// `cniVersions` up to 1.1.0: the chain runs at the highest version all its
/// plugins speak, 1.0.0 with Debian's bridge in it.
#[test]
fn a_conflist_listing_versions_runs_at_the_highest_the_chain_speaks() {
    let node = TestNode::new().unwrap();
    let mut conf = conflist(&node, Link::Bridge, Shaper::Qos, "1.1.0");
    conf["cniVersions"] = json!(["0.3.1", "0.4.0", "1.0.0", "1.1.0"]);
    let file = node.state_dir().join("versions.conflist");
    std::fs::write(&file, conf.to_string()).unwrap();
    let version = json_of(&netsvc_exec(&node, &["version", p(&file)]), "VERSION");
    assert_eq!(version["cniVersion"], "1.0.0", "{version}");
    let a = node.container("a").unwrap();
    let result = json_of(&netsvc_exec(&node, &["add", p(&file), p(a.netns_path())]), "ADD");
    assert_intact(&result, "1.0.0", a.ns(), Link::Bridge);
    json_of(&netsvc_exec(&node, &["check", p(&file), p(a.netns_path())]), "CHECK");
    json_of(&netsvc_exec(&node, &["del", p(&file), p(a.netns_path())]), "DEL");
}

/// A chain of netsvc plugins alone (a tunnel as the only interface) speaks
/// 1.1.0, so GC runs for real: it takes what no valid attachment holds.
#[test]
fn a_netsvc_only_chain_runs_at_1_1_0_and_gc_collects() {
    let node = TestNode::new().unwrap();
    let conf = json!({"cniVersion": "1.1.0", "cniVersions": ["1.0.0", "1.1.0"], "name": "tunnels",
        "plugins": [
            {"type": "netsvc-vpn", "mode": "tunnel", "address": "10.200.0.2/32", "peers": [{
                "publicKey": SITE_KEYS.1,
                "endpoint": "192.0.2.1:51820", "allowedIPs": ["10.50.0.0/16"]}]},
            {"type": "netsvc-firewall", "defaultIngress": "deny"}]});
    assert!(!has_errors(&validate(&conf, &Catalog::builtin())));
    let file = node.state_dir().join("tunnels.conflist");
    std::fs::write(&file, conf.to_string()).unwrap();
    let (a, b) = (node.container("a").unwrap(), node.container("b").unwrap());
    for c in [&a, &b] {
        let result = json_of(&netsvc_exec(&node, &["add", p(&file), p(c.netns_path())]), "ADD");
        assert_eq!(result["cniVersion"], "1.1.0");
        assert!(c.link("eth0").is_ok(), "the tunnel is the container's eth0");
    }
    let devices = vpn_devices(Link::Bridge, &[a.name(), b.name()]);
    let before = leftovers(&node, &devices).unwrap();
    let held = |left: &[String]| left.iter().any(|l| l.contains(b.name()) || l.contains(&devices[1]));
    assert!(held(&before), "b's tunnel runs: {before:#?}");
    let keep = format!("{}/eth0", a.name());
    json_of(&netsvc_exec(&node, &["gc", p(&file), "--valid", &keep]), "GC");
    let left = leftovers(&node, &devices).unwrap();
    assert!(!held(&left), "b's tunnel and records survived GC: {left:#?}");
    assert!(c_has_tunnel(&a), "a, a valid attachment, keeps its tunnel");
    json_of(&netsvc_exec(&node, &["del", p(&file), p(a.netns_path())]), "DEL");
    let left = leftovers(&node, &devices).unwrap();
    assert!(left.is_empty(), "after DEL: {left:#?}");
}

fn c_has_tunnel(c: &Container) -> bool {
    c.link("eth0")
        .is_ok_and(|l| l.kind() == Some("wireguard") || l.kind() == Some("tun"))
}
