//! The QoS configuration: what a user writes in the conflist (a superset of
//! the reference `bandwidth` plugin's keys), checked whole before anything
//! is applied. Every error is code 7 and names the field.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use netsvc_core::cni::config::{decode_at, name_item};
use netsvc_core::cni::{CniError, IpNet, NetConf};
use netsvc_core::graph::{Protocol, validate_name};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::units::{Amount, rate_bits, size_bytes};

/// The plugin's own top-level keys; every other key passes through.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QosConf {
    /// Traffic to the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_rate: Option<Amount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_burst: Option<Amount>,
    /// Traffic from the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_rate: Option<Amount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_burst: Option<Amount>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<ClassConf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shaped_subnets: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unshaped_subnets: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClassConf {
    pub name: String,
    /// Guaranteed rate.
    pub rate: Amount,
    /// Most it may borrow up to; default: the direction's rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ceil: Option<Amount>,
    /// 0 (first to borrow) to 7.
    #[serde(default)]
    pub priority: u32,
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub matches: Option<MatchConf>,
    /// Takes the traffic no class matches.
    #[serde(default)]
    pub default: bool,
}

/// What a class takes: a packet matching any entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MatchConf {
    #[serde(default)]
    pub ports: Vec<PortMatchConf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dscp: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortMatchConf {
    #[serde(default)]
    pub protocol: Protocol,
    /// Read as u32 so 0 and >65535 get a clear error.
    pub port: u32,
}

/// The shaping of one direction: a rate in bits/s and a burst in bytes
/// (`None`: the default, see [`crate::plan::default_burst`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Direction {
    pub rate: u64,
    pub burst: Option<u64>,
}

/// An IPv4 prefix.
pub type Prefix = (Ipv4Addr, u8);

/// One criterion of a class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Criterion {
    /// This transport port at either end of the packet.
    Port {
        protocol: u8,
        port: u16,
    },
    Dscp(u8),
    /// The far end of the packet (the source of traffic to the container,
    /// the destination of traffic from it).
    Remote(Prefix),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Class {
    pub name: String,
    pub rate: u64,
    pub ceil: Option<u64>,
    pub priority: u8,
    pub criteria: Vec<Criterion>,
    pub default: bool,
}

/// Which traffic is shaped.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Scope {
    #[default]
    All,
    /// All but traffic whose far end is in these subnets.
    AllBut(Vec<Prefix>),
    /// Only traffic whose far end is in these subnets.
    Only(Vec<Prefix>),
}

/// A checked configuration, rates resolved (static config, else the
/// `bandwidth` capability): what the plan is made from.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct QosSettings {
    /// To the container (shaped on the host veth).
    pub ingress: Option<Direction>,
    /// From the container (shaped on the ifb).
    pub egress: Option<Direction>,
    pub classes: Vec<Class>,
    pub scope: Scope,
}

/// The burst kubelet sends when a pod's annotations give none (`math.MaxInt32`).
const KUBELET_NO_BURST: u64 = i32::MAX as u64;

/// The `bandwidth` capability's `runtimeConfig` entry (bits/s and bits).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuntimeBandwidth {
    ingress_rate: Option<u64>,
    ingress_burst: Option<u64>,
    egress_rate: Option<u64>,
    egress_burst: Option<u64>,
}

impl QosConf {
    /// Decodes and checks a call's config, the capability's rates applied
    /// when the static config sets none.
    pub fn from_netconf(conf: &NetConf) -> Result<QosSettings, CniError> {
        let static_conf = QosConf::decode(&conf.service_value())?;
        let runtime = match conf.runtime("bandwidth") {
            Some(v) => Some(decode_at::<RuntimeBandwidth>(v, "runtimeConfig.bandwidth")?),
            None => None,
        };
        static_conf.resolve(runtime)
    }

    /// Decodes and checks the keys alone (as the composer does): no capability.
    pub fn from_value(raw: &Value) -> Result<QosSettings, CniError> {
        QosConf::decode(raw)?.resolve(None)
    }

