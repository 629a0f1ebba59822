//! Mode `mesh`: node-to-node encryption. Each node has one key pair (kept in
//! the state dir, 0600) and, per network, one WireGuard device. A node
//! publishes itself in the store as a peer {public key, endpoint, pod
//! subnet}; its device's peers are every other node there, and the routes to
//! their pod subnets go through it. A keeper process per device follows the
//! store, so a node that joins or rotates its key reaches the others without
//! a plugin call on them.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use netsvc_core::cni::{Call, CniError, CniResult, IpNet, Result};
use netsvc_core::graph::{Graph, Intent, Peer, Tx, checked_endpoint, endpoint_from_call, peers_prefix, record_network};
use netsvc_core::naming::fnv64;
use netsvc_core::netlink::routes::{self, Route};
use netsvc_core::netlink::{self, addresses, links};
use netsvc_core::node::NodeName;
use netsvc_core::store::{StoreHandle, open_for};
use serde::{Deserialize, Serialize};

use crate::cleanup::Cleanup;
use crate::config::{MeshConf, OVERHEAD, PeerConf};
use crate::device::{self, Backend};
use crate::keys::{PrivateKey, node_key_path};
use crate::wg::DeviceConfig;
use crate::{NODE_NETNS, SERVICE};

/// Where the mesh is recorded in a network: members by endpoint id, nodes
/// by `node@<name>`.
pub const RECORDS: &str = "netsvc-vpn.mesh";
/// Every mesh device starts so.
pub const PREFIX: &str = "nsm";
/// Names the node when the config does not (else the host name).
pub use netsvc_core::node::NODE_ENV;

/// A node's device on one network, kept under `node@<node>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshNode {
    pub node: String,
    pub device: String,
    pub backend: Backend,
    pub listen_port: u16,
    pub mtu: u32,
    pub persistent_keepalive: u16,
}

/// The node an endpoint of the mesh lives on, kept under the endpoint's id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Member {
    node: String,
}

/// Node records are kept as `node@<name>`, beside endpoint ids (which hold a `:`).
pub const NODE_RECORD_PREFIX: &str = "node@";

fn node_record(node: &str) -> String {
    format!("{NODE_RECORD_PREFIX}{node}")
}

/// The mesh device of `node` on `network`: unique per host, as simulated
/// nodes share wireguard-go's socket folder.
pub fn device_name(node: &str, network: &str) -> String {
    let digest = fnv64(format!("{node}/{network}").as_bytes());
    format!("{PREFIX}{:012x}", digest >> 16)
}

/// The mesh's name for this node: the config's `node`, else the call's node.
pub fn this_node(configured: Option<&str>, call_node: &NodeName) -> String {
    configured.unwrap_or(call_node).to_string()
}

