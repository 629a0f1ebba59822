//! What the kernel holds of the shaping the store wants, read as
//! differences (`netsvc repair`, CHECK, `netsvc apply`): per shaped
//! endpoint the HTB root qdisc, classes and leaves on the host veth and the
//! ifb, the ifb link and the ingress redirect; shaping a dead ADD left on a
//! host veth; ifbs of ours no record holds. The comparison is pure; [`observe`]
//! reads the kernel (the node's links, and the trees of the devices asked for).

use std::collections::{BTreeMap, BTreeSet};

use netsvc_core::cni::Result;
use netsvc_core::netlink::tc::{self, INGRESS_PARENT, ROOT, TcObject, handle};
use netsvc_core::netlink::{self, links};
use netsvc_core::reconcile::{DiffKind, Difference};

use crate::applied::Applied;
use crate::plan::{DevicePlan, MAJOR};
use crate::{NODE_NETNS, SERVICE, kernel};

/// What the kernel holds on one link.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkState {
    pub qdiscs: Vec<TcObject>,
    pub classes: Vec<TcObject>,
    /// The device the ingress redirect of ours sends to (`#<index>` when
    /// no link has that index any more).
    pub redirect: Option<String>,
}

impl LinkState {
    fn root(&self) -> Option<&TcObject> {
        self.qdiscs.iter().find(|q| q.parent == ROOT)
    }

    /// Whether its root is our HTB.
    fn shaped(&self) -> bool {
        self.root()
            .is_some_and(|q| q.kind == "htb" && q.handle == handle(MAJOR, 0))
    }

    fn has_ingress(&self) -> bool {
        self.qdiscs.iter().any(|q| q.parent == INGRESS_PARENT)
    }
}

/// The node's links as far as shaping goes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// The devices asked for that exist, by name.
    pub links: BTreeMap<String, LinkState>,
    /// Every ifb of ours on the node.
    pub ifbs: BTreeSet<String>,
}

/// A handle as tc prints it: `1:`, `1:10`, `ffff:`.
pub fn tc_handle(h: u32) -> String {
    match h & 0xffff {
        0 => format!("{:x}:", h >> 16),
        minor => format!("{:x}:{minor:x}", h >> 16),
    }
}

/// What the store wants on a network against what the kernel holds.
pub struct Wanted<'a> {
    /// The records of the endpoints shaped here.
    pub shaped: Vec<&'a Applied>,
    /// Records of attachments a dead ADD left, rolled back: their shaping
    /// must not be on their host veth.
    pub rolled_back: Vec<&'a Applied>,
    /// Every ifb a record (of any network, a rolled back one's not) holds.
    pub held_ifbs: BTreeSet<String>,
}

/// The differences, in the order a person reads them: per endpoint, then
/// what must go.
pub fn differences(network: &str, wanted: &Wanted<'_>, seen: &Observed) -> Vec<Difference> {
    let mut out = Vec::new();
    let mut note = |kind, object: String| out.push(Difference::new(SERVICE, network, kind, object));
    for a in &wanted.shaped {
        let Some(veth) = seen.links.get(&a.host_veth) else {
            note(DiffKind::Missing, format!("link {}", a.host_veth));
            continue;
        };
        if let Some(ifb) = &a.ifb
            && !seen.links.contains_key(ifb)
        {
            note(DiffKind::Missing, format!("link {ifb}"));
        }
        for (_, device, plan) in a.plans() {
            if let Some(state) = seen.links.get(device) {
                tree(device, &plan, state, &mut note);
            }
        }
        if let Some(ifb) = &a.ifb {
            let dev = &a.host_veth;
            match &veth.redirect {
                _ if !veth.has_ingress() => note(DiffKind::Missing, format!("qdisc ingress ffff: on {dev}")),
                None => note(
                    DiffKind::Missing,
                    format!("filter u32 ingress redirect to {ifb} on {dev}"),
                ),
                Some(to) if to != ifb => note(
                    DiffKind::Differs,
                    format!("filter u32 ingress redirect to {to} on {dev} (wants {ifb})"),
                ),
                Some(_) => {}
            }
        }
    }
    for a in &wanted.rolled_back {
        let Some(veth) = seen.links.get(&a.host_veth) else {
            continue;
        };
        if veth.shaped() {
            note(DiffKind::Extra, format!("qdisc htb 1: root on {}", a.host_veth));
        }
        if veth.redirect.is_some() {
            note(DiffKind::Extra, format!("qdisc ingress ffff: on {}", a.host_veth));
        }
    }
    for ifb in seen.ifbs.iter().filter(|i| !wanted.held_ifbs.contains(*i)) {
        note(DiffKind::Extra, format!("link {ifb}"));
    }
    out
}

