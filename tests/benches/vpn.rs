//! Throughput through a tunnel netsvc-vpn configured against one configured
//! by hand (wireguard-go + wg + ip, the WireGuard network-namespace pattern)
//! in the same run: iperf3 from a container to a "remote site" through each,
//! alternating, several rounds; the medians and the ratio ours/hand are
//! printed (target: at least 0.90).
//!
//! Run (root; everything happens in throwaway namespaces it creates and deletes):
//!
//! ```text
//! scripts/bench-vpn.sh [SECONDS_PER_RUN] [ROUNDS]
//! ```

use anyhow::{Context, Result};
use netsvc_tests::shaping::Iperf3Server;
use netsvc_tests::timing::median;
use netsvc_tests::wireguard::{HandDevice, KeyPair, start_wireguard_go};
use netsvc_tests::{Container, Netns, TestNode, unique_name};
use serde_json::{Value, json};

const SITE: &str = "10.50.0.1";

fn main() -> Result<()> {
    let seconds: u32 = std::env::var("NETSVC_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let rounds: usize = std::env::var("NETSVC_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let node = TestNode::new()?;
    let site = Netns::create("site")?;
    node.veth("up0", &site, "up0")?;
    node.add_addr("up0", "10.98.0.1/24")?;
    site.add_addr("up0", "10.98.0.2/24")?;
    let site_device: String = unique_name("wgs").chars().take(15).collect();
    let remote = HandDevice::start(&site, &site_device, 51820, &format!("{SITE}/16"))?;

    // Ours: the plugin makes the tunnel (key made per attachment).
    let conf = json!({"cniVersion": "1.0.0", "name": "vpnbench", "plugins": [{
        "type": "netsvc-vpn", "mode": "tunnel", "address": "10.200.0.2/32", "routes": ["10.50.0.0/16"],
        "peers": [{"publicKey": remote.keys.public, "endpoint": "10.98.0.2:51820", "allowedIPs": ["10.50.0.0/16"]}]}]});
    let chain = node.chain(&conf)?;
    let ours = node.container("ours")?;
    chain.add(&ours, "tun0").map_err(|e| anyhow::anyhow!("ADD: {e}"))?;
    let device = netsvc_vpn::tunnel::device_name(ours.name(), "tun0");
    let public = ours.exec("wg", ["show", &device, "public-key"])?.trim().to_string();
    admit(&site, &remote, &public, "10.200.0.2/32")?;

    // The reference: the same pattern by hand.
    let hand = node.container("hand")?;
    let hand_keys = KeyPair::generate()?;
    hand_tunnel(&node, &hand, &hand_keys, &remote.keys.public)?;
    admit(&site, &remote, &hand_keys.public, "10.200.0.3/32")?;

    let server = Iperf3Server::start(&site, 5201)?;
    let (mut ours_bps, mut hand_bps) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate who goes first: neither gets the warmer machine.
        if round % 2 == 0 {
            ours_bps.push(iperf3(&ours, server.port, seconds)?);
            hand_bps.push(iperf3(&hand, server.port, seconds)?);
        } else {
            hand_bps.push(iperf3(&hand, server.port, seconds)?);
            ours_bps.push(iperf3(&ours, server.port, seconds)?);
        }
        eprintln!(
            "round {round}: netsvc-vpn {:.1} Mbit/s, by hand {:.1} Mbit/s",
            ours_bps[round] / 1e6,
            hand_bps[round] / 1e6
        );
    }
    chain.del(&ours, "tun0").map_err(|e| anyhow::anyhow!("DEL: {e}"))?;
    let (o, h) = (median(&mut ours_bps), median(&mut hand_bps));
    println!("vpn throughput, median of {rounds} runs of {seconds} s, container to remote site through wireguard-go:");
    println!("  netsvc-vpn tunnel   {:>9.1} Mbit/s", o / 1e6);
    println!("  hand-made tunnel    {:>9.1} Mbit/s", h / 1e6);
    println!("  ratio ours/hand     {:>9.3}  (target >= 0.90)", o / h);
    netsvc_tests::timing::record(
        "vpn",
        &json!({"netsvcMbit": o / 1e6, "handMbit": h / 1e6, "rounds": rounds, "seconds": seconds}),
    );
    let _ = std::fs::remove_file(format!("/var/run/wireguard/wgh{}.sock", std::process::id() % 100_000));
    Ok(())
}

/// Lets the tunnel with key `public` and address `address` into the site.
fn admit(site: &Netns, remote: &HandDevice, public: &str, address: &str) -> Result<()> {
    remote.set_peer(site, public, None, address)?;
    site.ip(["route", "replace", address, "dev", &remote.name]).map(drop)
}

/// wireguard-go started on the node, keyed and peered with `wg`, moved into
/// the container, addressed and routed with `ip`: what an operator does.
fn hand_tunnel(node: &TestNode, c: &Container, keys: &KeyPair, site_public: &str) -> Result<()> {
    let name = format!("wgh{}", std::process::id() % 100_000);
    start_wireguard_go(node, &name)?;
    let dir = tempfile::tempdir()?;
    let key = keys.write_private(dir.path(), "key")?;
    node.exec("wg", ["set", &name, "private-key", key.to_str().context("key path")?])?;
    node.exec(
        "wg",
        [
            "set",
            &name,
            "peer",
            site_public,
            "endpoint",
            "10.98.0.2:51820",
            "allowed-ips",
            "10.50.0.0/16",
        ],
    )?;
    node.ip(["link", "set", &name, "mtu", "1420"])?;
    node.ip(["link", "set", &name, "netns", c.name()])?;
    c.add_addr(&name, "10.200.0.3/32")?;
    c.ip(["link", "set", &name, "up"])?;
    c.ip(["route", "add", "10.50.0.0/16", "dev", &name]).map(drop)
}

/// Bits per second the site received from `c` in an iperf3 run.
fn iperf3(c: &Container, port: u16, seconds: u32) -> Result<f64> {
    let out = c.exec(
        "iperf3",
        ["-c", SITE, "-p", &port.to_string(), "-t", &seconds.to_string(), "-J"],
    )?;
    let v: Value = serde_json::from_str(&out)?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3 gave no received rate")
}
