//! netsvc-firewall's lifecycle on a real bridge network: bad input changes
//! nothing, ADD/DEL cycles leak nothing, CHECK/GC/STATUS, and chaining with
//! the reference portmap plugin.

use std::time::Duration;

use netsvc_tests::chain::{CallArgs, Chain, container_ip};
use netsvc_tests::{Container, EchoServer, TestNode};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(5);

fn args(name: &str, labels: &str) -> CallArgs {
    CallArgs::endpoint(name, Some(labels).filter(|l| !l.is_empty()))
}

fn firewall(policies: Value) -> Value {
    json!({"type": "netsvc-firewall", "defaultIngress": "deny", "policies": policies})
}

/// Our table without counters (which traffic moves) and handles (which a
/// re-added rule changes): what must stay the same.
fn table_shape(node: &TestNode) -> Value {
    let out = node
        .exec("nft", ["-j", "list", "table", "inet", "netsvc_firewall"])
        .unwrap_or_default();
    let mut v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    strip(&mut v);
    v
}

fn strip(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("handle");
            if let Some(Value::Array(expr)) = m.get_mut("expr") {
                expr.retain(|e| e.get("counter").is_none());
            }
            m.values_mut().for_each(strip);
        }
        Value::Array(a) => a.iter_mut().for_each(strip),
        _ => {}
    }
}

fn add(chain: &Chain, c: &Container, name: &str, labels: &str) -> std::net::IpAddr {
    let r = chain
        .add_with(c, "eth0", &args(name, labels))
        .unwrap_or_else(|e| panic!("ADD {name}: {e}"));
    container_ip(&r, "eth0").unwrap()
}

#[test]
fn bad_policies_are_code_7_naming_policy_and_field_and_change_nothing() {
    let node = TestNode::new().unwrap();
    let (a, b) = (node.container("a").unwrap(), node.container("b").unwrap());
    let good =
        firewall(json!([{"name": "web", "select": {"names": ["b"]}, "ingress": [{"from": [{"names": ["a"]}]}]}]));
    let chain = node
        .chain(&node.bridge_conflist("fwbad", "1.0.0", "10.250.0.0/24", vec![good]))
        .unwrap();
    add(&chain, &a, "a", "");
    let before = table_shape(&node);
    let state_before = std::fs::read_dir(node.state_dir().join("kv/networks/fwbad/endpoints"))
        .unwrap()
        .count();

    let cases = [
        (json!([{"name": "p1", "selct": {}}]), "selct"),
        (
            json!([{"name": "p1", "ingress": [{"from": [{"cidr": "10.0.0.0/40"}]}]}]),
            "cidr",
        ),
        (json!([{"name": "p1", "ingress": [{"ports": [{"port": 0}]}]}]), "port"),
        (
            json!([{"name": "p1", "ingress": [{"ports": [{"port": 65536}]}]}]),
            "port",
        ),
        (
            json!([{"name": "p1", "ingress": [{"ports": [{"port": 90, "endPort": 80}]}]}]),
            "endPort",
        ),
        (json!([{"name": "p1"}, {"name": "p1"}]), "duplicate"),
        (
            json!([{"name": "p1", "ingress": [{"ports": [{"protocol": "icmp", "port": 1}]}]}]),
            "protocol",
        ),
    ];
    for (policies, field) in cases {
        let conf = node.bridge_conflist("fwbad", "1.0.0", "10.250.0.0/24", vec![firewall(policies.clone())]);
        let bad = node.chain(&conf).unwrap();
        let err = bad
            .add_with(&b, "eth0", &args("b", ""))
            .expect_err("a bad policy fails ADD");
        let cni = err.cni();
        assert_eq!(cni.code, 7, "{policies}: {cni}");
        assert!(
            cni.msg.contains(field) && cni.msg.contains("p1"),
            "names policy and field: {}",
            cni.msg
        );
        // As a runtime does after a failed ADD: DEL, which must succeed.
        bad.del(&b, "eth0").expect("DEL after a failed ADD succeeds");
        assert_eq!(table_shape(&node), before, "{policies}: nothing applied");
    }
    let state_after = std::fs::read_dir(node.state_dir().join("kv/networks/fwbad/endpoints"))
        .unwrap()
        .count();
    assert_eq!(state_before, state_after, "no endpoint recorded by a failed ADD");
}

