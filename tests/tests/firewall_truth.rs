//! netsvc-firewall truth tables, in the style of the Kubernetes network-policy
//! e2e suite and Cyclonus: pods listening on every probed port, a sequence of
//! policy steps (each applied with `netsvc apply` to the running network),
//! and after every step a probe of every ordered pod pair on every port with
//! real connects, compared against an oracle written here from each step's
//! intent (never the firewall's own model). `netsvc explain` is held to the
//! observed table, and two networks are shown not to interfere.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use netsvc_tests::chain::{self, CallArgs, Chain, container_ip};
use netsvc_tests::matrix::{Listeners, Matrix, Port, Proto, Target, assert_matrix, probe_all};
use netsvc_tests::{Container, TestNode, output_with_timeout};
use serde_json::{Value, json};

const PORTS: [Port; 3] = [Port::tcp(80), Port::tcp(81), Port::udp(53)];
/// Per probe attempt; a blocked probe costs two attempts (see matrix::probe_all).
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Bound on one `netsvc` CLI run.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// The truth-table pods: endpoint name (`NETSVC_NAME`) and `tier` label.
const PODS: [(&str, &str); 6] = [
    ("web1", "web"),
    ("web2", "web"),
    ("api1", "api"),
    ("api2", "api"),
    ("db1", "db"),
    ("ops1", "ops"),
];

fn tier(pod: &str) -> &'static str {
    PODS.iter()
        .find(|(n, _)| *n == pod)
        .map(|(_, t)| *t)
        .unwrap_or_else(|| panic!("unknown pod {pod}"))
}

fn netsvc() -> PathBuf {
    chain::plugin_dir().join("netsvc")
}

fn tcp(port: u16) -> Value {
    json!({"protocol": "tcp", "port": port})
}

/// One network on the node: its conflist file (bridge + host-local + the
/// firewall) and the chain that attaches containers to it.
struct Net<'a> {
    node: &'a TestNode,
    name: String,
    subnet: String,
    path: PathBuf,
    chain: Chain<'a>,
}

