//! The expressions of a rule as nf_tables netlink carries them: what a rule
//! written over [`super::Batch`] is made of. Only the expressions netsvc's
//! fast paths write are here; the kernel checks each one as it would nft's.

use super::Family;
use super::netlink::{attr, attr_str, attr_u32, nest};
use super::objects::Verdict;
use crate::inet::Protocol;

/// The 16-byte registers (`reg 1`, `reg 2` in nft's debug output).
pub const REG_1: u32 = 1;
pub const REG_2: u32 = 2;

/// The 32-bit register `i` (0..16); `reg32(4)` is where `REG_2` starts.
pub const fn reg32(i: u32) -> u32 {
    8 + i
}

/// Where a payload load starts counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    Network = 1,
    Transport = 2,
}

/// One expression of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `meta l4proto` into `dreg`.
    MetaL4proto { dreg: u32 },
    /// `meta nfproto` (the packet's family, `NFPROTO_IPV4`/`IPV6`) into `dreg`.
    MetaNfproto { dreg: u32 },
    /// The rule goes on only when `sreg` compares to `value` as `op` says
    /// (as big-endian bytes).
    Cmp { op: CmpOp, sreg: u32, value: Vec<u8> },
    /// `ct <key>` (of the original direction when `original`) into `dreg`.
    Ct { key: CtKey, original: bool, dreg: u32 },
    /// `(sreg & mask) ^ xor` into `dreg`, over `mask.len()` bytes.
    Bitwise {
        sreg: u32,
        dreg: u32,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    /// Membership of `sreg`'s key in the set `set` (the rule goes on when
    /// it is there, or with `invert` when it is not).
    InSet { set: String, sreg: u32, invert: bool },
    /// Counts packets and bytes.
    Counter,
    /// At most `rate` packets a second (bursts of `burst`); the rule stops
    /// for the rest.
    Limit { rate: u64, burst: u32 },
    /// Logs the packet with `prefix`, to NFLOG group `group` when given.
    Log { prefix: String, group: Option<u16> },
    /// Ends the rule with a verdict.
    Verdict(Verdict),
    /// The verdict `sreg`'s key maps to in the verdict map `set`.
    Vmap { set: String, sreg: u32 },
    /// Masquerade (SNAT to the outgoing interface's address).
    Masquerade,
    /// Reject: a TCP reset, or an ICMP (ICMPv6) port unreachable.
    Reject { tcp_reset: bool, ipv6: bool },
    /// Adds or refreshes `sreg_key` → `sreg_data` in the dynamic map `set`.
    DynsetUpdate { set: String, sreg_key: u32, sreg_data: u32 },
    /// `len` bytes of the packet at `base + offset` into `dreg`.
    Payload {
        base: Base,
        offset: u32,
        len: u32,
        dreg: u32,
    },
    /// `numgen random mod modulus` into `dreg`.
    NumgenRandom { modulus: u32, dreg: u32 },
    /// `jhash` of `len` bytes from `sreg`, `mod modulus`, into `dreg`.
    Jhash {
        sreg: u32,
        len: u32,
        modulus: u32,
        seed: u32,
        dreg: u32,
    },
    /// The value `sreg`'s key maps to in the map `set`, into `dreg`.
    Lookup { set: String, sreg: u32, dreg: u32 },
    /// `value` into `dreg`.
    Immediate { value: Vec<u8>, dreg: u32 },
    /// DNAT (to `family`'s addresses) to the address in `addr` and the port in `port`.
    Dnat { family: Family, addr: u32, port: u32 },
}

/// How a comparison compares (NFT_CMP_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq = 0,
    Neq = 1,
    Lte = 3,
    Gte = 5,
}

/// What `ct` loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtKey {
    State = 0,
    Status = 2,
    ProtoDst = 12,
    DstIp = 20,
    DstIp6 = 22,
}

/// The bit of `ct status` a DNAT sets (IPS_DST_NAT).
pub const CT_STATUS_DNAT: u32 = 0x20;
/// The bits of `ct state` (NF_CT_STATE_BIT): established, related.
pub const CT_STATE_ESTABLISHED: u32 = 0x2;
pub const CT_STATE_RELATED: u32 = 0x4;

/// `sreg` compared to `value` by `op`.
pub fn cmp(op: CmpOp, sreg: u32, value: impl Into<Vec<u8>>) -> Expr {
    Expr::Cmp {
        op,
        sreg,
        value: value.into(),
    }
}

/// The rule goes on only when `sreg` holds a value from `from` to `to`
/// (both included, as big-endian bytes): two comparisons, as nft writes a range.
pub fn in_range(sreg: u32, from: &[u8], to: &[u8]) -> [Expr; 2] {
    [cmp(CmpOp::Gte, sreg, from), cmp(CmpOp::Lte, sreg, to)]
}

/// `meta l4proto <p>`: the rule goes on for packets of protocol `p` only.
pub fn l4proto_is(p: Protocol) -> [Expr; 2] {
    [Expr::MetaL4proto { dreg: REG_1 }, cmp(CmpOp::Eq, REG_1, [p.number()])]
}

