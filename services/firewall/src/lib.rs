//! netsvc-firewall: NetworkPolicy-style isolation for containers on nftables,
//! as a CNI plugin chained after an interface plugin.
//!
//! The shell: read and validate, lock the network, record the graph change
//! with the call's intent, then program the kernel (the core's
//! [`Session::intended`]). ADD and DEL change set elements only
//! ([`model::membership`]); a config that differs from the one last
//! rendered, a kernel that lost what was recorded, or a call that died
//! before this one take the full path (`Firewall::plan_network`), which
//! diffs the network against the kernel and applies the difference
//! atomically.

#![forbid(unsafe_code)]

pub mod config;
pub mod drift;
pub mod explain;
pub mod kernel;
pub mod model;
pub mod render;
mod service;
pub mod stmt;

pub use service::DESCRIPTION;

use config::FirewallConf;
use model::Membership;
use netsvc_core::cni::{Call, CniError, CniResult, Descriptor, Feature, NetConf, Plugin, Result};
use netsvc_core::graph::{
    Endpoint, Graph, Intent, Op, Session, Tx, checked_endpoint, endpoint_from_call, record_network,
};
use netsvc_core::naming::digest_hex;
use netsvc_core::nft::ElementOp;
use netsvc_core::node::NodeName;
use netsvc_core::reconcile::{Difference, Reconcile, Repair, Summary};
use netsvc_core::store::{LockGuard, Store, open_for};
use serde::{Deserialize, Serialize};

/// The plugin type, and this service's name in the graph.
pub const SERVICE: &str = "netsvc-firewall";
pub(crate) const SETTINGS: &str = "settings";
/// The lock of full renders; a leading `_` keeps it apart from network names.
const TABLE_LOCK: &str = "_netsvc-firewall";
pub use netsvc_core::cni::CODE_STATE_MISSING;

/// What the firewall last rendered for a network: the config, and how many
/// endpoints it holds there (so DEL knows the last one without a listing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rendered {
    pub conf: FirewallConf,
    pub digest: String,
    pub endpoints: u64,
}

pub fn digest(conf: &FirewallConf) -> String {
    digest_hex(serde_json::to_string(conf).unwrap_or_default().as_bytes())
}

pub struct Firewall;

/// What a call programs: decided under the network's lock, committed with
/// the call's intent, then applied (DESIGN.md, "One plugin call").
enum Program {
    /// One endpoint's set elements: ADD and DEL of a network already rendered.
    Members(ElementOp, Membership),
    /// The network's whole difference against the kernel.
    Full(Full),
}

/// A full render, planned: the commands, and the table's lock held until
/// they are applied.
struct Full {
    cmds: Vec<render::Cmd>,
    /// The kernel the commands were planned against.
    current: kernel::Current,
    endpoints: usize,
    changes: usize,
    _table: LockGuard,
}

impl Full {
    fn apply(self) -> Result<(usize, usize)> {
        kernel::apply(&self.cmds)?;
        Ok((self.endpoints, self.changes))
    }
}

impl Firewall {
    /// The full path: every endpoint the firewall holds in the network, the
    /// plan of `conf`, diffed against the kernel. With no endpoint left the
    /// network's chains and sets go.
    fn plan_network(store: &dyn Store, tx: &mut Tx<'_>, conf: &FirewallConf) -> Result<Full> {
        // Full renders of different networks read, diff and write the shared
        // base chain: one at a time (element-only fast paths need no lock).
        let table = store.lock_network(TABLE_LOCK, netsvc_core::graph::LOCK_TIMEOUT)?;
        let network = tx.network_name().to_string();
        // Sets hold the network's endpoints on every node; the chains live
        // on this node while it holds one of them.
        let endpoints: Vec<Endpoint> = tx.endpoints()?.into_iter().filter(|e| e.held_by(SERVICE)).collect();
        let local = endpoints.iter().filter(|e| e.is_on(tx.node())).count();
        let plan = model::plan(&network, conf);
        let current = kernel::read()?;
        let cmds = if local == 0 {
            tx.remove_record::<Rendered>(SERVICE, SETTINGS)?;
            if tx.endpoints()?.is_empty() {
                tx.remove_network()?;
            }
            render::reconcile(&plan.prefix, None, &current)
        } else {
            let memberships: Vec<_> = endpoints.iter().map(|e| model::membership(&plan, e)).collect();
            let desired = render::Desired::new(&plan, &memberships);
            let rendered = Rendered {
                conf: conf.clone(),
                digest: digest(conf),
                endpoints: local as u64,
            };
            tx.put_record(SERVICE, SETTINGS, &rendered)?;
            render::reconcile(&plan.prefix, Some(&desired), &current)
        };
        // The global declarations are always there; count only real changes.
        let changes = cmds.len().saturating_sub(render::globals().len());
        Ok(Full {
            cmds,
            current,
            endpoints: endpoints.len(),
            changes,
            _table: table,
        })
    }

