//! The load balancer's ADD cost as its backends grow, and connection setup
//! through a VIP as the number of services grows.
//!
//! Run (root; everything happens in throwaway network namespaces that the
//! bench creates and deletes, the host's nftables are not touched):
//!
//! ```text
//! scripts/bench-lb.sh                  # builds the plugin binaries, then runs this
//! # or by hand:
//! cargo build --release -p netsvc-lb --bins
//! cargo bench -p netsvc-tests --bench lb
//! ```
//!
//! `NETSVC_LB_BENCH_SIZES=10,1000` overrides the backend counts of part 1
//! (default 10,1000,10000); `NETSVC_LB_BENCH_CONNECTIONS=500` the connections
//! per service count of part 2 (default 2000; 0 skips part 2).
//!
//! 1. In-process (`dispatch`, as `netsvc-lb` runs it, spawning `nft`): one
//!    network of 1,000 services (`svc<i>`, VIP 10.96.<i/250>.<i%250+1>, port
//!    80 → 8080/tcp, selecting `app=svc<i>`, algorithm random) holding 10,
//!    1,000 and 10,000 backends spread over the services round-robin; the
//!    ADD of one more backend joining `svc0`. The timing covers the ADD
//!    alone; the matching DEL runs right after it, outside the timing (its
//!    own median is printed too), so every iteration starts from the same N
//!    backends. The network is populated once per size with real ADDs, on a
//!    real bridge (ADD turns its bridge netfilter on).
//! 2. Whole chain (reference bridge + host-local, then the `netsvc-lb`
//!    binary): a client and one backend container on a bridge, an echo
//!    server in the backend, and the load balancer configured with 10, then
//!    10,000 services, service 0 selecting the backend and every other one a
//!    label nobody has. TCP connect + echo latency from the client to service
//!    0's VIP, both service counts measured in alternating rounds so drift
//!    hits both alike; medians and their ratio are printed.
//!
//! What dominates (nft 1.0.6, kernel 6.18, 2 cores; strace -T, perf, and
//! the fast-path scripts replayed with `nft -f` against a synthetic table):
//! ADD is flat in the number of backends but costs ~50-100 ms, not 10 ms,
//! and it grows with the number of services, which every call handles in
//! full. Of one ADD with 1,000 services: ~24 ms in `nft` (replayed: the
//! same script ~24 ms against 10 services, ~27-33 ms against 1,000 with
//! 10-10,000 backends; the cache of a native script with `flush chain` and
//! `add rule` holds every chain and map of the table; and flushing the port
//! chain, whose rule names the backend count in `numgen random mod n`,
//! deletes a rule, so nft's close() waits for nf_tables' destroy work and its
//! RCU grace period, ~15 ms: the elements alone take 8-13 ms); 9 fsyncs
//! (~5 ms); the rest, ~40-50 ms, is the plugin's CPU on the 130 KB config:
//! parsed as a `Value` twice and decoded once by `dispatch`, re-serialized
//! and decoded again as `LbConf`, hashed for the digest, and the `settings`
//! record (the whole config again, 150 KB) decoded, re-read by the store's
//! compare-and-swap and rewritten on every ADD and DEL.
//!
//! The in-process part's thread (the main thread: `bridged` looks at
//! `/proc/self/ns/net`) enters the namespace (setns) before anything runs, so
//! the `nft` processes it spawns are inside it; it returns to its own
//! namespace afterwards.

use std::collections::HashMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion};
use netsvc_core::cni::CniArgs;
use netsvc_core::runtime::dispatch;
use netsvc_lb::Lb;
use netsvc_tests::chain::{CallArgs, plugin_dir};
use netsvc_tests::timing::{as_ms, median, quantile, record};
use netsvc_tests::{Container, EchoServer, Netns, TestNode};
use nix::sched::{CloneFlags, setns};
use serde_json::{Value, json};

const NETWORK: &str = "lbbench";
const BRIDGE: &str = "br-lbbench";
/// Part 1: the services of the network.
const SERVICES: usize = 1_000;
const DEFAULT_SIZES: [usize; 3] = [10, 1_000, 10_000];
/// Part 2: the service counts compared, and the connections to each.
const CONNECT_SERVICES: [usize; 2] = [10, 10_000];
const DEFAULT_CONNECTIONS: usize = 2_000;
/// Part 2 alternates between the service counts in this many rounds.
const ROUNDS: usize = 10;
const PORT: u16 = 80;
const TARGET_PORT: u16 = 8080;
const T: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------- shared

