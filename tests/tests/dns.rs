//! netsvc-dns and netsvc-dnsd on real bridge networks: names and aliases
//! resolved with dig and through resolv.conf, per-network views, LB service
//! names, forwarding, and what the plugin's verbs do.

use std::net::IpAddr;
use std::time::Duration;

use netsvc_tests::chain::{CallArgs, Chain, container_ip};
use netsvc_tests::{Container, Netns, TestNode};
use serde_json::{Value, json};

fn dns(domain: &str, extra: Value) -> Value {
    let mut v = json!({"type": "netsvc-dns", "capabilities": {"aliases": true}, "domain": domain, "upstreams": []});
    v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    v
}

/// ADD with a name and, optionally, aliases (podman's form: network → names).
fn attach(chain: &Chain, c: &Container, name: &str, aliases: &[&str]) -> (IpAddr, Value) {
    let mut args = CallArgs::endpoint(name, None);
    if !aliases.is_empty() {
        args.cap_args
            .insert("aliases".into(), json!({chain.list.name.clone(): aliases}));
    }
    let r = chain
        .add_with(c, "eth0", &args)
        .unwrap_or_else(|e| panic!("ADD {name}: {e}"));
    (container_ip(&r, "eth0").unwrap(), r)
}

/// `dig +short` from inside `ns`: the answer lines (empty when none).
fn dig(ns: &Netns, server: &str, args: &[&str]) -> Vec<String> {
    let mut all = vec![
        format!("@{server}"),
        "+short".into(),
        "+time=2".into(),
        "+tries=1".into(),
    ];
    all.extend(args.iter().map(|s| s.to_string()));
    let out = ns.exec("dig", &all).unwrap_or_else(|e| panic!("dig {args:?}: {e:#}"));
    out.lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
}

/// The response code dig reports (`NOERROR`, `NXDOMAIN`, `SERVFAIL`, …).
fn status(ns: &Netns, server: &str, args: &[&str]) -> String {
    let mut all = vec![format!("@{server}"), "+time=3".into(), "+tries=1".into()];
    all.extend(args.iter().map(|s| s.to_string()));
    let out = ns.exec("dig", &all).unwrap_or_else(|e| panic!("dig {args:?}: {e:#}"));
    out.split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_else(|| panic!("no status in {out}"))
        .to_string()
}

#[test]
fn two_containers_resolve_each_other_by_name_and_alias() {
    let node = TestNode::new().unwrap();
    let chain = node
        .chain(&node.bridge_conflist("dnsab", "1.0.0", "10.242.0.0/24", vec![dns("web.internal", json!({}))]))
        .unwrap();
    let (a, b) = (node.container("a").unwrap(), node.container("b").unwrap());
    let (ip_a, result_a) = attach(&chain, &a, "a", &[]);
    let (ip_b, _) = attach(&chain, &b, "b", &["bee", "api"]);
    let gw = "10.242.0.1";

    // The result tells the runtime what to write into resolv.conf.
    assert_eq!(result_a["dns"]["nameservers"], json!([gw]));
    assert_eq!(result_a["dns"]["search"], json!(["web.internal"]));

    assert_eq!(dig(a.ns(), gw, &["b.web.internal"]), [ip_b.to_string()]);
    assert_eq!(dig(a.ns(), gw, &["bee.web.internal"]), [ip_b.to_string()]);
    assert_eq!(dig(a.ns(), gw, &["api"]), [ip_b.to_string()], "a bare name answers too");
    assert_eq!(dig(b.ns(), gw, &["a.web.internal"]), [ip_a.to_string()]);
    assert_eq!(dig(b.ns(), gw, &["-x", &ip_a.to_string()]), ["a.web.internal."]);
    assert_eq!(dig(a.ns(), gw, &["-x", &ip_b.to_string()]), ["b.web.internal."]);
    assert_eq!(status(a.ns(), gw, &["nobody.web.internal"]), "NXDOMAIN");
    assert_eq!(
        status(a.ns(), gw, &["b.web.internal", "MX"]),
        "NOERROR",
        "NODATA, not NXDOMAIN"
    );
    assert!(dig(a.ns(), gw, &["b.web.internal", "MX"]).is_empty());

    // Through the resolv.conf the result implies, with its search domain.
    let conf = node.state_dir().join("resolv.conf.a");
    std::fs::write(
        &conf,
        format!("nameserver {gw}\nsearch web.internal\noptions timeout:2 attempts:1\n"),
    )
    .unwrap();
    let script = format!("mount --bind {} /etc/resolv.conf && getent hosts bee", conf.display());
    let out = a.ns().exec("unshare", ["-m", "sh", "-c", &script]).unwrap();
    assert!(out.starts_with(&format!("{ip_b} ")), "{out}");

    // DEL takes the names away.
    chain.del(&b, "eth0").unwrap();
    assert_eq!(status(a.ns(), gw, &["b.web.internal"]), "NXDOMAIN");
}

