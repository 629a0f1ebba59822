//! The kernel side, over netlink in the node namespace: HTB trees on the
//! host veth (traffic to the container) and on a per-endpoint ifb that the
//! host veth's ingress redirects to (traffic from the container).

use netlink_packet_route::tc::{
    TcActionAttribute, TcActionMirrorOption, TcActionOption, TcAttribute, TcFilterU32Option, TcMessage, TcOption,
};
use netsvc_core::naming::fnv64;
use netsvc_core::netlink::links::Link;
use netsvc_core::netlink::tc::{self, INGRESS_HANDLE, INGRESS_PARENT, Mode, Psched, ROOT, TcObject, handle};
use netsvc_core::netlink::{NetlinkError, Request, Result, Rtnl, links};

use crate::plan::{DevicePlan, MAJOR};

/// Every ifb this plugin makes starts so; GC removes the ones nobody holds.
pub const IFB_PREFIX: &str = "nsq";
/// The filter priority of the ingress-to-ifb redirect.
const REDIRECT_PRIO: u16 = 1;

/// The ifb of an attachment: `nsq` + 12 hex digits of its id, 15 characters
/// (the kernel's limit), the same on every call so DEL finds it without the store.
pub fn ifb_name(container_id: &str, ifname: &str) -> String {
    let digest = fnv64(format!("{container_id}/{ifname}").as_bytes());
    format!("{IFB_PREFIX}{:012x}", digest >> 16)
}

/// What replaces whatever tree `ifindex` has with `plan`.
pub fn shaping(ifindex: u32, plan: &DevicePlan, ps: &Psched) -> Result<Vec<Request>> {
    let mut requests = vec![
        tc::qdisc_deletion(ifindex, ROOT)?,
        tc::htb_qdisc(ifindex, ROOT, MAJOR, &plan.qdisc, Mode::Add)?,
    ];
    for c in &plan.classes {
        requests.push(tc::htb_class(ifindex, c.parent, c.id, &c.htb, ps, Mode::Add)?);
        if let Some(tbf) = &c.leaf {
            requests.push(tc::tbf_qdisc(ifindex, c.id, 0, tbf, ps, Mode::Add)?);
        }
    }
    for f in &plan.filters {
        requests.push(tc::u32_class_filter(
            ifindex,
            handle(MAJOR, 0),
            f.prio,
            &f.matches,
            f.class,
        )?);
    }
    Ok(requests)
}

/// The ifb `name` (made when missing, left down), its index.
pub fn ensure_ifb(rtnl: &mut Rtnl, name: &str) -> Result<u32> {
    match links::create(rtnl, links::ifb_creation(name)?) {
        Ok(Some(index)) => return Ok(index),
        Ok(None) => {}
        Err(e) if e.is_exists() => {}
        Err(e) => return Err(e),
    }
    match links::find_by_name(rtnl, name)? {
        Some(link) if link.kind.as_deref() == Some("ifb") => Ok(link.index),
        Some(_) => Err(NetlinkError::invalid("ifb", format!("{name} exists and is not an ifb"))),
        None => Err(NetlinkError::LinkNotFound(name.to_string())),
    }
}

/// What sends everything arriving on `veth` (from the container) to the ifb.
pub fn redirect_to_ifb(veth: u32, ifb: u32) -> Result<Vec<Request>> {
    Ok(vec![
        tc::qdisc_deletion(veth, INGRESS_PARENT)?,
        tc::ingress_qdisc(veth, Mode::Add)?,
        tc::redirect_filter(veth, INGRESS_HANDLE, REDIRECT_PRIO, ifb)?,
    ])
}

/// Takes the shaping off: the ifb goes, and the host veth (when it is still
/// there) loses its root and ingress qdiscs. Whatever is already gone is fine.
/// The ifb leaves in the same datagram as the qdiscs: one round trip.
pub fn unshape(rtnl: &mut Rtnl, host_veth: Option<&str>, ifb: Option<&str>) -> Result<()> {
    let mut requests = Vec::new();
    for name in ifb.into_iter().chain(host_veth) {
        let Some(link) = links::find_by_name(rtnl, name)? else {
            continue;
        };
        if Some(name) == ifb {
            requests.push(links::deletion(link.index));
        } else {
            requests.push(tc::qdisc_deletion(link.index, ROOT)?);
            requests.push(tc::qdisc_deletion(link.index, INGRESS_PARENT)?);
        }
    }
    rtnl.apply(&requests).map(drop)
}

