//! The DNS plugin's configuration: what a user writes in the conflist.
//! Every error is code 7 and names the field with its value.

use std::net::{IpAddr, SocketAddr};

use netsvc_core::cni::config::decode_at;
use netsvc_core::cni::{CniError, CniResult, NetConf};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The domain when none is configured; names of every network live under it,
/// each client seeing only its own networks' names.
pub const DEFAULT_DOMAIN: &str = "netsvc.internal";
pub const DEFAULT_PORT: u32 = 53;
/// Short, as aardvark-dns: containers come and go.
pub const DEFAULT_TTL: u32 = 5;
const MAX_TTL: u32 = 86400;

/// The plugin's own top-level keys; every other key passes through.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DnsConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// `gateway` (the network's gateway from prevResult) or an IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// `ip` or `ip:port` (`[v6]:port`); absent: the node's /etc/resolv.conf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstreams: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
}

/// What a network's resolver serves, resolved from the config and the call:
/// the store record the daemon reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Served {
    pub domain: String,
    pub listen: SocketAddr,
    pub upstreams: Vec<SocketAddr>,
    pub ttl: u32,
}

impl DnsConf {
    pub fn from_netconf(conf: &NetConf) -> Result<DnsConf, CniError> {
        DnsConf::from_value(&conf.service_value())
    }

    pub fn from_value(raw: &Value) -> Result<DnsConf, CniError> {
        let conf: DnsConf = decode_at(raw, "")?;
        conf.validate()?;
        Ok(conf)
    }

    fn validate(&self) -> Result<(), CniError> {
        if let Some(d) = &self.domain {
            validate_domain(d).map_err(|why| CniError::invalid_config("domain", format!("{d:?}: {why}")))?;
        }
        if let Some(l) = &self.listen
            && l != "gateway"
        {
            let ip: IpAddr = l.parse().map_err(|_| {
                CniError::invalid_config("listen", format!("{l:?} is not \"gateway\" or an IP address"))
            })?;
            if ip.is_unspecified() || ip.is_multicast() {
                return Err(CniError::invalid_config(
                    "listen",
                    format!("{ip} cannot be listened on"),
                ));
            }
        }
        if let Some(p) = self.port
            && !(1..=65535).contains(&p)
        {
            return Err(CniError::invalid_config("port", format!("{p} is not a port (1-65535)")));
        }
        for (i, u) in self.upstreams.iter().flatten().enumerate() {
            parse_upstream(u)
                .map_err(|why| CniError::invalid_config(&format!("upstreams[{i}]"), format!("{u:?}: {why}")))?;
        }
        if let Some(t) = self.ttl
            && t > MAX_TTL
        {
            return Err(CniError::invalid_config(
                "ttl",
                format!("{t} is more than {MAX_TTL} seconds"),
            ));
        }
        Ok(())
    }

    /// Resolves `listen: gateway` against the interface plugin's result and
    /// the default upstreams against the node's resolv.conf.
    pub fn serve(&self, prev: &CniResult, resolv_conf: &str) -> Result<Served, CniError> {
        let port = self.port.unwrap_or(DEFAULT_PORT) as u16;
        let listen_ip = match self.listen.as_deref() {
            None | Some("gateway") => {
                let gateways = prev.ips.iter().filter_map(|ip| ip.gateway);
                let mut all: Vec<IpAddr> = gateways.collect();
                all.sort_by_key(|g| !g.is_ipv4());
                all.into_iter().next().ok_or_else(|| {
                    CniError::invalid_config(
                        "listen",
                        "\"gateway\": the interface plugin's result has no gateway (set listen to an IP)",
                    )
                })?
            }
            Some(ip) => ip.parse().expect("validated"),
        };
        let listen = SocketAddr::new(listen_ip, port);
        let upstreams = match &self.upstreams {
            Some(list) => list.iter().map(|u| parse_upstream(u).expect("validated")).collect(),
            None => nameservers(resolv_conf).into_iter().filter(|u| *u != listen).collect(),
        };
        Ok(Served {
            domain: self
                .domain
                .clone()
                .unwrap_or_else(|| DEFAULT_DOMAIN.into())
                .to_ascii_lowercase(),
            listen,
            upstreams,
            ttl: self.ttl.unwrap_or(DEFAULT_TTL),
        })
    }
}

