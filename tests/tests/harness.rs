//! Proves the harness itself: namespaces, probes, observers and cleanup.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Duration;

use netsvc_tests::{Container, EchoServer, Netns, TestNode, poll_until};

const T: Duration = Duration::from_secs(5);

/// Two containers joined by a veth pair made with `ip`: a=10.99.0.1, b=10.99.0.2.
fn pair(node: &TestNode) -> (Container, Container) {
    let a = node.container("a").unwrap();
    let b = node.container("b").unwrap();
    a.veth("eth0", &b, "eth0").unwrap();
    a.add_addr("eth0", "10.99.0.1/24").unwrap();
    b.add_addr("eth0", "10.99.0.2/24").unwrap();
    a.add_addr("eth0", "fd99::1/64").unwrap();
    b.add_addr("eth0", "fd99::2/64").unwrap();
    (a, b)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn containers_ping_each_other() {
    let node = TestNode::new().unwrap();
    let (a, b) = pair(&node);
    a.ping_check(ip("10.99.0.2"), 2, T).unwrap();
    b.ping_check(ip("10.99.0.1"), 2, T).unwrap();
    a.ping_check(ip("fd99::2"), 1, T).unwrap();
    // Nothing routes from a container to an address nobody has.
    assert!(!a.ping(ip("10.98.0.1"), 1, Duration::from_secs(1)));
}

#[test]
fn tcp_and_udp_echo_report_identity() {
    let node = TestNode::new().unwrap();
    let (a, b) = pair(&node);
    let srv = EchoServer::start(&b, sa("0.0.0.0:0"), "backend-b").unwrap();
    let to = SocketAddr::new(ip("10.99.0.2"), srv.port());
    a.wait_tcp(to, T).unwrap();

    let tcp = a.tcp_echo(to, "hello tcp", T).unwrap();
    assert_eq!(tcp.identity, "backend-b");
    assert_eq!(tcp.echoed, "hello tcp");

    let udp = a.udp_echo(to, "hello udp", T).unwrap();
    assert_eq!(udp.identity, "backend-b");
    assert_eq!(udp.echoed, "hello udp");

    // A port nobody listens on is refused, quickly.
    let closed = SocketAddr::new(ip("10.99.0.2"), srv.port().wrapping_add(1).max(1));
    assert!(a.tcp_echo(closed, "x", T).is_err());
}

#[test]
fn echo_over_ipv6() {
    let node = TestNode::new().unwrap();
    let (a, b) = pair(&node);
    let srv = EchoServer::start(&a, sa("[::]:7000"), "v6").unwrap();
    assert_eq!(srv.port(), 7000);
    let to = sa("[fd99::1]:7000");
    assert_eq!(b.tcp_echo(to, "six", T).unwrap().identity, "v6");
    assert_eq!(b.udp_echo(to, "six", T).unwrap().identity, "v6");
}

#[test]
fn echo_server_is_local_to_its_namespace() {
    let node = TestNode::new().unwrap();
    let srv = EchoServer::start(&node, sa("127.0.0.1:0"), "node").unwrap();
    let here = SocketAddr::new(ip("127.0.0.1"), srv.port());
    assert_eq!(node.tcp_echo(here, "hi", T).unwrap().identity, "node");
    // The same loopback address in another namespace is another host.
    let c = node.container("c").unwrap();
    assert!(c.tcp_echo(here, "hi", Duration::from_secs(1)).is_err());
}

#[test]
fn node_command_runs_in_node_namespace_with_state_dir() {
    let node = TestNode::new().unwrap();
    let ino = std::fs::metadata(node.path()).unwrap().ino();
    let out = node.command("readlink").arg("/proc/self/ns/net").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("net:[{ino}]"));

    let out = node
        .command("sh")
        .args(["-c", "printf %s \"$NETSVC_STATE_DIR\""])
        .output()
        .unwrap();
    assert_eq!(Path::new(&*String::from_utf8_lossy(&out.stdout)), node.state_dir());
    let mode = std::fs::metadata(node.state_dir()).unwrap().mode();
    assert_eq!(mode & 0o777, 0o700);

    // The test process itself stays in the root namespace.
    let root = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
    assert_ne!(root, ino);
}