pub fn add(call: &Call, conf: &MeshConf) -> Result<CniResult> {
    let prev = call.chained_prev_result()?;
    let ep = endpoint_from_call(call, &prev, SERVICE)?;
    let in_subnet = ep.ips.iter().any(|ip| conf.pod_subnet.contains(ip.addr));
    if !in_subnet {
        return Err(CniError::invalid_config(
            "podSubnet",
            format!(
                "{} does not hold the container's address ({}): other nodes would not route to it",
                conf.pod_subnet,
                IpNet::list(&ep.ips)
            ),
        ));
    }
    let node = this_node(conf.node.as_deref(), &call.node);
    let store = open_for(&call.conf)?;
    let key = node_key(store.state_dir(), &node)?;
    let backend = device::resolve(conf.backend)?;
    let mtu = match conf.mtu {
        Some(m) => m,
        None => underlay_mtu(conf.endpoint)? - OVERHEAD,
    };
    let me = MeshNode {
        node: node.clone(),
        device: device_name(&node, &call.conf.name),
        backend,
        listen_port: conf.listen_port,
        mtu,
        persistent_keepalive: conf.persistent_keepalive,
    };
    let published = Peer {
        name: node.clone(),
        public_key: key.public().to_string(),
        endpoint: Some(SocketAddr::new(conf.endpoint, conf.listen_port)),
        allowed_ips: vec![conf.pod_subnet],
    };
    let graph = Graph::new(&store, &call.node);
    let network = &call.conf.name;
    let session = graph.lock(network)?;
    let intent = Intent::adding(&ep);
    session.intended(
        SERVICE,
        intent,
        |tx, stale| -> Result<Option<Cleanup>> {
            let cleanup = Cleanup::of(tx, stale)?;
            record_network(tx, &prev)?;
            tx.attach_endpoint(&ep, SERVICE)?;
            tx.put_record(RECORDS, &ep.id(), &Member { node: node.clone() })?;
            tx.put_record(RECORDS, &node_record(&node), &me)?;
            Ok(Some(cleanup))
        },
        // Published once the device listens with its key: a node that
        // learnt of us earlier would start a handshake nobody answers, and
        // retry only after WireGuard's 5 s rekey timeout.
        |s, cleanup| {
            cleanup.run(s.graph())?;
            ensure_device(&me)?;
            sync(&store, &call.node, network, &node)?;
            s.transaction(|tx| tx.put_peer(&published).map_err(CniError::from))?;
            crate::keeper::ensure_running(&store, &call.node, network, &node)
        },
        // The node's device goes with its last endpoint, as on DEL.
        |s| crate::del_locked(s, call).map(drop),
    )?;
    Ok(prev)
}

/// Takes an endpoint's membership out of the graph; when its node (the
/// member record's, else `call_node`: the DEL's own) has no endpoint on the
/// network left, the node's record and published peer go too and its
/// device is returned (to be removed). Each goes on its own: a commit a
/// killed call left halfway may have taken the member and not the peer.
pub fn forget_member(tx: &mut Tx<'_>, endpoint: &str, call_node: Option<&str>) -> Result<Option<String>> {
    let member = tx.remove_record::<Member>(RECORDS, endpoint)?;
    let Some(node) = member.map(|m| m.node).or(call_node.map(str::to_string)) else {
        return Ok(None);
    };
    for other in tx.endpoints()?.into_iter().filter(|e| e.held_by(SERVICE)) {
        if tx
            .get_record::<Member>(RECORDS, &other.id())?
            .is_some_and(|m| m.node == node)
        {
            return Ok(None);
        }
    }
    let peer = tx.remove_peer(&node)?;
    let record = tx.remove_record::<MeshNode>(RECORDS, &node_record(&node))?;
    let network = tx.network_name().to_string();
    Ok((peer.is_some() || record.is_some()).then(|| record.map_or_else(|| device_name(&node, &network), |r| r.device)))
}

/// The mesh devices of the nodes the transaction's local endpoints are on.
pub fn local_nodes(tx: &mut Tx<'_>) -> Result<Vec<MeshNode>> {
    let mut names = std::collections::BTreeSet::new();
    for ep in tx.local_endpoints(SERVICE)? {
        if let Some(m) = tx.get_record::<Member>(RECORDS, &ep.id())? {
            names.insert(m.node);
        }
    }
    let mut out = Vec::new();
    for node in names {
        out.extend(tx.get_record::<MeshNode>(RECORDS, &node_record(&node))?);
    }
    Ok(out)
}

/// The node's private key, made on first use.
fn node_key(state_dir: &Path, node: &str) -> Result<PrivateKey> {
    let path = node_key_path(state_dir, node);
    PrivateKey::load_or_create(&path)
        .map_err(|e| CniError::io(format!("cannot read or make the node key {}: {e}", path.display())))
}

/// The MTU of the node's link that holds `endpoint`.
fn underlay_mtu(endpoint: IpAddr) -> Result<u32> {
    let mtu = netlink::within(NODE_NETNS, |rtnl| {
        let held = addresses::list(rtnl, None)?;
        match held.iter().find(|a| a.address == endpoint) {
            Some(a) => Ok(links::get_by_index(rtnl, a.index)?.mtu),
            None => Ok(None),
        }
    })?;
    mtu.ok_or_else(|| {
        CniError::invalid_config(
            "endpoint",
            format!("{endpoint}: no interface of this node has that address (set mtu to skip this lookup)"),
        )
    })
}

