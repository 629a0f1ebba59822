//! The VPN configuration: what a user writes in the conflist, checked whole
//! before anything is touched. Every error is code 7 and names the field.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use netsvc_core::cni::config::decode_at;
use netsvc_core::cni::{CniError, IpNet, NetConf, Result};
use netsvc_core::graph::validate_name;
use serde::{Deserialize, Serialize};

use crate::keys::PublicKey;

/// The MTU a tunnel gets unless configured: a 1500-byte underlay less
/// WireGuard's overhead over IPv6 (80 bytes), as wg-quick does.
pub const DEFAULT_MTU: u32 = 1420;
/// WireGuard's encapsulation overhead at worst (IPv6 underlay).
pub const OVERHEAD: u32 = 80;
/// The mesh's UDP port unless configured.
pub const DEFAULT_MESH_PORT: u16 = 51871;
/// The mesh keeps NAT and firewall state open this often (seconds).
pub const DEFAULT_KEEPALIVE: u16 = 25;
const MTU_RANGE: std::ops::RangeInclusive<u32> = 1280..=9000;

/// The plugin's own top-level keys, as written; every other key passes through.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    /// `tunnel` (a per-container VPN, the default) or `mesh` (node-to-node encryption).
    mode: Option<String>,
    /// `auto` (the kernel's WireGuard where it exists, else wireguard-go), `kernel` or `userspace`.
    backend: Option<String>,
    /// tunnel: the container's address on the tunnel, with its prefix (`10.200.0.2/32`).
    address: Option<String>,
    /// tunnel: prefixes reached through the tunnel; default: a default route replacing the chain's.
    routes: Option<Vec<String>>,
    /// The device's MTU, 1280 to 9000; default 1420 (tunnel) or the underlay's less 80 (mesh).
    mtu: Option<u32>,
    /// tunnel: the remote peers, at least one.
    #[serde(default)]
    peers: Vec<RawPeer>,
    /// tunnel: absolute path of a 0600 private key file; default: a key made per attachment.
    private_key_file: Option<String>,
    /// The UDP port on the node; tunnel default: any free port, mesh default: 51871.
    listen_port: Option<u32>,
    /// tunnel: the device's name in the container; default `wg0` when chained, else CNI_IFNAME.
    interface: Option<String>,
    /// mesh: this node's underlay IP address, where the other nodes send to.
    endpoint: Option<String>,
    /// mesh: the containers' subnet on this node, routed here by every other node.
    pod_subnet: Option<String>,
    /// mesh: this node's name; default NETSVC_NODE_NAME, else the host name.
    node: Option<String>,
    /// mesh: seconds between keepalives to every other node (0: off); default 25.
    persistent_keepalive: Option<u32>,
}

/// A remote peer of a tunnel.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawPeer {
    /// The peer's public key, base64 as `wg pubkey` prints it.
    public_key: String,
    /// `IP:port` (`[v6]:port`); default: none, the peer reaches us first.
    endpoint: Option<String>,
    /// What the peer may send from and is sent to; not empty.
    #[serde(rename = "allowedIPs")]
    allowed_ips: Vec<String>,
    /// Seconds between keepalives, 0 (off) to 65535.
    persistent_keepalive: Option<u32>,
}

/// The JSON Schema of the plugin's own keys (both modes), as users write them.
pub fn json_schema() -> schemars::Schema {
    schemars::schema_for!(RawConf)
}

/// Which WireGuard implementation drives the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// The kernel's where it has WireGuard, else wireguard-go.
    #[default]
    Auto,
    Kernel,
    Userspace,
}

/// A checked configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VpnConf {
    Tunnel(TunnelConf),
    Mesh(MeshConf),
}

