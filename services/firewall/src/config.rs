//! The firewall's configuration: what a user writes in the conflist.
//! Every error names the policy and the field (a JSON path) with its value.

use std::collections::{BTreeMap, BTreeSet};

use netsvc_core::cni::config::{decode_at, name_item};
use netsvc_core::cni::{CniError, IpNet, NetConf};
pub use netsvc_core::graph::Protocol;
use netsvc_core::graph::{Selector, validate_name};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What happens to a direction no policy isolates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DefaultAction {
    #[default]
    Allow,
    Deny,
}

/// The plugin's own top-level keys; every other key passes through.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FirewallConf {
    #[serde(default)]
    pub default_ingress: DefaultAction,
    #[serde(default)]
    pub default_egress: DefaultAction,
    #[serde(default)]
    pub policies: Vec<PolicyConf>,
    #[serde(default)]
    pub log: LogConf,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyConf {
    pub name: String,
    /// The endpoints this policy isolates; `{}` selects every endpoint of the network.
    #[serde(default)]
    pub select: Selector,
    /// Present (even empty): ingress to the selected endpoints is isolated and
    /// only these rules allow it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Vec<IngressRule>>,
    /// Present (even empty): egress from the selected endpoints is isolated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<EgressRule>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressRule {
    /// Sources; empty or absent allows every source.
    #[serde(default)]
    pub from: Vec<Peer>,
    /// Destination ports; empty or absent allows every port and protocol.
    #[serde(default)]
    pub ports: Vec<PortConf>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressRule {
    /// Destinations; empty or absent allows every destination.
    #[serde(default)]
    pub to: Vec<Peer>,
    #[serde(default)]
    pub ports: Vec<PortConf>,
}

/// A peer: endpoints of this network by selector, or addresses by `cidr`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Peer {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<IpNet>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<IpNet>,
}

