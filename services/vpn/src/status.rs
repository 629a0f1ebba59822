//! What an operator reads of the VPN (`netsvc vpn status`): every tunnel and
//! mesh node with its public key, peers and, where the device answers, its
//! handshakes and traffic. Public material only.

use std::net::SocketAddr;

use netsvc_core::cni::{IpNet, Result};
use netsvc_core::graph::Graph;
use netsvc_core::node::NodeName;
use netsvc_core::store::Store;
use serde::Serialize;

use crate::device::{self, Backend};
use crate::mesh::{self, MeshNode};
use crate::tunnel::{self, TunnelRecord};
use crate::wg::DeviceState;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkStatus {
    pub network: String,
    pub tunnels: Vec<TunnelStatus>,
    pub mesh: Vec<NodeStatus>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TunnelStatus {
    /// `<container id>:<ifname>`.
    pub endpoint: String,
    #[serde(flatten)]
    pub tunnel: TunnelRecord,
    pub live: Option<Live>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub node: String,
    pub public_key: String,
    pub endpoint: Option<SocketAddr>,
    pub pod_subnets: Vec<IpNet>,
    /// The node's device, when the node is this one's view of itself.
    pub device: Option<MeshNode>,
    pub live: Option<Live>,
}

/// What a device reports now: per peer, the last handshake and traffic.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Live {
    pub listen_port: Option<u16>,
    pub peers: Vec<LivePeer>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LivePeer {
    pub public_key: String,
    pub endpoint: Option<String>,
    /// Seconds since the epoch; 0: never.
    pub last_handshake: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

impl From<DeviceState> for Live {
    fn from(s: DeviceState) -> Live {
        Live {
            listen_port: s.listen_port,
            peers: s
                .peers
                .into_iter()
                .map(|p| LivePeer {
                    public_key: p.public_key.to_string(),
                    endpoint: p.endpoint.map(|e| e.to_string()),
                    last_handshake: p.last_handshake,
                    rx_bytes: p.rx_bytes,
                    tx_bytes: p.tx_bytes,
                })
                .collect(),
        }
    }
}

/// Live state of a device this process can reach: a userspace one from
/// anywhere (its socket), a kernel one in this namespace only.
fn live(name: &str, backend: Backend) -> Option<Live> {
    device::state(name, backend).ok().map(Live::from)
}

/// The VPN of every network (or of `only`).
pub fn collect(store: &dyn Store, node: &NodeName, only: Option<&str>) -> Result<Vec<NetworkStatus>> {
    let graph = Graph::new(store, node);
    let mut out = Vec::new();
    for network in graph.networks()? {
        if only.is_some_and(|n| n != network.name) {
            continue;
        }
        let tunnels: Vec<TunnelStatus> = graph
            .records::<TunnelRecord>(&network.name, tunnel::RECORDS)?
            .into_iter()
            .map(|(endpoint, t)| TunnelStatus {
                endpoint,
                live: live(&t.device, t.backend),
                tunnel: t,
            })
            .collect();
        let nodes = mesh::nodes(&graph, &network.name)?;
        let mesh = graph
            .peers(&network.name)?
            .into_iter()
            .map(|p| {
                let device = nodes.iter().find(|n| n.node == p.name).cloned();
                NodeStatus {
                    live: device.as_ref().and_then(|d| live(&d.device, d.backend)),
                    node: p.name,
                    public_key: p.public_key,
                    endpoint: p.endpoint,
                    pod_subnets: p.allowed_ips,
                    device,
                }
            })
            .collect::<Vec<_>>();
        if !tunnels.is_empty() || !mesh.is_empty() {
            out.push(NetworkStatus {
                network: network.name,
                tunnels,
                mesh,
            });
        }
    }
    Ok(out)
}

/// The status as text, one block per network.
pub fn render(networks: &[NetworkStatus]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for n in networks {
        let _ = writeln!(s, "network {}", n.network);
        for t in &n.tunnels {
            let _ = writeln!(
                s,
                "  tunnel {} ({} in the container, {}, {})\n    public key {}\n    address {}  routes {}",
                t.endpoint,
                t.tunnel.interface,
                t.tunnel.device,
                t.tunnel.backend,
                t.tunnel.public_key,
                t.tunnel.address,
                t.tunnel
                    .routes
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            render_peers(&mut s, t.live.as_ref());
        }
        for node in &n.mesh {
            let _ = writeln!(
                s,
                "  mesh node {} at {}  pod subnets {}\n    public key {}",
                node.node,
                node.endpoint.map_or("-".to_string(), |e| e.to_string()),
                IpNet::list(&node.pod_subnets),
                node.public_key
            );
            render_peers(&mut s, node.live.as_ref());
        }
    }
    s
}

fn render_peers(s: &mut String, live: Option<&Live>) {
    use std::fmt::Write;
    let Some(live) = live else {
        return;
    };
    for p in &live.peers {
        let _ = writeln!(
            s,
            "    peer {} {}  handshake {}  rx {} B  tx {} B",
            p.public_key,
            p.endpoint.as_deref().unwrap_or("-"),
            if p.last_handshake == 0 {
                "never".to_string()
            } else {
                p.last_handshake.to_string()
            },
            p.rx_bytes,
            p.tx_bytes
        );
    }
}
