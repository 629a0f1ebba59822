//! The node agent: a long-running process per node (as Calico's Felix or
//! the Cilium agent) that keeps this node's kernel state in line with a
//! store other nodes write to.
//!
//! - It registers the node under `nodes/<node>` on a lease it renews; when a
//!   node's registration goes (its lease expired: the node died), every agent
//!   drops that node's endpoints and VPN peer from the graph, which the
//!   others then render away.
//! - It watches `networks/` and re-renders, for the networks of its
//!   conflists that hold a container of this node, every netsvc service
//!   with a reconcile hook (firewall sets gain remote endpoints, LB services
//!   remote backends). The DNS daemon and the VPN mesh keepers follow the
//!   store themselves.
//! - It keeps the last revision it handled in `<state>/agent/<node>.json`;
//!   a restart replays only what changed since, and renders everything again
//!   only when the store compacted past it.
//!
//! A plugin applies its own node's change before it returns: ADD never
//! waits on the agent.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use netsvc_core::cni::NetConfList;
use netsvc_core::graph::Graph;
use netsvc_core::store::{EventKind, Revision, Store, StoreError, StoreHandle};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::services::{plugin, reconcile_all};

/// Where node registrations live.
pub const NODES_PREFIX: &str = "nodes/";
const NETWORKS_PREFIX: &str = "networks/";

/// What the agent reports in `<state>/agent/<node>.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentState {
    /// The last store revision handled.
    pub revision: Revision,
    /// Whether this run started with a full render (no usable revision).
    pub full_resync: bool,
    /// Service renders this run made.
    pub renders: u64,
    /// nft batches this run applied.
    pub nft_batches: u64,
    /// Nodes whose state this run removed after their registration expired.
    pub nodes_removed: Vec<String>,
    /// DELs queued while the store was away, replayed by this run.
    pub dels_replayed: u64,
}

pub fn state_path(store: &StoreHandle, node: &str) -> PathBuf {
    store.state_dir().join("agent").join(format!("{node}.json"))
}

