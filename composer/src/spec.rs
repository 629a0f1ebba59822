//! The high-level network spec `netsvc compose` reads (YAML or JSON) and the
//! conflist it becomes.

use std::net::IpAddr;

use crate::catalog::Catalog;
use crate::order::{explain, order};
use netsvc_core::cni::{CniError, IpNet, NetConfList, config::decode_at, env::validate_ifname};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The interface plugin that gives each container its interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InterfaceKind {
    /// A veth per container on a host bridge (the reference `bridge` plugin).
    Bridge,
    /// A point-to-point veth per container, routed by the host (`ptp`).
    Ptp,
}

/// A network as a user describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Spec {
    /// The network name; also the conflist's `name`.
    pub name: String,
    /// The spec version of the conflist (default 1.0.0, the newest the Debian reference plugins speak).
    #[serde(default = "default_version")]
    pub cni_version: String,
    #[serde(default = "default_interface")]
    pub interface: InterfaceKind,
    /// Bridge device name (bridge only; default `ns-<name>`, cut to 15 bytes).
    #[serde(default)]
    pub bridge: Option<String>,
    /// One or more subnets, IPv4 and/or IPv6.
    pub subnets: Vec<IpNet>,
    /// Gateway of the first subnet (default: its first address).
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    /// Masquerade traffic leaving the network (default true).
    #[serde(default = "yes")]
    pub ip_masq: bool,
    /// Interface MTU (default: the kernel's).
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Add the reference `portmap` plugin for published ports (default false).
    #[serde(default)]
    pub port_mappings: bool,
    /// Network services, each a plugin config (with its `type`) chained after
    /// the interface plugin, in the order given.
    #[serde(default)]
    pub services: Vec<Map<String, Value>>,
}

fn default_version() -> String {
    "1.0.0".into()
}
fn default_interface() -> InterfaceKind {
    InterfaceKind::Bridge
}
fn yes() -> bool {
    true
}

impl Spec {
    /// Reads a spec from YAML or JSON (JSON is YAML). Errors name the field.
    pub fn parse(text: &str) -> Result<Spec, CniError> {
        let value: Value =
            serde_norway::from_str(text).map_err(|e| CniError::decode(format!("failed to read spec: {e}")))?;
        let spec: Spec = decode_at(&value, "")?;
        spec.validate()?;
        Ok(spec)
    }

