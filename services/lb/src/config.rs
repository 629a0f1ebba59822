//! The load balancer's configuration: what a user writes in the conflist.
//! Every error is code 7 and names the service and the field with its value.

use std::collections::BTreeSet;
use std::net::IpAddr;

use netsvc_core::cni::config::{decode_at, name_item};
use netsvc_core::cni::{CniError, NetConf};
use netsvc_core::graph::{Protocol, Selector, validate_name};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::maglev;

/// The plugin's own top-level keys; every other key passes through.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LbConf {
    #[serde(default)]
    pub services: Vec<ServiceConf>,
}

/// How a new connection picks its backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// Uniformly at random (`numgen random`).
    #[default]
    Random,
    /// By a hash of the flow into a Maglev table: a backend leaving moves only its own flows.
    Maglev,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceConf {
    pub name: String,
    /// The virtual IP, IPv4 or IPv6.
    pub vip: String,
    pub ports: Vec<PortConf>,
    /// The backends: endpoints of this network that match; `{}` selects all.
    #[serde(default)]
    pub select: Selector,
    #[serde(default)]
    pub algorithm: Algorithm,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Slots of the Maglev table (a prime); only with `"algorithm": "maglev"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maglev_table_size: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortConf {
    /// The port on the VIP. Read as u32 so 0 and >65535 get a clear error.
    pub port: u32,
    /// The port on the backends; absent: the same as `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
    #[serde(default)]
    pub protocol: Protocol,
}

impl PortConf {
    pub fn port(&self) -> u16 {
        self.port as u16
    }

    pub fn target(&self) -> u16 {
        self.target_port.unwrap_or(self.port) as u16
    }
}

/// ClientIP session affinity, as Kubernetes' `sessionAffinity: ClientIP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Affinity {
    /// Connections from one client address go to the backend it last reached.
    #[serde(rename = "clientIP")]
    pub client_ip: bool,
    /// Forget a client this long after its last new connection.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u32,
}

/// Kubernetes' default: three hours.
fn default_timeout() -> u32 {
    10800
}

/// Kubernetes' upper bound: one day.
const MAX_TIMEOUT: u32 = 86400;

impl ServiceConf {
    pub fn vip(&self) -> IpAddr {
        self.vip.parse().expect("validated")
    }

    /// The affinity timeout when ClientIP affinity is on.
    pub fn affinity_timeout(&self) -> Option<u32> {
        self.affinity.filter(|a| a.client_ip).map(|a| a.timeout_seconds)
    }

    pub fn table_size(&self) -> u32 {
        self.maglev_table_size.unwrap_or(maglev::DEFAULT_TABLE_SIZE)
    }
}

impl LbConf {
    /// Decodes and validates the plugin's keys from a call's config.
    pub fn from_netconf(conf: &NetConf) -> Result<LbConf, CniError> {
        LbConf::from_value(&conf.service_value())
    }

    pub fn from_value(raw: &Value) -> Result<LbConf, CniError> {
        let conf: LbConf = decode_at(raw, "").map_err(|e| name_item(raw, e, "services", "service"))?;
        conf.validate()?;
        Ok(conf)
    }

