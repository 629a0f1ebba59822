//! Changes to one table sent over nf_tables netlink in one batch (one
//! transaction), without libnftables: the table itself, its chains, sets
//! and maps, their elements, and rules.
//!
//! Through libnftables a change costs loading the library, reading back the
//! table and parsing: about 3 ms of a 5 ms call. Here it is one message to
//! the kernel. Each change also has its text in nft's syntax, which is what
//! errors and `--dry-run` show.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use super::expr::{self, Expr};
use super::netlink::{
    NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END, NFNL_SUBSYS_NFTABLES, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE,
    NLM_F_REQUEST, attr, attr_str, message, nest, reserve_seqs, send,
};
use super::objects::{BaseChain, SetDecl, Verdict};
use super::{NftError, NftTable, validate_name};
use crate::inet::{IpNet, Protocol};

// linux/netfilter/nf_tables.h.
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_NEWSET: u16 = 9;
/// Since Linux 6.3: deleting what may already be gone.
const NFT_MSG_DESTROYTABLE: u16 = 26;
const NFT_MSG_DESTROYCHAIN: u16 = 27;
const NFT_MSG_DESTROYSET: u16 = 29;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
/// Since Linux 6.3.
const NFT_MSG_DESTROYSETELEM: u16 = 30;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_FLAGS: u16 = 2;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
/// libnftnl's rule udata: the comment's TLV type.
const NFTNL_UDATA_RULE_COMMENT: u8 = 0;
/// nft's longest comment (NFTNL_UDATA_COMMENT_MAXLEN), NUL included.
const COMMENT_MAX: usize = 128;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_SET_ELEM_USERDATA: u16 = 6;
const NFT_SET_ELEM_INTERVAL_END: u32 = 1;
/// libnftnl's element udata: flags (type 1) = NFTNL_SET_ELEM_F_INTERVAL_OPEN.
const INTERVAL_OPEN_USERDATA: [u8; 6] = [1, 4, 1, 0, 0, 0];
const NFTA_DATA_VALUE: u16 = 1;

/// Batches this process applied: what the agent reports, so a restart that
/// re-renders nothing can be told from one that re-renders all.
static BATCHES: AtomicU64 = AtomicU64::new(0);

/// How many batches this process has applied.
pub fn batches_applied() -> u64 {
    BATCHES.load(Ordering::Relaxed)
}

/// A request's elements are one netlink attribute, whose length is 16 bits:
/// 512 elements of the largest keys and values we write stay under 64 KiB.
const ELEMENTS_PER_REQUEST: usize = 512;
/// How much of a refused batch an error message shows.
const SHOWN: usize = 2048;

/// `text`, cut after [`SHOWN`] bytes (a batch can fill thousands of slots).
fn shortened(text: &str) -> String {
    if text.len() <= SHOWN {
        return text.to_string();
    }
    let cut = (0..=SHOWN).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    format!("{}… ({} more bytes)", &text[..cut], text.len() - cut)
}

/// Adding or deleting; destroying deletes what may already be gone (an
/// absent element is no error, so a removal can be repeated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementOp {
    Add,
    Delete,
    Destroy,
}

impl ElementOp {
    fn word(self) -> &'static str {
        match self {
            ElementOp::Add => "add",
            ElementOp::Delete => "delete",
            ElementOp::Destroy => "destroy",
        }
    }
}

/// A key or value of a set element: its bytes as the kernel compares them,
/// and its text as nft writes it (for messages and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datum {
    bytes: Vec<u8>,
    text: String,
    /// A verdict map's value instead of bytes.
    verdict: Option<Verdict>,
}

impl Datum {
    /// A verdict map's value: where the element sends a packet.
    pub fn verdict(v: Verdict) -> Self {
        Datum {
            bytes: Vec::new(),
            text: v.text(),
            verdict: Some(v),
        }
    }

