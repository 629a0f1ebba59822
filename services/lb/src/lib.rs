//! netsvc-lb: service virtual IPs in front of the endpoints they select, on
//! nftables, as a CNI plugin chained after an interface plugin.
//!
//! The shell: read and validate, lock the network, record the graph change
//! with the call's intent, then program the kernel (the core's
//! `Session::intended`). ADD and DEL of an endpoint change only the
//! elements of the services that select it, diffed from what the store says
//! was rendered ([`fast`]). A config that differs from the one last
//! rendered, GC, `netsvc apply`, a fast path the kernel refused, or a call
//! that died before this one take the full path ([`full`]), which ensures
//! every service of the network against what the kernel holds.

#![forbid(unsafe_code)]

pub mod config;
pub mod drift;
pub mod kernel;
pub mod maglev;
pub mod model;
pub mod render;
pub mod rules;
mod service;

pub use service::DESCRIPTION;

mod fast;
mod full;

use config::LbConf;
use model::{Family, Rendered};
use netsvc_core::cni::{Call, CniError, CniResult, Descriptor, Feature, NetConf, Plugin, Result};
use netsvc_core::node::NodeName;
use std::net::IpAddr;

use netsvc_core::graph::{Graph, Intent, Op, Session, Tx, checked_endpoint, endpoint_from_call, record_network};
use netsvc_core::naming::digest_hex;
use netsvc_core::nft::SetKind;
use netsvc_core::reconcile::{Difference, Reconcile, Repair, Summary};
use netsvc_core::store::{Store, open_for};
use serde::{Deserialize, Serialize};

/// The plugin type, and this service's name in the graph.
pub const SERVICE: &str = "netsvc-lb";
const SETTINGS: &str = "settings";
/// The record of the config last rendered (large with many services: read
/// only when a call's config differs from it).
const CONF: &str = "conf";
/// The lock of full renders; a leading `_` keeps it apart from network names.
const TABLE_LOCK: &str = "_netsvc-lb";

/// What the load balancer last rendered for a network: the digest of its
/// config, and how many endpoints it holds there (so DEL knows the last one
/// without a listing). Small, as the fast path rewrites it on every call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    pub digest: String,
    pub endpoints: u64,
}

/// The config last rendered: this call's when it is the same (no read), else the stored one.
fn rendered_conf(tx: &mut Tx<'_>, call: &NetConf, s: &Settings) -> Result<LbConf> {
    if let Ok(conf) = LbConf::from_netconf(call)
        && digest(&conf) == s.digest
    {
        return Ok(conf);
    }
    Ok(tx.get_record(SERVICE, CONF)?.unwrap_or_default())
}

pub fn digest(conf: &LbConf) -> String {
    digest_hex(serde_json::to_string(conf).unwrap_or_default().as_bytes())
}

/// The store record of one service's rendered state.
pub fn service_record(name: &str) -> String {
    format!("svc-{name}")
}

pub struct Lb;

/// What a call programs: decided under the network's lock, committed with
/// the call's intent, then applied (DESIGN.md, "One plugin call").
enum Program {
    Fast(fast::FastPlan),
    Full(full::FullPlan),
}

/// A planned call: what to program, the config it renders, and the
/// addresses of an endpoint that leaves (their hairpin elements go).
struct Planned {
    program: Program,
    conf: LbConf,
    gone: Vec<IpAddr>,
}

impl Lb {
    /// Applies what a call planned. A fast path the kernel refuses (a
    /// table someone flushed) becomes a full render under the same intent.
    fn program(session: &Session<'_, '_>, store: &dyn Store, p: Planned) -> Result<(usize, usize)> {
        match p.program {
            Program::Fast(fast) => match fast.apply() {
                Ok(()) => Ok((0, 0)),
                Err(e) => {
                    tracing::info!(error = %e, "fast path refused; rendering the network in full");
                    session
                        .transaction(|tx| full::plan(store, tx, &p.conf, &p.gone))?
                        .apply()
                }
            },
            Program::Full(full) => full.apply(),
        }
    }

