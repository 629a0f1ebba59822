//! What the load balancer decides, without touching the kernel: each
//! service's object names, its backends, its slot table and its rules.
//!
//! A service's objects carry a prefix derived from the network, the service
//! name and its whole config, so a changed service gets fresh objects (and
//! the old ones go) instead of being edited in place.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;

use netsvc_core::graph::{Endpoint, Protocol};
use netsvc_core::naming::{digest_hex, fnv64};
use netsvc_core::nft::Datum;
use serde::{Deserialize, Serialize};

use crate::config::{Algorithm, ServiceConf};
use crate::maglev;
use crate::rules::{Pick, PortRule};

/// The table name in both families (`ip netsvc_lb`, `ip6 netsvc_lb`).
pub const TABLE: &str = "netsvc_lb";
/// The protocols a port may have; the affinity dispatch needs one rule each.
pub const PROTOCOLS: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

/// An address family: which table, and how nft spells its addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    pub fn of(ip: IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }

    pub fn nf(self) -> netsvc_core::nft::Family {
        match self {
            Family::V4 => netsvc_core::nft::Family::Ip,
            Family::V6 => netsvc_core::nft::Family::Ip6,
        }
    }

    /// The payload keyword: `ip saddr`, `ip6 saddr`; also the nat family word.
    pub fn word(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }

    pub fn addr_type(self) -> &'static str {
        match self {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        }
    }
}

/// What the load balancer rendered for one service: the kernel's state of it
/// as far as the store knows (the fast path diffs against this).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rendered {
    pub conf: ServiceConf,
    pub prefix: String,
    /// The backend address of every slot of the service's slot map.
    pub slots: Vec<IpAddr>,
}

impl Rendered {
    pub fn family(&self) -> Family {
        Family::of(self.conf.vip())
    }

    pub fn backends(&self) -> BTreeSet<IpAddr> {
        self.slots.iter().copied().collect()
    }

    pub fn slots_map(&self) -> String {
        format!("{}_slots", self.prefix)
    }

    /// The ClientIP affinity map (client → backend), with timeouts.
    pub fn clients_map(&self) -> String {
        format!("{}_clients", self.prefix)
    }

    /// The chain that records a new connection's backend in the clients map.
    pub fn affinity_chain(&self) -> String {
        format!("{}_affinity", self.prefix)
    }

    pub fn port_chain(&self, protocol: Protocol, port: u16) -> String {
        format!("{}_{}_{port}", self.prefix, protocol.as_str())
    }

    /// Each port's dispatch key (`vip . proto . port`) and chain.
    pub fn frontends(&self) -> Vec<(Datum, String)> {
        let vip = Datum::addr(self.conf.vip());
        self.conf
            .ports
            .iter()
            .map(|p| {
                let key = Datum::concat(&[vip.clone(), Datum::protocol(p.protocol), Datum::port(p.port())]);
                (key, self.port_chain(p.protocol, p.port()))
            })
            .collect()
    }

    /// The rules of each port chain: pick a backend (the client's remembered
    /// one first, with affinity) and DNAT to it on the target port. No rules
    /// without backends: the packet then meets the reject chains.
    pub fn port_rules(&self) -> Vec<(String, Vec<PortRule>)> {
        let n = self.slots.len() as u32;
        self.conf
            .ports
            .iter()
            .map(|p| {
                let rule = |pick, map| PortRule {
                    family: self.family(),
                    protocol: p.protocol,
                    target: p.target(),
                    pick,
                    map,
                };
                let mut rules = Vec::new();
                if n > 0 {
                    if self.conf.affinity_timeout().is_some() {
                        rules.push(rule(Pick::Remembered, self.clients_map()));
                    }
                    let pick = match self.conf.algorithm {
                        Algorithm::Random => Pick::Random { n },
                        Algorithm::Maglev => Pick::Jhash { n, seed: self.seed() },
                    };
                    rules.push(rule(pick, self.slots_map()));
                }
                (self.port_chain(p.protocol, p.port()), rules)
            })
            .collect()
    }

