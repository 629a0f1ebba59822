//! Failpoints: named places in a plugin call where a test makes the process
//! die (`kill`: SIGKILL, as an OOM kill or a node crash would) or fail
//! (`error`), to prove that whatever a call leaves is completed or rolled
//! back. Compiled into debug builds only; a release build's [`hit`] is a no-op.
//!
//! `NETSVC_FAILPOINT=<point>=<action>[,<point>=<action>…]`, a point being
//! `<service>/<step>` (for example `netsvc-firewall/add/staged=kill`), or
//! `store/write/<n>`: right after the process's n-th document write of the
//! file store, where only `kill` applies (a commit cut off halfway).

use crate::cni::CniError;

/// The variable naming the failpoints of a process.
pub const FAILPOINT_ENV: &str = "NETSVC_FAILPOINT";

/// Passes the failpoint `point`: dies or fails there when the environment says so.
#[cfg(debug_assertions)]
pub fn hit(point: &str) -> Result<(), CniError> {
    let Some(spec) = std::env::var_os(FAILPOINT_ENV) else {
        return Ok(());
    };
    let spec = spec.to_string_lossy();
    match action(&spec, point) {
        Some("kill") => {
            tracing::warn!(point, "failpoint: killing the process");
            // SAFETY: kill(2) on our own pid has no memory effects.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            unreachable!("SIGKILL cannot be caught");
        }
        Some("error") => Err(CniError::io(format!("failpoint {point}"))),
        _ => Ok(()),
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn hit(_point: &str) -> Result<(), CniError> {
    Ok(())
}

/// Counts a document the file store wrote; the process dies there when
/// `store/write/<n>` says so for this count.
#[cfg(debug_assertions)]
pub fn document_written() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static WRITTEN: AtomicUsize = AtomicUsize::new(0);
    if std::env::var_os(FAILPOINT_ENV).is_none() {
        return;
    }
    let n = WRITTEN.fetch_add(1, Ordering::Relaxed) + 1;
    let _ = hit(&format!("store/write/{n}"));
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn document_written() {}

/// The action `spec` gives `point`, if any.
#[cfg_attr(not(debug_assertions), allow(dead_code))]
fn action<'s>(spec: &'s str, point: &str) -> Option<&'s str> {
    spec.split(',')
        .filter_map(|entry| entry.trim().split_once('='))
        .find(|(p, _)| *p == point)
        .map(|(_, a)| a)
}

#[cfg(test)]
mod tests {
    use super::action;

    #[test]
    fn a_spec_names_actions_per_point() {
        let spec = "netsvc-lb/add/staged=kill, netsvc-firewall/del/programmed=error";
        assert_eq!(action(spec, "netsvc-lb/add/staged"), Some("kill"));
        assert_eq!(action(spec, "netsvc-firewall/del/programmed"), Some("error"));
        assert_eq!(action(spec, "netsvc-firewall/add/staged"), None);
    }
}
