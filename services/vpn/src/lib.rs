//! netsvc-vpn: WireGuard for containers, as a CNI plugin.
//!
//! Mode `tunnel` gives a container its own VPN: a WireGuard device made on
//! the node and moved into the container, so the encrypted UDP socket stays
//! on the node while the container's routes go only through the tunnel.
//! Mode `mesh` encrypts traffic between nodes: one device and key pair per
//! node, peers and routes taken from the store.
//!
//! The kernel's WireGuard is used where the kernel has it, wireguard-go
//! (through its UAPI socket) where not: `backend: auto|kernel|userspace`.
//! Private keys never reach stdout, logs or results: only public keys are
//! recorded.

pub mod config;
pub mod device;
pub mod keeper;
pub mod keys;
pub mod mesh;
pub mod owned;
pub mod status;
pub mod tunnel;
pub mod wg;

use std::collections::BTreeSet;
use std::path::Path;

use config::{BackendChoice, VpnConf};
use netsvc_core::cni::{Call, CniResult, Descriptor, Feature, Plugin, Result};
use netsvc_core::graph::{Graph, Tx};
use netsvc_core::netlink::{NetlinkError, links};
use netsvc_core::store::open_for;

/// The plugin type, and this service's name in the graph.
pub const SERVICE: &str = "netsvc-vpn";
/// The plugin's own namespace: the node's.
const NODE_NETNS: &str = netsvc_core::netns::OWN;

/// What leaves the graph with an attachment.
#[derive(Debug, Default)]
pub struct Forgotten {
    pub tunnel: Option<tunnel::TunnelRecord>,
    /// The node whose last mesh endpoint on the network this was.
    pub mesh: Option<mesh::MeshNode>,
}

/// Takes an attachment out of the graph, whichever mode it was in.
pub fn forget(tx: &mut Tx<'_>, container_id: &str, ifname: &str) -> Result<Forgotten> {
    let Some(ep) = tx.detach_endpoint(container_id, ifname, SERVICE)? else {
        return Ok(Forgotten::default());
    };
    Ok(Forgotten {
        tunnel: tx.remove_record(tunnel::RECORDS, &ep.id())?,
        mesh: mesh::forget_member(tx, &ep.id())?,
    })
}

/// Removes what the kernel holds for a forgotten attachment. Its tunnel
/// device is looked for in the recorded namespace and in `netns` (DEL's
/// CNI_NETNS), so a DEL without a record still finds it.
fn tear_down(container_id: &str, ifname: &str, f: &Forgotten, netns: Option<&Path>) -> Result<()> {
    let recorded = f.tunnel.as_ref().map(|r| Path::new(&r.netns));
    let mut places: Vec<&Path> = recorded.into_iter().chain(netns).collect();
    places.dedup();
    tunnel::tear_down(&tunnel::device_name(container_id, ifname), &places);
    if let Some(node) = &f.mesh {
        // Its keeper exits when it sees the device gone.
        device::remove(&node.device)?;
    }
    Ok(())
}

pub struct Vpn;

impl Plugin for Vpn {
    fn descriptor(&self) -> Descriptor {
        Descriptor {
            plugin_type: SERVICE.into(),
            provides: vec![Feature::Tunnel, Feature::Interface, Feature::Ip, Feature::Routes],
            ..Default::default()
        }
    }

    fn add(&self, call: &Call) -> Result<CniResult> {
        match VpnConf::from_netconf(&call.conf)? {
            VpnConf::Tunnel(t) => tunnel::add(call, &t),
            VpnConf::Mesh(m) => mesh::add(call, &m),
        }
    }

    /// Works from the graph; a tunnel device is also found by the name the
    /// attachment always gets, so DEL cleans up even without a record.
    fn del(&self, call: &Call) -> Result<()> {
        let (container_id, ifname) = (&call.env.container_id, &call.env.ifname);
        let store = open_for(&call.conf)?;
        let forgotten = Graph::new(&store).transaction(&call.conf.name, |tx| forget(tx, container_id, ifname))?;
        tear_down(container_id, ifname, &forgotten, call.env.netns.as_deref())
    }

    fn check(&self, call: &Call) -> Result<()> {
        match VpnConf::from_netconf(&call.conf)? {
            VpnConf::Tunnel(t) => tunnel::check(call, &t),
            VpnConf::Mesh(m) => mesh::check(call, &m),
        }
    }

    /// Drops the tunnels and mesh memberships of attachments that are gone,
    /// and any device of ours that no record of any network holds.
    fn gc(&self, call: &Call) -> Result<()> {
        let store = open_for(&call.conf)?;
        let graph = Graph::new(&store);
        let gone = graph.transaction(&call.conf.name, |tx| -> Result<Vec<(String, String, Forgotten)>> {
            let mut gone = Vec::new();
            // The runtime lists this node's containers only.
            for ep in tx.local_endpoints(SERVICE)? {
                if ep.held_by(SERVICE) && !call.gc_keeps(&ep.container_id, &ep.ifname) {
                    let f = forget(tx, &ep.container_id, &ep.ifname)?;
                    gone.push((ep.container_id, ep.ifname, f));
                }
            }
            Ok(gone)
        })?;
        for (container_id, ifname, f) in &gone {
            tear_down(container_id, ifname, f, None)?;
        }
        let mut held = BTreeSet::new();
        for network in graph.networks()? {
            for (_, t) in graph.records::<tunnel::TunnelRecord>(&network.name, tunnel::RECORDS)? {
                held.insert(t.device);
            }
            held.extend(mesh::nodes(&graph, &network.name)?.into_iter().map(|n| n.device));
        }
        for name in [tunnel::PREFIX, mesh::PREFIX]
            .into_iter()
            .flat_map(device::userspace_devices_here)
        {
            if !held.contains(&name) {
                device::stop_userspace(&name);
            }
        }
        // Devices of ours only: a name of our form, a WireGuard kind, and our
        // alias or none yet (see `owned`); "nsmith0" is not ours.
        netsvc_core::netns::run(NODE_NETNS, |h| async move {
            for link in owned::ours_on_node(&h).await? {
                if !held.contains(&link.name) {
                    links::delete(&h, link.index).await?;
                }
            }
            Ok::<_, NetlinkError>(())
        })??;
        Ok(())
    }

    /// 50 when neither backend the config allows can run here; otherwise
    /// the backend a new device would get goes to the log.
    fn status(&self, call: &Call) -> Result<()> {
        let choice = VpnConf::from_netconf(&call.conf).map_or(BackendChoice::Auto, |c| c.backend());
        let backend = device::resolve(choice)?;
        tracing::info!("netsvc-vpn: backend {backend} ready");
        Ok(())
    }
}
