//! Failpoints: named places in a plugin call where a test makes the process
//! die (`kill`: SIGKILL, as an OOM kill or a node crash would) or fail
//! (`error`), to prove that whatever a call leaves is completed or rolled
//! back. Compiled into debug builds only; a release build's [`hit`] is a no-op.
//!
//! `NETSVC_FAILPOINT=<point>=<action>[,<point>=<action>…]`, a point being
//! `<service>/<step>` (for example `netsvc-firewall/add/staged=kill`).

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
