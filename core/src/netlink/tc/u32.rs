//! u32 classifier selectors: IPv4 header matches packed into 32-bit keys the
//! way iproute2's `f_u32.c` packs them (`match ip dst 10.0.0.0/24` …). Pure.
//!
//! Port matches assume an IPv4 header without options (IHL 5), exactly like
//! `tc … u32 match ip dport N`. IPv6 matches are not supported here.

use std::net::Ipv4Addr;

use netlink_packet_route::tc::{TcU32Key, TcU32Selector, TcU32SelectorFlags};

use crate::netlink::{NetlinkError, Result};

/// One match on the IPv4 header (or the transport ports right after it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum U32Match {
    /// Source address within `addr/len`.
    Src(Ipv4Addr, u8),
    /// Destination address within `addr/len`.
    Dst(Ipv4Addr, u8),
    /// IP protocol number (6 TCP, 17 UDP, …).
    Protocol(u8),
    /// Transport source port.
    Sport(u16),
    /// Transport destination port.
    Dport(u16),
    /// The whole TOS byte under a mask (`match ip tos V M`).
    Tos { value: u8, mask: u8 },
    /// The DSCP code point (upper 6 bits of the TOS byte), 0–63.
    Dscp(u8),
    /// Every packet (`match u32 0 0`).
    All,
}

fn prefix_mask(len: u8) -> u32 {
    if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) }
}

/// Add a key (`val`/`mask` as host-order numbers read big-endian from the
/// packet, at 4-aligned `off`), merging with an existing key at the same
/// offset like iproute2's `pack_key`.
fn pack(keys: &mut Vec<TcU32Key>, val: u32, mask: u32, off: i32) -> Result<()> {
    let val = val & mask;
    if let Some(k) = keys.iter_mut().find(|k| k.off == off && k.offmask == 0) {
        if (k.val ^ val) & (k.mask & mask) != 0 {
            return Err(NetlinkError::invalid(
                "match",
                format!("conflicting matches at offset {off}"),
            ));
        }
        k.val |= val;
        k.mask |= mask;
        return Ok(());
    }
    if keys.len() >= 128 {
        return Err(NetlinkError::invalid("match", "more than 128 u32 keys"));
    }
    let mut key = TcU32Key::default();
    key.val = val;
    key.mask = mask;
    key.off = off;
    keys.push(key);
    Ok(())
}

/// A byte at header offset `off`, shifted into its position in the word.
fn pack8(keys: &mut Vec<TcU32Key>, val: u8, mask: u8, off: i32) -> Result<()> {
    let shift = 8 * (3 - (off & 3)) as u32;
    pack(keys, u32::from(val) << shift, u32::from(mask) << shift, off & !3)
}

/// A 16-bit field at header offset `off` (2-aligned).
fn pack16(keys: &mut Vec<TcU32Key>, val: u16, off: i32) -> Result<()> {
    let shift = if off & 3 == 0 { 16 } else { 0 };
    pack(keys, u32::from(val) << shift, 0xffff << shift, off & !3)
}

