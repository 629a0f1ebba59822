//! nf_tables netlink without libnftables: a batch's messages framed by
//! hand and sent on one socket per network namespace, each request
//! acknowledged. What goes in the messages is [`super::batch`]'s.

use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

use super::per_netns::PerNetns;

// linux/netfilter/nfnetlink.h.
pub(super) const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub(super) const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
pub(super) const NFNL_MSG_BATCH_END: u16 = 0x11;
const NLA_F_NESTED: u16 = 0x8000;
// linux/netlink.h.
pub(super) const NLM_F_REQUEST: u16 = 0x1;
pub(super) const NLM_F_ACK: u16 = 0x4;
pub(super) const NLM_F_CREATE: u16 = 0x400;
pub(super) const NLM_F_APPEND: u16 = 0x800;
const NLMSG_ERROR: u16 = 0x2;
const NLMSG_HDRLEN: usize = 16;
// linux/socket.h, linux/netlink.h.
const SOL_NETLINK: libc::c_int = 270;
const NETLINK_CAP_ACK: libc::c_int = 10;
/// Batches up to this size fit the socket's default send buffer (net.core.wmem_default).
const DEFAULT_SNDBUF: usize = 128 * 1024;

fn c_string(s: &str) -> Vec<u8> {
    let mut b = s.as_bytes().to_vec();
    b.push(0);
    b
}

/// A netlink message: header, nfgenmsg (family, version 0, resource id in
/// network order), then what `body` writes; the length is filled in last.
pub(super) fn message(
    out: &mut Vec<u8>,
    kind: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    body: impl FnOnce(&mut Vec<u8>),
) {
    let start = out.len();
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&[family, 0]);
    out.extend_from_slice(&res_id.to_be_bytes());
    body(out);
    let len = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

pub(super) fn attr(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    out.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    pad(out);
}

/// A 32-bit attribute: nf_tables takes them in network order.
pub(super) fn attr_u32(out: &mut Vec<u8>, kind: u16, value: u32) {
    attr(out, kind, &value.to_be_bytes());
}

pub(super) fn attr_str(out: &mut Vec<u8>, kind: u16, value: &str) {
    attr(out, kind, &c_string(value));
}

pub(super) fn nest(out: &mut Vec<u8>, kind: u16, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&0u16.to_ne_bytes());
    out.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    body(out);
    let len = (out.len() - start) as u16;
    out[start..start + 2].copy_from_slice(&len.to_ne_bytes());
}

fn pad(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// One socket per network namespace, kept for the life of the process (its
/// release is [`super::hand_off_sockets`]'s to make).
static SOCKETS: PerNetns<OwnedFd> = PerNetns::new();

/// Sequence numbers, unique in the process: the kernel answers a failed
/// batch's later requests too, and an answer left over from one batch must
/// not be taken for the next one's.
static SEQ: AtomicU32 = AtomicU32::new(1);

/// `n` fresh sequence numbers; the first of them.
pub(super) fn reserve_seqs(n: u32) -> u32 {
    SEQ.fetch_add(n, Ordering::Relaxed)
}

/// A batch the kernel refused: its error, and the sequence number of the
/// request it refused (`None`: the batch as a whole, such as a send that failed).
#[derive(Debug)]
pub(super) struct Refused {
    pub error: std::io::Error,
    pub seq: Option<u32>,
}

impl From<std::io::Error> for Refused {
    fn from(error: std::io::Error) -> Self {
        Refused { error, seq: None }
    }
}

/// Sends `batch` on this thread's namespace's socket and waits for the
/// kernel's answer to each request whose sequence number is in `asked`.
pub(super) fn send(batch: &[u8], asked: Range<u32>) -> Result<(), Refused> {
    SOCKETS.with(open_socket, |fd| talk(fd.as_raw_fd(), batch, asked))?
}

fn open_socket() -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned from here on.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_NETFILTER,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // A kernel that never answers must not hang a runtime.
    let timeout = libc::timeval { tv_sec: 5, tv_usec: 0 };
    set_option(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, timeout)?;
    // A refusal's answer carries the header of the refused request, not all
    // of it (a request can hold thousands of elements).
    set_option(fd.as_raw_fd(), SOL_NETLINK, NETLINK_CAP_ACK, 1 as libc::c_int)?;
    Ok(fd)
}

/// A socket option whose value is the plain data `value` (an int, a timeval).
fn set_option<T: Copy>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: T) -> std::io::Result<()> {
    // SAFETY: passes a live local of exactly the size given.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the kernel holds the object a GET request of `kind` (with the
/// attributes `body` writes) asks for: its answer, or ENOENT.
pub(super) fn holds(kind: u16, family: u8, body: impl FnOnce(&mut Vec<u8>)) -> std::io::Result<bool> {
    let seq = reserve_seqs(1);
    let mut msg = Vec::new();
    message(
        &mut msg,
        (NFNL_SUBSYS_NFTABLES << 8) | kind,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        family,
        0,
        body,
    );
    match send(&msg, seq..seq + 1) {
        Ok(()) => Ok(true),
        Err(r) if r.error.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(r) => Err(r.error),
    }
}

/// Sends `batch` and reads one answer per request in `asked`; the first
/// refusal is the error.
fn talk(fd: RawFd, batch: &[u8], asked: Range<u32>) -> Result<(), Refused> {
    // A batch is one message to the kernel, whatever its size (a Maglev
    // table's first backend fills thousands of slots at once).
    if batch.len() > DEFAULT_SNDBUF {
        let size = libc::c_int::try_from(batch.len() * 2).unwrap_or(libc::c_int::MAX);
        set_option(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, size)
            .or_else(|_| set_option(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, size))?;
    }
    // SAFETY: sockaddr_nl is plain data; all zeroes is the kernel's address.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: sends `batch` (live for the call) to the kernel's address.
    let sent = unsafe {
        libc::sendto(
            fd,
            batch.as_ptr().cast(),
            batch.len(),
            0,
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let mut answered = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while answered < asked.len() {
        // SAFETY: receives into `buf`, which outlives the call.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        for (seq, errno) in acks(&buf[..n as usize]) {
            if !asked.contains(&seq) {
                continue;
            }
            answered += 1;
            if errno != 0 {
                return Err(Refused {
                    error: std::io::Error::from_raw_os_error(errno),
                    seq: Some(seq),
                });
            }
        }
    }
    Ok(())
}

/// The sequence numbers and errnos of the NLMSG_ERROR messages in `buf` (0
/// is an acknowledgement).
fn acks(mut buf: &[u8]) -> Vec<(u32, i32)> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < NLMSG_HDRLEN || len > buf.len() {
            break;
        }
        if kind == NLMSG_ERROR && len >= NLMSG_HDRLEN + 4 {
            let e = &buf[NLMSG_HDRLEN..NLMSG_HDRLEN + 4];
            let seq = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
            out.push((seq, -i32::from_ne_bytes([e[0], e[1], e[2], e[3]])));
        }
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_are_read_from_error_messages() {
        let mut buf = Vec::new();
        for (seq, errno) in [(7u32, 0i32), (8, -2)] {
            buf.extend_from_slice(&20u32.to_ne_bytes());
            buf.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            buf.extend_from_slice(&[0; 2]);
            buf.extend_from_slice(&seq.to_ne_bytes());
            buf.extend_from_slice(&[0; 4]);
            buf.extend_from_slice(&errno.to_ne_bytes());
        }
        assert_eq!(acks(&buf), [(7, 0), (8, 2)]);
    }
}
