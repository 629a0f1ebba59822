//! nftables batches for one service's own table.
//!
//! An [`NftTable`] is bound to one (family, table) pair: every command of a
//! batch is checked to stay inside it, a batch is applied with a single
//! nft run (nft applies a file as one transaction: all or nothing), and
//! read-back lists only this table. Objects are the `nftables` crate's
//! schema types. We run nft ourselves ([`run`]: libnftables in process, else
//! the `nft` binary) rather than through `nftables::helper::apply_ruleset`,
//! which spawns `nft` and drops its error text, the text that tells a user
//! what went wrong.

use std::borrow::Cow;

use nftables::expr::Expression;
use nftables::schema::{
    Chain, Element, FlushObject, Map, NfCmd, NfListObject, NfObject, Nftables, Rule, Set, SetTypeValue, Table,
};
use nftables::stmt::Statement;
use nftables::types::NfFamily;

use crate::cni::CniError;

mod batch;
pub mod expr;
mod handoff;
mod netlink;
mod objects;
mod per_netns;
pub use batch::{Batch, Datum, ElementOp, NlRule};
pub use handoff::{SETTLE, hand_off_sockets};
pub use objects::{BaseChain, DataType, Hook, SetDecl, Verdict};

// linux/netfilter/nf_tables.h: the GET requests that ask whether an object exists.
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_GETSET: u16 = 10;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;

/// Longest table/chain/set name we accept (nft allows 256; ours are short).
const MAX_NAME_LEN: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("invalid nftables {what} name {name:?}: {why}")]
    InvalidName {
        what: &'static str,
        name: String,
        why: &'static str,
    },
    #[error("refusing {what}: outside table {family} {table}")]
    OutOfScope {
        what: String,
        family: String,
        table: String,
    },
    #[error("cannot run nft: {0}")]
    Exec(#[source] std::io::Error),
    #[error("nft failed ({status}): {stderr}")]
    Failed { status: String, stderr: String },
    #[error("nft JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl From<NftError> for CniError {
    fn from(e: NftError) -> Self {
        match &e {
            NftError::InvalidName { what, name, why } => {
                CniError::invalid_config(&format!("{what} name"), format!("{name:?}: {why}"))
            }
            // nft missing: the service cannot serve.
            NftError::Exec(io) if io.kind() == std::io::ErrorKind::NotFound => CniError::not_available(e.to_string()),
            _ => CniError::io(e.to_string()),
        }
    }
}

/// Checks an nft identifier: a letter or `_`, then letters, digits, `_`, `-`.
pub fn validate_name(what: &'static str, name: &str) -> Result<(), NftError> {
    let bad = |why| {
        Err(NftError::InvalidName {
            what,
            name: name.to_string(),
            why,
        })
    };
    let b = name.as_bytes();
    if b.is_empty() || b.len() > MAX_NAME_LEN {
        return bad("must be 1 to 64 bytes");
    }
    if !(b[0].is_ascii_alphabetic() || b[0] == b'_') {
        return bad("must start with a letter or '_'");
    }
    if !b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-')) {
        return bad("only letters, digits, '_' and '-' are allowed");
    }
    Ok(())
}

fn family_str(f: NfFamily) -> String {
    serde_json::to_value(f)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// One service's own nftables table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftTable {
    family: NfFamily,
    name: String,
}

impl NftTable {
    pub fn new(family: NfFamily, name: &str) -> Result<Self, NftError> {
        validate_name("table", name)?;
        Ok(NftTable {
            family,
            name: name.to_string(),
        })
    }

    pub fn family(&self) -> NfFamily {
        self.family
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// An empty batch scoped to this table.
    pub fn batch<'a>(&self) -> NftBatch<'a> {
        NftBatch {
            table: self.clone(),
            objects: Vec::new(),
        }
    }

    /// This table as an object (for add/delete/flush).
    pub fn table_obj(&self) -> Table<'static> {
        Table {
            family: self.family,
            name: Cow::Owned(self.name.clone()),
            handle: None,
        }
    }

