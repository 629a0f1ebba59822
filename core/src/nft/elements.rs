//! Address elements added to and deleted from a table's sets over nf_tables
//! netlink, in one batch (one transaction), without libnftables.
//!
//! This is what a firewall ADD or DEL does to the kernel: a few elements in
//! named sets that already exist. Through libnftables that costs loading the
//! library, reading back the table's chains and sets, and parsing: about
//! 3 ms of a 5 ms call. Here it is one message to the kernel. Anything else
//! (creating sets, rules) goes through [`super::NftTable::apply`].

use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nftables::types::NfFamily;

use super::per_netns::PerNetns;
use super::{NftError, NftTable, validate_name};

// linux/netfilter/nfnetlink.h and nf_tables.h.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_DATA_VALUE: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;
// linux/netlink.h.
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 0x2;
const NLMSG_HDRLEN: usize = 16;

/// Adding or deleting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementOp {
    Add,
    Delete,
}

impl ElementOp {
    fn word(self) -> &'static str {
        match self {
            ElementOp::Add => "add",
            ElementOp::Delete => "delete",
        }
    }
}

/// Element changes to the sets of one table, applied as one transaction:
/// all of them or, when the kernel refuses one (a missing set, deleting an
/// absent element), none.
#[derive(Debug, Clone)]
pub struct ElementBatch {
    family: u8,
    table: String,
    changes: Vec<(ElementOp, String, IpAddr)>,
}

impl ElementBatch {
    pub fn new(table: &NftTable) -> Self {
        ElementBatch {
            family: nfproto(table.family()),
            table: table.name().to_string(),
            changes: Vec::new(),
        }
    }

