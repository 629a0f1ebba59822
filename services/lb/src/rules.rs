//! The rule of a port chain, once: as nft text (the full path writes it
//! through nft) and as netlink expressions (the fast path writes it over
//! netlink). A test in a namespace checks the kernel holds the same rule
//! either way.

use netsvc_core::graph::Protocol;
use netsvc_core::nft::NlRule;
use netsvc_core::nft::expr::{Base, Expr, REG_1, REG_2, reg32};

use crate::model::Family;

/// How a port chain's rule finds the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    /// The client's remembered backend in the clients map (ClientIP affinity).
    Remembered,
    /// A slot chosen at random among `n`.
    Random { n: u32 },
    /// A slot chosen by the jhash of the flow's addresses and ports (Maglev).
    Jhash { n: u32, seed: u32 },
}

/// DNAT of one port's packets to a backend picked from `map`, on `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRule {
    pub family: Family,
    pub protocol: Protocol,
    pub target: u16,
    pub pick: Pick,
    /// The clients map (`Remembered`) or the slots map.
    pub map: String,
}

impl PortRule {
    /// The rule in nft's syntax.
    pub fn text(&self) -> String {
        let f = self.family.word();
        let key = match &self.pick {
            Pick::Remembered => format!("{f} saddr"),
            Pick::Random { n } => format!("numgen random mod {n}"),
            Pick::Jhash { n, seed } => {
                format!("jhash {f} saddr . th sport . {f} daddr . th dport mod {n} seed 0x{seed:08x}")
            }
        };
        format!(
            "meta l4proto {} dnat {f} to {key} map @{} : {}",
            self.protocol.as_str(),
            self.map,
            self.target
        )
    }

    /// The rule's expressions, laid out as nft lays out [`Self::text`].
    pub fn exprs(&self) -> Vec<Expr> {
        let (saddr, daddr, len) = match self.family {
            Family::V4 => (12, 16, 4),
            Family::V6 => (8, 24, 16),
        };
        let mut e = vec![
            Expr::MetaL4proto { dreg: REG_1 },
            Expr::CmpEq {
                sreg: REG_1,
                value: vec![self.protocol.number()],
            },
        ];
        match &self.pick {
            Pick::Remembered => e.push(Expr::Payload {
                base: Base::Network,
                offset: saddr,
                len,
                dreg: REG_1,
            }),
            Pick::Random { n } => e.push(Expr::NumgenRandom {
                modulus: *n,
                dreg: REG_1,
            }),
            Pick::Jhash { n, seed } => {
                // The flow's key from REG_2 on (32-bit register 4), hashed into REG_1.
                let fields = [
                    (Base::Network, saddr, len),
                    (Base::Transport, 0, 2),
                    (Base::Network, daddr, len),
                    (Base::Transport, 2, 2),
                ];
                let (loads, key_len) = Expr::concat(&fields, 4);
                e.extend(loads);
                e.push(Expr::Jhash {
                    sreg: reg32(4),
                    len: key_len,
                    modulus: *n,
                    seed: *seed,
                    dreg: REG_1,
                });
            }
        }
        e.extend([
            Expr::Lookup {
                set: self.map.clone(),
                sreg: REG_1,
                dreg: REG_1,
            },
            Expr::Immediate {
                value: self.target.to_be_bytes().to_vec(),
                dreg: REG_2,
            },
            Expr::Dnat {
                family: self.family.nf(),
                addr: REG_1,
                port: REG_2,
            },
        ]);
        e
    }

    /// Both forms, for a netlink batch.
    pub fn netlink(&self) -> NlRule {
        NlRule {
            exprs: self.exprs(),
            text: self.text(),
        }
    }
}