/// A per-container VPN: the device lives in the container, its UDP socket on
/// the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TunnelConf {
    pub backend: BackendChoice,
    /// The container's address on the tunnel.
    pub address: IpNet,
    /// What the container reaches through the tunnel; `None`: everything (the
    /// tunnel takes the default route).
    pub routes: Option<Vec<IpNet>>,
    pub mtu: u32,
    pub peers: Vec<PeerConf>,
    /// Where the private key is read from; `None`: one is made per attachment.
    pub private_key_file: Option<PathBuf>,
    /// The node-side UDP port; `None`: any free port.
    pub listen_port: Option<u16>,
    /// The device's name in the container; `None`: `wg0` when chained after
    /// an interface plugin, the runtime's CNI_IFNAME when alone.
    pub interface: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerConf {
    pub public_key: PublicKey,
    pub endpoint: Option<SocketAddr>,
    pub allowed_ips: Vec<IpNet>,
    /// Seconds; 0 or `None`: off.
    pub persistent_keepalive: Option<u16>,
}

/// Node-to-node encryption: one device per node and network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshConf {
    pub backend: BackendChoice,
    pub listen_port: u16,
    /// This node's underlay address, where the other nodes send to.
    pub endpoint: IpAddr,
    /// The containers' subnet on this node: routed here by every other node.
    pub pod_subnet: IpNet,
    /// `None`: the underlay's MTU less [`OVERHEAD`].
    pub mtu: Option<u32>,
    /// `None`: `NETSVC_NODE_NAME`, else the host name.
    pub node: Option<String>,
    pub persistent_keepalive: u16,
}

impl VpnConf {
    pub fn from_netconf(conf: &NetConf) -> Result<VpnConf> {
        VpnConf::from_value(&conf.service_value())
    }

    /// From the plugin's object in a conflist (other keys pass through).
    pub fn from_value(v: &serde_json::Value) -> Result<VpnConf> {
        let raw: RawConf = decode_at(v, "")?;
        let backend = match raw.backend.as_deref() {
            None | Some("auto") => BackendChoice::Auto,
            Some("kernel") => BackendChoice::Kernel,
            Some("userspace") => BackendChoice::Userspace,
            Some(other) => return Err(invalid("backend", other, "must be auto, kernel or userspace")),
        };
        match raw.mode.as_deref() {
            None | Some("tunnel") => tunnel(raw, backend).map(VpnConf::Tunnel),
            Some("mesh") => mesh(raw, backend).map(VpnConf::Mesh),
            Some(other) => Err(invalid("mode", other, "must be tunnel or mesh")),
        }
    }

    pub fn backend(&self) -> BackendChoice {
        match self {
            VpnConf::Tunnel(t) => t.backend,
            VpnConf::Mesh(m) => m.backend,
        }
    }
}

fn invalid(field: &str, value: impl std::fmt::Display, why: &str) -> CniError {
    CniError::invalid_config(field, format!("{value:?}: {why}", value = value.to_string()))
}

/// Keys of one mode that make no sense in the other are refused, so a user
/// who mixed the two modes learns it.
fn refuse_keys(mode: &str, keys: &[(&str, bool)]) -> Result<()> {
    match keys.iter().find(|(_, set)| *set) {
        Some((key, _)) => Err(CniError::invalid_config(key, format!("is not a key of mode {mode:?}"))),
        None => Ok(()),
    }
}

fn tunnel(raw: RawConf, backend: BackendChoice) -> Result<TunnelConf> {
    refuse_keys(
        "tunnel",
        &[
            ("podSubnet", raw.pod_subnet.is_some()),
            ("endpoint", raw.endpoint.is_some()),
            ("node", raw.node.is_some()),
            ("persistentKeepalive", raw.persistent_keepalive.is_some()),
        ],
    )?;
    let address = raw.address.as_deref().ok_or_else(|| {
        CniError::invalid_config("address", "is required in mode \"tunnel\" (e.g. \"10.200.0.2/32\")")
    })?;
    let address = prefix("address", address)?;
    let routes = match raw.routes {
        None => None,
        Some(list) => Some(
            list.iter()
                .enumerate()
                .map(|(i, r)| prefix(&format!("routes[{i}]"), r).map(|p| p.network()))
                .collect::<Result<Vec<_>>>()?,
        ),
    };
    if raw.peers.is_empty() {
        return Err(CniError::invalid_config("peers", "a tunnel needs at least one peer"));
    }
    let peers = raw
        .peers
        .iter()
        .enumerate()
        .map(|(i, p)| peer(i, p))
        .collect::<Result<Vec<_>>>()?;
    if let Some(i) = (1..peers.len()).find(|&i| peers[..i].iter().any(|p| p.public_key == peers[i].public_key)) {
        return Err(CniError::invalid_config(
            &format!("peers[{i}].publicKey"),
            "names a peer already listed",
        ));
    }
    let interface = raw.interface.map(|name| interface_name(&name)).transpose()?;
    let private_key_file = raw
        .private_key_file
        .map(|f| key_file("privateKeyFile", f))
        .transpose()?;
    Ok(TunnelConf {
        backend,
        address,
        routes,
        mtu: mtu(raw.mtu)?.unwrap_or(DEFAULT_MTU),
        peers,
        private_key_file,
        listen_port: raw.listen_port.map(|p| port("listenPort", p)).transpose()?,
        interface,
    })
}

