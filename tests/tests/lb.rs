//! netsvc-lb on a real bridge network: traffic through VIPs from containers
//! and the node, spread, affinity, Maglev stability, backend removal,
//! services without backends, hairpin, and what ADD/DEL leave behind.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use netsvc_tests::chain::{CallArgs, Chain, container_ip};
use netsvc_tests::{Container, EchoServer, TestNode};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(5);
const VIP: &str = "10.96.0.10";

fn lb(services: Value) -> Value {
    json!({"type": "netsvc-lb", "services": services})
}

fn vip(port: u16) -> SocketAddr {
    SocketAddr::new(VIP.parse().unwrap(), port)
}

/// The node's own traffic to a VIP is routed before it meets nat output, and
/// a VIP without backends is rejected on the forward path: both need a route
/// covering the VIPs, which a real node's default route gives.
fn default_route(node: &TestNode) {
    node.ip(["link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1"])
        .unwrap();
    node.ip(["link", "set", "uplink0", "up"]).unwrap();
    node.ip(["link", "set", "uplink1", "up"]).unwrap();
    node.ip(["route", "add", "default", "dev", "uplink0"]).unwrap();
}

/// A container attached with `NETSVC_NAME` and an `app` label.
fn attach(chain: &Chain, c: &Container, name: &str, app: &str) -> IpAddr {
    let args = CallArgs::endpoint(name, Some(&format!("app:{app}")));
    let r = chain
        .add_with(c, "eth0", &args)
        .unwrap_or_else(|e| panic!("ADD {name}: {e}"));
    container_ip(&r, "eth0").unwrap()
}

/// Backends `<app>0..n` each answering on `port` (IPv4 and IPv6) with its name.
struct Backends {
    containers: Vec<Container>,
    servers: Vec<EchoServer>,
}

fn backends(node: &TestNode, chain: &Chain, app: &str, n: usize, port: u16) -> Backends {
    let mut b = Backends {
        containers: Vec::new(),
        servers: Vec::new(),
    };
    for i in 0..n {
        let name = format!("{app}{i}");
        let c = node.container(&name).unwrap();
        attach(chain, &c, &name, app);
        // `[::]` takes IPv4 as well (IPV6_V6ONLY is off by default).
        let any = SocketAddr::from(([0u16; 8], port));
        b.servers.push(EchoServer::start(c.ns(), any, &name).unwrap());
        b.containers.push(c);
    }
    b
}

/// Who answered `n` TCP (or UDP) connections from `from` to `to`.
fn spread(from: &netsvc_tests::Netns, to: SocketAddr, n: usize, udp: bool) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for i in 0..n {
        let msg = format!("hello {i}");
        let reply = if udp {
            from.udp_echo(to, &msg, T)
        } else {
            from.tcp_echo(to, &msg, T)
        };
        let reply = reply.unwrap_or_else(|e| panic!("connection {i} to {to}: {e:#}"));
        assert_eq!(reply.echoed, msg);
        *seen.entry(reply.identity).or_default() += 1;
    }
    seen
}