/// Service `i`'s VIP: 10.96.<i/250>.<i%250+1>.
fn vip(i: usize) -> String {
    assert!(i < 250 * 256, "the VIPs fit in 10.96.0.0/16");
    format!("10.96.{}.{}", i / 250, i % 250 + 1)
}

/// `n` services `svc<i>` on port 80 → 8080/tcp, service `i` selecting `app=<app(i)>`.
fn services(n: usize, app: impl Fn(usize) -> String) -> Value {
    (0..n)
        .map(|i| {
            json!({"name": format!("svc{i}"), "vip": vip(i),
                   "ports": [{"port": PORT, "targetPort": TARGET_PORT, "protocol": "tcp"}],
                   "select": {"labels": {"app": app(i)}}})
        })
        .collect()
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

/// A comma-separated list of counts from `var`, or `default`.
fn counts(var: &str, default: &[usize]) -> Vec<usize> {
    match std::env::var(var) {
        Ok(s) => s
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{var}: comma-separated counts, not {s:?}"))
            })
            .collect(),
        Err(_) => default.to_vec(),
    }
}

#[derive(Default)]
struct Report {
    lines: Vec<String>,
    /// For the benchmark report: the ADD curve and the connection times.
    scale: Vec<Value>,
    connect: Vec<Value>,
}

impl Report {
    fn line(&mut self, l: String) {
        self.lines.push(l);
    }
}

// ---------------------------------------------------------------- part 1

/// This thread inside a namespace until dropped, then back in its own.
struct Entered {
    home: File,
}

impl Entered {
    fn new(ns: &Netns) -> Entered {
        let home = File::open("/proc/thread-self/ns/net").expect("open our own netns");
        setns(File::open(ns.path()).expect("open netns"), CloneFlags::CLONE_NEWNET).expect("setns");
        Entered { home }
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        setns(&self.home, CloneFlags::CLONE_NEWNET).expect("setns back");
    }
}

/// The address of backend `i` in 10.88.0.0/16 (gateway .0.1, first backend .0.10).
fn address(i: usize) -> String {
    let host = i + 10;
    assert!(host < 65_000, "the /16 holds the backends");
    format!("10.88.{}.{}/16", host / 256, host % 256)
}

/// The bench's own backend, outside the populated range.
const BENCH_IP: &str = "10.88.255.200/16";

/// The network's load balancer config; `prevResult` is set per call.
fn lb_conf(state_dir: &Path) -> Value {
    json!({"cniVersion": "1.0.0", "name": NETWORK, "type": "netsvc-lb", "stateDir": state_dir,
           "services": services(SERVICES, |i| format!("svc{i}"))})
}

/// A 1.0.0 result of bridge + host-local: the bridge on the node, the
/// container's eth0 in its sandbox, one address in the /16.
fn prev_result(ip: &str, netns: &str) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": BRIDGE, "mac": "aa:bb:cc:00:00:01"},
                       {"name": "eth0", "mac": "aa:bb:cc:00:00:03", "sandbox": netns}],
        "ips": [{"address": ip, "gateway": "10.88.0.1", "interface": 1}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.88.0.1"}],
        "dns": {}
    })
}

/// One plugin call, built before it is timed.
struct Request {
    env: HashMap<String, String>,
    stdin: Vec<u8>,
    what: String,
}