    fn validate(&self) -> Result<(), CniError> {
        let mut names = BTreeSet::new();
        let mut frontends = BTreeSet::new();
        for (i, s) in self.services.iter().enumerate() {
            let bad = |field: &str, why: String| {
                CniError::invalid_config(
                    &format!("services[{i}].{field}"),
                    format!("{why} (service {:?})", s.name),
                )
            };
            validate_name(&format!("services[{i}].name"), &s.name).map_err(|e| bad("name", e.to_string()))?;
            if !names.insert(s.name.as_str()) {
                return Err(bad("name", format!("duplicate service name {:?}", s.name)));
            }
            let vip: IpAddr = s
                .vip
                .parse()
                .map_err(|_| bad("vip", format!("{:?} is not an IPv4 or IPv6 address", s.vip)))?;
            if vip.is_unspecified() || vip.is_multicast() || vip.is_loopback() {
                return Err(bad("vip", format!("{vip} cannot be a service address")));
            }
            if s.ports.is_empty() {
                return Err(bad("ports", "a service needs at least one port".into()));
            }
            for (p, port) in s.ports.iter().enumerate() {
                for (field, value) in [("port", Some(port.port)), ("targetPort", port.target_port)] {
                    if let Some(v) = value
                        && !(1..=65535).contains(&v)
                    {
                        return Err(bad(
                            &format!("ports[{p}].{field}"),
                            format!("{v} is not a port (1-65535)"),
                        ));
                    }
                }
                let key = (vip, port.protocol, port.port);
                if !frontends.insert(key) {
                    return Err(bad(
                        &format!("ports[{p}]"),
                        format!(
                            "{vip}:{}/{} is already a service port",
                            port.port,
                            port.protocol.as_str()
                        ),
                    ));
                }
            }
            s.select
                .validate(&format!("services[{i}].select"))
                .map_err(|e| bad("select", e.to_string()))?;
            if let Some(a) = s.affinity
                && !(1..=MAX_TIMEOUT).contains(&a.timeout_seconds)
            {
                return Err(bad(
                    "affinity.timeoutSeconds",
                    format!("{} is outside 1-{MAX_TIMEOUT}", a.timeout_seconds),
                ));
            }
            if let Some(size) = s.maglev_table_size {
                if s.algorithm != Algorithm::Maglev {
                    return Err(bad(
                        "maglevTableSize",
                        format!("{size} is only for \"algorithm\": \"maglev\""),
                    ));
                }
                if !maglev::is_prime(size) || size > maglev::MAX_TABLE_SIZE {
                    return Err(bad(
                        "maglevTableSize",
                        format!("{size} is not a prime up to {}", maglev::MAX_TABLE_SIZE),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(services: Value) -> Result<LbConf, CniError> {
        LbConf::from_value(&json!({"cniVersion": "1.0.0", "name": "n", "type": "netsvc-lb", "services": services}))
    }

    fn api(extra: Value) -> Value {
        let mut s = json!({"name": "api", "vip": "10.96.0.10", "ports": [{"port": 80, "targetPort": 8080}],
                           "select": {"names": ["api"]}});
        s.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        s
    }

    #[test]
    fn the_issue_example_parses_with_defaults() {
        let c = parse(json!([api(json!({"algorithm": "random",
                                        "affinity": {"clientIP": true, "timeoutSeconds": 10800}}))]))
        .unwrap();
        let s = &c.services[0];
        assert_eq!(s.ports[0].protocol, Protocol::Tcp);
        assert_eq!((s.ports[0].port(), s.ports[0].target()), (80, 8080));
        assert_eq!(s.affinity_timeout(), Some(10800));
        let v6 = parse(json!([{"name": "v6", "vip": "fd00::10", "ports": [{"port": 53, "protocol": "udp"}]}])).unwrap();
        assert_eq!(v6.services[0].ports[0].target(), 53);
        assert_eq!(v6.services[0].algorithm, Algorithm::Random);
    }

    #[test]
    fn errors_name_the_service_and_field() {
        let cases = [
            (json!([api(json!({"vip": "10.96.0"}))]), "services[0].vip", "10.96.0"),
            (
                json!([api(json!({})), api(json!({"vip": "10.96.0.11"}))]),
                "services[1].name",
                "duplicate",
            ),
            (
                json!([api(json!({})), api(json!({"name": "web"}))]),
                "services[1].ports[0]",
                "10.96.0.10:80/tcp",
            ),
            (
                json!([api(json!({"ports": [{"port": 0}]}))]),
                "services[0].ports[0].port",
                "0",
            ),
            (
                json!([api(json!({"ports": [{"port": 70000}]}))]),
                "services[0].ports[0].port",
                "70000",
            ),
            (
                json!([api(json!({"ports": [{"port": 80, "targetPort": 65536}]}))]),
                "services[0].ports[0].targetPort",
                "65536",
            ),
            (
                json!([api(json!({"algorithm": "roundrobin"}))]),
                "services[0].algorithm",
                "roundrobin",
            ),
            (
                json!([api(json!({"ports": [{"port": 80, "protocol": "icmp"}]}))]),
                "services[0].ports[0].protocol",
                "icmp",
            ),
            (json!([api(json!({"selct": {}}))]), "services[0]", "selct"),
            (json!([api(json!({"ports": []}))]), "services[0].ports", "at least one"),
            (
                json!([api(json!({"algorithm": "maglev", "maglevTableSize": 1024}))]),
                "services[0].maglevTableSize",
                "1024",
            ),
            (
                json!([api(json!({"affinity": {"clientIP": true, "timeoutSeconds": 0}}))]),
                "services[0].affinity.timeoutSeconds",
                "0",
            ),
        ];
        for (services, field, value) in cases {
            let e = parse(services.clone()).unwrap_err();
            assert_eq!(e.code, 7, "{services}");
            assert!(e.msg.contains(field) && e.msg.contains(value), "{services}: {}", e.msg);
            assert!(e.msg.contains("service \""), "names the service: {}", e.msg);
        }
    }
}