    /// Applies what a call planned. A fast path the kernel refuses (a set
    /// someone deleted) becomes a full render under the same intent.
    fn program(
        session: &Session<'_, '_>,
        store: &dyn Store,
        p: Program,
        conf: &FirewallConf,
    ) -> Result<(usize, usize)> {
        match p {
            Program::Members(op, m) => match kernel::apply_membership(op, &m) {
                Ok(()) => Ok((0, m.elements.len())),
                Err(e) => {
                    tracing::info!(error = %e.msg, "fast path refused; rendering the network in full");
                    session.transaction(|tx| Self::plan_network(store, tx, conf))?.apply()
                }
            },
            Program::Full(full) => full.apply(),
        }
    }

    /// DEL's graph change under the lock: the endpoint leaves; what to remove
    /// from the kernel. Without a record of the endpoint (a store that lost
    /// it) but with addresses the runtime or the container still shows, the
    /// network is rendered in full, which takes them out of every set.
    fn stage_del(
        store: &dyn Store,
        tx: &mut Tx<'_>,
        call: &Call,
        stale: Option<&Intent>,
    ) -> Result<Option<(Program, FirewallConf)>> {
        let ep = tx.detach_endpoint(&call.env.container_id, &call.env.ifname, SERVICE)?;
        let Some(mut rendered) = tx.get_record::<Rendered>(SERVICE, SETTINGS)? else {
            return Ok(None); // the network was never rendered here
        };
        let program = match ep {
            Some(ep) if stale.is_none() && rendered.endpoints > 1 => {
                rendered.endpoints -= 1;
                tx.put_record(SERVICE, SETTINGS, &rendered)?;
                let plan = model::plan(&call.conf.name, &rendered.conf);
                Program::Members(ElementOp::Destroy, model::membership(&plan, &ep))
            }
            Some(_) => Program::Full(Self::plan_network(store, tx, &rendered.conf)?),
            None if stale.is_some() => Program::Full(Self::plan_network(store, tx, &rendered.conf)?),
            // The full path takes out of the sets (the global one too) every
            // address no endpoint of the graph holds.
            None if !netsvc_core::attachment::runtime_addresses(call).is_empty() => {
                Program::Full(Self::plan_network(store, tx, &rendered.conf)?)
            }
            None => return Ok(None),
        };
        Ok(Some((program, rendered.conf)))
    }

    /// DEL of one attachment under a held lock (also how a failed ADD undoes itself).
    fn del_locked(session: &Session<'_, '_>, store: &dyn Store, call: &Call) -> Result<()> {
        let intent = Intent::attachment(Op::Del, &call.env.container_id, &call.env.ifname);
        session.intended(
            SERVICE,
            intent,
            |tx, stale| Self::stage_del(store, tx, call, stale),
            |s, (p, conf)| Self::program(s, store, p, &conf).map(drop),
            // Destroying is idempotent: the next call finishes the intent.
            |_| Ok(()),
        )?;
        Ok(())
    }
}