impl Request {
    /// `command` for endpoint `id` (also its name) with `app=<app>` at `ip`.
    fn new(conf: &mut Value, netns: &str, command: &str, id: &str, app: &str, ip: &str) -> Request {
        conf["prevResult"] = prev_result(ip, netns);
        let args = CallArgs::endpoint(id, Some(&format!("app:{app}"))).args;
        let env = [
            ("CNI_COMMAND", command.to_string()),
            ("CNI_CONTAINERID", id.to_string()),
            ("CNI_NETNS", netns.to_string()),
            ("CNI_IFNAME", "eth0".to_string()),
            ("CNI_ARGS", CniArgs(args).to_env_string()),
            ("CNI_PATH", "/usr/lib/cni".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Request {
            env,
            stdin: serde_json::to_vec(conf).expect("json"),
            what: format!("{command} {id}"),
        }
    }

    /// Runs in-process through `dispatch`; panics with the plugin's answer when it fails.
    fn call(&self) {
        let out = dispatch(&Lb, |k| self.env.get(k).cloned(), &self.stdin);
        assert_eq!(
            out.exit_code,
            0,
            "{}: {}",
            self.what,
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// The in-process world: a node namespace with the bridge, the config.
struct Network {
    node: TestNode,
    conf: Value,
    netns: String,
}

impl Network {
    fn new() -> Network {
        let node = TestNode::new().expect("node namespace (root needed)");
        node.ip(["link", "add", BRIDGE, "type", "bridge"]).expect("bridge");
        node.ip(["link", "set", BRIDGE, "up"]).expect("bridge up");
        let conf = lb_conf(node.state_dir());
        let netns = node.path().display().to_string();
        Network { node, conf, netns }
    }

    /// The ADD of backend `i`, joining service `i % SERVICES`.
    fn backend_add(&mut self, i: usize) -> Request {
        let app = format!("svc{}", i % SERVICES);
        Request::new(
            &mut self.conf,
            &self.netns,
            "ADD",
            &format!("pop{i:05}"),
            &app,
            &address(i),
        )
    }

    /// The bench's backend joining `svc0`.
    fn bench(&mut self, command: &str) -> Request {
        Request::new(&mut self.conf, &self.netns, command, "bench", "svc0", BENCH_IP)
    }

    /// ADDs backends `from..to`.
    fn populate(&mut self, from: usize, to: usize, report: &mut Report) {
        let start = Instant::now();
        for i in from..to {
            self.backend_add(i).call();
        }
        let took = start.elapsed();
        report.line(format!(
            "populate {from} -> {to} backends: {:.1} s ({} per ADD)",
            took.as_secs_f64(),
            ms(took / (to - from).max(1) as u32)
        ));
    }
}

/// Times `add` (criterion's figure) and `del` right after it (untimed), so
/// each iteration starts from the same state; every sample of both.
fn time_add(group: &mut BenchmarkGroup<'_, WallTime>, size: usize, add: &Request, del: &Request) -> [Vec<Duration>; 2] {
    let (mut adds, mut dels) = (Vec::new(), Vec::new());
    group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                add.call();
                let a = t.elapsed();
                let t = Instant::now();
                del.call();
                dels.push(t.elapsed());
                adds.push(a);
                total += a;
            }
            total
        })
    });
    [adds, dels]
}

/// Part 1: one backend's ADD (DEL after it, untimed) as the backends grow.
fn add_latency(c: &mut Criterion, report: &mut Report) {
    let mut sizes = counts("NETSVC_LB_BENCH_SIZES", &DEFAULT_SIZES);
    sizes.sort_unstable();
    sizes.dedup();
    let mut net = Network::new();
    // Everything below, and every process spawned from this thread, runs in the node.
    let _inside = Entered::new(net.node.ns());
    let (add, del) = (net.bench("ADD"), net.bench("DEL"));
    let mut group = c.benchmark_group("lb_add");
    let mut medians = Vec::new();
    let mut existing = 0;
    for size in sizes {
        net.populate(existing, size, report);
        existing = size;
        let [mut adds, mut dels] = time_add(&mut group, size, &add, &del);
        if adds.is_empty() {
            continue; // filtered out on the command line
        }
        let (a, d) = (median(&mut adds), median(&mut dels));
        report.line(format!(
            "in-process ADD with {size} backends in {SERVICES} services: median {} (n={}); DEL median {} (untimed)",
            ms(a),
            adds.len(),
            ms(d)
        ));
        medians.push((size, a));
        report
            .scale
            .push(json!({"backends": size, "add_median_ms": as_ms(a), "del_median_ms": as_ms(d)}));
    }
    group.finish();
    if let (Some((small, a)), Some((large, b))) = (medians.first(), medians.last()) {
        report.line(format!(
            "ADD median ratio {large}/{small} backends: {:.2} (target <= 1.5; median target <= 10 ms)",
            ratio(*b, *a)
        ));
    }
}

// ---------------------------------------------------------------- part 2

/// A node whose load balancer has `services` services, a client and a
/// backend (selected by service 0, echo server on the target port) on its bridge.
struct VipNode {
    services: usize,
    // Field order is drop order: the server, the containers, then the node.
    _server: EchoServer,
    client: Container,
    _backend: Container,
    _node: TestNode,
}

