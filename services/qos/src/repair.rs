//! Whole-network passes, each as one call with an intent: `netsvc apply`
//! (a conflist's rates onto every endpoint, [`Reconcile`]) and `netsvc
//! repair` (the kernel onto what the store wants, [`Repair`]).

use std::collections::BTreeSet;

use netsvc_core::cni::{NetConf, Result};
use netsvc_core::graph::{Graph, Intent, Op, Tx};
use netsvc_core::node::NodeName;
use netsvc_core::reconcile::{Difference, Reconcile, Repair, Summary};
use netsvc_core::store::{Store, open_for};

use crate::applied::{self, Applied, forget, shaping};
use crate::config::QosConf;
use crate::drift::{self, Wanted};
use crate::shape::{self, Teardown};
use crate::{Cleanup, Qos, SERVICE, kernel};

/// An endpoint to shape again; `restart` when a direction may have gone
/// (its devices are unshaped first).
struct Reshape {
    applied: Applied,
    restart: Option<String>,
}

impl Reconcile for Qos {
    fn plugin_type(&self) -> &'static str {
        SERVICE
    }

    /// Re-shapes every endpoint of the network whose shaping differs from
    /// `conf` or lost something in the kernel. A conflist without static
    /// rates keeps each endpoint's (they came from the capability).
    fn reconcile(&self, conf: &NetConf, node: &NodeName) -> Result<Summary> {
        let wanted = QosConf::from_netconf(conf)?;
        let static_rates = wanted.ingress.is_some() || wanted.egress.is_some();
        let store = open_for(conf)?;
        let graph = Graph::new(&store, node);
        let session = graph.lock(&conf.name)?;
        let mut endpoints = 0;
        let changes = session.intended(
            SERVICE,
            Intent::network(Op::Render),
            |tx, stale| -> Result<Option<(Cleanup, Vec<Reshape>)>> {
                let cleanup = Cleanup::of(tx, stale)?;
                let records = applied::local_records(tx)?;
                endpoints = records.len();
                // One read of the kernel for the whole network.
                let seen = drift::observe(drift::devices(records.iter().map(|(_, a)| a)))?;
                let mut work = Vec::new();
                for (ep, applied) in records {
                    if static_rates && wanted != applied.qos {
                        let fresh = Applied::new(
                            applied.host_veth,
                            applied.mtu,
                            wanted.clone(),
                            &ep.container_id,
                            &ep.ifname,
                        );
                        tx.put_record(SERVICE, &ep.id(), &fresh)?;
                        tx.put_shaping(&shaping(&ep.id(), &fresh.qos))?;
                        let ifb = kernel::ifb_name(&ep.container_id, &ep.ifname);
                        work.push(Reshape {
                            applied: fresh,
                            restart: Some(ifb),
                        });
                    } else if !drift::of_endpoint(&conf.name, &applied, &seen).is_empty() {
                        work.push(Reshape { applied, restart: None });
                    }
                }
                Ok((!work.is_empty() || !cleanup.is_empty()).then_some((cleanup, work)))
            },
            |s, (cleanup, work)| {
                cleanup.run(s.graph())?;
                for w in &work {
                    if let Some(ifb) = &w.restart {
                        shape::unapply(Some(&w.applied.host_veth), Some(ifb))?;
                    }
                    shape::apply(&w.applied, None)?;
                }
                Ok(work.len())
            },
            |_| Ok(()),
        )?;
        Ok(Summary {
            service: SERVICE.into(),
            network: conf.name.clone(),
            endpoints,
            changes: changes.unwrap_or(0),
        })
    }
}

/// What a repair changes, with the differences it fixes.
struct Plan {
    found: Vec<Difference>,
    reshape: Vec<Applied>,
    rolled_back: Vec<Teardown>,
    extra_ifbs: Vec<String>,
    /// What it cannot fix (a host veth that is gone: DEL and GC's to clean up).
    unfixable: Vec<Difference>,
}

impl Plan {
    fn is_empty(&self) -> bool {
        self.reshape.is_empty() && self.rolled_back.is_empty() && self.extra_ifbs.is_empty()
    }

