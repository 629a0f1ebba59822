//! netsvc-dns: the names of containers (and of LB services) per network,
//! served by one resolver daemon per node, `netsvc-dnsd`.
//!
//! The plugin records the endpoint in the graph (its names and addresses are
//! the A/AAAA/PTR records), records what its network serves (domain, listen
//! address, upstreams, TTL), makes sure the daemon runs and has loaded the
//! change, and adds `dns` to the result so the runtime writes resolv.conf.
//!
//! Every call takes the order of the core's `Session::intended`: the graph
//! change is committed with the call's intent, then the daemon (which
//! serves the store, and follows it) is made to load it, then the intent is
//! cleared. A dead ADD's endpoint is rolled back by the next call, and the
//! daemon drops its names on that call's sync.

pub mod config;
pub mod daemon;
pub mod served;
pub mod snapshot;
pub mod supervise;
pub mod zone;

mod repair;
mod service;

pub use service::DESCRIPTION;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use config::{DnsConf, Served};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::Name;
pub use hickory_proto::rr::RecordType;
use netsvc_core::cni::{Call, CniError, CniResult, Descriptor, Feature, Plugin, Result};
use netsvc_core::graph::{Graph, Intent, Op, Session, Tx, checked_endpoint, endpoint_from_call, record_network};
use netsvc_core::store::open_for;
use serde::{Deserialize, Serialize};

/// The plugin type, and this service's name in the graph.
pub const SERVICE: &str = "netsvc-dns";
pub const SETTINGS: &str = "settings";
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// What a network's resolver serves, and how many endpoints the plugin holds
/// there (the last one leaving takes the network out of the daemon).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    pub served: Served,
    pub endpoints: u64,
}

pub struct Dns;

impl Plugin for Dns {
    fn descriptor(&self) -> Descriptor {
        Descriptor {
            plugin_type: SERVICE.into(),
            provides: vec![Feature::Dns],
            requires: vec![Feature::Interface, Feature::Ip],
            // It acts on traffic that passes through the node.
            prefers: vec![Feature::HostVeth],
            capabilities: vec!["aliases".into()],
            ..Default::default()
        }
    }

    fn add(&self, call: &Call) -> Result<CniResult> {
        let conf = DnsConf::from_netconf(&call.conf)?;
        let mut prev = call.chained_prev_result()?;
        let resolv = std::fs::read_to_string(RESOLV_CONF).unwrap_or_default();
        let served = conf.serve(&prev, &resolv)?;
        let ep = endpoint_from_call(call, &prev, SERVICE)?;
        supervise::daemon_binary()?;
        let store = open_for(&call.conf)?;
        let graph = Graph::new(&store, &call.node);
        let session = graph.lock(&call.conf.name)?;
        let intent = Intent::adding(&ep);
        session.intended(
            SERVICE,
            intent,
            |tx, stale| -> Result<Option<()>> {
                if stale.is_some() {
                    recount(tx)?;
                }
                record_network(tx, &prev)?;
                let newly = tx.attach_endpoint(&ep, SERVICE)?;
                let before: Option<Settings> = tx.get_record(SERVICE, SETTINGS)?;
                let endpoints = before.map_or(0, |s| s.endpoints) + u64::from(newly);
                tx.put_record(
                    SERVICE,
                    SETTINGS,
                    &Settings {
                        served: served.clone(),
                        endpoints,
                    },
                )?;
                Ok(Some(()))
            },
            // The container may resolve as soon as ADD returns: wait for the daemon.
            |_, ()| supervise::ensure_synced(&store, &call.node).map(drop),
            |s| Self::del_locked(s, &store, call),
        )?;
        let dns = &mut prev.dns;
        let ns = served.listen.ip().to_string();
        if !dns.nameservers.contains(&ns) {
            dns.nameservers.insert(0, ns);
        }
        if !dns.search.contains(&served.domain) {
            dns.search.insert(0, served.domain.clone());
        }
        Ok(prev)
    }