impl VipNode {
    fn new(services: usize, report: &mut Report) -> VipNode {
        let node = TestNode::new().expect("node namespace (root needed)");
        let lb = json!({"type": "netsvc-lb", "services": self::services(services, |i| {
            // Rendered without backends, as services whose pods are elsewhere.
            if i == 0 { "backend".into() } else { "nobody".into() }
        })});
        let (client, backend) = {
            let chain = node
                .chain(&node.bridge_conflist("lbconn", "1.0.0", "10.242.0.0/24", vec![lb]))
                .expect("chain");
            let attach = |name: &str| {
                let c = node.container(name).expect("container");
                chain
                    .add_with(&c, "eth0", &CallArgs::endpoint(name, Some(&format!("app:{name}"))))
                    .unwrap_or_else(|e| panic!("ADD {name}: {e}"));
                c
            };
            let start = Instant::now();
            // The first ADD renders every service.
            let client = attach("client");
            report.line(format!(
                "whole-chain first ADD rendering {services} services: {}",
                ms(start.elapsed())
            ));
            (client, attach("backend"))
        };
        let bind = SocketAddr::from(([0, 0, 0, 0], TARGET_PORT));
        let server = EchoServer::start(backend.ns(), bind, "backend").expect("echo server");
        let reply = client.tcp_echo(service0(), "hello", T).expect("connect to svc0's VIP");
        assert_eq!(reply.identity, "backend", "{reply:?}");
        VipNode {
            services,
            _server: server,
            client,
            _backend: backend,
            _node: node,
        }
    }

    /// `n` connections to service 0's VIP, each timed.
    fn connect(&self, n: usize) -> Vec<Duration> {
        self.client
            .tcp_echo_timed(service0(), "bench", n, T)
            .unwrap_or_else(|e| panic!("{} services: {e:#}", self.services))
    }
}

fn service0() -> SocketAddr {
    SocketAddr::new(vip(0).parse().expect("vip"), PORT)
}

/// Part 2: connect+echo latency to a VIP with 10 and with 10,000 services.
fn connect_latency(report: &mut Report) {
    let connections = counts("NETSVC_LB_BENCH_CONNECTIONS", &[DEFAULT_CONNECTIONS])[0];
    if connections == 0 {
        return;
    }
    let lb = plugin_dir().join("netsvc-lb");
    assert!(
        lb.exists(),
        "{} is missing: cargo build --release -p netsvc-lb --bins (or set NETSVC_PLUGIN_DIR)",
        lb.display()
    );
    let nodes: Vec<VipNode> = CONNECT_SERVICES.iter().map(|&n| VipNode::new(n, report)).collect();
    for node in &nodes {
        node.connect(connections / 10); // warm-up: caches, neighbours, the server's threads
    }
    let per_round = connections.div_ceil(ROUNDS);
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); nodes.len()];
    let mut round_medians: Vec<Vec<Duration>> = vec![Vec::new(); nodes.len()];
    for _ in 0..ROUNDS {
        for (k, node) in nodes.iter().enumerate() {
            let mut s = node.connect(per_round);
            round_medians[k].push(median(&mut s));
            samples[k].extend(s);
        }
    }
    let mut medians = Vec::new();
    for ((node, s), rounds) in nodes.iter().zip(&mut samples).zip(&mut round_medians) {
        let m = median(s);
        rounds.sort();
        report.line(format!(
            "connect+echo to a VIP with {} services: median {} (n={}, p90 {}; round medians {}..{})",
            node.services,
            us(m),
            s.len(),
            us(quantile(s, 0.9)),
            us(rounds[0]),
            us(rounds[rounds.len() - 1])
        ));
        medians.push((node.services, m));
        report
            .connect
            .push(json!({"services": node.services, "median_us": as_ms(m) * 1e3,
                                   "p90_us": as_ms(quantile(s, 0.9)) * 1e3}));
    }
    if let [(small, a), (large, b)] = medians[..] {
        report.line(format!(
            "connect+echo median ratio {large}/{small} services: {:.2} (target: equal within noise)",
            ratio(b, a)
        ));
    }
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let mut report = Report::default();
    add_latency(&mut c, &mut report);
    connect_latency(&mut report);
    c.final_summary();

    record("lb", &json!({"scale": report.scale, "connect": report.connect}));
    println!("\n== netsvc-lb bench summary ==");
    for l in &report.lines {
        println!("{l}");
    }
}