    /// A chain of this table with defaults (a regular chain; set hook etc. for a base chain).
    pub fn chain(&self, name: &str) -> Result<Chain<'static>, NftError> {
        validate_name("chain", name)?;
        Ok(Chain {
            family: self.family,
            table: Cow::Owned(self.name.clone()),
            name: Cow::Owned(name.to_string()),
            ..Default::default()
        })
    }

    /// A named set of this table.
    pub fn set(&self, name: &str, set_type: SetTypeValue<'static>) -> Result<Set<'static>, NftError> {
        validate_name("set", name)?;
        Ok(Set {
            family: self.family,
            table: Cow::Owned(self.name.clone()),
            name: Cow::Owned(name.to_string()),
            set_type,
            ..Default::default()
        })
    }

    /// A named map of this table.
    pub fn map(
        &self,
        name: &str,
        key: SetTypeValue<'static>,
        value: SetTypeValue<'static>,
    ) -> Result<Map<'static>, NftError> {
        validate_name("map", name)?;
        Ok(Map {
            family: self.family,
            table: Cow::Owned(self.name.clone()),
            name: Cow::Owned(name.to_string()),
            set_type: key,
            map: value,
            ..Default::default()
        })
    }

    /// A rule for `chain` of this table.
    pub fn rule<'a>(&self, chain: &str, expr: Vec<Statement<'a>>) -> Result<Rule<'a>, NftError> {
        validate_name("chain", chain)?;
        Ok(Rule {
            family: self.family,
            table: Cow::Owned(self.name.clone()),
            chain: Cow::Owned(chain.to_string()),
            expr: Cow::Owned(expr),
            ..Default::default()
        })
    }

    /// Applies `batch` with one `nft` run: all of it or, on error, none of it.
    pub fn apply(&self, batch: &NftBatch<'_>) -> Result<(), NftError> {
        if batch.table != *self {
            return Err(self.out_of_scope(format!(
                "a batch for table {} {}",
                family_str(batch.table.family),
                batch.table.name
            )));
        }
        if batch.objects.is_empty() {
            return Ok(());
        }
        run_nft(NftInput::Json(&serde_json::to_vec(&batch.to_nftables())?)).map(drop)
    }

    /// Reads back this table only; `None` when it does not exist.
    pub fn list(&self) -> Result<Option<Nftables<'static>>, NftError> {
        self.list_json()?
            .map(|v| serde_json::from_value(v).map_err(NftError::from))
            .transpose()
    }

    /// Reads back this table only as nft's JSON, for schemas the `nftables`
    /// crate cannot parse (verdict and `typeof` maps); `None` when it does not exist.
    pub fn list_json(&self) -> Result<Option<serde_json::Value>, NftError> {
        self.list_raw(&["table", &family_str(self.family), &self.name], None)
    }

    /// Reads back one set or map of this table as nft's JSON; `None` when absent.
    pub fn list_set_json(&self, kind: SetKind, name: &str) -> Result<Option<serde_json::Value>, NftError> {
        validate_name("set", name)?;
        self.list_raw(&[kind.word(), &family_str(self.family), &self.name, name], Some(name))
    }

    /// nft's listing of `what`, when the kernel holds it (`set`: a set or
    /// map of the table, else the table itself). Whether it is there is the
    /// kernel's answer (ENOENT), asked over netlink, never read from nft's text.
    fn list_raw(&self, what: &[&str], set: Option<&str>) -> Result<Option<serde_json::Value>, NftError> {
        let family = netlink::nfproto(self.family);
        let held = match set {
            None => netlink::holds(NFT_MSG_GETTABLE, family, |m| {
                netlink::attr_str(m, NFTA_TABLE_NAME, &self.name)
            }),
            Some(set) => netlink::holds(NFT_MSG_GETSET, family, |m| {
                netlink::attr_str(m, NFTA_SET_TABLE, &self.name);
                netlink::attr_str(m, NFTA_SET_NAME, set);
            }),
        };
        if !held.map_err(NftError::Exec)? {
            return Ok(None);
        }
        Ok(Some(serde_json::from_slice(&run_nft(NftInput::List(what))?)?))
    }

    /// Deletes the whole table; an absent table is not an error (idempotent teardown).
    pub fn delete(&self) -> Result<(), NftError> {
        Batch::new(self).destroy_table().apply()
    }

    fn out_of_scope(&self, what: String) -> NftError {
        NftError::OutOfScope {
            what,
            family: family_str(self.family),
            table: self.name.clone(),
        }
    }
}

/// Commands for one table, applied together by [`NftTable::apply`].
#[derive(Debug, Clone)]
pub struct NftBatch<'a> {
    table: NftTable,
    objects: Vec<NfObject<'a>>,
}