/// One device's tree against its plan.
fn tree(device: &str, plan: &DevicePlan, state: &LinkState, note: &mut impl FnMut(DiffKind, String)) {
    match state.root() {
        _ if state.shaped() => {}
        Some(q) if q.handle != 0 => {
            let held = format!("{} {}", q.kind, tc_handle(q.handle));
            note(
                DiffKind::Differs,
                format!("qdisc htb 1: root on {device} (holds {held})"),
            );
            return;
        }
        // None, or the default qdisc a link starts with.
        _ => {
            note(DiffKind::Missing, format!("qdisc htb 1: root on {device}"));
            return;
        }
    }
    let held: BTreeSet<u32> = state
        .classes
        .iter()
        .filter(|c| c.kind == "htb")
        .map(|c| c.handle)
        .collect();
    for c in &plan.classes {
        if !held.contains(&c.id) {
            note(DiffKind::Missing, format!("class htb {} on {device}", tc_handle(c.id)));
        } else if c.leaf.is_some() && !state.qdiscs.iter().any(|q| q.parent == c.id && q.kind == "tbf") {
            note(
                DiffKind::Missing,
                format!("qdisc tbf parent {} on {device}", tc_handle(c.id)),
            );
        }
    }
    let planned: BTreeSet<u32> = plan.classes.iter().map(|c| c.id).collect();
    for extra in held.iter().filter(|h| !planned.contains(*h)) {
        note(DiffKind::Extra, format!("class htb {} on {device}", tc_handle(*extra)));
    }
}

/// Reads the node's links and the trees of `devices` (those that exist).
pub fn observe(devices: BTreeSet<String>) -> Result<Observed> {
    let seen = netlink::within(NODE_NETNS, |rtnl| {
        let all = links::list(rtnl)?;
        let names: BTreeMap<u32, String> = all.iter().map(|l| (l.index, l.name.clone())).collect();
        let mut seen = Observed {
            ifbs: kernel::ours(&all).collect(),
            ..Default::default()
        };
        for link in all.iter().filter(|l| devices.contains(&l.name)) {
            let redirect = kernel::redirect_target(rtnl, link.index)?
                .map(|i| names.get(&i).cloned().unwrap_or_else(|| format!("#{i}")));
            let state = LinkState {
                qdiscs: tc::list_qdiscs(rtnl, link.index)?,
                classes: tc::list_classes(rtnl, link.index)?,
                redirect,
            };
            seen.links.insert(link.name.clone(), state);
        }
        Ok(seen)
    })?;
    Ok(seen)
}

/// The devices the records name (host veths and ifbs).
pub fn devices<'a>(records: impl IntoIterator<Item = &'a Applied>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for a in records {
        out.insert(a.host_veth.clone());
        out.extend(a.ifb.clone());
    }
    out
}

/// The differences of one shaped endpoint alone (no extra ifbs).
pub fn of_endpoint(network: &str, applied: &Applied, seen: &Observed) -> Vec<Difference> {
    let wanted = Wanted {
        shaped: vec![applied],
        rolled_back: Vec::new(),
        held_ifbs: seen.ifbs.clone(),
    };
    differences(network, &wanted, seen)
}

