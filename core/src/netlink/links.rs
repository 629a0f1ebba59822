//! Links: look up, create (veth, ifb), set up/down, MTU, rename, move to
//! another namespace, delete (missing is `Ok`), and find the host-side peer of
//! a container's veth.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

use futures::TryStreamExt;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{InfoBridge, InfoData, InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkIfb, LinkUnspec, LinkVeth};

use super::{NetlinkError, Request, Result, ok_if_missing, validate_ifname};

/// The facts of a link services need, read from a `LinkMessage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: Option<u32>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// `IFLA_LINK`: for a veth, the peer's index *in the peer's namespace*.
    pub link: Option<u32>,
    /// `IFLA_LINK_NETNSID`: the peer's namespace, by the id the asking
    /// namespace gives it (when the peer lives in another one).
    pub link_netnsid: Option<i32>,
    /// The link kind (`veth`, `ifb`, `bridge`, …) when the kernel reports one.
    pub kind: Option<String>,
    pub mac: Option<Vec<u8>>,
    /// A bridge's `nf_call_iptables` and `nf_call_ip6tables`, both on.
    pub bridge_netfilter: Option<bool>,
}

impl From<&LinkMessage> for Link {
    fn from(msg: &LinkMessage) -> Self {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            mtu: None,
            up: msg.header.flags.contains(LinkFlags::Up),
            link: None,
            link_netnsid: None,
            kind: None,
            mac: None,
            bridge_netfilter: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Mtu(m) => link.mtu = Some(*m),
                LinkAttribute::Link(l) => link.link = Some(*l),
                LinkAttribute::LinkNetNsId(id) => link.link_netnsid = Some(*id),
                LinkAttribute::Address(a) => link.mac = Some(a.clone()),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(kind) => link.kind = Some(kind_name(kind)),
                            LinkInfo::Data(InfoData::Bridge(opts)) => {
                                link.bridge_netfilter = Some(bridge_netfilter(opts));
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

fn bridge_netfilter(opts: &[InfoBridge]) -> bool {
    let on = |want: fn(&InfoBridge) -> Option<bool>| opts.iter().find_map(want).unwrap_or(false);
    on(|o| match o {
        InfoBridge::NfCallIpTables(v) => Some(*v),
        _ => None,
    }) && on(|o| match o {
        InfoBridge::NfCallIp6Tables(v) => Some(*v),
        _ => None,
    })
}

fn kind_name(kind: &InfoKind) -> String {
    match kind {
        InfoKind::Veth => "veth".into(),
        InfoKind::Ifb => "ifb".into(),
        InfoKind::Bridge => "bridge".into(),
        InfoKind::Dummy => "dummy".into(),
        InfoKind::Other(s) => s.clone(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// The link called `name`, or `None` when there is none.
pub async fn find_by_name(handle: &Handle, name: &str) -> Result<Option<Link>> {
    validate_ifname("ifname", name)?;
    let mut stream = handle.link().get().match_name(name.to_string()).execute();
    match stream.try_next().await {
        Ok(Some(msg)) => Ok(Some(Link::from(&msg))),
        Ok(None) => Ok(None),
        Err(e) => {
            let e = NetlinkError::request(format!("get link {name}"), e);
            if e.is_not_found() { Ok(None) } else { Err(e) }
        }
    }
}

/// The link called `name`; [`NetlinkError::LinkNotFound`] when missing.
pub async fn get_by_name(handle: &Handle, name: &str) -> Result<Link> {
    find_by_name(handle, name)
        .await?
        .ok_or_else(|| NetlinkError::LinkNotFound(name.to_string()))
}

/// The link with index `index`, or `None` when there is none.
pub async fn find_by_index(handle: &Handle, index: u32) -> Result<Option<Link>> {
    let mut stream = handle.link().get().match_index(index).execute();
    match stream.try_next().await {
        Ok(Some(msg)) => Ok(Some(Link::from(&msg))),
        Ok(None) => Ok(None),
        Err(e) => {
            let e = NetlinkError::request(format!("get link #{index}"), e);
            if e.is_not_found() { Ok(None) } else { Err(e) }
        }
    }
}

/// The link with index `index`; [`NetlinkError::LinkNotFound`] when missing.
pub async fn get_by_index(handle: &Handle, index: u32) -> Result<Link> {
    find_by_index(handle, index)
        .await?
        .ok_or_else(|| NetlinkError::LinkNotFound(format!("#{index}")))
}

/// Every link of the handle's namespace.
pub async fn list(handle: &Handle) -> Result<Vec<Link>> {
    let msgs: Vec<LinkMessage> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| NetlinkError::request("list links", e))?;
    Ok(msgs.iter().map(Link::from).collect())
}

/// The names of every link of the handle's namespace.
pub async fn list_names(handle: &Handle) -> Result<Vec<String>> {
    Ok(list(handle).await?.into_iter().map(|l| l.name).collect())
}

/// Create a veth pair `name` <-> `peer` in the handle's namespace (both ends
/// down). Move one end with [`move_to_netns`].
pub async fn create_veth(handle: &Handle, name: &str, peer: &str, mtu: Option<u32>) -> Result<()> {
    validate_ifname("ifname", name)?;
    validate_ifname("peer", peer)?;
    let mut builder = LinkVeth::new(name, peer);
    if let Some(mtu) = mtu {
        builder = builder.mtu(mtu);
    }
    handle
        .link()
        .add(builder.build())
        .execute()
        .await
        .map_err(|e| NetlinkError::request(format!("create veth {name}/{peer}"), e))
}

/// The creation of an ifb device `name` (down); `EEXIST` when taken.
pub fn ifb_creation(name: &str) -> Result<Request> {
    validate_ifname("ifname", name)?;
    let msg = RouteNetlinkMessage::NewLink(LinkIfb::new(name).build());
    Ok(Request::new(
        format!("create ifb {name}"),
        msg,
        NLM_F_CREATE | NLM_F_EXCL,
    ))
}

/// Create an ifb device `name` (down) and return its index.
pub async fn create_ifb(handle: &Handle, name: &str) -> Result<u32> {
    ifb_creation(name)?.send(handle).await?;
    Ok(get_by_name(handle, name).await?.index)
}

async fn set(handle: &Handle, op: String, msg: LinkMessage) -> Result<()> {
    handle
        .link()
        .set(msg)
        .execute()
        .await
        .map_err(|e| NetlinkError::request(op, e))
}

/// Setting the link administratively up.
pub fn up(index: u32) -> Request {
    let msg = RouteNetlinkMessage::SetLink(LinkUnspec::new_with_index(index).up().build());
    Request::new(format!("set link #{index} up"), msg, 0)
}

/// Set the link administratively up.
pub async fn set_up(handle: &Handle, index: u32) -> Result<()> {
    up(index).send(handle).await
}

/// Make a bridge pass its bridged IPv4/IPv6 traffic through the inet hooks
/// (br_netfilter's per-bridge `nf_call_iptables`/`nf_call_ip6tables`), so
/// conntrack and forward-hook filtering see container-to-container traffic
/// on that bridge only, whatever the namespace-wide sysctl says.
pub async fn set_bridge_netfilter(handle: &Handle, index: u32, on: bool) -> Result<()> {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Bridge),
        LinkInfo::Data(InfoData::Bridge(vec![
            InfoBridge::NfCallIpTables(on),
            InfoBridge::NfCallIp6Tables(on),
        ])),
    ]));
    // Link-kind settings go through RTM_NEWLINK (the kernel's changelink);
    // RTM_SETLINK ignores IFLA_LINKINFO without an error.
    handle
        .link()
        .change(msg)
        .execute()
        .await
        .map_err(|e| NetlinkError::request(format!("set bridge #{index} nf_call_iptables {on}"), e))
}

/// Set the link administratively down.
pub async fn set_down(handle: &Handle, index: u32) -> Result<()> {
    let msg = LinkUnspec::new_with_index(index).down().build();
    set(handle, format!("set link #{index} down"), msg).await
}

/// Set the link's MTU (bytes).
pub async fn set_mtu(handle: &Handle, index: u32, mtu: u32) -> Result<()> {
    let msg = LinkUnspec::new_with_index(index).mtu(mtu).build();
    set(handle, format!("set link #{index} mtu {mtu}"), msg).await
}

/// Rename the link (it must be down).
pub async fn rename(handle: &Handle, index: u32, new_name: &str) -> Result<()> {
    validate_ifname("ifname", new_name)?;
    let msg = LinkUnspec::new_with_index(index).name(new_name.to_string()).build();
    set(handle, format!("rename link #{index} to {new_name}"), msg).await
}

/// Move the link into the namespace open at `netns` (see [`crate::netns::open`]).
/// The link keeps its name unless one is already taken there (then it fails).
pub async fn move_to_netns(handle: &Handle, index: u32, netns: BorrowedFd<'_>) -> Result<()> {
    let msg = LinkUnspec::new_with_index(index).setns_by_fd(netns.as_raw_fd()).build();
    set(handle, format!("move link #{index} to netns"), msg).await
}

/// Delete the link. A link that does not exist is `Ok` (idempotent DEL).
pub async fn delete(handle: &Handle, index: u32) -> Result<()> {
    let r = handle
        .link()
        .del(index)
        .execute()
        .await
        .map_err(|e| NetlinkError::request(format!("delete link #{index}"), e));
    ok_if_missing(r)
}

/// Delete the link called `name`; missing is `Ok`.
pub async fn delete_by_name(handle: &Handle, name: &str) -> Result<()> {
    match find_by_name(handle, name).await? {
        Some(link) => delete(handle, link.index).await,
        None => Ok(()),
    }
}

/// The peer index (`IFLA_LINK`) of the veth `ifname` in the handle's namespace.
/// The index is valid in the *peer's* namespace.
pub async fn veth_peer_index(handle: &Handle, ifname: &str) -> Result<u32> {
    veth_peer(&get_by_name(handle, ifname).await?)
}

/// A veth's peer index (in the peer's namespace); an error for any other link.
fn veth_peer(link: &Link) -> Result<u32> {
    let ifname = &link.name;
    if link.kind.as_deref() != Some("veth") {
        return Err(NetlinkError::invalid(
            "ifname",
            format!(
                "{ifname} is a {} link, not a veth",
                link.kind.as_deref().unwrap_or("unknown")
            ),
        ));
    }
    link.link
        .ok_or_else(|| NetlinkError::invalid("ifname", format!("veth {ifname} reports no peer")))
}

/// Find the host-side peer of the container interface `ifname` living in
/// `container_netns`, looked up from `host_netns` (the node namespace; pass
/// `/proc/thread-self/ns/net` for the caller's own). Both ends are read from
/// the host, by the id it gives the container's namespace: no thread enters
/// the container. Blocking: call it outside any async runtime thread.
pub fn host_veth_peer(container_netns: &Path, ifname: &str, host_netns: &Path) -> Result<Link> {
    let container = crate::netns::open(container_netns)?;
    crate::netns::run_sync(host_netns, || {
        let mut rtnl = super::sync::Rtnl::open()?;
        let nsid = rtnl.nsid_for(container.as_fd())?;
        let inside = rtnl
            .find_by_name_in(nsid, ifname)?
            .ok_or_else(|| NetlinkError::LinkNotFound(ifname.to_string()))?;
        let peer = veth_peer(&inside)?;
        let link = rtnl
            .find_by_index(peer)?
            .ok_or_else(|| NetlinkError::LinkNotFound(format!("#{peer}")))?;
        // Each end must name the other: index, and namespace.
        let paired = link.link == Some(inside.index) && link.link_netnsid == Some(nsid);
        if link.kind.as_deref() != Some("veth") || !paired {
            return Err(not_host_side(ifname, peer, &link.name));
        }
        Ok(link)
    })?
}

fn not_host_side(ifname: &str, peer: u32, name: &str) -> NetlinkError {
    NetlinkError::invalid(
        "ifname",
        format!("peer #{peer} of {ifname} is {name} in the host namespace, not a veth peered with {ifname}"),
    )
}