impl Plugin for Firewall {
    fn descriptor(&self) -> Descriptor {
        Descriptor {
            plugin_type: SERVICE.into(),
            provides: vec![Feature::Policy],
            requires: vec![Feature::Interface, Feature::Ip],
            // It acts on traffic that passes through the node.
            prefers: vec![Feature::HostVeth],
            capabilities: vec!["aliases".into()],
            ..Default::default()
        }
    }

    fn add(&self, call: &Call) -> Result<CniResult> {
        let conf = FirewallConf::from_netconf(&call.conf)?;
        let prev = call.chained_prev_result()?;
        let ep = endpoint_from_call(call, &prev, SERVICE)?;
        netsvc_core::bridged::pass_bridged_traffic(&prev)?;
        let store = open_for(&call.conf)?;
        let graph = Graph::new(&store, &call.node);
        let session = graph.lock(&call.conf.name)?;
        let intent = Intent::adding(&ep);
        session.intended(
            SERVICE,
            intent,
            |tx, stale| -> Result<Option<Program>> {
                record_network(tx, &prev)?;
                let newly = tx.attach_endpoint(&ep, SERVICE)?;
                let rendered: Option<Rendered> = tx.get_record(SERVICE, SETTINGS)?;
                // A dead call's leftovers are found by the full path only.
                let program = match rendered.filter(|r| r.digest == digest(&conf) && stale.is_none()) {
                    Some(mut r) => {
                        r.endpoints += u64::from(newly);
                        tx.put_record(SERVICE, SETTINGS, &r)?;
                        let plan = model::plan(&call.conf.name, &conf);
                        Program::Members(ElementOp::Add, model::membership(&plan, &ep))
                    }
                    None => Program::Full(Self::plan_network(&store, tx, &conf)?),
                };
                Ok(Some(program))
            },
            |s, p| Self::program(s, &store, p, &conf),
            // Nothing half-done: the kernel first (it works with the store
            // unwritable, and the intent still names the attachment), then
            // the graph, as a DEL.
            |s| {
                let plan = model::plan(&call.conf.name, &conf);
                let _ = kernel::apply_membership(ElementOp::Destroy, &model::membership(&plan, &ep));
                Self::del_locked(s, &store, call)
            },
        )?;
        Ok(prev)
    }

    /// Works from what was rendered (the store), not from this call's config,
    /// so a DEL after a config change removes exactly what ADD made.
    fn del(&self, call: &Call) -> Result<()> {
        let store = open_for(&call.conf)?;
        let graph = Graph::new(&store, &call.node);
        let session = graph.lock(&call.conf.name)?;
        Self::del_locked(&session, &store, call).or_else(|e| {
            // The kernel as the graph would be without the endpoint.
            session.del_without_intent(SERVICE, e, |tx| -> Result<()> {
                tx.detach_endpoint(&call.env.container_id, &call.env.ifname, SERVICE)?;
                if let Some(r) = tx.get_record::<Rendered>(SERVICE, SETTINGS)? {
                    Self::plan_network(&store, tx, &r.conf)?.apply()?;
                }
                Ok(())
            })
        })
    }

    fn check(&self, call: &Call) -> Result<()> {
        let store = open_for(&call.conf)?;
        let graph = Graph::new(&store, &call.node);
        let network = &call.conf.name;
        let missing = |what: String| CniError::state_missing(SERVICE, what);
        let ep = checked_endpoint(&graph, call, SERVICE)?;
        netsvc_core::graph::check_finished(&graph, network, SERVICE)?;
        let rendered: Rendered = graph
            .record(network, SERVICE, SETTINGS)?
            .ok_or_else(|| missing(format!("network {network} was never rendered")))?;
        let plan = model::plan(network, &rendered.conf);
        let current = kernel::read()?;
        for (chain, _) in &plan.chains {
            if !current.chains.contains_key(chain) {
                return Err(missing(format!(
                    "chain {chain} is missing from table inet {}",
                    model::TABLE
                )));
            }
        }
        for (set, ip) in model::membership(&plan, &ep).elements {
            if !current.set_has(&set, ip) {
                return Err(missing(format!("{ip} is missing from set {set}")));
            }
        }
        // Anything else of the network that differs from the store.
        if let Some(d) = Repair::diff(self, &store, &call.node, network)?.first() {
            return Err(missing(format!(
                "{} {} (`netsvc repair` fixes it)",
                d.kind.word(),
                d.object
            )));
        }
        Ok(())
    }

