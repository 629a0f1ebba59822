//! The mesh keeper: one small process per node and network that follows the
//! store and re-syncs the node's device when a node joins, leaves or rotates
//! its key. It is the plugin binary run as `netsvc-vpn keep-mesh`, detached
//! (own session, stdio on /dev/null, log in the state dir), holds a lock for
//! its life so one runs per device, and exits when the device is gone.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use netsvc_core::cni::{CniError, Result};
use netsvc_core::node::{NODE_ENV, NodeName};
use netsvc_core::store::{Store, StoreError, StoreHandle, open_with};
use nix::fcntl::{Flock, FlockArg};

use crate::mesh::{self, KEEPER_POLL};

/// The subcommand the plugin binary runs a keeper with.
pub const SUBCOMMAND: &str = "keep-mesh";

fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("vpn").join("keepers")
}

fn lock_path(state_dir: &Path, device: &str) -> PathBuf {
    dir(state_dir).join(format!("{device}.lock"))
}

/// Where a keeper logs.
pub fn log_path(state_dir: &Path, device: &str) -> PathBuf {
    dir(state_dir).join(format!("{device}.log"))
}

fn try_lock(state_dir: &Path, device: &str) -> std::io::Result<Option<Flock<File>>> {
    netsvc_core::store::create_dirs(&dir(state_dir)).map_err(std::io::Error::other)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(lock_path(state_dir, device))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e.into()),
    }
}

/// Whether the keeper of `node`'s device on `network` runs.
pub fn is_running(state_dir: &Path, network: &str, node: &str) -> bool {
    matches!(try_lock(state_dir, &mesh::device_name(node, network)), Ok(None))
}

/// Starts the keeper unless one runs. A second one started in a race exits
/// at once on the lock.
/// `on`: the node whose records hold the device, handed to the keeper.
pub fn ensure_running(store: &StoreHandle, on: &NodeName, network: &str, node: &str) -> Result<()> {
    let state_dir = store.state_dir();
    if is_running(state_dir, network, node) {
        return Ok(());
    }
    let exe = std::env::current_exe().map_err(|e| CniError::not_available(format!("cannot find own binary: {e}")))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log_path(state_dir, &mesh::device_name(node, network)))
        .map_err(|e| CniError::io(format!("cannot open the keeper's log: {e}")))?;
    let mut cmd = Command::new(exe);
    cmd.arg(SUBCOMMAND)
        .arg(state_dir)
        .arg(network)
        .arg(node)
        .envs(store.child_env())
        .env(NODE_ENV, on.as_str())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // It leaves the runtime's session: the runtime never waits on it.
    netsvc_core::spawn::new_session_on_exec(&mut cmd);
    cmd.spawn()
        .map_err(|e| CniError::not_available(format!("cannot start the mesh keeper: {e}")))?;
    Ok(())
}

/// The keeper's life: sync, then re-sync on every change of the network's
/// peers until the device is gone. Returns the process's exit code.
pub fn run(args: &[String]) -> i32 {
    let [state_dir, network, node] = args else {
        eprintln!("usage: netsvc-vpn {SUBCOMMAND} STATE_DIR NETWORK NODE");
        return 2;
    };
    let state_dir = Path::new(state_dir);
    let device = mesh::device_name(node, network);
    let _lock = match try_lock(state_dir, &device) {
        Ok(Some(lock)) => lock,
        Ok(None) => return 0,
        Err(e) => {
            tracing::error!("cannot take the keeper lock: {e}");
            return 1;
        }
    };
    // The node whose records hold the device, as the plugin handed it over.
    let on = match NodeName::from_env(None) {
        Ok(on) => on,
        Err(e) => {
            tracing::error!("mesh keeper of {device}: {e}");
            return 1;
        }
    };
    match keep(state_dir, &on, network, node) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("mesh keeper of {device} stops: {}", e.msg);
            1
        }
    }
}

fn keep(state_dir: &Path, on: &NodeName, network: &str, node: &str) -> Result<()> {
    // The store the plugin named (NETSVC_STORE), beside this state dir.
    let store = open_with(state_dir.to_str(), None)?;
    let prefix = mesh::watched_prefix(network)?;
    let mut changes = store.subscribe(&prefix, store.revision()?)?;
    resync(&store, on, network, node);
    while mesh::device_exists(network, node) {
        match changes.next(KEEPER_POLL) {
            Ok(events) if events.is_empty() => {}
            Ok(_) => resync(&store, on, network, node),
            Err(StoreError::Compacted { .. }) => {
                changes = store.subscribe(&prefix, store.revision()?)?;
                resync(&store, on, network, node);
            }
            Err(e) => return Err(e.into()),
        }
    }
    tracing::info!("the mesh device of {node} on {network} is gone; the keeper exits");
    Ok(())
}

fn resync(store: &StoreHandle, on: &NodeName, network: &str, node: &str) {
    match mesh::sync(store, on, network, node) {
        Ok(()) => tracing::info!("{node} on {network}: peers synced"),
        Err(e) => tracing::warn!("{node} on {network}: sync failed: {}", e.msg),
    }
}