/// Makes the node's device when it has none: created, MTU set, up.
pub(crate) fn ensure_device(me: &MeshNode) -> Result<()> {
    let name = &me.device;
    let exists = netlink::within(NODE_NETNS, |rtnl| links::find_by_name(rtnl, name))?;
    if exists.is_none() {
        device::create(name, me.backend)?;
    }
    netlink::within(NODE_NETNS, |rtnl| {
        let link = links::get_by_name(rtnl, name)?;
        if exists.is_none() {
            // What this plugin makes carries its mark (see `owned`).
            crate::owned::mark(rtnl, link.index, name)?;
        }
        if link.mtu != Some(me.mtu) {
            links::set_mtu(rtnl, link.index, me.mtu)?;
        }
        links::set_up(rtnl, link.index)
    })?;
    Ok(())
}

/// Brings `node`'s device on `network` in line with the store: its key, every
/// other node as a peer, a route to each of their pod subnets (and none to
/// a node that left). Nothing when the node has no device there. `on`: the
/// node whose records hold the device.
pub fn sync(store: &StoreHandle, on: &NodeName, network: &str, node: &str) -> Result<()> {
    let graph = Graph::new(store, on);
    let Some(me) = graph.record::<MeshNode>(network, RECORDS, &node_record(node))? else {
        return Ok(());
    };
    let mut peers = Vec::new();
    for p in graph.peers(network)?.into_iter().filter(|p| p.name != node) {
        peers.push(peer_conf(&p, me.persistent_keepalive)?);
    }
    let wanted: Vec<IpNet> = peers.iter().flat_map(|p| p.allowed_ips.clone()).collect();
    let config = DeviceConfig {
        private_key: node_key(store.state_dir(), node)?,
        listen_port: Some(me.listen_port),
        peers,
    };
    device::configure(&me.device, me.backend, &config)?;
    netlink::within(NODE_NETNS, |rtnl| {
        let index = links::get_by_name(rtnl, &me.device)?.index;
        let mut present = Vec::new();
        for v6 in [false, true] {
            for r in routes::list(rtnl, v6)?.into_iter().filter(|r| r.oif == Some(index)) {
                let dst = IpNet {
                    addr: r.dst,
                    prefix: r.dst_len,
                };
                if wanted.contains(&dst) {
                    present.push(dst);
                } else {
                    routes::delete(rtnl, &r)?;
                }
            }
        }
        for dst in wanted.iter().filter(|d| !present.contains(d)) {
            let route = Route {
                dst: dst.addr,
                dst_len: dst.prefix,
                gateway: None,
                oif: Some(index),
                metric: None,
            };
            routes::add(rtnl, &route)?;
        }
        Ok(())
    })?;
    Ok(())
}

/// A published node as a peer of this one.
fn peer_conf(p: &Peer, keepalive: u16) -> Result<PeerConf> {
    let bad = |why: String| CniError::invalid_config(&format!("peers.{}", p.name), why);
    Ok(PeerConf {
        public_key: p
            .public_key
            .parse()
            .map_err(|e: String| bad(format!("publicKey {e}")))?,
        endpoint: p.endpoint,
        allowed_ips: p.allowed_ips.clone(),
        persistent_keepalive: Some(keepalive).filter(|&k| k != 0),
    })
}

