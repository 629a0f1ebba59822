//! Links: look up, create (veth, ifb), set up/down, MTU, rename, move to
//! another namespace, delete (missing is `Ok`), and find the host-side peer of
//! a container's veth.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    InfoBridge, InfoData, InfoKind, InfoVeth, LinkAttribute, LinkExtentMask, LinkFlags, LinkInfo, LinkMessage,
};

use super::{NetlinkError, Request, Result, Rtnl, validate_ifname};

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
pub fn find_by_name(rtnl: &mut Rtnl, name: &str) -> Result<Option<Link>> {
    validate_ifname("ifname", name)?;
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    get_link(rtnl, msg, &format!("get link {name}"))
}

/// The link called `name` in the namespace the socket's namespace knows as
/// `nsid` (`IFLA_TARGET_NETNSID`), or `None`.
pub fn find_by_name_in(rtnl: &mut Rtnl, nsid: i32, name: &str) -> Result<Option<Link>> {
    validate_ifname("ifname", name)?;
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    msg.attributes.push(LinkAttribute::IfNetnsId(nsid));
    get_link(rtnl, msg, &format!("get link {name} in namespace {nsid}"))
}

/// The link called `name`; [`NetlinkError::LinkNotFound`] when missing.
pub fn get_by_name(rtnl: &mut Rtnl, name: &str) -> Result<Link> {
    find_by_name(rtnl, name)?.ok_or_else(|| NetlinkError::LinkNotFound(name.to_string()))
}

/// The link with index `index`, or `None` when there is none.
pub fn find_by_index(rtnl: &mut Rtnl, index: u32) -> Result<Option<Link>> {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    get_link(rtnl, msg, &format!("get link #{index}"))
}

/// The link with index `index`; [`NetlinkError::LinkNotFound`] when missing.
pub fn get_by_index(rtnl: &mut Rtnl, index: u32) -> Result<Link> {
    find_by_index(rtnl, index)?.ok_or_else(|| NetlinkError::LinkNotFound(format!("#{index}")))
}

fn get_link(rtnl: &mut Rtnl, mut msg: LinkMessage, op: &str) -> Result<Option<Link>> {
    // The counters are no fact a caller reads: the kernel need not fill them.
    msg.attributes
        .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    match rtnl.get(op, RouteNetlinkMessage::GetLink(msg))? {
        Some(RouteNetlinkMessage::NewLink(link)) => Ok(Some(Link::from(&link))),
        Some(other) => Err(NetlinkError::unexpected(op, format!("{other:?}"))),
        None => Ok(None),
    }
}

/// Every link of the socket's namespace, as the kernel describes them.
pub fn list_messages(rtnl: &mut Rtnl) -> Result<Vec<LinkMessage>> {
    let mut msg = LinkMessage::default();
    msg.attributes
        .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    Ok(rtnl
        .dump("list links", RouteNetlinkMessage::GetLink(msg))?
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(link) => Some(link),
            _ => None,
        })
        .collect())
}

/// Every link of the socket's namespace.
pub fn list(rtnl: &mut Rtnl) -> Result<Vec<Link>> {
    Ok(list_messages(rtnl)?.iter().map(Link::from).collect())
}

/// The names of every link of the socket's namespace.
pub fn list_names(rtnl: &mut Rtnl) -> Result<Vec<String>> {
    Ok(list(rtnl)?.into_iter().map(|l| l.name).collect())
}

/// A link message naming the link `index` and nothing else yet.
fn of_index(index: u32) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg
}

/// A link message making a link `name` of `kind`, with `data` when given.
fn creation(name: &str, kind: InfoKind, data: Option<InfoData>) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    let mut info = vec![LinkInfo::Kind(kind)];
    info.extend(data.map(LinkInfo::Data));
    msg.attributes.push(LinkAttribute::LinkInfo(info));
    msg
}

/// Create a veth pair `name` <-> `peer` in the socket's namespace (both ends
/// down). Move one end with [`move_to_netns`].
pub fn create_veth(rtnl: &mut Rtnl, name: &str, peer: &str, mtu: Option<u32>) -> Result<()> {
    validate_ifname("ifname", name)?;
    validate_ifname("peer", peer)?;
    let mut peer_msg = LinkMessage::default();
    peer_msg.attributes.push(LinkAttribute::IfName(peer.to_string()));
    let mut msg = creation(name, InfoKind::Veth, Some(InfoData::Veth(InfoVeth::Peer(peer_msg))));
    msg.attributes.extend(mtu.map(LinkAttribute::Mtu));
    rtnl.send(Request::new(
        format!("create veth {name}/{peer}"),
        RouteNetlinkMessage::NewLink(msg),
        NLM_F_CREATE | NLM_F_EXCL,
    ))
}

/// The creation of an ifb device `name` (down); `EEXIST` when taken.
pub fn ifb_creation(name: &str) -> Result<Request> {
    validate_ifname("ifname", name)?;
    let msg = RouteNetlinkMessage::NewLink(creation(name, InfoKind::Ifb, None));
    Ok(Request::new(
        format!("create ifb {name}"),
        msg,
        NLM_F_CREATE | NLM_F_EXCL,
    ))
}

/// Makes a link (`creation`: an RTM_NEWLINK request) and returns its
/// index as the kernel echoes it with the acknowledgement; `None` from a
/// kernel that echoes nothing (ask by name then).
pub fn create(rtnl: &mut Rtnl, creation: Request) -> Result<Option<u32>> {
    let answered = rtnl.apply(&[creation.echoed()])?;
    Ok(answered.iter().find_map(|m| match m {
        RouteNetlinkMessage::NewLink(link) => Some(link.header.index),
        _ => None,
    }))
}

