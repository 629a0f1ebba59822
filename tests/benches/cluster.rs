//! Propagation across nodes: the time from an ADD on node A returning to the
//! change being live on node C — C's resolver answers the new name, C's LB
//! holds the new backend, C's firewall set holds the new address. Two
//! simulated nodes share a real etcd and run `netsvc agent`; the medians and
//! p99 over the ADDs are printed (target: p99 < 100 ms).
//!
//! Run (root; everything happens in throwaway namespaces it creates and deletes):
//!
//! ```text
//! scripts/bench-cluster.sh [ADDS]
//! ```

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use netsvc_dns::{RecordType, ask_on};
use netsvc_tests::Container;
use netsvc_tests::chain::{CallArgs, container_ip};
use netsvc_tests::cluster::{self, ETCD_IP};
use netsvc_tests::etcd::Etcd;

fn main() -> Result<()> {
    let adds: usize = std::env::var("NETSVC_BENCH_ADDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let hub = cluster::hub()?;
    let nodes = cluster::join(&hub, &["node-a", "node-c"])?;
    let etcd = Etcd::start(&hub, ETCD_IP)?;
    let store = etcd.store_spec();
    let (a, c) = (&nodes[0], &nodes[1]);
    let _agents = [a.agent(&store, 10), c.agent(&store, 10)];
    let (chain_a, chain_c) = (a.chain(), c.chain());
    // C holds a container of the network, so it renders the network.
    let resident = c.ns.container("resident")?;
    chain_c.add_with(&resident, "eth0", &CallArgs::endpoint("resident", Some("tier:web")))?;

    // The probes cost little beside what they time: a DNS question from a
    // socket made once inside C's container, one `nft` listing per look.
    let asker = resident.ns().run(|| UdpSocket::bind("0.0.0.0:0"))??;
    asker.set_read_timeout(Some(Duration::from_millis(200)))?;
    let server = SocketAddr::new(c.gateway().parse()?, 53);
    let mut dns = Vec::new();
    let mut all = Vec::new();
    for i in 0..adds {
        let name = format!("p{i}");
        let ct: Container = a.ns.container(&name)?;
        let result = chain_a.add_with(&ct, "eth0", &CallArgs::endpoint(&name, Some("tier:api")))?;
        let added = Instant::now();
        let ip = container_ip(&result, "eth0")?;
        let fqdn = format!("{name}.span.internal");
        let mut dns_at = None;
        loop {
            if dns_at.is_none() && ask_on(&asker, server, &fqdn, RecordType::A).unwrap_or_default() == [ip] {
                dns_at = Some(added.elapsed());
            }
            if dns_at.is_some() && in_firewall_and_lb(c, &ip.to_string()) {
                break;
            }
            if added.elapsed() > Duration::from_secs(10) {
                bail!("{name} never became live on C");
            }
        }
        dns.push(dns_at.context("dns")?);
        all.push(added.elapsed());
        chain_a.del(&ct, "eth0")?;
    }
    report("DNS answer on C", &mut dns);
    report("DNS + LB backend + firewall set on C", &mut all);
    Ok(())
}

/// Whether C's firewall and LB tables both hold `ip`.
fn in_firewall_and_lb(node: &netsvc_tests::cluster::SimNode, ip: &str) -> bool {
    let ruleset = "\n".to_string() + &node.ns.ns().exec("nft", ["list", "ruleset"]).unwrap_or_default();
    let table = |name: &str| {
        ruleset
            .split("\ntable ")
            .find(|t| t.starts_with(name))
            .is_some_and(|t| t.contains(ip))
    };
    table("inet netsvc_firewall") && table("ip netsvc_lb")
}

fn report(what: &str, samples: &mut [Duration]) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "{what}: median {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} ADDs",
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3,
        samples.len()
    );
}
