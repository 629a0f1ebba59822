//! WireGuard devices in the node's namespace, by either backend: the
//! kernel's (created and configured over netlink through wireguard-control)
//! or wireguard-go (started detached, configured over its UAPI socket).
//! Either way the device is made in the plugin's own namespace, so its UDP
//! socket stays there even when the device moves into a container.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netsvc_core::cni::CniError;
use serde::{Deserialize, Serialize};
use wireguard_control::InterfaceName;

use crate::config::BackendChoice;
use crate::owned;
use crate::wg::{self, DeviceConfig, DeviceState};

/// The backend a device runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Kernel,
    Userspace,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Kernel => "kernel",
            Backend::Userspace => "userspace",
        })
    }
}

/// wireguard-go refuses to start on a kernel that has WireGuard unless told.
const USERSPACE_ENV: &str = "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD";
/// Names another wireguard-go binary (tests, unusual installs).
pub const WIREGUARD_GO_ENV: &str = "NETSVC_WIREGUARD_GO";
/// How long a stopped wireguard-go may take to exit before it is signalled.
const EXIT_GRACE: Duration = Duration::from_secs(1);

/// Whether the kernel drives WireGuard devices (loaded, or loadable on demand).
pub fn kernel_has_wireguard() -> bool {
    if Path::new("/sys/module/wireguard").exists() {
        return true;
    }
    // Creating a device loads the module where it exists; ours is removed at once.
    let probe = format!("nsvprobe{:x}", std::process::id() & 0xffff);
    let Ok(name) = probe.parse::<InterfaceName>() else {
        return false;
    };
    let created = wireguard_control::DeviceUpdate::new()
        .apply(&name, wireguard_control::Backend::Kernel)
        .is_ok();
    if created {
        let _ = wireguard_control::backends::kernel::delete_interface(&name);
    }
    created
}

/// The wireguard-go binary: `NETSVC_WIREGUARD_GO`, else the first on PATH or
/// in the usual folders (a runtime may run plugins with a bare PATH).
pub fn wireguard_go() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(WIREGUARD_GO_ENV) {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/local/bin", "/usr/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("wireguard-go"))
        .find(|p| p.is_file())
}