#[test]
fn each_client_sees_only_its_networks() {
    let node = TestNode::new().unwrap();
    let net_a = node
        .chain(&node.bridge_conflist("dnsva", "1.0.0", "10.242.1.0/24", vec![dns("a.internal", json!({}))]))
        .unwrap();
    let net_b = node
        .chain(&node.bridge_conflist("dnsvb", "1.0.0", "10.242.2.0/24", vec![dns("b.internal", json!({}))]))
        .unwrap();
    let (on_a, on_b, both) = (
        node.container("on-a").unwrap(),
        node.container("on-b").unwrap(),
        node.container("both").unwrap(),
    );
    let (ip_a, _) = attach(&net_a, &on_a, "on-a", &[]);
    let (ip_b, _) = attach(&net_b, &on_b, "on-b", &[]);
    let mut args = CallArgs::endpoint("both", None);
    args.args.push(("IgnoreUnknown".into(), "1".into()));
    net_a.add_with(&both, "eth0", &args).unwrap();
    net_b.add_with(&both, "eth1", &args).unwrap();

    assert_eq!(status(on_b.ns(), "10.242.2.1", &["on-a.a.internal"]), "NXDOMAIN");
    assert_eq!(status(on_a.ns(), "10.242.1.1", &["on-b.b.internal"]), "NXDOMAIN");
    for server in ["10.242.1.1", "10.242.2.1"] {
        assert_eq!(
            dig(both.ns(), server, &["on-a.a.internal"]),
            [ip_a.to_string()],
            "via {server}"
        );
        assert_eq!(
            dig(both.ns(), server, &["on-b.b.internal"]),
            [ip_b.to_string()],
            "via {server}"
        );
    }
}

#[test]
fn lb_service_names_resolve_to_their_vip_with_srv() {
    let node = TestNode::new().unwrap();
    let lb = json!({"type": "netsvc-lb", "services": [
        {"name": "api", "vip": "10.96.0.10", "select": {"names": ["api"]}, "ports": [{"port": 80, "targetPort": 8080}]}]});
    let chain = node
        .chain(&node.bridge_conflist(
            "dnslb",
            "1.0.0",
            "10.242.3.0/24",
            vec![lb, dns("svc.internal", json!({}))],
        ))
        .unwrap();
    let (client, api) = (node.container("client").unwrap(), node.container("api").unwrap());
    attach(&chain, &api, "api", &[]);
    attach(&chain, &client, "client", &[]);
    let gw = "10.242.3.1";
    // The service's name is its VIP; the container named api keeps its own address too.
    let answers = dig(client.ns(), gw, &["api.svc.internal"]);
    assert!(answers.contains(&"10.96.0.10".to_string()), "{answers:?}");
    assert_eq!(
        dig(client.ns(), gw, &["_80._tcp.api.svc.internal", "SRV"]),
        ["0 100 80 api.svc.internal."]
    );
}