/// `ip`, `ip:port` or `[ip6]:port`.
pub fn parse_upstream(s: &str) -> Result<SocketAddr, &'static str> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    let addr: SocketAddr = s.parse().map_err(|_| "not an IP address or IP:port")?;
    if addr.port() == 0 {
        return Err("port 0");
    }
    Ok(addr)
}

/// The `nameserver` lines of a resolv.conf.
pub fn nameservers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// A DNS domain: dot-separated labels of letters, digits and `-` (not at
/// either end), each 1-63 bytes, 253 in all.
pub fn validate_domain(d: &str) -> Result<(), &'static str> {
    let d = d.strip_suffix('.').unwrap_or(d);
    if d.is_empty() || d.len() > 253 {
        return Err("must be 1 to 253 characters");
    }
    for label in d.split('.') {
        let b = label.as_bytes();
        if b.is_empty() || b.len() > 63 {
            return Err("every label must be 1 to 63 characters");
        }
        if !b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-') {
            return Err("only letters, digits and '-' are allowed");
        }
        if b[0] == b'-' || b[b.len() - 1] == b'-' {
            return Err("a label cannot start or end with '-'");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(extra: Value) -> Result<DnsConf, CniError> {
        let mut v = json!({"cniVersion": "1.0.0", "name": "n", "type": "netsvc-dns"});
        v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        DnsConf::from_value(&v)
    }

    #[test]
    fn the_issue_example_and_defaults() {
        let c = parse(json!({"domain": "web.internal", "listen": "gateway", "port": 53,
                             "upstreams": ["192.0.2.53", "[2001:db8::53]:5353"], "ttl": 5}))
        .unwrap();
        let prev: CniResult = serde_json::from_value(json!({"cniVersion": "1.0.0",
            "ips": [{"address": "fd00::5/64", "gateway": "fd00::1"}, {"address": "10.0.0.5/24", "gateway": "10.0.0.1"}]}))
        .unwrap();
        let s = c.serve(&prev, "").unwrap();
        assert_eq!(s.listen, "10.0.0.1:53".parse().unwrap());
        assert_eq!(s.upstreams[1], "[2001:db8::53]:5353".parse().unwrap());
        // Defaults; never its own listen address as an upstream.
        let d = parse(json!({}))
            .unwrap()
            .serve(&prev, "# x\nnameserver 10.0.0.1\nnameserver 192.0.2.1\n")
            .unwrap();
        assert_eq!((d.domain.as_str(), d.ttl), (DEFAULT_DOMAIN, DEFAULT_TTL));
        assert_eq!(d.upstreams, vec!["192.0.2.1:53".parse().unwrap()]);
    }

    #[test]
    fn bad_fields_are_code_7_naming_them() {
        for (extra, field) in [
            (json!({"domain": "bad_domain"}), "domain"),
            (json!({"domain": "-x.internal"}), "domain"),
            (json!({"port": 0}), "port"),
            (json!({"port": 70000}), "port"),
            (json!({"listen": "gateway2"}), "listen"),
            (json!({"listen": "0.0.0.0"}), "listen"),
            (json!({"upstreams": ["192.0.2.999"]}), "upstreams[0]"),
            (json!({"ttl": 100000}), "ttl"),
        ] {
            let e = parse(extra.clone()).unwrap_err();
            assert_eq!(e.code, 7, "{extra}");
            assert!(e.msg.contains(field), "{extra}: {}", e.msg);
        }
    }
}
