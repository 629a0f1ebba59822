//! The last close of an nf_tables socket, off the runtime's clock.
//!
//! When a netfilter netlink socket is released, the kernel first waits, under
//! the namespace's nf_tables commit mutex, for the transactions of recent
//! commits to be freed: an RCU grace period (12 ms here) after any batch
//! that deleted something. A plugin's runtime waits for the plugin's exit,
//! and the exit releases the socket, so every DEL would pay that wait for
//! nothing it needs: the batch was committed, and answered, when it was
//! sent. A plugin therefore hands its sockets to a child that holds nothing
//! else and releases them a while after the plugin has exited, when the
//! transactions are long freed and the release waits for nothing (nor holds
//! up the next plugin's batch on the mutex).

use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use nix::unistd::pipe;

/// The child's stack: it calls four system calls.
const CHILD_STACK: usize = 64 * 1024;
/// How long the child keeps the sockets after the plugin exited by default:
/// well past the grace period that frees the plugin's transactions, so
/// releasing them then waits for nothing.
pub const SETTLE: Duration = Duration::from_millis(100);

/// Forks a child that keeps this process's nf_tables sockets, and only
/// them, until this process exits and `settle` more, then exits itself
/// (and releases them).
/// Call it last, once the answer is written: nothing is handed off from a
/// process that made no socket. Best effort: when no child can be made the
/// sockets are released at exit as usual.
pub fn hand_off_sockets(settle: Duration) {
    // The child sees end of file on `alive` when the last holder of its
    // write end, this process, is gone.
    let Ok((alive, holder)) = pipe() else { return };
    let Ok(fds) = open_fds() else { return };
    let (sockets, others): (Vec<RawFd>, Vec<RawFd>) = fds
        .into_iter()
        .filter(|&fd| fd != alive.as_raw_fd())
        .partition(|&fd| is_netfilter_socket(fd));
    if sockets.is_empty() {
        return;
    }
    // Read by the child, which runs in this process's memory: never freed.
    let child = Box::leak(Box::new(Child {
        close: others,
        alive: alive.as_raw_fd(),
        settle: libc::timespec {
            tv_sec: settle.as_secs() as libc::time_t,
            tv_nsec: settle.subsec_nanos() as libc::c_long,
        },
    }));
    // u128s: 16-byte aligned, as the ABI wants the top of a stack.
    let stack = Box::leak(vec![0u128; CHILD_STACK / 16].into_boxed_slice());
    // SAFETY: the child shares this process's memory (no page tables to
    // copy, which a fork of a 15 MB process pays) but has its own
    // descriptor table; it reads only the leaked `child` and runs on the
    // leaked `stack`, from its top down.
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(stack.len()).cast::<libc::c_void>();
        libc::clone(
            release_later,
            top,
            libc::CLONE_VM | libc::SIGCHLD,
            std::ptr::from_mut(child).cast(),
        )
    };
    if pid < 0 {
        tracing::debug!("no child to hand nf_tables sockets to: they are released at exit");
        return;
    }
    drop(alive);
    // Held until exit, which is what tells the child to go.
    std::mem::forget(holder);
}

/// What the child needs: every descriptor but the sockets, and the pipe end
/// that tells it its parent is gone.
struct Child {
    close: Vec<RawFd>,
    alive: RawFd,
    settle: libc::timespec,
}

/// The child: only `close`, `read` and `_exit` on descriptors that are open,
/// so it touches no lock, allocator or thread-local state (not even errno)
/// of the process whose memory it shares.
extern "C" fn release_later(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the leaked `Child` made for this child.
    let child = unsafe { &*arg.cast::<Child>() };
    // Nothing of the plugin's may outlive it: not stdout (the runtime reads
    // it to its end), not a lock file, not the pipe's write end.
    for &fd in &child.close {
        // SAFETY: closing a descriptor of the child's own table.
        unsafe { libc::close(fd) };
    }
    let mut byte = 0u8;
    // SAFETY: a one-byte read into a live local; it returns at end of file.
    unsafe { libc::read(child.alive, (&raw mut byte).cast(), 1) };
    // Released now, the sockets would wait for the grace period under the
    // namespace's commit mutex, and so would the next plugin's batch.
    // SAFETY: a sleep on the leaked `Child`'s timespec.
    unsafe { libc::nanosleep(&child.settle, std::ptr::null_mut()) };
    // SAFETY: ends the child at once, running nothing of the parent's.
    unsafe { libc::_exit(0) }
}

/// The descriptors open in this process (not the listing's own, closed by then).
fn open_fds() -> std::io::Result<Vec<RawFd>> {
    let mut fds = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        if let Some(fd) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) {
            fds.push(fd);
        }
    }
    // SAFETY: F_GETFD only asks whether the number is an open descriptor.
    fds.retain(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0);
    Ok(fds)
}

fn is_netfilter_socket(fd: RawFd) -> bool {
    let option = |name: libc::c_int| {
        let mut value: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: an int-sized option read into a live local of that size;
        // a descriptor that is no socket just fails.
        let rc = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, name, (&raw mut value).cast(), &mut len) };
        (rc == 0).then_some(value)
    };
    option(libc::SO_DOMAIN) == Some(libc::AF_NETLINK) && option(libc::SO_PROTOCOL) == Some(libc::NETLINK_NETFILTER)
}
