//! netsvc-qos: shapes an endpoint's traffic both ways with HTB over
//! netlink, as a CNI plugin chained after an interface plugin that leaves a
//! veth peer on the node (bridge, ptp).
//!
//! Traffic to the container is shaped on the host veth's egress; traffic
//! from it arrives on the host veth's ingress, which redirects it to a
//! per-endpoint ifb shaped the same way. ADD records what it applies in the
//! graph first, so DEL, CHECK and GC know the devices even when the kernel
//! or the container is already gone.

pub mod config;
pub mod kernel;
pub mod plan;
pub mod units;

use std::collections::BTreeSet;
use std::path::Path;

use config::{Direction, QosConf, QosSettings};
use netsvc_core::cni::{Call, CniError, CniResult, Descriptor, Feature, NetConf, Plugin, Result};
use netsvc_core::graph::{Graph, Shaping, Tx, checked_endpoint, endpoint_from_call, record_network};
use netsvc_core::netlink::NetlinkError;
use netsvc_core::netlink::links::{self, Link, host_veth_peer};
use netsvc_core::netlink::sync::Rtnl;
use netsvc_core::netlink::tc::{INGRESS_PARENT, Psched, ROOT, handle};
use netsvc_core::reconcile::{Reconcile, Summary};
use netsvc_core::store::open_for;
use plan::{DevicePlan, Side};
use serde::{Deserialize, Serialize};

