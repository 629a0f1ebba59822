//! What calls that died left: a dead ADD's attachment (rolled back in the
//! graph by the core; its records go here) loses its devices, a dead DEL's
//! tunnel device goes by the name it always has, and devices of ours that
//! no record of any network holds (the mesh device of a dead DEL's node, a
//! device made by a call that died before it was recorded) are swept.

use std::collections::BTreeSet;

use netsvc_core::cni::Result;
use netsvc_core::graph::{Graph, Intent, Tx};
use netsvc_core::netlink::{self, links};

use crate::{Forgotten, NODE_NETNS, device, forget, mesh, owned, tear_down, tunnel};

/// What a call cleans up before its own work.
#[derive(Debug, Default)]
pub struct Cleanup {
    stale: Option<(String, String, Forgotten)>,
    /// Sweep devices no record holds (after a dead call, and on GC).
    pub sweep: bool,
}

impl Cleanup {
    /// The cleanup of `stale`, the intent a dead call left (found under the
    /// lock, its ADD already rolled back in the graph).
    pub fn of(tx: &mut Tx<'_>, stale: Option<&Intent>) -> Result<Cleanup> {
        let Some(intent) = stale else {
            return Ok(Cleanup::default());
        };
        let attachment = match intent.target() {
            Some((id, ifname)) => {
                // A dead DEL committed its records' removal already.
                let f = if intent.added().is_some() {
                    forget(tx, id, ifname, None)?
                } else {
                    Forgotten::default()
                };
                Some((id.to_string(), ifname.to_string(), f))
            }
            None => None,
        };
        Ok(Cleanup {
            stale: attachment,
            sweep: true,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.stale.is_none() && !self.sweep
    }

    pub fn run(&self, graph: &Graph<'_>) -> Result<()> {
        if let Some((id, ifname, f)) = &self.stale {
            tear_down(id, ifname, f, None)?;
        }
        if self.sweep {
            sweep(graph)?;
        }
        Ok(())
    }
}

/// Every device a record of any network on this node (but `except`) holds.
pub fn held(graph: &Graph<'_>, except: Option<&str>) -> Result<BTreeSet<String>> {
    let mut held = BTreeSet::new();
    for network in graph
        .networks()?
        .into_iter()
        .filter(|n| Some(n.name.as_str()) != except)
    {
        for (_, t) in graph.records::<tunnel::TunnelRecord>(&network.name, tunnel::RECORDS)? {
            held.insert(t.device);
        }
        held.extend(mesh::nodes(graph, &network.name)?.into_iter().map(|n| n.device));
    }
    Ok(held)
}

/// The devices of ours here: wireguard-go devices serving this namespace,
/// and links on the node of our name form with our mark (see [`owned`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Ours {
    pub userspace: BTreeSet<String>,
    pub links: BTreeSet<String>,
}

/// Lists the devices of ours here. Listed before the records are read: a
/// call records a device before making it, so one listed here that no
/// record read afterwards holds is an orphan.
pub fn ours() -> Result<Ours> {
    let userspace = [tunnel::PREFIX, mesh::PREFIX]
        .into_iter()
        .flat_map(device::userspace_devices_here)
        .collect();
    let links = netlink::within(NODE_NETNS, |rtnl| {
        Ok(owned::ours_on_node(rtnl)?.into_iter().map(|l| l.name).collect())
    })?;
    Ok(Ours { userspace, links })
}

/// Removes the devices of ours no record holds: a wireguard-go is stopped
/// (its TUN device goes with it), a kernel link deleted.
pub fn sweep(graph: &Graph<'_>) -> Result<()> {
    let found = ours()?;
    let held = held(graph, None)?;
    remove_orphans(&found, &held)
}

/// Removes what `found` has that `held` does not.
pub fn remove_orphans(found: &Ours, held: &BTreeSet<String>) -> Result<()> {
    for name in found.userspace.iter().filter(|n| !held.contains(*n)) {
        device::stop_userspace(name);
    }
    let orphans: Vec<String> = found.links.iter().filter(|n| !held.contains(*n)).cloned().collect();
    netlink::within(NODE_NETNS, |rtnl| {
        for link in owned::ours_on_node(rtnl)? {
            if orphans.contains(&link.name) {
                links::delete(rtnl, link.index)?;
            }
        }
        Ok(())
    })?;
    Ok(())
}