    fn del(&self, call: &Call) -> Result<()> {
        let store = open_for(&call.conf)?;
        let graph = Graph::new(&store, &call.node);
        let session = graph.lock(&call.conf.name)?;
        Self::del_locked(&session, &store, call).or_else(|e| {
            // The daemon stops serving the endpoint until the store drops it.
            session.del_without_intent(SERVICE, e, |tx| -> Result<()> {
                let (id, ifname) = (&call.env.container_id, &call.env.ifname);
                if let Some(ep) = tx.detach_endpoint(id, ifname, SERVICE)? {
                    supervise::withdraw(store.state_dir(), &call.conf.name, &ep.id())?;
                    release(tx, 1)?;
                }
                Ok(())
            })
        })
    }

    /// Fails unless the daemon answers the endpoint's first name with its addresses.
    fn check(&self, call: &Call) -> Result<()> {
        let store = open_for(&call.conf)?;
        let graph = Graph::new(&store, &call.node);
        let network = &call.conf.name;
        let missing = |what: String| CniError::state_missing(SERVICE, what);
        let ep = checked_endpoint(&graph, call, SERVICE)?;
        netsvc_core::graph::check_finished(&graph, network, SERVICE)?;
        let settings: Settings = graph
            .record(network, SERVICE, SETTINGS)?
            .ok_or_else(|| missing(format!("network {network} has no DNS settings")))?;
        let (Some(name), Some(ip)) = (ep.names.first(), ep.ips.first()) else {
            return Ok(()); // nothing to resolve
        };
        let ip: IpAddr = ip.addr;
        let fqdn = format!("{name}.{}.", settings.served.domain);
        let t = if ip.is_ipv4() { RecordType::A } else { RecordType::AAAA };
        // Asked from inside the container, so the daemon applies its view.
        let netns = call
            .env
            .netns
            .as_deref()
            .ok_or_else(|| CniError::invalid_env("CNI_NETNS", "CHECK needs the container's namespace"))?;
        let listen = settings.served.listen;
        let answered = netsvc_core::netns::run_sync(netns, || ask(listen, &fqdn, t))
            .map_err(|e| CniError::io(e.to_string()))?
            .map_err(|e| missing(format!("netsvc-dnsd does not answer on {listen}: {e}")))?;
        if !answered.contains(&ip) {
            return Err(missing(format!(
                "netsvc-dnsd answers {fqdn} with {answered:?}, not {ip}"
            )));
        }
        Ok(())
    }

    /// Drops the endpoints of attachments that are gone.
    fn gc(&self, call: &Call) -> Result<()> {
        let store = open_for(&call.conf)?;
        let graph = Graph::new(&store, &call.node);
        let session = graph.lock(&call.conf.name)?;
        session.intended(
            SERVICE,
            Intent::network(Op::Gc),
            |tx, stale| -> Result<Option<()>> {
                if stale.is_some() {
                    recount(tx)?;
                }
                let mut gone = 0;
                // The runtime lists this node's containers only.
                for ep in tx.local_endpoints(SERVICE)? {
                    let valid = call.gc_keeps(&ep.container_id, &ep.ifname);
                    if !valid && tx.detach_endpoint(&ep.container_id, &ep.ifname, SERVICE)?.is_some() {
                        gone += 1;
                    }
                }
                release(tx, gone)?;
                Ok(Some(()))
            },
            |_, ()| {
                supervise::poke(store.state_dir());
                Ok(())
            },
            |_| Ok(()),
        )?;
        Ok(())
    }

    /// 50 when the daemon cannot run: not installed, or it runs and fails to serve.
    fn status(&self, call: &Call) -> Result<()> {
        supervise::daemon_binary()?;
        let store = open_for(&call.conf)?;
        let control = daemon::Paths::new(store.state_dir()).control();
        match daemon::control::sync(&control, Duration::from_secs(2)) {
            Ok(Err(why)) => Err(CniError::not_available(format!("netsvc-dnsd: {why}"))),
            // Not running is fine: the next ADD starts it.
            _ => Ok(()),
        }
    }
}

