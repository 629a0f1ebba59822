//! The reference patterns of docs/: each pattern's spec composes to exactly
//! the conflist the book shows, and that conflist is what these tests run.

use std::time::Duration;

use netsvc_tests::chain::{CallArgs, container_ip, json_of, netsvc};
use netsvc_tests::matrix::{Listeners, Matrix, Port, Target, assert_matrix, probe_all};
use netsvc_tests::patterns::composed as composed_conflist;
use netsvc_tests::{Container, TestNode};
use serde_json::Value;

/// host-local keeps leases in the node's state dir, not the host's /var/lib/cni:
/// the one change a test makes to a pattern's conflist.
fn on_node(node: &TestNode, mut conf: Value) -> Value {
    conf["plugins"][0]["ipam"]["dataDir"] = Value::String(node.ipam_dir().display().to_string());
    conf
}

fn labelled(name: &str, tier: &str) -> CallArgs {
    CallArgs::endpoint(
        name,
        Some(format!("tier:{tier}")).filter(|_| !tier.is_empty()).as_deref(),
    )
}

#[test]
fn tiered_isolation() {
    let node = TestNode::new().unwrap();
    let chain = node
        .chain(&on_node(&node, composed_conflist("tiered-isolation")))
        .unwrap();
    let pods = [("web", "web"), ("api", "api"), ("db", "db"), ("client", "")];
    let containers: Vec<Container> = pods.iter().map(|(n, _)| node.container(n).unwrap()).collect();
    let targets: Vec<(&Container, Target)> = containers
        .iter()
        .zip(pods)
        .map(|(c, (name, tier))| {
            let r = chain.add_with(c, "eth0", &labelled(name, tier)).unwrap();
            (c, Target::new(name, container_ip(&r, "eth0").unwrap()))
        })
        .collect();
    let ports = [Port::tcp(80), Port::tcp(8080), Port::tcp(5432)];
    let _servers = Listeners::start(&targets, &ports).unwrap();
    let names: Vec<&str> = pods.iter().map(|(n, _)| *n).collect();
    let expected = Matrix::expect(&names, &ports, |from, to, port| match (to, port.port) {
        ("web", 80) => true,
        ("api", 8080) => from == "web",
        ("db", 5432) => from == "api",
        _ => false,
    });
    assert_matrix(
        "tiered isolation",
        &probe_all(&targets, &ports, Duration::from_secs(1)),
        &expected,
    );
    for (c, _) in &targets {
        chain.del(c, "eth0").unwrap();
    }
}

/// Who answered `n` connections from `client` to `vip`.
fn answers(client: &Container, vip: std::net::SocketAddr, n: usize) -> std::collections::BTreeSet<String> {
    (0..n)
        .map(|i| {
            client
                .ns()
                .tcp_echo(vip, &format!("req {i}"), Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("connection {i} to {vip}: {e:#}"))
                .identity
        })
        .collect()
}

#[test]
fn service_vip_in_front_of_replicas() {
    let node = TestNode::new().unwrap();
    let chain = node.chain(&on_node(&node, composed_conflist("service-vip"))).unwrap();
    let vip: std::net::SocketAddr = "10.96.0.10:80".parse().unwrap();
    let start = |name: &str| {
        let c = node.container(name).unwrap();
        chain
            .add_with(&c, "eth0", &CallArgs::endpoint(name, Some("app:api")))
            .unwrap();
        let server = netsvc_tests::EchoServer::start(c.ns(), "0.0.0.0:8080".parse().unwrap(), name).unwrap();
        (c, server)
    };
    let client = node.container("client").unwrap();
    chain
        .add_with(&client, "eth0", &CallArgs::endpoint("client", None))
        .unwrap();
    let replicas: Vec<_> = ["api-1", "api-2", "api-3"].iter().map(|n| start(n)).collect();

    // Every replica serves the VIP.
    assert_eq!(answers(&client, vip, 90).len(), 3);
    // A replica leaves: the VIP keeps answering from the others only.
    chain.del(&replicas[0].0, "eth0").unwrap();
    let left = answers(&client, vip, 60);
    assert!(!left.contains("api-1") && left.len() == 2, "{left:?}");
    // A new replica joins and takes its share.
    let (_c4, _s4) = start("api-4");
    assert!(answers(&client, vip, 90).contains("api-4"));
    // A replica reaches its own service (hairpin).
    let reply = replicas[1].0.ns().tcp_echo(vip, "me", Duration::from_secs(5)).unwrap();
    assert!(reply.identity.starts_with("api-"), "{reply:?}");
}