    fn decode(raw: &Value) -> Result<QosConf, CniError> {
        decode_at(raw, "").map_err(|e| name_item(raw, e, "classes", "class"))
    }

    fn resolve(&self, runtime: Option<RuntimeBandwidth>) -> Result<QosSettings, CniError> {
        let direction = |rate: &Option<Amount>, burst: &Option<Amount>, which: &str| -> Result<_, CniError> {
            let Some(rate) = rate else {
                if burst.is_some() {
                    return Err(CniError::invalid_config(
                        &format!("{which}Burst"),
                        format!("is set without {which}Rate"),
                    ));
                }
                return Ok(None);
            };
            Ok(Some(Direction {
                rate: rate_bits(&format!("{which}Rate"), rate)?,
                burst: burst
                    .as_ref()
                    .map(|b| size_bytes(&format!("{which}Burst"), b))
                    .transpose()?,
            }))
        };
        let mut ingress = direction(&self.ingress_rate, &self.ingress_burst, "ingress")?;
        let mut egress = direction(&self.egress_rate, &self.egress_burst, "egress")?;
        if ingress.is_none()
            && egress.is_none()
            && let Some(rt) = runtime
        {
            // 0 is "not set"; so is kubelet's "no burst given", i32::MAX bits.
            let amount = |v: Option<u64>| v.filter(|v| *v > 0 && *v != KUBELET_NO_BURST).map(Amount::Bits);
            let base = "runtimeConfig.bandwidth.";
            ingress =
                direction(&amount(rt.ingress_rate), &amount(rt.ingress_burst), "ingress").map_err(|e| CniError {
                    msg: format!("{base}{}", e.msg),
                    ..e
                })?;
            egress = direction(&amount(rt.egress_rate), &amount(rt.egress_burst), "egress").map_err(|e| CniError {
                msg: format!("{base}{}", e.msg),
                ..e
            })?;
        }
        let classes = self.checked_classes()?;
        let scope = self.scope()?;
        let qos = QosSettings {
            ingress,
            egress,
            classes,
            scope,
        };
        crate::plan::check(&qos)?;
        Ok(qos)
    }

    fn checked_classes(&self) -> Result<Vec<Class>, CniError> {
        let mut names = BTreeSet::new();
        let mut default_seen = None;
        let mut classes = Vec::new();
        for (i, c) in self.classes.iter().enumerate() {
            let field = |f: &str| format!("classes[{i}].{f}");
            let bad = |f: &str, why: String| CniError::invalid_config(&field(f), format!("{why} (class {:?})", c.name));
            validate_name(&field("name"), &c.name).map_err(|e| bad("name", e.to_string()))?;
            if !names.insert(c.name.as_str()) {
                return Err(bad("name", format!("duplicate class name {:?}", c.name)));
            }
            let rate = rate_bits(&field("rate"), &c.rate)?;
            let ceil = c.ceil.as_ref().map(|a| rate_bits(&field("ceil"), a)).transpose()?;
            if let Some(ceil) = ceil
                && ceil < rate
            {
                return Err(bad(
                    "ceil",
                    format!("{ceil} bit/s is below the class rate {rate} bit/s"),
                ));
            }
            let priority = u8::try_from(c.priority)
                .ok()
                .filter(|p| *p <= 7)
                .ok_or_else(|| bad("priority", format!("{} is not in 0..=7", c.priority)))?;
            if c.default {
                if let Some(first) = default_seen {
                    return Err(bad(
                        "default",
                        format!("a second default class (classes[{first}] is already the default)"),
                    ));
                }
                default_seen = Some(i);
            }
            classes.push(Class {
                name: c.name.clone(),
                rate,
                ceil,
                priority,
                criteria: criteria(c.matches.as_ref(), &field("match"), &bad)?,
                default: c.default,
            });
            if !c.default && classes.last().is_some_and(|c| c.criteria.is_empty()) {
                return Err(bad("match", "a class that is not the default needs a match".into()));
            }
        }
        Ok(classes)
    }