    /// `addr` into (or out of) the address set `set` (a set of
    /// `ipv4_addr` or `ipv6_addr`, without the interval flag).
    pub fn push(&mut self, op: ElementOp, set: &str, addr: IpAddr) -> Result<&mut Self, NftError> {
        validate_name("set", set)?;
        self.changes.push((op, set.to_string(), addr));
        Ok(self)
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Sends the batch on this thread's namespace's socket and waits for
    /// the kernel's answer to each change.
    pub fn apply(&self) -> Result<(), NftError> {
        if self.changes.is_empty() {
            return Ok(());
        }
        let (bytes, requests) = self.encode();
        let sent = SOCKETS.with(open_socket, |fd| talk(fd.as_raw_fd(), &bytes, requests));
        sent.and_then(|answer| answer).map_err(|e| NftError::Failed {
            status: "nf_tables netlink".into(),
            stderr: format!("{} elements in table {}: {e}", self.summary(), self.table),
        })
    }

    fn summary(&self) -> String {
        let parts: Vec<String> = self
            .changes
            .iter()
            .map(|(op, set, addr)| format!("{} {addr} in {set}", op.word()))
            .collect();
        parts.join(", ")
    }

    /// The batch's bytes, and how many of its messages the kernel answers.
    fn encode(&self) -> (Vec<u8>, u32) {
        let mut out = Vec::new();
        let mut seq = 0;
        let mut next_seq = || {
            seq += 1;
            seq
        };
        message(
            &mut out,
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            next_seq(),
            0,
            NFNL_SUBSYS_NFTABLES,
            |_| {},
        );
        let mut requests = 0;
        // One message per (op, set), holding all of its elements, in order.
        let mut i = 0;
        while i < self.changes.len() {
            let (op, set, _) = &self.changes[i];
            let run = self.changes[i..]
                .iter()
                .take_while(|(o, s, _)| o == op && s == set)
                .count();
            let (kind, flags) = match op {
                ElementOp::Add => (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE),
                ElementOp::Delete => (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK),
            };
            let kind = (NFNL_SUBSYS_NFTABLES << 8) | kind;
            let addrs = self.changes[i..i + run].iter().map(|(_, _, a)| *a);
            message(&mut out, kind, flags, next_seq(), self.family, 0, |m| {
                attr(m, NFTA_SET_ELEM_LIST_TABLE, &c_string(&self.table));
                attr(m, NFTA_SET_ELEM_LIST_SET, &c_string(set));
                nest(m, NFTA_SET_ELEM_LIST_ELEMENTS, |m| {
                    for addr in addrs {
                        nest(m, NFTA_LIST_ELEM, |m| {
                            nest(m, NFTA_SET_ELEM_KEY, |m| attr(m, NFTA_DATA_VALUE, &address_bytes(addr)));
                        });
                    }
                });
            });
            requests += 1;
            i += run;
        }
        message(
            &mut out,
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            next_seq(),
            0,
            NFNL_SUBSYS_NFTABLES,
            |_| {},
        );
        (out, requests)
    }
}

fn nfproto(family: NfFamily) -> u8 {
    match family {
        NfFamily::INet => 1,
        NfFamily::IP => 2,
        NfFamily::ARP => 3,
        NfFamily::NetDev => 5,
        NfFamily::Bridge => 7,
        NfFamily::IP6 => 10,
    }
}

fn address_bytes(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn c_string(s: &str) -> Vec<u8> {
    let mut b = s.as_bytes().to_vec();
    b.push(0);
    b
}

/// A netlink message: header, nfgenmsg (family, version 0, resource id in
/// network order), then what `body` writes; the length is filled in last.
fn message(
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

fn attr(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    out.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    pad(out);
}

fn nest(out: &mut Vec<u8>, kind: u16, body: impl FnOnce(&mut Vec<u8>)) {
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
    // SAFETY: a timeval-sized option from a live local.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// Sends `batch` and reads one answer per request; the first refusal is the error.
fn talk(fd: RawFd, batch: &[u8], requests: u32) -> std::io::Result<()> {
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
        return Err(std::io::Error::last_os_error());
    }
    let mut answered = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while answered < requests {
        // SAFETY: receives into `buf`, which outlives the call.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        for errno in acks(&buf[..n as usize]) {
            answered += 1;
            if errno != 0 {
                return Err(std::io::Error::from_raw_os_error(errno));
            }
        }
    }
    Ok(())
}

/// The errnos of the NLMSG_ERROR messages in `buf` (0 is an acknowledgement).
fn acks(mut buf: &[u8]) -> Vec<i32> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < NLMSG_HDRLEN || len > buf.len() {
            break;
        }
        if kind == NLMSG_ERROR && len >= NLMSG_HDRLEN + 4 {
            let e = &buf[NLMSG_HDRLEN..NLMSG_HDRLEN + 4];
            out.push(-i32::from_ne_bytes([e[0], e[1], e[2], e[3]]));
        }
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> ElementBatch {
        let table = NftTable::new(NfFamily::INet, "netsvc_firewall").unwrap();
        let mut b = ElementBatch::new(&table);
        b.push(ElementOp::Add, "all4", "10.0.0.2".parse().unwrap()).unwrap();
        b.push(ElementOp::Add, "all4", "10.0.0.3".parse().unwrap()).unwrap();
        b.push(ElementOp::Delete, "web4", "fd00::2".parse().unwrap()).unwrap();
        b
    }

    /// Each message is whole and 4-byte aligned; one request per (op, set)
    /// run; the elements are the addresses' bytes in network order.
    #[test]
    fn a_batch_is_begin_requests_end() {
        let (bytes, requests) = batch().encode();
        assert_eq!(requests, 2);
        let mut kinds = Vec::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let len = u32::from_ne_bytes(rest[..4].try_into().unwrap()) as usize;
            assert!(len.is_multiple_of(4) && len <= rest.len());
            kinds.push(u16::from_ne_bytes([rest[4], rest[5]]));
            rest = &rest[len..];
        }
        let sub = NFNL_SUBSYS_NFTABLES << 8;
        assert_eq!(
            kinds,
            [
                NFNL_MSG_BATCH_BEGIN,
                sub | NFT_MSG_NEWSETELEM,
                sub | NFT_MSG_DELSETELEM,
                NFNL_MSG_BATCH_END
            ]
        );
        let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        assert!(has(&[10, 0, 0, 2]) && has(&[10, 0, 0, 3]));
        assert!(has(&"fd00::2".parse::<std::net::Ipv6Addr>().unwrap().octets()));
        assert!(has(b"netsvc_firewall\0") && has(b"all4\0") && has(b"web4\0"));
    }

    #[test]
    fn set_names_are_checked() {
        let table = NftTable::new(NfFamily::INet, "t").unwrap();
        assert!(
            ElementBatch::new(&table)
                .push(ElementOp::Add, "bad name;", "10.0.0.1".parse().unwrap())
                .is_err()
        );
    }

    #[test]
    fn acks_are_read_from_error_messages() {
        let mut buf = Vec::new();
        for errno in [0i32, -2] {
            buf.extend_from_slice(&20u32.to_ne_bytes());
            buf.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            buf.extend_from_slice(&[0; 10]);
            buf.extend_from_slice(&errno.to_ne_bytes());
        }
        assert_eq!(acks(&buf), [0, 2]);
    }
}
