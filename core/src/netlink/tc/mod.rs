//! Traffic control: HTB/TBF/ingress qdiscs, HTB classes, u32 filters (with a
//! class target, or a mirred redirect to an ifb — the bandwidth-plugin
//! pattern).
//!
//! **Units.** A [`Rate`] is stored in **bytes per second** — the kernel's unit
//! in `tc_ratespec` and the 64-bit rate attributes. Build one from bits/s (the
//! unit of CNI's `bandwidth` capability and of `tc … rate 1mbit`) with
//! [`Rate::from_bits_per_sec`] (rounds down to whole bytes). Bursts, buffers
//! and limits are **bytes**; they are converted to scheduler ticks with the
//! factors of `/proc/net/psched` ([`psched::Psched`]).
//!
//! **Handles** are `u32` `major:minor` as the kernel stores them; build them
//! with [`handle`]. Qdisc handles have minor 0 (`1:` = `handle(1, 0)`).
//!
//! Encoding ([`htb`], [`tbf`], [`u32`]) is pure, and so are the functions
//! here that wrap the encoded options in a [`Request`]: send one alone
//! ([`Rtnl::send`]) or a tree in one datagram ([`Rtnl::apply`]).

use netlink_packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::tc::{TcAttribute, TcHandle, TcMessage, TcOption, TcStats2};

use super::{NetlinkError, Request, Result, Rtnl};

pub mod filter;
pub mod htb;
pub mod psched;
pub mod tbf;
pub mod u32;

pub use filter::{delete_filters, filter_info, mirred_redirect, redirect_filter, u32_class_filter};
pub use htb::{HtbClass, HtbQdisc};
pub use psched::Psched;
pub use tbf::{Tbf, TbfLimit};
pub use u32::U32Match;

/// `TC_H_ROOT`: the parent of a root qdisc.
pub const ROOT: u32 = 0xffff_ffff;
/// `TC_H_INGRESS`: the parent of the ingress qdisc.
pub const INGRESS_PARENT: u32 = 0xffff_fff1;
/// `ffff:` — the ingress qdisc's handle, parent of ingress filters.
pub const INGRESS_HANDLE: u32 = 0xffff_0000;
/// `ETH_P_IP`.
pub const ETH_P_IP: u16 = 0x0800;
/// `ETH_P_ALL` (`protocol all`).
pub const ETH_P_ALL: u16 = 0x0003;

/// `major:minor` as one `u32` handle.
pub const fn handle(major: u16, minor: u16) -> u32 {
    ((major as u32) << 16) | minor as u32
}

/// A rate in **bytes per second**.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Rate(u64);

impl Rate {
    pub const fn from_bytes_per_sec(bytes: u64) -> Rate {
        Rate(bytes)
    }
    /// From bits per second, rounding down to whole bytes (as `tc` does).
    pub const fn from_bits_per_sec(bits: u64) -> Rate {
        Rate(bits / 8)
    }
    pub const fn bytes_per_sec(self) -> u64 {
        self.0
    }
    pub const fn bits_per_sec(self) -> u64 {
        self.0.saturating_mul(8)
    }
    /// The 32-bit `tc_ratespec.rate` (saturated; the full rate then goes in
    /// the `*_RATE64` attribute).
    pub fn saturating_u32(self) -> u32 {
        u32::try_from(self.0).unwrap_or(u32::MAX)
    }
}

/// One netlink attribute: type and payload (the payload's layout is native
/// endian, as the kernel's C structs are).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawNla {
    pub kind: u16,
    pub value: Vec<u8>,
}

impl RawNla {
    pub fn new(kind: u16, value: Vec<u8>) -> RawNla {
        RawNla { kind, value }
    }
}

/// `struct tc_ratespec` for an Ethernet link layer: cell_log, linklayer 1,
/// overhead 0, cell_align -1, mpu 0, rate.
pub(crate) fn ratespec(cell_log: u8, rate32: u32) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[0] = cell_log;
    b[1] = 1; // TC_LINKLAYER_ETHERNET
    b[4..6].copy_from_slice(&(-1i16).to_ne_bytes());
    b[8..12].copy_from_slice(&rate32.to_ne_bytes());
    b
}

/// Whether an add may replace an existing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Fail with `EEXIST` when present (`tc … add`).
    Add,
    /// Create or replace (`tc … replace`), for idempotent ADD.
    Replace,
}

impl Mode {
    fn flags(self) -> u16 {
        match self {
            Mode::Add => NLM_F_CREATE | NLM_F_EXCL,
            Mode::Replace => NLM_F_CREATE | NLM_F_REPLACE,
        }
    }
}

