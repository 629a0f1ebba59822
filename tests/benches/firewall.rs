//! The firewall's ADD cost as its network grows, and its whole-process cost
//! against the reference `firewall` plugin (iptables backend).
//!
//! Run (root; everything happens in a throwaway network namespace that the
//! bench creates and deletes, the host's nftables and iptables are not touched):
//!
//! ```text
//! scripts/bench-firewall.sh            # builds the plugin binaries, then runs this
//! # or by hand:
//! cargo build --release -p netsvc-firewall --bins
//! cargo bench -p netsvc-tests --bench firewall
//! ```
//!
//! `NETSVC_FW_BENCH_SIZES=10,1000` overrides the network sizes (default 10,1000,10000).
//!
//! 1. In-process (`dispatch`, as `netsvc-firewall` runs it, spawning `nft`):
//!    one endpoint's ADD when 10, 1,000 and 10,000 endpoints already exist in
//!    the same network and the same sets (every endpoint is `tier=web`; a
//!    policy isolates `tier=web` and allows ingress from `tier=web`, another
//!    isolates egress, so each address lands in 8 sets). The timing covers the
//!    ADD alone; the matching DEL runs right after it, outside the timing
//!    (its own median is printed too), so every iteration starts from the same
//!    N endpoints. The network is populated once per size with real ADDs.
//! 2. Whole process: ADD+DEL of the real `netsvc-firewall` binary against the
//!    Debian reference `/usr/lib/cni/firewall` (`backend: iptables`), same
//!    prevResult, in the same run; the ratio ours/reference is printed.
//!
//! What dominates (nft 1.0.6, kernel 6.18, measured with strace and
//! /proc/<pid>/stack): ADD is flat in the network size because nft's cache for
//! a JSON `add element` batch holds the table and its sets but fetches no
//! elements of our (non-interval) endpoint sets; its cost is the `nft` process
//! (~4 ms) plus the store's fsyncs (6 per ADD). DEL pays an RCU grace period
//! on top: deleted elements go to nf_tables' destroy list, and nft's close()
//! of its netlink socket runs nft_rcv_nl_event -> __flush_work, which waits
//! for the destroy work's synchronize_rcu (~10-15 ms here). iptables-nft pays
//! the same on rule deletes in the reference plugin's DEL.
//!
//! The bench's main thread enters the namespace (setns) before anything runs,
//! so `nft`, `iptables` and the plugin processes it spawns are all inside it.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use netsvc_core::runtime::dispatch;
use netsvc_firewall::Firewall;
use netsvc_tests::Netns;
use netsvc_tests::chain::{REFERENCE_PLUGIN_DIR, plugin_dir};
use netsvc_tests::timing::{AddDel, as_ms, median, ms, record, run_plugin};
use nix::sched::{CloneFlags, setns};
use serde_json::{Value, json};

const NETWORK: &str = "fwbench";
const BRIDGE: &str = "br-fwbench";
const DEFAULT_SIZES: [usize; 3] = [10, 1_000, 10_000];

/// The address of the `i`-th endpoint in 10.88.0.0/16 (gateway .0.1, first endpoint .0.10).
fn address(i: usize) -> String {
    let host = i + 10;
    assert!(host < 65_000, "the /16 holds the endpoints");
    format!("10.88.{}.{}/16", host / 256, host % 256)
}

