//! What a child process does between fork and exec, written once: join a
//! network namespace, or leave the caller's session. Only async-signal-safe
//! calls run there (no allocation, no lock).

use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sched::{CloneFlags, setns};

/// Makes `cmd`'s child join the network namespace `ns` (an open file of
/// it) before exec: no wrapper process, and unlike `ip netns exec` the
/// mount namespace (and /sys) stays the caller's. When `ns` is the error
/// opening it gave, the spawn fails with that error.
pub fn enter_netns_on_exec(cmd: &mut Command, ns: std::io::Result<OwnedFd>) {
    let ns = ns.map_err(|e| e.raw_os_error().unwrap_or(libc::ENOENT));
    // SAFETY: the hook only calls setns(2) and builds an io::Error from an
    // errno, neither of which allocates or takes locks; `ns` is moved into
    // the closure, so the file stays open until exec.
    unsafe {
        cmd.pre_exec(move || match &ns {
            Ok(fd) => setns(fd, CloneFlags::CLONE_NEWNET).map_err(Into::into),
            Err(errno) => Err(std::io::Error::from_raw_os_error(*errno)),
        });
    }
}

/// Makes `cmd`'s child leave the caller's session (setsid) before exec: a
/// daemon a plugin starts is not the runtime's to wait on.
pub fn new_session_on_exec(cmd: &mut Command) {
    // SAFETY: setsid(2) is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(drop).map_err(std::io::Error::from));
    }
}