    fn differences(self) -> Vec<Difference> {
        let mut all = self.found;
        all.extend(self.unfixable);
        all
    }
}

/// The network as the store wants it on this node (with what a dead ADD
/// left rolled back) against the kernel.
fn plan(graph: &Graph<'_>, tx: &mut Tx<'_>, stale: Option<&Intent>) -> Result<Plan> {
    let network = tx.network_name().to_string();
    let mut rolled_back = Vec::new();
    if let Some((id, ifname)) = stale.and_then(Intent::added)
        && let Some(record) = forget(tx, id, ifname)?
    {
        rolled_back.push((id.to_string(), ifname.to_string(), record));
    }
    let shaped: Vec<Applied> = applied::local_records(tx)?.into_iter().map(|(_, a)| a).collect();
    let mut held = held_elsewhere(graph, &network)?;
    held.extend(shaped.iter().filter_map(|a| a.ifb.clone()));
    let seen = drift::observe(drift::devices(
        shaped.iter().chain(rolled_back.iter().map(|(_, _, a)| a)),
    ))?;
    let mut out = Plan {
        found: Vec::new(),
        reshape: Vec::new(),
        rolled_back: Vec::new(),
        extra_ifbs: Vec::new(),
        unfixable: Vec::new(),
    };
    for a in &shaped {
        let found = drift::of_endpoint(&network, a, &seen);
        if found.is_empty() {
            continue;
        }
        if seen.links.contains_key(&a.host_veth) {
            out.found.extend(found);
            out.reshape.push(a.clone());
        } else {
            out.unfixable.extend(found);
        }
    }
    let rest = Wanted {
        shaped: Vec::new(),
        rolled_back: rolled_back.iter().map(|(_, _, a)| a).collect(),
        held_ifbs: held,
    };
    for d in drift::differences(&network, &rest, &seen) {
        if let Some(ifb) = d.object.strip_prefix("link ") {
            out.extra_ifbs.push(ifb.to_string());
        }
        out.found.push(d);
    }
    // What it shaped on its host veth comes off (and its ifb goes).
    out.rolled_back = rolled_back
        .iter()
        .map(|(id, ifname, record)| Teardown::of(id, ifname, Some(record), None))
        .collect();
    Ok(out)
}

/// The ifbs records of the node's other networks hold.
fn held_elsewhere(graph: &Graph<'_>, network: &str) -> Result<BTreeSet<String>> {
    let mut held = BTreeSet::new();
    for other in graph.networks()?.into_iter().filter(|n| n.name != network) {
        held.extend(
            applied::records(graph, &other.name)?
                .into_iter()
                .filter_map(|(_, a)| a.ifb),
        );
    }
    Ok(held)
}

/// Converges the kernel on `plan`.
fn fix(plan: &Plan) -> Result<()> {
    for t in &plan.rolled_back {
        t.run()?;
    }
    for a in &plan.reshape {
        shape::apply(a, None)?;
    }
    shape::remove_ifbs(&plan.extra_ifbs)
}

impl Repair for Qos {
    fn plugin_type(&self) -> &'static str {
        SERVICE
    }

    /// Under the lock (an intent found is then a dead call's), with a dead
    /// ADD rolled back as the next call would, in a transaction never committed.
    fn diff(&self, store: &dyn Store, node: &NodeName, network: &str) -> Result<Vec<Difference>> {
        let graph = Graph::new(store, node);
        let session = graph.lock(network)?;
        session.dry_run(SERVICE, |tx, stale| Ok(plan(&graph, tx, stale)?.differences()))
    }

    fn repair(&self, store: &dyn Store, node: &NodeName, network: &str) -> Result<Vec<Difference>> {
        let graph = Graph::new(store, node);
        let session = graph.lock(network)?;
        let fixed = session.intended(
            SERVICE,
            Intent::network(Op::Render),
            |tx, stale| -> Result<Option<Plan>> {
                let plan = plan(&graph, tx, stale)?;
                Ok((!plan.is_empty() || stale.is_some()).then_some(plan))
            },
            |_, plan| {
                fix(&plan)?;
                Ok(plan.found)
            },
            |_| Ok(()),
        )?;
        Ok(fixed.unwrap_or_default())
    }
}
