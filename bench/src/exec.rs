//! Whole-process ADD and DEL, as a runtime pays them: each plugin alone and
//! whole chains, netsvc's against the reference plugins, every one of them
//! after the same real bridge ADD on the same node.
//!
//! Each round: the bridge's ADD (untimed) gives the container its interface
//! and the prevResult; the plugins under test run ADD in order (timed), then
//! DEL in reverse (timed); the bridge's DEL (untimed) ends the round. A
//! resident container per chain keeps each plugin in its steady state (its
//! tables, daemon and chains made), and warm-up rounds are not counted.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use netsvc_tests::chain::{REFERENCE_PLUGIN_DIR, plugin_dir};
use netsvc_tests::timing::plugin_output;
use netsvc_tests::wireguard::SITE_KEYS;
use netsvc_tests::{Container, TestNode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::stats::Stats;

const NETWORK: &str = "bench";
const VERSION: &str = "1.0.0";
const WARM_UP: usize = 3;

/// One plugin of a chain: its binary and its config (without the keys
/// every call carries).
#[derive(Debug, Clone)]
struct Plugin {
    name: &'static str,
    binary: PathBuf,
    conf: Value,
}

fn ours(name: &'static str, conf: Value) -> Plugin {
    Plugin {
        name,
        binary: plugin_dir().join(name),
        conf,
    }
}

fn reference(name: &'static str, conf: Value) -> Plugin {
    Plugin {
        name,
        binary: PathBuf::from(REFERENCE_PLUGIN_DIR).join(name),
        conf,
    }
}

fn bridge(node: &TestNode) -> Plugin {
    reference(
        "bridge",
        json!({"bridge": "br-bench", "isGateway": true, "ipMasq": true, "hairpinMode": true,
               "ipam": {"type": "host-local", "dataDir": node.ipam_dir(),
                        "ranges": [[{"subnet": "10.250.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}]}}),
    )
}

/// Each netsvc service with a realistic config.
fn netsvc_services() -> Vec<Plugin> {
    vec![
        ours(
            "netsvc-firewall",
            json!({"policies": [
                {"name": "web", "select": {"labels": {"tier": "web"}},
                 "ingress": [{"from": [{"labels": {"tier": "web"}}], "ports": [{"protocol": "tcp", "port": 80}]}]},
                {"name": "api", "select": {"labels": {"tier": "api"}},
                 "ingress": [{"from": [{"labels": {"tier": "web"}}], "ports": [{"protocol": "tcp", "port": 8080}]}]}]}),
        ),
        ours(
            "netsvc-lb",
            json!({"services": [{"name": "web", "vip": "10.96.0.10", "select": {"labels": {"tier": "web"}},
                                  "ports": [{"port": 80, "targetPort": 8080, "protocol": "tcp"}]}]}),
        ),
        ours("netsvc-qos", json!({"ingressRate": "100mbit", "egressRate": "100mbit"})),
        ours("netsvc-dns", json!({"domain": "bench.internal", "listen": "gateway"})),
    ]
}

/// The VPN's tunnel: measured alone (it is no part of the target chain).
fn netsvc_vpn() -> Plugin {
    ours(
        "netsvc-vpn",
        json!({"mode": "tunnel", "address": "10.200.0.2/32", "routes": ["10.50.0.0/16"],
               "peers": [{"publicKey": SITE_KEYS.1,
                          "endpoint": "192.0.2.1:51820", "allowedIPs": ["10.50.0.0/16"]}]}),
    )
}

/// The reference meta chain netsvc's is compared with.
fn reference_meta() -> Vec<Plugin> {
    vec![
        reference("firewall", json!({"backend": "iptables"})),
        reference(
            "bandwidth",
            json!({"ingressRate": 100_000_000, "ingressBurst": 1_000_000,
                   "egressRate": 100_000_000, "egressBurst": 1_000_000}),
        ),
        reference(
            "portmap",
            json!({"capabilities": {"portMappings": true},
                   "runtimeConfig": {"portMappings": [{"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"}]}}),
        ),
    ]
}

/// One plugin call in the node namespace; the result it printed (ADD).
fn call(node: &TestNode, c: &Container, id: &str, p: &Plugin, command: &str, prev: Option<&Value>) -> Result<Value> {
    let mut conf = p.conf.clone();
    conf["cniVersion"] = json!(VERSION);
    conf["name"] = json!(NETWORK);
    conf["type"] = json!(p.name);
    if let Some(prev) = prev {
        conf["prevResult"] = prev.clone();
    }
    let netns = c.netns_path().display().to_string();
    let mut cmd = node.command(&p.binary);
    cmd.envs([
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", id),
        ("CNI_NETNS", &netns),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", REFERENCE_PLUGIN_DIR),
        (
            "CNI_ARGS",
            &format!("IgnoreUnknown=1;K8S_POD_NAME={id};NETSVC_LABELS=tier:web"),
        ),
    ]);
    let out = plugin_output(&mut cmd, &serde_json::to_vec(&conf)?);
    if command != "ADD" {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&out).with_context(|| format!("{} printed no result", p.name))
}

/// ADD through `chain` in order, each given the result so far.
fn add_chain(node: &TestNode, c: &Container, id: &str, chain: &[Plugin], prev: Value) -> Result<Value> {
    chain
        .iter()
        .try_fold(prev, |result, p| call(node, c, id, p, "ADD", Some(&result)))
}

/// DEL through `chain` in reverse, each given the final result.
fn del_chain(node: &TestNode, c: &Container, id: &str, chain: &[Plugin], result: &Value) -> Result<()> {
    for p in chain.iter().rev() {
        call(node, c, id, p, "DEL", Some(result))?;
    }
    Ok(())
}

/// What one plugin or chain cost.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Timed {
    pub name: String,
    /// netsvc's, or the reference plugins'.
    pub netsvc: bool,
    pub add: Stats,
    pub del: Stats,
    /// ADD and DEL of the same round, added.
    pub total: Stats,
}

/// Rounds of ADD then DEL of `chain` after a bridge ADD, in a container of
/// its own, with a resident container holding the same chain meanwhile.
fn time_chain(node: &TestNode, name: &str, netsvc: bool, chain: &[Plugin], rounds: usize) -> Result<Timed> {
    let bridge = bridge(node);
    let resident = node.container("resident")?;
    let resident_id = format!("resident-{name}").replace([' ', '+'], "-");
    let first = call(node, &resident, &resident_id, &bridge, "ADD", None)?;
    add_chain(node, &resident, &resident_id, chain, first)?;

    let c = node.container("timed")?;
    let (mut adds, mut dels, mut totals) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..WARM_UP + rounds {
        let prev = call(node, &c, "timed", &bridge, "ADD", None)?;
        let start = Instant::now();
        let result = add_chain(node, &c, "timed", chain, prev.clone())?;
        let added = start.elapsed();
        let start = Instant::now();
        del_chain(node, &c, "timed", chain, &result)?;
        let deleted = start.elapsed();
        call(node, &c, "timed", &bridge, "DEL", Some(&prev))?;
        if round >= WARM_UP {
            adds.push(added);
            dels.push(deleted);
            totals.push(added + deleted);
        }
    }
    Ok(Timed {
        name: name.to_string(),
        netsvc,
        add: Stats::of(&adds),
        del: Stats::of(&dels),
        total: Stats::of(&totals),
    })
}

/// The section's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecReport {
    pub rounds: usize,
    pub plugins: Vec<Timed>,
    /// netsvc's firewall + lb + qos + dns, then the reference firewall +
    /// bandwidth + portmap.
    pub chains: Vec<Timed>,
}

impl ExecReport {
    /// netsvc's chain's ADD+DEL over the reference chain's (medians).
    pub fn chain_ratio(&self) -> Option<f64> {
        let ours = self.chains.iter().find(|c| c.netsvc)?;
        let theirs = self.chains.iter().find(|c| !c.netsvc)?;
        Some(ours.total.median_ms / theirs.total.median_ms)
    }
}

/// Each netsvc plugin alone (the VPN's tunnel too), with its binary from `dir`.
pub fn netsvc_plugins_in(dir: &std::path::Path) -> Vec<(&'static str, PathBuf, Value)> {
    netsvc_services()
        .into_iter()
        .chain([netsvc_vpn()])
        .map(|p| (p.name, dir.join(p.name), p.conf))
        .collect()
}

/// `BENCH_ONLY=netsvc-dns,portmap`: those plugins alone (no chains), to
/// look at one closely; unset or empty, every plugin.
pub fn only() -> Option<Vec<String>> {
    std::env::var("BENCH_ONLY")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| v.split(',').map(|n| n.trim().to_string()).collect())
}

/// One plugin alone, `rounds` rounds, on a fresh node.
pub fn time_plugin(name: &'static str, binary: PathBuf, conf: Value, rounds: usize) -> Result<Timed> {
    let node = TestNode::new()?;
    let p = Plugin { name, binary, conf };
    time_chain(&node, name, true, std::slice::from_ref(&p), rounds)
}

/// Measures every plugin alone and both chains, each on a fresh node.
pub fn run(rounds: usize) -> Result<ExecReport> {
    let mut plugins = Vec::new();
    let singles = netsvc_services()
        .into_iter()
        .chain([netsvc_vpn()])
        .map(|p| (true, p))
        .chain(reference_meta().into_iter().map(|p| (false, p)));
    let only = only();
    let wanted = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|n| n == name));
    for (netsvc, p) in singles.filter(|(_, p)| wanted(p.name)) {
        eprintln!("  {} ADD and DEL, {rounds} rounds", p.name);
        let node = TestNode::new()?;
        plugins.push(time_chain(&node, p.name, netsvc, std::slice::from_ref(&p), rounds)?);
    }
    let mut chains = Vec::new();
    let chained = only.is_none().then_some([
        (
            true,
            "netsvc-firewall + netsvc-lb + netsvc-qos + netsvc-dns",
            netsvc_services(),
        ),
        (false, "firewall + bandwidth + portmap", reference_meta()),
    ]);
    for (netsvc, name, chain) in chained.into_iter().flatten() {
        eprintln!("  chain {name}, {rounds} rounds");
        let node = TestNode::new()?;
        chains.push(time_chain(&node, name, netsvc, &chain, rounds)?);
    }
    Ok(ExecReport {
        rounds,
        plugins,
        chains,
    })
}
