//! QoS as the composer sees it ([`DESCRIPTION`]), and what `netsvc status`
//! shows of it: each shaped endpoint's rates.

use std::fmt::Write;

use netsvc_core::cni::Result;
use netsvc_core::graph::Graph;
use netsvc_core::node::NodeName;
use netsvc_core::service::{Service, StatusPart, StatusView};
use netsvc_core::store::Store;

use crate::config::QosConf;
use crate::{Qos, SERVICE};

/// The QoS service, for the composer's list.
pub static DESCRIPTION: Service = Service {
    name: SERVICE,
    plugin: &Qos,
    schema: || schemars::schema_for!(QosConf).to_value(),
    validate: |v| QosConf::from_value(v).map(drop),
    reconcile: Some(&Qos),
    repair: &Qos,
    status: Some(&Shapings),
    link_prefixes: &[crate::kernel::IFB_PREFIX],
};

/// The shaping of a network's endpoints (always shown, empty or not).
struct Shapings;

fn rate(bits: Option<u64>) -> String {
    bits.map_or("-".into(), |b| format!("{:.3} Mbit/s", b as f64 / 1e6))
}

impl StatusView for Shapings {
    fn key(&self) -> &'static str {
        "shaping"
    }

    fn collect(&self, store: &dyn Store, node: &NodeName, network: &str) -> Result<Option<StatusPart>> {
        let shapings = Graph::new(store, node).shapings(network)?;
        let mut text = String::new();
        for sh in &shapings {
            let _ = writeln!(
                text,
                "  shaping {}  to it {}  from it {}",
                sh.endpoint,
                rate(sh.ingress_rate),
                rate(sh.egress_rate)
            );
        }
        let json = serde_json::to_value(&shapings).map_err(|e| netsvc_core::cni::CniError::io(e.to_string()))?;
        Ok(Some(StatusPart { json, text }))
    }
}
