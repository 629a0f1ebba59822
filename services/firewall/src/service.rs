//! The firewall as the composer sees it ([`DESCRIPTION`]), and what
//! `netsvc status` shows of it: the policies as configured.

use netsvc_core::cni::Result;
use netsvc_core::graph::Graph;
use netsvc_core::node::NodeName;
use netsvc_core::service::{Service, StatusPart, StatusView};
use netsvc_core::store::Store;
use serde_json::Value;

use crate::config::FirewallConf;
use crate::{Firewall, SERVICE, SETTINGS};

/// The firewall service, for the composer's list.
pub static DESCRIPTION: Service = Service {
    name: SERVICE,
    plugin: &Firewall,
    schema: || schemars::schema_for!(FirewallConf).to_value(),
    validate: |v| FirewallConf::from_value(v).map(drop),
    reconcile: Some(&Firewall),
    repair: &Firewall,
    status: Some(&Policies),
    link_prefixes: &[],
};

/// The policies of a network as last rendered (`defaultIngress`, `policies`).
struct Policies;

impl StatusView for Policies {
    fn key(&self) -> &'static str {
        "firewall"
    }

    fn collect(&self, store: &dyn Store, node: &NodeName, network: &str) -> Result<Option<StatusPart>> {
        let Some(rendered) = Graph::new(store, node).record::<Value>(network, SERVICE, SETTINGS)? else {
            return Ok(None);
        };
        let conf = rendered["conf"].clone();
        let names: Vec<&str> = conf["policies"]
            .as_array()
            .map(|ps| ps.iter().filter_map(|p| p["name"].as_str()).collect())
            .unwrap_or_default();
        let text = format!(
            "  firewall  default ingress {}  policies {}\n",
            conf["defaultIngress"].as_str().unwrap_or("allow"),
            if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            }
        );
        Ok(Some(StatusPart { json: conf, text }))
    }
}
