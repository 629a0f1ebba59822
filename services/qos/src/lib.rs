//! netsvc-qos: shapes an endpoint's traffic both ways with HTB over
//! netlink, as a CNI plugin chained after an interface plugin that leaves a
//! veth peer on the node (bridge, ptp).
//!
//! Traffic to the container is shaped on the host veth's egress; traffic
//! from it arrives on the host veth's ingress, which redirects it to a
//! per-endpoint ifb shaped the same way.
//!
//! Every call takes the order of the core's `Session::intended`: validate,
//! lock the network, commit the graph change with the call's intent, shape
//! or unshape, clear the intent. So DEL, CHECK and GC know the devices even
//! when the kernel or the container is already gone, and what a call that
//! died left (its ifb, the qdiscs on its host veth) is taken off by the next.

#![forbid(unsafe_code)]

pub mod applied;
pub mod config;
pub mod drift;
pub mod kernel;
pub mod plan;
pub mod shape;
pub mod units;

mod repair;
mod service;

pub use service::DESCRIPTION;

use applied::{Applied, forget, shaping};
use config::QosConf;
use netsvc_core::cni::{Call, CniError, CniResult, Descriptor, Feature, Plugin, Result};
use netsvc_core::graph::{Graph, Intent, Op, Session, Tx, checked_endpoint, endpoint_from_call, record_network};
use netsvc_core::netlink::tc::Psched;
use netsvc_core::store::open_for;
use shape::Teardown;

/// The plugin type, and this service's name in the graph.
pub const SERVICE: &str = "netsvc-qos";
/// The plugin's own namespace: the node's.
const NODE_NETNS: &str = netsvc_core::netns::OWN;

pub struct Qos;

/// What a call that died before this one left in the kernel, found under
/// the lock: a dead ADD's attachment (rolled back in the graph by the core;
/// its records go here) loses its shaping, a dead DEL's its ifb; and ifbs
/// no record holds go.
#[derive(Default)]
struct Cleanup {
    stale: Option<Teardown>,
    sweep: bool,
}

impl Cleanup {
    fn of(tx: &mut Tx<'_>, stale: Option<&Intent>) -> Result<Cleanup> {
        let Some(intent) = stale else {
            return Ok(Cleanup::default());
        };
        let teardown = match intent.target() {
            Some((id, ifname)) => {
                // A dead DEL committed its records' removal already.
                let record = if intent.added().is_some() {
                    forget(tx, id, ifname)?
                } else {
                    None
                };
                Some(Teardown::of(id, ifname, record.as_ref(), None))
            }
            None => None,
        };
        Ok(Cleanup {
            stale: teardown,
            sweep: true,
        })
    }

    fn is_empty(&self) -> bool {
        self.stale.is_none() && !self.sweep
    }

    fn run(&self, graph: &Graph<'_>) -> Result<()> {
        if let Some(t) = &self.stale {
            t.run()?;
        }
        if self.sweep {
            shape::sweep_orphans(graph)?;
        }
        Ok(())
    }
}