impl<'a> Net<'a> {
    /// Writes the conflist with firewall keys `fw` and binds a chain to it.
    fn new(node: &'a TestNode, name: &str, subnet: &str, fw: Value) -> Net<'a> {
        let path = node.state_dir().join(format!("{name}.conflist"));
        let conflist = Self::conflist(node, name, subnet, fw);
        std::fs::write(&path, serde_json::to_vec_pretty(&conflist).unwrap()).unwrap();
        let chain = node.chain(&conflist).unwrap();
        Net {
            node,
            name: name.into(),
            subnet: subnet.into(),
            path,
            chain,
        }
    }

    fn conflist(node: &TestNode, name: &str, subnet: &str, fw: Value) -> Value {
        let mut fw = fw;
        fw["type"] = json!("netsvc-firewall");
        node.bridge_conflist(name, "1.0.0", subnet, vec![fw])
    }

    /// ADDs `c` as endpoint `name` with `labels` (`k:v,...`); its address on `ifname`.
    fn attach(&self, c: &Container, ifname: &str, name: &str, labels: Option<&str>) -> IpAddr {
        let extra = CallArgs::endpoint(name, labels);
        let result = self
            .chain
            .add_with(c, ifname, &extra)
            .unwrap_or_else(|e| panic!("ADD {name} to {}: {e}", self.name));
        container_ip(&result, ifname).unwrap()
    }

    /// Rewrites the conflist with firewall keys `fw` and runs `netsvc apply` on it.
    fn apply(&mut self, fw: Value) {
        let conflist = Self::conflist(self.node, &self.name, &self.subnet, fw);
        std::fs::write(&self.path, serde_json::to_vec_pretty(&conflist).unwrap()).unwrap();
        self.chain = self.node.chain(&conflist).unwrap();
        let mut cmd = self.node.command(netsvc());
        cmd.arg("apply").arg(&self.path);
        let out = output_with_timeout(&mut cmd, CLI_TIMEOUT).unwrap();
        assert!(
            out.status.success(),
            "netsvc apply {}: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        println!("netsvc apply: {}", String::from_utf8_lossy(&out.stdout).trim());
    }

    /// `netsvc explain <net> <src> <dst> <port>/<proto> --format json`'s verdict.
    fn explain(&self, src: &str, dst: &str, port: Port) -> (bool, Value) {
        let proto = match port.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        };
        let mut cmd = self.node.command(netsvc());
        cmd.args(["explain", &self.name, src, dst, &format!("{}/{proto}", port.port)])
            .args(["--format", "json"]);
        let out = output_with_timeout(&mut cmd, CLI_TIMEOUT).unwrap();
        assert!(
            out.status.success(),
            "netsvc explain {src} {dst} {port}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("explain JSON");
        let allowed = v["allowed"]
            .as_bool()
            .unwrap_or_else(|| panic!("explain has no `allowed`: {v}"));
        (allowed, v)
    }
}

fn round(pods: &[(&Container, Target)], step: &str) -> Matrix {
    let start = Instant::now();
    let m = probe_all(pods, &PORTS, PROBE_TIMEOUT);
    println!("probe round {step:?}: {:?}", start.elapsed());
    m
}

/// Asks `netsvc explain` about every probe of `observed` (each pod given to
/// the CLI as `endpoint(pod)`: a name or an IP) and fails listing every
/// disagreement.
fn assert_explain_agrees(net: &Net<'_>, step: &str, observed: &Matrix, endpoint: impl Fn(&str) -> String) {
    let start = Instant::now();
    let mut wrong = Vec::new();
    let mut calls = 0;
    for from in observed.pods() {
        for to in observed.pods().iter().filter(|t| *t != from) {
            for &port in observed.ports() {
                let seen = observed.get(from, to, port).unwrap();
                let (said, v) = net.explain(&endpoint(from), &endpoint(to), port);
                calls += 1;
                if said != seen {
                    wrong.push(format!(
                        "  {from} -> {to} {port}: observed {}, explain says {}: {}",
                        if seen { "reachable" } else { "blocked" },
                        if said { "allowed" } else { "denied" },
                        v["steps"]
                    ));
                }
            }
        }
    }
    println!("explain x{calls} at {step:?}: {:?}", start.elapsed());
    assert!(
        wrong.is_empty(),
        "netsvc explain disagrees with the traffic at step {step:?} on {} of {calls} probes:\n{}\nobserved:\n{observed}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// An oracle: whether `from` reaches `to` on `port`.
type Oracle = Box<dyn Fn(&str, &str, Port) -> bool>;

/// A policy step: the firewall keys, and the oracle deciding each probe.
struct Step {
    name: &'static str,
    fw: Value,
    allowed: Oracle,
}

fn step(name: &'static str, fw: Value, allowed: impl Fn(&str, &str, Port) -> bool + 'static) -> Step {
    Step {
        name,
        fw,
        allowed: Box::new(allowed),
    }
}

/// Steps 8 and 9's policies: both directions isolated for some tiers, defaults open.
fn both_directions(with_api_out: bool) -> Value {
    let mut policies = vec![
        json!({"name": "web-out", "select": {"labels": {"tier": "web"}},
               "egress": [{"to": [{"labels": {"tier": "api"}}]}]}),
        json!({"name": "api-in", "select": {"labels": {"tier": "api"}},
               "ingress": [{"from": [{"labels": {"tier": "web"}}], "ports": [tcp(80), tcp(81)]}]}),
        json!({"name": "db-in", "select": {"labels": {"tier": "db"}},
               "ingress": [{"from": [{"labels": {"tier": "api"}}]},
                           {"from": [{"names": ["ops1"]}], "ports": [{"protocol": "udp", "port": 53}]}]}),
    ];
    if with_api_out {
        policies.insert(
            2,
            json!({"name": "api-out", "select": {"labels": {"tier": "api"}},
                   "egress": [{"to": [{"labels": {"tier": "db"}}], "ports": [tcp(80)]}]}),
        );
    }
    json!({"policies": policies})
}

/// The oracle of [`both_directions`]: web may only send to api, api (with
/// `api-out`) only to db on tcp/80; api takes tcp from web, db takes api and
/// ops1's udp/53.
fn both_directions_allowed(with_api_out: bool) -> impl Fn(&str, &str, Port) -> bool {
    move |from, to, port| {
        let egress = match tier(from) {
            "web" => tier(to) == "api",
            "api" if with_api_out => tier(to) == "db" && port == Port::tcp(80),
            _ => true,
        };
        let ingress = match tier(to) {
            "api" => tier(from) == "web" && port.proto == Proto::Tcp,
            "db" => tier(from) == "api" || (from == "ops1" && port == Port::udp(53)),
            _ => true,
        };
        egress && ingress
    }
}

/// The policy sequence; `subnet` is the network's, `ip` gives a pod's address.
fn steps(subnet: &str, ip: impl Fn(&str) -> IpAddr) -> Vec<Step> {
    let udp53 = Port::udp(53);
    vec![
        step("0: no policies, all open", json!({}), |_, _, _| true),
        step(
            "1: defaultIngress deny",
            json!({"defaultIngress": "deny"}),
            |_, _, _| false,
        ),
        step(
            "2: allow by name",
            json!({"defaultIngress": "deny", "policies": [
                {"name": "db1-from-api1", "select": {"names": ["db1"]},
                 "ingress": [{"from": [{"names": ["api1"]}]}]},
                {"name": "web1-from-ops1", "select": {"names": ["web1"]},
                 "ingress": [{"from": [{"names": ["ops1"]}], "ports": [tcp(80)]}]}]}),
            |from, to, port| {
                (to == "db1" && from == "api1") || (to == "web1" && from == "ops1" && port == Port::tcp(80))
            },
        ),
        step(
            "3: allow by label",
            json!({"policies": [
                {"name": "api-from-web", "select": {"labels": {"tier": "api"}},
                 "ingress": [{"from": [{"labels": {"tier": "web"}}], "ports": [tcp(80), tcp(81)]}]},
                {"name": "db-from-api", "select": {"labels": {"tier": "db"}},
                 "ingress": [{"from": [{"labels": {"tier": "api"}}]}]}]}),
            |from, to, port| match tier(to) {
                "api" => tier(from) == "web" && port.proto == Proto::Tcp,
                "db" => tier(from) == "api",
                _ => true,
            },
        ),
        step(
            "4: allow by cidr with except",
            json!({"policies": [
                {"name": "db-from-subnet", "select": {"labels": {"tier": "db"}},
                 "ingress": [{"from": [{"cidr": subnet, "except": [format!("{}/32", ip("api2"))]}]}]},
                {"name": "web-dns-from-subnet", "select": {"labels": {"tier": "web"}},
                 "ingress": [{"from": [{"cidr": subnet,
                                        "except": [format!("{}/32", ip("api2")), format!("{}/32", ip("ops1"))]}],
                              "ports": [{"protocol": "udp", "port": 53}]}]}]}),
            move |from, to, port| match tier(to) {
                "db" => from != "api2",
                "web" => from != "api2" && from != "ops1" && port == udp53,
                _ => true,
            },
        ),
        step(
            "5: allow a port range",
            json!({"defaultIngress": "deny", "policies": [
                {"name": "tcp-81-90", "select": {},
                 "ingress": [{"ports": [{"protocol": "tcp", "port": 81, "endPort": 90}]}]},
                {"name": "db-dns-range", "select": {"labels": {"tier": "db"}},
                 "ingress": [{"from": [{"labels": {"tier": "api"}}],
                              "ports": [{"protocol": "udp", "port": 50, "endPort": 53}]}]}]}),
            move |from, to, port| port == Port::tcp(81) || (tier(to) == "db" && tier(from) == "api" && port == udp53),
        ),
        step(
            "6: egress deny",
            json!({"policies": [
                {"name": "ops1-no-egress", "select": {"names": ["ops1"]}, "egress": []},
                {"name": "web-egress", "select": {"labels": {"tier": "web"}},
                 "egress": [{"to": [{"labels": {"tier": "api"}}], "ports": [tcp(80)]},
                            {"to": [{"names": ["db1"]}], "ports": [{"protocol": "udp", "port": 53}]}]}]}),
            move |from, to, port| match tier(from) {
                "ops" => false,
                "web" => (tier(to) == "api" && port == Port::tcp(80)) || (to == "db1" && port == udp53),
                _ => true,
            },
        ),
        step(
            "7: defaultEgress deny plus allows",
            json!({"defaultEgress": "deny", "policies": [
                {"name": "dns-out", "select": {}, "egress": [{"ports": [{"protocol": "udp", "port": 53}]}]},
                {"name": "ops1-out", "select": {"names": ["ops1"]}, "egress": [{}]}]}),
            move |from, _, port| from == "ops1" || port == udp53,
        ),
        step(
            "8: ingress and egress combined",
            both_directions(true),
            both_directions_allowed(true),
        ),
        step(
            "9: policy api-out removed",
            both_directions(false),
            both_directions_allowed(false),
        ),
        step("10: every policy removed, all open again", json!({}), |_, _, _| true),
    ]
}

/// The node's conntrack keeps a UDP flow ~30 s after its last packet, and a
/// later probe may reuse a source port: it would then ride an entry a
/// previous step allowed ("replies always pass") instead of being decided by
/// the current policy. Short UDP timeouts on the node keep the steps apart.
fn short_udp_conntrack(node: &TestNode) {
    for key in [
        "net.netfilter.nf_conntrack_udp_timeout",
        "net.netfilter.nf_conntrack_udp_timeout_stream",
    ] {
        node.set_sysctl(key, "1").unwrap();
    }
}

/// Truth table over eleven policy steps on one bridge network, each applied to
/// the running network with `netsvc apply`; `netsvc explain` is asked about
/// every probe of every step that has both allowed and denied cells.
#[test]
fn policy_steps_match_the_truth_table() {
    const SUBNET: &str = "10.241.0.0/24";
    let node = TestNode::new().unwrap();
    let containers: Vec<Container> = PODS.iter().map(|(n, _)| node.container(n).unwrap()).collect();
    let plan = steps(SUBNET, |_| IpAddr::from([0, 0, 0, 0]));
    let mut net = Net::new(&node, "fwtruth", SUBNET, plan[0].fw.clone());
    let pods: Vec<(&Container, Target)> = containers
        .iter()
        .zip(PODS)
        .map(|(c, (name, tier))| {
            let ip = net.attach(c, "eth0", name, Some(&format!("tier:{tier}")));
            (c, Target::new(name, ip))
        })
        .collect();
    short_udp_conntrack(&node);
    let _listeners = Listeners::start(&pods, &PORTS).unwrap();
    let ip_of = |name: &str| pods.iter().find(|(_, t)| t.name == name).unwrap().1.ip;
    let names: Vec<&str> = PODS.iter().map(|(n, _)| *n).collect();

    for (i, step) in steps(SUBNET, ip_of).into_iter().enumerate() {
        // Step 0 is the config the endpoints were added with.
        if i > 0 {
            net.apply(step.fw.clone());
        }
        let observed = round(&pods, step.name);
        let expected = Matrix::expect(&names, &PORTS, &step.allowed);
        assert_matrix(step.name, &observed, &expected);
        let cells: Vec<bool> = names
            .iter()
            .flat_map(|f| names.iter().map(move |t| (*f, *t)))
            .filter(|(f, t)| f != t)
            .flat_map(|(f, t)| PORTS.map(|p| observed.get(f, t, p).unwrap()))
            .collect();
        if cells.contains(&true) && cells.contains(&false) {
            assert_explain_agrees(&net, step.name, &observed, str::to_string);
        }
        if step.name.starts_with("2:") {
            // A rule without ports allows every protocol, ICMP included; one with ports does not.
            let pod = |name: &str| pods.iter().find(|(_, t)| t.name == name).unwrap().0;
            let t = Duration::from_secs(3);
            pod("api1")
                .ping_check(ip_of("db1"), 1, t)
                .expect("db1-from-api1 has no ports: api1 pings db1");
            let t = Duration::from_secs(1);
            assert!(!pod("api2").ping(ip_of("db1"), 1, t), "api2 pings db1");
            assert!(
                !pod("ops1").ping(ip_of("web1"), 1, t),
                "web1-from-ops1 allows tcp/80 only"
            );
        }
    }
}

/// Two networks with their own policies, and a container on both.
#[test]
fn two_networks_do_not_interfere() {
    const SUBNET_A: &str = "10.245.0.0/24";
    const SUBNET_B: &str = "10.246.0.0/24";
    let node = TestNode::new().unwrap();
    // The same endpoint names in both networks, closed oppositely: a policy
    // selects within its own network only.
    let fw_a = json!({"policies": [
        {"name": "m-web", "select": {"names": ["m"]}, "ingress": [{"ports": [tcp(80)]}]},
        {"name": "y-closed", "select": {"names": ["y"]}, "ingress": []}]});
    let fw_b = json!({"policies": [
        {"name": "m-alt", "select": {"names": ["m"]}, "ingress": [{"ports": [tcp(81)]}]},
        {"name": "x-closed", "select": {"names": ["x"]}, "ingress": []}]});
    let mut net_a = Net::new(&node, "fwnet-a", SUBNET_A, fw_a.clone());
    let mut net_b = Net::new(&node, "fwnet-b", SUBNET_B, fw_b.clone());
    let [ax, ay, bx, by, m] = ["a-x", "a-y", "b-x", "b-y", "m"].map(|n| node.container(n).unwrap());
    let ip_ax = net_a.attach(&ax, "eth0", "x", None);
    let ip_ay = net_a.attach(&ay, "eth0", "y", None);
    let ip_bx = net_b.attach(&bx, "eth0", "x", None);
    let ip_by = net_b.attach(&by, "eth0", "y", None);
    let m_a = net_a.attach(&m, "eth0", "m", None);
    // One ADD per network: m is on both, as eth0 and eth1.
    let m_b = net_b.attach(&m, "eth1", "m", None);
    short_udp_conntrack(&node);

    let all = [
        (&ax, Target::new("a-x", ip_ax)),
        (&ay, Target::new("a-y", ip_ay)),
        (&bx, Target::new("b-x", ip_bx)),
        (&by, Target::new("b-y", ip_by)),
        (&m, Target::new("m", m_a)),
    ];
    let _listeners = Listeners::start(&all, &PORTS).unwrap();
    let on_a = [all[0].clone(), all[1].clone(), (&m, Target::new("m", m_a))];
    let on_b = [all[2].clone(), all[3].clone(), (&m, Target::new("m", m_b))];
    let singles = &all[..4];

    // Per network: m open on tcp/80 in A and on tcp/81 in B; y closed in A, x closed in B.
    let a_rule = |_: &str, to: &str, port: Port| match to {
        "m" => port == Port::tcp(80),
        "a-y" => false,
        _ => true,
    };
    let b_rule = |_: &str, to: &str, port: Port| match to {
        "m" => port == Port::tcp(81),
        "b-x" => false,
        _ => true,
    };
    let a_names = ["a-x", "a-y", "m"];
    let b_names = ["b-x", "b-y", "m"];
    // Endpoint names are per network: `x` and `y` name a different container
    // in each, and `m` resolves to its address in the network asked about.
    let endpoint = |pod: &str| pod.rsplit('-').next().unwrap().to_string();
    let observed = round(&on_a, "net A");
    assert_matrix(
        "net A with m at its net-A address",
        &observed,
        &Matrix::expect(&a_names, &PORTS, a_rule),
    );
    assert_explain_agrees(&net_a, "net A", &observed, endpoint);
    let observed = round(&on_b, "net B");
    assert_matrix(
        "net B with m at its net-B address",
        &observed,
        &Matrix::expect(&b_names, &PORTS, b_rule),
    );
    assert_explain_agrees(&net_b, "net B", &observed, endpoint);
    let within = |from: &str, to: &str, port: Port| match (&from[..1], &to[..1]) {
        ("a", "a") => a_rule(from, to, port),
        ("b", "b") => b_rule(from, to, port),
        _ => false,
    };
    let single_names = ["a-x", "a-y", "b-x", "b-y"];
    let observed = round(singles, "across networks");
    assert_matrix(
        "cross-network denied by default",
        &observed,
        &Matrix::expect(&single_names, &PORTS, within),
    );
    let by_ip = |pod: &str| all.iter().find(|(_, t)| t.name == pod).unwrap().1.ip.to_string();
    assert_explain_agrees(&net_a, "across networks", &observed, by_ip);

    // The node routes between the bridges: A reaches B's gateway, just not B's containers.
    let t = Duration::from_secs(3);
    ax.ping_check("10.246.0.1".parse().unwrap(), 1, t)
        .expect("a-x has a route into net B");
    by.ping_check("10.245.0.1".parse().unwrap(), 1, t)
        .expect("b-y has a route into net A");
    assert!(
        !ax.ping(ip_by, 1, Duration::from_secs(1)),
        "a-x pings b-y across networks"
    );
    assert!(
        !by.ping(ip_ax, 1, Duration::from_secs(1)),
        "b-y pings a-x across networks"
    );

    // Cross-network traffic passes only where both sides' cidr rules allow it:
    // x of A may send tcp/80 into B, y of B accepts tcp/80 from A; within
    // each network the new rules leave everything as it was.
    let mut fw_a2 = fw_a.clone();
    fw_a2["policies"].as_array_mut().unwrap().push(json!(
        {"name": "x-to-b", "select": {"names": ["x"]},
         "egress": [{"to": [{"cidr": SUBNET_B}], "ports": [tcp(80)]}, {}]}));
    let mut fw_b2 = fw_b.clone();
    fw_b2["policies"].as_array_mut().unwrap().push(json!(
        {"name": "y-from-a", "select": {"names": ["y"]},
         "ingress": [{"from": [{"cidr": SUBNET_A}], "ports": [tcp(80)]}, {}]}));
    // One side's cidr rule is not enough, and applying net A leaves net B alone.
    net_a.apply(fw_a2);
    assert_matrix(
        "net B after net A's apply",
        &round(&on_b, "net B after net A's apply"),
        &Matrix::expect(&b_names, &PORTS, b_rule),
    );
    assert_matrix(
        "cross-network with net A's cidr rule only",
        &round(singles, "across networks, net A's cidr rule only"),
        &Matrix::expect(&single_names, &PORTS, within),
    );
    net_b.apply(fw_b2);
    let opened = |from: &str, to: &str, port: Port| {
        within(from, to, port) || (from == "a-x" && to == "b-y" && port == Port::tcp(80))
    };
    let observed = round(singles, "across networks, cidr rules on both sides");
    assert_matrix(
        "cross-network cidr rules on both sides",
        &observed,
        &Matrix::expect(&single_names, &PORTS, opened),
    );
    assert_explain_agrees(&net_a, "across networks, cidr rules on both sides", &observed, by_ip);
    assert!(
        !ax.ping(ip_by, 1, Duration::from_secs(1)),
        "the cidr rules allow tcp/80 only"
    );
    assert_matrix(
        "net A unchanged by the cidr rules",
        &round(&on_a, "net A again"),
        &Matrix::expect(&a_names, &PORTS, a_rule),
    );
}
