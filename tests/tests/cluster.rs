//! One network spanning three simulated nodes that share a real etcd: node
//! namespaces on a switched underlay (a bridge in a hub namespace, which
//! also runs etcd), each with its own bridge, pod subnet, containers and
//! `netsvc agent`. Names resolve across nodes, a VIP spreads over backends
//! on two other nodes, a default-deny policy holds across nodes, and
//! cross-node traffic is WireGuard on the underlay. A node that dies leaves
//! the others' state within its lease; an agent restart replays only what
//! changed; an etcd outage makes ADD fail with 11 and leave nothing.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use netsvc_tests::capture::Capture;
use netsvc_tests::chain::{CallArgs, Chain, container_ip};
use netsvc_tests::cluster::{self, Agent, ETCD_IP, SimNode, store_of_the_pattern};
use netsvc_tests::etcd::Etcd;
use netsvc_tests::{Container, EchoServer, poll_until};

const VIP: &str = "10.96.0.10";
const LEASE_TTL: u64 = 5;

fn dig(c: &Container, server: &str, name: &str) -> Vec<String> {
    let args = [
        format!("@{server}"),
        "+short".into(),
        "+time=2".into(),
        "+tries=1".into(),
        name.into(),
    ];
    let out = c.ns().exec("dig", &args).unwrap_or_default();
    out.lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
}

fn attach(chain: &Chain<'_>, c: &Container, name: &str, tier: &str) -> IpAddr {
    let labels = format!("tier:{tier}");
    let result = chain
        .add_with(c, "eth0", &CallArgs::endpoint(name, Some(&labels)))
        .unwrap();
    container_ip(&result, "eth0").unwrap()
}

/// The identities that answered `n` connections to the VIP from `c`.
fn vip_answers(c: &Container, n: usize) -> Vec<String> {
    let vip: SocketAddr = format!("{VIP}:80").parse().unwrap();
    (0..n)
        .filter_map(|i| c.tcp_echo(vip, &format!("q{i}"), Duration::from_secs(2)).ok())
        .map(|r| r.identity)
        .collect()
}