/// `getent hosts NAME` inside `c` through a resolv.conf made of the result's
/// `dns` (the file a runtime writes); the first address.
fn getent(node: &TestNode, c: &Container, result: &Value, name: &str) -> Option<std::net::IpAddr> {
    let dns = &result["dns"];
    let mut conf = String::new();
    for ns in dns["nameservers"].as_array()? {
        conf += &format!("nameserver {}\n", ns.as_str()?);
    }
    let search: Vec<&str> = dns["search"].as_array()?.iter().filter_map(Value::as_str).collect();
    conf += &format!("search {}\noptions timeout:2 attempts:2\n", search.join(" "));
    let path = node.state_dir().join(format!("resolv.conf.{}", c.label()));
    std::fs::write(&path, conf).ok()?;
    let script = format!(
        "mount --bind {} /etc/resolv.conf && getent hosts {name}",
        path.display()
    );
    let out = c.ns().exec("unshare", ["-m", "sh", "-c", &script]).ok()?;
    out.split_whitespace().next()?.parse().ok()
}

#[test]
fn service_discovery_by_name_and_alias() {
    let node = TestNode::new().unwrap();
    let chain = node
        .chain(&on_node(&node, composed_conflist("service-discovery")))
        .unwrap();
    let join = |name: &str, labels: Option<&str>, aliases: &[&str]| {
        let c = node.container(name).unwrap();
        let mut args = CallArgs::endpoint(name, labels);
        if !aliases.is_empty() {
            args.cap_args
                .insert("aliases".into(), serde_json::json!({"discovery": aliases}));
        }
        let r = chain.add_with(&c, "eth0", &args).unwrap();
        (c, r)
    };
    let (web, web_result) = join("web-1", None, &["www", "frontend"]);
    let (_api1, _) = join("api-1", Some("app:api"), &[]);
    let (client, client_result) = join("client", None, &[]);
    let web_ip = container_ip(&web_result, "eth0").unwrap();
    let _server = netsvc_tests::EchoServer::start(_api1.ns(), "0.0.0.0:8080".parse().unwrap(), "api-1").unwrap();

    // By name and by alias, short (search domain) and fully qualified.
    for name in ["web-1", "www", "frontend", "www.app.internal"] {
        assert_eq!(getent(&node, &client, &client_result, name), Some(web_ip), "{name}");
    }
    // The api service's name is its VIP, and the VIP leads to a replica.
    let vip = getent(&node, &client, &client_result, "api").unwrap();
    assert_eq!(vip.to_string(), "10.96.0.20");
    let reply = client
        .ns()
        .tcp_echo((vip, 80).into(), "hi", Duration::from_secs(5))
        .unwrap();
    assert_eq!(reply.identity, "api-1");
    // A container that left is no longer found.
    chain.del(&web, "eth0").unwrap();
    assert_eq!(getent(&node, &client, &client_result, "www"), None);
}

#[test]
fn serial_rate_limited_tenant_with_an_interactive_lane() {
    use netsvc_tests::shaping::{Iperf3Server, Run};
    let node = TestNode::new().unwrap();
    // A node address outside the tenant's subnet: traffic to it is shaped.
    node.dead_end_link("far0").unwrap();
    node.ip(["addr", "add", "198.18.0.1/24", "dev", "far0"]).unwrap();
    let chain = node
        .chain(&on_node(&node, composed_conflist("rate-limited-tenant")))
        .unwrap();
    let (a, b) = (node.container("a").unwrap(), node.container("b").unwrap());
    chain.add_with(&a, "eth0", &CallArgs::endpoint("a", None)).unwrap();
    let r = chain.add_with(&b, "eth0", &CallArgs::endpoint("b", None)).unwrap();
    let b_ip = container_ip(&r, "eth0").unwrap();
    let host_a = a.veth_peer_in("eth0", &node).unwrap();
    let (ssh, bulk) = (
        Iperf3Server::start(&node, 22).unwrap(),
        Iperf3Server::start(&node, 5201).unwrap(),
    );
    let far: std::net::IpAddr = "198.18.0.1".parse().unwrap();
    let run = |client: &Container, server: std::net::IpAddr, port: u16| {
        Run {
            client: client.ns(),
            server,
            port,
            reverse: false,
            seconds: 8,
            device_ns: &node,
            device: &host_a,
        }
        .measure()
        .unwrap()
        .goodput
    };
    // Both lanes busy: SSH keeps its 10 Mbit/s, both together stay within 20.
    let (interactive, rest) = std::thread::scope(|s| {
        let i = s.spawn(|| run(&a, far, ssh.port));
        let r = s.spawn(|| run(&a, far, bulk.port));
        (i.join().unwrap(), r.join().unwrap())
    });
    println!("interactive {interactive:.0} bit/s, bulk {rest:.0} bit/s");
    // Goodput is about 4.4% under the wire rate (headers); allow that plus 2%.
    assert!(
        interactive >= 10e6 * 0.934,
        "interactive lane got {interactive:.0} bit/s"
    );
    assert!(
        interactive + rest <= 20e6 * 1.02,
        "together {:.0} bit/s",
        interactive + rest
    );
    // Inside the tenant's subnet nothing is limited.
    let server_b = Iperf3Server::start(b.ns(), 5201).unwrap();
    let inside = run(&a, b_ip, server_b.port);
    println!("container to container {inside:.0} bit/s");
    assert!(inside >= 100e6, "container to container only {inside:.0} bit/s");
    for c in [&a, &b] {
        chain.del(c, "eth0").unwrap();
    }
    assert!(node.links_of_kind("ifb").unwrap().is_empty());
}