/// A realistic 1.0.0 firewall config after bridge + host-local: the bridge on
/// the node, the container's eth0 in its sandbox, one address in the /16.
fn conf(plugin_type: &str, state_dir: &Path, ip: &str, netns: &str) -> Value {
    let prev = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": BRIDGE, "mac": "aa:bb:cc:00:00:01"},
                       {"name": "eth0", "mac": "aa:bb:cc:00:00:03", "sandbox": netns}],
        "ips": [{"address": ip, "gateway": "10.88.0.1", "interface": 1}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.88.0.1"}],
        "dns": {}
    });
    if plugin_type == "firewall" {
        return json!({"cniVersion": "1.0.0", "name": NETWORK, "type": "firewall", "backend": "iptables",
                      "prevResult": prev});
    }
    json!({
        "cniVersion": "1.0.0", "name": NETWORK, "type": plugin_type,
        "stateDir": state_dir,
        "capabilities": {"aliases": true},
        "policies": [
            {"name": "web", "select": {"labels": {"tier": "web"}},
             "ingress": [{"from": [{"labels": {"tier": "web"}}], "ports": [{"protocol": "tcp", "port": 80}]},
                         {"from": [{"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}]}]},
            {"name": "egress", "select": {"labels": {"tier": "web"}},
             "egress": [{"to": [{"labels": {"tier": "web"}}]}, {"to": [{"cidr": "0.0.0.0/0"}]}]}
        ],
        "prevResult": prev
    })
}

fn env(command: &str, id: &str, netns: &str) -> HashMap<String, String> {
    [
        ("CNI_COMMAND", command.to_string()),
        ("CNI_CONTAINERID", id.to_string()),
        ("CNI_NETNS", netns.to_string()),
        ("CNI_IFNAME", "eth0".to_string()),
        (
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAME={id};NETSVC_LABELS=tier:web"),
        ),
        ("CNI_PATH", "/usr/lib/cni".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// One in-process call through `dispatch`; panics with the plugin's answer when it fails.
fn call(command: &str, id: &str, netns: &str, stdin: &[u8]) {
    let env = env(command, id, netns);
    let out = dispatch(&Firewall, |k| env.get(k).cloned(), stdin);
    assert_eq!(
        out.exit_code,
        0,
        "{command} {id}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// One whole-process call of `binary` (which inherits this thread's namespace).
fn spawn(binary: &Path, command: &str, id: &str, netns: &str, stdin: &[u8]) {
    run_plugin(binary, env(command, id, netns), stdin);
}

#[derive(Default)]
struct Report {
    lines: Vec<String>,
    add_medians: Vec<(usize, Duration)>,
    /// For the benchmark report: the ADD curve and the whole-process pair.
    scale: Vec<Value>,
    whole_process: Value,
}

fn sizes() -> Vec<usize> {
    match std::env::var("NETSVC_FW_BENCH_SIZES") {
        Ok(s) => s
            .split(',')
            .map(|n| n.trim().parse().expect("NETSVC_FW_BENCH_SIZES: comma-separated counts"))
            .collect(),
        Err(_) => DEFAULT_SIZES.to_vec(),
    }
}

/// Part 1: one endpoint's ADD (DEL after it, untimed) as the network grows.
fn in_process(c: &mut Criterion, state_dir: &Path, netns: &str, report: &mut Report) {
    let bench_ip = "10.88.255.200/16";
    let add = serde_json::to_vec(&conf("netsvc-firewall", state_dir, bench_ip, netns)).expect("json");
    let mut group = c.benchmark_group("firewall_add");
    let mut existing = 0;
    for size in sizes() {
        let start = Instant::now();
        for i in existing..size {
            let stdin = serde_json::to_vec(&conf("netsvc-firewall", state_dir, &address(i), netns)).expect("json");
            call("ADD", &format!("pop{i:05}"), netns, &stdin);
        }
        let took = start.elapsed();
        report.lines.push(format!(
            "populate {existing} -> {size} endpoints: {:.1} s ({} per ADD)",
            took.as_secs_f64(),
            ms(took / (size - existing).max(1) as u32)
        ));
        existing = size;

        let mut adds = Vec::new();
        let mut dels = Vec::new();
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    call("ADD", "bench", netns, &add);
                    let a = t.elapsed();
                    let t = Instant::now();
                    call("DEL", "bench", netns, &add);
                    dels.push(t.elapsed());
                    adds.push(a);
                    total += a;
                }
                total
            })
        });
        if adds.is_empty() {
            continue; // filtered out on the command line
        }
        let (a, d) = (median(&mut adds), median(&mut dels));
        report.lines.push(format!(
            "in-process with {size} endpoints: ADD median {} (n={}), DEL median {} (untimed by criterion)",
            ms(a),
            adds.len(),
            ms(d)
        ));
        report.add_medians.push((size, a));
        report
            .scale
            .push(json!({"endpoints": size, "add_median_ms": as_ms(a), "del_median_ms": as_ms(d)}));
    }
    group.finish();
}

/// Part 2: whole-process ADD+DEL, ours against the reference firewall plugin.
fn whole_process(c: &mut Criterion, state_dir: &Path, netns: &str, report: &mut Report) {
    let ours = plugin_dir().join("netsvc-firewall");
    assert!(
        ours.exists(),
        "{} is missing: cargo build --release -p netsvc-firewall --bins (or set NETSVC_PLUGIN_DIR)",
        ours.display()
    );
    let reference = PathBuf::from(REFERENCE_PLUGIN_DIR).join("firewall");
    let ip = "10.88.255.201/16";
    // A network the plugins already hold (one endpoint each stays), so both
    // measure the steady state and not their first call's setup.
    let mut group = c.benchmark_group("firewall_exec_add_del");
    let mut pairs: Vec<(&str, PathBuf, Vec<u8>)> = vec![(
        "netsvc-firewall",
        ours,
        serde_json::to_vec(&conf("netsvc-firewall", state_dir, ip, netns)).expect("json"),
    )];
    if reference.exists() {
        let stdin = serde_json::to_vec(&conf("firewall", state_dir, ip, netns)).expect("json");
        let keep = serde_json::to_vec(&conf("firewall", state_dir, "10.88.255.202/16", netns)).expect("json");
        spawn(&reference, "ADD", "keep-ref", netns, &keep);
        pairs.push(("reference-firewall-iptables", reference, stdin));
    } else {
        report
            .lines
            .push(format!("{} is missing: no reference figure", reference.display()));
    }
    let mut medians = Vec::new();
    for (name, binary, stdin) in &pairs {
        let mut samples = AddDel::default();
        group.bench_function(*name, |b| {
            b.iter_custom(|iters| {
                samples.run(
                    iters,
                    || spawn(binary, "ADD", "exec", netns, stdin),
                    || spawn(binary, "DEL", "exec", netns, stdin),
                    || {},
                )
            })
        });
        let Some(m) = samples.median() else {
            continue;
        };
        report.lines.push(samples.summary(name));
        medians.push(m);
    }
    group.finish();
    if let [ours, reference] = medians[..] {
        report.whole_process = json!({"netsvc_ms": as_ms(ours), "reference_ms": as_ms(reference)});
        report.lines.push(format!(
            "whole process ratio ours/reference: {:.2} (target <= 0.25)",
            ours.as_secs_f64() / reference.as_secs_f64()
        ));
    }
}

fn main() {
    let ns = Netns::create("fwbench").expect("create the bench namespace (root needed)");
    // Everything below, and every process spawned from this thread, runs in `ns`.
    setns(File::open(ns.path()).expect("open netns"), CloneFlags::CLONE_NEWNET).expect("setns");
    ns.ip(["link", "add", BRIDGE, "type", "bridge"]).expect("bridge");
    ns.ip(["link", "set", BRIDGE, "up"]).expect("bridge up");
    let state = tempfile::tempdir().expect("state dir");
    let netns = ns.path().display().to_string();

    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let mut report = Report::default();
    in_process(&mut c, state.path(), &netns, &mut report);
    whole_process(&mut c, state.path(), &netns, &mut report);
    c.final_summary();

    if let (Some((small, a)), Some((large, b))) = (report.add_medians.first(), report.add_medians.last()) {
        report.lines.push(format!(
            "ADD median ratio {large}/{small} endpoints: {:.2} (target <= 1.5; median target <= 10 ms)",
            b.as_secs_f64() / a.as_secs_f64()
        ));
    }
    record(
        "firewall",
        &json!({"scale": report.scale, "wholeProcess": report.whole_process}),
    );
    println!("\n== netsvc-firewall bench summary ==");
    for l in &report.lines {
        println!("{l}");
    }
    drop(state);
    drop(ns);
}