#[test]
fn two_hundred_add_del_cycles_leave_the_table_exactly_as_it_was() {
    let node = TestNode::new().unwrap();
    let (a, b, c) = (
        node.container("a").unwrap(),
        node.container("b").unwrap(),
        node.container("c").unwrap(),
    );
    let fw = firewall(json!([
        {"name": "api", "select": {"labels": {"tier": "api"}},
         "ingress": [{"from": [{"labels": {"tier": "web"}}, {"cidr": "10.251.0.0/24", "except": ["10.251.0.9/32"]}],
                      "ports": [{"protocol": "tcp", "port": 80, "endPort": 81}]}],
         "egress": [{"to": [{"names": ["a"]}]}]}
    ]));
    let chain = node
        .chain(&node.bridge_conflist("fwcyc", "1.0.0", "10.251.0.0/24", vec![fw]))
        .unwrap();
    add(&chain, &a, "a", "tier:web");
    add(&chain, &b, "b", "tier:api");
    let before = table_shape(&node);
    for i in 0..200 {
        let labels = if i % 2 == 0 { "tier:api" } else { "tier:web" };
        add(&chain, &c, "c", labels);
        chain.del(&c, "eth0").unwrap_or_else(|e| panic!("DEL {i}: {e}"));
    }
    assert_eq!(table_shape(&node), before, "no element or rule leaked");
    // And everything goes with the last endpoint.
    chain.del(&a, "eth0").unwrap();
    chain.del(&b, "eth0").unwrap();
    let empty = node.exec("nft", ["list", "table", "inet", "netsvc_firewall"]).unwrap();
    assert!(
        !empty.contains("fwcyc") && !empty.contains("elements"),
        "network torn down: {empty}"
    );
}

#[test]
fn check_fails_when_state_is_gone_and_gc_removes_stale_endpoints() {
    let node = TestNode::new().unwrap();
    let (a, b) = (node.container("a").unwrap(), node.container("b").unwrap());
    let fw =
        firewall(json!([{"name": "b-from-a", "select": {"names": ["b"]}, "ingress": [{"from": [{"names": ["a"]}]}]}]));
    let chain = node
        .chain(&node.bridge_conflist("fwchk", "1.0.0", "10.252.0.0/24", vec![fw.clone()]))
        .unwrap();
    // GC and STATUS exist from 1.1.0, which Debian's bridge does not speak: the
    // firewall alone answers them for the same network (they need no prevResult).
    let alone = node
        .chain(&json!({"cniVersion": "1.1.0", "name": "fwchk", "plugins": [fw]}))
        .unwrap();
    let ip_a = add(&chain, &a, "a", "");
    let ip_b = add(&chain, &b, "b", "");
    chain
        .check(&a, "eth0")
        .expect("CHECK passes while the state is in place");
    alone.status().expect("STATUS");

    // Someone removes a's element: CHECK says what is missing.
    let set = node.exec("nft", ["-j", "list", "sets", "inet"]).unwrap();
    let eps: Value = serde_json::from_str(&set).unwrap();
    let name = eps["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("set")?.get("name")?.as_str())
        .find(|n| n.ends_with("_eps4") && n.starts_with("fwchk"))
        .unwrap()
        .to_string();
    node.exec(
        "nft",
        [format!("delete element inet netsvc_firewall {name} {{ {ip_a} }}")],
    )
    .unwrap();
    let err = chain.check(&a, "eth0").expect_err("CHECK notices the missing element");
    assert!(err.cni().msg.contains(&ip_a.to_string()), "{err}");

    // GC keeping only b repairs the network for b and drops a.
    alone.gc(&[(&b, "eth0")]).expect("GC");
    let listing = node.exec("nft", ["list", "table", "inet", "netsvc_firewall"]).unwrap();
    assert!(!listing.contains(&ip_a.to_string()), "a is gone after GC: {listing}");
    assert!(listing.contains(&ip_b.to_string()), "b stays: {listing}");
    chain.check(&b, "eth0").expect("b is whole after GC");
}

#[test]
fn chained_with_reference_portmap_a_published_port_follows_policy() {
    let node = TestNode::new().unwrap();
    let (web, api, other) = (
        node.container("web").unwrap(),
        node.container("api").unwrap(),
        node.container("other").unwrap(),
    );
    let fw = firewall(json!([{"name": "api-from-web", "select": {"names": ["api"]},
                              "ingress": [{"from": [{"names": ["web"]}], "ports": [{"protocol": "tcp", "port": 80}]}]}]));
    let portmap = json!({"type": "portmap", "capabilities": {"portMappings": true}});
    let chain = node
        .chain(&node.bridge_conflist("fwpm", "1.0.0", "10.253.0.0/24", vec![fw, portmap]))
        .unwrap();
    add(&chain, &web, "web", "");
    add(&chain, &other, "other", "");
    let mut published = args("api", "");
    published.cap_args.insert(
        "portMappings".into(),
        json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]),
    );
    let r = chain.add_with(&api, "eth0", &published).expect("ADD with portmap");
    let api_ip = container_ip(&r, "eth0").unwrap();
    let _srv = EchoServer::start(&api, "0.0.0.0:80".parse().unwrap(), "api").unwrap();

    let gateway = "10.253.0.1:8080".parse().unwrap();
    assert_eq!(
        web.tcp_echo(gateway, "hi", T)
            .expect("web reaches api through the published port")
            .identity,
        "api"
    );
    assert!(
        other.tcp_echo(gateway, "hi", Duration::from_secs(2)).is_err(),
        "other is denied through it too"
    );
    assert!(
        web.tcp_echo((api_ip, 80).into(), "hi", T).is_ok(),
        "web reaches api directly"
    );
    assert!(
        other
            .tcp_echo((api_ip, 80).into(), "hi", Duration::from_secs(2))
            .is_err()
    );
    chain.check(&api, "eth0").expect("CHECK of the whole chain");
    for c in [&api, &web, &other] {
        chain.del(c, "eth0").expect("DEL of the whole chain");
    }
}