#[test]
fn a_network_spans_three_nodes_through_etcd() {
    let hub = cluster::hub().unwrap();
    let nodes = cluster::join(&hub, &["node-a", "node-b", "node-c"]).unwrap();
    let mut etcd = Etcd::start(&hub, ETCD_IP).unwrap();
    let store = etcd.store_spec();
    assert_eq!(store_of_the_pattern(), store, "the pattern points at this etcd");
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let mut agents: Vec<Agent> = nodes.iter().map(|n| n.agent(&store, LEASE_TTL)).collect();
    let chains: Vec<Chain<'_>> = nodes.iter().map(SimNode::chain).collect();

    let web = a.ns.container("web").unwrap();
    let (api_b, api_c, db_c) = (
        b.ns.container("api-b").unwrap(),
        c.ns.container("api-c").unwrap(),
        c.ns.container("db").unwrap(),
    );
    let ip_web = attach(&chains[0], &web, "web", "web");
    let ip_b = attach(&chains[1], &api_b, "api-b", "api");
    let ip_c = attach(&chains[2], &api_c, "api-c", "api");
    let ip_db = attach(&chains[2], &db_c, "db", "db");
    let mut servers: Vec<EchoServer> = [(&api_b, "api-b"), (&api_c, "api-c"), (&db_c, "db"), (&web, "web")]
        .iter()
        .map(|(ct, id)| EchoServer::start(ct, "0.0.0.0:8080".parse().unwrap(), id).unwrap())
        .collect();

    // A container on A resolves containers on B and C by name.
    let resolved = poll_until(Duration::from_secs(10), || {
        let both = dig(&web, &a.gateway(), "api-c.span.internal") == [ip_c.to_string()]
            && dig(&web, &a.gateway(), "api-b.span.internal") == [ip_b.to_string()];
        both.then_some(())
    });
    assert!(
        resolved.is_some(),
        "A's resolver answers the names of B's and C's containers"
    );

    // The VIP on A is served by the backends on B and C, both.
    let spread = poll_until(Duration::from_secs(15), || {
        let seen: BTreeSet<String> = vip_answers(&web, 12).into_iter().collect();
        (seen == BTreeSet::from(["api-b".to_string(), "api-c".to_string()])).then_some(())
    });
    assert!(
        spread.is_some(),
        "A's VIP spreads over B's and C's backends: {:?}",
        vip_answers(&web, 12)
    );

    // Default deny with an allow by label, across nodes: web may reach the
    // api replicas; nothing else reaches anything.
    let probe = |from: &Container, to: IpAddr| {
        from.tcp_echo(SocketAddr::new(to, 8080), "p", Duration::from_secs(1))
            .is_ok()
    };
    let table = [
        ("web→api-b", &web, ip_b, true),
        ("web→api-c", &web, ip_c, true),
        ("web→db", &web, ip_db, false),
        ("api-b→web", &api_b, ip_web, false),
        ("api-b→api-c", &api_b, ip_c, false),
        ("db→api-b", &db_c, ip_b, false),
        ("api-c→web", &api_c, ip_web, false),
    ];
    for (what, from, to, allowed) in table {
        assert_eq!(probe(from, to), allowed, "{what}");
    }

    // Cross-node traffic is WireGuard on the underlay: no plaintext.
    let capture = Capture::start(&a.ns, "ul0").unwrap();
    let marker = "SPAN-PLAINTEXT-4242";
    web.tcp_echo(SocketAddr::new(ip_c, 8080), marker, Duration::from_secs(2))
        .unwrap();
    let seen = capture.stop().unwrap();
    assert!(!seen.text.contains(marker), "no plaintext between nodes");
    assert!(
        seen.packets
            .iter()
            .filter(|p| p.contains(" IP ") && p.contains("10.90."))
            .count()
            == 0,
        "pod addresses never appear on the underlay: {:?}",
        seen.packets
    );

    // An agent restart replays what changed while it was down, no more.
    let first = c.agent_state();
    assert_eq!(first["fullResync"], true, "a first start renders everything: {first}");
    agents[2].kill();
    let restarted = Instant::now();
    agents[2] = c.agent(&store, LEASE_TTL);
    let caught_up = poll_until(Duration::from_secs(10), || {
        let s = c.agent_state();
        (s["fullResync"] == false && s["revision"].as_u64() >= first["revision"].as_u64()).then_some(s)
    })
    .expect("C's agent resumed from its revision");
    assert_eq!(caught_up["nftBatches"], 0, "nothing changed: no render ({caught_up})");
    assert!(
        restarted.elapsed() < Duration::from_secs(LEASE_TTL),
        "restarted within the lease"
    );
    // Down again while etcd compacts past its revision: the history to
    // replay is gone, so it renders everything.
    agents[2].kill();
    let stopped_at = c.agent_state()["revision"].as_u64();
    etcd.compact_past_now().unwrap();
    agents[2] = c.agent(&store, LEASE_TTL);
    poll_until(Duration::from_secs(10), || {
        let s = c.agent_state();
        (s["fullResync"] == true && s["revision"].as_u64() > stopped_at).then_some(())
    })
    .expect("C's agent re-synced in full after the compaction");

    // Node B dies: its agent and its containers go. Within the lease TTL
    // and 2 s, A and C drop B's backends and peer, and no connection goes to B.
    agents[1].kill();
    drop(servers.remove(0)); // api-b's
    drop(api_b);
    let died = Instant::now();
    // Forgotten: no mesh route to B's pods, and B's address nowhere in the
    // node's LB table (no backend slot; hairpin elements are local only).
    let forgot_b = |n: &SimNode| {
        let routes = n.ns.ip(["route", "show", "10.90.2.0/24"]).unwrap_or_default();
        let lb =
            n.ns.ns()
                .exec("nft", ["list", "table", "ip", "netsvc_lb"])
                .unwrap_or_default();
        routes.trim().is_empty() && !lb.contains(&ip_b.to_string())
    };
    let gone = poll_until(Duration::from_secs(LEASE_TTL + 2), || {
        (forgot_b(a) && forgot_b(c)).then_some(())
    });
    assert!(
        gone.is_some(),
        "B left A's and C's mesh routes and load balancers within {}s (took {:?})",
        LEASE_TTL + 2,
        died.elapsed()
    );
    let answers = vip_answers(&web, 20);
    assert_eq!(answers.len(), 20, "every connection is answered");
    assert!(
        answers.iter().all(|a| a == "api-c"),
        "no connection is sent to B: {answers:?}"
    );

    // etcd goes away: ADD fails with 11; DEL (which a runtime sends after
    // a failed ADD) still succeeds, and nothing is left. When etcd is back
    // the agent replays the queued DELs and the same ADD succeeds.
    etcd.stop();
    let late = a.ns.container("late").unwrap();
    let err = chains[0]
        .add_with(&late, "eth0", &CallArgs::endpoint("late", Some("tier:web")))
        .expect_err("no store, no ADD");
    assert_eq!(err.cni().code, 11, "{err}");
    chains[0].del(&late, "eth0").expect("DEL succeeds without the store");
    assert!(
        late.ns().ip(["-o", "link", "show", "eth0"]).is_err(),
        "the container keeps no interface"
    );
    let queued = a.ns.state_dir().join("pending");
    assert!(
        std::fs::read_dir(&queued).map(|d| d.count()).unwrap_or(0) > 0,
        "the DELs wait for the store"
    );
    etcd.resume().unwrap();
    let replayed = poll_until(Duration::from_secs(15), || {
        let empty = std::fs::read_dir(&queued).map(|d| d.count() == 0).unwrap_or(true);
        (empty && a.agent_state()["delsReplayed"].as_u64() > Some(0)).then_some(())
    });
    assert!(
        replayed.is_some(),
        "A's agent replayed the queued DELs: {}",
        a.agent_state()
    );
    let ip_late = attach(&chains[0], &late, "late", "web");
    let served = poll_until(Duration::from_secs(10), || {
        (dig(&web, &a.gateway(), "late.span.internal") == [ip_late.to_string()]).then_some(())
    });
    assert!(served.is_some(), "after etcd returns the new container is served");
    drop(agents);
}
