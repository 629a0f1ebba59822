//! The full path's batch (one transaction over nf_tables netlink) for one
//! family's table: it declares the table and ensures each service against
//! what the kernel holds. The fast path writes over netlink too
//! ([`crate::fast`]), from the same model: slot changes, keys and rules.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use netsvc_core::nft::{BaseChain, Batch, DataType, Datum, ElementOp, Hook, NftError, NftTable, SetDecl, Verdict};

use crate::model::{self, Family, PROTOCOLS, Rendered, TABLE};
use crate::rules;

/// Dispatch: `vip . proto . port` → `goto` the service port's chain.
pub const SERVICES: &str = "services";
/// After NAT: `vip . proto . port` → `jump` the service's affinity chain.
pub const AFFINITY: &str = "affinity";
/// Frontends of services without backends: rejected at once.
pub const EMPTY: &str = "empty";
/// `addr . addr` of every endpoint: a backend reaching itself through its VIP is masqueraded.
pub const HAIRPIN: &str = "hairpin";
/// How many clients a service with affinity remembers at most.
const CLIENTS: u32 = 65535;

pub fn table(f: Family) -> NftTable {
    NftTable::new(f.nf(), TABLE).expect("valid table name")
}

fn addr_type(f: Family) -> DataType {
    match f {
        Family::V4 => DataType::Ipv4Addr,
        Family::V6 => DataType::Ipv6Addr,
    }
}

fn frontend_key(f: Family) -> [DataType; 3] {
    [addr_type(f), DataType::InetProto, DataType::InetService]
}

/// The table, its shared maps and sets, and its base chains. Declarations
/// are no-ops when present; base chains are flushed and refilled in the same
/// transaction, so this is safe to repeat and no packet sees them empty.
pub fn skeleton(f: Family) -> Result<Batch, NftError> {
    let mut b = Batch::new(&table(f));
    b.add_table();
    b.add_set(SetDecl::typed(SERVICES, &frontend_key(f), Some(DataType::Verdict)))?;
    b.add_set(SetDecl::typed(AFFINITY, &frontend_key(f), Some(DataType::Verdict)))?;
    b.add_set(SetDecl::typed(EMPTY, &frontend_key(f), None))?;
    b.add_set(SetDecl::typed(HAIRPIN, &[addr_type(f), addr_type(f)], None))?;
    let base = |kind, hook, priority| Some(BaseChain { kind, hook, priority });
    // Packets from containers meet prerouting, the node's own meet output.
    for (chain, hook) in [("prerouting", Hook::Prerouting), ("output", Hook::Output)] {
        b.add_chain(chain, base("nat", hook, -100))?;
        b.flush_chain(chain)?;
        b.add_rule(chain, rules::dispatch(f, SERVICES))?;
    }
    // Only a connection's first packet meets nat chains: remember its backend,
    // then masquerade a backend that reached itself (its reply must come back here).
    b.add_chain("postrouting", base("nat", Hook::Postrouting, 100))?;
    b.flush_chain("postrouting")?;
    for p in PROTOCOLS {
        b.add_rule("postrouting", rules::remember(f, p, AFFINITY))?;
    }
    b.add_rule("postrouting", rules::hairpin(f, HAIRPIN))?;
    // Before the firewall (forward, filter - 5) and before nat output.
    for (chain, hook) in [("reject_forward", Hook::Forward), ("reject_output", Hook::Output)] {
        b.add_chain(chain, base("filter", hook, -110))?;
        b.flush_chain(chain)?;
        b.add_rule(chain, rules::reject(f, EMPTY, true))?;
        b.add_rule(chain, rules::reject(f, EMPTY, false))?;
    }
    Ok(b)
}

fn slots_decl(r: &Rendered) -> SetDecl {
    SetDecl::numgen_to_daddr(&r.slots_map(), r.family() == Family::V6)
}

fn clients_decl(r: &Rendered, timeout: u32) -> SetDecl {
    let a = addr_type(r.family());
    SetDecl::typed(&r.clients_map(), &[a], Some(a)).dynamic(Duration::from_secs(timeout.into()), CLIENTS)
}

