//! The LB's rules, each once: as netlink expressions (what the kernel
//! gets) and as nft text (what a human reads, and what nft would compile
//! to the same expressions: a test in a namespace checks the kernel holds
//! the same rules either way).

use netsvc_core::graph::Protocol;
use netsvc_core::nft::NlRule;
use netsvc_core::nft::expr::{self, Base, CT_STATUS_DNAT, CtKey, Expr, REG_1, REG_2, reg32};

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
        let v6 = self.family.is_v6();
        let mut e = expr::l4proto_is(self.protocol).to_vec();
        match &self.pick {
            Pick::Remembered => e.push(expr::address(v6, true, REG_1)),
            Pick::Random { n } => e.push(Expr::NumgenRandom {
                modulus: *n,
                dreg: REG_1,
            }),
            Pick::Jhash { n, seed } => {
                // The flow's key from REG_2 on (32-bit register 4), hashed into REG_1.
                let fields = [
                    expr::address_field(v6, true),
                    (Base::Transport, 0, 2),
                    expr::address_field(v6, false),
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

impl Family {
    fn is_v6(self) -> bool {
        self == Family::V6
    }

    /// The 32-bit register after an address loaded into `reg32(0)`.
    fn after_addr(self) -> u32 {
        let (_, _, len) = expr::address_field(self.is_v6(), true);
        reg32(len / 4)
    }
}

/// `<f> daddr . meta l4proto . th dport`, loaded from `reg32(0)` on: a packet's frontend.
fn frontend_of_packet(f: Family) -> (String, Vec<Expr>) {
    let next = f.after_addr();
    let exprs = vec![
        expr::address(f.is_v6(), false, reg32(0)),
        Expr::MetaL4proto { dreg: next },
        Expr::Payload {
            base: Base::Transport,
            offset: 2,
            len: 2,
            dreg: next + 1,
        },
    ];
    (format!("{} daddr . meta l4proto . th dport", f.word()), exprs)
}

/// `ct status dnat`: the connection's destination was translated.
fn ct_status_dnat() -> [Expr; 3] {
    expr::ct_has(CtKey::Status, CT_STATUS_DNAT)
}

/// A packet to a frontend goes to the service port's chain (`vmap @map`).
pub fn dispatch(f: Family, map: &str) -> NlRule {
    let (key, mut exprs) = frontend_of_packet(f);
    exprs.push(Expr::Vmap {
        set: map.to_string(),
        sreg: reg32(0),
    });
    NlRule {
        exprs,
        text: format!("{key} vmap @{map}"),
    }
}

/// After DNAT, a connection of protocol `p` to a frontend jumps to its
/// service's affinity chain (`map`: frontend → chain).
pub fn remember(f: Family, p: Protocol, map: &str) -> NlRule {
    let w = f.word();
    let next = f.after_addr();
    let mut exprs = expr::l4proto_is(p).to_vec();
    exprs.extend(ct_status_dnat());
    exprs.extend([
        Expr::Ct {
            key: if f == Family::V4 { CtKey::DstIp } else { CtKey::DstIp6 },
            original: true,
            dreg: reg32(0),
        },
        Expr::MetaL4proto { dreg: next },
        Expr::Ct {
            key: CtKey::ProtoDst,
            original: true,
            dreg: next + 1,
        },
        Expr::Vmap {
            set: map.to_string(),
            sreg: reg32(0),
        },
    ]);
    NlRule {
        exprs,
        text: format!(
            "meta l4proto {} ct status dnat ct original {w} daddr . meta l4proto . ct original proto-dst vmap @{map}",
            p.as_str()
        ),
    }
}

/// A backend that reached itself through a VIP (`saddr . daddr` in `set`)
/// is masqueraded, so its reply comes back through the node.
pub fn hairpin(f: Family, set: &str) -> NlRule {
    let w = f.word();
    let mut exprs = ct_status_dnat().to_vec();
    exprs.extend([
        expr::address(f.is_v6(), true, reg32(0)),
        expr::address(f.is_v6(), false, f.after_addr()),
        Expr::InSet {
            set: set.to_string(),
            sreg: reg32(0),
            invert: false,
        },
        Expr::Masquerade,
    ]);
    NlRule {
        exprs,
        text: format!("ct status dnat {w} saddr . {w} daddr @{set} masquerade"),
    }
}

/// A packet to a frontend in `set` (a service without backends) is
/// rejected: TCP with a reset when `tcp`, anything else with an ICMP port
/// unreachable.
pub fn reject(f: Family, set: &str, tcp: bool) -> NlRule {
    let (key, mut exprs) = frontend_of_packet(f);
    exprs.push(Expr::InSet {
        set: set.to_string(),
        sreg: reg32(0),
        invert: false,
    });
    if tcp {
        exprs.extend(expr::l4proto_is(Protocol::Tcp));
    }
    exprs.push(Expr::Reject {
        tcp_reset: tcp,
        ipv6: f == Family::V6,
    });
    let verdict = if tcp {
        "meta l4proto tcp reject with tcp reset"
    } else {
        "reject"
    };
    NlRule {
        exprs,
        text: format!("{key} @{set} {verdict}"),
    }
}

/// Remembers (or refreshes) the client's backend in the clients map `map`.
pub fn update_client(f: Family, map: &str) -> NlRule {
    let w = f.word();
    NlRule {
        exprs: vec![
            expr::address(f.is_v6(), true, REG_1),
            expr::address(f.is_v6(), false, REG_2),
            Expr::DynsetUpdate {
                set: map.to_string(),
                sreg_key: REG_1,
                sreg_data: REG_2,
            },
        ],
        text: format!("update @{map} {{ {w} saddr : {w} daddr }}"),
    }
}
