//! `netsvc agent`: the node agent (see [`crate::agent`]).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use netsvc_core::cni::NetConfList;

use super::common::StateDirArg;
use crate::agent::Agent;

#[derive(Debug, Args)]
#[command(
    after_help = "Example: netsvc agent --node node-a --conflist /etc/cni/net.d/span.conflist \
                  --store '{\"type\":\"etcd\",\"endpoints\":[\"http://10.0.0.1:2379\"]}'"
)]
pub struct AgentArgs {
    /// A conflist whose netsvc services this node renders as the store
    /// changes (repeatable; none: only drift is repaired).
    #[arg(long)]
    conflist: Vec<PathBuf>,
    /// This node's name (default: NETSVC_NODE_NAME, else the host name).
    #[arg(long)]
    node: Option<String>,
    /// Seconds the node's registration outlives the agent.
    #[arg(long, default_value_t = 10)]
    lease_ttl: u64,
    #[command(flatten)]
    store: StateDirArg,
}

pub fn run(a: AgentArgs) -> anyhow::Result<i32> {
    // Resolved once; the agent hands it to every service it calls.
    let node = netsvc_core::node::NodeName::from_env(a.node.as_deref())?;
    tracing::info!(%node, "this node");
    let mut lists = Vec::new();
    for path in &a.conflist {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        lists.push(NetConfList::parse(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?);
    }
    let store = a.store.open()?;
    let agent = Agent::new(store, node, lists, Duration::from_secs(a.lease_ttl.max(2)));
    // Runs until killed: a stop needs no cleanup (the state file is written
    // atomically after each batch; the registration lives out its lease).
    agent.run(&|| false)?;
    Ok(0)
}
