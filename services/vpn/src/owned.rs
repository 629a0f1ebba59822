//! Which links are this plugin's to delete. A name proves little: in a
//! container the runtime picks it, and an earlier plugin or the image may
//! hold it already. So every device this plugin makes gets an ifalias naming
//! it (`netsvc-vpn nsv…`) on the node right after it is made, and a link is
//! ours only when it is a WireGuard device (the kernel's `wireguard`, or
//! wireguard-go's `tun`) carrying that alias, under whatever name it has
//! now. On the node, where the name is one we made (our prefix and 12 hex
//! digits), a WireGuard device with no alias yet is ours too: a call that
//! died between making and marking it.

use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netsvc_core::netlink::{NetlinkError, Rtnl, links};

use crate::{SERVICE, mesh, tunnel};

/// The ifalias of the device made as `device`.
pub fn identity(device: &str) -> String {
    format!("{SERVICE} {device}")
}

/// Whether `name` has the form this plugin gives devices: `prefix`, then 12
/// lowercase hex digits (see `tunnel::device_name`, `mesh::device_name`).
pub fn has_our_form(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|d| d.len() == 12 && d.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// Whether `name` is of the form of a tunnel's or a mesh device's name.
pub fn is_our_name(name: &str) -> bool {
    [tunnel::PREFIX, mesh::PREFIX]
        .into_iter()
        .any(|p| has_our_form(name, p))
}

/// A link, as far as ownership goes.
#[derive(Debug, Clone)]
pub struct Seen {
    pub index: u32,
    pub name: String,
    pub up: bool,
    alias: Option<String>,
    /// A WireGuard device of either backend.
    wireguard: bool,
}

impl From<&LinkMessage> for Seen {
    fn from(msg: &LinkMessage) -> Self {
        let mut seen = Seen {
            index: msg.header.index,
            name: String::new(),
            up: msg.header.flags.contains(LinkFlags::Up),
            alias: None,
            wireguard: false,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => seen.name = n.clone(),
                LinkAttribute::IfAlias(a) => seen.alias = Some(a.clone()),
                LinkAttribute::LinkInfo(infos) => {
                    seen.wireguard |= infos
                        .iter()
                        .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Wireguard | InfoKind::Tun)));
                }
                _ => {}
            }
        }
        seen
    }
}

impl Seen {
    /// Made by us as `device`, whatever it is called now.
    pub fn is(&self, device: &str) -> bool {
        self.wireguard && self.alias.as_deref() == Some(identity(device).as_str())
    }

    /// A device of ours on the node: a name of our form, and our alias for
    /// that name or none yet.
    fn ours_on_node(&self) -> bool {
        self.wireguard && is_our_name(&self.name) && self.alias.as_deref().is_none_or(|a| a == identity(&self.name))
    }
}

/// Every link of the socket's namespace.
pub fn list(rtnl: &mut Rtnl) -> Result<Vec<Seen>, NetlinkError> {
    Ok(links::list_messages(rtnl)?.iter().map(Seen::from).collect())
}

/// Marks link `index` as the device made as `device` (on the node, before
/// it moves anywhere).
pub fn mark(rtnl: &mut Rtnl, index: u32, device: &str) -> Result<(), NetlinkError> {
    rtnl.send(links::alias(index, &identity(device)))
}

/// Deletes the links of the socket's namespace made as `device`, under any
/// name (in a container it may still have its node name, or the one it was
/// given there). Anything else, whatever its name, stays.
pub fn delete_device(rtnl: &mut Rtnl, device: &str) -> Result<(), NetlinkError> {
    for link in list(rtnl)?.into_iter().filter(|l| l.is(device)) {
        links::delete(rtnl, link.index)?;
    }
    Ok(())
}

/// The node's devices of ours (see [`Seen::ours_on_node`]) by name.
pub fn ours_on_node(rtnl: &mut Rtnl) -> Result<Vec<Seen>, NetlinkError> {
    Ok(list(rtnl)?.into_iter().filter(Seen::ours_on_node).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_exact_form_is_ours() {
        assert!(has_our_form("nsv0123456789ab", "nsv"));
        assert!(has_our_form(&tunnel::device_name("c1", "eth0"), tunnel::PREFIX));
        assert!(has_our_form(&mesh::device_name("n1", "net"), mesh::PREFIX));
        for name in [
            "nsmith0",
            "nsv0123456789a",
            "nsv0123456789abc",
            "nsv0123456789AB",
            "xnsv0123456789a",
        ] {
            assert!(!has_our_form(name, "nsv") && !has_our_form(name, "nsm"), "{name}");
        }
    }

    fn seen(name: &str, alias: Option<&str>, wireguard: bool) -> Seen {
        Seen {
            index: 7,
            name: name.into(),
            up: true,
            alias: alias.map(str::to_string),
            wireguard,
        }
    }

    #[test]
    fn a_device_is_ours_by_kind_and_alias_not_by_name() {
        let dev = "nsv0123456789ab";
        let alias = identity(dev);
        assert!(seen("eth0", Some(&alias), true).is(dev));
        assert!(!seen("eth0", Some(&alias), false).is(dev), "a dummy with our alias");
        assert!(!seen(dev, None, true).is(dev), "in a container the name proves nothing");
        assert!(!seen("eth0", Some(&identity("nsv0000000000ff")), true).is(dev));
        // On the node our name is ours until it says otherwise.
        assert!(seen(dev, None, true).ours_on_node());
        assert!(seen(dev, Some(&alias), true).ours_on_node());
        assert!(!seen(dev, Some("someone else's"), true).ours_on_node());
        assert!(!seen(dev, None, false).ours_on_node());
        assert!(!seen("nsmith0", None, true).ours_on_node());
    }
}