/// Why the userspace backend cannot run here, if it cannot.
pub fn userspace_unavailable() -> Option<String> {
    if wireguard_go().is_none() {
        return Some("wireguard-go is not installed (Debian: apt install wireguard-go)".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing".into());
    }
    None
}

/// The backend `choice` comes to on this node, or code 50 saying why none.
pub fn resolve(choice: BackendChoice) -> Result<Backend, CniError> {
    let no_kernel = || "the kernel has no WireGuard (module wireguard)".to_string();
    match choice {
        BackendChoice::Kernel if kernel_has_wireguard() => Ok(Backend::Kernel),
        BackendChoice::Kernel => Err(CniError::not_available(format!("backend \"kernel\": {}", no_kernel()))),
        BackendChoice::Userspace => match userspace_unavailable() {
            None => Ok(Backend::Userspace),
            Some(why) => Err(CniError::not_available(format!("backend \"userspace\": {why}"))),
        },
        BackendChoice::Auto if kernel_has_wireguard() => Ok(Backend::Kernel),
        BackendChoice::Auto => match userspace_unavailable() {
            None => Ok(Backend::Userspace),
            Some(why) => Err(CniError::not_available(format!(
                "no WireGuard: {}, and {why}",
                no_kernel()
            ))),
        },
    }
}

fn iface(name: &str) -> Result<InterfaceName, CniError> {
    name.parse()
        .map_err(|e| CniError::invalid_config("interface", format!("{name:?}: {e}")))
}

/// Creates device `name` in the calling process's namespace.
pub fn create(name: &str, backend: Backend) -> Result<(), CniError> {
    match backend {
        Backend::Kernel => wireguard_control::DeviceUpdate::new()
            .apply(&iface(name)?, wireguard_control::Backend::Kernel)
            .map_err(|e| CniError::io(format!("cannot create WireGuard device {name}: {e}"))),
        Backend::Userspace => start_wireguard_go(name),
    }
}

/// Starts wireguard-go for `name`: it makes the TUN device and its UAPI
/// socket, then daemonizes, so both exist when it returns. It runs in its own
/// session with its output on /dev/null (LOG_LEVEL unset: with it set, the
/// daemon would keep our pipes open).
fn start_wireguard_go(name: &str) -> Result<(), CniError> {
    let binary = wireguard_go().ok_or_else(|| CniError::not_available("wireguard-go is not installed"))?;
    let mut cmd = Command::new(&binary);
    cmd.arg(name)
        .env(USERSPACE_ENV, "1")
        .env_remove("LOG_LEVEL")
        .env_remove("WG_PROCESS_FOREGROUND")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // It leaves the runtime's session: the runtime never waits on it.
    netsvc_core::spawn::new_session_on_exec(&mut cmd);
    let out = cmd
        .output()
        .map_err(|e| CniError::not_available(format!("cannot run {}: {e}", binary.display())))?;
    if !out.status.success() || !wg::uapi_socket(name).exists() {
        let why = String::from_utf8_lossy(&out.stderr);
        return Err(CniError::io(format!(
            "wireguard-go could not create {name} ({}): {}",
            out.status,
            why.trim()
        )));
    }
    Ok(())
}

/// Applies `c` to device `name` (which must be in this namespace for the
/// kernel backend; a userspace device is reached by its socket wherever it is).
/// Only what differs is changed; a device it cannot read is told all of `c`.
pub fn configure(name: &str, backend: Backend, c: &DeviceConfig) -> Result<(), CniError> {
    let current = state(name, backend).ok();
    let change = match &current {
        Some(now) => wg::Change::between(c, now),
        None => wg::Change::replace(c),
    };
    apply(name, backend, &change)
}

/// Makes `change` on device `name` (in this namespace for the kernel
/// backend); nothing when it is empty.
pub fn apply(name: &str, backend: Backend, change: &wg::Change<'_>) -> Result<(), CniError> {
    if change.is_empty() {
        return Ok(());
    }
    let r = match backend {
        Backend::Kernel => wg::kernel_update(change).apply(&iface(name)?, wireguard_control::Backend::Kernel),
        Backend::Userspace => wg::uapi_apply(name, change),
    };
    r.map_err(|e| CniError::io(format!("cannot configure WireGuard device {name}: {e}")))
}

/// Reads device `name` (public parts only).
pub fn state(name: &str, backend: Backend) -> std::io::Result<DeviceState> {
    match backend {
        Backend::Userspace => wg::uapi_get(name),
        Backend::Kernel => {
            let d = wireguard_control::Device::get(
                &iface(name).map_err(std::io::Error::other)?,
                wireguard_control::Backend::Kernel,
            )?;
            Ok(DeviceState {
                public_key: d.public_key.map(crate::keys::PublicKey),
                listen_port: d.listen_port,
                peers: d
                    .peers
                    .into_iter()
                    .map(|p| wg::PeerState {
                        public_key: crate::keys::PublicKey(p.config.public_key),
                        endpoint: p.config.endpoint,
                        allowed_ips: p
                            .config
                            .allowed_ips
                            .iter()
                            .filter_map(|a| netsvc_core::cni::IpNet::new(a.address, a.cidr).ok())
                            .collect(),
                        persistent_keepalive: p.config.persistent_keepalive_interval.unwrap_or(0),
                        last_handshake: p
                            .stats
                            .last_handshake_time
                            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                            .map_or(0, |d| d.as_secs()),
                        rx_bytes: p.stats.rx_bytes,
                        tx_bytes: p.stats.tx_bytes,
                    })
                    .collect(),
            })
        }
    }
}

/// Stops the userspace device `name`: its socket goes (wireguard-go watches
/// it and exits, taking the TUN device along); a process that lingers is
/// signalled. Nothing to stop is fine, and so is a name not of our form
/// (a record is no proof that another's wireguard-go is ours to stop).
pub fn stop_userspace(name: &str) {
    if !owned::is_our_name(name) {
        tracing::warn!("netsvc-vpn: {name:?} is not a device name of ours; its wireguard-go is left alone");
        return;
    }
    let _ = std::fs::remove_file(wg::uapi_socket(name));
    let deadline = Instant::now() + EXIT_GRACE;
    while !wireguard_go_pids(name).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    for pid in wireguard_go_pids(name) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}

/// Removes device `name` from the node, by either backend: a userspace one
/// is stopped, a kernel one deleted as a link, if it is ours (see
/// [`crate::owned`]); a link of another kind or alias that took the name stays.
/// Gone already is fine.
pub fn remove(name: &str) -> Result<(), CniError> {
    stop_userspace(name);
    netsvc_core::netlink::within(crate::NODE_NETNS, |rtnl| {
        for link in owned::ours_on_node(rtnl)?.into_iter().filter(|l| l.name == name) {
            netsvc_core::netlink::links::delete(rtnl, link.index)?;
        }
        Ok(())
    })?;
    Ok(())
}

/// The wireguard-go processes serving device `name`.
pub fn wireguard_go_pids(name: &str) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let mut args = cmdline.split(|&b| b == 0);
            let program = args.next().unwrap_or_default();
            program.ends_with(b"wireguard-go") && args.next() == Some(name.as_bytes())
        })
        .collect()
}

/// The userspace devices named as ours with `prefix` (see
/// [`owned::has_our_form`]) whose wireguard-go runs in this process's
/// namespace (the socket folder is the whole host's: another node's devices
/// are not ours to judge).
pub fn userspace_devices_here(prefix: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(wg::UAPI_DIR) else {
        return Vec::new();
    };
    let netns_of = |pid: &str| std::fs::metadata(format!("/proc/{pid}/ns/net")).map(|m| m.ino()).ok();
    let here = netns_of("self");
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".sock").map(str::to_string))
        .filter(|n| owned::has_our_form(n, prefix))
        .filter(|n| {
            wireguard_go_pids(n)
                .iter()
                .any(|pid| netns_of(&pid.to_string()) == here)
        })
        .collect()
}
