//! CNI results of every spec version. One canonical shape (1.1.0's) is kept in
//! memory; reading and writing convert to and from a version as libcni does:
//! before 1.0.0 `ips[].version` is written ("4"/"6"), before 1.1.0 the
//! interface `mtu/socketPath/pciID` and route `mtu/advmss/priority/table/scope`
//! are dropped.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{CniError, Result};
use super::version::Version;
use crate::inet::IpNet;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_path: Option<String>,
    #[serde(default, rename = "pciID", skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Only in results before 1.0.0: "4" or "6". Derived from the address on output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u32>,
}

impl Route {
    /// A route to `dst` on the interface's link (no gateway, no extras).
    pub fn on_link(dst: IpNet) -> Route {
        Route {
            dst,
            gw: None,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self == &Dns::default()
    }
}

/// A result in canonical (1.1.0) form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

impl CniResult {
    /// Reads a result written in `version` (the config's `cniVersion`).
    pub fn from_value(v: &Value, version: &str) -> Result<CniResult> {
        let ver = Version::parse(version)?;
        if ver < Version::V0_3_0 {
            return Err(CniError::incompatible_version(format!(
                "results of cniVersion {version} are not supported"
            )));
        }
        let mut r: CniResult =
            serde_json::from_value(v.clone()).map_err(|e| CniError::decode(format!("failed to decode result: {e}")))?;
        for ip in &mut r.ips {
            ip.version = None;
        }
        for (i, ip) in r.ips.iter().enumerate() {
            if let Some(idx) = ip.interface
                && idx >= r.interfaces.len()
            {
                return Err(CniError::decode(format!(
                    "result ips[{i}].interface {idx} points past interfaces (len {})",
                    r.interfaces.len()
                )));
            }
        }
        Ok(r)
    }

    /// Writes this result for `version`, with `cniVersion` first.
    pub fn to_value(&self, version: &str) -> Result<Value> {
        let ver = Version::parse(version)?;
        let r = self.restricted_to(ver);
        let mut out = serde_json::Map::new();
        out.insert("cniVersion".into(), Value::String(version.to_string()));
        if let Value::Object(body) = serde_json::to_value(&r).map_err(|e| CniError::io(e.to_string()))? {
            out.extend(body);
        }
        Ok(Value::Object(out))
    }

    /// The part of this result that `ver` can express, with `ips[].version` set
    /// as that version writes it.
    pub fn restricted_to(&self, ver: Version) -> CniResult {
        let mut r = self.clone();
        if ver < Version::V1_1_0 {
            for i in &mut r.interfaces {
                i.mtu = None;
                i.socket_path = None;
                i.pci_id = None;
            }
            for rt in &mut r.routes {
                rt.mtu = None;
                rt.advmss = None;
                rt.priority = None;
                rt.table = None;
                rt.scope = None;
            }
        }
        for ip in &mut r.ips {
            ip.version = (!ver.is_1x()).then(|| if ip.address.is_ipv4() { "4" } else { "6" }.to_string());
        }
        r
    }

    /// Converts a result document from one version to another, as libcni does.
    pub fn convert(v: &Value, from: &str, to: &str) -> Result<Value> {
        CniResult::from_value(v, from)?.to_value(to)
    }

    /// Index of the interface named `name` that lives in a sandbox (the container side).
    pub fn container_interface(&self, name: &str) -> Option<usize> {
        self.interfaces
            .iter()
            .position(|i| i.name == name && i.sandbox.is_some())
    }

    /// The addresses assigned to interface index `idx` (or unbound addresses).
    pub fn ips_of(&self, idx: usize) -> impl Iterator<Item = &IpConfig> {
        self.ips.iter().filter(move |ip| ip.interface.is_none_or(|i| i == idx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({
            "cniVersion": "1.1.0",
            "interfaces": [
                {"name": "cni0", "mac": "aa:bb:cc:dd:ee:01"},
                {"name": "eth0", "mac": "aa:bb:cc:dd:ee:02", "sandbox": "/var/run/netns/x", "mtu": 1500}
            ],
            "ips": [{"address": "10.88.0.5/16", "gateway": "10.88.0.1", "interface": 1},
                    {"address": "fd00::5/64", "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.88.0.1", "priority": 10}],
            "dns": {"nameservers": ["10.88.0.1"], "search": ["web.internal"]}
        })
    }

    #[test]
    fn to_04_adds_ip_versions_and_drops_11_fields() {
        let out = CniResult::convert(&sample(), "1.1.0", "0.4.0").unwrap();
        assert_eq!(out["cniVersion"], "0.4.0");
        assert_eq!(out["ips"][0]["version"], "4");
        assert_eq!(out["ips"][1]["version"], "6");
        assert!(out["interfaces"][1].get("mtu").is_none());
        assert!(out["routes"][0].get("priority").is_none());
    }

    #[test]
    fn from_04_drops_ip_versions() {
        let old = CniResult::convert(&sample(), "1.1.0", "0.3.1").unwrap();
        let back = CniResult::convert(&old, "0.3.1", "1.0.0").unwrap();
        assert!(back["ips"][0].get("version").is_none());
        assert_eq!(back["ips"][0]["address"], "10.88.0.5/16");
    }

    #[test]
    fn bad_interface_index_is_decode_error() {
        let v = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24", "interface": 3}]});
        assert_eq!(CniResult::from_value(&v, "1.0.0").unwrap_err().code, 6);
    }
}
