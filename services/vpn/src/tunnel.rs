//! Mode `tunnel`: a per-container VPN, the WireGuard network-namespace
//! pattern. The device is made in the node's namespace (so its encrypted UDP
//! socket stays there, on the underlay), configured, then moved into the
//! container, where it gets the tunnel address and the container's routes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::path::Path;

use netsvc_core::cni::{Call, CniError, CniResult, Interface, IpConfig, IpNet, Result, Route};
use netsvc_core::graph::{Graph, Intent, checked_endpoint, endpoint_from_call, record_network};
use netsvc_core::naming::fnv64;
use netsvc_core::netlink::routes::{self, Route as KernelRoute};
use netsvc_core::netlink::{self, Rtnl, addresses, links};
use netsvc_core::store::open_for;
use serde::{Deserialize, Serialize};

use crate::cleanup::Cleanup;
use crate::config::{PeerConf, TunnelConf};
use crate::device::{self, Backend};
use crate::keys::{PrivateKey, PublicKey};
use crate::owned;
use crate::wg::DeviceConfig;
use crate::{NODE_NETNS, SERVICE};

/// Every tunnel device starts so on the node (GC finds orphans by it).
pub const PREFIX: &str = "nsv";
/// The device's name in a container that already has an interface.
const CHAINED_INTERFACE: &str = "wg0";

/// The mac a WireGuard device reports: it has no hardware address, and
/// this is how the kernel shows one of none (as on lo). Podman's CNI
/// backend rejects a container interface with no mac at all.
const NO_HARDWARE_ADDRESS: &str = "00:00:00:00:00:00";

/// Where tunnels are recorded in a network, by endpoint id.
pub const RECORDS: &str = "netsvc-vpn.tunnel";

/// A tunnel's node-side name: `nsv` + 12 hex digits of the attachment, the
/// same on every call so DEL finds it without the store. Unique per host, as
/// wireguard-go's sockets share one folder across namespaces.
pub fn device_name(container_id: &str, ifname: &str) -> String {
    let digest = fnv64(format!("{container_id}/{ifname}").as_bytes());
    format!("{PREFIX}{:012x}", digest >> 16)
}

/// What ADD set up for one attachment, public parts only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TunnelRecord {
    /// The name the device was made with on the node.
    pub device: String,
    /// Its name in the container.
    pub interface: String,
    pub netns: String,
    pub backend: Backend,
    /// Operators give this to the remote site.
    pub public_key: PublicKey,
    pub address: IpNet,
    pub routes: Vec<IpNet>,
    pub mtu: u32,
    pub peers: Vec<PeerConf>,
}

