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
//! - It keeps this node's kernel state in line with the store: told by
//!   kernel notifications (nftables and rtnetlink multicast groups, no
//!   polling) that someone flushed the ruleset, deleted a netsvc table, a
//!   qdisc or an ifb, or a firewall manager reloaded, it runs every
//!   service's reconciler ([`crate::repair`]) within moments.
//! - It keeps the last revision it handled in `<state>/agent/<node>.json`;
//!   a restart replays only what changed since, and renders everything again
//!   only when the store compacted past it.
//!
//! A plugin applies its own node's change before it returns: ADD never
//! waits on the agent.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use netsvc_core::cni::NetConfList;
use netsvc_core::graph::Graph;
use netsvc_core::netlink::notify::{Notice, Notifications};
use netsvc_core::node::NodeName;
use netsvc_core::store::{EventKind, Lease, Revision, Store, StoreError, StoreHandle, Subscription};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

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
    /// Differences between the kernel and the store this run repaired.
    #[serde(default)]
    pub drift_repaired: u64,
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
    store: Arc<StoreHandle>,
    node: NodeName,
    lists: Vec<NetConfList>,
    ttl: Duration,
    state: AgentState,
    /// Differences the drift thread repaired (it runs beside the store's watch).
    drift_repaired: Arc<AtomicU64>,
}