/// Takes off the host veth `name` only what proves to be ours (a DEL that
/// has no record of the devices): an HTB root with our handle, and an
/// ingress qdisc holding our redirect.
pub fn unshape_ours(rtnl: &mut Rtnl, name: &str) -> Result<()> {
    let Some(link) = links::find_by_name(rtnl, name)? else {
        return Ok(());
    };
    let qdiscs = tc::list_qdiscs(rtnl, link.index)?;
    if qdiscs
        .iter()
        .any(|q| q.parent == ROOT && q.kind == "htb" && q.handle == handle(MAJOR, 0))
    {
        tc::delete_qdisc(rtnl, link.index, ROOT)?;
    }
    if redirect_target(rtnl, link.index)?.is_some() {
        tc::delete_qdisc(rtnl, link.index, INGRESS_PARENT)?;
    }
    Ok(())
}

/// Where the ingress of link `veth` redirects to (an ifindex), when it
/// holds a redirect as ours: a u32 filter of our priority with a mirred action.
pub fn redirect_target(rtnl: &mut Rtnl, veth: u32) -> Result<Option<u32>> {
    Ok(tc::list_filters(rtnl, veth, INGRESS_PARENT)?
        .iter()
        .filter(|m| (m.header.info >> 16) as u16 == REDIRECT_PRIO)
        .find_map(mirred_target))
}

/// The device a filter's mirred action sends to.
fn mirred_target(msg: &TcMessage) -> Option<u32> {
    let options = msg.attributes.iter().find_map(|a| match a {
        TcAttribute::Options(o) => Some(o),
        _ => None,
    })?;
    let actions = options.iter().find_map(|o| match o {
        TcOption::U32(TcFilterU32Option::Action(acts)) => Some(acts),
        _ => None,
    })?;
    actions
        .iter()
        .flat_map(|a| &a.attributes)
        .filter_map(|a| match a {
            TcActionAttribute::Options(opts) => Some(opts),
            _ => None,
        })
        .flatten()
        .find_map(|o| match o {
            TcActionOption::Mirror(TcActionMirrorOption::Parms(p)) => Some(p.ifindex),
            _ => None,
        })
}

/// What a device holds: its qdiscs and classes.
pub struct Tree {
    pub qdiscs: Vec<TcObject>,
    pub classes: Vec<TcObject>,
}

/// The tree of the link `name`; `None` when there is no such link.
pub fn tree(rtnl: &mut Rtnl, name: &str) -> Result<Option<Tree>> {
    let Some(link) = links::find_by_name(rtnl, name)? else {
        return Ok(None);
    };
    Ok(Some(Tree {
        qdiscs: tc::list_qdiscs(rtnl, link.index)?,
        classes: tc::list_classes(rtnl, link.index)?,
    }))
}

/// The ifbs among `links` whose names this plugin would have given.
pub fn ours(links: &[Link]) -> impl Iterator<Item = String> + '_ {
    links
        .iter()
        .filter(|l| l.kind.as_deref() == Some("ifb") && l.name.starts_with(IFB_PREFIX))
        .map(|l| l.name.clone())
}

/// Every ifb whose name this plugin would have given.
pub fn our_ifbs(rtnl: &mut Rtnl) -> Result<Vec<String>> {
    Ok(ours(&links::list(rtnl)?).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifb_names_are_short_stable_and_distinct() {
        let a = ifb_name("c1", "eth0");
        assert_eq!(a.len(), 15);
        assert!(a.starts_with(IFB_PREFIX));
        assert_eq!(a, ifb_name("c1", "eth0"));
        assert_ne!(a, ifb_name("c1", "eth1"));
        assert_ne!(a, ifb_name("c2", "eth0"));
    }
}
