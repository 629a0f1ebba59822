//! What a call knows of its attachment beyond the graph: for a DEL the store
//! has no record of (a store that lost the document), the addresses the
//! runtime's `prevResult` names, else those on the container's interface.
//! A service takes them out of its own tables only.

use std::net::IpAddr;

use crate::cni::Call;
use crate::graph::container_addresses;
use crate::netlink::{addresses, links};

/// The attachment's addresses as the runtime or the container still shows
/// them; empty when neither can tell (the namespace is gone).
pub fn runtime_addresses(call: &Call) -> Vec<IpAddr> {
    if let Some(prev) = call.prev_result().ok().flatten() {
        let ips: Vec<IpAddr> = container_addresses(&prev, &call.env.ifname)
            .iter()
            .map(|n| n.addr)
            .collect();
        if !ips.is_empty() {
            return ips;
        }
    }
    let Some(netns) = &call.env.netns else {
        return Vec::new();
    };
    let ifname = call.env.ifname.clone();
    let found = crate::netlink::within(netns, |rtnl| {
        let Some(link) = links::find_by_name(rtnl, &ifname)? else {
            return Ok(Vec::new());
        };
        addresses::list(rtnl, Some(link.index))
    });
    match found {
        Ok(addrs) => addrs
            .into_iter()
            .map(|a| a.address)
            .filter(|a| !a.is_loopback() && !is_link_local(a))
            .collect(),
        _ => Vec::new(),
    }
}

fn is_link_local(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    }
}