/// What the kernel lost of what `applied` shaped (CHECK), or `None` when it all holds.
pub fn lost(network: &str, applied: &Applied) -> Result<Option<String>> {
    let seen = observe(devices([applied]))?;
    Ok(of_endpoint(network, applied, &seen)
        .into_iter()
        .next()
        .map(|d| format!("{} is {}", d.object, d.kind.word())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QosConf;

    fn applied(json: serde_json::Value) -> Applied {
        let qos = QosConf::from_value(&json).unwrap();
        Applied::new("veth0".into(), 1500, qos, "c1", "eth0")
    }

    fn obj(kind: &str, handle: u32, parent: u32) -> TcObject {
        TcObject {
            kind: kind.into(),
            handle,
            parent,
            bytes: 0,
        }
    }

    /// The kernel as `apply` leaves it for `a`.
    fn as_applied(a: &Applied) -> Observed {
        let mut seen = Observed::default();
        for (_, device, plan) in a.plans() {
            let mut state = LinkState {
                qdiscs: vec![obj("htb", handle(MAJOR, 0), ROOT)],
                ..Default::default()
            };
            for c in &plan.classes {
                state.classes.push(obj("htb", c.id, c.parent));
                if c.leaf.is_some() {
                    state.qdiscs.push(obj("tbf", handle(0x8001, 0), c.id));
                }
            }
            seen.links.insert(device.to_string(), state);
        }
        let veth = seen.links.entry(a.host_veth.clone()).or_default();
        if let Some(ifb) = &a.ifb {
            veth.qdiscs.push(obj("ingress", handle(0xffff, 0), INGRESS_PARENT));
            veth.redirect = Some(ifb.clone());
            seen.ifbs.insert(ifb.clone());
        }
        seen
    }

    fn wanted(a: &Applied) -> Wanted<'_> {
        Wanted {
            shaped: vec![a],
            rolled_back: Vec::new(),
            held_ifbs: a.ifb.iter().cloned().collect(),
        }
    }

    fn objects(d: Vec<Difference>) -> Vec<String> {
        d.into_iter().map(|d| d.what()).collect()
    }

    #[test]
    fn a_kernel_as_applied_has_no_difference() {
        let a = applied(serde_json::json!({"ingressRate": "10mbit", "egressRate": "5mbit"}));
        assert_eq!(
            objects(differences("n", &wanted(&a), &as_applied(&a))),
            Vec::<String>::new()
        );
    }

    #[test]
    fn each_lost_object_is_named_as_tc_and_ip_name_it() {
        let a = applied(serde_json::json!({"ingressRate": "10mbit", "egressRate": "5mbit"}));
        let ifb = a.ifb.clone().unwrap();
        let mut seen = as_applied(&a);
        seen.links
            .get_mut("veth0")
            .unwrap()
            .classes
            .retain(|c| c.handle != handle(1, 0x10));
        seen.links.get_mut(&ifb).unwrap().qdiscs.clear();
        seen.links.get_mut("veth0").unwrap().redirect = None;
        assert_eq!(
            objects(differences("n", &wanted(&a), &seen)),
            [
                "missing class htb 1:10 on veth0".to_string(),
                format!("missing qdisc htb 1: root on {ifb}"),
                format!("missing filter u32 ingress redirect to {ifb} on veth0"),
            ]
        );
        seen.links.remove(&ifb);
        seen.ifbs.remove(&ifb);
        seen.links
            .get_mut("veth0")
            .unwrap()
            .qdiscs
            .retain(|q| q.parent != INGRESS_PARENT);
        assert_eq!(
            objects(differences("n", &wanted(&a), &seen)),
            [
                format!("missing link {ifb}"),
                "missing class htb 1:10 on veth0".to_string(),
                "missing qdisc ingress ffff: on veth0".to_string()
            ]
        );
    }

    #[test]
    fn a_foreign_root_differs_and_a_default_one_is_missing() {
        let a = applied(serde_json::json!({"ingressRate": "10mbit"}));
        let mut seen = as_applied(&a);
        seen.links.get_mut("veth0").unwrap().qdiscs = vec![obj("tbf", handle(5, 0), ROOT)];
        assert_eq!(
            objects(differences("n", &wanted(&a), &seen)),
            ["differs qdisc htb 1: root on veth0 (holds tbf 5:)"]
        );
        seen.links.get_mut("veth0").unwrap().qdiscs = vec![obj("noqueue", 0, ROOT)];
        assert_eq!(
            objects(differences("n", &wanted(&a), &seen)),
            ["missing qdisc htb 1: root on veth0"]
        );
    }

    #[test]
    fn what_a_dead_add_left_and_orphan_ifbs_are_extra() {
        let a = applied(serde_json::json!({"ingressRate": "10mbit", "egressRate": "5mbit"}));
        let seen = as_applied(&a);
        let nothing = Wanted {
            shaped: Vec::new(),
            rolled_back: vec![&a],
            held_ifbs: BTreeSet::new(),
        };
        assert_eq!(
            objects(differences("n", &nothing, &seen)),
            [
                "extra qdisc htb 1: root on veth0".to_string(),
                "extra qdisc ingress ffff: on veth0".to_string(),
                format!("extra link {}", a.ifb.clone().unwrap()),
            ]
        );
    }

    #[test]
    fn a_gone_host_veth_is_missing_alone() {
        let a = applied(serde_json::json!({"egressRate": "5mbit"}));
        assert_eq!(
            objects(differences("n", &wanted(&a), &Observed::default())),
            ["missing link veth0"]
        );
    }

    #[test]
    fn handles_print_as_tc_prints_them() {
        assert_eq!(tc_handle(handle(1, 0)), "1:");
        assert_eq!(tc_handle(handle(1, 0x10)), "1:10");
        assert_eq!(tc_handle(handle(0xffff, 0)), "ffff:");
    }
}
