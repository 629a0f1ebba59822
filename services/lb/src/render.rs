//! Scripts (nft native syntax, one transaction each) for one family's table:
//! the full path's, which declares the table and ensures each service
//! against what the kernel holds. The fast path writes over netlink
//! ([`crate::fast`]) from the same model: slot changes, keys and rules.

use std::collections::BTreeMap;
use std::net::IpAddr;

use netsvc_core::nft::{NftError, NftScript, NftTable, SetKind};

use crate::model::{self, Family, PROTOCOLS, Rendered, TABLE};

/// Dispatch: `vip . proto . port` → `goto` the service port's chain.
pub const SERVICES: &str = "services";
/// After NAT: `vip . proto . port` → `jump` the service's affinity chain.
pub const AFFINITY: &str = "affinity";
/// Frontends of services without backends: rejected at once.
pub const EMPTY: &str = "empty";
/// `addr . addr` of every endpoint: a backend reaching itself through its VIP is masqueraded.
pub const HAIRPIN: &str = "hairpin";

pub fn table(f: Family) -> NftTable {
    NftTable::new(f.nf(), TABLE).expect("valid table name")
}

fn frontend_type(f: Family) -> String {
    format!("type {} . inet_proto . inet_service;", f.addr_type())
}

/// The table, its shared maps and sets, and its base chains. Declarations
/// are no-ops when present; base chains are flushed and refilled in the same
/// transaction, so this is safe to repeat and no packet sees them empty.
pub fn skeleton(f: Family) -> Result<NftScript, NftError> {
    let w = f.word();
    let mut s = NftScript::new(&table(f));
    s.add_table();
    let frontend = frontend_type(f);
    let dispatch = format!("{} : verdict;", frontend.trim_end_matches(';'));
    s.add_set(SetKind::Map, SERVICES, &dispatch)?;
    s.add_set(SetKind::Map, AFFINITY, &dispatch)?;
    s.add_set(SetKind::Set, EMPTY, &frontend)?;
    s.add_set(SetKind::Set, HAIRPIN, &format!("type {0} . {0};", f.addr_type()))?;
    let dispatch_rule = format!("{w} daddr . meta l4proto . th dport vmap @{SERVICES}");
    let base = |kind: &str, hook: &str, prio: i32| format!("type {kind} hook {hook} priority {prio}; policy accept;");
    // Packets from containers meet prerouting, the node's own meet output.
    for (chain, hook) in [("prerouting", "prerouting"), ("output", "output")] {
        s.add_chain(chain, Some(&base("nat", hook, -100)))?;
        s.flush_chain(chain)?;
        s.add_rule(chain, &dispatch_rule)?;
    }
    // Only a connection's first packet meets nat chains: remember its backend,
    // then masquerade a backend that reached itself (its reply must come back here).
    s.add_chain("postrouting", Some(&base("nat", "postrouting", 100)))?;
    s.flush_chain("postrouting")?;
    for p in PROTOCOLS {
        let p = p.as_str();
        s.add_rule(
            "postrouting",
            &format!(
                "meta l4proto {p} ct status dnat ct original {w} daddr . meta l4proto . ct original proto-dst vmap @{AFFINITY}"
            ),
        )?;
    }
    s.add_rule(
        "postrouting",
        &format!("ct status dnat {w} saddr . {w} daddr @{HAIRPIN} masquerade"),
    )?;
    // Before the firewall (forward, filter - 5) and before nat output.
    let empty = format!("{w} daddr . meta l4proto . th dport @{EMPTY}");
    for (chain, hook) in [("reject_forward", "forward"), ("reject_output", "output")] {
        s.add_chain(chain, Some(&base("filter", hook, -110)))?;
        s.flush_chain(chain)?;
        s.add_rule(chain, &format!("{empty} meta l4proto tcp reject with tcp reset"))?;
        s.add_rule(chain, &format!("{empty} reject"))?;
    }
    Ok(s)
}

fn slots_decl(r: &Rendered) -> String {
    format!("typeof numgen random mod 1 : {} daddr;", r.family().word())
}

fn clients_decl(r: &Rendered, timeout: u32) -> String {
    let t = r.family().addr_type();
    format!("type {t} : {t}; flags dynamic,timeout; timeout {timeout}s; size 65535;")
}

