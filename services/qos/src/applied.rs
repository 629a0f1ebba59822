//! What ADD applied to one endpoint, as the store keeps it, and how an
//! attachment leaves the graph.

use netsvc_core::cni::Result;
use netsvc_core::graph::{Endpoint, Graph, Shaping, Tx};
use serde::{Deserialize, Serialize};

use crate::config::{Direction, QosSettings};
use crate::plan::{self, DevicePlan, Side};
use crate::{SERVICE, kernel};

/// What ADD applied to one endpoint, kept under the endpoint's id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Applied {
    /// The node-side veth: traffic to the container is shaped on it.
    pub host_veth: String,
    /// The ifb traffic from the container is shaped on (with an egress rate).
    pub ifb: Option<String>,
    /// The host veth's MTU when shaped (frames are cut to it).
    pub mtu: u32,
    pub qos: QosSettings,
}

const ETHERNET_HEADER: u64 = 14;

impl Applied {
    /// The shaping of the attachment `container_id`/`ifname` on its host
    /// veth: an ifb (always the same name) when traffic from it is shaped.
    pub fn new(host_veth: String, mtu: u32, qos: QosSettings, container_id: &str, ifname: &str) -> Applied {
        Applied {
            host_veth,
            ifb: qos.egress.map(|_| kernel::ifb_name(container_id, ifname)),
            mtu,
            qos,
        }
    }

    /// The trees of the shaped devices: (which way, device, plan).
    pub fn plans(&self) -> Vec<(Side, &str, DevicePlan)> {
        let frame = u64::from(self.mtu) + ETHERNET_HEADER;
        let mut out = Vec::new();
        if let Some(d) = self.qos.ingress {
            let side = Side::ToContainer;
            out.push((side, self.host_veth.as_str(), plan::device(&self.qos, d, side, frame)));
        }
        if let (Some(d), Some(ifb)) = (self.qos.egress, &self.ifb) {
            let side = Side::FromContainer;
            out.push((side, ifb.as_str(), plan::device(&self.qos, d, side, frame)));
        }
        out
    }
}

/// The key of an attachment's records (the endpoint's id).
pub fn record_name(container_id: &str, ifname: &str) -> String {
    Endpoint {
        container_id: container_id.to_string(),
        ifname: ifname.to_string(),
        ..Default::default()
    }
    .id()
}

/// Takes an attachment out of the graph: its endpoint (when the plugin
/// holds it), shaping and record. The record, if there was one. Records go
/// even when the endpoint is gone already: a dead ADD's endpoint is rolled
/// back by the core, its records are ours to drop.
pub fn forget(tx: &mut Tx<'_>, container_id: &str, ifname: &str) -> Result<Option<Applied>> {
    tx.detach_endpoint(container_id, ifname, SERVICE)?;
    let id = record_name(container_id, ifname);
    tx.remove_shaping(&id)?;
    Ok(tx.remove_record(SERVICE, &id)?)
}

/// Every record of shaping on `network` on this node, by endpoint id.
pub fn records(graph: &Graph<'_>, network: &str) -> Result<Vec<(String, Applied)>> {
    Ok(graph.records::<Applied>(network, SERVICE)?)
}

/// The records of the endpoints the plugin holds here, as a transaction sees them.
pub fn local_records(tx: &mut Tx<'_>) -> Result<Vec<(Endpoint, Applied)>> {
    let mut out = Vec::new();
    for ep in tx.local_endpoints(SERVICE)? {
        if let Some(a) = tx.get_record::<Applied>(SERVICE, &ep.id())? {
            out.push((ep, a));
        }
    }
    Ok(out)
}

/// The graph's view of an endpoint's shaping (bits/s and bits).
pub fn shaping(endpoint: &str, q: &QosSettings) -> Shaping {
    let burst_bits = |d: &Direction| Some(d.burst.unwrap_or_else(|| plan::default_burst(d.rate)) * 8);
    Shaping {
        endpoint: endpoint.to_string(),
        ingress_rate: q.ingress.map(|d| d.rate),
        ingress_burst: q.ingress.as_ref().and_then(burst_bits),
        egress_rate: q.egress.map(|d| d.rate),
        egress_burst: q.egress.as_ref().and_then(burst_bits),
    }
}