#[test]
fn observers_parse_links_nft_and_tc() {
    let node = TestNode::new().unwrap();
    let (a, b) = pair(&node);
    let eth0 = a.link("eth0").unwrap();
    assert_eq!(eth0.kind(), Some("veth"));
    assert!(eth0.is_up());
    assert!(eth0.ips().contains(&ip("10.99.0.1")));
    assert!(a.link("lo").unwrap().is_up());

    assert!(b.nft_tables().unwrap().is_empty());
    b.exec("nft", ["add", "table", "inet", "probe"]).unwrap();
    assert_eq!(b.nft_tables().unwrap(), vec![("inet".to_owned(), "probe".to_owned())]);
    // Other namespaces do not see it.
    assert!(a.nft_tables().unwrap().is_empty());

    a.exec(
        "tc",
        [
            "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "1mbit", "burst", "32kb", "latency", "50ms",
        ],
    )
    .unwrap();
    let qdiscs = a.tc_json(&["qdisc", "show", "dev", "eth0"]).unwrap();
    assert!(
        qdiscs.as_array().unwrap().iter().any(|q| q["kind"] == "tbf"),
        "{qdiscs}"
    );
}

#[test]
fn nothing_lands_in_the_root_namespace() {
    let node = TestNode::new().unwrap();
    let (a, b) = pair(&node);
    a.veth("xh0", &b, "xh1").unwrap();
    let root = std::process::Command::new("ip")
        .args(["-j", "link", "show"])
        .output()
        .unwrap();
    let root = String::from_utf8_lossy(&root.stdout);
    assert!(!root.contains("\"xh0\"") && !root.contains("\"xh1\""), "{root}");
}

fn ns_exists(path: &Path) -> bool {
    path.exists()
}

#[test]
fn drop_removes_namespaces_state_and_processes() {
    let node = TestNode::new().unwrap();
    let c = node.container("c").unwrap();
    let paths = [node.path().to_path_buf(), c.netns_path().to_path_buf()];
    let state = node.state_dir().to_path_buf();
    // A detached daemon left behind in the node namespace.
    let mut daemon = node.command("sleep").arg("600").spawn().unwrap();
    assert!(paths.iter().all(|p| ns_exists(p)));

    drop(c);
    drop(node);
    assert!(paths.iter().all(|p| !ns_exists(p)), "{paths:?}");
    assert!(!state.exists());
    let exited = poll_until(T, || daemon.try_wait().unwrap());
    assert!(exited.is_some(), "daemon survived its node");
}

#[test]
fn panicking_test_still_cleans_up() {
    let mut seen: Vec<PathBuf> = Vec::new();
    let result = catch_unwind(AssertUnwindSafe(|| {
        let node = TestNode::new().unwrap();
        let (a, b) = pair(&node);
        seen.extend([node.path(), a.path(), b.path(), node.state_dir()].map(Path::to_path_buf));
        let _srv = EchoServer::start(&b, sa("0.0.0.0:0"), "doomed").unwrap();
        panic!("test failure inside a harness world");
    }));
    assert!(result.is_err());
    assert_eq!(seen.len(), 4);
    for p in &seen {
        assert!(!p.exists(), "{} survived the panic", p.display());
    }
}

#[test]
fn run_executes_in_the_namespace() {
    let c = Netns::create("tx").unwrap();
    let ino = std::fs::metadata(c.path()).unwrap().ino();
    let inside = c
        .run(|| std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino())
        .unwrap();
    assert_eq!(inside, ino);
}

#[test]
fn sysctls_are_per_namespace() {
    let node = TestNode::new().unwrap();
    let host = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    node.set_sysctl("net.ipv4.ip_forward", "1").unwrap();
    assert_eq!(node.sysctl("net.ipv4.ip_forward").unwrap(), "1");
    let c = node.container("c").unwrap();
    assert_eq!(c.sysctl("net.ipv4.ip_forward").unwrap(), "0");
    assert_eq!(std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(), host);
    assert!(node.set_sysctl("kernel.pid_max", "1").is_err());
}
