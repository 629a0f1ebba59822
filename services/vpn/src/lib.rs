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
//!
//! Every call takes the order of the core's `Session::intended`: the graph
//! change is committed with the call's intent before a device is made or
//! removed, and cleared after. A dead ADD's attachment is rolled back by
//! the next call, which removes its device (and wireguard-go); devices of
//! ours no record holds go too.

#![forbid(unsafe_code)]

pub mod cleanup;
pub mod config;
pub mod device;
pub mod drift;
pub mod keeper;
pub mod keys;
pub mod mesh;
pub mod owned;
pub mod status;
pub mod tunnel;
pub mod wg;

mod repair;
mod service;

pub use service::DESCRIPTION;

use std::path::Path;

use cleanup::Cleanup;
use config::{BackendChoice, VpnConf};
use netsvc_core::cni::{Call, CniResult, Descriptor, Feature, Plugin, Result};
use netsvc_core::graph::{Endpoint, Graph, Intent, Op, Session, Tx};
use netsvc_core::store::open_for;

/// The plugin type, and this service's name in the graph.
pub const SERVICE: &str = "netsvc-vpn";
/// The plugin's own namespace: the node's.
const NODE_NETNS: &str = netsvc_core::netns::OWN;

/// What leaves the graph with an attachment.
#[derive(Debug, Default)]
pub struct Forgotten {
    /// The plugin held its endpoint.
    pub held: bool,
    pub tunnel: Option<tunnel::TunnelRecord>,
    /// The mesh device of the node whose last endpoint on the network this was.
    pub mesh: Option<String>,
}

/// An attachment that left the graph: container id, ifname, its records.
type Gone = (String, String, Forgotten);

/// The key of an attachment's records (the endpoint's id).
pub fn record_name(container_id: &str, ifname: &str) -> String {
    Endpoint {
        container_id: container_id.to_string(),
        ifname: ifname.to_string(),
        ..Default::default()
    }
    .id()
}

/// Takes an attachment out of the graph, whichever mode it was in. Its
/// records go even when the endpoint is gone already: a dead ADD's endpoint
/// is rolled back by the core, its records are ours to drop.
/// `mesh_node`: the mesh node of the call, when its config is a mesh (see
/// [`mesh::forget_member`]).
pub fn forget(tx: &mut Tx<'_>, container_id: &str, ifname: &str, mesh_node: Option<&str>) -> Result<Forgotten> {
    let held = tx.detach_endpoint(container_id, ifname, SERVICE)?.is_some();
    let id = record_name(container_id, ifname);
    Ok(Forgotten {
        held,
        tunnel: tx.remove_record(tunnel::RECORDS, &id)?,
        mesh: mesh::forget_member(tx, &id, mesh_node)?,
    })
}

/// The mesh node a call of a mesh config runs as; `None` for a tunnel (or
/// a config that no longer parses: DEL goes on without it).
fn mesh_node_of(call: &Call) -> Option<String> {
    match VpnConf::from_netconf(&call.conf) {
        Ok(VpnConf::Mesh(m)) => Some(mesh::this_node(m.node.as_deref(), &call.node)),
        _ => None,
    }
}

/// Removes what the kernel holds for a forgotten attachment. Its tunnel
/// device is looked for in the recorded namespace and in `netns` (DEL's
/// CNI_NETNS), so a DEL without a record still finds it.
pub fn tear_down(container_id: &str, ifname: &str, f: &Forgotten, netns: Option<&Path>) -> Result<()> {
    let recorded = f.tunnel.as_ref().map(|r| Path::new(&r.netns));
    let mut places: Vec<&Path> = recorded.into_iter().chain(netns).collect();
    places.dedup();
    tunnel::tear_down(&tunnel::device_name(container_id, ifname), &places);
    if let Some(node) = &f.mesh {
        // Its keeper exits when it sees the device gone.
        device::remove(node)?;
    }
    Ok(())
}

/// DEL of one attachment under a held lock (also how a failed ADD undoes
/// itself). `None` when the store had nothing of it.
fn del_locked(session: &Session<'_, '_>, call: &Call) -> Result<Option<()>> {
    let (container_id, ifname) = (&call.env.container_id, &call.env.ifname);
    let netns = call.env.netns.as_deref();
    let mesh_node = mesh_node_of(call);
    session.intended(
        SERVICE,
        Intent::attachment(Op::Del, container_id, ifname),
        |tx, stale| -> Result<Option<(Cleanup, Forgotten)>> {
            let cleanup = Cleanup::of(tx, stale)?;
            let f = forget(tx, container_id, ifname, mesh_node.as_deref())?;
            let recorded = f.held || f.tunnel.is_some() || f.mesh.is_some();
            Ok((recorded || !cleanup.is_empty()).then_some((cleanup, f)))
        },
        |s, (cleanup, f)| {
            cleanup.run(s.graph())?;
            tear_down(container_id, ifname, &f, netns)
        },
        // Removing is idempotent: the next call finishes the intent.
        |_| Ok(()),
    )
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
        let netns = call.env.netns.as_deref();
        let store = open_for(&call.conf)?;
        let graph = Graph::new(&store, &call.node);
        let session = graph.lock(&call.conf.name)?;
        match del_locked(&session, call) {
            Ok(Some(())) => Ok(()),
            Ok(None) => tear_down(container_id, ifname, &Forgotten::default(), netns),
            Err(e) => session.del_without_intent(SERVICE, e, |tx| -> Result<()> {
                let f = forget(tx, container_id, ifname, mesh_node_of(call).as_deref())?;
                tear_down(container_id, ifname, &f, netns)
            }),
        }
    }

    fn check(&self, call: &Call) -> Result<()> {
        let conf = VpnConf::from_netconf(&call.conf)?;
        let store = open_for(&call.conf)?;
        netsvc_core::graph::check_finished(&Graph::new(&store, &call.node), &call.conf.name, SERVICE)?;
        match conf {
            VpnConf::Tunnel(t) => tunnel::check(call, &t),
            VpnConf::Mesh(m) => mesh::check(call, &m),
        }
    }

    /// Drops the tunnels and mesh memberships of attachments that are gone,
    /// and any device of ours that no record of any network holds.
    fn gc(&self, call: &Call) -> Result<()> {
        let store = open_for(&call.conf)?;
        let graph = Graph::new(&store, &call.node);
        let session = graph.lock(&call.conf.name)?;
        session.intended(
            SERVICE,
            Intent::network(Op::Gc),
            |tx, stale| -> Result<Option<(Cleanup, Vec<Gone>)>> {
                let mut cleanup = Cleanup::of(tx, stale)?;
                cleanup.sweep = true;
                let mut gone = Vec::new();
                // The runtime lists this node's containers only.
                for ep in tx.local_endpoints(SERVICE)? {
                    if !call.gc_keeps(&ep.container_id, &ep.ifname) {
                        let f = forget(tx, &ep.container_id, &ep.ifname, None)?;
                        gone.push((ep.container_id, ep.ifname, f));
                    }
                }
                Ok(Some((cleanup, gone)))
            },
            |s, (cleanup, gone)| {
                for (container_id, ifname, f) in &gone {
                    tear_down(container_id, ifname, f, None)?;
                }
                cleanup.run(s.graph())
            },
            |_| Ok(()),
        )?;
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
