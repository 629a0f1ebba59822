//! The VPN as the composer sees it ([`DESCRIPTION`]), and what `netsvc
//! status` shows of it: the network's block of [`crate::status`].

use netsvc_core::cni::{CniError, Result};
use netsvc_core::node::NodeName;
use netsvc_core::service::{Service, StatusPart, StatusView};
use netsvc_core::store::Store;

use crate::config::{VpnConf, json_schema};
use crate::{SERVICE, Vpn};

/// The VPN service, for the composer's list.
pub static DESCRIPTION: Service = Service {
    name: SERVICE,
    plugin: &Vpn,
    schema: || json_schema().to_value(),
    validate: |v| VpnConf::from_value(v).map(drop),
    reconcile: None,
    repair: &Vpn,
    status: Some(&Tunnels),
    link_prefixes: &[crate::tunnel::PREFIX, crate::mesh::PREFIX],
};

/// A network's tunnels and mesh nodes, public material only.
struct Tunnels;

impl StatusView for Tunnels {
    fn key(&self) -> &'static str {
        "vpn"
    }

    fn collect(&self, store: &dyn Store, node: &NodeName, network: &str) -> Result<Option<StatusPart>> {
        let Some(status) = crate::status::collect(store, node, Some(network))?.pop() else {
            return Ok(None);
        };
        // The VPN's own block, without its network line.
        let text: String = crate::status::render(std::slice::from_ref(&status))
            .lines()
            .skip(1)
            .map(|l| format!("{l}\n"))
            .collect();
        let json = serde_json::to_value(&status).map_err(|e| CniError::io(e.to_string()))?;
        Ok(Some(StatusPart { json, text }))
    }
}