/// Creates a service's objects, or brings existing ones to `r`: declarations
/// are added (no-ops when present), port chains are refilled, and the slot
/// map is diffed against `kernel_slots` (what the kernel holds; `None` when
/// the map is new).
pub fn ensure_service(
    s: &mut NftScript,
    r: &Rendered,
    kernel_slots: Option<&BTreeMap<usize, IpAddr>>,
) -> Result<(), NftError> {
    s.add_set(SetKind::Map, &r.slots_map(), &slots_decl(r))?;
    let timeout = r.conf.affinity_timeout();
    if let Some(t) = timeout {
        s.add_set(SetKind::Map, &r.clients_map(), &clients_decl(r, t))?;
        s.add_chain(&r.affinity_chain(), None)?;
        s.flush_chain(&r.affinity_chain())?;
        let w = r.family().word();
        s.add_rule(
            &r.affinity_chain(),
            &format!("update @{} {{ {w} saddr : {w} daddr }}", r.clients_map()),
        )?;
    }
    for (chain, rules) in r.port_rules() {
        s.add_chain(&chain, None)?;
        s.flush_chain(&chain)?;
        for rule in rules {
            s.add_rule(&chain, &rule.text())?;
        }
    }
    let empty = BTreeMap::new();
    let have = kernel_slots.unwrap_or(&empty);
    let want: BTreeMap<usize, IpAddr> = r.slots.iter().copied().enumerate().collect();
    diff_slots(s, r, have, &want)?;
    for (key, chain) in r.frontends() {
        s.add_elements(SERVICES, &[format!("{key} : goto {chain}")])?;
        if timeout.is_some() {
            s.add_elements(AFFINITY, &[format!("{key} : jump {}", r.affinity_chain())])?;
        }
        set_empty(s, &key.to_string(), r.slots.is_empty())?;
    }
    Ok(())
}

/// Slot elements: delete what differs, then add (a map refuses to overwrite a key).
fn diff_slots(
    s: &mut NftScript,
    r: &Rendered,
    have: &BTreeMap<usize, IpAddr>,
    want: &BTreeMap<usize, IpAddr>,
) -> Result<(), NftError> {
    let (stale, fresh) = model::slot_changes(have, want);
    let stale: Vec<String> = stale.iter().map(usize::to_string).collect();
    let fresh: Vec<String> = fresh
        .iter()
        .map(|&(i, a)| {
            let (slot, backend) = model::slot_element(i, a);
            format!("{slot} : {backend}")
        })
        .collect();
    s.delete_elements(&r.slots_map(), &stale)?;
    s.add_elements(&r.slots_map(), &fresh)?;
    Ok(())
}

/// Puts a frontend in the reject set or takes it out, whether or not it is there.
fn set_empty(s: &mut NftScript, key: &str, empty: bool) -> Result<(), NftError> {
    s.add_elements(EMPTY, &[key])?;
    if !empty {
        s.delete_elements(EMPTY, &[key])?;
    }
    Ok(())
}

/// Removes a service's objects, whichever of them exist.
pub fn remove_service(s: &mut NftScript, r: &Rendered) -> Result<(), NftError> {
    let timeout = r.conf.affinity_timeout();
    for (key, chain) in r.frontends() {
        let key = key.to_string();
        // Add-then-delete deletes whether or not the element was there.
        s.add_chain(&chain, None)?;
        let entry = [format!("{key} : goto {chain}")];
        s.add_elements(SERVICES, &entry)?;
        s.delete_elements(SERVICES, &[&key])?;
        if timeout.is_some() {
            s.add_chain(&r.affinity_chain(), None)?;
            s.add_elements(AFFINITY, &[format!("{key} : jump {}", r.affinity_chain())])?;
            s.delete_elements(AFFINITY, &[&key])?;
        }
        s.add_elements(EMPTY, &[&key])?;
        s.delete_elements(EMPTY, &[&key])?;
        s.remove_chain(&chain)?;
    }
    if let Some(t) = timeout {
        s.remove_chain(&r.affinity_chain())?;
        s.remove_set(SetKind::Map, &r.clients_map(), &clients_decl(r, t))?;
    }
    s.remove_set(SetKind::Map, &r.slots_map(), &slots_decl(r))?;
    Ok(())
}

/// Deletes remembered clients of `r` whose backend is one of `gone`
/// (`clients`: client → backend, as listed from the kernel).
pub fn forget_clients(
    s: &mut NftScript,
    r: &Rendered,
    clients: &[(IpAddr, IpAddr)],
    gone: &[IpAddr],
) -> Result<(), NftError> {
    let stale: Vec<String> = clients
        .iter()
        .filter(|(_, b)| gone.contains(b))
        .map(|(c, _)| c.to_string())
        .collect();
    s.delete_elements(&r.clients_map(), &stale)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_rendered as rendered;
    use serde_json::json;

    #[test]
    fn skeleton_v4_and_v6() {
        insta::assert_snapshot!("skeleton_v4", skeleton(Family::V4).unwrap().text());
        insta::assert_snapshot!("skeleton_v6", skeleton(Family::V6).unwrap().text());
    }

    #[test]
    fn a_new_service_with_affinity() {
        let mut s = NftScript::new(&table(Family::V4));
        ensure_service(
            &mut s,
            &rendered(
                json!({"affinity": {"clientIP": true, "timeoutSeconds": 60}}),
                &["10.0.0.2", "10.0.0.3"],
            ),
            None,
        )
        .unwrap();
        insta::assert_snapshot!(s.text());
    }

    #[test]
    fn removal_deletes_whatever_exists() {
        let mut s = NftScript::new(&table(Family::V4));
        remove_service(
            &mut s,
            &rendered(json!({"affinity": {"clientIP": true}}), &["10.0.0.2"]),
        )
        .unwrap();
        insta::assert_snapshot!(s.text());
    }
}
