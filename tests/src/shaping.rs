//! Measuring shaped traffic: iperf3 between namespaces, and the bytes the
//! shaped device's root qdisc sent while it ran (whole frames, as tc counts
//! them, GSO segments included — the link's own tx counter would miss their
//! repeated headers).

use std::net::IpAddr;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use netsvc_core::netlink::{links, tc};

use crate::chain::{CallArgs, Chain};
use crate::netns::Netns;
use crate::node::{Container, TestNode};
use crate::process::poll_until;

/// An `iperf3 -s` in a namespace; killed on drop.
pub struct Iperf3Server {
    child: Child,
    pub port: u16,
}

impl Iperf3Server {
    /// Starts a server on `port` and waits until it accepts connections.
    pub fn start(ns: &Netns, port: u16) -> Result<Iperf3Server> {
        let child = ns
            .command("iperf3")
            .args(["-s", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawn iperf3 -s")?;
        let server = Iperf3Server { child, port };
        let listening = poll_until(Duration::from_secs(5), || {
            let out = ns.exec("ss", ["-Hltn", &format!("sport = :{port}")]).ok()?;
            (!out.trim().is_empty()).then_some(())
        });
        if listening.is_none() {
            bail!("iperf3 server on port {port} did not start");
        }
        Ok(server)
    }
}

impl Drop for Iperf3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one shaped run measured, in bits per second.
#[derive(Debug, Clone, Copy)]
pub struct Shaped {
    /// Bytes the shaped device's root qdisc sent in the steady part of the
    /// run (from 2 s in to 1 s before the end) × 8 / that window.
    pub wire: f64,
    /// TCP payload the receiver got over the whole run (iperf3's figure).
    pub goodput: f64,
}

impl Shaped {
    /// How far the wire rate is from `rate`, in percent.
    pub fn wire_error(&self, rate: f64) -> f64 {
        (self.wire / rate - 1.0) * 100.0
    }
    pub fn goodput_error(&self, rate: f64) -> f64 {
        (self.goodput / rate - 1.0) * 100.0
    }
}

/// Where an iperf3 run goes and which device shapes it.
pub struct Run<'a> {
    /// The namespace iperf3's client runs in.
    pub client: &'a Netns,
    pub server: IpAddr,
    pub port: u16,
    /// `-R`: the server sends, the client receives.
    pub reverse: bool,
    pub seconds: u64,
    /// The namespace and name of the shaped device.
    pub device_ns: &'a Netns,
    pub device: &'a str,
}

impl Run<'_> {
    /// Runs iperf3 (TCP) and samples the shaped device while it runs.
    pub fn measure(&self) -> Result<Shaped> {
        waiting_out_busy(|| self.measure_once())
    }

    fn measure_once(&self) -> Result<Shaped> {
        let child = iperf3_client(self.client, self.server, self.port, self.seconds, self.reverse)?;
        let started = Instant::now();
        let window_start = Duration::from_secs(2);
        let window_end = Duration::from_secs(self.seconds.saturating_sub(1).max(3));
        std::thread::sleep(window_start);
        let (t0, b0) = root_qdisc_bytes(self.device_ns, self.device)?;
        std::thread::sleep(window_end.saturating_sub(started.elapsed()));
        let (t1, b1) = root_qdisc_bytes(self.device_ns, self.device)?;
        Ok(Shaped {
            wire: (b1 - b0) as f64 * 8.0 / (t1 - t0).as_secs_f64(),
            goodput: received_rate(child)?,
        })
    }
}

/// What iperf3 (TCP, `seconds` long) from `client` to `server:port`
/// delivered, in bits per second: for when no one device carries the run.
pub fn goodput(client: &Netns, server: IpAddr, port: u16, seconds: u64) -> Result<f64> {
    waiting_out_busy(|| received_rate(iperf3_client(client, server, port, seconds, false)?))
}

/// A server still closing the previous test answers "busy" for a moment:
/// that is waited out.
fn waiting_out_busy<T>(mut run: impl FnMut() -> Result<T>) -> Result<T> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match run() {
            Err(e) if e.to_string().contains("busy") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

fn iperf3_client(client: &Netns, server: IpAddr, port: u16, seconds: u64, reverse: bool) -> Result<Child> {
    let mut cmd = client.command("iperf3");
    cmd.args(["-c", &server.to_string(), "-p", &port.to_string()])
        .args(["-t", &seconds.to_string(), "-J"]);
    if reverse {
        cmd.arg("-R");
    }
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn iperf3 -c")
}

/// The receiver's rate in an iperf3 client's JSON report.
fn received_rate(child: Child) -> Result<f64> {
    let out = child.wait_with_output()?;
    let report: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("iperf3 output: {}", String::from_utf8_lossy(&out.stderr)))?;
    if let Some(e) = report.get("error") {
        bail!("iperf3: {e}");
    }
    report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("no end.sum_received in iperf3's report")
}

