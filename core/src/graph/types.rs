//! The graph's objects as stored (JSON, camelCase). Unknown keys are errors so
//! that a typo in a hand-edited or imported document does not pass silently.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::Selector;
pub use crate::inet::{IpNet, Protocol};

/// A network: what the interface plugin set up.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Network {
    pub name: String,
    /// The subnets' prefixes.
    #[serde(default)]
    pub subnets: Vec<IpNet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// The bridge or host interface the network lives on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
}

/// One attachment: (network, container id, ifname).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    /// Addresses with their prefix length (`10.88.0.5/24`).
    #[serde(default)]
    pub ips: Vec<IpNet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_veth: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// Names and aliases (what DNS answers and selectors match).
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The services (plugin types) holding this endpoint: it leaves the graph
    /// when the last of them detaches it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    /// The node the container runs on; `None` (an endpoint recorded before
    /// nodes were) counts as on every node that reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl Endpoint {
    /// Whether `service` (a plugin type) holds this endpoint.
    pub fn held_by(&self, service: &str) -> bool {
        self.services.iter().any(|s| s == service)
    }

    /// Whether the container runs on `node` (its kernel state is that node's to render).
    pub fn is_on(&self, node: &str) -> bool {
        self.node.as_deref().is_none_or(|n| n == node)
    }

    /// The attachment id used in keys: `<containerId>:<ifname>` (neither may hold `:`).
    pub fn id(&self) -> String {
        endpoint_id(&self.container_id, &self.ifname)
    }
}

pub(crate) fn endpoint_id(container_id: &str, ifname: &str) -> String {
    format!("{container_id}:{ifname}")
}

/// A port of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u16>,
    #[serde(default)]
    pub protocol: Protocol,
}

/// A load-balanced / named service; its backends are the endpoints it selects.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<IpAddr>,
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    #[serde(default)]
    pub selector: Selector,
}

/// A firewall policy; rules stay opaque JSON until the firewall owns them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    pub name: String,
    #[serde(default)]
    pub selector: Selector,
    #[serde(default)]
    pub ingress: Vec<serde_json::Value>,
    #[serde(default)]
    pub egress: Vec<serde_json::Value>,
}

/// Traffic shaping of one endpoint (rates in bits/s, bursts in bits).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Shaping {
    /// The endpoint's id ([`Endpoint::id`]).
    pub endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_rate: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_burst: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_rate: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_burst: Option<u64>,
}

/// A VPN peer. Public material only: there is deliberately no field for a
/// private key, and `deny_unknown_fields` refuses one.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Peer {
    pub name: String,
    pub public_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<SocketAddr>,
    #[serde(default)]
    pub allowed_ips: Vec<IpNet>,
}