    /// DEL's graph change under the lock. Without a record of the endpoint
    /// (a store that lost it) but with the runtime's `prevResult`, the
    /// network is rendered in full, which takes its addresses out of every
    /// slot and hairpin element.
    fn stage_del(store: &dyn Store, tx: &mut Tx<'_>, call: &Call, stale: Option<&Intent>) -> Result<Option<Planned>> {
        let ep = tx.detach_endpoint(&call.env.container_id, &call.env.ifname, SERVICE)?;
        let Some(mut s) = tx.get_record::<Settings>(SERVICE, SETTINGS)? else {
            return Ok(None); // the network was never rendered here
        };
        s.endpoints = s.endpoints.saturating_sub(1);
        let conf = rendered_conf(tx, &call.conf, &s)?;
        let addresses = |ep: &netsvc_core::graph::Endpoint| -> Vec<IpAddr> {
            Family::ALL.iter().flat_map(|f| model::addresses(ep, *f)).collect()
        };
        // What a call that died was about leaves the hairpin set too.
        let mut gone: Vec<IpAddr> = stale.map(Intent::ips).unwrap_or_default();
        let program = match ep {
            Some(ep) if s.endpoints > 0 && stale.is_none() => {
                gone.extend(addresses(&ep));
                match fast::del(tx, &conf, &ep)? {
                    Some(plan) => {
                        tx.put_record(SERVICE, SETTINGS, &s)?;
                        Program::Fast(plan)
                    }
                    None => Program::Full(full::plan(store, tx, &conf, &gone)?),
                }
            }
            Some(ep) => {
                gone.extend(addresses(&ep));
                Program::Full(full::plan(store, tx, &conf, &gone)?)
            }
            None if stale.is_some() => Program::Full(full::plan(store, tx, &conf, &gone)?),
            None => {
                gone = orphan_addresses(tx, call)?;
                if gone.is_empty() {
                    return Ok(None);
                }
                Program::Full(full::plan(store, tx, &conf, &gone)?)
            }
        };
        Ok(Some(Planned { program, conf, gone }))
    }

    /// DEL of one attachment under a held lock (also how a failed ADD undoes itself).
    fn del_locked(session: &Session<'_, '_>, store: &dyn Store, call: &Call) -> Result<()> {
        let intent = Intent::attachment(Op::Del, &call.env.container_id, &call.env.ifname);
        session.intended(
            SERVICE,
            intent,
            |tx, stale| Self::stage_del(store, tx, call, stale),
            |s, p| Self::program(s, store, p).map(drop),
            |_| Ok(()),
        )?;
        Ok(())
    }
}

/// Addresses the runtime or the container says the attachment had that the
/// LB holds for no endpoint of the network (a DEL the store has no record of).
fn orphan_addresses(tx: &mut Tx<'_>, call: &Call) -> Result<Vec<IpAddr>> {
    let shown = netsvc_core::attachment::runtime_addresses(call);
    if shown.is_empty() {
        return Ok(shown);
    }
    // Other services may still hold this very endpoint: only ours count.
    let held: Vec<IpAddr> = tx
        .endpoints()?
        .iter()
        .filter(|e| e.held_by(SERVICE))
        .flat_map(|e| Family::ALL.iter().flat_map(|f| model::addresses(e, *f)))
        .collect();
    Ok(shown.into_iter().filter(|a| !held.contains(a)).collect())
}

impl Plugin for Lb {
    fn descriptor(&self) -> Descriptor {
        Descriptor {
            plugin_type: SERVICE.into(),
            provides: vec![Feature::Lb],
            requires: vec![Feature::Interface, Feature::Ip],
            // It acts on traffic that passes through the node.
            prefers: vec![Feature::HostVeth],
            capabilities: vec!["aliases".into()],
            ..Default::default()
        }
    }

