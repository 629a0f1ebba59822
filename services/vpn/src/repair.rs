//! `netsvc repair` for the VPN: the kernel read into [`drift::Seen`], the
//! differences, and what converges them. A tunnel whose device is gone
//! cannot be made again (its private key was never kept): it is reported,
//! and left to the runtime (DEL, or GC once the container is gone).

use std::path::Path;

use netsvc_core::cni::{CniError, Result};
use netsvc_core::graph::{Graph, Intent, Op, Tx};
use netsvc_core::netlink::{self, NetlinkError, links, routes};
use netsvc_core::node::NodeName;
use netsvc_core::reconcile::{DiffKind, Difference, Repair};
use netsvc_core::store::{Store, StoreHandle};

use crate::cleanup::{self, Ours};
use crate::device::{self, Backend};
use crate::drift::{self, MeshSeen, MeshWanted, OtherNode, Seen, TunnelSeen, Wanted};
use crate::mesh::{self, MeshNode};
use crate::tunnel::{self, TunnelRecord};
use crate::{Forgotten, NODE_NETNS, SERVICE, Vpn, forget, keeper, owned, tear_down, wg};

fn handle_of(store: &dyn Store) -> Result<&StoreHandle> {
    store
        .as_handle()
        .ok_or_else(|| CniError::io("netsvc-vpn needs the store opened with its state dir to read node keys"))
}

/// What a repair changes, with the differences it fixes.
#[derive(Default)]
struct Plan {
    found: Vec<Difference>,
    /// What it cannot fix (a tunnel device that is gone).
    unfixable: Vec<Difference>,
    tunnels: Vec<TunnelRecord>,
    rolled_back: Vec<(String, String, Forgotten)>,
    mesh: Vec<MeshNode>,
    orphans: Option<(Ours, std::collections::BTreeSet<String>)>,
}

impl Plan {
    fn is_empty(&self) -> bool {
        self.tunnels.is_empty() && self.rolled_back.is_empty() && self.mesh.is_empty() && self.orphans.is_none()
    }
}

/// The network as the store wants it here (a dead ADD rolled back) against the kernel.
fn plan(graph: &Graph<'_>, store: &StoreHandle, tx: &mut Tx<'_>, stale: Option<&Intent>) -> Result<Plan> {
    let network = tx.network_name().to_string();
    let mut out = Plan::default();
    if let Some((id, ifname)) = stale.and_then(Intent::added) {
        out.rolled_back
            .push((id.to_string(), ifname.to_string(), forget(tx, id, ifname, None)?));
    }
    // Listed before the records are read (see `cleanup::ours`).
    let ours = cleanup::ours()?;
    let mut tunnels = Vec::new();
    for ep in tx.local_endpoints(SERVICE)? {
        tunnels.extend(tx.get_record::<TunnelRecord>(tunnel::RECORDS, &ep.id())?);
    }
    let nodes = mesh::local_nodes(tx)?;
    let mut held = cleanup::held(graph, Some(&network))?;
    held.extend(tunnels.iter().map(|t| t.device.clone()));
    held.extend(nodes.iter().map(|n| n.device.clone()));
    let peers = graph.peers(&network)?;
    let mut seen = Seen::default();
    let dead: Vec<&TunnelRecord> = out
        .rolled_back
        .iter()
        .filter_map(|(_, _, f)| f.tunnel.as_ref())
        .collect();
    for t in tunnels.iter().chain(dead.iter().copied()) {
        seen.tunnels.insert(t.device.clone(), observe_tunnel(t)?);
    }
    for n in &nodes {
        seen.mesh
            .insert(n.device.clone(), observe_mesh(store, &network, n, &ours)?);
    }
    seen.ours = ours;
    let none = |held: &std::collections::BTreeSet<String>| Wanted {
        tunnels: Vec::new(),
        rolled_back: Vec::new(),
        mesh: Vec::new(),
        held: held.clone(),
    };
    let everything: std::collections::BTreeSet<String> =
        seen.ours.links.iter().chain(&seen.ours.userspace).cloned().collect();
    for t in &tunnels {
        let found = drift::differences(
            &network,
            &Wanted {
                tunnels: vec![t],
                ..none(&everything)
            },
            &seen,
        );
        if found
            .iter()
            .any(|d| d.kind == DiffKind::Missing && d.object == drift::tunnel_object(t))
        {
            out.unfixable.extend(found);
        } else if !found.is_empty() {
            out.found.extend(found);
            out.tunnels.push(t.clone());
        }
    }
    for n in &nodes {
        let m = MeshWanted {
            node: n,
            published: peers.iter().find(|p| p.name == n.node).map(|p| p.public_key.clone()),
            others: peers
                .iter()
                .filter(|p| p.name != n.node)
                .map(|p| OtherNode {
                    name: p.name.clone(),
                    public_key: p.public_key.clone(),
                    subnets: p.allowed_ips.clone(),
                })
                .collect(),
        };
        let found = drift::differences(
            &network,
            &Wanted {
                mesh: vec![m],
                ..none(&everything)
            },
            &seen,
        );
        if !found.is_empty() {
            out.found.extend(found);
            out.mesh.push(n.clone());
        }
    }
    let rest = Wanted {
        rolled_back: dead,
        ..none(&held)
    };
    out.found.extend(drift::differences(&network, &rest, &seen));
    if everything.iter().any(|n| !held.contains(n)) {
        out.orphans = Some((std::mem::take(&mut seen.ours), held));
    }
    Ok(out)
}

