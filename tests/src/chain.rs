//! Running a CNI plugin chain on a [`TestNode`](crate::TestNode).
//!
//! **To be wired in:** the runtime that executes a conflist (the same code
//! as `netsvc exec`) plugs in here, so every service test drives its
//! plugins exactly as a user's runtime would. Nothing here implements CNI.
//! The intended shape:
//!
//! ```text
//! node.chain(&conflist)                          // a Chain bound to the node
//!     .add(&container, "eth0") -> Result<Value>  // ADD, the final result
//!     .check(&container, "eth0") / .del(&container, "eth0") / .gc(&[..])
//! ```
//!
//! Each plugin process must be spawned with
//! [`TestNode::command`](crate::TestNode::command): it enters the node
//! namespace and carries `NETSVC_STATE_DIR`. CNI_NETNS is
//! [`Container::netns_path`](crate::Container::netns_path); CNI_PATH is
//! [`cni_path`].

use std::ffi::OsString;
use std::path::PathBuf;

/// Overrides where the workspace's plugin binaries are looked for.
pub const PLUGIN_DIR_ENV: &str = "NETSVC_PLUGIN_DIR";

/// Where reference plugins live on Debian (containernetworking-plugins).
pub const REFERENCE_PLUGIN_DIR: &str = "/usr/lib/cni";

/// The directory holding the workspace's plugin binaries (`target/debug`).
///
/// `$NETSVC_PLUGIN_DIR` if set; otherwise derived from the test executable,
/// which cargo and nextest place in `target/<profile>/deps/`.
pub fn plugin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(PLUGIN_DIR_ENV) {
        return dir.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test binary has a directory");
    deps.parent().unwrap_or(deps).to_path_buf()
}

/// CNI_PATH for chains: our plugins first, then the reference plugins.
pub fn cni_path() -> OsString {
    std::env::join_paths([plugin_dir(), PathBuf::from(REFERENCE_PLUGIN_DIR)])
        .expect("plugin dirs hold no ':'")
}
