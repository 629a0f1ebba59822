//! The kernel step of a call: shaping an endpoint's devices, taking the
//! shaping of an attachment off again (from its record, or from the names
//! it always gets), and removing ifbs of ours no record holds.

use std::collections::BTreeSet;
use std::path::Path;

use netsvc_core::cni::{CniError, Result};
use netsvc_core::graph::Graph;
use netsvc_core::netlink::links::{self, Link, host_veth_peer};
use netsvc_core::netlink::tc::Psched;
use netsvc_core::netlink::{self, NetlinkError};

use crate::applied::{self, Applied};
use crate::plan::Side;
use crate::{NODE_NETNS, kernel};

/// The node-side peer of the container's `ifname`, or why there is none.
pub fn host_side(netns: &Path, ifname: &str) -> Result<Link> {
    match host_veth_peer(netns, ifname, Path::new(NODE_NETNS)) {
        Ok(link) => Ok(link),
        Err(NetlinkError::Invalid { why, .. }) => Err(CniError::invalid_config(
            "prevResult.interfaces",
            format!(
                "{why}: netsvc-qos shapes on the node side of a veth pair; chain it after bridge or ptp \
                 (macvlan, ipvlan and host-device leave no such peer)"
            ),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Shapes the devices of `a`: the host veth's tree, the ifb's, the
/// redirect. `veth` is the host veth's index when the caller knows it.
/// Whatever tree the devices had is replaced, so applying twice is applying once.
pub fn apply(a: &Applied, veth: Option<u32>) -> Result<()> {
    let ps = Psched::from_proc().unwrap_or_default();
    netlink::within(NODE_NETNS, |rtnl| {
        let veth = match veth {
            Some(index) => index,
            None => links::get_by_name(rtnl, &a.host_veth)?.index,
        };
        let ifb = a
            .ifb
            .as_deref()
            .map(|name| kernel::ensure_ifb(rtnl, name))
            .transpose()?;
        let mut requests = Vec::new();
        for (side, _, plan) in a.plans() {
            // `plans` has a from-container tree only when there is an ifb.
            let index = match (side, ifb) {
                (Side::FromContainer, Some(ifb)) => ifb,
                _ => veth,
            };
            requests.extend(kernel::shaping(index, &plan, &ps)?);
        }
        if let Some(ifb) = ifb {
            // Up only once shaped: a qdisc grafted on a running device waits
            // for an RCU grace period, one on a down device does not.
            requests.push(links::up(ifb));
            requests.extend(kernel::redirect_to_ifb(veth, ifb)?);
        }
        // One datagram: the kernel takes the changes in this order.
        rtnl.apply(&requests).map(drop)
    })?;
    Ok(())
}

/// Takes the shaping off `host_veth` and removes `ifb`; gone already is fine.
pub fn unapply(host_veth: Option<&str>, ifb: Option<&str>) -> Result<()> {
    netlink::within(NODE_NETNS, |rtnl| kernel::unshape(rtnl, host_veth, ifb))?;
    Ok(())
}

/// What of one attachment leaves the kernel.
#[derive(Debug, Clone, PartialEq)]
pub struct Teardown {
    /// The host veth the record names: its root and ingress qdiscs go.
    pub host_veth: Option<String>,
    /// The ifb the attachment always gets.
    pub ifb: String,
    /// Without a record: the container's namespace, where the host veth is
    /// found as its interface's peer (only our shaping comes off it).
    pub netns: Option<std::path::PathBuf>,
    pub ifname: String,
}

impl Teardown {
    /// The attachment `container_id`/`ifname`, with its record if there is one.
    pub fn of(container_id: &str, ifname: &str, record: Option<&Applied>, netns: Option<&Path>) -> Teardown {
        Teardown {
            host_veth: record.map(|a| a.host_veth.clone()),
            ifb: kernel::ifb_name(container_id, ifname),
            netns: netns.filter(|_| record.is_none()).map(Path::to_path_buf),
            ifname: ifname.to_string(),
        }
    }

    /// Idempotent: what is gone already is fine, and so is a namespace
    /// that is gone or no network namespace (the veth went with it).
    pub fn run(&self) -> Result<()> {
        unapply(self.host_veth.as_deref(), Some(&self.ifb))?;
        let Some(netns) = &self.netns else {
            return Ok(());
        };
        if netsvc_core::netns::check_net_namespace(netns).is_err() {
            return Ok(());
        }
        let veth = match host_veth_peer(netns, &self.ifname, Path::new(NODE_NETNS)) {
            Ok(link) => link.name,
            Err(_) => return Ok(()), // no veth pair there: nothing of ours on it
        };
        netlink::within(NODE_NETNS, |rtnl| kernel::unshape_ours(rtnl, &veth))?;
        Ok(())
    }
}

/// Every ifb a record of any network on this node holds.
pub fn held_ifbs(graph: &Graph<'_>) -> Result<BTreeSet<String>> {
    let mut held = BTreeSet::new();
    for network in graph.networks()? {
        for (_, a) in applied::records(graph, &network.name)? {
            held.extend(a.ifb);
        }
    }
    Ok(held)
}

/// The ifbs of ours on the node, listed before the records are read: an
/// ADD records its ifb before making it, so one listed here and held by no
/// record read afterwards is an orphan (a dead call's, or a DEL's that
/// cannot have a record any more).
pub fn orphan_ifbs(graph: &Graph<'_>) -> Result<Vec<String>> {
    let ours = netlink::within(NODE_NETNS, kernel::our_ifbs)?;
    let held = held_ifbs(graph)?;
    Ok(ours.into_iter().filter(|i| !held.contains(i)).collect())
}

/// Removes the ifbs of ours no record holds; the ones removed.
pub fn sweep_orphans(graph: &Graph<'_>) -> Result<Vec<String>> {
    let orphans = orphan_ifbs(graph)?;
    remove_ifbs(&orphans)?;
    Ok(orphans)
}

/// Removes the ifbs called `names`; gone already is fine.
pub fn remove_ifbs(names: &[String]) -> Result<()> {
    netlink::within(NODE_NETNS, |rtnl| {
        for ifb in names {
            links::delete_by_name(rtnl, ifb)?;
        }
        Ok(())
    })?;
    Ok(())
}