    fn add(&self, call: &Call) -> Result<CniResult> {
        let conf = LbConf::from_netconf(&call.conf)?;
        let prev = call.chained_prev_result()?;
        let ep = endpoint_from_call(call, &prev, SERVICE)?;
        // A backend's reply to a client on its bridge must meet conntrack to be un-NATed.
        netsvc_core::bridged::pass_bridged_traffic(&prev)?;
        let store = open_for(&call.conf)?;
        let graph = Graph::new(&store, &call.node);
        let session = graph.lock(&call.conf.name)?;
        let intent = Intent::adding(&ep);
        session.intended(
            SERVICE,
            intent,
            |tx, stale| -> Result<Option<Planned>> {
                record_network(tx, &prev)?;
                let newly = tx.attach_endpoint(&ep, SERVICE)?;
                let settings: Option<Settings> = tx.get_record(SERVICE, SETTINGS)?;
                // A dead call's leftovers are found by the full path only.
                let fast = match settings.filter(|s| s.digest == digest(&conf) && stale.is_none()) {
                    Some(s) => fast::add(tx, &conf, &ep)?.map(|plan| (s, plan)),
                    None => None,
                };
                let program = match fast {
                    Some((mut s, plan)) => {
                        s.endpoints += u64::from(newly);
                        tx.put_record(SERVICE, SETTINGS, &s)?;
                        Program::Fast(plan)
                    }
                    // What a dead call left leaves the hairpin set too.
                    None => Program::Full(full::plan(
                        &store,
                        tx,
                        &conf,
                        &stale.map(Intent::ips).unwrap_or_default(),
                    )?),
                };
                Ok(Some(Planned {
                    program,
                    conf: conf.clone(),
                    gone: Vec::new(),
                }))
            },
            |s, p| Self::program(s, &store, p).map(drop),
            |s| Self::del_locked(s, &store, call),
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
            // The kernel as the graph would be without the endpoint, in full.
            session.del_without_intent(SERVICE, e, |tx| -> Result<()> {
                let Some(planned) = Self::stage_del(&store, tx, call, None)? else {
                    return Ok(());
                };
                let plan = match planned.program {
                    Program::Full(full) => full,
                    Program::Fast(_) => full::plan(&store, tx, &planned.conf, &planned.gone)?,
                };
                plan.apply().map(drop)
            })
        })
    }

    /// Fails when a service selecting this endpoint lost its chains or does
    /// not hold the endpoint among its backends.
    fn check(&self, call: &Call) -> Result<()> {
        let store = open_for(&call.conf)?;
        let graph = Graph::new(&store, &call.node);
        let network = &call.conf.name;
        let missing = |what: String| CniError::state_missing(SERVICE, what);
        let ep = checked_endpoint(&graph, call, SERVICE)?;
        netsvc_core::graph::check_finished(&graph, network, SERVICE)?;
        let conf: LbConf = graph
            .record(network, SERVICE, CONF)?
            .ok_or_else(|| missing(format!("network {network} was never rendered")))?;
        // One read per family table, whatever the number of services.
        let mut tables = std::collections::BTreeMap::new();
        for f in conf.services.iter().map(|s| Family::of(s.vip())) {
            if let std::collections::btree_map::Entry::Vacant(v) = tables.entry(f) {
                v.insert(kernel::read(f)?);
            }
        }
        for svc in &conf.services {
            let r: Rendered = graph
                .record(network, SERVICE, &service_record(&svc.name))?
                .ok_or_else(|| missing(format!("service {} was never rendered", svc.name)))?;
            let f = r.family();
            let current = tables[&f]
                .as_ref()
                .ok_or_else(|| missing(format!("table {} {} is missing", f.word(), model::TABLE)))?;
            for (chain, _) in r.port_rules() {
                if !current.chains.contains(&chain) {
                    return Err(missing(format!("chain {chain} of service {} is missing", svc.name)));
                }
            }
            let slots = current.slots(&r.slots_map()).unwrap_or_default();
            let backends: Vec<_> = slots.values().collect();
            for ip in model::backends(svc, [&ep]) {
                if !backends.contains(&&ip) {
                    return Err(missing(format!("{ip} is not a backend of service {}", svc.name)));
                }
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

    /// Drops the endpoints of attachments that are gone, then renders the
    /// network from what remains (which also repairs drift).
    fn gc(&self, call: &Call) -> Result<()> {
        let store = open_for(&call.conf)?;
        let graph = Graph::new(&store, &call.node);
        let session = graph.lock(&call.conf.name)?;
        session.intended(
            SERVICE,
            Intent::network(Op::Gc),
            |tx, _| -> Result<Option<full::FullPlan>> {
                let Some(s) = tx.get_record::<Settings>(SERVICE, SETTINGS)? else {
                    return Ok(None);
                };
                let conf = rendered_conf(tx, &call.conf, &s)?;
                let mut gone = Vec::new();
                // The runtime lists this node's containers only.
                for ep in tx.local_endpoints(SERVICE)? {
                    let valid = call.gc_keeps(&ep.container_id, &ep.ifname);
                    if !valid && let Some(ep) = tx.detach_endpoint(&ep.container_id, &ep.ifname, SERVICE)? {
                        gone.extend(Family::ALL.iter().flat_map(|f| model::addresses(&ep, *f)));
                    }
                }
                full::plan(&store, tx, &conf, &gone).map(Some)
            },
            |_, plan| plan.apply().map(drop),
            |_| Ok(()),
        )?;
        Ok(())
    }

    /// 50 when nft cannot run or the kernel refuses our tables.
    fn status(&self, _call: &Call) -> Result<()> {
        for f in Family::ALL {
            render::table(f)
                .list_set_json(SetKind::Map, render::SERVICES)
                .map_err(|e| CniError::not_available(format!("netsvc-lb cannot read nftables: {e}")))?;
        }
        Ok(())
    }
}

impl Reconcile for Lb {
    fn plugin_type(&self) -> &'static str {
        SERVICE
    }

    fn reconcile(&self, conf: &NetConf, node: &NodeName) -> Result<Summary> {
        let lb = LbConf::from_netconf(conf)?;
        let store = open_for(conf)?;
        let graph = Graph::new(&store, node);
        let session = graph.lock(&conf.name)?;
        let (endpoints, changes) = session
            .intended(
                SERVICE,
                Intent::network(Op::Render),
                |tx, _| full::plan(&store, tx, &lb, &[]).map(Some),
                |_, plan| plan.apply(),
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

impl Repair for Lb {
    fn plugin_type(&self) -> &'static str {
        SERVICE
    }

    fn diff(&self, store: &dyn Store, node: &NodeName, network: &str) -> Result<Vec<Difference>> {
        let graph = Graph::new(store, node);
        let session = graph.lock(network)?;
        session.dry_run(SERVICE, |tx, stale| match rendered(tx)? {
            Some(conf) => Ok(full::plan(store, tx, &conf, &stale.map(Intent::ips).unwrap_or_default())?.differences),
            None => Ok(Vec::new()),
        })
    }

    fn repair(&self, store: &dyn Store, node: &NodeName, network: &str) -> Result<Vec<Difference>> {
        let graph = Graph::new(store, node);
        let session = graph.lock(network)?;
        let fixed = session.intended(
            SERVICE,
            Intent::network(Op::Render),
            |tx, stale| -> Result<Option<full::FullPlan>> {
                let Some(conf) = rendered(tx)? else {
                    return Ok(None);
                };
                let gone = stale.map(Intent::ips).unwrap_or_default();
                let plan = full::plan(store, tx, &conf, &gone)?;
                Ok((!plan.differences.is_empty() || stale.is_some()).then_some(plan))
            },
            |_, plan| {
                let differences = plan.differences.clone();
                plan.apply()?;
                Ok(differences)
            },
            |_| Ok(()),
        )?;
        Ok(fixed.unwrap_or_default())
    }
}

/// The config the network was last rendered with on this node, if it was.
fn rendered(tx: &mut Tx<'_>) -> Result<Option<LbConf>> {
    if tx.get_record::<Settings>(SERVICE, SETTINGS)?.is_none() {
        return Ok(None);
    }
    Ok(Some(tx.get_record(SERVICE, CONF)?.unwrap_or_default()))
}
