//! What a WireGuard device is told, and the two ways of telling it: the
//! userspace API's text protocol (wireguard-go's UAPI socket) and the
//! kernel's generic-netlink update (through wireguard-control). Both are
//! built from one [`DeviceConfig`], purely, so each is unit-tested.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use netsvc_core::cni::IpNet;
use wireguard_control::{DeviceUpdate, PeerConfigBuilder};

use crate::config::PeerConf;
use crate::keys::{PrivateKey, PublicKey};

/// Where wireguard-go puts its UAPI sockets: one folder for every namespace.
pub const UAPI_DIR: &str = "/var/run/wireguard";
const UAPI_TIMEOUT: Duration = Duration::from_secs(3);

/// A device's whole configuration: what applying it leaves on the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    pub private_key: PrivateKey,
    pub listen_port: Option<u16>,
    pub peers: Vec<PeerConf>,
}

/// The UAPI socket of device `name`.
pub fn uapi_socket(name: &str) -> PathBuf {
    Path::new(UAPI_DIR).join(format!("{name}.sock"))
}

/// What applying a [`DeviceConfig`] changes on a device in state `current`.
/// Peers that stay as they are are not touched: replacing them would drop
/// their sessions, and traffic would wait for a new handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change<'a> {
    pub private_key: Option<&'a PrivateKey>,
    pub listen_port: Option<u16>,
    /// Every peer goes first (the device's state was unknown).
    pub replace_all: bool,
    pub remove: Vec<PublicKey>,
    pub upsert: Vec<&'a PeerConf>,
}

impl<'a> Change<'a> {
    /// The whole of `c`, replacing whatever the device holds.
    pub fn replace(c: &'a DeviceConfig) -> Self {
        Change {
            private_key: Some(&c.private_key),
            listen_port: c.listen_port,
            replace_all: true,
            remove: Vec::new(),
            upsert: c.peers.iter().collect(),
        }
    }