fn mesh(raw: RawConf, backend: BackendChoice) -> Result<MeshConf> {
    refuse_keys(
        "mesh",
        &[
            ("address", raw.address.is_some()),
            ("routes", raw.routes.is_some()),
            ("peers", !raw.peers.is_empty()),
            ("privateKeyFile", raw.private_key_file.is_some()),
            ("interface", raw.interface.is_some()),
        ],
    )?;
    let endpoint = raw.endpoint.as_deref().ok_or_else(|| {
        CniError::invalid_config("endpoint", "is required in mode \"mesh\": this node's underlay address")
    })?;
    let endpoint: IpAddr = endpoint
        .parse()
        .map_err(|_| invalid("endpoint", endpoint, "must be this node's underlay IP address"))?;
    let subnet = raw
        .pod_subnet
        .as_deref()
        .ok_or_else(|| CniError::invalid_config("podSubnet", "is required in mode \"mesh\" (e.g. \"10.89.1.0/24\")"))?;
    let pod_subnet = prefix("podSubnet", subnet)?;
    if pod_subnet != pod_subnet.network() {
        return Err(invalid("podSubnet", subnet, "has host bits set; write the subnet"));
    }
    let node = raw.node.map(|n| node_name("node", &n)).transpose()?;
    Ok(MeshConf {
        backend,
        listen_port: raw
            .listen_port
            .map(|p| port("listenPort", p))
            .transpose()?
            .unwrap_or(DEFAULT_MESH_PORT),
        endpoint,
        pod_subnet,
        mtu: mtu(raw.mtu)?,
        node,
        persistent_keepalive: raw
            .persistent_keepalive
            .map(|k| keepalive("persistentKeepalive", k))
            .transpose()?
            .unwrap_or(DEFAULT_KEEPALIVE),
    })
}

fn peer(i: usize, p: &RawPeer) -> Result<PeerConf> {
    let field = |name: &str| format!("peers[{i}].{name}");
    let public_key = p
        .public_key
        .parse::<PublicKey>()
        .map_err(|why| invalid(&field("publicKey"), &p.public_key, &why))?;
    let endpoint = p
        .endpoint
        .as_deref()
        .map(|e| {
            e.parse::<SocketAddr>()
                .map_err(|_| {
                    invalid(
                        &field("endpoint"),
                        e,
                        "must be IP:port (\"192.0.2.1:51820\", \"[2001:db8::1]:51820\")",
                    )
                })
                .and_then(|a| match a.port() {
                    0 => Err(invalid(&field("endpoint"), e, "port 0 cannot be sent to")),
                    _ => Ok(a),
                })
        })
        .transpose()?;
    if p.allowed_ips.is_empty() {
        return Err(CniError::invalid_config(
            &field("allowedIPs"),
            "is empty: the peer would be sent nothing and accepted from nowhere",
        ));
    }
    let allowed_ips = p
        .allowed_ips
        .iter()
        .enumerate()
        .map(|(j, a)| prefix(&format!("peers[{i}].allowedIPs[{j}]"), a).map(|n| n.network()))
        .collect::<Result<Vec<_>>>()?;
    Ok(PeerConf {
        public_key,
        endpoint,
        allowed_ips,
        persistent_keepalive: p
            .persistent_keepalive
            .map(|k| keepalive(&field("persistentKeepalive"), k))
            .transpose()?
            .filter(|&k| k != 0),
    })
}

