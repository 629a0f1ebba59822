//! Reconciling: [`Reconcile`] re-renders a whole network from a conflist's
//! config and the graph, applying only what differs (`netsvc apply`);
//! [`Repair`] compares what the store wants of a network on this node with
//! what the kernel holds, from the store alone, and converges
//! (`netsvc repair`, the agent, GC, CHECK).

use serde::Serialize;

use crate::cni::{NetConf, Result};
use crate::node::NodeName;
use crate::store::Store;

/// What one reconcile did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub service: String,
    pub network: String,
    /// Endpoints the service holds in the network.
    pub endpoints: usize,
    /// Kernel changes applied (0: the kernel already matched).
    pub changes: usize,
}

pub trait Reconcile {
    /// The plugin type (`type` in a conflist) this serves.
    fn plugin_type(&self) -> &'static str;

    /// Re-renders `conf.name`'s network on `node` with `conf` for the
    /// endpoints the graph holds, in one atomic change of the service's own
    /// state.
    fn reconcile(&self, conf: &NetConf, node: &NodeName) -> Result<Summary>;
}

/// How the kernel differs from what the store wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiffKind {
    /// The store wants it; the kernel lacks it.
    Missing,
    /// The kernel holds it; the store does not want it.
    Extra,
    /// Both have it, not alike.
    Differs,
}

impl DiffKind {
    pub fn word(self) -> &'static str {
        match self {
            DiffKind::Missing => "missing",
            DiffKind::Extra => "extra",
            DiffKind::Differs => "differs",
        }
    }
}

/// One difference between the store's desired state of a network on this
/// node and what the kernel holds in the service's own objects.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Difference {
    pub service: String,
    pub network: String,
    pub kind: DiffKind,
    /// The kernel object as `nft`, `tc` or `ip` names it (`element
    /// 10.0.0.2 of set inet netsvc_firewall web_sel4`, `qdisc htb 1: on
    /// veth1a2b`, `link nsv0123456789ab`).
    pub object: String,
}

impl Difference {
    pub fn new(service: &str, network: &str, kind: DiffKind, object: impl Into<String>) -> Difference {
        Difference {
            service: service.into(),
            network: network.into(),
            kind,
            object: object.into(),
        }
    }

    /// What differs, without where: `missing qdisc htb 1: on veth1a2b`.
    pub fn what(&self) -> String {
        format!("{} {}", self.kind.word(), self.object)
    }
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.service, self.network, self.what())
    }
}

/// A service's reconciler: what the store wants of a network on `node`
/// against what the kernel holds in the service's own tables and devices,
/// from the store alone (no conflist). It serves `netsvc repair`, the
/// agent's drift repair, GC and CHECK.
pub trait Repair {
    /// The plugin type this serves.
    fn plugin_type(&self) -> &'static str;

    /// The differences, changing nothing (`netsvc repair --dry-run`). A
    /// network the service never rendered on this node has none.
    fn diff(&self, store: &dyn Store, node: &NodeName, network: &str) -> Result<Vec<Difference>>;

    /// Converges the kernel on the store (under the network's lock, with an
    /// intent, as a plugin call); returns the differences it fixed.
    fn repair(&self, store: &dyn Store, node: &NodeName, network: &str) -> Result<Vec<Difference>>;
}
