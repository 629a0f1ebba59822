//! The kernel side, over netlink in the node namespace: HTB trees on the
//! host veth (traffic to the container) and on a per-endpoint ifb that the
//! host veth's ingress redirects to (traffic from the container).

use netsvc_core::naming::fnv64;
use netsvc_core::netlink::tc::{
    self, INGRESS_HANDLE, INGRESS_PARENT, Mode, Psched, ROOT, TcObject, add_redirect_filter, add_u32_class_filter,
    handle,
};
use netsvc_core::netlink::{NetlinkError, Result, links};
use rtnetlink::Handle;

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

/// Replaces whatever tree `ifindex` has with `plan`.
pub async fn shape(h: &Handle, ifindex: u32, plan: &DevicePlan, ps: &Psched) -> Result<()> {
    tc::delete_qdisc(h, ifindex, ROOT).await?;
    tc::add_htb_qdisc(h, ifindex, ROOT, MAJOR, &plan.qdisc, Mode::Add).await?;
    for c in &plan.classes {
        tc::add_htb_class(h, ifindex, c.parent, c.id, &c.htb, ps, Mode::Add).await?;
        if let Some(tbf) = &c.leaf {
            tc::add_tbf_qdisc(h, ifindex, c.id, 0, tbf, ps, Mode::Add).await?;
        }
    }
    for f in &plan.filters {
        add_u32_class_filter(h, ifindex, handle(MAJOR, 0), f.prio, &f.matches, f.class).await?;
    }
    Ok(())
}

/// The ifb `name` (made when missing, left down), its index.
pub async fn ensure_ifb(h: &Handle, name: &str) -> Result<u32> {
    let index = match links::find_by_name(h, name).await? {
        Some(link) if link.kind.as_deref() == Some("ifb") => link.index,
        Some(_) => {
            return Err(NetlinkError::invalid("ifb", format!("{name} exists and is not an ifb")));
        }
        None => links::create_ifb(h, name).await?,
    };
    Ok(index)
}

/// Sends everything arriving on `veth` (from the container) to the ifb.
pub async fn redirect_to_ifb(h: &Handle, veth: u32, ifb: u32) -> Result<()> {
    tc::delete_qdisc(h, veth, INGRESS_PARENT).await?;
    tc::add_ingress_qdisc(h, veth, Mode::Add).await?;
    add_redirect_filter(h, veth, INGRESS_HANDLE, REDIRECT_PRIO, ifb).await
}

/// Takes the shaping off: the ifb goes, and the host veth (when it is still
/// there) loses its root and ingress qdiscs. Whatever is already gone is fine.
pub async fn unshape(h: &Handle, host_veth: Option<&str>, ifb: Option<&str>) -> Result<()> {
    if let Some(ifb) = ifb {
        links::delete_by_name(h, ifb).await?;
    }
    if let Some(name) = host_veth
        && let Some(link) = links::find_by_name(h, name).await?
    {
        tc::delete_qdisc(h, link.index, ROOT).await?;
        tc::delete_qdisc(h, link.index, INGRESS_PARENT).await?;
    }
    Ok(())
}

/// What a device holds: its qdiscs and classes.
pub struct Tree {
    pub qdiscs: Vec<TcObject>,
    pub classes: Vec<TcObject>,
}

/// The tree of the link `name`; `None` when there is no such link.
pub async fn tree(h: &Handle, name: &str) -> Result<Option<Tree>> {
    let Some(link) = links::find_by_name(h, name).await? else {
        return Ok(None);
    };
    Ok(Some(Tree {
        qdiscs: tc::list_qdiscs(h, link.index).await?,
        classes: tc::list_classes(h, link.index).await?,
    }))
}

/// Every ifb whose name this plugin would have given.
pub async fn our_ifbs(h: &Handle) -> Result<Vec<String>> {
    Ok(links::list(h)
        .await?
        .into_iter()
        .filter(|l| l.kind.as_deref() == Some("ifb") && l.name.starts_with(IFB_PREFIX))
        .map(|l| l.name)
        .collect())
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
