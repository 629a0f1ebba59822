//! netsvc-firewall: NetworkPolicy-style isolation for containers on nftables,
//! as a CNI plugin chained after an interface plugin.
//!
//! The shell: read and validate, lock the network, update the graph, render.
//! ADD and DEL change set elements only ([`model::membership`]); a config that
//! differs from the one last rendered, or a kernel that lost what was
//! recorded, takes the full path ([`Firewall::render_network`]), which diffs
//! the network against the kernel and applies the difference atomically.

pub mod config;
pub mod explain;
pub mod kernel;
pub mod model;
pub mod render;

use config::FirewallConf;
use netsvc_core::cni::{Call, CniError, CniResult, Descriptor, Feature, NetConf, Plugin, Result};
use netsvc_core::graph::{Endpoint, Graph, Tx, checked_endpoint, endpoint_from_call, record_network};
use netsvc_core::naming::digest_hex;
use netsvc_core::nft::ElementOp;
use netsvc_core::reconcile::{Reconcile, Summary};
use netsvc_core::store::{Store, open_for};
use serde::{Deserialize, Serialize};

/// The plugin type, and this service's name in the graph.
pub const SERVICE: &str = "netsvc-firewall";
const SETTINGS: &str = "settings";
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

impl Firewall {
    /// The full path: every endpoint the firewall holds in the network, the
    /// plan of `conf`, diffed against the kernel. With no endpoint left the
    /// network's chains and sets go.
    fn render_network(store: &dyn Store, tx: &mut Tx<'_>, conf: &FirewallConf) -> Result<(usize, usize)> {
        // Full renders of different networks read, diff and write the shared
        // base chain: one at a time (element-only fast paths need no lock).
        let _table = store.lock_network(TABLE_LOCK, netsvc_core::graph::LOCK_TIMEOUT)?;
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
        kernel::apply(&cmds)?;
        Ok((endpoints.len(), changes))
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
        Graph::new(&store).transaction(&call.conf.name, |tx| -> Result<()> {
            record_network(tx, &prev)?;
            let newly = tx.attach_endpoint(&ep, SERVICE)?;
            let rendered: Option<Rendered> = tx.get_record(SERVICE, SETTINGS)?;
            let fast = rendered.filter(|r| r.digest == digest(&conf)).and_then(|mut r| {
                let plan = model::plan(&call.conf.name, &conf);
                kernel::apply_membership(ElementOp::Add, &model::membership(&plan, &ep)).ok()?;
                r.endpoints += u64::from(newly);
                Some(r)
            });
            match fast {
                Some(r) => tx.put_record(SERVICE, SETTINGS, &r)?,
                None => {
                    Self::render_network(&store, tx, &conf)?;
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
            let Some(mut rendered) = tx.get_record::<Rendered>(SERVICE, SETTINGS)? else {
                return Ok(());
            };
            rendered.endpoints = rendered.endpoints.saturating_sub(1);
            let plan = model::plan(&call.conf.name, &rendered.conf);
            let membership = model::membership(&plan, &ep);
            if rendered.endpoints > 0 && kernel::apply_membership(ElementOp::Delete, &membership).is_ok() {
                tx.put_record(SERVICE, SETTINGS, &rendered)?;
            } else {
                Self::render_network(&store, tx, &rendered.conf)?;
            }
            Ok(())
        })?;
        Ok(())
    }

    fn check(&self, call: &Call) -> Result<()> {
        let store = open_for(&call.conf)?;
        let graph = Graph::new(&store);
        let network = &call.conf.name;
        let missing = |what: String| CniError::state_missing(SERVICE, what);
        let ep = checked_endpoint(&graph, call, SERVICE)?;
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
        Ok(())
    }

    /// Drops the endpoints of attachments that are gone, then re-renders the
    /// network from what remains (which also repairs drift).
    fn gc(&self, call: &Call) -> Result<()> {
        let store = open_for(&call.conf)?;
        Graph::new(&store).transaction(&call.conf.name, |tx| -> Result<()> {
            let Some(rendered) = tx.get_record::<Rendered>(SERVICE, SETTINGS)? else {
                return Ok(());
            };
            // The runtime lists this node's containers only.
            for ep in tx.local_endpoints(SERVICE)? {
                let valid = call.gc_keeps(&ep.container_id, &ep.ifname);
                if !valid {
                    tx.detach_endpoint(&ep.container_id, &ep.ifname, SERVICE)?;
                }
            }
            Self::render_network(&store, tx, &rendered.conf)?;
            Ok(())
        })?;
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

    fn reconcile(&self, conf: &NetConf) -> Result<Summary> {
        let fw = FirewallConf::from_netconf(conf)?;
        let store = open_for(conf)?;
        let (endpoints, changes) =
            Graph::new(&store).transaction(&conf.name, |tx| Self::render_network(&store, tx, &fw))?;
        Ok(Summary {
            service: SERVICE.into(),
            network: conf.name.clone(),
            endpoints,
            changes,
        })
    }
}
