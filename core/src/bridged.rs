//! Same-bridge traffic for services that need conntrack to see it.

use crate::cni::{CniError, CniResult};
use crate::graph::host_interfaces;
use crate::netlink::{Rtnl, links};

/// Same-bridge traffic is switched at layer 2 and meets the IP hooks (and
/// conntrack) only through br_netfilter: turn it on for the chain's bridge
/// alone. The firewall needs it to filter same-bridge flows, the load balancer
/// to un-NAT replies a backend sends straight to a client on its bridge.
/// Chains without a bridge (ptp) route, which the IP hooks see anyway.
pub fn pass_bridged_traffic(prev: &CniResult) -> Result<(), CniError> {
    let names: Vec<String> = host_interfaces(prev).map(str::to_string).collect();
    if names.is_empty() {
        return Ok(());
    }
    // Set once per bridge: later calls only read it.
    let mut rtnl = Rtnl::open()?;
    for name in names {
        if let Some(link) = links::find_by_name(&mut rtnl, &name)?
            && link.kind.as_deref() == Some("bridge")
            && link.bridge_netfilter != Some(true)
        {
            links::set_bridge_netfilter(&mut rtnl, link.index, true)?;
        }
    }
    Ok(())
}