#[test]
fn other_names_are_forwarded_and_no_upstream_is_servfail() {
    let node = TestNode::new().unwrap();
    // A default route into a veth nobody answers on: the dead upstream's
    // packets leave and vanish, so only the daemon's timeout ends the wait.
    node.dead_end_link("uplink0").unwrap();
    node.ip(["route", "add", "default", "dev", "uplink0"]).unwrap();
    // An upstream on the node: dnsmasq answering from a hosts file only.
    // `big.example` has 80 addresses: too many for a 512-byte UDP answer.
    let big: String = (1..=80).map(|i| format!("198.51.100.{i} big.example\n")).collect();
    let _upstream = node
        .upstream_resolver(&format!("192.0.2.80 outside.example\n{big}"))
        .unwrap();
    let chain = node
        .chain(&node.bridge_conflist(
            "dnsfwd",
            "1.0.0",
            "10.242.4.0/24",
            vec![dns("fwd.internal", json!({"upstreams": [TestNode::UPSTREAM]}))],
        ))
        .unwrap();
    let dead = node
        .chain(&node.bridge_conflist(
            "dnsdead",
            "1.0.0",
            "10.242.5.0/24",
            vec![dns("dead.internal", json!({"upstreams": ["192.0.2.1"]}))],
        ))
        .unwrap();
    let (c, d) = (node.container("c").unwrap(), node.container("d").unwrap());
    attach(&chain, &c, "c", &[]);
    attach(&dead, &d, "d", &[]);

    let answer = netsvc_tests::poll_until(Duration::from_secs(5), || {
        Some(dig(c.ns(), "10.242.4.1", &["outside.example"])).filter(|a| !a.is_empty())
    });
    assert_eq!(answer.unwrap(), ["192.0.2.80"]);

    // Truncation and TCP: a plain UDP client gets TC; over TCP (asked of the
    // upstream over TCP too, as its UDP answer is truncated) or with EDNS, all 80.
    let flags = c
        .ns()
        .exec("dig", ["@10.242.4.1", "+noedns", "+ignore", "+time=3", "big.example"])
        .unwrap();
    // dig's header line: ";; flags: qr tc rd ra; QUERY: 1, ANSWER: …".
    let header: Vec<&str> = flags
        .lines()
        .find_map(|l| l.strip_prefix(";; flags:"))
        .and_then(|l| l.split(';').next())
        .unwrap_or_else(|| panic!("no flags line: {flags}"))
        .split_whitespace()
        .collect();
    assert!(
        header.contains(&"qr") && header.contains(&"tc"),
        "a truncated reply: {flags}"
    );
    assert_eq!(dig(c.ns(), "10.242.4.1", &["+noedns", "+tcp", "big.example"]).len(), 80);
    assert_eq!(
        dig(c.ns(), "10.242.4.1", &["+noedns", "big.example"]).len(),
        80,
        "dig retries over TCP"
    );
    // EDNS passes through: more than a 512-byte answer holds (about 28
    // addresses) comes back over UDP, up to the 1232-byte EDNS size.
    let over_udp = dig(
        c.ns(),
        "10.242.4.1",
        &["+edns=0", "+bufsize=4096", "+ignore", "big.example"],
    )
    .len();
    assert!(over_udp > 28, "{over_udp} addresses over UDP with EDNS");
    // dig gives up after 3 s: the SERVFAIL comes before (the daemon waits 2 s per upstream).
    let started = std::time::Instant::now();
    assert_eq!(status(d.ns(), "10.242.5.1", &["outside.example"]), "SERVFAIL");
    println!("SERVFAIL after {:?}", started.elapsed());
}