/// Build a `TcMessage` (pure): header + `TCA_KIND` + `TCA_OPTIONS` nest.
pub fn message(
    ifindex: u32,
    parent: u32,
    handle: u32,
    info: u32,
    kind: &str,
    options: Vec<TcOption>,
) -> Result<TcMessage> {
    let index = i32::try_from(ifindex).map_err(|_| NetlinkError::invalid("ifindex", ifindex))?;
    let mut msg = TcMessage::with_index(index);
    msg.header.parent = TcHandle::from(parent);
    msg.header.handle = TcHandle::from(handle);
    msg.header.info = info;
    msg.attributes.push(TcAttribute::Kind(kind.to_string()));
    if !options.is_empty() {
        msg.attributes.push(TcAttribute::Options(options));
    }
    Ok(msg)
}

/// Wrap raw NLAs as `TCA_OPTIONS` children.
pub fn raw_options(nlas: Vec<RawNla>) -> Vec<TcOption> {
    nlas.into_iter()
        .map(|n| TcOption::Other(DefaultNla::new(n.kind, n.value)))
        .collect()
}

/// An HTB qdisc with handle `major:` at `parent` ([`ROOT`]), added (or
/// replaced).
pub fn htb_qdisc(ifindex: u32, parent: u32, major: u16, q: &HtbQdisc, mode: Mode) -> Result<Request> {
    let msg = message(ifindex, parent, handle(major, 0), 0, "htb", raw_options(q.encode()?))?;
    let msg = RouteNetlinkMessage::NewQueueDiscipline(msg);
    Ok(Request::new("add htb qdisc", msg, mode.flags()))
}

/// HTB class `classid` under `parent` (the qdisc `1:` or a parent class
/// `1:1`), added (or replaced).
pub fn htb_class(
    ifindex: u32,
    parent: u32,
    classid: u32,
    class: &HtbClass,
    ps: &Psched,
    mode: Mode,
) -> Result<Request> {
    let msg = message(ifindex, parent, classid, 0, "htb", raw_options(class.encode(ps)?))?;
    let msg = RouteNetlinkMessage::NewTrafficClass(msg);
    Ok(Request::new("add htb class", msg, mode.flags()))
}

/// A TBF qdisc at `parent` ([`ROOT`] for the bandwidth plugin's shaping)
/// with handle `major:` (0 lets the kernel pick), added (or replaced).
pub fn tbf_qdisc(ifindex: u32, parent: u32, major: u16, tbf: &Tbf, ps: &Psched, mode: Mode) -> Result<Request> {
    let options = raw_options(tbf.encode(ps)?);
    let msg = message(ifindex, parent, handle(major, 0), 0, "tbf", options)?;
    let msg = RouteNetlinkMessage::NewQueueDiscipline(msg);
    Ok(Request::new("add tbf qdisc", msg, mode.flags()))
}

/// The ingress qdisc (`ffff:`).
pub fn ingress_qdisc(ifindex: u32, mode: Mode) -> Result<Request> {
    let msg = message(ifindex, INGRESS_PARENT, INGRESS_HANDLE, 0, "ingress", Vec::new())?;
    let msg = RouteNetlinkMessage::NewQueueDiscipline(msg);
    Ok(Request::new("add ingress qdisc", msg, mode.flags()))
}

/// The deletion of the qdisc at `parent` ([`ROOT`] or [`INGRESS_PARENT`]).
/// No such qdisc (or no such link) counts as done.
pub fn qdisc_deletion(ifindex: u32, parent: u32) -> Result<Request> {
    // Handle 0: the kernel deletes whatever qdisc sits at `parent`. A
    // default (handle 0) qdisc or an absent ingress answers ENOENT.
    let mut msg = message(ifindex, parent, 0, 0, "", Vec::new())?;
    msg.attributes.clear();
    let msg = RouteNetlinkMessage::DelQueueDiscipline(msg);
    Ok(Request::new("delete qdisc", msg, 0).missing_ok())
}

/// Delete the qdisc at `parent` ([`ROOT`] or [`INGRESS_PARENT`]). No such
/// qdisc (or no such link) is `Ok`.
pub fn delete_qdisc(rtnl: &mut Rtnl, ifindex: u32, parent: u32) -> Result<()> {
    rtnl.send(qdisc_deletion(ifindex, parent)?)
}

/// What a qdisc or class dump tells: kind, handle, parent, bytes sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcObject {
    pub kind: String,
    pub handle: u32,
    pub parent: u32,
    /// Bytes it has sent (whole frames, GSO segments counted one by one).
    pub bytes: u64,
}

