//! netsvc-lb: service virtual IPs in front of the endpoints they select, on
//! nftables, as a CNI plugin chained after an interface plugin.
//!
//! The shell: read and validate, lock the network, update the graph, render.
//! ADD and DEL of an endpoint change only the elements of the services that
//! select it, diffed from what the store says was rendered ([`fast`]). A
//! config that differs from the one last rendered, GC, `netsvc apply`, or a
//! fast path the kernel refused take the full path ([`full`]), which ensures
//! every service of the network against what the kernel holds.

pub mod config;
pub mod kernel;
pub mod maglev;
pub mod model;
pub mod render;
pub mod rules;

mod fast;
mod full;

use config::LbConf;
use model::{Family, Rendered};
use netsvc_core::cni::{Call, CniError, CniResult, Descriptor, Feature, NetConf, Plugin, Result};
use netsvc_core::graph::{Graph, Tx, checked_endpoint, endpoint_from_call, record_network};
use netsvc_core::naming::digest_hex;
use netsvc_core::nft::SetKind;
use netsvc_core::reconcile::{Reconcile, Summary};
use netsvc_core::store::open_for;
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
        Graph::new(&store).transaction(&call.conf.name, |tx| -> Result<()> {
            record_network(tx, &prev)?;
            let newly = tx.attach_endpoint(&ep, SERVICE)?;
            let settings: Option<Settings> = tx.get_record(SERVICE, SETTINGS)?;
            match settings.filter(|s| s.digest == digest(&conf)) {
                Some(mut s) if fast::add(tx, &conf, &ep)? => {
                    s.endpoints += u64::from(newly);
                    tx.put_record(SERVICE, SETTINGS, &s)?;
                }
                _ => {
                    full::render(&store, tx, &conf, &[])?;
                }
            }
            Ok(())
        })?;
        Ok(prev)
    }

    /// Works from what was rendered (the store), not from this call's config,
    /// so a DEL after a config change removes exactly what ADD made.
    fn del(&self, call: &Call) -> Result<()> {
        let store = open_for(&call.conf)?;
        Graph::new(&store).transaction(&call.conf.name, |tx| -> Result<()> {
            let Some(ep) = tx.detach_endpoint(&call.env.container_id, &call.env.ifname, SERVICE)? else {
                return Ok(());
            };
            let Some(mut s) = tx.get_record::<Settings>(SERVICE, SETTINGS)? else {
                return Ok(());
            };
            s.endpoints = s.endpoints.saturating_sub(1);
            let conf = rendered_conf(tx, &call.conf, &s)?;
            if s.endpoints > 0 && fast::del(tx, &conf, &ep)? {
                tx.put_record(SERVICE, SETTINGS, &s)?;
            } else {
                let gone: Vec<_> = Family::ALL.iter().flat_map(|f| model::addresses(&ep, *f)).collect();
                full::render(&store, tx, &conf, &gone)?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Fails when a service selecting this endpoint lost its chains or does
    /// not hold the endpoint among its backends.
    fn check(&self, call: &Call) -> Result<()> {
        let store = open_for(&call.conf)?;
        let graph = Graph::new(&store);
        let network = &call.conf.name;
        let missing = |what: String| CniError::state_missing(SERVICE, what);
        let ep = checked_endpoint(&graph, call, SERVICE)?;
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
        Ok(())
    }

    /// Drops the endpoints of attachments that are gone, then renders the
    /// network from what remains (which also repairs drift).
    fn gc(&self, call: &Call) -> Result<()> {
        let store = open_for(&call.conf)?;
        Graph::new(&store).transaction(&call.conf.name, |tx| -> Result<()> {
            let Some(s) = tx.get_record::<Settings>(SERVICE, SETTINGS)? else {
                return Ok(());
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
            full::render(&store, tx, &conf, &gone)?;
            Ok(())
        })?;
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

    fn reconcile(&self, conf: &NetConf) -> Result<Summary> {
        let lb = LbConf::from_netconf(conf)?;
        let store = open_for(conf)?;
        let (endpoints, changes) =
            Graph::new(&store).transaction(&conf.name, |tx| full::render(&store, tx, &lb, &[]))?;
        Ok(Summary {
            service: SERVICE.into(),
            network: conf.name.clone(),
            endpoints,
            changes,
        })
    }
}
