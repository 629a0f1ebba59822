//! A full render's commands read back as differences (`netsvc repair`):
//! each element, set and chain the render adds or removes, named as nft
//! names it. The global declarations a render always repeats count only
//! when the kernel lacks them.

use std::collections::BTreeSet;

use netsvc_core::cni::IpNet;
use netsvc_core::reconcile::{DiffKind, Difference};

use crate::SERVICE;
use crate::kernel::Current;
use crate::model::{BASE_CHAIN, TABLE};
use crate::render::Cmd;

/// The differences a render's `cmds` fix in `current`, for `network`.
pub fn differences(network: &str, cmds: &[Cmd], current: &Current) -> Vec<Difference> {
    let table_exists = !current.chains.is_empty() || !current.sets.is_empty();
    let table = format!("inet {TABLE}");
    let mut found: BTreeSet<(DiffKind, String)> = BTreeSet::new();
    let mut missing_chains: BTreeSet<String> = BTreeSet::new();
    for cmd in cmds {
        match cmd {
            Cmd::AddTable if !table_exists => {
                found.insert((DiffKind::Missing, format!("table {table}")));
            }
            Cmd::AddChain { name, .. } if !current.chains.contains_key(name) => {
                missing_chains.insert(name.clone());
                found.insert((DiffKind::Missing, format!("chain {table} {name}")));
            }
            Cmd::AddSet { name, .. } if !current.sets.contains_key(name) => {
                found.insert((DiffKind::Missing, format!("set {table} {name}")));
            }
            Cmd::Elements { add, set, nets, .. } => {
                let kind = if *add { DiffKind::Missing } else { DiffKind::Extra };
                for n in nets {
                    found.insert((kind, format!("element {} of set {table} {set}", show(n))));
                }
            }
            Cmd::Rule { chain, .. } if !missing_chains.contains(chain) => {
                found.insert((DiffKind::Differs, format!("rules of chain {table} {chain}")));
            }
            Cmd::FlushChain(name) => {
                found.insert((DiffKind::Differs, format!("rules of chain {table} {name}")));
            }
            Cmd::DeleteRule { .. } => {
                found.insert((DiffKind::Differs, format!("rules of chain {table} {BASE_CHAIN}")));
            }
            Cmd::DeleteSet(name) => {
                found.insert((DiffKind::Extra, format!("set {table} {name}")));
            }
            Cmd::DeleteChain(name) => {
                found.insert((DiffKind::Extra, format!("chain {table} {name}")));
            }
            _ => {}
        }
    }
    found
        .into_iter()
        .map(|(kind, object)| Difference::new(SERVICE, network, kind, object))
        .collect()
}

/// An element as nft prints it: an address or a prefix.
fn show(n: &IpNet) -> String {
    if *n == IpNet::host(n.addr) {
        n.addr.to_string()
    } else {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FirewallConf;
    use crate::kernel::{Current, SetState};
    use crate::model::{membership, plan, test_endpoint};
    use crate::render::{Desired, reconcile};
    use serde_json::json;

    fn conf() -> FirewallConf {
        FirewallConf::from_value(&json!({"type": "netsvc-firewall", "policies": [
            {"name": "web", "select": {"labels": {"tier": "api"}}, "ingress": [{"from": [{"labels": {"tier": "web"}}]}]}]}))
        .unwrap()
    }

    /// The kernel as a render of `eps` leaves it (what nft would list).
    fn rendered(net: &str, eps: &[netsvc_core::graph::Endpoint]) -> Current {
        let p = plan(net, &conf());
        let m: Vec<_> = eps.iter().map(|e| membership(&p, e)).collect();
        let cmds = reconcile(&p.prefix, Some(&Desired::new(&p, &m)), &Current::default());
        let mut current = Current::default();
        for c in &cmds {
            match c {
                Cmd::AddChain { name, .. } => {
                    current.chains.entry(name.clone()).or_default();
                }
                Cmd::Rule { chain, comment, .. } => {
                    current
                        .chains
                        .entry(chain.clone())
                        .or_default()
                        .push((None, comment.clone()));
                }
                Cmd::AddSet { name, fam, interval } => {
                    current.sets.insert(
                        name.clone(),
                        SetState {
                            addr_type: fam.addr_type().into(),
                            interval: *interval,
                            elements: Default::default(),
                        },
                    );
                }
                Cmd::Elements { set, nets, .. } => {
                    let s = current.sets.get_mut(set).expect("elements follow their set");
                    s.elements.extend(nets.iter().copied());
                }
                _ => {}
            }
        }
        current
    }

    #[test]
    fn a_converged_network_has_no_differences() {
        let eps = [test_endpoint("n", "c1", "10.0.0.2", "a", "web")];
        let current = rendered("n", &eps);
        let p = plan("n", &conf());
        let m: Vec<_> = eps.iter().map(|e| membership(&p, e)).collect();
        let cmds = reconcile(&p.prefix, Some(&Desired::new(&p, &m)), &current);
        assert_eq!(differences("n", &cmds, &current), vec![]);
    }

    #[test]
    fn a_lost_member_and_a_stray_one_are_named_by_element_and_set() {
        let eps = [test_endpoint("n", "c1", "10.0.0.2", "a", "web")];
        let mut current = rendered("n", &eps);
        let p = plan("n", &conf());
        let (set, _) = membership(&p, &eps[0]).elements.last().cloned().unwrap();
        let s = current.sets.get_mut(&set).unwrap();
        s.elements.clear();
        s.elements.insert("10.0.0.9/32".parse().unwrap());
        let m: Vec<_> = eps.iter().map(|e| membership(&p, e)).collect();
        let cmds = reconcile(&p.prefix, Some(&Desired::new(&p, &m)), &current);
        let found: Vec<String> = differences("n", &cmds, &current).iter().map(|d| d.what()).collect();
        assert_eq!(
            found,
            vec![
                format!("missing element 10.0.0.2 of set inet netsvc_firewall {set}"),
                format!("extra element 10.0.0.9 of set inet netsvc_firewall {set}"),
            ]
        );
    }
}