/// `ct <key> <bits>`: the rule goes on when any of `bits` is set in the
/// connection's `key` (its state, its status).
pub fn ct_has(key: CtKey, bits: u32) -> [Expr; 3] {
    [
        Expr::Ct {
            key,
            original: false,
            dreg: REG_1,
        },
        Expr::Bitwise {
            sreg: REG_1,
            dreg: REG_1,
            mask: bits.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        },
        cmp(CmpOp::Neq, REG_1, [0; 4]),
    ]
}

/// Where an IPv4 or IPv6 header holds its source (or destination)
/// address: (base, offset, length), as [`Expr::concat`] takes a field.
pub fn address_field(ipv6: bool, source: bool) -> (Base, u32, u32) {
    let (offset, len) = match (ipv6, source) {
        (false, true) => (12, 4),
        (false, false) => (16, 4),
        (true, true) => (8, 16),
        (true, false) => (24, 16),
    };
    (Base::Network, offset, len)
}

/// The source (or destination) address into `dreg`: `ip saddr` and its kin.
pub fn address(ipv6: bool, source: bool, dreg: u32) -> Expr {
    let (base, offset, len) = address_field(ipv6, source);
    Expr::Payload {
        base,
        offset,
        len,
        dreg,
    }
}

// linux/netfilter/nf_tables.h.
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFT_META_L4PROTO: u32 = 16;
const NFT_META_NFPROTO: u32 = 15;
const NFT_LOOKUP_F_INV: u32 = 1;
const NFT_LIMIT_PKTS: u32 = 0;
/// `limit rate N/second`: the unit, in seconds.
const LIMIT_PER_SECOND: u64 = 1;
const NFT_REG_VERDICT: u32 = 0;
const NFT_REJECT_ICMP_UNREACH: u32 = 0;
const NFT_REJECT_TCP_RST: u32 = 1;
const ICMP_PORT_UNREACH: u8 = 3;
const ICMPV6_PORT_UNREACH: u8 = 4;
const NFT_DYNSET_OP_UPDATE: u32 = 1;
const NFT_NG_RANDOM: u32 = 1;
const NFT_HASH_JENKINS: u32 = 0;
const NFT_NAT_DNAT: u32 = 1;
const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 2;

impl Expr {
    /// Loads `fields` (base, offset, length) one after another from the
    /// 32-bit register `first` on, each padded to 4 bytes as nft lays out a
    /// concatenation; also the concatenation's length.
    pub fn concat(fields: &[(Base, u32, u32)], first: u32) -> (Vec<Expr>, u32) {
        let mut exprs = Vec::new();
        let mut at = first;
        for &(base, offset, len) in fields {
            exprs.push(Expr::Payload {
                base,
                offset,
                len,
                dreg: reg32(at),
            });
            at += len.div_ceil(4);
        }
        (exprs, (at - first) * 4)
    }

