//! The plugin's side of the daemon: start it when none runs (fully detached:
//! its own session, stdio on /dev/null, logs in its own file), and wait until
//! it serves what the store holds.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netsvc_core::cni::CniError;
use netsvc_core::node::{NODE_ENV, NodeName};
use netsvc_core::store::StoreHandle;

use crate::daemon::{Paths, control};

/// The daemon's binary name.
const DAEMON: &str = "netsvc-dnsd";
/// How long a plugin waits for the daemon to start and load.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// The daemon binary: installed beside the plugin (or the `netsvc` command
/// line), else in a folder of CNI_PATH (a command line installed apart from
/// the plugins, as `netsvc repair` may be).
pub fn daemon_binary() -> Result<PathBuf, CniError> {
    let exe = std::env::current_exe().map_err(|e| CniError::not_available(format!("cannot find own binary: {e}")))?;
    let beside = exe.with_file_name(DAEMON);
    let on_path = std::env::var_os("CNI_PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(DAEMON)).collect::<Vec<_>>())
        .unwrap_or_default();
    std::iter::once(beside.clone())
        .chain(on_path)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::not_available(format!(
                "netsvc-dnsd is not installed beside the plugin ({}) nor on CNI_PATH",
                beside.display()
            ))
        })
}

/// Makes sure the daemon of the store's state dir runs and serves the store
/// as it is now (every listen address open); starts it when needed, for
/// `node`.
pub fn ensure_synced(store: &StoreHandle, node: &NodeName) -> Result<u64, CniError> {
    let paths = Paths::new(store.state_dir());
    let deadline = Instant::now() + START_TIMEOUT;
    let mut started = false;
    loop {
        match control::sync(&paths.control(), START_TIMEOUT) {
            Ok(Ok(revision)) => return Ok(revision),
            Ok(Err(why)) => return Err(CniError::try_again(format!("netsvc-dnsd: {why}"))),
            Err(_) if !started => {
                start(store, node)?;
                started = true;
            }
            Err(e) if Instant::now() >= deadline => {
                return Err(CniError::try_again(format!(
                    "netsvc-dnsd did not come up within {START_TIMEOUT:?}: {e} (see {})",
                    paths.log().display()
                )));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Asks a running daemon to reload; nothing when none runs (DEL, GC).
pub fn poke(state_dir: &Path) {
    let _ = control::sync(&Paths::new(state_dir).control(), Duration::from_secs(2));
}

/// Tells a running daemon to stop serving `endpoint` of `network` (a DEL the
/// store cannot take); fine when none runs (then nothing serves it).
pub fn withdraw(state_dir: &Path, network: &str, endpoint: &str) -> Result<(), CniError> {
    match control::withdraw(&Paths::new(state_dir).control(), network, endpoint, START_TIMEOUT) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(why)) => Err(CniError::io(format!("netsvc-dnsd cannot withdraw {endpoint}: {why}"))),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(CniError::io(format!(
            "netsvc-dnsd cannot be asked to withdraw {endpoint}: {e}"
        ))),
    }
}

/// Starts the daemon detached, on the same store. A second daemon for the
/// same state dir exits at once (it holds a lock for its life), so racing
/// starts are harmless.
fn start(store: &StoreHandle, node: &NodeName) -> Result<(), CniError> {
    let daemon = daemon_binary()?;
    let mut cmd = Command::new(&daemon);
    cmd.arg("--state-dir")
        .arg(store.state_dir())
        .envs(store.child_env())
        .env(NODE_ENV, node.as_str())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // The child leaves our session so the runtime that runs the plugin
    // never waits on it.
    netsvc_core::spawn::new_session_on_exec(&mut cmd);
    cmd.spawn()
        .map_err(|e| CniError::not_available(format!("cannot start {}: {e}", daemon.display())))?;
    Ok(())
}