/// The plugin type, and this service's name in the graph.
pub const SERVICE: &str = "netsvc-qos";
/// The plugin's own namespace: the node's.
const NODE_NETNS: &str = netsvc_core::netns::OWN;

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
    fn new(host_veth: String, mtu: u32, qos: QosSettings, container_id: &str, ifname: &str) -> Applied {
        Applied {
            host_veth,
            ifb: qos.egress.map(|_| kernel::ifb_name(container_id, ifname)),
            mtu,
            qos,
        }
    }

    /// The trees of the shaped devices: (which way, device, plan).
    fn plans(&self) -> Vec<(Side, &str, DevicePlan)> {
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

/// Takes an attachment out of the graph: its endpoint, shaping and record
/// (the record, if there was one).
fn forget(tx: &mut Tx<'_>, container_id: &str, ifname: &str) -> Result<Option<Applied>> {
    let Some(ep) = tx.detach_endpoint(container_id, ifname, SERVICE)? else {
        return Ok(None);
    };
    tx.remove_shaping(&ep.id())?;
    Ok(tx.remove_record(SERVICE, &ep.id())?)
}

pub struct Qos;

impl Plugin for Qos {
    fn descriptor(&self) -> Descriptor {
        Descriptor {
            plugin_type: SERVICE.into(),
            provides: vec![Feature::Shaping],
            requires: vec![Feature::Interface, Feature::HostVeth],
            capabilities: vec!["bandwidth".into()],
            conflicts: vec!["bandwidth".into()],
            ..Default::default()
        }
    }

    fn add(&self, call: &Call) -> Result<CniResult> {
        let qos = QosConf::from_netconf(&call.conf)?;
        let prev = call.chained_prev_result()?;
        if qos.ingress.is_none() && qos.egress.is_none() {
            return Ok(prev); // nothing to shape, as the reference plugin
        }
        let netns = call
            .env
            .netns
            .as_deref()
            .ok_or_else(|| CniError::invalid_env("CNI_NETNS", "ADD needs the container's namespace"))?;
        // Before the namespace is looked into: a path that is none is code 4.
        netsvc_core::netns::check_cni_netns(netns)?;
        let host = host_side(netns, &call.env.ifname)?;
        let ep = endpoint_from_call(call, &prev, SERVICE)?;
        let (container_id, ifname) = (&call.env.container_id, &call.env.ifname);
        let applied = Applied::new(host.name.clone(), host.mtu.unwrap_or(1500), qos, container_id, ifname);
        // Recorded before the kernel is touched, so a GC running meanwhile
        // never takes the new ifb for an orphan.
        let store = open_for(&call.conf)?;
        let graph = Graph::new(&store);
        graph.transaction(&call.conf.name, |tx| -> Result<()> {
            record_network(tx, &prev)?;
            tx.attach_endpoint(&ep, SERVICE)?;
            tx.put_record(SERVICE, &ep.id(), &applied)?;
            tx.put_shaping(&shaping(&ep.id(), &applied.qos))?;
            Ok(())
        })?;
        if let Err(e) = apply(&applied, Some(host.index)) {
            // Nothing half-done: what was applied and recorded goes again.
            let _ = unapply(Some(&applied.host_veth), applied.ifb.as_deref());
            let _ = graph.transaction(&call.conf.name, |tx| forget(tx, container_id, ifname));
            return Err(e);
        }
        Ok(prev)
    }

    /// Works from the record (the devices ADD shaped); without one, from the
    /// ifb name the attachment always gets.
    fn del(&self, call: &Call) -> Result<()> {
        let (container_id, ifname) = (&call.env.container_id, &call.env.ifname);
        let store = open_for(&call.conf)?;
        let applied = Graph::new(&store).transaction(&call.conf.name, |tx| forget(tx, container_id, ifname))?;
        let ifb = kernel::ifb_name(container_id, ifname);
        unapply(applied.as_ref().map(|a| a.host_veth.as_str()), Some(&ifb))
    }

    /// Fails (code 120) unless every shaped device holds the tree ADD gave it.
    fn check(&self, call: &Call) -> Result<()> {
        let store = open_for(&call.conf)?;
        let graph = Graph::new(&store);
        let ep = checked_endpoint(&graph, call, SERVICE)?;
        let missing = |what: String| CniError::state_missing(SERVICE, what);
        let applied: Applied = graph
            .record(&call.conf.name, SERVICE, &ep.id())?
            .ok_or_else(|| missing(format!("nothing recorded for {}", ep.id())))?;
        let wanted = QosConf::from_netconf(&call.conf)?;
        if wanted != applied.qos {
            return Err(missing("the shaping applied differs from this config".into()));
        }
        match drift(&applied)? {
            Some(what) => Err(missing(what)),
            None => Ok(()),
        }
    }

    /// Drops the shaping of attachments that are gone, and any ifb of ours
    /// no record of any network holds.
    fn gc(&self, call: &Call) -> Result<()> {
        let store = open_for(&call.conf)?;
        let graph = Graph::new(&store);
        let gone = graph.transaction(&call.conf.name, |tx| -> Result<Vec<Applied>> {
            let mut gone = Vec::new();
            // The runtime lists this node's containers only.
            for ep in tx.local_endpoints(SERVICE)? {
                if ep.held_by(SERVICE) && !call.gc_keeps(&ep.container_id, &ep.ifname) {
                    gone.extend(forget(tx, &ep.container_id, &ep.ifname)?);
                }
            }
            Ok(gone)
        })?;
        for a in &gone {
            unapply(Some(&a.host_veth), a.ifb.as_deref())?;
        }
        let mut held = BTreeSet::new();
        for network in graph.networks()? {
            for (_, a) in graph.records::<Applied>(&network.name, SERVICE)? {
                held.extend(a.ifb);
            }
        }
        netsvc_core::netns::run(NODE_NETNS, |h| async move {
            for ifb in kernel::our_ifbs(&h).await? {
                if !held.contains(&ifb) {
                    netsvc_core::netlink::links::delete_by_name(&h, &ifb).await?;
                }
            }
            Ok::<_, NetlinkError>(())
        })??;
        Ok(())
    }

    /// 50 when the kernel has no packet scheduler to shape with.
    fn status(&self, _call: &Call) -> Result<()> {
        Psched::from_proc()
            .map(drop)
            .map_err(|e| CniError::not_available(format!("netsvc-qos cannot shape: {e}")))
    }
}

/// What the kernel lost of what `applied` shaped, or `None` when it all holds.
fn drift(applied: &Applied) -> Result<Option<String>> {
    let plans = applied.plans();
    let host_veth = applied.host_veth.clone();
    let devices: Vec<String> = plans.iter().map(|(_, d, _)| d.to_string()).collect();
    let trees = netsvc_core::netns::run(NODE_NETNS, |h| async move {
        let mut trees = Vec::new();
        for d in devices.iter().chain([&host_veth]) {
            trees.push(kernel::tree(&h, d).await?);
        }
        Ok::<_, NetlinkError>(trees)
    })??;
    for ((_, device, plan), tree) in plans.iter().zip(&trees) {
        let Some(tree) = tree else {
            return Ok(Some(format!("{device} is gone")));
        };
        let root = tree.qdiscs.iter().find(|q| q.parent == ROOT);
        if !root.is_some_and(|q| q.kind == "htb" && q.handle == handle(plan::MAJOR, 0)) {
            return Ok(Some(format!("{device} has no HTB root qdisc")));
        }
        let classes: BTreeSet<u32> = tree.classes.iter().map(|c| c.handle).collect();
        if let Some(c) = plan.classes.iter().find(|c| !classes.contains(&c.id)) {
            return Ok(Some(format!(
                "{device} lost class {:x}:{:x}",
                c.id >> 16,
                c.id & 0xffff
            )));
        }
    }
    let veth = trees.last().and_then(Option::as_ref);
    if applied.ifb.is_some() && !veth.is_some_and(|t| t.qdiscs.iter().any(|q| q.parent == INGRESS_PARENT)) {
        return Ok(Some(format!("{} no longer redirects to the ifb", applied.host_veth)));
    }
    Ok(None)
}

impl Reconcile for Qos {
    fn plugin_type(&self) -> &'static str {
        SERVICE
    }

    /// Re-shapes every endpoint of the network whose shaping differs from
    /// `conf` or lost something in the kernel. A conflist without static
    /// rates keeps each endpoint's (they came from the capability).
    fn reconcile(&self, conf: &NetConf) -> Result<Summary> {
        let wanted = QosConf::from_netconf(conf)?;
        let store = open_for(conf)?;
        let graph = Graph::new(&store);
        let (endpoints, changes) = graph.transaction(&conf.name, |tx| -> Result<(usize, usize)> {
            let (mut endpoints, mut changes) = (0, 0);
            for ep in tx.endpoints()?.into_iter().filter(|e| e.held_by(SERVICE)) {
                let Some(mut applied) = tx.get_record::<Applied>(SERVICE, &ep.id())? else {
                    continue;
                };
                endpoints += 1;
                let static_rates = wanted.ingress.is_some() || wanted.egress.is_some();
                let changed = static_rates && wanted != applied.qos;
                if changed {
                    // A direction may have gone: start from nothing.
                    let ifb = kernel::ifb_name(&ep.container_id, &ep.ifname);
                    unapply(Some(&applied.host_veth), Some(&ifb))?;
                    let (host_veth, mtu) = (applied.host_veth, applied.mtu);
                    applied = Applied::new(host_veth, mtu, wanted.clone(), &ep.container_id, &ep.ifname);
                    tx.put_record(SERVICE, &ep.id(), &applied)?;
                    tx.put_shaping(&shaping(&ep.id(), &applied.qos))?;
                }
                if changed || drift(&applied)?.is_some() {
                    apply(&applied, None)?;
                    changes += 1;
                }
            }
            Ok((endpoints, changes))
        })?;
        Ok(Summary {
            service: SERVICE.into(),
            network: conf.name.clone(),
            endpoints,
            changes,
        })
    }
}

