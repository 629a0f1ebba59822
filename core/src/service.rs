//! A netsvc service as the composer sees it: one value that each service
//! crate exports about itself. The composer keeps one list of them and
//! iterates over it for everything per-service — the catalog's
//! descriptors, config validation and JSON schemas, the plugins the agent
//! replays, `netsvc apply`'s reconcilers, `netsvc repair`'s and the agent's
//! repairers, and what `netsvc status` shows. The core defines the shape
//! only; it knows no service.

use serde_json::Value;

use crate::cni::{Descriptor, Plugin, Result};
use crate::node::NodeName;
use crate::reconcile::{Reconcile, Repair};
use crate::store::Store;

/// One service: everything the composer and the agent need of it.
pub struct Service {
    /// The plugin type (`type` in a conflist, the plugin binary's name),
    /// also the service's name in the graph.
    pub name: &'static str,
    /// The plugin: its descriptor (what it provides and requires in a
    /// chain) and its calls, which the agent replays in process.
    pub plugin: &'static (dyn Plugin + Sync),
    /// The JSON Schema of its config, made from the type the plugin decodes.
    pub schema: fn() -> Value,
    /// Checks a plugin config (one object of a conflist's `plugins`) with
    /// the service's own config type; errors name the field.
    pub validate: fn(&Value) -> Result<()>,
    /// Re-renders a network from a conflist's config (`netsvc apply`, the
    /// agent), for services that can.
    pub reconcile: Option<&'static (dyn Reconcile + Sync)>,
    /// Compares and converges a network from the store alone (`netsvc
    /// repair`, the agent's drift repair).
    pub repair: &'static (dyn Repair + Sync),
    /// What `netsvc status` shows of a network for it, if anything.
    pub status: Option<&'static (dyn StatusView + Sync)>,
    /// Name prefixes of the links it creates: a kernel notice that one
    /// went away is drift the agent repairs.
    pub link_prefixes: &'static [&'static str],
}

impl Service {
    /// Where the plugin stands in a chain.
    pub fn descriptor(&self) -> Descriptor {
        self.plugin.descriptor()
    }
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A service's part of one network in `netsvc status`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusPart {
    /// Its value under [`StatusView::key`] in `--format json`.
    pub json: Value,
    /// Its lines in the text report, under the network's line (each
    /// indented and ending in a newline).
    pub text: String,
}

/// What `netsvc status` shows of a network for one service.
pub trait StatusView {
    /// The key of the network's object in `--format json`.
    fn key(&self) -> &'static str;

    /// The network's state for this service as the store holds it for
    /// `node` (public
    /// material only); `None`: nothing to show (the key is left out).
    fn collect(&self, store: &dyn Store, node: &NodeName, network: &str) -> Result<Option<StatusPart>>;
}
