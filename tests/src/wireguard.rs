//! WireGuard as an operator sets it up by hand (wg, wireguard-go): the
//! "remote site" a tunnel reaches, the reference a benchmark compares with,
//! and the observers that prove nothing of ours is left behind.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, bail};

use crate::netns::Netns;

/// Where wireguard-go keeps its UAPI sockets, for every namespace of the host.
pub const UAPI_DIR: &str = "/var/run/wireguard";

/// A key pair made with `wg genkey | wg pubkey`.
#[derive(Debug, Clone)]
pub struct KeyPair {
    pub private: String,
    pub public: String,
}

impl KeyPair {
    pub fn generate() -> Result<KeyPair> {
        let private = run_wg(&["genkey"], None)?;
        let public = run_wg(&["pubkey"], Some(&private))?;
        Ok(KeyPair { private, public })
    }

    /// Writes the private key to `dir/name` with mode 0600.
    pub fn write_private(&self, dir: &Path, name: &str) -> Result<PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, format!("{}\n", self.private))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        Ok(path)
    }
}

fn run_wg(args: &[&str], stdin: Option<&str>) -> Result<String> {
    use std::io::Write;
    let mut child = std::process::Command::new("wg")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("run wg (wireguard-tools)")?;
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes())?;
    }
    drop(child.stdin.take());
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("wg {args:?}: {}", out.status);
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// Starts wireguard-go for device `name` in `ns` as a daemon runs: in a
/// session of its own (as netsvc-vpn starts it), so the scheduler's
/// per-session groups treat every tunnel alike.
pub fn start_wireguard_go(ns: &Netns, name: &str) -> Result<()> {
    let out = ns
        .command("setsid")
        .args(["--wait", "wireguard-go", name])
        .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1")
        .env_remove("LOG_LEVEL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()?;
    if !out.status.success() {
        bail!("wireguard-go {name}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A wireguard-go device set up by hand in a namespace; stopped on drop.
#[derive(Debug)]
pub struct HandDevice {
    pub name: String,
    pub keys: KeyPair,
    key_dir: tempfile::TempDir,
}

impl HandDevice {
    /// Starts wireguard-go for `name` in `ns`, keyed, listening on `port`,
    /// with `address` on it and up.
    pub fn start(ns: &Netns, name: &str, port: u16, address: &str) -> Result<HandDevice> {
        HandDevice::start_with(ns, name, port, address, KeyPair::generate()?)
    }

    /// As [`HandDevice::start`], with the given keys.
    pub fn start_with(ns: &Netns, name: &str, port: u16, address: &str, keys: KeyPair) -> Result<HandDevice> {
        start_wireguard_go(ns, name)?;
        let key_dir = tempfile::tempdir()?;
        let key_file = keys.write_private(key_dir.path(), "private")?;
        let port = port.to_string();
        ns.exec(
            "wg",
            [
                "set",
                name,
                "private-key",
                key_file.to_str().unwrap(),
                "listen-port",
                &port,
            ],
        )?;
        ns.add_addr(name, address)?;
        ns.ip(["link", "set", name, "up"])?;
        Ok(HandDevice {
            name: name.to_string(),
            keys,
            key_dir,
        })
    }

    /// Adds (or replaces) a peer.
    pub fn set_peer(&self, ns: &Netns, public: &str, endpoint: Option<&str>, allowed_ips: &str) -> Result<()> {
        let mut args = vec!["set", &self.name, "peer", public, "allowed-ips", allowed_ips];
        if let Some(e) = endpoint {
            args.extend(["endpoint", e]);
        }
        ns.exec("wg", args).map(drop)
    }

    pub fn key_dir(&self) -> &Path {
        self.key_dir.path()
    }
}

impl Drop for HandDevice {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(Path::new(UAPI_DIR).join(format!("{}.sock", self.name)));
    }
}

/// wireguard-go processes serving a device whose name starts with `prefix`.
pub fn wireguard_go_processes(prefix: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<String> = cmdline
                .split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            (args.first()?.ends_with("wireguard-go") && args.get(1)?.starts_with(prefix)).then(|| args.join(" "))
        })
        .collect()
}

/// UAPI sockets of devices whose name starts with `prefix`.
pub fn uapi_sockets(prefix: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(UAPI_DIR) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// The remote site's key pair in docs/patterns/site-vpn.yaml (an example
/// key, used nowhere else): (private, public).
pub const SITE_KEYS: (&str, &str) = (
    "WIpH5UJwvQawDsiMzNOGBHeT4bDPfxuQc25rApCxEGA=",
    "aWIDcXV8wOt0aUZx9zx+lM3vBcDgCJwj7RJ68TB26hA=",
);

/// The site-vpn pattern's remote site: a namespace behind the node's
/// underlay (`up0`, the site at 192.0.2.1, the node at 192.0.2.10) whose
/// WireGuard gateway holds 10.50.0.1/16 with [`SITE_KEYS`].
pub struct Site {
    pub ns: Netns,
    pub gateway: HandDevice,
}

impl Site {
    pub fn start(node: &Netns) -> Result<Site> {
        let ns = Netns::create("site")?;
        node.veth("up0", &ns, "up0")?;
        node.add_addr("up0", "192.0.2.10/24")?;
        ns.add_addr("up0", "192.0.2.1/24")?;
        let keys = KeyPair {
            private: SITE_KEYS.0.into(),
            public: SITE_KEYS.1.into(),
        };
        let name: String = crate::unique_name("wgs").chars().take(15).collect();
        let gateway = HandDevice::start_with(&ns, &name, 51820, "10.50.0.1/16", keys)?;
        Ok(Site { ns, gateway })
    }

    /// Lets the tunnel with key `public` and address `address` in, as the
    /// site's operator does.
    pub fn admit(&self, public: &str, address: &str) -> Result<()> {
        self.gateway.set_peer(&self.ns, public, None, address)?;
        self.ns
            .ip(["route", "add", address, "dev", &self.gateway.name])
            .map(drop)
    }
}