/// The `tc_u32_sel` for all of `matches` (ANDed). `terminal` is set when the
/// filter has a class or an action, as iproute2 does.
pub fn selector(matches: &[U32Match], terminal: bool) -> Result<TcU32Selector> {
    let mut keys = Vec::new();
    for m in matches {
        match *m {
            U32Match::Src(addr, len) | U32Match::Dst(addr, len) => {
                if len > 32 {
                    return Err(NetlinkError::invalid(
                        "match",
                        format!("{addr}/{len}: prefix longer than 32"),
                    ));
                }
                let off = if matches!(m, U32Match::Src(..)) { 12 } else { 16 };
                pack(&mut keys, u32::from(addr), prefix_mask(len), off)?;
            }
            U32Match::Protocol(p) => pack8(&mut keys, p, 0xff, 9)?,
            U32Match::Tos { value, mask } => pack8(&mut keys, value, mask, 1)?,
            U32Match::Dscp(d) => {
                if d > 63 {
                    return Err(NetlinkError::invalid("match", format!("dscp {d} is not in 0..=63")));
                }
                pack8(&mut keys, d << 2, 0xfc, 1)?
            }
            U32Match::Sport(p) => pack16(&mut keys, p, 20)?,
            U32Match::Dport(p) => pack16(&mut keys, p, 22)?,
            U32Match::All => pack(&mut keys, 0, 0, 0)?,
        }
    }
    if keys.is_empty() {
        pack(&mut keys, 0, 0, 0)?;
    }
    let mut sel = TcU32Selector::default();
    if terminal {
        sel.flags = TcU32SelectorFlags::Terminal;
    }
    sel.nkeys = keys.len() as u8;
    sel.keys = keys;
    Ok(sel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::Emitable;

    fn k(val: u32, mask: u32, off: i32) -> (u32, u32, i32) {
        (val, mask, off)
    }

    fn keys(sel: &TcU32Selector) -> Vec<(u32, u32, i32)> {
        sel.keys.iter().map(|x| (x.val, x.mask, x.off)).collect()
    }

    #[test]
    fn iproute2_key_layouts() {
        // match ip dst 10.1.2.0/24 match ip protocol 6 0xff match ip dport 80 0xffff
        let sel = selector(
            &[
                U32Match::Dst(Ipv4Addr::new(10, 1, 2, 3), 24),
                U32Match::Protocol(6),
                U32Match::Dport(80),
                U32Match::Sport(1024),
            ],
            true,
        )
        .unwrap();
        assert_eq!(
            keys(&sel),
            vec![
                k(0x0a01_0200, 0xffff_ff00, 16),
                k(0x0006_0000, 0x00ff_0000, 8),
                k(0x0400_0050, 0xffff_ffff, 20)
            ]
        );
        assert_eq!(sel.nkeys, 3);
        assert!(sel.flags.contains(TcU32SelectorFlags::Terminal));
    }

    #[test]
    fn tos_dscp_src_all() {
        let sel = selector(
            &[U32Match::Dscp(46), U32Match::Src(Ipv4Addr::new(192, 168, 0, 1), 32)],
            false,
        )
        .unwrap();
        assert_eq!(
            keys(&sel),
            vec![k(0x00b8_0000, 0x00fc_0000, 0), k(0xc0a8_0001, 0xffff_ffff, 12)]
        );
        let sel = selector(
            &[U32Match::Tos {
                value: 0x10,
                mask: 0xff,
            }],
            false,
        )
        .unwrap();
        assert_eq!(keys(&sel), vec![k(0x0010_0000, 0x00ff_0000, 0)]);
        assert_eq!(keys(&selector(&[], false).unwrap()), vec![k(0, 0, 0)]);
        assert_eq!(keys(&selector(&[U32Match::All], true).unwrap()), vec![k(0, 0, 0)]);
    }

    #[test]
    fn wire_bytes_are_big_endian() {
        let sel = selector(&[U32Match::Dst(Ipv4Addr::new(10, 0, 0, 0), 8)], true).unwrap();
        let mut buf = vec![0u8; sel.buffer_len()];
        sel.emit(&mut buf);
        // tc_u32_sel header: flags, offshift, nkeys, pad, offmask, off, offoff, hoff, hmask
        assert_eq!(&buf[0..3], &[1, 0, 1]);
        // key: mask ff000000, val 0a000000 (both network order), off 16, offmask 0
        assert_eq!(&buf[16..24], &[0xff, 0, 0, 0, 10, 0, 0, 0]);
        assert_eq!(&buf[24..28], &16i32.to_ne_bytes());
    }

    #[test]
    fn rejects_bad_matches() {
        assert!(selector(&[U32Match::Dscp(64)], false).is_err());
        assert!(selector(&[U32Match::Dst(Ipv4Addr::LOCALHOST, 33)], false).is_err());
        assert!(selector(&[U32Match::Protocol(6), U32Match::Protocol(17)], false).is_err());
    }
}