/// Our tables without handles and without the clients ClientIP affinity
/// remembers (traffic adds those): what must stay the same.
fn tables(node: &TestNode) -> String {
    ["ip", "ip6"]
        .iter()
        .map(|f| node.exec("nft", ["list", "table", f, "netsvc_lb"]).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn three_backends_share_tcp_and_udp_connections() {
    let node = TestNode::new().unwrap();
    default_route(&node);
    let svc = json!([{"name": "api", "vip": VIP, "select": {"labels": {"app": "api"}},
                      "ports": [{"port": 80, "targetPort": 8080}, {"port": 53, "targetPort": 8080, "protocol": "udp"}]}]);
    // Bridged traffic meets the IP hooks through the plugin's per-bridge
    // setting alone, not the namespace-wide default.
    node.set_sysctl("net.bridge.bridge-nf-call-iptables", "0").unwrap();
    let chain = node
        .chain(&node.bridge_conflist("lbspread", "1.0.0", "10.241.0.0/24", vec![lb(svc)]))
        .unwrap();
    let client = node.container("client").unwrap();
    attach(&chain, &client, "client", "client");
    let _b = backends(&node, &chain, "api", 3, 8080);

    // Client and backends share the bridge: replies are switched at layer 2,
    // so the plugin turned on bridge netfilter for conntrack to un-NAT them.
    let br = node.link("br-lbspread").unwrap();
    assert_eq!(br.info_data("nf_call_iptables"), Some(1), "{br:?}");

    for udp in [false, true] {
        let to = if udp { vip(53) } else { vip(80) };
        let seen = spread(client.ns(), to, 300, udp);
        assert_eq!(seen.len(), 3, "udp={udp}: {seen:?}");
        for (backend, n) in &seen {
            assert!(*n >= 60, "udp={udp}: {backend} got {n} of 300: {seen:?}");
        }
    }
    // The graph keeps the service (what netsvc-dns serves by name).
    let store = netsvc_core::store::FileStore::open(node.state_dir()).unwrap();
    let services = netsvc_core::graph::Graph::new(&store, &netsvc_core::node::NodeName::new("node", "n1").unwrap())
        .services("lbspread")
        .unwrap();
    assert_eq!(services.len(), 1);
    assert_eq!(
        (services[0].name.as_str(), services[0].vip),
        ("api", Some(VIP.parse().unwrap()))
    );
    assert_eq!(services[0].ports[0].target_port, Some(8080));

    // The node reaches the VIP too (its own traffic meets the output hook).
    let reply = node.tcp_echo(vip(80), "from the node", T).unwrap();
    assert!(reply.identity.starts_with("api"), "{reply:?}");
}

#[test]
fn client_ip_affinity_keeps_one_backend() {
    let node = TestNode::new().unwrap();
    let svc = json!([{"name": "api", "vip": VIP, "select": {"labels": {"app": "api"}},
                      "ports": [{"port": 80, "targetPort": 8080}],
                      "affinity": {"clientIP": true, "timeoutSeconds": 60}}]);
    let chain = node
        .chain(&node.bridge_conflist("lbaff", "1.0.0", "10.241.1.0/24", vec![lb(svc)]))
        .unwrap();
    let client = node.container("client").unwrap();
    attach(&chain, &client, "client", "client");
    let b = backends(&node, &chain, "api", 3, 8080);

    let seen = spread(client.ns(), vip(80), 50, false);
    assert_eq!(seen.len(), 1, "{seen:?}");
    // The remembered backend leaves: the client is forgotten and moves on.
    let first = seen.keys().next().unwrap().clone();
    let i: usize = first.trim_start_matches("api").parse().unwrap();
    chain.del(&b.containers[i], "eth0").unwrap();
    let after = spread(client.ns(), vip(80), 20, false);
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(
        !after.contains_key(&first),
        "{first} is gone but still answers: {after:?}"
    );
}

#[test]
fn maglev_moves_few_flows_when_one_of_ten_backends_leaves() {
    let node = TestNode::new().unwrap();
    let svc = json!([{"name": "api", "vip": VIP, "select": {"labels": {"app": "api"}},
                      "ports": [{"port": 80, "targetPort": 8080}], "algorithm": "maglev"}]);
    let chain = node
        .chain(&node.bridge_conflist("lbmaglev", "1.0.0", "10.241.2.0/24", vec![lb(svc)]))
        .unwrap();
    let client = node.container("client").unwrap();
    attach(&chain, &client, "client", "client");
    let b = backends(&node, &chain, "api", 10, 8080);

    let slots = |node: &TestNode| -> Vec<String> {
        let out = node.exec("nft", ["-j", "list", "table", "ip", "netsvc_lb"]).unwrap();
        let doc: Value = serde_json::from_str(&out).unwrap();
        let map = doc["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["map"]["name"].as_str().is_some_and(|n| n.ends_with("_slots")))
            .expect("a slot map")["map"]
            .clone();
        let mut elems: Vec<(u64, String)> = map["elem"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e[0].as_u64().unwrap(), e[1].as_str().unwrap().to_string()))
            .collect();
        elems.sort();
        elems.into_iter().map(|(_, ip)| ip).collect()
    };
    let ports: Vec<u16> = (30000..31000).collect();
    let flows = |client: &Container| -> Vec<String> {
        client
            .ns()
            .tcp_echo_from(&ports, vip(80), "flow", T)
            .unwrap()
            .into_iter()
            .map(|r| r.unwrap().identity)
            .collect()
    };

    let before_slots = slots(&node);
    let before = flows(&client);
    let leaving = "api3";
    chain.del(&b.containers[3], "eth0").unwrap();
    let after_slots = slots(&node);
    let after = flows(&client);

    assert_eq!(before_slots.len(), after_slots.len(), "the table keeps its size");
    let moved_slots = before_slots.iter().zip(&after_slots).filter(|(a, b)| a != b).count();
    let moved_flows = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    println!(
        "maglev: {moved_slots} of {} slots and {moved_flows} of 1000 flows moved",
        before_slots.len()
    );
    assert!(
        moved_slots * 100 <= before_slots.len() * 15,
        "{moved_slots} slots moved"
    );
    assert!(moved_flows <= 150, "{moved_flows} of 1000 flows changed backend");
    assert!(after.iter().all(|b| b != leaving), "a flow still reaches {leaving}");
    let backends_before: std::collections::BTreeSet<_> = before.iter().collect();
    assert_eq!(backends_before.len(), 10, "every backend had flows");
}

#[test]
fn a_deleted_backend_gets_no_new_connections_and_an_empty_vip_refuses_at_once() {
    let node = TestNode::new().unwrap();
    default_route(&node);
    let svc = json!([{"name": "api", "vip": VIP, "select": {"labels": {"app": "api"}},
                      "ports": [{"port": 80, "targetPort": 8080}, {"port": 53, "protocol": "udp", "targetPort": 8080}]}]);
    let chain = node
        .chain(&node.bridge_conflist("lbdel", "1.0.0", "10.241.3.0/24", vec![lb(svc)]))
        .unwrap();
    let client = node.container("client").unwrap();
    attach(&chain, &client, "client", "client");
    let b = backends(&node, &chain, "api", 2, 8080);

    chain.del(&b.containers[0], "eth0").unwrap();
    let seen = spread(client.ns(), vip(80), 50, false);
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["api1"], "{seen:?}");

    chain.del(&b.containers[1], "eth0").unwrap();
    // No backends: TCP is reset and UDP gets port unreachable, not a black hole.
    let started = Instant::now();
    let err = client
        .ns()
        .run(|| std::net::TcpStream::connect_timeout(&vip(80), T))
        .unwrap()
        .unwrap_err();
    let took = started.elapsed();
    println!("connect to an empty VIP failed in {took:?}: {err}");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    let udp = client
        .ns()
        .run(|| -> std::io::Result<usize> {
            let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
            s.connect(vip(53))?;
            s.set_read_timeout(Some(T))?;
            s.send(b"anyone?")?;
            s.recv(&mut [0u8; 64])
        })
        .unwrap();
    assert_eq!(
        udp.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused,
        "UDP to an empty VIP gets ICMP port unreachable"
    );
    // From the node as well.
    let err = node
        .run(|| std::net::TcpStream::connect_timeout(&vip(80), T))
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");

    // A backend coming back takes the VIP out of the reject set.
    let again = node.container("again").unwrap();
    attach(&chain, &again, "again", "api");
    let _s = EchoServer::start(again.ns(), SocketAddr::from(([0, 0, 0, 0], 8080)), "again").unwrap();
    assert_eq!(client.ns().tcp_echo(vip(80), "back", T).unwrap().identity, "again");
}

#[test]
fn a_backend_reaches_itself_through_its_vip() {
    let node = TestNode::new().unwrap();
    let svc = json!([{"name": "solo", "vip": VIP, "select": {"labels": {"app": "solo"}},
                      "ports": [{"port": 80, "targetPort": 8080}]}]);
    let chain = node
        .chain(&node.bridge_conflist("lbhair", "1.0.0", "10.241.4.0/24", vec![lb(svc)]))
        .unwrap();
    let b = backends(&node, &chain, "solo", 1, 8080);
    for i in 0..5 {
        let reply = b.containers[0].ns().tcp_echo(vip(80), &format!("self {i}"), T).unwrap();
        assert_eq!(reply.identity, "solo0");
    }
}

#[test]
fn two_services_share_a_vip_on_different_ports() {
    let node = TestNode::new().unwrap();
    let svcs = json!([
        {"name": "api", "vip": VIP, "select": {"labels": {"app": "api"}}, "ports": [{"port": 80, "targetPort": 8080}]},
        {"name": "web", "vip": VIP, "select": {"labels": {"app": "web"}}, "ports": [{"port": 81, "targetPort": 9090}]}
    ]);
    let chain = node
        .chain(&node.bridge_conflist("lbtwo", "1.0.0", "10.241.5.0/24", vec![lb(svcs)]))
        .unwrap();
    let client = node.container("client").unwrap();
    attach(&chain, &client, "client", "client");
    let _api = backends(&node, &chain, "api", 2, 8080);
    let _web = backends(&node, &chain, "web", 2, 9090);

    let api = spread(client.ns(), vip(80), 20, false);
    let web = spread(client.ns(), vip(81), 20, false);
    assert!(api.keys().all(|k| k.starts_with("api")), "{api:?}");
    assert!(web.keys().all(|k| k.starts_with("web")), "{web:?}");
    // The VIP answers only on the service ports.
    assert!(
        client
            .ns()
            .tcp_echo(vip(8080), "direct", Duration::from_millis(500))
            .is_err()
    );
}

#[test]
fn two_hundred_add_del_cycles_leave_the_tables_as_they_were() {
    let node = TestNode::new().unwrap();
    let svc = json!([{"name": "api", "vip": VIP, "select": {"labels": {"app": "api"}},
                      "ports": [{"port": 80, "targetPort": 8080}], "algorithm": "maglev", "maglevTableSize": 251},
                     {"name": "web", "vip": VIP, "select": {"labels": {"app": "web"}},
                      "ports": [{"port": 81, "targetPort": 8080}], "affinity": {"clientIP": true}}]);
    let chain = node
        .chain(&node.bridge_conflist("lbcycle", "1.0.0", "10.241.6.0/24", vec![lb(svc)]))
        .unwrap();
    let _b = backends(&node, &chain, "api", 3, 8080);
    // ADD leaves the rules a growing service shadows until the next DEL
    // rewrites the chain: start from the state after a DEL.
    chain.del(&_b.containers[2], "eth0").unwrap();
    let before = tables(&node);
    assert!(before.contains("netsvc_lb"), "{before}");
    let c = node.container("cycle").unwrap();
    for i in 0..200 {
        let app = if i % 2 == 0 { "api" } else { "web" };
        attach(&chain, &c, "cycle", app);
        chain.del(&c, "eth0").unwrap();
    }
    assert_eq!(tables(&node), before);

    // The last endpoint leaving takes the services and then the table away.
    for b in &_b.containers {
        chain.del(b, "eth0").unwrap();
    }
    assert_eq!(tables(&node).trim(), "", "tables left behind");
}

#[test]
fn bad_services_are_code_7_naming_service_and_field_and_change_nothing() {
    let node = TestNode::new().unwrap();
    let good = json!([{"name": "api", "vip": VIP, "ports": [{"port": 80}]}]);
    let chain = node
        .chain(&node.bridge_conflist("lbbad", "1.0.0", "10.241.7.0/24", vec![lb(good)]))
        .unwrap();
    let a = node.container("a").unwrap();
    attach(&chain, &a, "a", "api");
    let before = tables(&node);
    let state = || {
        std::fs::read_dir(node.state_dir().join("kv/networks/lbbad/endpoints"))
            .unwrap()
            .count()
    };
    let state_before = state();

    let cases = [
        (
            json!([{"name": "api", "vip": "10.96.0", "ports": [{"port": 80}]}]),
            "vip",
        ),
        (
            json!([{"name": "api", "vip": VIP, "ports": [{"port": 80}]},
                   {"name": "api", "vip": "10.96.0.11", "ports": [{"port": 80}]}]),
            "name",
        ),
        (
            json!([{"name": "api", "vip": VIP, "ports": [{"port": 80}]},
                   {"name": "web", "vip": VIP, "ports": [{"port": 80}]}]),
            "ports[0]",
        ),
        (json!([{"name": "api", "vip": VIP, "ports": [{"port": 65536}]}]), "port"),
        (
            json!([{"name": "api", "vip": VIP, "ports": [{"port": 80}], "algorithm": "rr"}]),
            "algorithm",
        ),
        (
            json!([{"name": "api", "vip": VIP, "ports": [{"port": 80, "protocol": "icmp"}]}]),
            "protocol",
        ),
    ];
    for (services, field) in cases {
        let bad = node
            .chain(&node.bridge_conflist("lbbad", "1.0.0", "10.241.7.0/24", vec![lb(services.clone())]))
            .unwrap();
        let b = node.container("b").unwrap();
        let err = bad
            .add_with(&b, "eth0", &CallArgs::endpoint("b", Some("app:api")))
            .unwrap_err();
        let e = err.cni();
        assert_eq!(e.code, 7, "{services}: {e:?}");
        assert!(
            e.msg.contains(field) && e.msg.contains("service \""),
            "{services}: {}",
            e.msg
        );
        assert_eq!(tables(&node), before, "{services} changed the tables");
        assert_eq!(state(), state_before, "{services} left an endpoint in the store");
    }
}

#[test]
fn check_gc_and_status() {
    let node = TestNode::new().unwrap();
    default_route(&node);
    let svc = json!([{"name": "api", "vip": VIP, "select": {"labels": {"app": "api"}}, "ports": [{"port": 80, "targetPort": 8080}]}]);
    let chain = node
        .chain(&node.bridge_conflist("lbcheck", "1.0.0", "10.241.8.0/24", vec![lb(svc.clone())]))
        .unwrap();
    // GC and STATUS exist from 1.1.0, which Debian's bridge does not speak:
    // the load balancer alone answers them for the same network.
    let alone = node
        .chain(&json!({"cniVersion": "1.1.0", "name": "lbcheck", "plugins": [lb(svc)]}))
        .unwrap();
    let client = node.container("client").unwrap();
    attach(&chain, &client, "client", "client");
    let b = backends(&node, &chain, "api", 1, 8080);
    alone.status().unwrap();
    chain.check(&b.containers[0], "eth0").unwrap();

    // CHECK notices the kernel losing what we made.
    node.exec("nft", ["delete", "table", "ip", "netsvc_lb"]).unwrap();
    let err = chain.check(&b.containers[0], "eth0").unwrap_err();
    assert_eq!(err.cni().code, 120, "{err}");

    // GC keeping both repairs the table; keeping only the client drops the backend.
    alone.gc(&[(&client, "eth0"), (&b.containers[0], "eth0")]).unwrap();
    chain.check(&b.containers[0], "eth0").unwrap();
    assert_eq!(client.ns().tcp_echo(vip(80), "repaired", T).unwrap().identity, "api0");
    alone.gc(&[(&client, "eth0")]).unwrap();
    let err = client
        .ns()
        .run(|| std::net::TcpStream::connect_timeout(&vip(80), T))
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    alone.gc(&[]).unwrap();
    assert_eq!(tables(&node).trim(), "", "GC of every attachment leaves no table");
}

#[test]
fn ipv6_and_ipv4_vips_on_a_dual_stack_network() {
    let node = TestNode::new().unwrap();
    let svcs = json!([
        {"name": "api4", "vip": VIP, "select": {"labels": {"app": "api"}}, "ports": [{"port": 80, "targetPort": 8080}]},
        {"name": "api6", "vip": "fd00:96::10", "select": {"labels": {"app": "api"}},
         "ports": [{"port": 80, "targetPort": 8080}, {"port": 53, "targetPort": 8080, "protocol": "udp"}],
         "algorithm": "maglev", "maglevTableSize": 1021}
    ]);
    let mut conf = node.bridge_conflist("lbdual", "1.0.0", "10.241.9.0/24", vec![lb(svcs)]);
    conf["plugins"][0]["ipam"]["ranges"] = json!([[{"subnet": "10.241.9.0/24"}], [{"subnet": "fd00:241::/64"}]]);
    conf["plugins"][0]["ipam"]["routes"] = json!([{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]);
    let chain = node.chain(&conf).unwrap();
    let client = node.container("client").unwrap();
    attach(&chain, &client, "client", "client");
    let b = backends(&node, &chain, "api", 2, 8080);
    let vip6: SocketAddr = "[fd00:96::10]:80".parse().unwrap();

    // Fresh IPv6 addresses are usable once duplicate address detection ends.
    client.ns().wait_tcp(vip6, Duration::from_secs(10)).unwrap();
    let v6 = spread(client.ns(), vip6, 40, false);
    assert_eq!(v6.len(), 2, "{v6:?}");
    let udp6 = spread(client.ns(), "[fd00:96::10]:53".parse().unwrap(), 40, true);
    assert_eq!(udp6.len(), 2, "{udp6:?}");
    assert_eq!(spread(client.ns(), vip(80), 40, false).len(), 2);
    // Hairpin over IPv6 (the only backend left reaches itself).
    chain.del(&b.containers[0], "eth0").unwrap();
    let me = b.containers[1].ns().tcp_echo(vip6, "self", T).unwrap();
    assert_eq!(me.identity, "api1");
    let tables = tables(&node);
    assert!(
        tables.contains("table ip6 netsvc_lb") && tables.contains("table ip netsvc_lb"),
        "{tables}"
    );
}

#[test]
fn a_changed_service_is_rebuilt_and_a_dropped_one_removed() {
    let node = TestNode::new().unwrap();
    let v1 = json!([{"name": "api", "vip": VIP, "select": {"labels": {"app": "api"}}, "ports": [{"port": 80, "targetPort": 8080}]},
                    {"name": "old", "vip": "10.96.0.11", "ports": [{"port": 80}]}]);
    let v2 = json!([{"name": "api", "vip": VIP, "select": {"labels": {"app": "api"}}, "ports": [{"port": 80, "targetPort": 8080}],
                     "algorithm": "maglev", "maglevTableSize": 251}]);
    let chain1 = node
        .chain(&node.bridge_conflist("lbchange", "1.0.0", "10.241.10.0/24", vec![lb(v1)]))
        .unwrap();
    let chain2 = node
        .chain(&node.bridge_conflist("lbchange", "1.0.0", "10.241.10.0/24", vec![lb(v2)]))
        .unwrap();
    let client = node.container("client").unwrap();
    attach(&chain1, &client, "client", "client");
    let b = backends(&node, &chain1, "api", 2, 8080);
    let before = tables(&node);
    assert!(before.contains("10.96.0.11") && !before.contains("jhash"), "{before}");

    // The next ADD runs the new config: api moves to Maglev, old goes.
    let c = node.container("api9").unwrap();
    attach(&chain2, &c, "api9", "api");
    let _s = EchoServer::start(c.ns(), SocketAddr::from(([0u16; 8], 8080)), "api9").unwrap();
    let after = tables(&node);
    assert!(after.contains("jhash") && !after.contains("dnat to numgen"), "{after}");
    assert!(!after.contains("10.96.0.11"), "the dropped service is gone: {after}");
    let chains_of = |t: &str| t.lines().filter(|l| l.trim_start().starts_with("chain s")).count();
    assert_eq!(chains_of(&after), 1, "only the new service's port chain: {after}");
    assert_eq!(spread(client.ns(), vip(80), 60, false).len(), 3);

    // DELs (with either config) leave nothing.
    for ct in b.containers.iter().chain([&c, &client]) {
        chain1.del(ct, "eth0").unwrap();
    }
    assert_eq!(tables(&node).trim(), "");
}

#[test]
fn apply_repairs_a_lost_backend_and_then_finds_nothing_to_do() {
    let node = TestNode::new().unwrap();
    let svc = json!([{"name": "api", "vip": VIP, "select": {"labels": {"app": "api"}}, "ports": [{"port": 80, "targetPort": 8080}]}]);
    let conf = node.bridge_conflist("lbapply", "1.0.0", "10.241.11.0/24", vec![lb(svc)]);
    let chain = node.chain(&conf).unwrap();
    let client = node.container("client").unwrap();
    attach(&chain, &client, "client", "client");
    let _b = backends(&node, &chain, "api", 2, 8080);
    let path = node.state_dir().join("lbapply.conflist");
    std::fs::write(&path, serde_json::to_vec(&conf).unwrap()).unwrap();
    let apply = || {
        let netsvc = netsvc_tests::chain::plugin_dir().join("netsvc");
        let out = node.command(netsvc).arg("apply").arg(&path).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        apply().contains("netsvc-lb lbapply: 3 endpoints, 0 changes"),
        "nothing drifted yet"
    );

    // Someone deletes a slot: connections picking it find no backend.
    let out = node.exec("nft", ["-j", "list", "table", "ip", "netsvc_lb"]).unwrap();
    let doc: Value = serde_json::from_str(&out).unwrap();
    let slots = doc["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|o| o["map"]["name"].as_str().filter(|n| n.ends_with("_slots")))
        .unwrap()
        .to_string();
    node.exec("nft", [format!("delete element ip netsvc_lb {slots} {{ 1 }}")])
        .unwrap();
    let first = apply();
    assert!(first.contains("3 endpoints, 1 changes"), "{first}");
    assert!(
        apply().contains("3 endpoints, 0 changes"),
        "a second apply finds nothing to do"
    );
    assert_eq!(spread(client.ns(), vip(80), 40, false).len(), 2);
}

#[test]
fn a_vip_port_another_network_holds_is_code_7_and_changes_nothing() {
    let node = TestNode::new().unwrap();
    let svc = |name: &str| json!([{"name": name, "vip": VIP, "ports": [{"port": 80}]}]);
    let first = node
        .chain(&node.bridge_conflist("lbnet1", "1.0.0", "10.241.12.0/24", vec![lb(svc("api"))]))
        .unwrap();
    let second = node
        .chain(&node.bridge_conflist("lbnet2", "1.0.0", "10.241.13.0/24", vec![lb(svc("web"))]))
        .unwrap();
    let (a, b) = (node.container("a").unwrap(), node.container("b").unwrap());
    attach(&first, &a, "a", "api");
    let before = tables(&node);
    let err = second
        .add_with(&b, "eth0", &CallArgs::endpoint("b", Some("app:web")))
        .unwrap_err();
    assert_eq!(err.cni().code, 7, "{err}");
    assert!(
        err.cni().msg.contains("services[0].ports[0]") && err.cni().msg.contains("another network"),
        "{err}"
    );
    assert_eq!(tables(&node), before);
}

/// The fast path writes a port chain's rule over netlink, the full path
/// through nft. For every kind of rule (random, Maglev's jhash, affinity's
/// remembered client) in both families, the kernel holds the very same
/// expressions either way, registers and flags included.
#[test]
fn a_rule_written_over_netlink_is_the_rule_nft_writes() {
    use netsvc_core::graph::Protocol;
    use netsvc_core::nft::{Batch, NftTable};
    use netsvc_lb::model::Family;
    use netsvc_lb::rules::{Pick, PortRule};

    let ns = netsvc_tests::Netns::create("lbrules").unwrap();
    let tables = "table ip t {\n\
          map slots { typeof numgen random mod 1 : ip daddr; }\n\
          map clients { type ipv4_addr : ipv4_addr; flags dynamic,timeout; timeout 60s; size 65535; }\n\
          chain by_nft { }\n chain by_netlink { }\n}\n\
        table ip6 t {\n\
          map slots { typeof numgen random mod 1 : ip6 daddr; }\n\
          map clients { type ipv6_addr : ipv6_addr; flags dynamic,timeout; timeout 60s; size 65535; }\n\
          chain by_nft { }\n chain by_netlink { }\n}\n";
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), tables).unwrap();
    ns.exec("nft", ["-f", file.path().to_str().unwrap()]).unwrap();

    let picks = [
        (Pick::Random { n: 3 }, "slots"),
        (
            Pick::Jhash {
                n: 1021,
                seed: 0xdead_beef,
            },
            "slots",
        ),
        (Pick::Remembered, "clients"),
    ];
    for family in [Family::V4, Family::V6] {
        for (pick, map) in &picks {
            for (protocol, target) in [(Protocol::Tcp, 8080), (Protocol::Udp, 53)] {
                let rule = PortRule {
                    family,
                    protocol,
                    target,
                    pick: pick.clone(),
                    map: map.to_string(),
                };
                let w = family.word();
                let text = rule.text();
                ns.exec("nft", [format!("add rule {w} t by_nft {text}")]).unwrap();
                ns.run(|| {
                    let mut b = Batch::new(&NftTable::new(family.nf(), "t").unwrap());
                    b.add_rule("by_netlink", rule.netlink()).unwrap();
                    b.apply().unwrap_or_else(|e| panic!("{text}: {e}"));
                })
                .unwrap();
            }
        }
        // `nft --debug=netlink` prints each rule's expressions as the kernel
        // dumps them; the lines naming a rule's handle differ and are left out.
        let expressions = |chain: &str| -> Vec<String> {
            let out = ns
                .exec("nft", ["--debug=netlink", "list", "chain", family.word(), "t", chain])
                .unwrap();
            out.lines()
                .filter(|l| l.trim_start().starts_with('['))
                .map(str::to_string)
                .collect()
        };
        let (by_nft, by_netlink) = (expressions("by_nft"), expressions("by_netlink"));
        assert_eq!(
            by_nft.iter().filter(|l| l.contains("nat dnat")).count(),
            6,
            "{by_nft:#?}"
        );
        assert_eq!(by_netlink, by_nft, "{}", family.word());
    }
}

/// The full path writes the whole table over netlink; its text (what
/// errors and `--dry-run` show) is nft's syntax for the same table. Applied
/// each way in its own namespace (a random, a Maglev and an affinity
/// service, with backends and a hairpin pair), the kernel holds the same
/// table: the same sets and maps with the same elements, chains and rules
/// (as nft lists them, handles aside), and the same expressions.
#[test]
fn a_table_written_over_netlink_is_the_table_nft_makes_of_its_text() {
    use netsvc_core::nft::ElementOp;
    use netsvc_lb::config::LbConf;
    use netsvc_lb::model::{self, Family, Rendered};
    use netsvc_lb::render;

    for (family, vip, backends) in [
        (Family::V4, "10.96.0.10", ["10.0.0.2", "10.0.0.3"]),
        (Family::V6, "fd00:96::10", ["fd00::2", "fd00::3"]),
    ] {
        let services = json!([
            {"name": "random", "vip": vip, "ports": [{"port": 80, "targetPort": 8080}, {"port": 53, "protocol": "udp"}]},
            {"name": "maglev", "vip": vip, "algorithm": "maglev", "ports": [{"port": 443}]},
            {"name": "sticky", "vip": vip, "affinity": {"clientIP": true, "timeoutSeconds": 60},
             "ports": [{"port": 8443, "protocol": "tcp"}]},
        ]);
        let conf = LbConf::from_value(&json!({"name": "n", "type": "netsvc-lb", "services": services})).unwrap();
        let mut batch = render::skeleton(family).unwrap();
        for (i, svc) in conf.services.iter().enumerate() {
            let r = Rendered {
                conf: svc.clone(),
                prefix: format!("s{i:011}"),
                slots: backends.iter().map(|b| b.parse().unwrap()).collect(),
            };
            render::ensure_service(&mut batch, &r, None).unwrap();
        }
        let addrs: Vec<IpAddr> = backends.iter().map(|b| b.parse().unwrap()).collect();
        for pair in model::hairpin_keys(&addrs) {
            batch.element(ElementOp::Add, render::HAIRPIN, pair, None).unwrap();
        }
        // nft 1.0.6 has no `destroy`: on a new table those lines remove nothing.
        let text: String = batch
            .text()
            .lines()
            .filter(|l| !l.starts_with("destroy element"))
            .map(|l| format!("{l}\n"))
            .collect();

        let both = netsvc_tests::nft_forms::TwoWays::new();
        both.apply(&batch, &text);
        let objects = both.assert_same(family.word());
        assert!(objects > 20, "{}: {objects} objects", family.word());
    }
}
