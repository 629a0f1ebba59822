//! What the kernel holds in our table, read back for the full path, CHECK
//! and affinity clean-up (never on the ADD/DEL fast path).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use netsvc_core::nft::{NftError, SetKind};
use serde_json::Value;

use crate::model::{Family, Rendered};
use crate::render::{SERVICES, table};

/// One family's table as the kernel has it.
#[derive(Debug, Default)]
pub struct Current {
    pub chains: BTreeSet<String>,
    /// Every map's elements, keys and values as nft prints them.
    pub maps: BTreeMap<String, Vec<(Value, Value)>>,
}

impl Current {
    /// The frontends (`vip . proto . port`) the dispatch map holds.
    pub fn frontends(&self) -> BTreeSet<String> {
        self.maps
            .get(SERVICES)
            .into_iter()
            .flatten()
            .map(|(k, _)| frontend_key(k))
            .collect()
    }

    /// The chain the dispatch map sends `frontend` (`vip . proto . port`) to, if any.
    pub fn frontend_target(&self, frontend: &str) -> Option<String> {
        let (_, verdict) = self
            .maps
            .get(SERVICES)?
            .iter()
            .find(|(k, _)| frontend_key(k) == frontend)?;
        verdict["goto"]["target"].as_str().map(str::to_string)
    }

    /// A slot map's elements by slot; `None` when the map does not exist.
    pub fn slots(&self, map: &str) -> Option<BTreeMap<usize, IpAddr>> {
        let elems = self.maps.get(map)?;
        Some(
            elems
                .iter()
                .filter_map(|(k, v)| Some((k.as_u64()? as usize, v.as_str()?.parse().ok()?)))
                .collect(),
        )
    }
}

/// Reads one family's table; `None` when it does not exist.
pub fn read(f: Family) -> Result<Option<Current>, NftError> {
    let Some(doc) = table(f).list_json()? else {
        return Ok(None);
    };
    let mut cur = Current::default();
    for obj in doc["nftables"].as_array().into_iter().flatten() {
        if let Some(name) = obj["chain"]["name"].as_str() {
            cur.chains.insert(name.to_string());
        }
        if let Some(name) = obj["map"]["name"].as_str() {
            cur.maps.insert(name.to_string(), elements(&obj["map"]["elem"]));
        }
    }
    Ok(Some(cur))
}

/// The remembered clients of a service with affinity: (client, backend).
pub fn clients(r: &Rendered) -> Result<Vec<(IpAddr, IpAddr)>, NftError> {
    let Some(doc) = table(r.family()).list_set_json(SetKind::Map, &r.clients_map())? else {
        return Ok(Vec::new());
    };
    let elems = doc["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|o| elements(&o["map"]["elem"]));
    Ok(elems
        .filter_map(|(k, v)| Some((k.as_str()?.parse().ok()?, v.as_str()?.parse().ok()?)))
        .collect())
}

/// `[key, value]` pairs; a key with a timeout comes wrapped as `{"elem": {"val": key, …}}`.
fn elements(elem: &Value) -> Vec<(Value, Value)> {
    elem.as_array()
        .into_iter()
        .flatten()
        .filter_map(|pair| {
            let key = &pair[0];
            let key = if key["elem"]["val"].is_null() {
                key
            } else {
                &key["elem"]["val"]
            };
            Some((key.clone(), pair.get(1)?.clone()))
        })
        .collect()
}

/// `{"concat": ["10.96.0.10", "tcp", 80]}` → `10.96.0.10 . tcp . 80`, as the render writes it.
fn frontend_key(k: &Value) -> String {
    let parts: Vec<String> = k["concat"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| match p {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect();
    parts.join(" . ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_nft_listing_shapes() {
        let e = elements(
            &json!([[0, "10.0.0.1"], [{"elem": {"val": "10.0.0.9", "timeout": 60, "expires": 59}}, "10.0.0.2"]]),
        );
        assert_eq!(e[1].0, json!("10.0.0.9"));
        assert_eq!(
            frontend_key(&json!({"concat": ["fd00::10", "udp", 53]})),
            "fd00::10 . udp . 53"
        );
        let cur = Current {
            chains: BTreeSet::new(),
            maps: [("m".to_string(), e)].into_iter().collect(),
        };
        assert_eq!(cur.slots("m").unwrap().get(&0), Some(&"10.0.0.1".parse().unwrap()));
        assert!(cur.slots("absent").is_none());
    }
}