/// The routes through the tunnel: the configured ones, else a default route
/// of the address's family.
fn routes_of(conf: &TunnelConf) -> Vec<IpNet> {
    conf.routes.clone().unwrap_or_else(|| {
        let any = match conf.address.addr {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        vec![IpNet { addr: any, prefix: 0 }]
    })
}

pub fn add(call: &Call, conf: &TunnelConf) -> Result<CniResult> {
    let prev = call.prev_result()?;
    let netns = call
        .env
        .netns
        .clone()
        .ok_or_else(|| CniError::invalid_env("CNI_NETNS", "ADD needs the container's namespace"))?;
    // Before anything, even the backend's probe, is done on the node.
    netsvc_core::netns::check_cni_netns(&netns)?;
    let interface = match (&conf.interface, &prev) {
        (Some(name), _) => name.clone(),
        (None, Some(_)) => CHAINED_INTERFACE.to_string(),
        (None, None) => call.env.ifname.clone(),
    };
    if let Some(prev) = &prev
        && prev.container_interface(&interface).is_some()
    {
        return Err(CniError::invalid_config(
            "interface",
            format!("{interface:?} is already the container's (from an earlier plugin); name the tunnel's device"),
        ));
    }
    let named_by_runtime = conf.interface.is_none() && prev.is_none();
    refuse_taken_name(call, &netns, &interface, named_by_runtime)?;
    let private_key = match &conf.private_key_file {
        Some(path) => PrivateKey::read(path).map_err(|why| CniError::invalid_config("privateKeyFile", why))?,
        None => PrivateKey::generate(),
    };
    let backend = device::resolve(conf.backend)?;
    let record = TunnelRecord {
        device: device_name(&call.env.container_id, &call.env.ifname),
        interface,
        netns: netns.display().to_string(),
        backend,
        public_key: private_key.public(),
        address: conf.address,
        routes: routes_of(conf),
        mtu: conf.mtu,
        peers: conf.peers.clone(),
    };
    let result = with_tunnel(prev.clone(), &record);
    let ep = endpoint_from_call(call, &result, SERVICE)?;
    let device_config = DeviceConfig {
        private_key,
        listen_port: conf.listen_port,
        peers: conf.peers.clone(),
    };
    let store = open_for(&call.conf)?;
    let graph = Graph::new(&store, &call.node);
    let session = graph.lock(&call.conf.name)?;
    let intent = Intent::adding(&ep);
    // Recorded before the kernel is touched, so a GC meanwhile never takes
    // the new device for an orphan.
    session.intended(
        SERVICE,
        intent,
        |tx, stale| -> Result<Option<Cleanup>> {
            let cleanup = Cleanup::of(tx, stale)?;
            // Alone, the tunnel's own address is the network's.
            record_network(tx, &result)?;
            tx.attach_endpoint(&ep, SERVICE)?;
            tx.put_record(RECORDS, &ep.id(), &record)?;
            Ok(Some(cleanup))
        },
        |s, cleanup| {
            cleanup.run(s.graph())?;
            bring_up(&record, &device_config)
        },
        // Nothing half-done: the device, then the graph, as a DEL.
        |s| {
            tear_down(&record.device, &[Path::new(&record.netns)]);
            crate::del_locked(s, call).map(drop)
        },
    )?;
    tracing::info!(device = %record.device, backend = %backend, public_key = %record.public_key, "tunnel up");
    Ok(result)
}

/// Fails when the container already has an interface called `interface`,
/// as the reference plugins do ("container veth name provided (eth0)
/// already exists"): the device would not get its name, and that interface
/// is not ours to touch. Code 4 naming CNI_IFNAME when the name is the
/// runtime's, code 7 naming `interface` when it is the config's (or `wg0`,
/// the chained default).
fn refuse_taken_name(call: &Call, netns: &Path, interface: &str, named_by_runtime: bool) -> Result<()> {
    // Asked from the node by the id it gives the container's namespace: no
    // thread enters the container for one look-up.
    let ns = netsvc_core::netns::open(netns)?;
    let mut rtnl = Rtnl::open()?;
    let nsid = rtnl.nsid_for(ns.as_fd())?;
    if links::find_by_name_in(&mut rtnl, nsid, interface)?.is_none() {
        return Ok(());
    }
    let clash = format!(
        "container {} already has an interface {interface:?} (in {}); it is left as it is",
        call.env.container_id,
        netns.display()
    );
    Err(if named_by_runtime {
        CniError::invalid_env("CNI_IFNAME", clash)
    } else {
        CniError::invalid_config("interface", format!("{clash}; name the tunnel's device"))
    })
}

/// `prev` with the tunnel's interface and routes added (a default route
/// through the tunnel replaces the chain's), or, when the tunnel is the
/// container's only interface, a result of its own. A chained tunnel's
/// address is not listed in `ips`: the reference interface plugins' CHECK
/// expects every listed address on their own interface.
fn with_tunnel(prev: Option<CniResult>, r: &TunnelRecord) -> CniResult {
    let chained = prev.is_some();
    let mut result = prev.unwrap_or_default();
    result.interfaces.push(Interface {
        name: r.interface.clone(),
        mac: NO_HARDWARE_ADDRESS.to_string(),
        mtu: Some(r.mtu),
        sandbox: Some(r.netns.clone()),
        ..Default::default()
    });
    if !chained {
        result.ips.push(IpConfig {
            version: None,
            address: r.address,
            gateway: None,
            interface: Some(result.interfaces.len() - 1),
        });
    }
    let takes_default = |v4: bool| r.routes.iter().any(|d| d.prefix == 0 && d.is_ipv4() == v4);
    result
        .routes
        .retain(|old| !(old.dst.prefix == 0 && takes_default(old.dst.is_ipv4())));
    result.routes.extend(r.routes.iter().copied().map(Route::on_link));
    result
}

/// Makes the device on the node, configures it, sets its MTU and moves it
/// into the container, where it is named, addressed, brought up and routed.
fn bring_up(r: &TunnelRecord, c: &DeviceConfig) -> Result<()> {
    device::create(&r.device, r.backend)?;
    device::configure(&r.device, r.backend, c)?;
    let container = netsvc_core::netns::open(&r.netns)?;
    netlink::within(NODE_NETNS, |rtnl| {
        let link = links::get_by_name(rtnl, &r.device)?;
        // Marked ours before it leaves the node: in the container only the
        // mark tells it from an interface of the same name.
        owned::mark(rtnl, link.index, &r.device)?;
        // Before the move: wireguard-go does not see MTU changes made in
        // another namespace.
        links::set_mtu(rtnl, link.index, r.mtu)?;
        links::move_to_netns(rtnl, link.index, container.as_fd())
    })?;
    netlink::within(&r.netns, |rtnl| {
        let link = links::get_by_name(rtnl, &r.device)?;
        if r.interface != r.device {
            links::rename(rtnl, link.index, &r.interface)?;
        }
        addresses::add(rtnl, link.index, r.address.addr, r.address.prefix)?;
        links::set_up(rtnl, link.index)?;
        for dst in &r.routes {
            if dst.prefix == 0 {
                // The tunnel takes over the default route.
                for old in routes::list(rtnl, !dst.is_ipv4())? {
                    if old.is_default() {
                        routes::delete(rtnl, &old)?;
                    }
                }
            }
            let route = KernelRoute {
                dst: dst.addr,
                dst_len: dst.prefix,
                gateway: None,
                oif: Some(link.index),
                metric: None,
            };
            routes::add(rtnl, &route)?;
        }
        Ok(())
    })?;
    Ok(())
}

/// Removes the tunnel device made as `device` wherever it is: the userspace
/// one by its socket (wireguard-go then exits and its TUN device goes), a
/// kernel one as a link on the node or in any of the namespaces `netns`,
/// under whatever name it has there. Only a link that proves to be this
/// device (see [`owned`]) is deleted: an interface of the container's with
/// the same name stays. Best-effort; a path that is no network namespace
/// is skipped.
pub fn tear_down(device: &str, netns: &[&Path]) {
    let _ = device::remove(device);
    for ns in netns {
        if netsvc_core::netns::check_net_namespace(ns).is_err() {
            continue;
        }
        let _ = netlink::within(ns, |rtnl| owned::delete_device(rtnl, device));
    }
}

/// Fails (code 120) unless the container's device is up with the key, the
/// address and the peers ADD gave it.
pub fn check(call: &Call, conf: &TunnelConf) -> Result<()> {
    let store = open_for(&call.conf)?;
    let graph = Graph::new(&store, &call.node);
    let ep = checked_endpoint(&graph, call, SERVICE)?;
    let missing = |what: String| CniError::state_missing(SERVICE, what);
    let r: TunnelRecord = graph
        .record(&call.conf.name, RECORDS, &ep.id())?
        .ok_or_else(|| missing(format!("nothing recorded for {}", ep.id())))?;
    if r.peers != conf.peers || r.address != conf.address || r.routes != routes_of(conf) {
        return Err(missing("the tunnel differs from this config".into()));
    }
    let link = netlink::within(&r.netns, |rtnl| {
        Ok(owned::list(rtnl)?.into_iter().find(|l| l.name == r.interface))
    })?;
    match link {
        Some(l) if !l.is(&r.device) => {
            return Err(missing(format!(
                "{} in the container is not the tunnel's device",
                r.interface
            )));
        }
        Some(l) if l.up => {}
        _ => return Err(missing(format!("{} is not up in the container", r.interface))),
    }
    let state = match r.backend {
        Backend::Userspace => device::state(&r.device, r.backend),
        Backend::Kernel => {
            let interface = r.interface.clone();
            netsvc_core::netns::run_sync(Path::new(&r.netns), move || device::state(&interface, Backend::Kernel))?
        }
    }
    .map_err(|e| missing(format!("{} does not answer: {e}", r.device)))?;
    if state.public_key.as_ref() != Some(&r.public_key) {
        return Err(missing(format!("{} lost its key", r.device)));
    }
    let peers: Vec<&PublicKey> = state.peers.iter().map(|p| &p.public_key).collect();
    if let Some(p) = r.peers.iter().find(|p| !peers.contains(&&p.public_key)) {
        return Err(missing(format!("{} lost peer {}", r.device, p.public_key)));
    }
    Ok(())
}