/// Reads the state a previous run left (none: a first start).
pub fn read_state(store: &StoreHandle, node: &str) -> Option<AgentState> {
    let bytes = std::fs::read(state_path(store, node)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub struct Agent {
    store: StoreHandle,
    node: String,
    lists: Vec<NetConfList>,
    ttl: Duration,
    state: AgentState,
}

impl Agent {
    pub fn new(store: StoreHandle, node: String, lists: Vec<NetConfList>, ttl: Duration) -> Self {
        Agent {
            store,
            node,
            lists,
            ttl,
            state: AgentState::default(),
        }
    }

    /// Runs until `stop` says so, or the store fails for good.
    pub fn run(mut self, stop: &dyn Fn() -> bool) -> anyhow::Result<()> {
        let registration = json!({"name": self.node, "pid": std::process::id()});
        let lease = self
            .store
            .put_leased(&format!("{NODES_PREFIX}{}", self.node), &registration, self.ttl)
            .context("registering the node")?;
        self.catch_up()?;
        let renew_every = self.ttl / 3;
        let mut renewed = Instant::now();
        while !stop() {
            if renewed.elapsed() >= renew_every {
                if let Err(e) = lease.renew() {
                    tracing::warn!(error = %e, "could not renew the node's lease");
                }
                renewed = Instant::now();
            }
            match self
                .store
                .watch("", self.state.revision, renew_every.min(Duration::from_secs(1)))
            {
                Ok(events) => {
                    self.replay_queued_dels();
                    self.handle(&events)?;
                }
                Err(StoreError::Compacted { .. }) => self.full_sync()?,
                Err(e) => {
                    tracing::warn!(error = %e, "watching the store");
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
        tracing::info!(node = %self.node, "agent stops; its registration lives out its lease");
        Ok(())
    }

    /// From the revision a previous run handled: only the networks changed
    /// since; from nothing (or past a compaction): every network.
    fn catch_up(&mut self) -> anyhow::Result<()> {
        let Some(previous) = read_state(&self.store, &self.node) else {
            return self.full_sync();
        };
        match self.store.changes_since("", previous.revision) {
            Ok(events) => {
                self.state.revision = previous.revision;
                self.handle(&events)
            }
            Err(StoreError::Compacted { .. }) => self.full_sync(),
            Err(e) => Err(e.into()),
        }
    }

    fn full_sync(&mut self) -> anyhow::Result<()> {
        self.state.revision = self.store.revision()?;
        self.state.full_resync = true;
        let all: BTreeSet<String> = self.lists.iter().map(|l| l.name.clone()).collect();
        self.render(&all);
        self.save()
    }

    fn handle(&mut self, events: &[netsvc_core::store::Event]) -> anyhow::Result<()> {
        let Some(last) = events.last() else {
            return Ok(());
        };
        for e in events.iter().filter(|e| e.kind == EventKind::Delete) {
            if let Some(node) = e.key.strip_prefix(NODES_PREFIX)
                && node != self.node
            {
                self.remove_node(node);
            }
        }
        let networks: BTreeSet<String> = events.iter().filter_map(|e| changed_network(&e.key)).collect();
        self.render(&networks);
        self.state.revision = last.revision;
        self.save()
    }

    /// Re-renders each network (of ours) that holds a container of this node.
    fn render(&mut self, networks: &BTreeSet<String>) {
        let graph = Graph::new(&self.store).on_node(&self.node);
        for list in self.lists.iter().filter(|l| networks.contains(&l.name)) {
            let here = graph
                .endpoints(&list.name)
                .map(|eps| eps.iter().any(|e| e.is_on(&self.node)))
                .unwrap_or(false);
            if !here {
                continue;
            }
            for (_, plugin_type, outcome) in reconcile_all(list) {
                match outcome {
                    Ok(s) => {
                        self.state.renders += 1;
                        tracing::debug!(service = %s.service, network = %s.network, changes = s.changes, "rendered");
                    }
                    Err(e) => tracing::warn!(network = %list.name, service = plugin_type, "render failed: {e}"),
                }
            }
        }
        self.state.nft_batches = netsvc_core::nft::batches_applied();
    }

    /// A node whose registration expired: its endpoints, VPN peer and
    /// records leave every network (the delete events re-render the rest).
    fn remove_node(&mut self, dead: &str) {
        let graph = Graph::new(&self.store).on_node(&self.node);
        let Ok(networks) = graph.networks() else {
            return;
        };
        for net in networks {
            let removed = graph.transaction(&net.name, |tx| -> Result<usize, netsvc_core::graph::GraphError> {
                let mut n = 0;
                for ep in tx.endpoints()?.into_iter().filter(|e| e.node.as_deref() == Some(dead)) {
                    tx.remove_endpoint(&ep.container_id, &ep.ifname)?;
                    n += 1;
                }
                tx.remove_peer(dead)?;
                Ok(n)
            });
            match removed {
                Ok(n) => tracing::info!(node = dead, network = %net.name, endpoints = n, "removed a dead node"),
                Err(e) => tracing::warn!(node = dead, network = %net.name, "could not remove a dead node: {e}"),
            }
            let records = format!("{NETWORKS_PREFIX}{}/nodes/{dead}/", net.name);
            for entry in self.store.list(&records).unwrap_or_default() {
                let _ = self.store.delete(&entry.key);
            }
        }
        if !self.state.nodes_removed.iter().any(|n| n == dead) {
            self.state.nodes_removed.push(dead.to_string());
        }
    }

    /// DELs plugins queued while the store was away, now that it answers.
    fn replay_queued_dels(&mut self) {
        for (file, pending) in netsvc_core::cni::pending::queued(self.store.state_dir()) {
            let Some(plugin) = plugin(pending.plugin_type()) else {
                let _ = std::fs::remove_file(&file);
                continue;
            };
            match pending.call().and_then(|call| plugin.del(&call)) {
                Ok(()) => {
                    let _ = std::fs::remove_file(&file);
                    self.state.dels_replayed += 1;
                }
                Err(e) => tracing::warn!(container = %pending.container_id, "queued DEL failed again: {e}"),
            }
        }
    }

    fn save(&self) -> anyhow::Result<()> {
        let path = state_path(&self.store, &self.node);
        if let Some(dir) = path.parent() {
            netsvc_core::store::create_dirs(dir)?;
        }
        netsvc_core::store::atomic_write(&path, &serde_json::to_vec_pretty(&self.state)?)?;
        Ok(())
    }
}

/// The network a changed key belongs to, unless the key is a node's own
/// record (what a node rendered is not the graph).
fn changed_network(key: &str) -> Option<String> {
    let rest = key.strip_prefix(NETWORKS_PREFIX)?;
    let mut parts = rest.split('/');
    let net = parts.next()?;
    if parts.next() == Some("nodes") {
        return None;
    }
    Some(net.to_string())
}

#[cfg(test)]
mod tests {
    use super::changed_network;

    #[test]
    fn records_are_not_graph_changes() {
        assert_eq!(changed_network("networks/n1/endpoints/c:eth0").as_deref(), Some("n1"));
        assert_eq!(changed_network("networks/n1").as_deref(), Some("n1"));
        assert_eq!(changed_network("networks/n1/nodes/a/netsvc-lb/settings"), None);
        assert_eq!(changed_network("nodes/a"), None);
    }
}