impl Dns {
    /// DEL of one attachment under a held lock (also how a failed ADD
    /// undoes itself): the endpoint leaves the graph, then the daemon
    /// loads the graph without it.
    fn del_locked(session: &Session<'_, '_>, store: &netsvc_core::store::StoreHandle, call: &Call) -> Result<()> {
        let (id, ifname) = (&call.env.container_id, &call.env.ifname);
        session.intended(
            SERVICE,
            Intent::attachment(Op::Del, id, ifname),
            |tx, stale| -> Result<Option<()>> {
                if stale.is_some() {
                    recount(tx)?;
                }
                let left = tx.detach_endpoint(id, ifname, SERVICE)?.is_some();
                if left {
                    release(tx, 1)?;
                }
                Ok((left || stale.is_some()).then_some(()))
            },
            |_, ()| {
                supervise::poke(store.state_dir());
                Ok(())
            },
            |_| Ok(()),
        )?;
        Ok(())
    }
}

/// The endpoint count counted again (a dead ADD's endpoint, rolled back by
/// the core, was counted), and the settings gone with the last one.
fn recount(tx: &mut Tx<'_>) -> Result<()> {
    let Some(mut s) = tx.get_record::<Settings>(SERVICE, SETTINGS)? else {
        return Ok(());
    };
    s.endpoints = tx.local_endpoints(SERVICE)?.len() as u64;
    tx.put_record(SERVICE, SETTINGS, &s)?;
    release(tx, 0)
}

/// `gone` endpoints left: the count drops, and the network's settings go
/// with its last endpoint (the daemon stops serving it).
fn release(tx: &mut Tx<'_>, gone: u64) -> Result<()> {
    let Some(mut s) = tx.get_record::<Settings>(SERVICE, SETTINGS)? else {
        return Ok(());
    };
    s.endpoints = s.endpoints.saturating_sub(gone);
    // The node serves a network while a container of it runs here.
    if s.endpoints == 0 || tx.local_endpoints(SERVICE)?.is_empty() {
        tx.remove_record::<Settings>(SERVICE, SETTINGS)?;
        if tx.endpoints()?.is_empty() {
            tx.remove_network()?;
        }
    } else {
        tx.put_record(SERVICE, SETTINGS, &s)?;
    }
    Ok(())
}

/// One UDP question to `server`; the addresses in the answer.
fn ask(server: SocketAddr, name: &str, t: RecordType) -> std::io::Result<Vec<IpAddr>> {
    let any: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let sock = UdpSocket::bind(any)?;
    sock.set_read_timeout(Some(Duration::from_secs(1)))?;
    ask_on(&sock, server, name, t)
}

/// One question on `sock` (its read timeout bounds the wait); the addresses
/// in the answer. A socket bound inside a namespace asks from there.
pub fn ask_on(sock: &UdpSocket, server: SocketAddr, name: &str, t: RecordType) -> std::io::Result<Vec<IpAddr>> {
    static NEXT_ID: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(1);
    let mut q = Message::query();
    q.metadata.id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let qname: Name = name.parse().map_err(|_| std::io::ErrorKind::InvalidInput)?;
    q.add_query(Query::query(qname, t));
    sock.send_to(&q.to_vec().map_err(std::io::Error::other)?, server)?;
    let mut buf = [0u8; 4096];
    loop {
        let n = sock.recv(&mut buf)?;
        let reply = Message::from_vec(&buf[..n]).map_err(std::io::Error::other)?;
        // A late answer to an earlier question is not this one's.
        if reply.metadata.id == q.metadata.id {
            return Ok(reply.answers.iter().filter_map(|r| r.data.ip_addr()).collect());
        }
    }
}