#[test]
fn container_behind_a_site_vpn() {
    let node = TestNode::new().unwrap();
    let chain = node.chain(&on_node(&node, composed_conflist("site-vpn"))).unwrap();
    let site = netsvc_tests::wireguard::Site::start(&node).unwrap();
    let server = netsvc_tests::EchoServer::start(&site.ns, "10.50.0.1:8080".parse().unwrap(), "site").unwrap();

    let app = node.container("app").unwrap();
    chain.add_with(&app, "eth0", &CallArgs::endpoint("app", None)).unwrap();
    // The site's operator reads the tunnel's public key and admits it.
    let status = json_of(
        &netsvc(&node, &["vpn", "status", "--network", "branch", "--format", "json"]),
        "netsvc vpn status",
    );
    site.admit(status[0]["tunnels"][0]["publicKey"].as_str().unwrap(), "10.200.0.2/32")
        .unwrap();

    let t = Duration::from_secs(10);
    assert_eq!(app.tcp_echo(server.addr(), "hello site", t).unwrap().identity, "site");
    // The underlay is out of reach; the node's gateway on the bridge is not.
    assert!(!app.ping("192.0.2.1".parse().unwrap(), 1, Duration::from_secs(2)));
    assert!(app.ping("10.94.0.1".parse().unwrap(), 1, t));
    chain.check(&app, "eth0").unwrap();
    chain.del(&app, "eth0").unwrap();
    assert!(!app.ip(["link", "show"]).unwrap().contains("wg0"));
}

#[test]
fn encrypted_node_mesh() {
    let (a, b) = (TestNode::new().unwrap(), TestNode::new().unwrap());
    a.veth("ul0", &b, "ul0").unwrap();
    a.add_addr("ul0", "192.0.2.10/24").unwrap();
    b.add_addr("ul0", "192.0.2.11/24").unwrap();
    // Both nodes use A's state dir: it stands in for the shared store.
    let shared = |node: &TestNode, name: &str| {
        let mut conf = on_node(node, composed_conflist(name));
        conf["plugins"][1]["stateDir"] = Value::String(a.state_dir().display().to_string());
        conf
    };
    let chain_a = a.chain(&shared(&a, "encrypted-mesh-node-a")).unwrap();
    let chain_b = b.chain(&shared(&b, "encrypted-mesh-node-b")).unwrap();
    let (ca, cb) = (a.container("ca").unwrap(), b.container("cb").unwrap());
    let ra = chain_a.add_with(&ca, "eth0", &CallArgs::endpoint("ca", None)).unwrap();
    let rb = chain_b.add_with(&cb, "eth0", &CallArgs::endpoint("cb", None)).unwrap();
    let (ip_a, ip_b) = (container_ip(&ra, "eth0").unwrap(), container_ip(&rb, "eth0").unwrap());
    let server_b = netsvc_tests::EchoServer::start(&cb, "0.0.0.0:8080".parse().unwrap(), "cb").unwrap();
    let server_a = netsvc_tests::EchoServer::start(&ca, "0.0.0.0:8080".parse().unwrap(), "ca").unwrap();
    let reached = |from: &Container, to: std::net::SocketAddr| {
        netsvc_tests::poll_until(Duration::from_secs(10), || {
            from.tcp_echo(to, "across", Duration::from_secs(2)).ok()
        })
    };
    let to_b = std::net::SocketAddr::new(ip_b, server_b.port());
    let to_a = std::net::SocketAddr::new(ip_a, server_a.port());
    assert_eq!(reached(&ca, to_b).expect("A to B").identity, "cb");
    assert_eq!(reached(&cb, to_a).expect("B to A").identity, "ca");
    // Through WireGuard: both devices have had a handshake.
    let dev_a = netsvc_vpn::mesh::device_name("node-a", "mesh");
    let handshakes = a.exec("wg", ["show", &dev_a, "latest-handshakes"]).unwrap();
    assert!(!handshakes.trim().ends_with("\t0"), "{handshakes}");
    chain_a.del(&ca, "eth0").unwrap();
    chain_b.del(&cb, "eth0").unwrap();
    assert!(
        a.link(&dev_a).is_err(),
        "A's mesh device leaves with its last container"
    );
}