impl<'a> NftBatch<'a> {
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// The nft JSON document (for snapshots and `netsvc explain`).
    pub fn to_nftables(&self) -> Nftables<'a> {
        Nftables {
            objects: Cow::Owned(self.objects.clone()),
        }
    }

    /// Appends any command after checking that it only touches this table.
    pub fn push(&mut self, cmd: NfCmd<'a>) -> Result<&mut Self, NftError> {
        let scope = match &cmd {
            NfCmd::Add(o) | NfCmd::Create(o) | NfCmd::Insert(o) | NfCmd::Delete(o) | NfCmd::List(o) => obj_scope(o),
            NfCmd::Replace(r) => Some((r.family, r.table.as_ref())),
            NfCmd::Rename(c) => Some((c.family, c.table.as_ref())),
            NfCmd::Flush(f) => flush_scope(f),
            NfCmd::Reset(_) => None,
        };
        if scope != Some((self.table.family, self.table.name.as_str())) {
            return Err(self.table.out_of_scope(format!("{cmd:?}")));
        }
        self.objects.push(NfObject::CmdObject(cmd));
        Ok(self)
    }

    /// Adds (creates or keeps) this table.
    pub fn add_table(&mut self) -> &mut Self {
        self.objects.push(NfObject::CmdObject(NfCmd::Add(NfListObject::Table(
            self.table.table_obj(),
        ))));
        self
    }

    pub fn add_chain(&mut self, chain: Chain<'a>) -> Result<&mut Self, NftError> {
        self.push(NfCmd::Add(NfListObject::Chain(chain)))
    }

    pub fn add_set(&mut self, set: Set<'a>) -> Result<&mut Self, NftError> {
        self.push(NfCmd::Add(NfListObject::Set(Box::new(set))))
    }

    pub fn add_map(&mut self, map: Map<'a>) -> Result<&mut Self, NftError> {
        self.push(NfCmd::Add(NfListObject::Map(Box::new(map))))
    }

    pub fn add_rule(&mut self, rule: Rule<'a>) -> Result<&mut Self, NftError> {
        self.push(NfCmd::Add(NfListObject::Rule(rule)))
    }

    /// Adds elements to a set or map of this table (map elements are `[key, value]` lists).
    pub fn add_element(&mut self, set: &str, elem: Vec<Expression<'a>>) -> Result<&mut Self, NftError> {
        let e = self.element(set, elem)?;
        self.push(NfCmd::Add(NfListObject::Element(e)))
    }

    pub fn delete_element(&mut self, set: &str, elem: Vec<Expression<'a>>) -> Result<&mut Self, NftError> {
        let e = self.element(set, elem)?;
        self.push(NfCmd::Delete(NfListObject::Element(e)))
    }

    /// Removes every rule of a chain of this table.
    pub fn flush_chain(&mut self, chain: &str) -> Result<&mut Self, NftError> {
        let c = self.table.chain(chain)?;
        self.push(NfCmd::Flush(FlushObject::Chain(c)))
    }

    fn element(&self, set: &str, elem: Vec<Expression<'a>>) -> Result<Element<'a>, NftError> {
        validate_name("set", set)?;
        Ok(Element {
            family: self.table.family,
            table: Cow::Owned(self.table.name.clone()),
            name: Cow::Owned(set.to_string()),
            elem: Cow::Owned(elem),
        })
    }
}

/// The (family, table) an object belongs to; `None` for objects with no table.
fn obj_scope<'b>(o: &'b NfListObject<'_>) -> Option<(NfFamily, &'b str)> {
    Some(match o {
        NfListObject::Table(t) => (t.family, t.name.as_ref()),
        NfListObject::Chain(c) => (c.family, c.table.as_ref()),
        NfListObject::Rule(r) => (r.family, r.table.as_ref()),
        NfListObject::Set(s) => (s.family, s.table.as_ref()),
        NfListObject::Map(m) => (m.family, m.table.as_ref()),
        NfListObject::Element(e) => (e.family, e.table.as_ref()),
        NfListObject::FlowTable(f) => (f.family, f.table.as_ref()),
        NfListObject::Counter(c) => (c.family, c.table.as_ref()),
        NfListObject::Quota(q) => (q.family, q.table.as_ref()),
        NfListObject::CTHelper(h) => (h.family, h.table.as_ref()),
        NfListObject::Limit(l) => (l.family, l.table.as_ref()),
        NfListObject::CTTimeout(t) => (t.family, t.table.as_ref()),
        NfListObject::CTExpectation(e) => (e.family, e.table.as_ref()),
        NfListObject::SynProxy(s) => (s.family, s.table.as_ref()),
        NfListObject::MetainfoObject(_) => return None,
    })
}

fn flush_scope<'b>(f: &'b FlushObject<'_>) -> Option<(NfFamily, &'b str)> {
    match f {
        FlushObject::Table(t) => Some((t.family, t.name.as_ref())),
        FlushObject::Chain(c) => Some((c.family, c.table.as_ref())),
        FlushObject::Set(s) => Some((s.family, s.table.as_ref())),
        FlushObject::Map(m) => Some((m.family, m.table.as_ref())),
        // Meters carry no table; a ruleset flush would touch every service.
        FlushObject::Meter(_) | FlushObject::Ruleset(_) => None,
    }
}

mod run;

pub use run::batches_applied;
use run::{NftInput, run_nft};

/// Whether a declaration is a set or a map (what listing one asks for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetKind {
    Set,
    Map,
}

impl SetKind {
    fn word(self) -> &'static str {
        match self {
            SetKind::Set => "set",
            SetKind::Map => "map",
        }
    }
}