    fn scope(&self) -> Result<Scope, CniError> {
        let prefixes = |list: &[String], field: &str| -> Result<Vec<Prefix>, CniError> {
            list.iter()
                .enumerate()
                .map(|(i, s)| prefix(s).map_err(|why| CniError::invalid_config(&format!("{field}[{i}]"), why)))
                .collect()
        };
        match (&self.shaped_subnets, &self.unshaped_subnets) {
            (Some(_), Some(_)) => Err(CniError::invalid_config(
                "shapedSubnets",
                "shapedSubnets and unshapedSubnets are exclusive: set one",
            )),
            (Some(only), None) => Ok(Scope::Only(prefixes(only, "shapedSubnets")?)),
            (None, Some(but)) => Ok(Scope::AllBut(prefixes(but, "unshapedSubnets")?)),
            (None, None) => Ok(Scope::All),
        }
    }
}

fn criteria(
    m: Option<&MatchConf>,
    field: &str,
    bad: &dyn Fn(&str, String) -> CniError,
) -> Result<Vec<Criterion>, CniError> {
    let Some(m) = m else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (j, p) in m.ports.iter().enumerate() {
        let port = u16::try_from(p.port).ok().filter(|p| *p > 0).ok_or_else(|| {
            bad(
                &format!("match.ports[{j}].port"),
                format!("{} is not in 1..=65535", p.port),
            )
        })?;
        let protocol = match p.protocol {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        };
        out.push(Criterion::Port { protocol, port });
    }
    if let Some(d) = m.dscp {
        let d = u8::try_from(d)
            .ok()
            .filter(|d| *d <= 63)
            .ok_or_else(|| bad("match.dscp", format!("{d} is not in 0..=63")))?;
        out.push(Criterion::Dscp(d));
    }
    if let Some(c) = &m.cidr {
        out.push(Criterion::Remote(prefix(c).map_err(|why| bad("match.cidr", why))?));
    }
    if out.is_empty() {
        return Err(CniError::invalid_config(field, "is empty: give ports, dscp or cidr"));
    }
    Ok(out)
}