    /// The jhash seed: fixed per service so its flows keep their slots.
    fn seed(&self) -> u32 {
        fnv64(self.prefix.as_bytes()) as u32
    }
}

/// The object prefix of a service: `s` and 11 hex digits of a digest of the
/// network, the service's name and its config.
pub fn prefix(network: &str, conf: &ServiceConf) -> String {
    let config = serde_json::to_string(conf).unwrap_or_default();
    let digest = digest_hex(format!("{network}/{}/{config}", conf.name).as_bytes());
    format!("s{}", &digest[..11])
}

/// The slot elements that take `have` to `want`: the slots to delete
/// (they differ), then the elements to add (a map refuses to overwrite a key).
pub fn slot_changes(
    have: &BTreeMap<usize, IpAddr>,
    want: &BTreeMap<usize, IpAddr>,
) -> (Vec<usize>, Vec<(usize, IpAddr)>) {
    let stale = have
        .iter()
        .filter(|(i, a)| want.get(i) != Some(a))
        .map(|(i, _)| *i)
        .collect();
    let fresh = want
        .iter()
        .filter(|(i, a)| have.get(i) != Some(a))
        .map(|(i, a)| (*i, *a))
        .collect();
    (stale, fresh)
}

/// A slot map's element: the slot number as `numgen`/`jhash` leave it in a
/// register, and the backend.
pub fn slot_element(slot: usize, backend: IpAddr) -> (Datum, Datum) {
    (Datum::register_u32(slot as u32), Datum::addr(backend))
}

/// The hairpin set's keys of an endpoint's addresses (`addr . addr`).
pub fn hairpin_keys(addrs: &[IpAddr]) -> Vec<Datum> {
    addrs
        .iter()
        .map(|a| Datum::concat(&[Datum::addr(*a), Datum::addr(*a)]))
        .collect()
}

/// An endpoint's addresses of one family.
pub fn addresses(ep: &Endpoint, family: Family) -> Vec<IpAddr> {
    ep.ips
        .iter()
        .map(|n| n.addr)
        .filter(|a| Family::of(*a) == family)
        .collect()
}

/// The backend addresses `conf` selects among `endpoints`.
pub fn backends<'a>(conf: &ServiceConf, endpoints: impl IntoIterator<Item = &'a Endpoint>) -> BTreeSet<IpAddr> {
    let family = Family::of(conf.vip());
    endpoints
        .into_iter()
        .filter(|e| conf.select.matches(e))
        .flat_map(|e| addresses(e, family))
        .collect()
}

/// The slot table of `conf` for `backends`, given the table rendered before.
///
/// `random` keeps one slot per backend (the rule picks `mod n`): a leaving
/// backend's slot takes the last backend, a new backend is appended, so
/// every other backend keeps its slot. `maglev` fills its fixed-size table
/// Maglev-style from the sorted backends, so the same set gives the same table.
pub fn slot_table(conf: &ServiceConf, previous: &[IpAddr], backends: &BTreeSet<IpAddr>) -> Vec<IpAddr> {
    match conf.algorithm {
        Algorithm::Random => {
            let mut slots: Vec<IpAddr> = previous.to_vec();
            let mut i = 0;
            while i < slots.len() {
                if backends.contains(&slots[i]) {
                    i += 1;
                } else {
                    slots.swap_remove(i);
                }
            }
            let kept: HashSet<IpAddr> = slots.iter().copied().collect();
            slots.extend(backends.iter().filter(|b| !kept.contains(b)));
            slots
        }
        Algorithm::Maglev => {
            let sorted: Vec<IpAddr> = backends.iter().copied().collect();
            let names: Vec<String> = sorted.iter().map(IpAddr::to_string).collect();
            maglev::table(&names, conf.table_size())
                .into_iter()
                .map(|i| sorted[i])
                .collect()
        }
    }
}

