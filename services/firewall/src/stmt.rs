//! The statements of the firewall's rules, each once: as nf_tables netlink
//! expressions (what the kernel gets) and as nft text (what a human reads,
//! and what nft compiles to the same expressions; `tests/tests/nft_forms.rs`
//! holds the two together).

use netsvc_core::nft::expr::{self, Base, CT_STATE_ESTABLISHED, CT_STATE_RELATED, CmpOp, CtKey, Expr, REG_1};
use netsvc_core::nft::{NlRule, Verdict};

use crate::config::Protocol;
use crate::model::Fam;

/// Bursts a log's rate limit lets through (nft's default).
const LIMIT_BURST: u32 = 5;

/// One statement of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stmt {
    /// `ct state established,related`: replies and related packets.
    Replies,
    /// `meta nfproto ipv4|ipv6`: packets of one family.
    Family(Fam),
    /// `ip saddr @set` (`daddr` unless `source`; `!=` when `negate`).
    Addr {
        fam: Fam,
        source: bool,
        set: String,
        negate: bool,
    },
    /// `meta l4proto tcp`.
    L4(Protocol),
    /// `th dport 80` or `th dport 8080-8090`.
    Dport(u16, u16),
    /// `limit rate N/second`.
    Limit(u32),
    /// `log prefix "…"` (to an nflog group when given).
    Log {
        prefix: String,
        group: Option<u16>,
    },
    Counter,
    Verdict(Verdict),
}

impl Stmt {
    pub fn text(&self) -> String {
        match self {
            Stmt::Replies => "ct state established,related".into(),
            Stmt::Family(f) => format!("meta nfproto {}", nfproto_word(*f)),
            Stmt::Addr {
                fam,
                source,
                set,
                negate,
            } => format!(
                "{} {} {}@{set}",
                fam.proto(),
                if *source { "saddr" } else { "daddr" },
                if *negate { "!= " } else { "" }
            ),
            Stmt::L4(p) => format!("meta l4proto {}", p.as_str()),
            Stmt::Dport(lo, hi) if lo == hi => format!("th dport {lo}"),
            Stmt::Dport(lo, hi) => format!("th dport {lo}-{hi}"),
            Stmt::Limit(rate) => format!("limit rate {rate}/second"),
            Stmt::Log { prefix, group } => {
                let mut t = format!("log prefix \"{}\"", prefix.replace('"', "'"));
                if let Some(g) = group {
                    t.push_str(&format!(" group {g}"));
                }
                t
            }
            Stmt::Counter => "counter".into(),
            Stmt::Verdict(v) => v.text(),
        }
    }

    /// The expressions, laid out as nft lays out [`Self::text`] in an inet
    /// table (an address match checks the family first).
    pub fn exprs(&self) -> Vec<Expr> {
        match self {
            Stmt::Replies => expr::ct_has(CtKey::State, CT_STATE_ESTABLISHED | CT_STATE_RELATED).to_vec(),
            Stmt::Family(f) => vec![
                Expr::MetaNfproto { dreg: REG_1 },
                expr::cmp(CmpOp::Eq, REG_1, [nfproto(*f)]),
            ],
            Stmt::Addr {
                fam,
                source,
                set,
                negate,
            } => {
                let mut e = Stmt::Family(*fam).exprs();
                e.extend([
                    expr::address(*fam == Fam::V6, *source, REG_1),
                    Expr::InSet {
                        set: set.clone(),
                        sreg: REG_1,
                        invert: *negate,
                    },
                ]);
                e
            }
            Stmt::L4(p) => expr::l4proto_is(*p).to_vec(),
            Stmt::Dport(lo, hi) => {
                let mut e = vec![Expr::Payload {
                    base: Base::Transport,
                    offset: 2,
                    len: 2,
                    dreg: REG_1,
                }];
                if lo == hi {
                    e.push(expr::cmp(CmpOp::Eq, REG_1, lo.to_be_bytes()));
                } else {
                    e.extend(expr::in_range(REG_1, &lo.to_be_bytes(), &hi.to_be_bytes()));
                }
                e
            }
            Stmt::Limit(rate) => vec![Expr::Limit {
                rate: u64::from(*rate),
                burst: LIMIT_BURST,
            }],
            Stmt::Log { prefix, group } => vec![Expr::Log {
                prefix: prefix.replace('"', "'"),
                group: *group,
            }],
            Stmt::Counter => vec![Expr::Counter],
            Stmt::Verdict(v) => vec![Expr::Verdict(v.clone())],
        }
    }
}

/// A rule's statements as one rule: their text joined, their expressions in order.
pub fn rule(stmts: &[Stmt]) -> NlRule {
    NlRule {
        exprs: stmts.iter().flat_map(Stmt::exprs).collect(),
        text: text(stmts),
    }
}

/// A rule's statements as nft writes them.
pub fn text(stmts: &[Stmt]) -> String {
    stmts.iter().map(Stmt::text).collect::<Vec<_>>().join(" ")
}

fn nfproto(f: Fam) -> u8 {
    match f {
        Fam::V4 => 2,  // NFPROTO_IPV4
        Fam::V6 => 10, // NFPROTO_IPV6
    }
}

fn nfproto_word(f: Fam) -> &'static str {
    match f {
        Fam::V4 => "ipv4",
        Fam::V6 => "ipv6",
    }
}