#[test]
fn apply_changes_only_the_difference_and_traffic_follows() {
    let node = TestNode::new().unwrap();
    let (a, b) = (node.container("a").unwrap(), node.container("b").unwrap());
    let policy = |port: u16| {
        firewall(json!([{"name": "b-from-a", "select": {"names": ["b"]},
                         "ingress": [{"from": [{"names": ["a"]}], "ports": [{"protocol": "tcp", "port": port}]}]}]))
    };
    let conf = node.bridge_conflist("fwapp", "1.0.0", "10.254.0.0/24", vec![policy(80)]);
    let chain = node.chain(&conf).unwrap();
    add(&chain, &a, "a", "");
    let ip_b = add(&chain, &b, "b", "");
    let _s80 = EchoServer::start(&b, "0.0.0.0:80".parse().unwrap(), "b80").unwrap();
    let _s81 = EchoServer::start(&b, "0.0.0.0:81".parse().unwrap(), "b81").unwrap();
    let short = Duration::from_secs(2);
    assert!(a.tcp_echo((ip_b, 80).into(), "x", T).is_ok());
    assert!(a.tcp_echo((ip_b, 81).into(), "x", short).is_err());

    let path = node.state_dir().join("fwapp.conflist");
    std::fs::write(
        &path,
        serde_json::to_vec(&node.bridge_conflist("fwapp", "1.0.0", "10.254.0.0/24", vec![policy(81)])).unwrap(),
    )
    .unwrap();
    let apply = || {
        let netsvc = netsvc_tests::chain::plugin_dir().join("netsvc");
        let out = node.command(netsvc).arg("apply").arg(&path).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = apply();
    assert!(
        first.contains("2 endpoints") && !first.contains(" 0 changes"),
        "{first}"
    );
    assert!(
        apply().contains("2 endpoints, 0 changes"),
        "a second apply finds nothing to do"
    );
    assert!(a.tcp_echo((ip_b, 81).into(), "x", T).is_ok(), "the new port is open");
    assert!(
        a.tcp_echo((ip_b, 80).into(), "x", short).is_err(),
        "the old port is closed"
    );
}

#[test]
fn denied_packets_are_logged_with_network_and_policy() {
    let node = TestNode::new().unwrap();
    let (a, b) = (node.container("a").unwrap(), node.container("b").unwrap());
    let mut fw = firewall(json!([{"name": "b-from-nobody", "select": {"names": ["b"]}, "ingress": []}]));
    fw["log"] = json!({"denied": true, "group": 7});
    let chain = node
        .chain(&node.bridge_conflist("fwlog", "1.0.0", "10.249.7.0/24", vec![fw]))
        .unwrap();
    add(&chain, &a, "a", "");
    let ip_b = add(&chain, &b, "b", "");

    // nflog works from any namespace (the kernel log drops non-initial ones).
    let pcap = node.state_dir().join("denied.pcap");
    let errlog = node.state_dir().join("tcpdump.err");
    let mut capture = node
        .command("tcpdump")
        .args(["-i", "nflog:7", "-c", "1", "-U", "-w"])
        .arg(&pcap)
        .stderr(std::fs::File::create(&errlog).unwrap())
        .spawn()
        .unwrap();
    let listening = netsvc_tests::poll_until(T, || {
        std::fs::read_to_string(&errlog)
            .ok()
            .filter(|s| s.contains("listening"))
            .map(drop)
    });
    assert!(listening.is_some(), "tcpdump did not start");
    let logged = netsvc_tests::poll_until(T, || {
        let _ = a.tcp_echo((ip_b, 80).into(), "x", Duration::from_millis(200));
        std::fs::read(&pcap)
            .ok()
            .filter(|b| b.windows(9).any(|w| w == b"netsvc-fw"))
    });
    let _ = capture.kill();
    let _ = capture.wait();
    let bytes = logged.expect("a denied packet reached nflog group 7");
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.contains("netsvc-fw fwlog b-from-nobody ingress denied"),
        "prefix names network and policy"
    );
}

