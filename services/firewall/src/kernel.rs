//! What the kernel holds in our table, read back (own table only) for full
//! renders, CHECK and GC, and the one step that applies a batch.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use netsvc_core::cni::{CniError, IpNet};
use netsvc_core::nft::{Batch, ElementOp, Family, NftTable};
use serde_json::Value;

use crate::model::{Membership, TABLE};
use crate::render::{self, Cmd};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetState {
    /// The element type nft reports (`ipv4_addr`, …).
    pub addr_type: String,
    pub interval: bool,
    pub elements: BTreeSet<IpNet>,
}

/// Our table as the kernel reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Current {
    /// Chain → its rules' (handle, comment), in order.
    pub chains: BTreeMap<String, Vec<(Option<u64>, String)>>,
    pub sets: BTreeMap<String, SetState>,
}

impl Current {
    /// Parses `nft -j list table inet netsvc_firewall` output.
    pub fn parse(listing: &Value) -> Current {
        let mut cur = Current::default();
        for item in listing["nftables"].as_array().into_iter().flatten() {
            if let Some(c) = item.get("chain") {
                let name = c["name"].as_str().unwrap_or_default().to_string();
                cur.chains.entry(name).or_default();
            } else if let Some(r) = item.get("rule") {
                let chain = r["chain"].as_str().unwrap_or_default().to_string();
                let comment = r["comment"].as_str().unwrap_or_default().to_string();
                cur.chains
                    .entry(chain)
                    .or_default()
                    .push((r["handle"].as_u64(), comment));
            } else if let Some(s) = item.get("set") {
                let interval = s["flags"].as_array().is_some_and(|f| f.iter().any(|x| x == "interval"));
                let elements = s["elem"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(parse_element)
                    .collect();
                cur.sets.insert(
                    s["name"].as_str().unwrap_or_default().to_string(),
                    SetState {
                        addr_type: s["type"].as_str().unwrap_or_default().to_string(),
                        interval,
                        elements,
                    },
                );
            }
        }
        cur
    }

    pub fn set_has(&self, set: &str, ip: IpAddr) -> bool {
        self.sets
            .get(set)
            .is_some_and(|s| s.elements.contains(&IpNet::host(ip)))
    }
}

/// An element as nft lists it: an address, `{"prefix": …}`, or `{"elem": {"val": …}}`
/// when it carries extra data. Ranges that are not prefixes are not ours.
fn parse_element(v: &Value) -> Option<IpNet> {
    match v {
        Value::String(s) => s.parse::<IpAddr>().ok().map(IpNet::host),
        Value::Object(o) => {
            if let Some(p) = o.get("prefix") {
                let addr: IpAddr = p["addr"].as_str()?.parse().ok()?;
                return IpNet::new(addr, u8::try_from(p["len"].as_u64()?).ok()?).ok();
            }
            o.get("elem").and_then(|e| parse_element(&e["val"]))
        }
        _ => None,
    }
}

/// Our table: `inet netsvc_firewall`.
pub fn table() -> NftTable {
    NftTable::new(Family::Inet, TABLE).expect("a valid table name")
}

/// Reads our table back; an absent table is empty.
pub fn read() -> Result<Current, CniError> {
    Ok(table().list_json()?.map(|l| Current::parse(&l)).unwrap_or_default())
}

/// An endpoint's addresses into (or out of) the sets it belongs to, in one
/// transaction over netlink: the whole of what ADD and DEL change.
pub fn apply_membership(op: ElementOp, m: &Membership) -> Result<(), CniError> {
    let mut batch = Batch::new(&table());
    for (set, ip) in &m.elements {
        batch.push(op, set, *ip)?;
    }
    Ok(batch.apply()?)
}

/// Applies a render's commands as one transaction over netlink.
pub fn apply(cmds: &[Cmd]) -> Result<(), CniError> {
    if cmds.is_empty() {
        return Ok(());
    }
    Ok(render::batch(cmds)?.apply()?)
}