/// Bytes the root qdisc of `device` has sent, and when: read over netlink
/// in-process, the moment taken as the dump returns (a loaded machine can
/// take many milliseconds to start the reading thread).
pub fn root_qdisc_bytes(ns: &Netns, device: &str) -> Result<(Instant, u64)> {
    let (at, qdiscs) = netsvc_core::netlink::within(ns.path(), |rtnl| {
        let link = links::get_by_name(rtnl, device)?;
        let qdiscs = tc::list_qdiscs(rtnl, link.index)?;
        Ok((Instant::now(), qdiscs))
    })?;
    qdiscs
        .iter()
        .find(|q| q.parent == tc::ROOT)
        .map(|q| (at, q.bytes))
        .with_context(|| format!("no root qdisc on {device}"))
}

impl Netns {
    /// The name of the peer (in `host`) of this namespace's veth `ifname`.
    pub fn veth_peer_in(&self, ifname: &str, host: &Netns) -> Result<String> {
        let link = self.ip_json(&["link", "show", ifname])?;
        let peer = link[0]["link_index"]
            .as_u64()
            .with_context(|| format!("{ifname} is not a veth: {link}"))?;
        let links = host.ip_json(&["link", "show"])?;
        links
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["ifindex"].as_u64() == Some(peer))
            .and_then(|l| l["ifname"].as_str())
            .map(str::to_string)
            .with_context(|| format!("no link {peer} on the host side of {ifname}"))
    }

    /// The names of this namespace's links of `kind` (`ifb`, `veth`, …).
    pub fn links_of_kind(&self, kind: &str) -> Result<Vec<String>> {
        let links = self.ip_json(&["link", "show", "type", kind])?;
        Ok(links
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["ifname"].as_str().map(str::to_string))
            .collect())
    }
}

/// Both directions of one shaped container.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    /// Node → container: shaped on the host veth.
    pub to_container: Shaped,
    /// Container → node: shaped on the ifb.
    pub from_container: Shaped,
}

/// One container on a bridge network followed by a shaper.
pub struct Attached<'n> {
    pub chain: Chain<'n>,
    pub container: Container,
    pub gateway: IpAddr,
    pub host_veth: String,
    pub ifb: String,
}

/// Attaches a container to `net` (bridge + host-local on `subnet`, then
/// `shaper`), with `args` for its calls.
pub fn attach<'n>(node: &'n TestNode, net: &str, subnet: &str, shaper: Value, args: &CallArgs) -> Attached<'n> {
    let chain = node
        .chain(&node.bridge_conflist(net, "1.0.0", subnet, vec![shaper]))
        .unwrap();
    let container = node.container("shaped").unwrap();
    let r = chain.add_with(&container, "eth0", args).unwrap();
    let gateway: IpAddr = r["ips"][0]["gateway"].as_str().unwrap().parse().unwrap();
    let host_veth = container.veth_peer_in("eth0", node).unwrap();
    let ifbs = node.links_of_kind("ifb").unwrap();
    assert_eq!(ifbs.len(), 1, "one ifb for the container: {ifbs:?}");
    Attached {
        chain,
        container,
        gateway,
        host_veth,
        ifb: ifbs[0].clone(),
    }
}

impl Attached<'_> {
    /// iperf3 against the node's `server`:`port`, to the container
    /// (`reverse`) or from it, measured on the device that shapes it.
    pub fn run(&self, server: IpAddr, port: u16, reverse: bool, seconds: u64) -> Shaped {
        Run {
            client: self.container.ns(),
            server,
            port,
            reverse,
            seconds,
            device_ns: self.chain.node(),
            device: if reverse { &self.host_veth } else { &self.ifb },
        }
        .measure()
        .unwrap()
    }

    /// Two iperf3 runs at once against the gateway's `ports` (a lane
    /// each), both the same way.
    pub fn both_lanes(&self, ports: [u16; 2], reverse: bool, seconds: u64) -> (Shaped, Shaped) {
        std::thread::scope(|s| {
            let [a, b] = ports.map(|port| s.spawn(move || self.run(self.gateway, port, reverse, seconds)));
            (a.join().unwrap(), b.join().unwrap())
        })
    }

    pub fn detach(self) {
        self.chain.del(&self.container, "eth0").unwrap();
    }
}

/// Attaches one container, runs iperf3 both ways against the node, detaches it.
pub fn measure(node: &TestNode, net: &str, subnet: &str, shaper: Value, seconds: u64) -> Measured {
    let shaped = attach(node, net, subnet, shaper, &CallArgs::default());
    let server = Iperf3Server::start(node, 5201).unwrap();
    let measured = Measured {
        to_container: shaped.run(shaped.gateway, server.port, true, seconds),
        from_container: shaped.run(shaped.gateway, server.port, false, seconds),
    };
    shaped.detach();
    measured
}

/// The same burst for both plugins: 10 ms at the rate, at least 100 kbit
/// (the reference plugin's TBF drops packets larger than its burst).
pub fn burst_for(rate: u64) -> u64 {
    (rate / 100).max(100_000)
}