#[test]
fn first_renders_of_networks_racing_share_one_base_chain() {
    let node = TestNode::new().unwrap();
    let nets: Vec<(Container, Value)> = (0..4)
        .map(|i| {
            let fw = firewall(json!([]));
            (
                node.container("c").unwrap(),
                node.bridge_conflist(&format!("race{i}"), "1.0.0", &format!("10.248.{i}.0/24"), vec![fw]),
            )
        })
        .collect();
    std::thread::scope(|s| {
        for (c, conf) in &nets {
            let node = &node;
            s.spawn(move || {
                node.chain(conf)
                    .unwrap()
                    .add_with(c, "eth0", &args("c", ""))
                    .expect("ADD")
            });
        }
    });
    let listing = node
        .exec("nft", ["list", "chain", "inet", "netsvc_firewall", "forward"])
        .unwrap();
    assert_eq!(listing.matches("replies and related").count(), 1, "{listing}");
    assert_eq!(
        listing.matches("jump ").count(),
        4 * 4,
        "four jumps per network: {listing}"
    );
}

/// O_ACCMODE: the bits of a descriptor's flags that say read, write or both.
const ACCESS_MODE: i32 = 0o3;

/// The children this process adopted (it is their subreaper) that have
/// exited, waited for until none is left or `within` passes: (pid, code).
fn reap_orphans(within: Duration) -> Vec<(i32, i32)> {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let deadline = std::time::Instant::now() + within;
    let mut reaped = Vec::new();
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => reaped.push((pid.as_raw(), code)),
            Ok(WaitStatus::Signaled(pid, sig, _)) => reaped.push((pid.as_raw(), 128 + sig as i32)),
            Ok(_) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(_) => panic!("an orphan still runs after {within:?}"),
            Err(_) => return reaped, // ECHILD: no child left
        }
    }
}

/// A DEL's nf_tables socket is released after the plugin exited, by a child
/// that holds nothing else (not the runtime's stdout, not a lock) and exits
/// by itself: the plugin's one orphan, reaped here.
#[test]
fn a_del_leaves_its_socket_to_a_child_that_exits_by_itself() {
    nix::sys::prctl::set_child_subreaper(true).expect("subreaper");
    let node = TestNode::new().unwrap();
    let (a, b) = (node.container("a").unwrap(), node.container("b").unwrap());
    let fw = firewall(json!([{"name": "web", "select": {"names": ["b"]}, "ingress": [{"from": [{"names": ["a"]}]}]}]));
    let chain = node
        .chain(&node.bridge_conflist("fwhand", "1.0.0", "10.252.0.0/24", vec![fw]))
        .unwrap();
    add(&chain, &b, "b", "");
    let ip = add(&chain, &a, "a", "");
    reap_orphans(Duration::from_secs(5));

    chain.del(&a, "eth0").unwrap();
    let me = std::process::id().to_string();
    let adopted: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1)) == Some(me.as_str()))
        })
        .collect();
    for pid in &adopted {
        // Caught before it left: sockets, and the read end of the pipe that
        // tells it its plugin is gone (the runtime's stdout is a write end).
        for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let target = std::fs::read_link(fd.path())
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let info = format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy());
            let flags = std::fs::read_to_string(info).unwrap_or_default();
            let read_only = flags
                .lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .and_then(|f| i32::from_str_radix(f.trim(), 8).ok())
                .is_some_and(|f| f & ACCESS_MODE == 0);
            assert!(
                target.starts_with("socket:") || (target.starts_with("pipe:") && read_only),
                "the child holds {target}"
            );
        }
    }
    let reaped = reap_orphans(Duration::from_secs(5));
    assert_eq!(reaped.len(), 1, "one child per plugin that used nf_tables: {reaped:?}");
    assert_eq!(reaped[0].1, 0, "it exits by itself: {reaped:?}");
    let sets = node.exec("nft", ["list", "table", "inet", "netsvc_firewall"]).unwrap();
    assert!(!sets.contains(&ip.to_string()), "the DEL was done before: {sets}");
}