    /// Drops the endpoints of attachments that are gone, then re-renders the
    /// network from what remains (which also repairs drift).
    fn gc(&self, call: &Call) -> Result<()> {
        let store = open_for(&call.conf)?;
        let graph = Graph::new(&store, &call.node);
        let session = graph.lock(&call.conf.name)?;
        session.intended(
            SERVICE,
            Intent::network(Op::Gc),
            |tx, _| -> Result<Option<(Full, FirewallConf)>> {
                let Some(rendered) = tx.get_record::<Rendered>(SERVICE, SETTINGS)? else {
                    return Ok(None);
                };
                // The runtime lists this node's containers only.
                for ep in tx.local_endpoints(SERVICE)? {
                    if !call.gc_keeps(&ep.container_id, &ep.ifname) {
                        tx.detach_endpoint(&ep.container_id, &ep.ifname, SERVICE)?;
                    }
                }
                Ok(Some((Self::plan_network(&store, tx, &rendered.conf)?, rendered.conf)))
            },
            |_, (full, _)| full.apply().map(drop),
            |_| Ok(()),
        )?;
        Ok(())
    }

    /// 50 when nft cannot run or the kernel refuses our table.
    fn status(&self, _call: &Call) -> Result<()> {
        kernel::read()
            .map(drop)
            .map_err(|e| CniError::not_available(format!("netsvc-firewall cannot read nftables: {e}")))
    }
}

impl Reconcile for Firewall {
    fn plugin_type(&self) -> &'static str {
        SERVICE
    }

    fn reconcile(&self, conf: &NetConf, node: &NodeName) -> Result<Summary> {
        let fw = FirewallConf::from_netconf(conf)?;
        let store = open_for(conf)?;
        let graph = Graph::new(&store, node);
        let session = graph.lock(&conf.name)?;
        let (endpoints, changes) = session
            .intended(
                SERVICE,
                Intent::network(Op::Render),
                |tx, _| Self::plan_network(&store, tx, &fw).map(Some),
                |_, full| full.apply(),
                |_| Ok(()),
            )?
            .unwrap_or_default();
        Ok(Summary {
            service: SERVICE.into(),
            network: conf.name.clone(),
            endpoints,
            changes,
        })
    }
}

impl Repair for Firewall {
    fn plugin_type(&self) -> &'static str {
        SERVICE
    }

    fn diff(&self, store: &dyn Store, node: &NodeName, network: &str) -> Result<Vec<Difference>> {
        let graph = Graph::new(store, node);
        let session = graph.lock(network)?;
        session.dry_run(SERVICE, |tx, _| match tx.get_record::<Rendered>(SERVICE, SETTINGS)? {
            Some(r) => {
                let full = Self::plan_network(store, tx, &r.conf)?;
                Ok(drift::differences(network, &full.cmds, &full.current))
            }
            None => Ok(Vec::new()),
        })
    }

    fn repair(&self, store: &dyn Store, node: &NodeName, network: &str) -> Result<Vec<Difference>> {
        let graph = Graph::new(store, node);
        let session = graph.lock(network)?;
        let fixed = session.intended(
            SERVICE,
            Intent::network(Op::Render),
            |tx, stale| -> Result<Option<(Full, Vec<Difference>)>> {
                let Some(r) = tx.get_record::<Rendered>(SERVICE, SETTINGS)? else {
                    return Ok(None);
                };
                let full = Self::plan_network(store, tx, &r.conf)?;
                let found = drift::differences(network, &full.cmds, &full.current);
                Ok((!found.is_empty() || stale.is_some()).then_some((full, found)))
            },
            |_, (full, found)| {
                full.apply()?;
                Ok(found)
            },
            |_| Ok(()),
        )?;
        Ok(fixed.unwrap_or_default())
    }
}