    fn validate(&self) -> Result<(), CniError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            return Err(CniError::invalid_config(
                "name",
                format!("{:?} must be 1-64 letters, digits, '-', '_' or '.'", self.name),
            ));
        }
        netsvc_core::cni::version::require_supported(&self.cni_version, netsvc_core::cni::SUPPORTED_VERSIONS).map_err(
            |_| {
                CniError::invalid_config(
                    "cniVersion",
                    format!("{:?} is not a supported version", self.cni_version),
                )
            },
        )?;
        let first = self
            .subnets
            .first()
            .ok_or_else(|| CniError::invalid_config("subnets", "needs at least one subnet"))?;
        if let Some(gw) = self.gateway
            && !first.contains(gw)
        {
            return Err(CniError::invalid_config(
                "gateway",
                format!("{gw} is not inside subnet {first}"),
            ));
        }
        if let Some(br) = &self.bridge {
            validate_ifname(br).map_err(|why| CniError::invalid_config("bridge", why))?;
            if self.interface != InterfaceKind::Bridge {
                return Err(CniError::invalid_config("bridge", "only applies to interface: bridge"));
            }
        }
        for (i, service) in self.services.iter().enumerate() {
            crate::services::validate_service(i, service)?;
        }
        Ok(())
    }

    fn bridge_name(&self) -> String {
        self.bridge
            .clone()
            .unwrap_or_else(|| format!("ns-{}", self.name).chars().take(15).collect())
    }

    /// The ordered conflist this spec describes, the built-in catalog
    /// ordering its plugins.
    pub fn to_conflist(&self) -> Result<NetConfList, CniError> {
        self.to_conflist_with(&Catalog::builtin())
    }

    /// The ordered conflist this spec describes: the interface plugin, the
    /// services and portmap, sorted by `catalog`'s descriptors so every
    /// plugin's requirements are met earlier in the chain (declaration order
    /// where nothing else decides). Code 7 for an unmet requirement or a cycle.
    pub fn to_conflist_with(&self, catalog: &Catalog) -> Result<NetConfList, CniError> {
        self.compose(catalog).map(|(list, _)| list)
    }

    /// The conflist and, one line per plugin, why it stands where it does.
    pub fn compose(&self, catalog: &Catalog) -> Result<(NetConfList, Vec<String>), CniError> {
        let ranges: Vec<Value> = self
            .subnets
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut r = json!({"subnet": s.network().to_string()});
                if let (0, Some(gw)) = (i, self.gateway) {
                    r["gateway"] = json!(gw.to_string());
                }
                json!([r])
            })
            .collect();
        let mut routes = Vec::new();
        if self.subnets.iter().any(|s| s.is_ipv4()) {
            routes.push(json!({"dst": "0.0.0.0/0"}));
        }
        if self.subnets.iter().any(|s| !s.is_ipv4()) {
            routes.push(json!({"dst": "::/0"}));
        }
        let ipam = json!({"type": "host-local", "ranges": ranges, "routes": routes});
        let mut iface = match self.interface {
            InterfaceKind::Bridge => json!({"type": "bridge", "bridge": self.bridge_name(), "isGateway": true,
                                            "ipMasq": self.ip_masq, "hairpinMode": true, "ipam": ipam}),
            InterfaceKind::Ptp => json!({"type": "ptp", "ipMasq": self.ip_masq, "ipam": ipam}),
        };
        if let Some(mtu) = self.mtu {
            iface["mtu"] = json!(mtu);
        }
        let mut plugins = vec![iface];
        plugins.extend(self.services.iter().cloned().map(Value::Object));
        if self.port_mappings {
            plugins.push(json!({"type": "portmap", "capabilities": {"portMappings": true}}));
        }
        let plugins: Vec<Map<String, Value>> = plugins.into_iter().filter_map(|p| p.as_object().cloned()).collect();
        let descriptors: Vec<_> = plugins
            .iter()
            .map(|p| catalog.get(p.get("type").and_then(Value::as_str).unwrap_or_default()))
            .collect();
        let ordered = order(&descriptors)?;
        let explained = explain(&descriptors, &ordered);
        let list = NetConfList {
            cni_version: self.cni_version.clone(),
            cni_versions: None,
            name: self.name.clone(),
            disable_check: false,
            disable_gc: false,
            load_only_inlined_plugins: false,
            plugins: ordered.order.iter().map(|&i| plugins[i].clone()).collect(),
            extra: Map::new(),
        };
        Ok((list, explained))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_spec_becomes_bridge_conflist() {
        let spec = Spec::parse("name: web\nsubnets: [10.89.0.0/24]\ngateway: 10.89.0.1\n").unwrap();
        let list = spec.to_conflist().unwrap();
        let v = serde_json::to_value(&list).unwrap();
        assert_eq!(v["plugins"][0]["type"], "bridge");
        assert_eq!(v["plugins"][0]["bridge"], "ns-web");
        assert_eq!(v["plugins"][0]["ipam"]["ranges"][0][0]["gateway"], "10.89.0.1");
        list.validate().unwrap();
    }

    #[test]
    fn services_are_ordered_after_what_they_need() {
        let spec = Spec::parse(
            "name: web\nsubnets: [10.89.0.0/24]\nportMappings: true\n\
             services:\n  - {type: netsvc-qos, egressRate: 10mbit}\n  - {type: netsvc-firewall}\n",
        )
        .unwrap();
        let v = serde_json::to_value(spec.to_conflist().unwrap()).unwrap();
        let types: Vec<&str> = v["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["bridge", "netsvc-qos", "netsvc-firewall", "portmap"]);
        // On ptp too; qos needs the host veth ptp leaves.
        let spec = Spec::parse(
            "name: p\ninterface: ptp\nsubnets: [10.89.0.0/24]\nservices: [{type: netsvc-qos, egressRate: 1mbit}]\n",
        )
        .unwrap();
        assert!(spec.to_conflist().is_ok());
    }

    #[test]
    fn errors_name_the_field() {
        let e = Spec::parse("name: web\nsubnets: [10.89.0.0/24]\ngateway: 10.90.0.1\n").unwrap_err();
        assert!(e.msg.contains("gateway"), "{}", e.msg);
        let e = Spec::parse("name: web\nsubnet: [10.89.0.0/24]\n").unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("subnet"), "{}", e.msg);
        let e = Spec::parse("name: web\nsubnets: [10.89.0.0/33]\n").unwrap_err();
        assert!(e.msg.contains("subnets"), "{}", e.msg);
    }
}
