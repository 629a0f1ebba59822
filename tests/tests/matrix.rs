//! The reachability-matrix prober on a real bridge network: everything open
//! first, then one direction of one port dropped by an nft rule on the node.

use std::time::{Duration, Instant};

use netsvc_tests::chain::container_ip;
use netsvc_tests::matrix::{Listeners, Matrix, Port, Target, assert_matrix, probe_all};
use netsvc_tests::{Container, TestNode};

const PODS: [&str; 4] = ["a", "b", "c", "d"];
const PORTS: [Port; 3] = [Port::tcp(80), Port::tcp(81), Port::udp(53)];
/// Per attempt; a blocked probe takes two attempts (see matrix::probe_all).
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

fn timed_round(pods: &[(&Container, Target)], step: &str) -> Matrix {
    let start = Instant::now();
    let m = probe_all(pods, &PORTS, PROBE_TIMEOUT);
    println!(
        "{}x{} probe round ({step}): {:?}",
        pods.len(),
        PORTS.len(),
        start.elapsed()
    );
    m
}

#[test]
fn matrix_detects_one_blocked_direction() {
    let node = TestNode::new().unwrap();
    let containers: Vec<Container> = PODS.iter().map(|n| node.container(n).unwrap()).collect();
    let chain = node
        .chain(&node.bridge_conflist("mtx", "1.0.0", "10.236.0.0/24", vec![]))
        .unwrap();
    let pods: Vec<(&Container, Target)> = containers
        .iter()
        .map(|c| {
            let result = chain.add(c, "eth0").unwrap();
            (c, Target::new(c.label(), container_ip(&result, "eth0").unwrap()))
        })
        .collect();
    let _listeners = Listeners::start(&pods, &PORTS).unwrap();

    let open = Matrix::expect(&PODS, &PORTS, |_, _, _| true);
    assert_matrix("no firewall", &timed_round(&pods, "all open"), &open);

    // Same-bridge traffic reaches the inet forward hook only through
    // br_netfilter, switched on in the node namespace alone.
    node.set_sysctl("net.bridge.bridge-nf-call-iptables", "1").unwrap();
    let (a, c) = (pods[0].1.ip, pods[2].1.ip);
    let rules = format!(
        "add table inet mtx; \
         add chain inet mtx filter {{ type filter hook forward priority 0; policy accept; }}; \
         add rule inet mtx filter ip saddr {a} ip daddr {c} tcp dport 81 drop"
    );
    node.exec("nft", [rules]).unwrap();

    let a_to_c_81 = |from: &str, to: &str, port: Port| from == "a" && to == "c" && port == Port::tcp(81);
    let one_closed = Matrix::expect(&PODS, &PORTS, |f, t, p| !a_to_c_81(f, t, p));
    let observed = timed_round(&pods, "a -> c tcp/81 dropped");
    assert_matrix("a -> c tcp/81 dropped", &observed, &one_closed);
    assert_eq!(observed.get("c", "a", Port::tcp(81)), Some(true), "only one direction");

    // The all-open expectation is now wrong: the report shows both tables
    // and names the one probe.
    let report = observed.diff(&open).expect("a wrong expectation is reported");
    println!("{report}");
    assert!(report.starts_with("1 of 36 probes differ"), "{report}");
    assert!(
        report.contains("\nexpected:\n") && report.contains("\nobserved:\n"),
        "{report}"
    );
    assert_eq!(report.matches("from\\to").count(), 2, "both tables: {report}");
    assert_eq!(report.matches(".!").count(), 1, "{report}");
    assert_eq!(report.matches("X!").count(), 1, "{report}");
    assert!(
        report.contains("a -> c tcp/81: expected reachable, observed blocked"),
        "{report}"
    );
}