#[test]
fn bad_config_is_code_7_naming_the_field() {
    let node = TestNode::new().unwrap();
    for (extra, field) in [
        (json!({"domain": "bad_domain"}), "domain"),
        (json!({"port": 0}), "port"),
        (json!({"listen": "somewhere"}), "listen"),
        (json!({"upstreams": ["not-an-ip"]}), "upstreams[0]"),
    ] {
        let chain = node
            .chain(&node.bridge_conflist(
                "dnsbad",
                "1.0.0",
                "10.242.6.0/24",
                vec![dns("x.internal", extra.clone())],
            ))
            .unwrap();
        let c = node.container("c").unwrap();
        let err = chain.add_with(&c, "eth0", &CallArgs::endpoint("c", None)).unwrap_err();
        assert_eq!(err.cni().code, 7, "{extra}: {err}");
        assert!(err.cni().msg.contains(field), "{extra}: {err}");
    }
    assert!(!node.state_dir().join("dnsd/pid").exists(), "no daemon for bad input");
}

fn daemon_pid(node: &TestNode) -> i32 {
    let raw = std::fs::read_to_string(node.state_dir().join("dnsd/pid")).unwrap();
    raw.trim().parse().unwrap()
}

#[test]
fn one_daemon_serves_every_network_and_answers_as_soon_as_add_returns() {
    let node = TestNode::new().unwrap();
    let (mut pids, mut containers) = (Vec::new(), Vec::new());
    for i in 0..3 {
        let name = format!("dnsone{i}");
        let chain = node
            .chain(&node.bridge_conflist(
                &name,
                "1.0.0",
                &format!("10.242.{}.0/24", 10 + i),
                vec![dns("one.internal", json!({}))],
            ))
            .unwrap();
        let (a, b) = (node.container("a").unwrap(), node.container("b").unwrap());
        attach(&chain, &a, &format!("a{i}"), &[]);
        // Asked once, right after ADD returns: no retry hides a slow reload.
        let (ip_b, _) = attach(&chain, &b, &format!("b{i}"), &[]);
        let server = format!("10.242.{}.1", 10 + i);
        assert_eq!(
            dig(a.ns(), &server, &[&format!("b{i}.one.internal")]),
            [ip_b.to_string()]
        );
        pids.push(daemon_pid(&node));
        containers.push((a, b));
    }
    assert!(
        pids.windows(2).all(|w| w[0] == w[1]),
        "one daemon for every network: {pids:?}"
    );
    let this_node = format!("netsvc-dnsd --state-dir {}", node.state_dir().display());
    let procs = node.exec("pgrep", ["-c", "-f", &this_node]).unwrap();
    assert_eq!(procs.trim(), "1", "one daemon process for this node");
}

#[test]
fn aliases_in_list_form_check_gc_status_and_sigterm() {
    let node = TestNode::new().unwrap();
    let conf = dns("life.internal", json!({}));
    let chain = node
        .chain(&node.bridge_conflist("dnslife", "1.0.0", "10.242.20.0/24", vec![conf.clone()]))
        .unwrap();
    // GC and STATUS exist from 1.1.0, which Debian's bridge does not speak.
    let alone = node
        .chain(&json!({"cniVersion": "1.1.0", "name": "dnslife", "plugins": [conf]}))
        .unwrap();
    let (a, b) = (node.container("a").unwrap(), node.container("b").unwrap());
    attach(&chain, &a, "a", &[]);
    // The aliases capability as a plain list (the other form runtimes send).
    let mut args = CallArgs::endpoint("b", None);
    args.cap_args.insert("aliases".into(), json!(["bravo"]));
    let r = chain.add_with(&b, "eth0", &args).unwrap();
    let ip_b = container_ip(&r, "eth0").unwrap();
    let gw = "10.242.20.1";
    assert_eq!(dig(a.ns(), gw, &["bravo.life.internal"]), [ip_b.to_string()]);

    chain.check(&b, "eth0").unwrap();
    alone.status().unwrap();

    // GC keeping only a drops b's records.
    alone.gc(&[(&a, "eth0")]).unwrap();
    assert_eq!(status(a.ns(), gw, &["b.life.internal"]), "NXDOMAIN");

    // SIGTERM stops the daemon cleanly; CHECK then fails, the next ADD starts it again.
    let pid = daemon_pid(&node);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM).unwrap();
    let gone = netsvc_tests::poll_until(Duration::from_secs(5), || {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
    assert!(gone.is_some(), "the daemon exits on SIGTERM");
    assert!(!node.state_dir().join("dnsd/pid").exists(), "and removes its pid file");
    let err = chain.check(&a, "eth0").unwrap_err();
    assert_eq!(err.cni().code, 120, "{err}");
    let c = node.container("c").unwrap();
    let (ip_c, _) = attach(&chain, &c, "c", &[]);
    assert_ne!(daemon_pid(&node), pid);
    assert_eq!(dig(a.ns(), gw, &["c.life.internal"]), [ip_c.to_string()]);
    chain.check(&a, "eth0").unwrap();
}

#[test]
fn status_is_50_when_the_daemon_is_not_installed() {
    let node = TestNode::new().unwrap();
    // The plugin alone, without netsvc-dnsd beside it.
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("netsvc-dns");
    std::fs::copy(netsvc_tests::chain::plugin_dir().join("netsvc-dns"), &plugin).unwrap();
    let conf = json!({"cniVersion": "1.1.0", "name": "dnsstatus", "type": "netsvc-dns"});
    let mut cmd = node.command(&plugin);
    cmd.env("CNI_COMMAND", "STATUS").env("CNI_PATH", dir.path());
    let out = netsvc_tests::with_stdin(&mut cmd, conf.to_string().as_bytes()).unwrap();
    assert!(!out.status.success());
    let err: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["code"], 50, "{err}");
    assert!(err["msg"].as_str().unwrap().contains("netsvc-dnsd"), "{err}");
}

