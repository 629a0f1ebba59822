//! QoS accuracy: the rate on the wire against the rate set, for netsvc-qos
//! and the reference bandwidth plugin at the same rate and burst, both
//! directions (iperf3 between a container and its node; the wire rate read
//! from the shaping device's root qdisc, as `tests/tests/qos_rates.rs` does).

use anyhow::Result;
use netsvc_tests::TestNode;
use netsvc_tests::shaping::{Shaped, burst_for, measure};
use serde::{Deserialize, Serialize};
use serde_json::json;

const RATES_MBIT: [u64; 4] = [1, 10, 50, 100];

/// One plugin at one rate in one direction.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Accuracy {
    pub plugin: String,
    pub rate_mbit: u64,
    /// `to container` or `from container`.
    pub direction: String,
    /// Bits per second the shaping device sent.
    pub wire: f64,
    /// What iperf3 received.
    pub goodput: f64,
}

impl Accuracy {
    /// How far the wire rate is from the rate set, in percent.
    pub fn error_percent(&self) -> f64 {
        (self.wire / (self.rate_mbit as f64 * 1e6) - 1.0) * 100.0
    }
}

pub fn run(seconds: u64) -> Result<Vec<Accuracy>> {
    let node = TestNode::new()?;
    let mut out = Vec::new();
    for (i, mbit) in RATES_MBIT.into_iter().enumerate() {
        let rate = mbit * 1_000_000;
        let burst = burst_for(rate);
        for (j, plugin) in ["netsvc-qos", "bandwidth"].into_iter().enumerate() {
            eprintln!("  {plugin} at {mbit} Mbit/s");
            let shaper = json!({"type": plugin, "ingressRate": rate, "ingressBurst": burst,
                                "egressRate": rate, "egressBurst": burst});
            let net = format!("qa{i}{j}");
            let subnet = format!("10.249.{}.0/24", i * 2 + j);
            let m = measure(&node, &net, &subnet, shaper, seconds);
            let entry = |direction: &str, s: Shaped| Accuracy {
                plugin: plugin.to_string(),
                rate_mbit: mbit,
                direction: direction.to_string(),
                wire: s.wire,
                goodput: s.goodput,
            };
            out.push(entry("to container", m.to_container));
            out.push(entry("from container", m.from_container));
        }
    }
    Ok(out)
}