impl Agent {
    pub fn new(store: StoreHandle, node: NodeName, lists: Vec<NetConfList>, ttl: Duration) -> Self {
        Agent {
            store: Arc::new(store),
            node,
            lists,
            ttl,
            state: AgentState::default(),
            drift_repaired: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Runs until `stop` says so, or the store fails for good.
    pub fn run(mut self, stop: &dyn Fn() -> bool) -> anyhow::Result<()> {
        let registration = json!({"name": self.node, "pid": std::process::id()});
        let key = format!("{NODES_PREFIX}{}", self.node);
        let lease = self
            .store
            .put_leased(&key, &registration, self.ttl)
            .context("registering the node")?;
        // Renewed on a thread of its own: a render that waits on a busy
        // node must not let the node pass for dead.
        let stopping = Arc::new(AtomicBool::new(false));
        let registrar = {
            let (store, ttl, stopping) = (self.store.clone(), self.ttl, stopping.clone());
            std::thread::Builder::new()
                .name("registration".into())
                .spawn(move || keep_registered(&store, &key, &registration, lease, ttl, &stopping))?
        };
        let drift = {
            let (store, node) = (self.store.clone(), self.node.clone());
            let (stopping, repaired) = (stopping.clone(), self.drift_repaired.clone());
            std::thread::Builder::new()
                .name("drift".into())
                .spawn(move || keep_kernel_in_line(&store, &node, &stopping, &repaired))?
        };
        let outcome = self.follow(stop);
        stopping.store(true, Ordering::Relaxed);
        let _ = registrar.join();
        let _ = drift.join();
        tracing::info!(node = %self.node, "agent stops; its registration lives out its lease");
        outcome
    }

    fn follow(&mut self, stop: &dyn Fn() -> bool) -> anyhow::Result<()> {
        self.catch_up()?;
        // One standing watch: a change arrives as soon as it is made.
        let store = self.store.clone();
        let mut changes: Option<Box<dyn Subscription + '_>> = None;
        while !stop() {
            let next = match &mut changes {
                Some(sub) => sub.next(Duration::from_secs(1)),
                None => store.subscribe("", self.state.revision).map(|sub| {
                    tracing::debug!(revision = self.state.revision, "watching the store");
                    changes = Some(sub);
                    Vec::new()
                }),
            };
            match next {
                Ok(events) => {
                    if self.replay_queued_dels() > 0 {
                        self.save()?;
                    }
                    self.handle(&events)?;
                }
                Err(StoreError::Compacted { .. }) => {
                    changes = None;
                    self.full_sync()?;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "watching the store");
                    changes = None;
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
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
        tracing::debug!(keys = ?events.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), "changes");
        let mut networks: BTreeSet<String> = events.iter().filter_map(|e| changed_network(&e.key)).collect();
        for e in events.iter().filter(|e| e.kind == EventKind::Delete) {
            if let Some(node) = e.key.strip_prefix(NODES_PREFIX)
                && node != self.node.as_str()
            {
                // Rendered now, not when the removal's own events come back.
                networks.extend(self.remove_node(node));
            }
        }
        self.render(&networks);
        self.state.revision = last.revision;
        self.save()
    }

    /// Re-renders each network (of ours) that holds a container of this node.
    fn render(&mut self, networks: &BTreeSet<String>) {
        let graph = Graph::new(&*self.store, &self.node);
        for list in self.lists.iter().filter(|l| networks.contains(&l.name)) {
            let here = graph
                .endpoints(&list.name)
                .map(|eps| eps.iter().any(|e| e.is_on(&self.node)))
                .unwrap_or(false);
            if !here {
                continue;
            }
            let started = Instant::now();
            for (_, plugin_type, outcome) in reconcile_all(list, &self.node) {
                match outcome {
                    Ok(s) => {
                        self.state.renders += 1;
                        tracing::debug!(service = %s.service, network = %s.network, changes = s.changes, "rendered");
                    }
                    Err(e) => tracing::warn!(network = %list.name, service = plugin_type, "render failed: {e}"),
                }
            }
            tracing::debug!(network = %list.name, took = ?started.elapsed(), "network rendered");
        }
        self.state.nft_batches = netsvc_core::nft::batches_applied();
    }

    /// A node whose registration expired: its endpoints, VPN peer and
    /// records leave every network. Returns the networks it was in.
    fn remove_node(&mut self, dead: &str) -> Vec<String> {
        let graph = Graph::new(&*self.store, &self.node);
        let Ok(networks) = graph.networks() else {
            return Vec::new();
        };
        let names = networks.iter().map(|n| n.name.clone()).collect();
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
        names
    }

    /// DELs plugins queued while the store was away, now that it answers;
    /// how many were replayed.
    fn replay_queued_dels(&mut self) -> u64 {
        let before = self.state.dels_replayed;
        for (file, pending) in netsvc_core::runtime::pending::queued(self.store.state_dir()) {
            tracing::debug!(container = %pending.container_id, plugin = pending.plugin_type(), "replaying a queued DEL");
            let Some(plugin) = plugin(pending.plugin_type()) else {
                let _ = std::fs::remove_file(&file);
                continue;
            };
            match pending.call(&self.node).and_then(|call| plugin.del(&call)) {
                Ok(()) => {
                    tracing::debug!(container = %pending.container_id, "queued DEL replayed");
                    let _ = std::fs::remove_file(&file);
                    self.state.dels_replayed += 1;
                }
                Err(e) => tracing::warn!(container = %pending.container_id, "queued DEL failed again: {e}"),
            }
        }
        self.state.dels_replayed - before
    }

    fn save(&mut self) -> anyhow::Result<()> {
        self.state.drift_repaired = self.drift_repaired.load(Ordering::Relaxed);
        let path = state_path(&self.store, &self.node);
        if let Some(dir) = path.parent() {
            netsvc_core::store::create_dirs(dir)?;
        }
        netsvc_core::store::atomic_write(&path, &serde_json::to_vec_pretty(&self.state)?)?;
        Ok(())
    }
}

/// How long a burst of notifications (a flush is one batch, a reload
/// several) may run before the repair, and how long one may be waited for.
const SETTLE: Duration = Duration::from_millis(30);
const BURST_MAX: Duration = Duration::from_millis(200);

/// Repairs this node's kernel state whenever the kernel tells of a change
/// to netsvc's own objects, until `stopping`; once at the start too (what
/// changed while no agent ran).
fn keep_kernel_in_line(store: &StoreHandle, node: &NodeName, stopping: &AtomicBool, repaired: &AtomicU64) {
    let mut notices = match Notifications::open() {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot subscribe to kernel notifications: no drift repair");
            return;
        }
    };
    let mut pending = true;
    while !stopping.load(Ordering::Relaxed) {
        if pending {
            let burst = Instant::now();
            while burst.elapsed() < BURST_MAX && notices.wait(SETTLE).is_ok_and(|n| !n.is_empty()) {}
            pending = false;
            match crate::repair::run(store, node, None, false) {
                Ok(o) => {
                    for d in &o.differences {
                        tracing::info!("repaired drift: {d}");
                    }
                    for e in &o.errors {
                        tracing::warn!("drift repair: {e}");
                    }
                    repaired.fetch_add(o.differences.len() as u64, Ordering::Relaxed);
                }
                Err(e) => tracing::warn!(error = %e, "drift repair"),
            }
        }
        match notices.wait(Duration::from_secs(1)) {
            Ok(n) => pending = n.iter().any(ours),
            Err(e) => {
                tracing::warn!(error = %e, "kernel notifications");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

/// Whether a notification may concern netsvc's objects: its nftables
/// tables, its ifb and WireGuard links, any qdisc (a shaped veth's).
fn ours(n: &Notice) -> bool {
    match n {
        Notice::Nft { table } => table.starts_with("netsvc"),
        Notice::LinkGone { name } => crate::services::ALL
            .iter()
            .flat_map(|s| s.link_prefixes)
            .any(|p| name.starts_with(p)),
        Notice::TcGone { .. } | Notice::Lost => true,
    }
}

/// Renews the node's registration every third of its TTL until `stopping`;
/// when the store is back but the lease ran out (the store stalled longer
/// than the TTL), registers the node anew.
fn keep_registered(
    store: &StoreHandle,
    key: &str,
    registration: &Value,
    mut lease: Lease,
    ttl: Duration,
    stopping: &AtomicBool,
) {
    while !stopping.load(Ordering::Relaxed) {
        std::thread::sleep(ttl / 3);
        let Err(e) = lease.renew() else { continue };
        tracing::warn!(error = %e, "could not renew the node's lease");
        if matches!(store.get(key), Ok(None)) {
            match store.put_leased(key, registration, ttl) {
                Ok(fresh) => {
                    tracing::warn!(%key, "the registration had expired: registered again");
                    lease = fresh;
                }
                Err(e) => tracing::warn!(error = %e, "could not register the node again"),
            }
        }
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