    /// Only what differs between `c` and `current`.
    pub fn between(c: &'a DeviceConfig, current: &DeviceState) -> Self {
        let same_peer = |want: &PeerConf, have: &PeerState| {
            let mut a = want.allowed_ips.clone();
            let mut b = have.allowed_ips.clone();
            a.sort_by_key(|n| n.to_string());
            b.sort_by_key(|n| n.to_string());
            a == b
                && want.endpoint.is_none_or(|e| have.endpoint == Some(e))
                && want.persistent_keepalive.unwrap_or(0) == have.persistent_keepalive
        };
        Change {
            private_key: (current.public_key.as_ref() != Some(&c.private_key.public())).then_some(&c.private_key),
            listen_port: c.listen_port.filter(|p| current.listen_port != Some(*p)),
            replace_all: false,
            remove: current
                .peers
                .iter()
                .filter(|have| !c.peers.iter().any(|want| want.public_key == have.public_key))
                .map(|have| have.public_key.clone())
                .collect(),
            upsert: c
                .peers
                .iter()
                .filter(|want| {
                    !current
                        .peers
                        .iter()
                        .any(|have| have.public_key == want.public_key && same_peer(want, have))
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.private_key.is_none()
            && self.listen_port.is_none()
            && !self.replace_all
            && self.remove.is_empty()
            && self.upsert.is_empty()
    }
}

/// The UAPI `set` request that makes `change`.
pub fn uapi_set(change: &Change<'_>) -> String {
    let mut s = String::from("set=1\n");
    if let Some(key) = change.private_key {
        let _ = writeln!(s, "private_key={}", hex(key.bytes()));
    }
    if let Some(port) = change.listen_port {
        let _ = writeln!(s, "listen_port={port}");
    }
    if change.replace_all {
        s.push_str("replace_peers=true\n");
    }
    for gone in &change.remove {
        let _ = writeln!(s, "public_key={}\nremove=true", hex(gone.bytes()));
    }
    for p in &change.upsert {
        let _ = writeln!(s, "public_key={}", hex(p.public_key.bytes()));
        if let Some(e) = p.endpoint {
            let _ = writeln!(s, "endpoint={e}");
        }
        let _ = writeln!(
            s,
            "persistent_keepalive_interval={}",
            p.persistent_keepalive.unwrap_or(0)
        );
        s.push_str("replace_allowed_ips=true\n");
        for a in &p.allowed_ips {
            let _ = writeln!(s, "allowed_ip={a}");
        }
    }
    s.push('\n');
    s
}

/// The kernel's update for `change`: the same content as [`uapi_set`].
pub fn kernel_update(change: &Change<'_>) -> DeviceUpdate {
    let mut update = DeviceUpdate::new();
    if let Some(key) = change.private_key {
        update = update.set_private_key(key.key().clone());
    }
    if change.replace_all {
        update = update.replace_peers();
    }
    if let Some(port) = change.listen_port {
        update = update.set_listen_port(port);
    }
    for gone in &change.remove {
        update = update.remove_peer_by_key(&gone.0);
    }
    for p in &change.upsert {
        let mut peer = PeerConfigBuilder::new(&p.public_key.0).replace_allowed_ips();
        if let Some(e) = p.endpoint {
            peer = peer.set_endpoint(e);
        }
        if let Some(k) = p.persistent_keepalive {
            peer = peer.set_persistent_keepalive_interval(k);
        }
        for a in &p.allowed_ips {
            peer = peer.add_allowed_ip(a.addr, a.prefix);
        }
        update = update.add_peer(peer);
    }
    update
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// What a device reports of itself, public parts only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceState {
    /// The public key of the device's private key (the private one is dropped
    /// as soon as it is read).
    pub public_key: Option<PublicKey>,
    pub listen_port: Option<u16>,
    pub peers: Vec<PeerState>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerState {
    pub public_key: PublicKey,
    pub endpoint: Option<SocketAddr>,
    pub allowed_ips: Vec<IpNet>,
    /// Seconds; 0: off.
    pub persistent_keepalive: u16,
    /// Seconds since the epoch of the last handshake; 0: none yet.
    pub last_handshake: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// Parses the answer to a UAPI `get` (errors: the device's `errno`).
pub fn parse_get(answer: &str) -> Result<DeviceState, String> {
    let mut state = DeviceState::default();
    for line in answer.lines().filter(|l| !l.is_empty()) {
        let (k, v) = line.split_once('=').ok_or_else(|| format!("bad UAPI line {line:?}"))?;
        let peer = state.peers.last_mut();
        match (k, peer) {
            ("private_key", _) => {
                let key = unhex(v).ok_or("bad private key in UAPI answer")?;
                state.public_key = Some(PrivateKey::from_bytes(key).public());
            }
            ("listen_port", _) => state.listen_port = v.parse().ok(),
            ("public_key", _) => {
                let key = unhex(v).ok_or("bad public key in UAPI answer")?;
                state.peers.push(PeerState {
                    public_key: PublicKey(wireguard_control::Key(key)),
                    endpoint: None,
                    allowed_ips: Vec::new(),
                    persistent_keepalive: 0,
                    last_handshake: 0,
                    rx_bytes: 0,
                    tx_bytes: 0,
                });
            }
            ("endpoint", Some(p)) => p.endpoint = v.parse().ok(),
            ("allowed_ip", Some(p)) => p.allowed_ips.extend(v.parse::<IpNet>().ok()),
            ("persistent_keepalive_interval", Some(p)) => p.persistent_keepalive = v.parse().unwrap_or(0),
            ("last_handshake_time_sec", Some(p)) => p.last_handshake = v.parse().unwrap_or(0),
            ("rx_bytes", Some(p)) => p.rx_bytes = v.parse().unwrap_or(0),
            ("tx_bytes", Some(p)) => p.tx_bytes = v.parse().unwrap_or(0),
            ("errno", _) if v != "0" => return Err(format!("the device answered errno={v}")),
            _ => {}
        }
    }
    Ok(state)
}

/// One UAPI exchange with the device `name`: the answer up to its blank line.
fn uapi_exchange(name: &str, request: &str) -> std::io::Result<String> {
    let mut stream = UnixStream::connect(uapi_socket(name))?;
    stream.set_read_timeout(Some(UAPI_TIMEOUT))?;
    stream.set_write_timeout(Some(UAPI_TIMEOUT))?;
    stream.write_all(request.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\n" {
            return Ok(answer);
        }
        answer.push_str(&line);
    }
}

/// Makes `change` on the userspace device `name`.
pub fn uapi_apply(name: &str, change: &Change<'_>) -> std::io::Result<()> {
    let answer = uapi_exchange(name, &uapi_set(change))?;
    match answer.trim() {
        "errno=0" => Ok(()),
        other => Err(std::io::Error::other(format!(
            "{name} refused its configuration: {other}"
        ))),
    }
}

/// Reads the userspace device `name`.
pub fn uapi_get(name: &str) -> std::io::Result<DeviceState> {
    let answer = uapi_exchange(name, "get=1\n\n")?;
    parse_get(&answer).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> (DeviceConfig, PublicKey) {
        let peer_key = PrivateKey::generate().public();
        let c = DeviceConfig {
            private_key: PrivateKey::from_bytes([7; 32]),
            listen_port: Some(51820),
            peers: vec![PeerConf {
                public_key: peer_key.clone(),
                endpoint: Some("192.0.2.1:51820".parse().unwrap()),
                allowed_ips: vec!["10.50.0.0/16".parse().unwrap(), "fd00::/64".parse().unwrap()],
                persistent_keepalive: Some(25),
            }],
        };
        (c, peer_key)
    }

    #[test]
    fn the_uapi_request_replaces_every_peer() {
        let (c, peer) = config();
        let text = uapi_set(&Change::replace(&c));
        let expected = format!(
            "set=1\nprivate_key={}\nlisten_port=51820\nreplace_peers=true\npublic_key={}\n\
             endpoint=192.0.2.1:51820\npersistent_keepalive_interval=25\nreplace_allowed_ips=true\n\
             allowed_ip=10.50.0.0/16\nallowed_ip=fd00::/64\n\n",
            "07".repeat(32),
            hex(peer.bytes())
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn the_kernel_update_says_the_same() {
        let (c, peer) = config();
        let by_hand = DeviceUpdate::new()
            .set_private_key(wireguard_control::Key([7; 32]))
            .replace_peers()
            .set_listen_port(51820)
            .add_peer(
                PeerConfigBuilder::new(&peer.0)
                    .replace_allowed_ips()
                    .set_endpoint("192.0.2.1:51820".parse().unwrap())
                    .set_persistent_keepalive_interval(25)
                    .add_allowed_ip("10.50.0.0".parse().unwrap(), 16)
                    .add_allowed_ip("fd00::".parse().unwrap(), 64),
            );
        assert_eq!(kernel_update(&Change::replace(&c)), by_hand);
        let no_port = DeviceConfig { listen_port: None, ..c };
        assert_ne!(kernel_update(&Change::replace(&no_port)), by_hand);
    }

    /// What the device would report after being told all of `c`.
    fn as_applied(c: &DeviceConfig) -> DeviceState {
        DeviceState {
            public_key: Some(c.private_key.public()),
            listen_port: c.listen_port,
            peers: c
                .peers
                .iter()
                .map(|p| PeerState {
                    public_key: p.public_key.clone(),
                    endpoint: p.endpoint,
                    allowed_ips: p.allowed_ips.iter().rev().cloned().collect(),
                    persistent_keepalive: p.persistent_keepalive.unwrap_or(0),
                    last_handshake: 1,
                    rx_bytes: 1,
                    tx_bytes: 1,
                })
                .collect(),
        }
    }

    #[test]
    fn a_device_as_configured_is_left_alone() {
        let (c, _) = config();
        assert!(Change::between(&c, &as_applied(&c)).is_empty());
    }

    #[test]
    fn only_the_peers_that_changed_are_touched() {
        let (mut c, kept) = config();
        let leaving = PrivateKey::generate().public();
        let mut before = c.clone();
        before.peers.push(PeerConf {
            public_key: leaving.clone(),
            endpoint: Some("192.0.2.9:51820".parse().unwrap()),
            allowed_ips: vec!["10.60.0.0/16".parse().unwrap()],
            persistent_keepalive: None,
        });
        let arriving = PeerConf {
            public_key: PrivateKey::generate().public(),
            endpoint: Some("192.0.2.7:51820".parse().unwrap()),
            allowed_ips: vec!["10.70.0.0/16".parse().unwrap()],
            persistent_keepalive: Some(25),
        };
        c.peers.push(arriving.clone());
        let change = Change::between(&c, &as_applied(&before));
        assert_eq!(change.remove, std::slice::from_ref(&leaving));
        assert_eq!(change.upsert, [&arriving]);
        assert!(change.private_key.is_none() && change.listen_port.is_none() && !change.replace_all);
        let text = uapi_set(&change);
        assert!(text.contains(&format!("public_key={}\nremove=true\n", hex(leaving.bytes()))));
        assert!(
            !text.contains(&hex(kept.bytes())),
            "the kept peer's session stays: {text}"
        );
        assert!(!text.contains("replace_peers") && !text.contains("private_key"));
    }

    #[test]
    fn a_new_key_or_endpoint_is_told() {
        let (c, peer) = config();
        let mut rotated = as_applied(&c);
        rotated.public_key = Some(PrivateKey::generate().public());
        rotated.peers[0].endpoint = Some("192.0.2.2:51820".parse().unwrap());
        let change = Change::between(&c, &rotated);
        assert_eq!(change.private_key, Some(&c.private_key));
        assert_eq!(change.upsert.len(), 1);
        assert_eq!(change.upsert[0].public_key, peer);
    }

    #[test]
    fn a_get_answer_yields_public_parts_only() {
        let private = PrivateKey::from_bytes([9; 32]);
        let peer = PrivateKey::generate().public();
        let answer = format!(
            "private_key={}\nlisten_port=40000\nfwmark=0\npublic_key={}\npreshared_key={}\nendpoint=192.0.2.1:51820\n\
             last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\ntx_bytes=100\nrx_bytes=200\n\
             persistent_keepalive_interval=25\nallowed_ip=10.50.0.0/16\nprotocol_version=1\nerrno=0\n",
            "09".repeat(32),
            hex(peer.bytes()),
            "00".repeat(32)
        );
        let state = parse_get(&answer).unwrap();
        assert_eq!(state.public_key, Some(private.public()));
        assert_eq!(state.listen_port, Some(40000));
        assert_eq!(state.peers.len(), 1);
        let p = &state.peers[0];
        assert_eq!(
            (p.public_key.clone(), p.last_handshake, p.rx_bytes, p.tx_bytes),
            (peer, 1_700_000_000, 200, 100)
        );
        assert_eq!(p.allowed_ips[0].to_string(), "10.50.0.0/16");
        assert!(parse_get("errno=22\n").is_err());
    }

    #[test]
    fn hex_round_trips() {
        let bytes = [0xab; 32];
        assert_eq!(unhex(&hex(&bytes)), Some(bytes));
        assert_eq!(unhex("zz"), None);
    }
}
