//! `netsvc vpn`: the VPN's operator commands. `status` shows tunnels and mesh
//! nodes with their public keys (never a private one); `rotate` gives a node
//! a new key pair, which the other nodes pick up from the store.

use clap::{Args, Subcommand};

use super::common::{ReportArgs, StateDirArg};

#[derive(Debug, Args)]
#[command(after_help = "Example: netsvc vpn status --format json")]
pub struct VpnArgs {
    #[command(subcommand)]
    command: VpnCmd,
}

#[derive(Debug, Subcommand)]
enum VpnCmd {
    /// Tunnels and mesh nodes: public keys, peers, handshakes, traffic.
    #[command(after_help = "Example: netsvc vpn status --network branch --format json")]
    Status {
        #[command(flatten)]
        report: ReportArgs,
    },
    /// Give this node a new mesh key pair; the other nodes pick it up from the store.
    ///
    /// Run it on the node (in its network namespace): the node's devices take
    /// the new key at once.
    #[command(after_help = "Example: netsvc vpn rotate --node node-a")]
    Rotate {
        /// The node (default: NETSVC_NODE_NAME, else the host name).
        #[arg(long)]
        node: Option<String>,
        #[command(flatten)]
        store: StateDirArg,
    },
}

pub fn run(a: VpnArgs) -> anyhow::Result<i32> {
    match a.command {
        VpnCmd::Status { report } => report.print(
            |store, node, network| Ok(netsvc_vpn::status::collect(store, node, network)?),
            |status| netsvc_vpn::status::render(status),
        ),
        VpnCmd::Rotate { node, store } => {
            let store = store.open()?;
            let on = super::common::this_node()?;
            let node = netsvc_core::node::NodeName::from_env(node.as_deref())?;
            let networks = netsvc_vpn::mesh::rotate(&store, &on, &node)?;
            if networks.is_empty() {
                eprintln!("netsvc vpn rotate: {node} has a new key; it meshes on no network yet");
            } else {
                println!("{node}: new key published on {}", networks.join(", "));
            }
            Ok(0)
        }
    }
}
