//! nftables for one service's own table, in one typed form over one
//! transport: a [`Batch`] of changes (the table, chains, sets and maps,
//! elements, rules built from [`expr`]) sent over nf_tables netlink as one
//! transaction, all or nothing. A batch's text in nft's syntax is what a
//! human reads (errors, `--dry-run`); the kernel never gets text.
//!
//! An [`NftTable`] is bound to one (family, table) pair, and so is every
//! batch made for it. Read-back lists only that table, as nft's JSON ([`run`]:
//! libnftables in process, else the `nft` binary); whether the table or a
//! set exists at all is the kernel's answer over netlink.

use crate::cni::CniError;

mod batch;
pub mod expr;
mod handoff;
mod netlink;
mod objects;
mod per_netns;
mod run;

pub use batch::{Batch, Datum, ElementOp, NlRule, batches_applied};
pub use handoff::{SETTLE, hand_off_sockets};
pub use objects::{BaseChain, DataType, Hook, SetDecl, Verdict};
use run::run_nft;

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
    /// The kernel refused a batch: its errno, and what it refused (the
    /// request's line in nft's syntax, or the whole batch).
    #[error("nf_tables refused {what}: {error}")]
    Refused {
        #[source]
        error: std::io::Error,
        what: String,
    },
    #[error("cannot run nft: {0}")]
    Exec(#[source] std::io::Error),
    #[error("nft failed ({status}): {stderr}")]
    Failed { status: String, stderr: String },
    #[error("nft JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl NftError {
    /// The kernel's errno, when the kernel refused.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NftError::Refused { error, .. } => error.raw_os_error(),
            _ => None,
        }
    }
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

/// The nftables family of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4 and IPv6 together.
    Inet,
    Ip,
    Ip6,
}

impl Family {
    /// As nft writes it.
    pub fn word(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
        }
    }

    /// Its NFPROTO_* number, as netlink carries it.
    pub(crate) fn nfproto(self) -> u8 {
        match self {
            Family::Inet => 1,
            Family::Ip => 2,
            Family::Ip6 => 10,
        }
    }
}

/// One service's own nftables table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftTable {
    family: Family,
    name: String,
}

impl NftTable {
    pub fn new(family: Family, name: &str) -> Result<Self, NftError> {
        validate_name("table", name)?;
        Ok(NftTable {
            family,
            name: name.to_string(),
        })
    }

    pub fn family(&self) -> Family {
        self.family
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads back this table only as nft's JSON; `None` when it does not exist.
    pub fn list_json(&self) -> Result<Option<serde_json::Value>, NftError> {
        self.list_raw(&["table", self.family.word(), &self.name], None)
    }

    /// Reads back one set or map of this table as nft's JSON; `None` when absent.
    pub fn list_set_json(&self, kind: SetKind, name: &str) -> Result<Option<serde_json::Value>, NftError> {
        validate_name("set", name)?;
        self.list_raw(&[kind.word(), self.family.word(), &self.name, name], Some(name))
    }

    /// nft's listing of `what`, when the kernel holds it (`set`: a set or
    /// map of the table, else the table itself). Whether it is there is the
    /// kernel's answer (ENOENT), asked over netlink, never read from nft's text.
    fn list_raw(&self, what: &[&str], set: Option<&str>) -> Result<Option<serde_json::Value>, NftError> {
        let family = self.family.nfproto();
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
        Ok(Some(serde_json::from_slice(&run_nft(what)?)?))
    }

    /// Deletes the whole table; an absent table is not an error (idempotent teardown).
    pub fn delete(&self) -> Result<(), NftError> {
        Batch::new(self).destroy_table().apply()
    }
}

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