/// `addr/len`; a bare address is refused so nobody gets a /32 by accident.
fn prefix(field: &str, s: &str) -> Result<IpNet> {
    if !s.contains('/') {
        return Err(invalid(field, s, "needs a prefix length (\"10.200.0.2/32\")"));
    }
    s.parse::<IpNet>().map_err(|why| invalid(field, s, &why.to_string()))
}

fn mtu(m: Option<u32>) -> Result<Option<u32>> {
    match m {
        Some(m) if !MTU_RANGE.contains(&m) => Err(invalid(
            "mtu",
            m,
            &format!("must be {} to {}", MTU_RANGE.start(), MTU_RANGE.end()),
        )),
        m => Ok(m),
    }
}

fn port(field: &str, p: u32) -> Result<u16> {
    match u16::try_from(p) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(invalid(field, p, "must be a UDP port, 1 to 65535")),
    }
}

fn keepalive(field: &str, k: u32) -> Result<u16> {
    u16::try_from(k).map_err(|_| invalid(field, k, "must be 0 (off) to 65535 seconds"))
}

fn interface_name(name: &str) -> Result<String> {
    netsvc_core::netlink::validate_ifname("interface", name)?;
    Ok(name.to_string())
}

/// A node's name: it keys the node's entry in the store and its key file.
pub fn node_name(field: &str, name: &str) -> Result<String> {
    validate_name(field, name)?;
    Ok(name.to_string())
}