/// A tunnel's device in its container (none when the namespace is gone).
fn observe_tunnel(r: &TunnelRecord) -> Result<TunnelSeen> {
    let netns = Path::new(&r.netns);
    if netsvc_core::netns::check_net_namespace(netns).is_err() {
        return Ok(TunnelSeen::default());
    }
    let link = netlink::within(netns, |rtnl| {
        Ok(owned::list(rtnl)?.into_iter().find(|l| l.is(&r.device)))
    })?;
    let Some(link) = link else {
        return Ok(TunnelSeen::default());
    };
    let state = match r.backend {
        Backend::Userspace => device::state(&r.device, r.backend),
        Backend::Kernel => {
            let name = link.name.clone();
            netsvc_core::netns::run_sync(netns, move || device::state(&name, Backend::Kernel))?
        }
    };
    Ok(TunnelSeen {
        present: true,
        up: link.up,
        peers: state
            .ok()
            .map(|s| s.peers.iter().map(|p| p.public_key.to_string()).collect()),
    })
}

/// A mesh device of this node: its key, peers, routes and keeper.
fn observe_mesh(store: &StoreHandle, network: &str, n: &MeshNode, ours: &Ours) -> Result<MeshSeen> {
    if !ours.links.contains(&n.device) && !ours.userspace.contains(&n.device) {
        return Ok(MeshSeen::default());
    }
    let state = device::state(&n.device, n.backend).ok();
    let routes = netlink::within(NODE_NETNS, |rtnl| {
        let Some(link) = links::find_by_name(rtnl, &n.device)? else {
            return Ok(Default::default());
        };
        let mut out = std::collections::BTreeSet::new();
        for v6 in [false, true] {
            for r in routes::list(rtnl, v6)?
                .into_iter()
                .filter(|r| r.oif == Some(link.index))
            {
                out.insert(format!("{}/{}", r.dst, r.dst_len));
            }
        }
        Ok(out)
    })?;
    Ok(MeshSeen {
        present: true,
        public_key: state
            .as_ref()
            .and_then(|s| s.public_key.as_ref())
            .map(|k| k.to_string()),
        peers: state
            .iter()
            .flat_map(|s| &s.peers)
            .map(|p| p.public_key.to_string())
            .collect(),
        routes,
        keeper: keeper::is_running(store.state_dir(), network, &n.node),
    })
}

/// A tunnel's device brought back up with the peers its record names (the
/// key stays as it is).
fn fix_tunnel(r: &TunnelRecord) -> Result<()> {
    let netns = Path::new(&r.netns);
    let name = netlink::within(netns, |rtnl| {
        let link = owned::list(rtnl)?.into_iter().find(|l| l.is(&r.device));
        let Some(link) = link else {
            return Err(NetlinkError::LinkNotFound(r.device.clone()));
        };
        if !link.up {
            links::set_up(rtnl, link.index)?;
        }
        Ok(link.name)
    })?;
    let read = |name: &str| match r.backend {
        Backend::Userspace => device::state(&r.device, r.backend),
        Backend::Kernel => {
            let name = name.to_string();
            netsvc_core::netns::run_sync(netns, move || device::state(&name, Backend::Kernel))
                .map_err(std::io::Error::other)?
        }
    };
    let state = read(&name).map_err(|e| CniError::io(format!("{} does not answer: {e}", r.device)))?;
    let change = wg::Change {
        private_key: None,
        listen_port: None,
        replace_all: false,
        remove: state
            .peers
            .iter()
            .filter(|p| !r.peers.iter().any(|w| w.public_key == p.public_key))
            .map(|p| p.public_key.clone())
            .collect(),
        upsert: r
            .peers
            .iter()
            .filter(|w| !state.peers.iter().any(|p| p.public_key == w.public_key))
            .collect(),
    };
    match r.backend {
        Backend::Userspace => device::apply(&r.device, r.backend, &change),
        Backend::Kernel => netsvc_core::netns::run_sync(netns, || device::apply(&name, Backend::Kernel, &change))?,
    }
}

fn fix(store: &StoreHandle, on: &NodeName, network: &str, plan: &Plan) -> Result<()> {
    for (id, ifname, f) in &plan.rolled_back {
        tear_down(id, ifname, f, None)?;
    }
    for t in &plan.tunnels {
        fix_tunnel(t)?;
    }
    for n in &plan.mesh {
        mesh::ensure_device(n)?;
        mesh::sync(store, on, network, &n.node)?;
        keeper::ensure_running(store, on, network, &n.node)?;
    }
    if let Some((ours, held)) = &plan.orphans {
        cleanup::remove_orphans(ours, held)?;
    }
    Ok(())
}

impl Repair for Vpn {
    fn plugin_type(&self) -> &'static str {
        SERVICE
    }

    /// Under the lock (an intent found is then a dead call's), with a dead
    /// ADD rolled back as the next call would, in a transaction never committed.
    fn diff(&self, store: &dyn Store, node: &NodeName, network: &str) -> Result<Vec<Difference>> {
        let handle = handle_of(store)?;
        let graph = Graph::new(store, node);
        let session = graph.lock(network)?;
        session.dry_run(SERVICE, |tx, stale| {
            let plan = plan(&graph, handle, tx, stale)?;
            let mut all = plan.found;
            all.extend(plan.unfixable);
            Ok(all)
        })
    }

    fn repair(&self, store: &dyn Store, node: &NodeName, network: &str) -> Result<Vec<Difference>> {
        let handle = handle_of(store)?;
        let graph = Graph::new(store, node);
        let session = graph.lock(network)?;
        let fixed = session.intended(
            SERVICE,
            Intent::network(Op::Render),
            |tx, stale| -> Result<Option<Plan>> {
                let plan = plan(&graph, handle, tx, stale)?;
                Ok((!plan.is_empty() || stale.is_some()).then_some(plan))
            },
            |_, plan| {
                fix(handle, node, network, &plan)?;
                Ok(plan.found)
            },
            |_| Ok(()),
        )?;
        Ok(fixed.unwrap_or_default())
    }
}