/// An IPv4 `a.b.c.d/len` (the host bits must be zero).
fn prefix(s: &str) -> Result<Prefix, String> {
    let net: IpNet = s.parse().map_err(|why| format!("{s:?}: {why}"))?;
    let IpAddr::V4(addr) = net.addr else {
        return Err(format!(
            "{s:?}: IPv6 subnets are not supported (u32 matches IPv4 headers)"
        ));
    };
    if net != net.network() {
        return Err(format!("{s:?} has host bits set"));
    }
    Ok((addr, net.prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conf(v: Value) -> Result<QosSettings, CniError> {
        QosConf::from_value(&v)
    }

    #[test]
    fn the_issue_example_parses() {
        let q = conf(json!({
            "ingressRate": 10000000, "ingressBurst": 1000000,
            "egressRate": "20mbit", "egressBurst": "256kb",
            "classes": [{"name": "interactive", "rate": "10mbit", "ceil": "20mbit", "priority": 0,
                         "match": {"ports": [{"protocol": "tcp", "port": 22}]}},
                        {"name": "bulk", "rate": "1mbit", "ceil": "20mbit", "priority": 7, "default": true}],
            "unshapedSubnets": ["10.0.0.0/8"]}))
        .unwrap();
        assert_eq!(
            q.ingress,
            Some(Direction {
                rate: 10_000_000,
                burst: Some(125_000)
            })
        );
        assert_eq!(
            q.egress,
            Some(Direction {
                rate: 20_000_000,
                burst: Some(262_144)
            })
        );
        assert_eq!(q.classes[0].criteria, [Criterion::Port { protocol: 6, port: 22 }]);
        assert!(q.classes[1].default);
        assert_eq!(q.scope, Scope::AllBut(vec![(Ipv4Addr::new(10, 0, 0, 0), 8)]));
    }

    #[test]
    fn the_capability_applies_only_without_static_rates() {
        let with = |stat: Value| {
            let mut v = json!({"cniVersion": "1.0.0", "name": "n", "type": "netsvc-qos",
                "runtimeConfig": {"bandwidth": {"ingressRate": 4000000, "ingressBurst": 80000, "egressRate": 6000000}}});
            v.as_object_mut().unwrap().extend(stat.as_object().unwrap().clone());
            QosConf::from_netconf(&NetConf::from_value(&v).unwrap()).unwrap()
        };
        let q = with(json!({}));
        assert_eq!(
            (
                q.ingress.unwrap().rate,
                q.ingress.unwrap().burst,
                q.egress.unwrap().rate
            ),
            (4_000_000, Some(10_000), 6_000_000)
        );
        let kubelet = {
            let v = json!({"cniVersion": "1.0.0", "name": "n", "type": "netsvc-qos",
                "runtimeConfig": {"bandwidth": {"egressRate": 1000000, "egressBurst": 2147483647}}});
            QosConf::from_netconf(&NetConf::from_value(&v).unwrap()).unwrap()
        };
        assert_eq!(
            kubelet.egress.unwrap().burst,
            None,
            "kubelet's no-burst is the default burst"
        );
        let q = with(json!({"egressRate": "1mbit"}));
        assert_eq!((q.ingress, q.egress.unwrap().rate), (None, 1_000_000));
    }

    #[test]
    fn bad_input_is_code_7_naming_the_field() {
        let class = |extra: Value| {
            let mut c = json!({"name": "a", "rate": "1mbit", "match": {"ports": [{"port": 22}]}});
            c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            c
        };
        for (v, field) in [
            (json!({"egressRate": 0}), "egressRate"),
            (json!({"egressRate": "0mbit"}), "egressRate"),
            (json!({"egressRate": "10 parsecs"}), "egressRate"),
            (json!({"egressRate": "10mbit", "egressBurst": "9zb"}), "egressBurst"),
            (json!({"ingressBurst": 1000}), "ingressBurst"),
            (json!({"egressRate": "1kbit", "egressBurst": "1gb"}), "egressBurst"),
            (
                json!({"egressRate": "10mbit", "classes": [class(json!({"ceil": "100kbit"}))]}),
                "classes[0].ceil",
            ),
            (
                json!({"egressRate": "10mbit", "classes": [class(json!({"priority": 8}))]}),
                "classes[0].priority",
            ),
            (
                json!({"egressRate": "10mbit", "classes": [class(json!({"match": {"ports": [{"port": 0}]}}))]}),
                "classes[0].match.ports[0].port",
            ),
            (
                json!({"egressRate": "10mbit", "classes": [class(json!({"match": {"dscp": 64}}))]}),
                "classes[0].match.dscp",
            ),
            (
                json!({"egressRate": "10mbit", "classes": [class(json!({"match": {"cidr": "10.0.0.1/8"}}))]}),
                "classes[0].match.cidr",
            ),
            (
                json!({"egressRate": "10mbit", "classes": [class(json!({"match": {}}))]}),
                "classes[0].match",
            ),
            (
                json!({"egressRate": "10mbit", "classes": [class(json!({"default": true})),
                                                       class(json!({"name": "b", "default": true}))]}),
                "classes[1].default",
            ),
            (
                json!({"egressRate": "10mbit", "classes": [class(json!({})), class(json!({}))]}),
                "classes[1].name",
            ),
            (json!({"classes": [class(json!({}))]}), "classes"),
            (
                json!({"egressRate": "10mbit", "classes": [class(json!({"colour": "red"}))]}),
                "classes[0]",
            ),
            (
                json!({"egressRate": "10mbit", "shapedSubnets": ["10.0.0.0/8"], "unshapedSubnets": []}),
                "shapedSubnets",
            ),
            (
                json!({"egressRate": "10mbit", "unshapedSubnets": ["fd00::/8"]}),
                "unshapedSubnets[0]",
            ),
        ] {
            let e = conf(v.clone()).unwrap_err();
            assert_eq!(e.code().as_u32(), 7, "{v}: {}", e.msg);
            assert!(e.msg.contains(field), "{v}: {} does not name {field}", e.msg);
        }
    }
}
