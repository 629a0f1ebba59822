//! What a full render changes, read as differences (`netsvc repair`): per
//! service, its slot map's elements, its port chains and its place in the
//! dispatch map; services removed from the config that the kernel still holds.

use std::collections::BTreeMap;
use std::net::IpAddr;

use netsvc_core::reconcile::{DiffKind, Difference};

use crate::SERVICE;
use crate::kernel::Current;
use crate::model::{Family, Rendered};
use crate::render::SERVICES;

/// The differences between `mine` (the services the store wants in
/// family `f`), `removed` (ones it no longer wants) and the kernel's table.
pub fn differences(
    network: &str,
    f: Family,
    mine: &[&Rendered],
    removed: &[&Rendered],
    current: Option<&Current>,
) -> Vec<Difference> {
    let table = format!("{} {}", f.word(), crate::model::TABLE);
    let mut out = Vec::new();
    let mut note = |kind, object: String| out.push(Difference::new(SERVICE, network, kind, object));
    let Some(current) = current else {
        if !mine.is_empty() {
            note(DiffKind::Missing, format!("table {table}"));
        }
        return out;
    };
    for r in mine {
        let map = r.slots_map();
        match current.slots(&map) {
            None => note(DiffKind::Missing, format!("map {table} {map}")),
            Some(have) => {
                let want: BTreeMap<usize, IpAddr> = r.slots.iter().copied().enumerate().collect();
                for (slot, ip) in &want {
                    match have.get(slot) {
                        None => note(DiffKind::Missing, format!("element {slot} : {ip} of map {table} {map}")),
                        Some(h) if h != ip => note(
                            DiffKind::Differs,
                            format!("element {slot} : {h} of map {table} {map} (wants {ip})"),
                        ),
                        Some(_) => {}
                    }
                }
                for (slot, ip) in have.iter().filter(|(s, _)| !want.contains_key(s)) {
                    note(DiffKind::Extra, format!("element {slot} : {ip} of map {table} {map}"));
                }
            }
        }
        for (chain, _) in r.port_rules() {
            if !current.chains.contains(&chain) {
                note(DiffKind::Missing, format!("chain {table} {chain}"));
            }
        }
        for (key, chain) in r.frontends() {
            if current.frontend_target(&key.to_string()).as_deref() != Some(chain.as_str()) {
                note(
                    DiffKind::Missing,
                    format!("element {key} : goto {chain} of map {table} {SERVICES}"),
                );
            }
        }
    }
    for r in removed {
        if current.maps.contains_key(&r.slots_map()) {
            note(DiffKind::Extra, format!("map {table} {}", r.slots_map()));
        }
    }
    out
}