fn object(msg: &TcMessage) -> TcObject {
    let kind = msg
        .attributes
        .iter()
        .find_map(|a| match a {
            TcAttribute::Kind(k) => Some(k.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let bytes = msg
        .attributes
        .iter()
        .find_map(|a| match a {
            TcAttribute::Stats2(stats) => stats.iter().find_map(|s| match s {
                TcStats2::Basic(basic) => Some(basic.bytes),
                _ => None,
            }),
            TcAttribute::Stats(stats) => Some(stats.bytes),
            _ => None,
        })
        .unwrap_or_default();
    TcObject {
        kind,
        handle: u32::from(msg.header.handle),
        parent: u32::from(msg.header.parent),
        bytes,
    }
}

/// The qdiscs of link `ifindex` (for CHECK).
pub fn list_qdiscs(rtnl: &mut Rtnl, ifindex: u32) -> Result<Vec<TcObject>> {
    let query = RouteNetlinkMessage::GetQueueDiscipline(query(ifindex, 0)?);
    Ok(dumped(rtnl.dump("list qdiscs", query)?)
        .filter(|m| i64::from(m.header.index) == i64::from(ifindex))
        .map(|m| object(&m))
        .collect())
}

/// The classes of link `ifindex` (for CHECK).
pub fn list_classes(rtnl: &mut Rtnl, ifindex: u32) -> Result<Vec<TcObject>> {
    let query = RouteNetlinkMessage::GetTrafficClass(query(ifindex, 0)?);
    Ok(dumped(rtnl.dump("list classes", query)?).map(|m| object(&m)).collect())
}

/// The filters of link `ifindex` at `parent` ([`INGRESS_PARENT`]'s are
/// the ingress qdisc's); none when the link or the qdisc is missing.
pub fn list_filters(rtnl: &mut Rtnl, ifindex: u32, parent: u32) -> Result<Vec<TcMessage>> {
    let query = RouteNetlinkMessage::GetTrafficFilter(query(ifindex, parent)?);
    match rtnl.dump("list filters", query) {
        Ok(answers) => Ok(dumped(answers).collect()),
        // No such qdisc (EINVAL) or link: no filters.
        Err(e) if e.is_not_found() || e.errno() == Some(libc::EINVAL) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// A dump's query for the objects of link `ifindex` under `parent`.
fn query(ifindex: u32, parent: u32) -> Result<TcMessage> {
    let mut msg = TcMessage::default();
    msg.header.index = i32::try_from(ifindex).map_err(|_| NetlinkError::invalid("ifindex", ifindex))?;
    msg.header.parent = TcHandle::from(parent);
    Ok(msg)
}

/// The tc messages among a dump's answers.
fn dumped(answers: Vec<RouteNetlinkMessage>) -> impl Iterator<Item = TcMessage> {
    answers.into_iter().filter_map(|m| match m {
        RouteNetlinkMessage::NewQueueDiscipline(m)
        | RouteNetlinkMessage::NewTrafficClass(m)
        | RouteNetlinkMessage::NewTrafficFilter(m) => Some(m),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::Emitable;

    #[test]
    fn rate_units() {
        let r = Rate::from_bits_per_sec(1_000_007);
        assert_eq!(r.bytes_per_sec(), 125_000);
        assert_eq!(r.bits_per_sec(), 1_000_000);
        assert_eq!(Rate::from_bytes_per_sec(5 << 32).saturating_u32(), u32::MAX);
    }

    #[test]
    fn handles_and_info() {
        assert_eq!(handle(1, 0x10), 0x0001_0010);
        assert_eq!(u32::from(TcHandle::from(handle(0xffff, 0))), INGRESS_HANDLE);
        assert_eq!(filter_info(1, ETH_P_IP).to_ne_bytes()[..2], ETH_P_IP.to_be_bytes());
        assert_eq!(filter_info(3, ETH_P_ALL) >> 16, 3);
    }

    #[test]
    fn htb_qdisc_message_bytes() {
        let q = HtbQdisc {
            default_class: 0x10,
            r2q: 10,
            direct_qlen: None,
        };
        let msg = message(7, ROOT, handle(1, 0), 0, "htb", raw_options(q.encode().unwrap())).unwrap();
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.emit(&mut buf);
        // tcmsg: family, pad×3, ifindex 7, handle 1:0, parent ffff:ffff, info 0
        assert_eq!(&buf[0..4], &[0, 0, 0, 0]);
        assert_eq!(&buf[4..8], &7i32.to_ne_bytes());
        assert_eq!(&buf[8..12], &0x0001_0000u32.to_ne_bytes());
        assert_eq!(&buf[12..16], &ROOT.to_ne_bytes());
        // TCA_KIND "htb\0": len 8, type 1
        assert_eq!(&buf[20..28], &[8, 0, 1, 0, b'h', b't', b'b', 0]);
        // TCA_OPTIONS (type 2) holding TCA_HTB_INIT (len 24, type 2)
        assert_eq!(u16::from_ne_bytes([buf[30], buf[31]]) & 0x3fff, 2);
        assert_eq!(u16::from_ne_bytes([buf[28], buf[29]]), 4 + 24);
        assert_eq!(&buf[32..36], &[24, 0, 2, 0]);
        assert_eq!(&buf[36..40], &3u32.to_ne_bytes());
        assert_eq!(&buf[44..48], &0x10u32.to_ne_bytes());
        assert_eq!(buf.len(), 56);
    }
}
