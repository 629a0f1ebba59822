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
