//! Whole-process ADD+DEL of `netsvc-qos` against the reference `bandwidth`
//! plugin, same rates, bursts and prevResult, in the same run; the ratio
//! ours/reference is printed.
//!
//! Run (root; everything happens in throwaway namespaces the bench creates
//! and deletes):
//!
//! ```text
//! scripts/bench-qos.sh            # builds the plugin binaries, then runs this
//! ```
//!
//! Both shape one container both ways: the reference plugin with a TBF on
//! the host veth and an ifb for the container's egress; ours with HTB on
//! both (a parent class and one leaf, the config below having no classes).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::Criterion;
use netsvc_tests::chain::{REFERENCE_PLUGIN_DIR, plugin_dir};
use netsvc_tests::timing::{AddDel, run_plugin};
use netsvc_tests::{Netns, STATE_DIR_ENV};
use nix::sched::{CloneFlags, setns};
use serde_json::{Value, json};

const HOST_VETH: &str = "vethqosbench";

fn conf(plugin_type: &str, netns: &str) -> Value {
    json!({
        "cniVersion": "1.0.0", "name": "qosbench", "type": plugin_type,
        "ingressRate": 10_000_000, "ingressBurst": 100_000,
        "egressRate": 20_000_000, "egressBurst": 200_000,
        "prevResult": {
            "cniVersion": "1.0.0",
            "interfaces": [{"name": HOST_VETH, "mac": "aa:bb:cc:00:00:01"},
                           {"name": "eth0", "mac": "aa:bb:cc:00:00:03", "sandbox": netns}],
            "ips": [{"address": "10.89.0.5/24", "gateway": "10.89.0.1", "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.89.0.1"}]
        }
    })
}

/// One whole-process call of `binary` (which inherits this thread's namespace).
fn spawn(binary: &Path, command: &str, netns: &str, state: &Path, stdin: &[u8]) {
    let env = [
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", "qosbench"),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", REFERENCE_PLUGIN_DIR),
        (STATE_DIR_ENV, &state.display().to_string()),
    ];
    run_plugin(binary, env, stdin);
}

fn clear_host_veth(node: &Netns) {
    for parent in ["root", "ingress"] {
        let _ = node.output("tc", ["qdisc", "del", "dev", HOST_VETH, parent], Duration::from_secs(5));
    }
}

fn main() {
    let node = Netns::create("qosbench").expect("create the bench namespace (root needed)");
    let container = Netns::create("qosbenchct").expect("container namespace");
    // Everything below, and every process spawned from this thread, runs in `node`.
    setns(File::open(node.path()).expect("open netns"), CloneFlags::CLONE_NEWNET).expect("setns");
    container.veth("eth0", &node, HOST_VETH).expect("veth pair");
    let state = tempfile::tempdir().expect("state dir");
    let netns = container.path().display().to_string();

    let mut c = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let ours = plugin_dir().join("netsvc-qos");
    assert!(
        ours.exists(),
        "{} is missing: cargo build --release -p netsvc-qos --bins (or set NETSVC_PLUGIN_DIR)",
        ours.display()
    );
    let reference = PathBuf::from(REFERENCE_PLUGIN_DIR).join("bandwidth");
    let mut pairs = vec![("netsvc-qos", ours, conf("netsvc-qos", &netns))];
    if reference.exists() {
        pairs.push(("reference-bandwidth", reference, conf("bandwidth", &netns)));
    }
    let mut lines = Vec::new();
    let mut medians = Vec::new();
    let mut group = c.benchmark_group("qos_exec_add_del");
    for (name, binary, conf) in &pairs {
        let stdin = serde_json::to_vec(conf).expect("json");
        let mut samples = AddDel::default();
        group.bench_function(*name, |b| {
            b.iter_custom(|iters| {
                samples.run(
                    iters,
                    || spawn(binary, "ADD", &netns, state.path(), &stdin),
                    || spawn(binary, "DEL", &netns, state.path(), &stdin),
                    // The reference DEL leaves the host veth's qdiscs (it
                    // counts on the veth going with the container): clear
                    // them, untimed, for the next ADD.
                    || clear_host_veth(&node),
                )
            })
        });
        let Some(m) = samples.median() else {
            continue;
        };
        lines.push(samples.summary(name));
        medians.push(m);
    }
    group.finish();
    c.final_summary();
    if let [ours, reference] = medians[..] {
        lines.push(format!(
            "whole process ratio ours/reference: {:.2}",
            ours.as_secs_f64() / reference.as_secs_f64()
        ));
    }
    println!("\n== netsvc-qos bench summary ==");
    for l in &lines {
        println!("{l}");
    }
}
