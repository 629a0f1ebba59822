//! A full render's commands read back as differences (`netsvc repair`):
//! each element, set and chain the render adds or removes, named as nft
//! names it. The global declarations a render always repeats count only
//! when the kernel lacks them.

use std::collections::BTreeSet;

use netsvc_core::reconcile::{DiffKind, Difference};
use serde_json::Value;

use crate::SERVICE;
use crate::kernel::Current;
use crate::model::{BASE_CHAIN, TABLE};

/// The differences a render's `cmds` fix in `current`, for `network`.
pub fn differences(network: &str, cmds: &[Value], current: &Current) -> Vec<Difference> {
    let table_exists = !current.chains.is_empty() || !current.sets.is_empty();
    let mut found: BTreeSet<(DiffKind, String)> = BTreeSet::new();
    let mut missing_chains: BTreeSet<String> = BTreeSet::new();
    for cmd in cmds {
        let Some((op, body)) = cmd.as_object().and_then(|o| o.iter().next()) else {
            continue;
        };
        let Some((kind, obj)) = body.as_object().and_then(|o| o.iter().next()) else {
            continue;
        };
        let name = obj["name"].as_str().unwrap_or_default();
        let chain = obj["chain"].as_str().unwrap_or_default();
        let table = format!("inet {TABLE}");
        match (op.as_str(), kind.as_str()) {
            ("add", "table") if !table_exists => {
                found.insert((DiffKind::Missing, format!("table {table}")));
            }
            ("add", "chain") if !current.chains.contains_key(name) => {
                missing_chains.insert(name.to_string());
                found.insert((DiffKind::Missing, format!("chain {table} {name}")));
            }
            ("add", "set") if !current.sets.contains_key(name) => {
                found.insert((DiffKind::Missing, format!("set {table} {name}")));
            }
            ("add" | "delete", "element") => {
                let kind = if op == "add" {
                    DiffKind::Missing
                } else {
                    DiffKind::Extra
                };
                for e in obj["elem"].as_array().into_iter().flatten() {
                    found.insert((kind, format!("element {} of set {table} {name}", show(e))));
                }
            }
            ("add" | "insert", "rule") if !missing_chains.contains(chain) => {
                found.insert((DiffKind::Differs, format!("rules of chain {table} {chain}")));
            }
            ("flush", "chain") => {
                found.insert((DiffKind::Differs, format!("rules of chain {table} {name}")));
            }
            ("delete", "rule") => {
                found.insert((DiffKind::Differs, format!("rules of chain {table} {BASE_CHAIN}")));
            }
            ("delete", "set") => {
                found.insert((DiffKind::Extra, format!("set {table} {name}")));
            }
            ("delete", "chain") => {
                found.insert((DiffKind::Extra, format!("chain {table} {name}")));
            }
            ("delete", "table") => {
                found.insert((DiffKind::Extra, format!("table {table}")));
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
fn show(e: &Value) -> String {
    match e {
        Value::String(s) => s.clone(),
        other => match (other["prefix"]["addr"].as_str(), other["prefix"]["len"].as_u64()) {
            (Some(a), Some(l)) => format!("{a}/{l}"),
            _ => other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FirewallConf;
    use crate::kernel::Current;
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
        let mut items: Vec<Value> = Vec::new();
        for c in &cmds {
            let Some(added) = c.get("add").or_else(|| c.get("insert")) else {
                continue;
            };
            if let Some(e) = added.get("element") {
                let set = items
                    .iter_mut()
                    .find(|i| i["set"]["name"] == e["name"])
                    .expect("elements follow their set");
                let elems = set["set"]["elem"].as_array().cloned().unwrap_or_default();
                set["set"]["elem"] = json!([elems, e["elem"].as_array().cloned().unwrap_or_default()].concat());
            } else {
                items.push(added.clone());
            }
        }
        Current::parse(&json!({ "nftables": items }))
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