/// A name several containers share (an alias) answers every address, and
/// consecutive queries start with a different one (round robin).
#[test]
fn a_shared_name_answers_round_robin() {
    let node = TestNode::new().unwrap();
    let chain = node
        .chain(&node.bridge_conflist("dnsrr", "1.0.0", "10.242.9.0/24", vec![dns("rr.internal", json!({}))]))
        .unwrap();
    let members: Vec<Container> = (0..3).map(|i| node.container(&format!("rr{i}")).unwrap()).collect();
    let mut ips: Vec<String> = members
        .iter()
        .enumerate()
        .map(|(i, c)| attach(&chain, c, &format!("rr{i}"), &["api"]).0.to_string())
        .collect();
    ips.sort();
    let client = node.container("client").unwrap();
    attach(&chain, &client, "client", &[]);
    let mut firsts = std::collections::BTreeSet::new();
    for _ in 0..3 {
        let mut answer = dig(client.ns(), "10.242.9.1", &["api.rr.internal"]);
        firsts.insert(answer[0].clone());
        answer.sort();
        assert_eq!(answer, ips, "every address");
    }
    assert_eq!(firsts.len(), 3, "each answer starts with another address: {firsts:?}");
}

/// An upstream's answer is kept for its TTL: asked again while the upstream
/// is down, it still answers (its TTL counted down); emptied through the
/// control socket, the name fails again until the upstream is back.
#[test]
fn a_forwarded_answer_is_kept_while_the_upstream_is_down_until_flushed() {
    let node = TestNode::new().unwrap();
    let upstream = node
        .upstream_resolver_with_ttl("192.0.2.81 kept.example\n", 60)
        .unwrap();
    let chain = node
        .chain(&node.bridge_conflist(
            "dnscache",
            "1.0.0",
            "10.242.10.0/24",
            vec![dns("cache.internal", json!({"upstreams": [TestNode::UPSTREAM]}))],
        ))
        .unwrap();
    let c = node.container("c").unwrap();
    attach(&chain, &c, "c", &[]);
    let answer = netsvc_tests::poll_until(Duration::from_secs(5), || {
        Some(dig(c.ns(), "10.242.10.1", &["kept.example"])).filter(|a| !a.is_empty())
    });
    assert_eq!(answer.unwrap(), ["192.0.2.81"]);
    drop(upstream);
    let kept = c
        .ns()
        .exec(
            "dig",
            [
                "@10.242.10.1",
                "+noall",
                "+answer",
                "+time=2",
                "+tries=1",
                "kept.example",
            ],
        )
        .unwrap();
    let fields: Vec<&str> = kept.split_whitespace().collect();
    assert_eq!(
        fields.last(),
        Some(&"192.0.2.81"),
        "kept while the upstream is down: {kept}"
    );
    let ttl: u32 = fields[1].parse().unwrap();
    assert!(ttl <= 60, "the TTL counted down: {kept}");
    let socket = netsvc_dns::daemon::Paths::new(node.state_dir()).control();
    let flushed = netsvc_dns::daemon::control::flush(&socket, Duration::from_secs(2))
        .unwrap()
        .unwrap();
    assert!(flushed >= 1, "{flushed} answers flushed");
    assert_eq!(status(c.ns(), "10.242.10.1", &["kept.example"]), "SERVFAIL");
}

