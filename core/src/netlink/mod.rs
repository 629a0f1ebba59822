//! Kernel programming over rtnetlink that more than one service needs: links,
//! addresses, routes and traffic control (qdiscs, classes, filters).
//!
//! Every function takes the one socket type, [`Rtnl`]; the socket decides the
//! namespace (open one inside another namespace with [`within`]). Changes are
//! built purely as [`Request`]s, so several go in one datagram
//! ([`Rtnl::apply`]). Deleting something that is already gone is `Ok`
//! everywhere: CNI DEL must be idempotent. Errors carry the kernel's errno.
//!
//! Units: rates are [`tc::Rate`] (stored as **bytes per second**, the kernel's
//! unit; build one from bits/s with [`tc::Rate::from_bits_per_sec`], as CNI's
//! `bandwidth` capability gives bits/s). Bursts, buffers and limits are
//! **bytes**.

use std::path::Path;

use netlink_packet_core::NLM_F_ECHO;
use netlink_packet_route::RouteNetlinkMessage;

use crate::cni::error::CniError;

pub mod addresses;
pub mod links;
pub mod notify;
pub mod routes;
pub mod socket;
pub mod tc;

pub use socket::Rtnl;

/// Errors of netlink operations.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The kernel refused a request with `errno`.
    #[error("netlink {op} failed: {}", std::io::Error::from_raw_os_error(*errno))]
    Kernel { op: String, errno: i32 },
    /// The kernel answered something a request does not expect.
    #[error("netlink {op}: unexpected answer: {what}")]
    Unexpected { op: String, what: String },
    /// A link looked up by name or index does not exist.
    #[error("link {0} not found")]
    LinkNotFound(String),
    /// The caller passed something we refuse to send (names the field).
    #[error("invalid {field}: {why}")]
    Invalid { field: String, why: String },
    /// Reading kernel parameters (e.g. /proc/net/psched) failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The namespace part of the operation failed.
    #[error(transparent)]
    Netns(#[from] crate::netns::NetnsError),
}

impl NetlinkError {
    /// The kernel's refusal of `op`, from the (negative) code of its answer.
    pub(crate) fn kernel(op: impl Into<String>, code: i32) -> Self {
        NetlinkError::Kernel {
            op: op.into(),
            errno: code.abs(),
        }
    }

    pub(crate) fn unexpected(op: impl Into<String>, what: impl Into<String>) -> Self {
        NetlinkError::Unexpected {
            op: op.into(),
            what: what.into(),
        }
    }

    pub fn invalid(field: &str, why: impl std::fmt::Display) -> Self {
        NetlinkError::Invalid {
            field: field.to_string(),
            why: why.to_string(),
        }
    }

    /// The errno the kernel answered with, if this is a kernel rejection.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// True when the object (or the link it hangs on) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, NetlinkError::LinkNotFound(_))
            || matches!(
                self.errno(),
                Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ESRCH) | Some(libc::EADDRNOTAVAIL)
            )
            || matches!(self, NetlinkError::Netns(e) if e.is_not_found())
    }

    /// True when the object already exists.
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }
}

/// Invalid input is code 7 (invalid config); a missing namespace is code 3;
/// everything the kernel refuses or that fails to read is code 5 (I/O).
impl From<NetlinkError> for CniError {
    fn from(e: NetlinkError) -> Self {
        match e {
            NetlinkError::Invalid { field, why } => CniError::invalid_config(&field, why),
            NetlinkError::Netns(n) => n.into(),
            other => CniError::io(other.to_string()),
        }
    }
}

pub type Result<T, E = NetlinkError> = std::result::Result<T, E>;

/// One change to send, built purely: alone ([`Rtnl::send`]) or with others
/// in one datagram ([`Rtnl::apply`]).
#[derive(Debug, Clone)]
pub struct Request {
    /// What it does, for errors: "add htb class".
    pub op: String,
    pub message: RouteNetlinkMessage,
    /// Beside `NLM_F_REQUEST | NLM_F_ACK`: `NLM_F_CREATE`, `NLM_F_EXCL`, …
    pub flags: u16,
    /// Whether "no such object" counts as done (a delete of what is gone).
    pub missing_ok: bool,
}

impl Request {
    pub fn new(op: impl Into<String>, message: RouteNetlinkMessage, flags: u16) -> Request {
        Request {
            op: op.into(),
            message,
            flags,
            missing_ok: false,
        }
    }

    /// The same request, asking the kernel to send back what it made
    /// (`NLM_F_ECHO`): a new link's index comes with its acknowledgement.
    pub fn echoed(mut self) -> Request {
        self.flags |= NLM_F_ECHO;
        self
    }

    /// The same request, done when its object is already gone.
    pub fn missing_ok(mut self) -> Request {
        self.missing_ok = true;
        self
    }

    /// The kernel's answer to this request, as its outcome.
    fn outcome(missing_ok: bool, answer: Result<()>) -> Result<()> {
        if missing_ok { ok_if_missing(answer) } else { answer }
    }
}

/// Runs `f` with a socket of the network namespace at `path`, on a thread
/// of that namespace (see [`crate::netns::run_sync`]).
pub fn within<T: Send>(path: impl AsRef<Path>, f: impl FnOnce(&mut Rtnl) -> Result<T> + Send) -> Result<T> {
    crate::netns::run_sync(path, || f(&mut Rtnl::open()?))?
}

/// Map "already gone" to `Ok(())` (for idempotent deletes).
pub(crate) fn ok_if_missing(r: Result<()>) -> Result<()> {
    match r {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

/// Validate an interface name: 1–15 bytes, not `.`/`..`, no `/`, `:` or
/// whitespace (the kernel's and CNI's rules).
pub fn validate_ifname(field: &str, name: &str) -> Result<()> {
    crate::cni::env::validate_ifname(name).map_err(|why| NetlinkError::invalid(field, why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifname_rules() {
        assert!(validate_ifname("ifname", "eth0").is_ok());
        assert!(validate_ifname("ifname", "0123456789abcde").is_ok());
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "0123456789abcdef"] {
            let e = validate_ifname("ifname", bad).unwrap_err();
            assert_eq!(CniError::from(e).code, 7, "{bad:?}");
        }
    }
}
