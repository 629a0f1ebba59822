//! Run work inside a network namespace on a dedicated thread.
//!
//! `setns(2)` changes the namespace of the *calling thread* only. Every call
//! here spawns a fresh `std::thread`, moves that thread into the target
//! namespace, runs the work and lets the thread exit: no thread that ever
//! entered another namespace is reused, and the caller's thread never changes
//! namespace. A panic inside the work is caught when the thread is joined and
//! returned as [`NetnsError::Panicked`]; it never unwinds into the caller.
//!
//! A netlink socket belongs to the namespace it was opened in:
//! [`crate::netlink::within`] opens one on such a thread.
//!
//! Errors map to CNI codes (see `From<NetnsError> for CniError`): a namespace
//! path that does not exist is code 3 ("container unknown" — the container's
//! namespace is gone), a path that is not a network namespace is code 7
//! (invalid config), a panic is plugin code 100 (internal error), and every
//! other failure is code 5 (I/O). DEL callers should treat
//! [`NetnsError::is_not_found`] as success.
//!
//! [`check_cni_netns`] is what ADD asks of `CNI_NETNS` before it changes
//! anything: the path must be a network namespace (code 4 otherwise, code 3
//! when it does not exist), as the reference plugins refuse a path `ns.GetNS`
//! cannot open as one.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};

use crate::cni::error::CniError;

/// A panic inside namespace work is an internal bug: the same code as a
/// panic anywhere else in a plugin.
pub use crate::cni::PANIC_CODE;

/// Errors of namespace work.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The namespace path does not exist (the container is gone).
    #[error("network namespace {path} does not exist")]
    NotFound { path: PathBuf },
    /// The path exists but is no network namespace (`what` says what it is).
    #[error("{path} is not a network namespace: it is {what}")]
    NotNetwork { path: PathBuf, what: String },
    /// The namespace path exists but could not be opened.
    #[error("cannot open network namespace {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `setns` failed: not a network namespace, or missing privilege.
    #[error("cannot enter network namespace {path}: {source}")]
    Enter {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    /// The namespace thread could not be started.
    #[error("cannot start namespace thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The work panicked; the panic was contained on the namespace thread.
    #[error("work inside network namespace {path} panicked: {message}")]
    Panicked { path: PathBuf, message: String },
}

impl NetnsError {
    /// True when the namespace itself is gone (DEL treats this as success).
    pub fn is_not_found(&self) -> bool {
        matches!(self, NetnsError::NotFound { .. })
    }
}

impl From<NetnsError> for CniError {
    fn from(e: NetnsError) -> Self {
        match &e {
            NetnsError::NotFound { .. } => CniError::unknown_container(e.to_string()),
            NetnsError::NotNetwork { .. } => CniError::invalid_config("netns", e.to_string()),
            NetnsError::Enter {
                source: nix::Error::EINVAL,
                path,
            } => CniError::invalid_config("netns", format!("{} is not a network namespace", path.display())),
            NetnsError::Panicked { .. } => CniError::plugin(PANIC_CODE, e.to_string()),
            _ => CniError::io(e.to_string()),
        }
    }
}

/// The calling process's own network namespace (the node's, for a plugin).
pub const OWN: &str = "/proc/self/ns/net";