/// Create an ifb device `name` (down) and return its index.
pub fn create_ifb(rtnl: &mut Rtnl, name: &str) -> Result<u32> {
    match create(rtnl, ifb_creation(name)?)? {
        Some(index) => Ok(index),
        None => Ok(get_by_name(rtnl, name)?.index),
    }
}

/// A change of link `index`'s settings (RTM_SETLINK).
fn change(op: String, msg: LinkMessage) -> Request {
    Request::new(op, RouteNetlinkMessage::SetLink(msg), 0)
}

/// Setting the link administratively up.
pub fn up(index: u32) -> Request {
    let mut msg = of_index(index);
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    change(format!("set link #{index} up"), msg)
}

/// Set the link administratively up.
pub fn set_up(rtnl: &mut Rtnl, index: u32) -> Result<()> {
    rtnl.send(up(index))
}

/// Make a bridge pass its bridged IPv4/IPv6 traffic through the inet hooks
/// (br_netfilter's per-bridge `nf_call_iptables`/`nf_call_ip6tables`), so
/// conntrack and forward-hook filtering see container-to-container traffic
/// on that bridge only, whatever the namespace-wide sysctl says.
pub fn set_bridge_netfilter(rtnl: &mut Rtnl, index: u32, on: bool) -> Result<()> {
    let mut msg = of_index(index);
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Bridge),
        LinkInfo::Data(InfoData::Bridge(vec![
            InfoBridge::NfCallIpTables(on),
            InfoBridge::NfCallIp6Tables(on),
        ])),
    ]));
    // Link-kind settings go through RTM_NEWLINK (the kernel's changelink);
    // RTM_SETLINK ignores IFLA_LINKINFO without an error.
    rtnl.send(Request::new(
        format!("set bridge #{index} nf_call_iptables {on}"),
        RouteNetlinkMessage::NewLink(msg),
        0,
    ))
}

/// Set the link administratively down.
pub fn set_down(rtnl: &mut Rtnl, index: u32) -> Result<()> {
    let mut msg = of_index(index);
    msg.header.change_mask = LinkFlags::Up;
    rtnl.send(change(format!("set link #{index} down"), msg))
}

/// Set the link's MTU (bytes).
pub fn set_mtu(rtnl: &mut Rtnl, index: u32, mtu: u32) -> Result<()> {
    let mut msg = of_index(index);
    msg.attributes.push(LinkAttribute::Mtu(mtu));
    rtnl.send(change(format!("set link #{index} mtu {mtu}"), msg))
}

/// Setting the link's alias (`ifalias`, what `ip link` shows as "alias").
pub fn alias(index: u32, alias: &str) -> Request {
    let mut msg = of_index(index);
    msg.attributes.push(LinkAttribute::IfAlias(alias.to_string()));
    change(format!("set the alias of link #{index}"), msg)
}

/// Rename the link (it must be down).
pub fn rename(rtnl: &mut Rtnl, index: u32, new_name: &str) -> Result<()> {
    validate_ifname("ifname", new_name)?;
    let mut msg = of_index(index);
    msg.attributes.push(LinkAttribute::IfName(new_name.to_string()));
    rtnl.send(change(format!("rename link #{index} to {new_name}"), msg))
}

/// Move the link into the namespace open at `netns` (see [`crate::netns::open`]).
/// The link keeps its name unless one is already taken there (then it fails).
pub fn move_to_netns(rtnl: &mut Rtnl, index: u32, netns: BorrowedFd<'_>) -> Result<()> {
    let mut msg = of_index(index);
    msg.attributes.push(LinkAttribute::NetNsFd(netns.as_raw_fd()));
    rtnl.send(change(format!("move link #{index} to netns"), msg))
}

/// The deletion of link `index`; a link that does not exist counts as done.
pub fn deletion(index: u32) -> Request {
    Request::new(
        format!("delete link #{index}"),
        RouteNetlinkMessage::DelLink(of_index(index)),
        0,
    )
    .missing_ok()
}

/// Delete the link. A link that does not exist is `Ok` (idempotent DEL).
pub fn delete(rtnl: &mut Rtnl, index: u32) -> Result<()> {
    rtnl.send(deletion(index))
}

/// Delete the link called `name`; missing is `Ok`.
pub fn delete_by_name(rtnl: &mut Rtnl, name: &str) -> Result<()> {
    match find_by_name(rtnl, name)? {
        Some(link) => delete(rtnl, link.index),
        None => Ok(()),
    }
}

/// The peer index (`IFLA_LINK`) of the veth `ifname` in the socket's namespace.
/// The index is valid in the *peer's* namespace.
pub fn veth_peer_index(rtnl: &mut Rtnl, ifname: &str) -> Result<u32> {
    veth_peer(&get_by_name(rtnl, ifname)?)
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
    super::within(host_netns, |rtnl| {
        let nsid = rtnl.nsid_for(container.as_fd())?;
        let inside =
            find_by_name_in(rtnl, nsid, ifname)?.ok_or_else(|| NetlinkError::LinkNotFound(ifname.to_string()))?;
        let peer = veth_peer(&inside)?;
        let link = get_by_index(rtnl, peer)?;
        // Each end must name the other: index, and namespace.
        let paired = link.link == Some(inside.index) && link.link_netnsid == Some(nsid);
        if link.kind.as_deref() != Some("veth") || !paired {
            return Err(not_host_side(ifname, peer, &link.name));
        }
        Ok(link)
    })
}

fn not_host_side(ifname: &str, peer: u32, name: &str) -> NetlinkError {
    NetlinkError::invalid(
        "ifname",
        format!("peer #{peer} of {ifname} is {name} in the host namespace, not a veth peered with {ifname}"),
    )
}