/// A service `api` on 10.96.0.10 (tcp 80 → 8080, udp 53) with `extra`
/// config and `slots`, for the tests of what is written from it.
#[cfg(test)]
pub(crate) fn test_rendered(extra: serde_json::Value, slots: &[&str]) -> Rendered {
    let mut svc = serde_json::json!({"name": "api", "vip": "10.96.0.10", "ports": [{"port": 80, "targetPort": 8080},
                         {"port": 53, "protocol": "udp"}]});
    svc.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let c =
        crate::config::LbConf::from_value(&serde_json::json!({"name": "n", "type": "netsvc-lb", "services": [svc]}))
            .unwrap();
    Rendered {
        conf: c.services[0].clone(),
        prefix: "s0123456789a".into(),
        slots: slots.iter().map(|s| s.parse().unwrap()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LbConf;
    use serde_json::json;

    fn conf(extra: serde_json::Value) -> ServiceConf {
        let mut s = json!({"name": "api", "vip": "10.96.0.10", "ports": [{"port": 80, "targetPort": 8080}]});
        s.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let c = LbConf::from_value(&json!({"name": "n", "type": "netsvc-lb", "services": [s]})).unwrap();
        c.services[0].clone()
    }

    fn ips(list: &[&str]) -> BTreeSet<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn random_slots_move_only_what_must() {
        let c = conf(json!({}));
        let s1 = slot_table(&c, &[], &ips(&["10.0.0.3", "10.0.0.2"]));
        assert_eq!(s1, ips(&["10.0.0.2", "10.0.0.3"]).into_iter().collect::<Vec<_>>());
        let s2 = slot_table(&c, &s1, &ips(&["10.0.0.2", "10.0.0.3", "10.0.0.4"]));
        assert_eq!(&s2[..2], &s1[..]);
        // 10.0.0.2 leaves: the last backend takes its slot, 10.0.0.3 stays put.
        let s3 = slot_table(&c, &s2, &ips(&["10.0.0.3", "10.0.0.4"]));
        assert_eq!(
            s3,
            vec!["10.0.0.4".parse::<IpAddr>().unwrap(), "10.0.0.3".parse().unwrap()]
        );
    }

    #[test]
    fn rules_follow_algorithm_affinity_and_backends() {
        let mut r = Rendered {
            conf: conf(json!({"affinity": {"clientIP": true}})),
            prefix: "sabc".into(),
            slots: vec![],
        };
        assert_eq!(r.port_rules(), vec![("sabc_tcp_80".to_string(), vec![])]);
        let texts = |r: &Rendered| -> Vec<String> { r.port_rules()[0].1.iter().map(|r| r.text()).collect() };
        r.slots = ips(&["10.0.0.2", "10.0.0.3"]).into_iter().collect();
        assert_eq!(
            texts(&r),
            vec![
                "meta l4proto tcp dnat ip to ip saddr map @sabc_clients : 8080",
                "meta l4proto tcp dnat ip to numgen random mod 2 map @sabc_slots : 8080",
            ]
        );
        let m = Rendered {
            conf: conf(json!({"vip": "fd00::10", "algorithm": "maglev"})),
            prefix: "sabc".into(),
            slots: vec!["fd00::2".parse().unwrap(); 1021],
        };
        let rule = &texts(&m)[0];
        assert!(
            rule.starts_with(
                "meta l4proto tcp dnat ip6 to jhash ip6 saddr . th sport . ip6 daddr . th dport mod 1021 seed 0x"
            ),
            "{rule}"
        );
        let frontends: Vec<(String, String)> = m.frontends().into_iter().map(|(k, c)| (k.to_string(), c)).collect();
        assert_eq!(frontends, vec![("fd00::10 . tcp . 80".into(), "sabc_tcp_80".into())]);
    }

    #[test]
    fn a_changed_config_gets_a_new_prefix() {
        let a = prefix("n", &conf(json!({})));
        assert_eq!(a, prefix("n", &conf(json!({}))));
        assert_ne!(a, prefix("m", &conf(json!({}))));
        assert_ne!(a, prefix("n", &conf(json!({"algorithm": "maglev"}))));
        assert_eq!(a.len(), 12);
    }
}
