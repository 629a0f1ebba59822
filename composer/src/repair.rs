//! `netsvc repair`: every service's reconciler over every network the store
//! holds (or one), comparing what the store wants on this node with what
//! the kernel holds, and converging unless asked only to look. The agent
//! runs the same after someone flushed or deleted netsvc's kernel objects.

use netsvc_core::graph::Graph;
use netsvc_core::node::NodeName;
use netsvc_core::reconcile::Difference;
use netsvc_core::store::Store;

use crate::services::repairers;

/// What one network's services were found to differ in (and, unless
/// `dry_run`, fixed), and the services that could not be compared.
#[derive(Debug, Default, serde::Serialize)]
pub struct Outcome {
    pub differences: Vec<Difference>,
    /// `<service> <network>: <error>`.
    pub errors: Vec<String>,
}

/// Repairs (or with `dry_run`, only compares) `only`, else every network,
/// on `node`.
pub fn run(store: &dyn Store, node: &NodeName, only: Option<&str>, dry_run: bool) -> anyhow::Result<Outcome> {
    let networks: Vec<String> = match only {
        Some(n) => vec![n.to_string()],
        None => Graph::new(store, node)
            .networks()?
            .into_iter()
            .map(|n| n.name)
            .collect(),
    };
    let mut out = Outcome::default();
    for network in &networks {
        for service in repairers() {
            let found = if dry_run {
                service.diff(store, node, network)
            } else {
                service.repair(store, node, network)
            };
            match found {
                Ok(d) => out.differences.extend(d),
                Err(e) => out
                    .errors
                    .push(format!("{} {network}: {}", service.plugin_type(), e.msg)),
            }
        }
    }
    Ok(out)
}

/// One line per difference, then a summary.
pub fn render(o: &Outcome, dry_run: bool) -> String {
    let verb = if dry_run { "found" } else { "fixed" };
    let mut text = String::new();
    for d in &o.differences {
        text.push_str(&format!("{d} ({verb})\n"));
    }
    for e in &o.errors {
        text.push_str(&format!("error: {e}\n"));
    }
    text.push_str(&format!("{} differences {verb}\n", o.differences.len()));
    text
}
