//! Run work inside a network namespace on a dedicated thread.
//!
//! `setns(2)` changes the namespace of the *calling thread* only. Every call
//! here spawns a fresh `std::thread`, moves that thread into the target
//! namespace, runs the work and lets the thread exit: no thread that ever
//! entered another namespace is reused, and the caller's thread never changes
//! namespace. A panic inside the work is caught when the thread is joined and
//! returned as [`NetnsError::Panicked`]; it never unwinds into the caller.
//!
//! The async variants build a current-thread tokio runtime *on the namespace
//! thread*, so no task can migrate to a thread in another namespace. A netlink
//! socket belongs to the namespace it was opened in: [`run`] opens the
//! rtnetlink connection inside the target namespace and hands its
//! [`Handle`](rtnetlink::Handle) to the closure.
//!
//! ```no_run
//! # fn demo() -> Result<(), netsvc_core::netns::NetnsError> {
//! let names = netsvc_core::netns::run("/var/run/netns/c1", |handle| async move {
//!     netsvc_core::netlink::links::list_names(&handle).await
//! })?;
//! # let _ = names; Ok(()) }
//! ```
//!
//! Errors map to CNI codes (see `From<NetnsError> for CniError`): a namespace
//! path that does not exist is code 3 ("container unknown" — the container's
//! namespace is gone), a path that is not a network namespace is code 7
//! (invalid config), a panic is plugin code 100 (internal error), and every
//! other failure is code 5 (I/O). DEL callers should treat
//! [`NetnsError::is_not_found`] as success.

use std::fs::File;
use std::future::Future;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};

use crate::cni::error::CniError;

/// A panic inside namespace work is an internal bug: the same code as a
/// panic anywhere else in a plugin.
pub use crate::cni::plugin::PANIC_CODE;

/// Errors of namespace work.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The namespace path does not exist (the container is gone).
    #[error("network namespace {path} does not exist")]
    NotFound { path: PathBuf },
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
    /// The tokio runtime could not be built inside the namespace.
    #[error("cannot build tokio runtime in {path}: {source}")]
    Runtime {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The rtnetlink connection could not be opened.
    #[error("cannot open netlink socket in {path}: {source}")]
    Netlink {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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

/// Run the future made by `f` inside the namespace at `path`, on a fresh
/// thread with its own current-thread tokio runtime (time and I/O enabled).
/// The future itself need not be `Send`: it never leaves that thread.
pub fn run_async<T, F, Fut>(path: impl AsRef<Path>, f: F) -> Result<T, NetnsError>
where
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = T>,
    T: Send,
{
    let path = path.as_ref();
    run_sync(path, move || {
        let rt = runtime(path)?;
        Ok(rt.block_on(f()))
    })?
}

/// Like [`run_async`], with an rtnetlink [`Handle`](rtnetlink::Handle) opened
/// inside the namespace and passed to `f`. The connection task lives until
/// the future completes.
pub fn run<T, F, Fut>(path: impl AsRef<Path>, f: F) -> Result<T, NetnsError>
where
    F: FnOnce(rtnetlink::Handle) -> Fut + Send,
    Fut: Future<Output = T>,
    T: Send,
{
    let path = path.as_ref();
    run_sync(path, move || {
        let rt = runtime(path)?;
        rt.block_on(async move {
            let handle = connect().map_err(|source| NetnsError::Netlink {
                path: path.to_path_buf(),
                source,
            })?;
            Ok(f(handle).await)
        })
    })?
}

/// Open an rtnetlink connection in the *current thread's* namespace and spawn
/// its driver on the current tokio runtime. Call it from inside [`run_async`]
/// (or any thread already in the right namespace, within a runtime).
pub fn connect() -> std::io::Result<rtnetlink::Handle> {
    let (connection, handle, _) = rtnetlink::new_connection()?;
    tokio::spawn(connection);
    Ok(handle)
}

fn runtime(path: &Path) -> Result<tokio::runtime::Runtime, NetnsError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| NetnsError::Runtime {
            path: path.to_path_buf(),
            source,
        })
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
    fn panic_message_extracts_strings() {
        assert_eq!(panic_message(&"boom"), "boom");
        assert_eq!(panic_message(&String::from("bang")), "bang");
        assert_eq!(panic_message(&5u8), "non-string panic payload");
    }
}