impl Peer {
    pub fn selector(&self) -> Selector {
        Selector {
            names: self.names.clone(),
            labels: self.labels.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortConf {
    #[serde(default)]
    pub protocol: Protocol,
    /// Absent: every port of the protocol. Read as u32 so 0 and >65535 get a clear error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// With `port`, the last port of a range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<u32>,
}

impl PortConf {
    /// The inclusive port range, once validated.
    pub fn range(&self) -> Option<(u16, u16)> {
        let first = self.port? as u16;
        Some((first, self.end_port.map_or(first, |e| e as u16)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogConf {
    /// Log denied packets (rate-limited), prefixed with network and policy.
    #[serde(default)]
    pub denied: bool,
    /// Send logs to this nflog group instead of the kernel log (which a
    /// non-initial namespace drops unless `nf_log_all_netns` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<u16>,
    /// Log at most this many packets per second per rule.
    #[serde(default = "default_rate")]
    pub rate: u32,
}

fn default_rate() -> u32 {
    10
}

impl Default for LogConf {
    fn default() -> Self {
        LogConf {
            denied: false,
            group: None,
            rate: default_rate(),
        }
    }
}

impl FirewallConf {
    /// Decodes and validates the plugin's keys from a call's config.
    pub fn from_netconf(conf: &NetConf) -> Result<FirewallConf, CniError> {
        FirewallConf::from_value(&conf.service_value())
    }

    pub fn from_value(raw: &Value) -> Result<FirewallConf, CniError> {
        let conf: FirewallConf = decode_at(raw, "").map_err(|e| name_item(raw, e, "policies", "policy"))?;
        conf.validate()?;
        Ok(conf)
    }

    fn validate(&self) -> Result<(), CniError> {
        let mut seen = BTreeSet::new();
        for (i, p) in self.policies.iter().enumerate() {
            let at = |field: &str| format!("policies[{i}].{field}");
            let bad =
                |field: &str, why: String| CniError::invalid_config(&at(field), format!("{why} (policy {:?})", p.name));
            validate_name(&at("name"), &p.name).map_err(|e| bad("name", e.to_string()))?;
            if !seen.insert(p.name.as_str()) {
                return Err(bad("name", format!("duplicate policy name {:?}", p.name)));
            }
            p.select
                .validate(&at("select"))
                .map_err(|e| bad("select", e.to_string()))?;
            for (r, rule) in p.ingress.iter().flatten().enumerate() {
                validate_rule(&format!("ingress[{r}]"), "from", &rule.from, &rule.ports)
                    .map_err(|(f, w)| bad(&f, w))?;
            }
            for (r, rule) in p.egress.iter().flatten().enumerate() {
                validate_rule(&format!("egress[{r}]"), "to", &rule.to, &rule.ports).map_err(|(f, w)| bad(&f, w))?;
            }
        }
        if self.log.rate == 0 {
            return Err(CniError::invalid_config(
                "log.rate",
                "0: must be at least 1 packet per second",
            ));
        }
        Ok(())
    }
}

type FieldError = (String, String);

fn validate_rule(at: &str, peers_key: &str, peers: &[Peer], ports: &[PortConf]) -> Result<(), FieldError> {
    for (x, peer) in peers.iter().enumerate() {
        let field = format!("{at}.{peers_key}[{x}]");
        validate_peer(&field, peer)?;
    }
    for (t, port) in ports.iter().enumerate() {
        let field = format!("{at}.ports[{t}]");
        validate_port(&field, port)?;
    }
    Ok(())
}

fn validate_peer(field: &str, peer: &Peer) -> Result<(), FieldError> {
    let has_selector = !peer.names.is_empty() || !peer.labels.is_empty();
    match peer.cidr {
        Some(cidr) if has_selector => Err((
            field.into(),
            format!("cidr {cidr} cannot be combined with names or labels: use two peers"),
        )),
        Some(cidr) => {
            for (k, ex) in peer.except.iter().enumerate() {
                let inside = ex.is_ipv4() == cidr.is_ipv4() && ex.prefix >= cidr.prefix && cidr.contains(ex.addr);
                if !inside {
                    return Err((
                        format!("{field}.except[{k}]"),
                        format!("{ex} is not inside cidr {cidr}"),
                    ));
                }
            }
            Ok(())
        }
        None if !peer.except.is_empty() => Err((format!("{field}.except"), "except needs a cidr".into())),
        None => peer
            .selector()
            .validate(field)
            .map_err(|e| (field.to_string(), e.to_string())),
    }
}

fn validate_port(field: &str, port: &PortConf) -> Result<(), FieldError> {
    let in_range = |p: u32| (1..=65535).contains(&p);
    match (port.port, port.end_port) {
        (Some(p), _) if !in_range(p) => Err((format!("{field}.port"), format!("{p} is not a port (1-65535)"))),
        (_, Some(e)) if !in_range(e) => Err((format!("{field}.endPort"), format!("{e} is not a port (1-65535)"))),
        (None, Some(e)) => Err((
            format!("{field}.endPort"),
            format!("{e} needs a port to start the range"),
        )),
        (Some(p), Some(e)) if e < p => Err((format!("{field}.endPort"), format!("{e} is below port {p}"))),
        _ => Ok(()),
    }
}

/// Adds the policy's name to a decode error whose path is inside `policies[i]`.
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(policies: Value) -> Result<FirewallConf, CniError> {
        FirewallConf::from_value(&json!({"cniVersion": "1.0.0", "name": "n", "type": "netsvc-firewall",
                                          "policies": policies}))
    }

    fn err(policies: Value) -> String {
        let e = parse(policies).unwrap_err();
        assert_eq!(e.code, 7, "{}", e.msg);
        e.msg
    }

    #[test]
    fn the_documented_example_parses() {
        let c = parse(
            json!([{"name": "api-from-web", "select": {"names": ["api"], "labels": {"tier": "api"}},
            "ingress": [{"from": [{"names": ["web"]}, {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}],
                         "ports": [{"protocol": "tcp", "port": 8080, "endPort": 8090}]}],
            "egress": [{"to": [{"labels": {"tier": "db"}}], "ports": [{"protocol": "tcp", "port": 5432}]}]}]),
        )
        .unwrap();
        assert_eq!(
            c.policies[0].ingress.as_ref().unwrap()[0].ports[0].range(),
            Some((8080, 8090))
        );
        assert_eq!(c.default_ingress, DefaultAction::Allow);
    }

    #[test]
    fn bad_policies_name_policy_and_field() {
        let cases = [
            (json!([{"name": "p1", "selct": {}}]), "selct"),
            (
                json!([{"name": "p1", "ingress": [{"from": [{"cidr": "10.0.0.0/33"}]}]}]),
                "ingress[0].from[0].cidr",
            ),
            (
                json!([{"name": "p1", "ingress": [{"ports": [{"port": 0}]}]}]),
                "ingress[0].ports[0].port",
            ),
            (
                json!([{"name": "p1", "ingress": [{"ports": [{"port": 70000}]}]}]),
                "ingress[0].ports[0].port",
            ),
            (
                json!([{"name": "p1", "egress": [{"ports": [{"port": 90, "endPort": 80}]}]}]),
                "egress[0].ports[0].endPort",
            ),
            (json!([{"name": "p1"}, {"name": "p1"}]), "policies[1].name"),
            (
                json!([{"name": "p1", "ingress": [{"ports": [{"protocol": "icmp"}]}]}]),
                "protocol",
            ),
            (
                json!([{"name": "p1", "ingress": [{"from": [{"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}]}]}]),
                "except[0]",
            ),
            (
                json!([{"name": "p1", "ingress": [{"from": [{"names": ["a"], "cidr": "10.0.0.0/8"}]}]}]),
                "from[0]",
            ),
            (json!([{"name": "p1", "egress": [{"from": []}]}]), "from"),
        ];
        for (policies, field) in cases {
            let msg = err(policies.clone());
            assert!(msg.contains(field), "{policies}: {msg}");
            assert!(msg.contains("p1"), "names the policy: {msg}");
        }
    }

    #[test]
    fn unknown_top_level_keys_pass() {
        let c = FirewallConf::from_value(&json!({"cniVersion": "1.0.0", "name": "n", "type": "t", "runtimeX": 1}));
        assert!(c.is_ok());
    }
}