/// Gives `node` a new key pair: written to its key file, applied to its
/// devices, published in every network it meshes on, where the other nodes'
/// keepers pick it up. Returns the networks it was published in. `on`: the
/// node whose records hold its devices.
pub fn rotate(store: &StoreHandle, on: &NodeName, node: &str) -> Result<Vec<String>> {
    let key = PrivateKey::generate();
    let path = node_key_path(store.state_dir(), node);
    key.write(&path)
        .map_err(|e| CniError::io(format!("cannot write {}: {e}", path.display())))?;
    let graph = Graph::new(store, on);
    let mut networks = Vec::new();
    for network in graph.networks()? {
        let published = graph.transaction(&network.name, |tx| -> Result<bool> {
            if tx.get_record::<MeshNode>(RECORDS, &node_record(node))?.is_none() {
                return Ok(false);
            }
            let Some(mut me) = tx.get_peer(node)? else {
                return Ok(false);
            };
            me.public_key = key.public().to_string();
            tx.put_peer(&me)?;
            Ok(true)
        })?;
        if published {
            sync(store, on, &network.name, node)?;
            networks.push(network.name);
        }
    }
    Ok(networks)
}

/// The mesh devices recorded on `network`, one per node.
pub fn nodes(graph: &Graph<'_>, network: &str) -> Result<Vec<MeshNode>> {
    Ok(graph
        .records::<serde_json::Value>(network, RECORDS)?
        .into_iter()
        .filter(|(key, _)| key.starts_with(NODE_RECORD_PREFIX))
        .filter_map(|(_, v)| serde_json::from_value(v).ok())
        .collect())
}

/// How long a keeper waits on the store before checking its device is still there.
pub const KEEPER_POLL: Duration = Duration::from_secs(2);

/// The store prefix a keeper of `network` follows.
pub fn watched_prefix(network: &str) -> Result<String> {
    Ok(peers_prefix(network)?)
}

/// Whether `node`'s device on `network` still exists in this namespace.
/// Only a lookup that answers "no such link" says it is gone: a failed
/// lookup (a netlink error on a busy node) must not end the keeper.
pub fn device_exists(network: &str, node: &str) -> bool {
    let name = device_name(node, network);
    let looked = netlink::within(NODE_NETNS, |rtnl| links::find_by_name(rtnl, &name));
    match looked {
        Ok(found) => found.is_some(),
        Err(e) => {
            tracing::warn!("cannot look for the mesh device of {node} on {network}: {e}");
            true
        }
    }
}

/// Fails (code 120) unless the endpoint's node is published with the key its
/// device holds, and the device has every other node as a peer.
pub fn check(call: &Call, conf: &MeshConf) -> Result<()> {
    let store = open_for(&call.conf)?;
    let graph = Graph::new(&store, &call.node);
    let network = &call.conf.name;
    let ep = checked_endpoint(&graph, call, SERVICE)?;
    let missing = |what: String| CniError::state_missing(SERVICE, what);
    let member: Member = graph
        .record(network, RECORDS, &ep.id())?
        .ok_or_else(|| missing(format!("nothing recorded for {}", ep.id())))?;
    let me: MeshNode = graph
        .record(network, RECORDS, &node_record(&member.node))?
        .ok_or_else(|| missing(format!("node {} is not in the mesh", member.node)))?;
    if me.listen_port != conf.listen_port {
        return Err(missing("the mesh differs from this config".into()));
    }
    let peers = graph.peers(network)?;
    let published = peers
        .iter()
        .find(|p| p.name == me.node)
        .ok_or_else(|| missing(format!("node {} is not published", me.node)))?;
    let state =
        device::state(&me.device, me.backend).map_err(|e| missing(format!("{} does not answer: {e}", me.device)))?;
    if state.public_key.map(|k| k.to_string()).as_deref() != Some(published.public_key.as_str()) {
        return Err(missing(format!(
            "{} holds another key than the one published",
            me.device
        )));
    }
    if !crate::keeper::is_running(store.state_dir(), network, &me.node) {
        return Err(missing(format!("the keeper of {} is not running", me.device)));
    }
    let on_device: Vec<String> = state.peers.iter().map(|p| p.public_key.to_string()).collect();
    if let Some(p) = peers
        .iter()
        .find(|p| p.name != me.node && !on_device.contains(&p.public_key))
    {
        return Err(missing(format!("{} lacks node {}", me.device, p.name)));
    }
    Ok(())
}