    /// An `ipv4_addr` or `ipv6_addr`, in network order.
    pub fn addr(a: IpAddr) -> Self {
        let bytes = match a {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        Datum {
            bytes,
            text: a.to_string(),
            verdict: None,
        }
    }

    /// An `inet_proto`.
    pub fn protocol(p: Protocol) -> Self {
        Datum {
            bytes: vec![p.number()],
            text: p.as_str().to_string(),
            verdict: None,
        }
    }

    /// An `inet_service`, in network order.
    pub fn port(port: u16) -> Self {
        Datum {
            bytes: port.to_be_bytes().to_vec(),
            text: port.to_string(),
            verdict: None,
        }
    }

    /// A number as a register holds it (host order): what `numgen` and
    /// `jhash` compute, so the key of a map they look up.
    pub fn register_u32(n: u32) -> Self {
        Datum {
            bytes: n.to_ne_bytes().to_vec(),
            text: n.to_string(),
            verdict: None,
        }
    }

    /// `a . b . …`: each part padded to 4 bytes, as nft lays out a concatenation.
    pub fn concat(parts: &[Datum]) -> Self {
        let mut bytes = Vec::new();
        for p in parts {
            bytes.extend_from_slice(&p.bytes);
            bytes.resize(bytes.len().next_multiple_of(4), 0);
        }
        let texts: Vec<&str> = parts.iter().map(|p| p.text.as_str()).collect();
        Datum {
            bytes,
            text: texts.join(" . "),
            verdict: None,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl std::fmt::Display for Datum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// A rule as written over netlink: its expressions, and its text in nft's
/// syntax (what the same rule is when written through nft).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NlRule {
    pub exprs: Vec<Expr>,
    pub text: String,
}

/// An interval set's elements for `net`, as nft writes them: its first
/// address, then the first address after it flagged as the interval's end;
/// a prefix that runs to the top of the address space has no end, and its
/// start carries nft's "open interval" mark instead.
fn encode_interval(m: &mut Vec<u8>, net: &IpNet) {
    let bits: u32 = if net.is_ipv4() { 32 } else { 128 };
    let start: u128 = match net.addr {
        IpAddr::V4(a) => u32::from(a).into(),
        IpAddr::V6(a) => a.into(),
    };
    let size = 1u128.checked_shl(bits - u32::from(net.prefix));
    let end = size
        .and_then(|n| start.checked_add(n))
        .filter(|e| bits == 128 || *e <= u128::from(u32::MAX));
    let bytes = |v: u128| {
        if bits == 32 {
            (v as u32).to_be_bytes().to_vec()
        } else {
            v.to_be_bytes().to_vec()
        }
    };
    nest(m, NFTA_LIST_ELEM, |m| {
        nest(m, NFTA_SET_ELEM_KEY, |m| attr(m, NFTA_DATA_VALUE, &bytes(start)));
        if end.is_none() {
            attr(m, NFTA_SET_ELEM_USERDATA, &INTERVAL_OPEN_USERDATA);
        }
    });
    if let Some(end) = end {
        nest(m, NFTA_LIST_ELEM, |m| {
            attr(m, NFTA_SET_ELEM_FLAGS, &NFT_SET_ELEM_INTERVAL_END.to_be_bytes());
            nest(m, NFTA_SET_ELEM_KEY, |m| attr(m, NFTA_DATA_VALUE, &bytes(end)));
        });
    }
}

/// A rule comment as nft can hold it: no double quote (nft's strings have
/// no escapes), cut to nft's longest.
fn comment_text(comment: &str) -> String {
    let mut text: String = comment.replace('"', "'");
    while text.len() >= COMMENT_MAX {
        text.pop();
    }
    text
}

/// A rule comment as nft keeps it in the rule's userdata: one TLV holding
/// the text and its NUL.
fn comment_userdata(comment: &str) -> Vec<u8> {
    let text = comment_text(comment);
    let mut out = vec![NFTNL_UDATA_RULE_COMMENT, (text.len() + 1) as u8];
    out.extend_from_slice(text.as_bytes());
    out.push(0);
    out
}

#[derive(Debug, Clone)]
enum Change {
    AddTable,
    DestroyTable,
    AddChain {
        chain: String,
        base: Option<BaseChain>,
    },
    DestroyChain {
        chain: String,
    },
    AddSet {
        decl: SetDecl,
    },
    DestroySet {
        set: String,
        map: bool,
    },
    Element {
        op: ElementOp,
        set: String,
        key: Datum,
        value: Option<Datum>,
    },
    /// At the chain's head (`insert`), or at its end.
    Rule {
        chain: String,
        rule: NlRule,
        append: bool,
        /// nft's `comment "…"`, kept in the rule's userdata.
        comment: Option<String>,
    },
    /// A prefix into (or out of) an interval set: its first address, and
    /// the first address after it (marked as an interval's end) unless it
    /// runs to the top of the address space.
    Interval {
        op: ElementOp,
        set: String,
        net: IpNet,
    },
    /// The rule `handle` of `chain` goes.
    DeleteRule {
        chain: String,
        handle: u64,
    },
    Flush {
        chain: String,
    },
}

/// Element and rule changes to one table, applied as one transaction: all
/// of them or, when the kernel refuses one (a missing set or chain, deleting
/// an absent element), none.
#[derive(Debug, Clone)]
pub struct Batch {
    family: u8,
    family_word: String,
    table: String,
    changes: Vec<Change>,
}

impl Batch {
    pub fn new(table: &NftTable) -> Self {
        Batch {
            family: table.family().nfproto(),
            family_word: table.family().word().to_string(),
            table: table.name().to_string(),
            changes: Vec::new(),
        }
    }

    /// Adds (creates or keeps) the table.
    pub fn add_table(&mut self) -> &mut Self {
        self.changes.push(Change::AddTable);
        self
    }

    /// Deletes the table and everything in it, if it is there.
    pub fn destroy_table(&mut self) -> &mut Self {
        self.changes.push(Change::DestroyTable);
        self
    }

    /// Adds (creates or keeps) `chain`: a base chain when `base` says how.
    pub fn add_chain(&mut self, chain: &str, base: Option<BaseChain>) -> Result<&mut Self, NftError> {
        validate_name("chain", chain)?;
        self.changes.push(Change::AddChain {
            chain: chain.to_string(),
            base,
        });
        Ok(self)
    }

    /// Deletes `chain` if it is there (nothing may jump to it any more).
    pub fn destroy_chain(&mut self, chain: &str) -> Result<&mut Self, NftError> {
        validate_name("chain", chain)?;
        self.changes.push(Change::DestroyChain {
            chain: chain.to_string(),
        });
        Ok(self)
    }

    /// Adds (creates or keeps) a set or map.
    pub fn add_set(&mut self, decl: SetDecl) -> Result<&mut Self, NftError> {
        validate_name("set", &decl.name)?;
        self.changes.push(Change::AddSet { decl });
        Ok(self)
    }

    /// Deletes the set or map `set` if it is there (no rule may use it any more).
    pub fn destroy_set(&mut self, set: &str, map: bool) -> Result<&mut Self, NftError> {
        validate_name("set", set)?;
        self.changes.push(Change::DestroySet {
            set: set.to_string(),
            map,
        });
        Ok(self)
    }

    /// Every change of `other` (a batch of the same table), after these.
    pub fn extend(&mut self, other: Batch) -> &mut Self {
        debug_assert_eq!((self.family, &self.table), (other.family, &other.table));
        self.changes.extend(other.changes);
        self
    }

    /// `addr` into (or out of) the address set `set`.
    pub fn push(&mut self, op: ElementOp, set: &str, addr: IpAddr) -> Result<&mut Self, NftError> {
        self.element(op, set, Datum::addr(addr), None)
    }

    /// An element into (or out of) `set`; a map's element has a `value`
    /// (ignored by the kernel on delete).
    pub fn element(
        &mut self,
        op: ElementOp,
        set: &str,
        key: Datum,
        value: Option<Datum>,
    ) -> Result<&mut Self, NftError> {
        validate_name("set", set)?;
        self.changes.push(Change::Element {
            op,
            set: set.to_string(),
            key,
            value,
        });
        Ok(self)
    }

    /// The prefix `net` into (or out of) the interval set `set`.
    pub fn interval(&mut self, op: ElementOp, set: &str, net: IpNet) -> Result<&mut Self, NftError> {
        validate_name("set", set)?;
        self.changes.push(Change::Interval {
            op,
            set: set.to_string(),
            net: net.network(),
        });
        Ok(self)
    }

    /// `rule` at the head of `chain`.
    pub fn insert_rule(&mut self, chain: &str, rule: NlRule) -> Result<&mut Self, NftError> {
        self.rule(chain, rule, false)
    }

    /// `rule` at the end of `chain`.
    pub fn add_rule(&mut self, chain: &str, rule: NlRule) -> Result<&mut Self, NftError> {
        self.rule(chain, rule, true)
    }

    fn rule(&mut self, chain: &str, rule: NlRule, append: bool) -> Result<&mut Self, NftError> {
        self.commented_rule(chain, rule, append, None)
    }

    /// `rule` at the end of `chain` (or, unless `append`, at its head), with
    /// `comment` (nft's `comment "…"`, what a listing reads back).
    pub fn commented_rule(
        &mut self,
        chain: &str,
        rule: NlRule,
        append: bool,
        comment: Option<String>,
    ) -> Result<&mut Self, NftError> {
        validate_name("chain", chain)?;
        self.changes.push(Change::Rule {
            chain: chain.to_string(),
            rule,
            append,
            comment,
        });
        Ok(self)
    }

    /// Deletes the rule `handle` (as a listing gives it) of `chain`.
    pub fn delete_rule(&mut self, chain: &str, handle: u64) -> Result<&mut Self, NftError> {
        validate_name("chain", chain)?;
        self.changes.push(Change::DeleteRule {
            chain: chain.to_string(),
            handle,
        });
        Ok(self)
    }

    /// Deletes every rule of `chain`.
    pub fn flush_chain(&mut self, chain: &str) -> Result<&mut Self, NftError> {
        validate_name("chain", chain)?;
        self.changes.push(Change::Flush {
            chain: chain.to_string(),
        });
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
        BATCHES.fetch_add(1, Ordering::Relaxed);
        let requests = self.requests();
        let first = reserve_seqs(requests.len() as u32 + 2);
        let (bytes, asked) = self.encode(&requests, first);
        let start = asked.start;
        send(&bytes, asked).map_err(|refused| {
            let text = self.text();
            // The text has a line per request, in the order they were sent.
            let what = match refused.seq.and_then(|seq| text.lines().nth((seq - start) as usize)) {
                Some(line) => line.to_string(),
                None => format!("the batch:\n{}", shortened(&text)),
            };
            NftError::Refused {
                error: refused.error,
                what,
            }
        })
    }

    /// The batch in nft's syntax, one line per request, as `nft -f` would
    /// take it.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let at = format!("{} {}", self.family_word, self.table);
        for run in self.requests() {
            match &run[0] {
                Change::AddTable => {
                    let _ = writeln!(out, "add table {at}");
                }
                Change::DestroyTable => {
                    let _ = writeln!(out, "destroy table {at}");
                }
                Change::AddChain { chain, base: None } => {
                    let _ = writeln!(out, "add chain {at} {chain}");
                }
                Change::AddChain { chain, base: Some(b) } => {
                    let _ = writeln!(out, "add chain {at} {chain} {{ {} }}", b.text());
                }
                Change::DestroyChain { chain } => {
                    let _ = writeln!(out, "destroy chain {at} {chain}");
                }
                Change::AddSet { decl } => {
                    let kind = if decl.is_map() { "map" } else { "set" };
                    let _ = writeln!(out, "add {kind} {at} {} {{ {} }}", decl.name, decl.text);
                }
                Change::DestroySet { set, map } => {
                    let kind = if *map { "map" } else { "set" };
                    let _ = writeln!(out, "destroy {kind} {at} {set}");
                }
                Change::Element { op, set, .. } => {
                    let elems: Vec<String> = run
                        .iter()
                        .filter_map(|c| match c {
                            Change::Element {
                                key, value: Some(v), ..
                            } => Some(format!("{key} : {v}")),
                            Change::Element { key, value: None, .. } => Some(key.to_string()),
                            _ => None,
                        })
                        .collect();
                    let _ = writeln!(out, "{} element {at} {set} {{ {} }}", op.word(), elems.join(", "));
                }
                Change::Rule {
                    chain,
                    rule,
                    append,
                    comment,
                } => {
                    let verb = if *append { "add" } else { "insert" };
                    let _ = write!(out, "{verb} rule {at} {chain} {}", rule.text);
                    match comment {
                        Some(c) => writeln!(out, " comment \"{}\"", comment_text(c)),
                        None => writeln!(out),
                    }
                    .ok();
                }
                Change::DeleteRule { chain, handle } => {
                    let _ = writeln!(out, "delete rule {at} {chain} handle {handle}");
                }
                Change::Interval { op, set, .. } => {
                    let nets: Vec<String> = run
                        .iter()
                        .filter_map(|c| match c {
                            Change::Interval { net, .. } if *net == IpNet::host(net.addr) => Some(net.addr.to_string()),
                            Change::Interval { net, .. } => Some(net.to_string()),
                            _ => None,
                        })
                        .collect();
                    let _ = writeln!(out, "{} element {at} {set} {{ {} }}", op.word(), nets.join(", "));
                }
                Change::Flush { chain } => {
                    let _ = writeln!(out, "flush chain {at} {chain}");
                }
            }
        }
        out
    }

    /// The changes grouped into requests: a run of element changes with
    /// the same op and set is one request (of at most
    /// [`ELEMENTS_PER_REQUEST`]); a rule or a flush is one each.
    fn requests(&self) -> Vec<&[Change]> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.changes.len() {
            let run = match &self.changes[i] {
                Change::Element { op, set, .. } => self.changes[i..]
                    .iter()
                    .take(ELEMENTS_PER_REQUEST)
                    .take_while(|c| matches!(c, Change::Element { op: o, set: s, .. } if o == op && s == set))
                    .count(),
                // Two elements each.
                Change::Interval { op, set, .. } => self.changes[i..]
                    .iter()
                    .take(ELEMENTS_PER_REQUEST / 2)
                    .take_while(|c| matches!(c, Change::Interval { op: o, set: s, .. } if o == op && s == set))
                    .count(),
                _ => 1,
            };
            out.push(&self.changes[i..i + run]);
            i += run;
        }
        out
    }

    /// The bytes of `requests` (this batch's, grouped) between the batch
    /// markers, numbered from `first`, and the sequence numbers of the
    /// messages the kernel answers.
    fn encode(&self, requests: &[&[Change]], first: u32) -> (Vec<u8>, Range<u32>) {
        let mut out = Vec::new();
        let mut seq = first;
        let mut next_seq = || {
            seq += 1;
            seq - 1
        };
        let sub = NFNL_SUBSYS_NFTABLES;
        message(
            &mut out,
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            next_seq(),
            0,
            sub,
            |_| {},
        );
        for run in requests {
            let (kind, flags) = match &run[0] {
                Change::AddTable => (NFT_MSG_NEWTABLE, NLM_F_CREATE),
                Change::DestroyTable => (NFT_MSG_DESTROYTABLE, 0),
                Change::AddChain { .. } => (NFT_MSG_NEWCHAIN, NLM_F_CREATE),
                Change::DestroyChain { .. } => (NFT_MSG_DESTROYCHAIN, 0),
                Change::AddSet { .. } => (NFT_MSG_NEWSET, NLM_F_CREATE),
                Change::DestroySet { .. } => (NFT_MSG_DESTROYSET, 0),
                Change::Element { op, .. } | Change::Interval { op, .. } => match op {
                    ElementOp::Add => (NFT_MSG_NEWSETELEM, NLM_F_CREATE),
                    ElementOp::Delete => (NFT_MSG_DELSETELEM, 0),
                    ElementOp::Destroy => (NFT_MSG_DESTROYSETELEM, 0),
                },
                Change::Rule { append: true, .. } => (NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND),
                Change::Rule { append: false, .. } => (NFT_MSG_NEWRULE, NLM_F_CREATE),
                Change::Flush { .. } | Change::DeleteRule { .. } => (NFT_MSG_DELRULE, 0),
            };
            let kind = (sub << 8) | kind;
            let seq = next_seq();
            message(
                &mut out,
                kind,
                NLM_F_REQUEST | NLM_F_ACK | flags,
                seq,
                self.family,
                0,
                |m| self.encode_request(m, run, seq),
            );
        }
        message(&mut out, NFNL_MSG_BATCH_END, NLM_F_REQUEST, next_seq(), 0, sub, |_| {});
        (out, first + 1..first + 1 + requests.len() as u32)
    }

    /// A request's attributes; `seq` (unique in the process) also names a
    /// new set within the batch.
    fn encode_request(&self, m: &mut Vec<u8>, run: &[Change], seq: u32) {
        match &run[0] {
            Change::AddTable | Change::DestroyTable => {
                attr_str(m, NFTA_TABLE_NAME, &self.table);
                attr(m, NFTA_TABLE_FLAGS, &0u32.to_be_bytes());
            }
            Change::AddChain { chain, base } => {
                attr_str(m, NFTA_CHAIN_TABLE, &self.table);
                attr_str(m, NFTA_CHAIN_NAME, chain);
                if let Some(b) = base {
                    b.encode(m);
                }
            }
            Change::DestroyChain { chain } => {
                attr_str(m, NFTA_CHAIN_TABLE, &self.table);
                attr_str(m, NFTA_CHAIN_NAME, chain);
            }
            Change::AddSet { decl } => {
                attr_str(m, NFTA_SET_TABLE, &self.table);
                attr_str(m, NFTA_SET_NAME, &decl.name);
                decl.encode(m, seq);
            }
            Change::DestroySet { set, .. } => {
                attr_str(m, NFTA_SET_TABLE, &self.table);
                attr_str(m, NFTA_SET_NAME, set);
            }
            Change::Element { set, .. } => {
                attr_str(m, NFTA_SET_ELEM_LIST_TABLE, &self.table);
                attr_str(m, NFTA_SET_ELEM_LIST_SET, set);
                nest(m, NFTA_SET_ELEM_LIST_ELEMENTS, |m| {
                    for change in run {
                        let Change::Element { key, value, op, .. } = change else {
                            continue;
                        };
                        nest(m, NFTA_LIST_ELEM, |m| {
                            nest(m, NFTA_SET_ELEM_KEY, |m| attr(m, NFTA_DATA_VALUE, key.bytes()));
                            // A deleted element is found by its key alone.
                            if let (Some(v), ElementOp::Add) = (value, op) {
                                nest(m, NFTA_SET_ELEM_DATA, |m| match &v.verdict {
                                    Some(verdict) => verdict.encode(m),
                                    None => attr(m, NFTA_DATA_VALUE, v.bytes()),
                                });
                            }
                        });
                    }
                });
            }
            Change::Rule {
                chain, rule, comment, ..
            } => {
                attr_str(m, NFTA_RULE_TABLE, &self.table);
                attr_str(m, NFTA_RULE_CHAIN, chain);
                nest(m, NFTA_RULE_EXPRESSIONS, |m| expr::encode_list(m, &rule.exprs));
                if let Some(c) = comment {
                    attr(m, NFTA_RULE_USERDATA, &comment_userdata(c));
                }
            }
            Change::Interval { set, .. } => {
                attr_str(m, NFTA_SET_ELEM_LIST_TABLE, &self.table);
                attr_str(m, NFTA_SET_ELEM_LIST_SET, set);
                nest(m, NFTA_SET_ELEM_LIST_ELEMENTS, |m| {
                    for change in run {
                        if let Change::Interval { net, .. } = change {
                            encode_interval(m, net);
                        }
                    }
                });
            }
            Change::DeleteRule { chain, handle } => {
                attr_str(m, NFTA_RULE_TABLE, &self.table);
                attr_str(m, NFTA_RULE_CHAIN, chain);
                attr(m, NFTA_RULE_HANDLE, &handle.to_be_bytes());
            }
            Change::Flush { chain } => {
                attr_str(m, NFTA_RULE_TABLE, &self.table);
                attr_str(m, NFTA_RULE_CHAIN, chain);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::Family;

    fn batch() -> Batch {
        let table = NftTable::new(Family::Inet, "netsvc_firewall").unwrap();
        let mut b = Batch::new(&table);
        b.push(ElementOp::Add, "all4", "10.0.0.2".parse().unwrap()).unwrap();
        b.push(ElementOp::Add, "all4", "10.0.0.3".parse().unwrap()).unwrap();
        b.push(ElementOp::Delete, "web4", "fd00::2".parse().unwrap()).unwrap();
        b.flush_chain("c").unwrap();
        b
    }

    /// Each message is whole and 4-byte aligned; one request per (op, set)
    /// run and per rule change; the elements are the addresses' bytes in
    /// network order.
    #[test]
    fn a_batch_is_begin_requests_end() {
        let b = batch();
        let (bytes, asked) = b.encode(&b.requests(), 40);
        assert_eq!(asked, 41..44);
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
                sub | NFT_MSG_DELRULE,
                NFNL_MSG_BATCH_END
            ]
        );
        let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        assert!(has(&[10, 0, 0, 2]) && has(&[10, 0, 0, 3]));
        assert!(has(&"fd00::2".parse::<std::net::Ipv6Addr>().unwrap().octets()));
        assert!(has(b"netsvc_firewall\0") && has(b"all4\0") && has(b"web4\0"));
        assert_eq!(
            batch().text(),
            "add element inet netsvc_firewall all4 { 10.0.0.2, 10.0.0.3 }\n\
             delete element inet netsvc_firewall web4 { fd00::2 }\n\
             flush chain inet netsvc_firewall c\n"
        );
    }

    #[test]
    fn a_concatenated_key_pads_each_part() {
        let k = Datum::concat(&[
            Datum::addr("10.96.0.10".parse().unwrap()),
            Datum::protocol(Protocol::Tcp),
            Datum::port(80),
        ]);
        assert_eq!(k.bytes(), [10, 96, 0, 10, 6, 0, 0, 0, 0, 80, 0, 0]);
        assert_eq!(k.to_string(), "10.96.0.10 . tcp . 80");
    }

    #[test]
    fn the_text_has_a_line_per_request() {
        let b = batch();
        assert_eq!(b.text().lines().count(), b.requests().len());
    }

    #[test]
    fn a_long_run_of_elements_is_split_into_requests() {
        let table = NftTable::new(Family::Inet, "t").unwrap();
        let mut b = Batch::new(&table);
        for slot in 0..1300u32 {
            b.element(ElementOp::Add, "m", Datum::register_u32(slot), Some(Datum::port(80)))
                .unwrap();
        }
        let sizes: Vec<usize> = b.requests().iter().map(|r| r.len()).collect();
        assert_eq!(sizes, [512, 512, 276]);
        let (_, asked) = b.encode(&b.requests(), 1);
        assert_eq!(asked.len(), 3);
        let failed = shortened(&b.text());
        assert!(
            failed.len() < SHOWN + 100 && failed.ends_with("more bytes)"),
            "{failed}"
        );
    }

    #[test]
    fn names_are_checked() {
        let table = NftTable::new(Family::Inet, "t").unwrap();
        let mut b = Batch::new(&table);
        assert!(
            b.push(ElementOp::Add, "bad name;", "10.0.0.1".parse().unwrap())
                .is_err()
        );
        assert!(b.flush_chain("bad name;").is_err());
    }
}