    fn name(&self) -> &'static str {
        match self {
            Expr::MetaL4proto { .. } | Expr::MetaNfproto { .. } => "meta",
            Expr::Counter => "counter",
            Expr::Limit { .. } => "limit",
            Expr::Log { .. } => "log",
            Expr::Verdict(_) => "immediate",
            Expr::Cmp { .. } => "cmp",
            Expr::Ct { .. } => "ct",
            Expr::Bitwise { .. } => "bitwise",
            Expr::InSet { .. } | Expr::Vmap { .. } => "lookup",
            Expr::Masquerade => "masq",
            Expr::Reject { .. } => "reject",
            Expr::DynsetUpdate { .. } => "dynset",
            Expr::Payload { .. } => "payload",
            Expr::NumgenRandom { .. } => "numgen",
            Expr::Jhash { .. } => "hash",
            Expr::Lookup { .. } => "lookup",
            Expr::Immediate { .. } => "immediate",
            Expr::Dnat { .. } => "nat",
        }
    }

    /// The attributes of the expression's NFTA_EXPR_DATA, numbered as in
    /// nf_tables.h (NFTA_META_*, NFTA_CMP_*, …).
    fn encode_data(&self, m: &mut Vec<u8>) {
        let value = |m: &mut Vec<u8>, kind: u16, bytes: &[u8]| nest(m, kind, |m| attr(m, NFTA_DATA_VALUE, bytes));
        match self {
            Expr::MetaL4proto { dreg } => {
                attr_u32(m, 1, *dreg);
                attr_u32(m, 2, NFT_META_L4PROTO);
            }
            Expr::MetaNfproto { dreg } => {
                attr_u32(m, 1, *dreg);
                attr_u32(m, 2, NFT_META_NFPROTO);
            }
            Expr::Counter => {
                attr(m, 1, &0u64.to_be_bytes()); // bytes
                attr(m, 2, &0u64.to_be_bytes()); // packets
            }
            Expr::Limit { rate, burst } => {
                attr(m, 1, &rate.to_be_bytes());
                attr(m, 2, &LIMIT_PER_SECOND.to_be_bytes());
                attr_u32(m, 3, *burst);
                attr_u32(m, 4, NFT_LIMIT_PKTS);
                attr_u32(m, 5, 0); // flags
            }
            Expr::Log { prefix, group } => {
                if let Some(g) = group {
                    attr(m, 1, &g.to_be_bytes());
                }
                attr_str(m, 2, prefix);
            }
            Expr::Verdict(v) => {
                attr_u32(m, 1, 0); // NFT_REG_VERDICT
                nest(m, 2, |m| v.encode(m));
            }
            Expr::Cmp { op, sreg, value: v } => {
                attr_u32(m, 1, *sreg);
                attr_u32(m, 2, *op as u32);
                value(m, 3, v);
            }
            Expr::Ct { key, original, dreg } => {
                attr_u32(m, 1, *dreg);
                attr_u32(m, 2, *key as u32);
                if *original {
                    attr(m, 3, &[0]); // IP_CT_DIR_ORIGINAL, one byte
                }
            }
            Expr::Bitwise { sreg, dreg, mask, xor } => {
                attr_u32(m, 1, *sreg);
                attr_u32(m, 2, *dreg);
                attr_u32(m, 3, mask.len() as u32);
                value(m, 4, mask);
                value(m, 5, xor);
            }
            Expr::InSet { set, sreg, invert } => {
                attr_str(m, 1, set);
                attr_u32(m, 2, *sreg);
                if *invert {
                    attr_u32(m, 5, NFT_LOOKUP_F_INV);
                }
            }
            Expr::Vmap { set, sreg } => {
                attr_str(m, 1, set);
                attr_u32(m, 2, *sreg);
                attr_u32(m, 3, NFT_REG_VERDICT);
            }
            Expr::Masquerade => {}
            Expr::Reject { tcp_reset, ipv6 } => {
                let (kind, code) = match (tcp_reset, ipv6) {
                    (true, _) => (NFT_REJECT_TCP_RST, 0),
                    (false, false) => (NFT_REJECT_ICMP_UNREACH, ICMP_PORT_UNREACH),
                    (false, true) => (NFT_REJECT_ICMP_UNREACH, ICMPV6_PORT_UNREACH),
                };
                attr_u32(m, 1, kind);
                attr(m, 2, &[code]);
            }
            Expr::DynsetUpdate {
                set,
                sreg_key,
                sreg_data,
            } => {
                attr_str(m, 1, set);
                attr_u32(m, 3, NFT_DYNSET_OP_UPDATE);
                attr_u32(m, 4, *sreg_key);
                attr_u32(m, 5, *sreg_data);
            }
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => {
                attr_u32(m, 1, *dreg);
                attr_u32(m, 2, *base as u32);
                attr_u32(m, 3, *offset);
                attr_u32(m, 4, *len);
            }
            Expr::NumgenRandom { modulus, dreg } => {
                attr_u32(m, 1, *dreg);
                attr_u32(m, 2, *modulus);
                attr_u32(m, 3, NFT_NG_RANDOM);
            }
            Expr::Jhash {
                sreg,
                len,
                modulus,
                seed,
                dreg,
            } => {
                attr_u32(m, 1, *sreg);
                attr_u32(m, 2, *dreg);
                attr_u32(m, 3, *len);
                attr_u32(m, 4, *modulus);
                attr_u32(m, 5, *seed);
                attr_u32(m, 7, NFT_HASH_JENKINS);
            }
            Expr::Lookup { set, sreg, dreg } => {
                attr_str(m, 1, set);
                attr_u32(m, 2, *sreg);
                attr_u32(m, 3, *dreg);
            }
            Expr::Immediate { value: v, dreg } => {
                attr_u32(m, 1, *dreg);
                value(m, 2, v);
            }
            Expr::Dnat { family, addr, port } => {
                attr_u32(m, 1, NFT_NAT_DNAT);
                attr_u32(m, 2, u32::from(family.nfproto()));
                attr_u32(m, 3, *addr);
                attr_u32(m, 5, *port);
                // As nft sends it; the kernel adds "addresses mapped" itself.
                attr_u32(m, 7, NF_NAT_RANGE_PROTO_SPECIFIED);
            }
        }
    }
}

/// NFTA_RULE_EXPRESSIONS' content: one list element per expression.
pub(super) fn encode_list(m: &mut Vec<u8>, exprs: &[Expr]) {
    for e in exprs {
        nest(m, NFTA_LIST_ELEM, |m| {
            attr_str(m, NFTA_EXPR_NAME, e.name());
            nest(m, NFTA_EXPR_DATA, |m| e.encode_data(m));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_concatenation_pads_each_field_to_four_bytes() {
        let (loads, len) = Expr::concat(
            &[
                (Base::Network, 12, 4),
                (Base::Transport, 0, 2),
                (Base::Network, 16, 4),
                (Base::Transport, 2, 2),
            ],
            4,
        );
        let regs: Vec<u32> = loads
            .iter()
            .map(|e| match e {
                Expr::Payload { dreg, .. } => *dreg,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(regs, [12, 13, 14, 15]);
        assert_eq!(len, 16);
        let (_, len6) = Expr::concat(&[(Base::Network, 8, 16), (Base::Transport, 0, 2)], 4);
        assert_eq!(len6, 20);
    }
}