/// The node finds a container by name (`netsvc dns query`): it sees every
/// network's names, which no container does.
#[test]
fn the_node_resolves_a_container_name_of_any_network() {
    let node = TestNode::new().unwrap();
    let net_a = node
        .chain(&node.bridge_conflist("dnsna", "1.0.0", "10.242.11.0/24", vec![dns("na.internal", json!({}))]))
        .unwrap();
    let net_b = node
        .chain(&node.bridge_conflist("dnsnb", "1.0.0", "10.242.12.0/24", vec![dns("nb.internal", json!({}))]))
        .unwrap();
    let (a, b) = (node.container("a").unwrap(), node.container("b").unwrap());
    let (ip_a, _) = attach(&net_a, &a, "a", &[]);
    let (ip_b, _) = attach(&net_b, &b, "b", &["bee"]);
    let query = |args: &[&str]| {
        let mut all = vec!["dns", "query"];
        all.extend(args);
        netsvc_tests::chain::netsvc(&node, &all)
    };
    for (name, ip) in [("a.na.internal", ip_a), ("bee.nb.internal", ip_b)] {
        let out = query(&[name]);
        assert!(out.status.success(), "{name}: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), ip.to_string(), "{name}");
    }
    let missing = query(&["nobody.na.internal"]);
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("NXDOMAIN"),
        "{missing:?}"
    );
    let ptr = query(&[&format!("{}.in-addr.arpa", reverse(ip_a)), "--type", "PTR"]);
    assert_eq!(String::from_utf8_lossy(&ptr.stdout).trim(), "a.na.internal.", "{ptr:?}");
    // A container of net_a does not see net_b's names.
    assert_eq!(status(a.ns(), "10.242.11.1", &["bee.nb.internal"]), "NXDOMAIN");
}

fn reverse(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else { panic!("{ip}") };
    let o = v4.octets();
    format!("{}.{}.{}.{}", o[3], o[2], o[1], o[0])
}

/// UDP is answered by a worker per core, each with its own socket on the
/// listen address (`SO_REUSEPORT`), and every one of them answers.
#[test]
fn udp_is_served_by_a_socket_per_core() {
    let node = TestNode::new().unwrap();
    let chain = node
        .chain(&node.bridge_conflist(
            "dnsudp",
            "1.0.0",
            "10.242.13.0/24",
            vec![dns("udp.internal", json!({}))],
        ))
        .unwrap();
    let (a, b) = (node.container("a").unwrap(), node.container("b").unwrap());
    attach(&chain, &a, "a", &[]);
    let (ip_b, _) = attach(&chain, &b, "b", &[]);
    let sockets = node.exec("ss", ["-H", "-u", "-l", "-n", "-p"]).unwrap();
    let ours = sockets
        .lines()
        .filter(|l| l.contains("10.242.13.1:53") && l.contains("netsvc-dnsd"))
        .count();
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(ours, cores, "{sockets}");
    // Queries from many source ports land on every socket; all are answered.
    for _ in 0..20 {
        assert_eq!(dig(a.ns(), "10.242.13.1", &["b.udp.internal"]), [ip_b.to_string()]);
    }
}