/// The node-side peer of the container's `ifname`, or why there is none.
fn host_side(netns: &Path, ifname: &str) -> Result<Link> {
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
fn apply(a: &Applied, veth: Option<u32>) -> Result<()> {
    let ps = Psched::from_proc().unwrap_or_default();
    netsvc_core::netns::run_sync(NODE_NETNS, || -> Result<(), NetlinkError> {
        let mut rtnl = Rtnl::open()?;
        let veth = match veth {
            Some(index) => index,
            None => {
                rtnl.find_by_name(&a.host_veth)?
                    .ok_or_else(|| NetlinkError::LinkNotFound(a.host_veth.clone()))?
                    .index
            }
        };
        let ifb = a
            .ifb
            .as_deref()
            .map(|name| kernel::ensure_ifb(&mut rtnl, name))
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
    })??;
    Ok(())
}

fn unapply(host_veth: Option<&str>, ifb: Option<&str>) -> Result<()> {
    let (host_veth, ifb) = (host_veth.map(str::to_string), ifb.map(str::to_string));
    netsvc_core::netns::run(NODE_NETNS, |h| async move {
        kernel::unshape(&h, host_veth.as_deref(), ifb.as_deref()).await
    })??;
    Ok(())
}

/// The graph's view of an endpoint's shaping (bits/s and bits).
fn shaping(endpoint: &str, q: &QosSettings) -> Shaping {
    let burst_bits = |d: &Direction| Some(d.burst.unwrap_or_else(|| plan::default_burst(d.rate)) * 8);
    Shaping {
        endpoint: endpoint.to_string(),
        ingress_rate: q.ingress.map(|d| d.rate),
        ingress_burst: q.ingress.as_ref().and_then(burst_bits),
        egress_rate: q.egress.map(|d| d.rate),
        egress_burst: q.egress.as_ref().and_then(burst_bits),
    }
}