/// Open a namespace file (`/var/run/netns/X`, `/proc/PID/ns/net`), e.g. to
/// move a link into it with [`crate::netlink::links::move_to_netns`].
pub fn open(path: impl AsRef<Path>) -> Result<File, NetnsError> {
    let path = path.as_ref();
    File::open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            NetnsError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            NetnsError::Open {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

/// Whether `path` is a network namespace: a file of the namespace filesystem
/// (`NSFS_MAGIC`) whose `NS_GET_NSTYPE` is `CLONE_NEWNET`. Nothing is
/// entered; a FIFO or device at `path` is never opened for reading (its
/// filesystem is asked through an `O_PATH` descriptor first).
pub fn check_net_namespace(path: &Path) -> Result<(), NetnsError> {
    use nix::sys::statfs::{NSFS_MAGIC, fstatfs};
    let not_network = |what: String| NetnsError::NotNetwork {
        path: path.to_path_buf(),
        what,
    };
    let open_error = |source: std::io::Error| match source.raw_os_error() {
        Some(libc::ENOENT | libc::ENOTDIR) => NetnsError::NotFound {
            path: path.to_path_buf(),
        },
        _ => NetnsError::Open {
            path: path.to_path_buf(),
            source,
        },
    };
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(path)
        .map_err(open_error)?;
    let fs = fstatfs(&handle).map_err(|e| open_error(e.into()))?;
    if fs.filesystem_type() != NSFS_MAGIC {
        let kind = handle.metadata().map_err(open_error)?.file_type();
        let what = match () {
            () if kind.is_file() => "a regular file",
            () if kind.is_dir() => "a directory",
            () if kind.is_fifo() => "a FIFO",
            () if kind.is_socket() => "a socket",
            () if kind.is_block_device() || kind.is_char_device() => "a device",
            () => "not a namespace file",
        };
        return Err(not_network(what.into()));
    }
    // Re-opened through the descriptor: the very file whose filesystem was
    // asked, now readable for the ioctl (an O_PATH descriptor is not).
    let ns = File::open(format!("/proc/self/fd/{}", handle.as_raw_fd())).map_err(open_error)?;
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the descriptor,
    // which stays open for the call.
    let nstype = unsafe { libc::ioctl(ns.as_raw_fd(), libc::NS_GET_NSTYPE) };
    if nstype < 0 {
        return Err(open_error(std::io::Error::last_os_error()));
    }
    if nstype != libc::CLONE_NEWNET {
        return Err(not_network(format!("a {} namespace", namespace_kind(nstype))));
    }
    Ok(())
}

/// What `ip netns`/`lsns` call a namespace of type `nstype` (a `CLONE_NEW*` flag).
fn namespace_kind(nstype: libc::c_int) -> &'static str {
    match nstype {
        libc::CLONE_NEWNS => "mount",
        libc::CLONE_NEWUTS => "uts",
        libc::CLONE_NEWIPC => "ipc",
        libc::CLONE_NEWUSER => "user",
        libc::CLONE_NEWPID => "pid",
        libc::CLONE_NEWCGROUP => "cgroup",
        libc::CLONE_NEWTIME => "time",
        _ => "non-network",
    }
}

/// ADD's check of `CNI_NETNS` ([`check_net_namespace`]), as a CNI error that
/// names the variable and the path: code 3 when nothing is there (the
/// container is gone, as everywhere else a namespace is missing), code 4
/// when what is there is no network namespace or cannot be opened. DEL does
/// not call it: a DEL with a gone or odd namespace must still succeed.
pub fn check_cni_netns(path: &Path) -> Result<(), CniError> {
    check_net_namespace(path).map_err(|e| match e {
        NetnsError::NotFound { .. } => CniError::unknown_container(format!(
            "CNI_NETNS {}: no such network namespace (is the container gone?)",
            path.display()
        )),
        e => CniError::invalid_env("CNI_NETNS", e),
    })
}

/// The inode of the calling thread's network namespace
/// (`/proc/thread-self/ns/net`); two threads share a namespace iff equal.
pub fn current_inode() -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata("/proc/thread-self/ns/net")?.ino())
}

/// Run `f` on a fresh thread inside the network namespace at `path` and
/// return its result (on the calling thread when it is there already). The
/// thread exits afterwards; the caller's thread never changes namespace. A panic in `f` is returned as [`NetnsError::Panicked`].
pub fn run_sync<T, F>(path: impl AsRef<Path>, f: F) -> Result<T, NetnsError>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    let path = path.as_ref();
    let ns = open(path)?;
    if is_current(&ns) && tokio::runtime::Handle::try_current().is_err() {
        // Already there (the node's own namespace, mostly), and no runtime
        // of the caller's in the way of the one `f` may build: run here.
        return std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| NetnsError::Panicked {
            path: path.to_path_buf(),
            message: panic_message(payload.as_ref()),
        });
    }
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("netsvc-netns".into())
            .spawn_scoped(scope, move || -> Result<T, NetnsError> {
                setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
                    path: path.to_path_buf(),
                    source,
                })?;
                drop(ns);
                Ok(f())
            })
            .map_err(NetnsError::Spawn)?;
        match worker.join() {
            Ok(result) => result,
            Err(payload) => Err(NetnsError::Panicked {
                path: path.to_path_buf(),
                message: panic_message(payload.as_ref()),
            }),
        }
    })
}

/// Whether `ns` is the calling thread's network namespace.
fn is_current(ns: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    ns.metadata()
        .is_ok_and(|target| current_inode().is_ok_and(|own| own == target.ino()))
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_path_is_unknown_container() {
        let err = run_sync("/nonexistent/netns/x", || ()).unwrap_err();
        assert!(err.is_not_found());
        let cni: CniError = err.into();
        assert_eq!(cni.code, 3);
    }

    #[test]
    fn only_a_network_namespace_passes_the_check() {
        check_net_namespace(Path::new(OWN)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        for (path, what, code) in [
            (file.as_path(), "a regular file", 4),
            (dir.path(), "a directory", 4),
            (Path::new("/proc/self/ns/mnt"), "a mount namespace", 4),
            (Path::new("/proc/self/ns/uts"), "a uts namespace", 4),
            (&dir.path().join("gone"), "", 3),
            (&file.join("below-a-file"), "", 3),
        ] {
            let err = check_cni_netns(path).unwrap_err();
            assert_eq!(err.code, code, "{}: {err}", path.display());
            assert!(err.msg.contains("CNI_NETNS"), "{err}");
            assert!(err.msg.contains(&path.display().to_string()), "{err}");
            assert!(err.msg.contains(what), "{err}");
        }
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let err = check_net_namespace(&fifo).unwrap_err();
        assert!(err.to_string().contains("a FIFO"), "{err}");
    }

    #[test]
    fn panic_message_extracts_strings() {
        assert_eq!(panic_message(&"boom"), "boom");
        assert_eq!(panic_message(&String::from("bang")), "bang");
        assert_eq!(panic_message(&5u8), "non-string panic payload");
    }
}
