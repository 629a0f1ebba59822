//! Real containers under podman (CNI backend, busybox-static root
//! filesystem) on the conflists `netsvc compose` makes of the reference
//! patterns: each service works for the container's own processes, follows
//! it through stop, start, `network connect` and `disconnect`, and nothing
//! of netsvc is left after `podman rm -af`.

use std::net::IpAddr;
use std::time::Duration;

use netsvc_tests::chain::{json_of, netsvc};
use netsvc_tests::leftovers::leftovers;
use netsvc_tests::patterns::composed;
use netsvc_tests::podman::{Podman, Run};
use netsvc_tests::{TestNode, poll_until};

/// The pattern's network, composed by `netsvc compose` (the conflist the
/// book shows), installed in podman.
fn network(podman: &Podman, name: &str) -> String {
    podman.add_network(composed(name)).unwrap()
}

/// `podman rm -af` takes away all that netsvc held for the containers (and
/// the check sees it while they run).
fn assert_nothing_left(node: &TestNode, podman: &Podman, wg_devices: &[String]) {
    let held = leftovers(node, wg_devices).unwrap();
    assert!(!held.is_empty(), "running containers, yet nothing of netsvc's seen");
    println!("held while running: {held:#?}");
    podman.remove_all().unwrap();
    let left = leftovers(node, wg_devices).unwrap();
    assert!(left.is_empty(), "after podman rm -af: {left:#?}");
}

#[test]
fn tiered_isolation_between_real_containers() {
    let node = TestNode::new().unwrap();
    let podman = Podman::new(&node).unwrap();
    let net = network(&podman, "tiered-isolation");
    let start = |name, labels, ports| {
        podman
            .run(&Run {
                name,
                networks: &[&net],
                labels,
                ports,
            })
            .unwrap();
    };
    start("web", Some("tier:web"), &[80]);
    start("api", Some("tier:api"), &[8080]);
    start("db", Some("tier:db"), &[5432]);
    start("client", None, &[]);
    let ip = |name| podman.ip(name, &net).unwrap();
    let reaches = |from, to, port| podman.fetch(from, ip(to), port).as_deref() == Some(to);
    let truth = || {
        [
            ("client", "web", 80, true),
            ("client", "api", 8080, false),
            ("web", "api", 8080, true),
            ("api", "db", 5432, true),
            ("web", "db", 5432, false),
        ]
    };
    for (from, to, port, allowed) in truth() {
        assert_eq!(reaches(from, to, port), allowed, "{from} -> {to}:{port}");
    }

    // A restarted container gets a new address; the policy follows it.
    podman.stop("api").unwrap();
    podman.start("api", Some("tier:api")).unwrap();
    for (from, to, port, allowed) in truth() {
        assert_eq!(reaches(from, to, port), allowed, "after restart: {from} -> {to}:{port}");
    }
    assert_nothing_left(&node, &podman, &[]);
}

/// Who answered `n` requests to `vip:80` from `client`.
fn answers(podman: &Podman, client: &str, vip: IpAddr, n: usize) -> std::collections::BTreeSet<String> {
    (0..n)
        .map(|i| {
            podman
                .fetch(client, vip, 80)
                .unwrap_or_else(|| panic!("request {i} to {vip}:80 got no answer"))
        })
        .collect()
}

#[test]
fn service_vip_and_names_in_real_containers() {
    let node = TestNode::new().unwrap();
    let podman = Podman::new(&node).unwrap();
    let net = network(&podman, "service-discovery");
    for replica in ["api-1", "api-2"] {
        podman
            .run(&Run {
                name: replica,
                networks: &[&net],
                labels: Some("app:api"),
                ports: &[8080],
            })
            .unwrap();
    }
    let client = Run {
        name: "client",
        networks: &[&net],
        ..Run::default()
    };
    podman.run(&client).unwrap();

    // The resolv.conf podman wrote from our result leads to the names: a
    // container's own, and the service's, which is its VIP.
    let resolv = podman.exec("client", "cat /etc/resolv.conf").unwrap();
    let resolv = String::from_utf8_lossy(&resolv.stdout);
    assert!(resolv.contains("search app.internal"), "{resolv}");
    assert!(resolv.contains("nameserver 10.92.0.1"), "{resolv}");
    let api_1 = podman.ip("api-1", &net).unwrap();
    assert_eq!(podman.resolve_settled("client", "api-1", Some(api_1)), Some(api_1));
    let vip: IpAddr = "10.96.0.20".parse().unwrap();
    assert_eq!(
        podman.resolve_settled("client", "api", Some(vip)),
        Some(vip),
        "the service's name"
    );
    let both: std::collections::BTreeSet<String> = ["api-1", "api-2"].map(String::from).into();
    assert_eq!(answers(&podman, "client", vip, 30), both);

    // A replica stops: its name and its share of the VIP go with it.
    podman.stop("api-1").unwrap();
    assert_eq!(podman.resolve_settled("client", "api-1", None), None);
    assert_eq!(answers(&podman, "client", vip, 20), ["api-2".to_string()].into());
    // And come back when it starts again.
    podman.start("api-1", Some("app:api")).unwrap();
    let api_1 = Some(podman.ip("api-1", &net).unwrap());
    assert_eq!(podman.resolve_settled("client", "api-1", api_1), api_1);
    assert_eq!(answers(&podman, "client", vip, 30), both);
    assert_nothing_left(&node, &podman, &[]);
}