/// A private key file is named by an absolute path (the plugin's working
/// folder is the runtime's); it is read, and its mode checked, at ADD.
fn key_file(field: &str, path: String) -> Result<PathBuf> {
    if !path.starts_with('/') {
        return Err(invalid(field, &path, "must be an absolute path"));
    }
    Ok(PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEY: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";

    fn conf(extra: serde_json::Value) -> Result<VpnConf> {
        let mut v = json!({"cniVersion": "1.0.0", "name": "n", "type": "netsvc-vpn"});
        v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        VpnConf::from_netconf(&NetConf::from_owned(v).unwrap())
    }

    fn tunnel_with(key: &str, value: serde_json::Value) -> serde_json::Value {
        let mut v = json!({"mode": "tunnel", "address": "10.200.0.2/32",
            "peers": [{"publicKey": KEY, "endpoint": "192.0.2.1:51820", "allowedIPs": ["10.50.0.0/16"]}]});
        if let Some((list, rest)) = key.split_once('.') {
            v[list][0][rest] = value;
        } else {
            v[key] = value;
        }
        v
    }

    fn field_of(e: CniError) -> String {
        assert_eq!(e.code, 7, "{e:?}");
        let rest = e.msg.strip_prefix("invalid config field ").unwrap_or(&e.msg);
        rest.split(':').next().unwrap().to_string()
    }

    #[test]
    fn the_issues_tunnel_example_parses() {
        let c = conf(json!({"mode": "tunnel", "backend": "auto", "address": "10.200.0.2/32",
            "routes": ["10.50.0.0/16"], "mtu": 1420,
            "peers": [{"publicKey": KEY, "endpoint": "192.0.2.1:51820",
                       "allowedIPs": ["10.50.0.0/16"], "persistentKeepalive": 25}]}))
        .unwrap();
        let VpnConf::Tunnel(t) = c else { panic!() };
        assert_eq!(t.address.to_string(), "10.200.0.2/32");
        assert_eq!(t.routes.unwrap()[0].to_string(), "10.50.0.0/16");
        assert_eq!(t.peers[0].persistent_keepalive, Some(25));
        assert_eq!(t.peers[0].endpoint.unwrap().to_string(), "192.0.2.1:51820");
        assert_eq!(t.mtu, 1420);
    }

    #[test]
    fn the_issues_mesh_example_parses() {
        let c = conf(json!({"mode": "mesh", "listenPort": 51871, "endpoint": "192.0.2.10",
            "podSubnet": "10.89.1.0/24"}))
        .unwrap();
        let VpnConf::Mesh(m) = c else { panic!() };
        assert_eq!(m.listen_port, 51871);
        assert_eq!(m.pod_subnet.to_string(), "10.89.1.0/24");
        assert_eq!(m.mtu, None);
        assert_eq!(m.persistent_keepalive, DEFAULT_KEEPALIVE);
    }

    #[test]
    fn bad_input_is_code_7_naming_the_field() {
        let cases = [
            ("peers.publicKey", json!("not-a-key"), "peers[0].publicKey"),
            ("peers.publicKey", json!("AAAA"), "peers[0].publicKey"),
            ("peers.endpoint", json!("192.0.2.1"), "peers[0].endpoint"),
            ("peers.endpoint", json!("example.com:51820"), "peers[0].endpoint"),
            ("peers.endpoint", json!("192.0.2.1:0"), "peers[0].endpoint"),
            ("peers.allowedIPs", json!(["10.50.0.0/33"]), "peers[0].allowedIPs[0]"),
            ("peers.allowedIPs", json!(["banana"]), "peers[0].allowedIPs[0]"),
            ("peers.allowedIPs", json!([]), "peers[0].allowedIPs"),
            (
                "peers.persistentKeepalive",
                json!(70000),
                "peers[0].persistentKeepalive",
            ),
            ("peers.presharedKey", json!("x"), "peers[0]"),
            ("address", json!("10.200.0.2"), "address"),
            ("address", json!("10.200.0.300/32"), "address"),
            ("mtu", json!(100), "mtu"),
            ("mtu", json!(65536), "mtu"),
            ("listenPort", json!(0), "listenPort"),
            ("listenPort", json!(70000), "listenPort"),
            ("routes", json!(["10.50.0.0"]), "routes[0]"),
            ("interface", json!("a/b"), "interface"),
            ("backend", json!("fast"), "backend"),
            ("mode", json!("bridge"), "mode"),
            ("privateKeyFile", json!("relative/key"), "privateKeyFile"),
            ("podSubnet", json!("10.89.1.0/24"), "podSubnet"),
        ];
        for (key, value, field) in cases {
            let e = conf(tunnel_with(key, value.clone())).unwrap_err();
            assert!(field_of(e.clone()).starts_with(field), "{key}={value}: {e:?}");
        }
    }

    #[test]
    fn a_tunnel_needs_an_address_and_a_peer() {
        let e = conf(json!({"mode": "tunnel", "peers": []})).unwrap_err();
        assert_eq!(field_of(e), "address");
        let e = conf(json!({"mode": "tunnel", "address": "10.200.0.2/32"})).unwrap_err();
        assert_eq!(field_of(e), "peers");
    }

    #[test]
    fn a_peer_listed_twice_is_refused() {
        let p = json!({"publicKey": KEY, "allowedIPs": ["10.50.0.0/16"]});
        let e = conf(json!({"address": "10.200.0.2/32", "peers": [p.clone(), p]})).unwrap_err();
        assert_eq!(field_of(e), "peers[1].publicKey");
    }

    #[test]
    fn mesh_input_is_checked() {
        let base = json!({"mode": "mesh", "endpoint": "192.0.2.10", "podSubnet": "10.89.1.0/24"});
        let with = |k: &str, v: serde_json::Value| {
            let mut b = base.clone();
            b[k] = v;
            conf(b).unwrap_err()
        };
        assert_eq!(field_of(with("endpoint", json!("192.0.2.10:51871"))), "endpoint");
        assert_eq!(field_of(with("podSubnet", json!("10.89.1.5/24"))), "podSubnet");
        assert_eq!(field_of(with("node", json!("a b"))), "node");
        assert_eq!(
            field_of(with("peers", json!([{"publicKey": KEY, "allowedIPs": ["10.0.0.0/8"]}]))),
            "peers"
        );
        assert_eq!(field_of(with("mtu", json!(20))), "mtu");
        let e = conf(json!({"mode": "mesh", "podSubnet": "10.89.1.0/24"})).unwrap_err();
        assert_eq!(field_of(e), "endpoint");
    }
}