impl Qos {
    /// DEL of one attachment under a held lock (also how a failed ADD
    /// undoes itself). `None` when the store had nothing to take out.
    fn del_locked(session: &Session<'_, '_>, call: &Call) -> Result<Option<()>> {
        let (container_id, ifname) = (&call.env.container_id, &call.env.ifname);
        let netns = call.env.netns.as_deref();
        session.intended(
            SERVICE,
            Intent::attachment(Op::Del, container_id, ifname),
            |tx, stale| -> Result<Option<(Cleanup, Teardown)>> {
                let cleanup = Cleanup::of(tx, stale)?;
                let record = forget(tx, container_id, ifname)?;
                if record.is_none() && cleanup.is_empty() {
                    return Ok(None);
                }
                Ok(Some((
                    cleanup,
                    Teardown::of(container_id, ifname, record.as_ref(), netns),
                )))
            },
            |s, (cleanup, own)| {
                cleanup.run(s.graph())?;
                own.run()
            },
            // Unshaping is idempotent: the next call finishes the intent.
            |_| Ok(()),
        )
    }
}

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
        let host = shape::host_side(netns, &call.env.ifname)?;
        let ep = endpoint_from_call(call, &prev, SERVICE)?;
        let (container_id, ifname) = (&call.env.container_id, &call.env.ifname);
        let applied = Applied::new(host.name.clone(), host.mtu.unwrap_or(1500), qos, container_id, ifname);
        let store = open_for(&call.conf)?;
        let graph = Graph::new(&store, &call.node);
        let session = graph.lock(&call.conf.name)?;
        let intent = Intent::adding(&ep);
        // Recorded before the kernel is touched, so a GC running meanwhile
        // never takes the new ifb for an orphan.
        session.intended(
            SERVICE,
            intent,
            |tx, stale| -> Result<Option<Cleanup>> {
                let cleanup = Cleanup::of(tx, stale)?;
                record_network(tx, &prev)?;
                tx.attach_endpoint(&ep, SERVICE)?;
                tx.put_record(SERVICE, &ep.id(), &applied)?;
                tx.put_shaping(&shaping(&ep.id(), &applied.qos))?;
                Ok(Some(cleanup))
            },
            |s, cleanup| {
                cleanup.run(s.graph())?;
                shape::apply(&applied, Some(host.index))
            },
            // Nothing half-done: the kernel first (it works with the store
            // unwritable), then the graph, as a DEL.
            |s| {
                let _ = shape::unapply(Some(&applied.host_veth), applied.ifb.as_deref());
                Self::del_locked(s, call).map(drop)
            },
        )?;
        Ok(prev)
    }

    /// Works from the record (the devices ADD shaped); without one, from the
    /// ifb name the attachment always gets and the peer of its interface.
    fn del(&self, call: &Call) -> Result<()> {
        let (container_id, ifname) = (&call.env.container_id, &call.env.ifname);
        let netns = call.env.netns.as_deref();
        let store = open_for(&call.conf)?;
        let graph = Graph::new(&store, &call.node);
        let session = graph.lock(&call.conf.name)?;
        match Self::del_locked(&session, call) {
            Ok(Some(())) => Ok(()),
            // Nothing recorded (a store that lost the document, or a DEL
            // again): what the attachment would have goes by its names.
            Ok(None) => Teardown::of(container_id, ifname, None, netns).run(),
            Err(e) => session.del_without_intent(SERVICE, e, |tx| -> Result<()> {
                let record = forget(tx, container_id, ifname)?;
                Teardown::of(container_id, ifname, record.as_ref(), netns).run()
            }),
        }
    }

    /// Fails (code 120) unless every shaped device holds the tree ADD gave it.
    fn check(&self, call: &Call) -> Result<()> {
        let store = open_for(&call.conf)?;
        let graph = Graph::new(&store, &call.node);
        let network = &call.conf.name;
        let ep = checked_endpoint(&graph, call, SERVICE)?;
        let missing = |what: String| CniError::state_missing(SERVICE, what);
        netsvc_core::graph::check_finished(&graph, network, SERVICE)?;
        let applied: Applied = graph
            .record(network, SERVICE, &ep.id())?
            .ok_or_else(|| missing(format!("nothing recorded for {}", ep.id())))?;
        let wanted = QosConf::from_netconf(&call.conf)?;
        if wanted != applied.qos {
            return Err(missing("the shaping applied differs from this config".into()));
        }
        match drift::lost(network, &applied)? {
            Some(what) => Err(missing(what)),
            None => Ok(()),
        }
    }

    /// Drops the shaping of attachments that are gone, and any ifb of ours
    /// no record of any network holds.
    fn gc(&self, call: &Call) -> Result<()> {
        let store = open_for(&call.conf)?;
        let graph = Graph::new(&store, &call.node);
        let session = graph.lock(&call.conf.name)?;
        session.intended(
            SERVICE,
            Intent::network(Op::Gc),
            |tx, stale| -> Result<Option<(Cleanup, Vec<Teardown>)>> {
                let mut cleanup = Cleanup::of(tx, stale)?;
                cleanup.sweep = true;
                let mut gone = Vec::new();
                // The runtime lists this node's containers only.
                for ep in tx.local_endpoints(SERVICE)? {
                    if !call.gc_keeps(&ep.container_id, &ep.ifname) {
                        let record = forget(tx, &ep.container_id, &ep.ifname)?;
                        gone.push(Teardown::of(&ep.container_id, &ep.ifname, record.as_ref(), None));
                    }
                }
                Ok(Some((cleanup, gone)))
            },
            |s, (cleanup, gone)| {
                for t in &gone {
                    t.run()?;
                }
                cleanup.run(s.graph())
            },
            |_| Ok(()),
        )?;
        Ok(())
    }

    /// 50 when the kernel has no packet scheduler to shape with.
    fn status(&self, _call: &Call) -> Result<()> {
        Psched::from_proc()
            .map(drop)
            .map_err(|e| CniError::not_available(format!("netsvc-qos cannot shape: {e}")))
    }
}