#[test]
fn serial_rate_limited_tenant_in_a_real_container() {
    use netsvc_tests::shaping::{Iperf3Server, goodput};
    let node = TestNode::new().unwrap();
    // A node address outside the tenant's subnet: traffic to it is shaped.
    node.dead_end_link("far0").unwrap();
    node.ip(["addr", "add", "198.18.0.1/24", "dev", "far0"]).unwrap();
    let podman = Podman::new(&node).unwrap();
    let net = network(&podman, "rate-limited-tenant");
    podman
        .run(&Run {
            name: "tenant",
            networks: &[&net],
            ..Run::default()
        })
        .unwrap();
    let server = Iperf3Server::start(&node, 5201).unwrap();
    let tenant = podman.netns("tenant").unwrap();
    let rate = goodput(&tenant, "198.18.0.1".parse().unwrap(), server.port, 6).unwrap();
    println!("tenant egress {rate:.0} bit/s (egressRate 20mbit)");
    // Goodput is about 4.4% under the wire rate (headers).
    assert!((20e6 * 0.85..=20e6 * 1.02).contains(&rate), "egress {rate:.0} bit/s");
    assert_nothing_left(&node, &podman, &[]);
}

#[test]
fn a_real_container_behind_a_site_vpn() {
    let node = TestNode::new().unwrap();
    let podman = Podman::new(&node).unwrap();
    let net = network(&podman, "site-vpn");
    // The remote site serves its name over HTTP on its tunnel address.
    let site = netsvc_tests::wireguard::Site::start(&node).unwrap();
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("id"), "site\n").unwrap();
    let _httpd = netsvc_tests::Daemon::spawn(
        site.ns
            .command("busybox")
            .args(["httpd", "-f", "-p", "10.50.0.1:8080", "-h"])
            .arg(www.path()),
    )
    .unwrap();

    podman
        .run(&Run {
            name: "app",
            networks: &[&net],
            ..Run::default()
        })
        .unwrap();
    let device = netsvc_vpn::tunnel::device_name(&podman.id("app").unwrap(), "eth0");
    // The site admits the tunnel's public key (`netsvc vpn status` shows it).
    let status = json_of(
        &netsvc(&node, &["vpn", "status", "--network", &net, "--format", "json"]),
        "netsvc vpn status",
    );
    site.admit(status[0]["tunnels"][0]["publicKey"].as_str().unwrap(), "10.200.0.2/32")
        .unwrap();

    let site_ip: IpAddr = "10.50.0.1".parse().unwrap();
    let reached = poll_until(Duration::from_secs(10), || podman.fetch("app", site_ip, 8080));
    assert_eq!(reached.as_deref(), Some("site"));
    assert_nothing_left(&node, &podman, &[device]);
}

#[test]
fn serial_a_container_joins_and_leaves_a_second_network() {
    use netsvc_tests::shaping::{Iperf3Server, goodput};
    let node = TestNode::new().unwrap();
    let podman = Podman::new(&node).unwrap();
    let front = network(&podman, "several-networks-front");
    let back = network(&podman, "several-networks-back");
    let run = |name: &str, networks: &[&str], labels: Option<&str>, ports: &[u16]| {
        podman
            .run(&Run {
                name,
                networks,
                labels,
                ports,
            })
            .unwrap();
    };
    run("db", &[&back], Some("tier:db"), &[5432]);
    run("app", &[&front], Some("tier:app"), &[80]);
    run("peer", &[&front], None, &[]);
    let db = podman.ip("db", &back).unwrap();
    let server = Iperf3Server::start(&node, 5201).unwrap();
    let back_gateway: IpAddr = "10.98.0.1".parse().unwrap();
    let app_ns = podman.netns("app").unwrap();
    let rate_to_back = || goodput(&app_ns, back_gateway, server.port, 4).unwrap();
    let on_back = |joined: bool| {
        let name = podman.resolve_settled("app", "db.back.internal", joined.then_some(db));
        assert_eq!(name, joined.then_some(db), "db's name, app on back: {joined}");
        let reply = podman.fetch("app", db, 5432);
        assert_eq!(
            reply.as_deref(),
            joined.then_some("db"),
            "app -> db:5432, app on back: {joined}"
        );
        let rate = rate_to_back();
        println!("app to back's gateway, app on back {joined}: {rate:.0} bit/s");
        if joined {
            assert!(rate <= 20e6 * 1.02, "shaped to 20 Mbit/s: {rate:.0} bit/s");
        } else {
            assert!(rate >= 100e6, "unshaped: {rate:.0} bit/s");
        }
        // Its own ifb (egress shaping) comes and goes; db has one all along.
        assert_eq!(node.links_of_kind("ifb").unwrap().len(), 1 + joined as usize);
        // On front all along: its peers find it by name.
        let app = Some(podman.ip("app", &front).unwrap());
        assert_eq!(podman.resolve_settled("peer", "app", app), app);
    };

    // Routed from front, app is neither a member of back nor allowed in.
    on_back(false);
    podman.connect("app", &back, Some("tier:app")).unwrap();
    on_back(true);
    podman.disconnect("app", &back).unwrap();
    on_back(false);
    assert_nothing_left(&node, &podman, &[]);
}
