//! Reading a namespace's state with the standard tools' JSON output.
//!
//! Observation only: tests prove behaviour with traffic, and use these to
//! explain a failure or check what a plugin left behind.

use std::net::IpAddr;

use anyhow::{Context, Result};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::netns::Netns;

/// One entry of `ip -j -d addr show`.
#[derive(Debug, Clone, Deserialize)]
pub struct LinkInfo {
    pub ifname: String,
    pub ifindex: u32,
    #[serde(default)]
    pub flags: Vec<String>,
    #[serde(default)]
    pub mtu: u32,
    #[serde(default)]
    pub operstate: String,
    /// The MAC address, when the link has one.
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub master: Option<String>,
    #[serde(default)]
    pub addr_info: Vec<AddrInfo>,
    /// `linkinfo.info_kind` and friends (`-d`); absent for lo.
    #[serde(default)]
    pub linkinfo: Option<Value>,
    /// Every other field `ip` printed.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One address of a [`LinkInfo`].
#[derive(Debug, Clone, Deserialize)]
pub struct AddrInfo {
    /// `inet` or `inet6`.
    pub family: String,
    pub local: IpAddr,
    pub prefixlen: u8,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl LinkInfo {
    /// Administratively up (`UP` flag).
    pub fn is_up(&self) -> bool {
        self.flags.iter().any(|f| f == "UP")
    }

    /// The link kind (`veth`, `bridge`, `wireguard`, …), if any.
    pub fn kind(&self) -> Option<&str> {
        self.linkinfo.as_ref()?.get("info_kind")?.as_str()
    }

    /// A number of the kind's settings (`linkinfo.info_data`), e.g. a bridge's `nf_call_iptables`.
    pub fn info_data(&self, key: &str) -> Option<u64> {
        self.linkinfo.as_ref()?.get("info_data")?.get(key)?.as_u64()
    }

    /// The link's addresses.
    pub fn ips(&self) -> Vec<IpAddr> {
        self.addr_info.iter().map(|a| a.local).collect()
    }
}

impl Netns {
    /// `ip -j <args…>` parsed; empty output parses as `[]`.
    pub fn ip_json(&self, args: &[&str]) -> Result<Value> {
        let out = self.ip(["-j"].iter().chain(args))?;
        parse_json(&out).with_context(|| format!("ip -j {args:?}"))
    }

    /// Every link with its addresses and details (`ip -j -d addr show`).
    pub fn links(&self) -> Result<Vec<LinkInfo>> {
        let v = self.ip_json(&["-d", "addr", "show"])?;
        serde_json::from_value(v).context("parse ip -j -d addr show")
    }

    /// One link by name.
    pub fn link(&self, ifname: &str) -> Result<LinkInfo> {
        self.links()?
            .into_iter()
            .find(|l| l.ifname == ifname)
            .with_context(|| format!("[{}] no link {ifname}", self.name()))
    }

    /// `nft -j list ruleset` parsed: `{"nftables": [...]}`.
    pub fn nft_ruleset(&self) -> Result<Value> {
        let out = self.exec("nft", ["-j", "list", "ruleset"])?;
        parse_json(&out).context("nft -j list ruleset")
    }

    /// `(family, name)` of every nftables table in this namespace.
    pub fn nft_tables(&self) -> Result<Vec<(String, String)>> {
        let v = self.nft_ruleset()?;
        let items = v["nftables"].as_array().cloned().unwrap_or_default();
        Ok(items
            .iter()
            .filter_map(|i| {
                let t = i.get("table")?;
                Some((t["family"].as_str()?.to_owned(), t["name"].as_str()?.to_owned()))
            })
            .collect())
    }

    /// `tc -j <args…>` parsed, e.g. `["qdisc", "show", "dev", "eth0"]`.
    pub fn tc_json(&self, args: &[&str]) -> Result<Value> {
        let out = self.exec("tc", ["-j"].iter().chain(args))?;
        parse_json(&out).with_context(|| format!("tc -j {args:?}"))
    }
}

fn parse_json(text: &str) -> Result<Value> {
    if text.trim().is_empty() {
        return Ok(Value::Array(Vec::new()));
    }
    Ok(serde_json::from_str(text)?)
}