/// Creates a service's objects, or brings existing ones to `r`: declarations
/// are added (no-ops when present), port chains are refilled, and the slot
/// map is diffed against `kernel_slots` (what the kernel holds; `None` when
/// the map is new).
pub fn ensure_service(
    b: &mut Batch,
    r: &Rendered,
    kernel_slots: Option<&BTreeMap<usize, IpAddr>>,
) -> Result<(), NftError> {
    b.add_set(slots_decl(r))?;
    let timeout = r.conf.affinity_timeout();
    if let Some(t) = timeout {
        b.add_set(clients_decl(r, t))?;
        b.add_chain(&r.affinity_chain(), None)?;
        b.flush_chain(&r.affinity_chain())?;
        b.add_rule(&r.affinity_chain(), rules::update_client(r.family(), &r.clients_map()))?;
    }
    for (chain, rules) in r.port_rules() {
        b.add_chain(&chain, None)?;
        b.flush_chain(&chain)?;
        for rule in rules {
            b.add_rule(&chain, rule.netlink())?;
        }
    }
    let empty = BTreeMap::new();
    let have = kernel_slots.unwrap_or(&empty);
    let want: BTreeMap<usize, IpAddr> = r.slots.iter().copied().enumerate().collect();
    diff_slots(b, r, have, &want)?;
    for (key, chain) in r.frontends() {
        b.element(
            ElementOp::Add,
            SERVICES,
            key.clone(),
            Some(Datum::verdict(Verdict::Goto(chain))),
        )?;
        if timeout.is_some() {
            let jump = Datum::verdict(Verdict::Jump(r.affinity_chain()));
            b.element(ElementOp::Add, AFFINITY, key.clone(), Some(jump))?;
        }
        let op = if r.slots.is_empty() {
            ElementOp::Add
        } else {
            ElementOp::Destroy
        };
        b.element(op, EMPTY, key, None)?;
    }
    Ok(())
}

/// Slot elements: delete what differs, then add (a map refuses to overwrite a key).
fn diff_slots(
    b: &mut Batch,
    r: &Rendered,
    have: &BTreeMap<usize, IpAddr>,
    want: &BTreeMap<usize, IpAddr>,
) -> Result<(), NftError> {
    let (stale, fresh) = model::slot_changes(have, want);
    for i in stale {
        let (slot, backend) = model::slot_element(i, have[&i]);
        b.element(ElementOp::Delete, &r.slots_map(), slot, Some(backend))?;
    }
    for (i, a) in fresh {
        let (slot, backend) = model::slot_element(i, a);
        b.element(ElementOp::Add, &r.slots_map(), slot, Some(backend))?;
    }
    Ok(())
}

/// Removes a service's objects, whichever of them exist.
pub fn remove_service(b: &mut Batch, r: &Rendered) -> Result<(), NftError> {
    let timeout = r.conf.affinity_timeout();
    for (key, chain) in r.frontends() {
        b.element(ElementOp::Destroy, SERVICES, key.clone(), None)?;
        if timeout.is_some() {
            b.element(ElementOp::Destroy, AFFINITY, key.clone(), None)?;
        }
        b.element(ElementOp::Destroy, EMPTY, key, None)?;
        b.destroy_chain(&chain)?;
    }
    if timeout.is_some() {
        b.destroy_chain(&r.affinity_chain())?;
        b.destroy_set(&r.clients_map(), true)?;
    }
    b.destroy_set(&r.slots_map(), true)?;
    Ok(())
}

/// Deletes remembered clients of `r` whose backend is one of `gone`
/// (`clients`: client → backend, as listed from the kernel), whether or
/// not they expired meanwhile.
pub fn forget_clients(
    b: &mut Batch,
    r: &Rendered,
    clients: &[(IpAddr, IpAddr)],
    gone: &[IpAddr],
) -> Result<(), NftError> {
    for (client, _) in clients.iter().filter(|(_, backend)| gone.contains(backend)) {
        b.element(ElementOp::Destroy, &r.clients_map(), Datum::addr(*client), None)?;
    }
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
        let mut s = Batch::new(&table(Family::V4));
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
        let mut s = Batch::new(&table(Family::V4));
        remove_service(
            &mut s,
            &rendered(json!({"affinity": {"clientIP": true}}), &["10.0.0.2"]),
        )
        .unwrap();
        insta::assert_snapshot!(s.text());
    }
}
