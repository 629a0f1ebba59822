//! Batches in nft's native syntax, for what the JSON API of the nft we run on
//! cannot say.
//!
//! nft 1.0.6 (Debian 12) cannot declare `typeof` maps in JSON, crashes on
//! `dnat … to <expr> map @m` and has no JSON for `update @map { k : v }`;
//! the `nftables` crate's schema has no verdict maps. The native syntax says
//! all of it. A script is still one `nft -f -` run, so one transaction: all
//! or nothing. Every command is written by this builder with the table's own
//! family and name, so a script cannot reach another table; the free-text
//! parts (a rule's statements, a map's declaration) are the caller's and are
//! built from validated values only.

use std::fmt::Write;

use super::run::{NftInput, run_nft};
use super::{NftError, NftTable, family_str, validate_name};

/// Commands for one table in native syntax, applied together by [`NftScript::apply`].
#[derive(Debug, Clone)]
pub struct NftScript {
    family: String,
    table: String,
    text: String,
    commands: usize,
}

impl NftScript {
    pub fn new(table: &NftTable) -> Self {
        NftScript {
            family: family_str(table.family()),
            table: table.name().to_string(),
            text: String::new(),
            commands: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.commands == 0
    }

    /// The script as nft reads it (for snapshots and `netsvc explain`).
    pub fn text(&self) -> &str {
        &self.text
    }

    fn push(&mut self, line: std::fmt::Arguments<'_>) {
        let _ = self.text.write_fmt(line);
        self.text.push('\n');
        self.commands += 1;
    }

    /// `add table` (a no-op when it exists).
    pub fn add_table(&mut self) -> &mut Self {
        let (f, t) = (&self.family, &self.table);
        let line = format!("add table {f} {t}");
        self.push(format_args!("{line}"));
        self
    }

    /// Deletes the table whether or not it exists (add is a no-op when it does).
    pub fn remove_table(&mut self) -> &mut Self {
        self.add_table();
        let line = format!("delete table {} {}", self.family, self.table);
        self.push(format_args!("{line}"));
        self
    }

    /// `add chain` with an optional base-chain spec (`type nat hook … priority …; policy accept;`).
    pub fn add_chain(&mut self, chain: &str, base: Option<&str>) -> Result<&mut Self, NftError> {
        validate_name("chain", chain)?;
        let line = match base {
            Some(spec) => format!("add chain {} {} {chain} {{ {spec} }}", self.family, self.table),
            None => format!("add chain {} {} {chain}", self.family, self.table),
        };
        self.push(format_args!("{line}"));
        Ok(self)
    }

    /// Deletes a chain whether or not it exists (its rules must be gone or
    /// flushed in the same script, and nothing may still jump to it).
    pub fn remove_chain(&mut self, chain: &str) -> Result<&mut Self, NftError> {
        self.add_chain(chain, None)?;
        self.flush_chain(chain)?;
        let line = format!("delete chain {} {} {chain}", self.family, self.table);
        self.push(format_args!("{line}"));
        Ok(self)
    }

    pub fn flush_chain(&mut self, chain: &str) -> Result<&mut Self, NftError> {
        validate_name("chain", chain)?;
        let line = format!("flush chain {} {} {chain}", self.family, self.table);
        self.push(format_args!("{line}"));
        Ok(self)
    }

    /// `add rule` with `statements` (built from validated values).
    pub fn add_rule(&mut self, chain: &str, statements: &str) -> Result<&mut Self, NftError> {
        validate_name("chain", chain)?;
        let line = format!("add rule {} {} {chain} {statements}", self.family, self.table);
        self.push(format_args!("{line}"));
        Ok(self)
    }

    /// `insert rule`: `statements` go first in the chain.
    pub fn insert_rule(&mut self, chain: &str, statements: &str) -> Result<&mut Self, NftError> {
        validate_name("chain", chain)?;
        let line = format!("insert rule {} {} {chain} {statements}", self.family, self.table);
        self.push(format_args!("{line}"));
        Ok(self)
    }

    /// `add map`/`add set` with its declaration body (`type …; flags …;`); a no-op when it exists.
    pub fn add_set(&mut self, kind: SetKind, name: &str, declaration: &str) -> Result<&mut Self, NftError> {
        validate_name("set", name)?;
        let line = format!(
            "add {} {} {} {name} {{ {declaration} }}",
            kind.word(),
            self.family,
            self.table
        );
        self.push(format_args!("{line}"));
        Ok(self)
    }

    /// Deletes a set or map whether or not it exists.
    pub fn remove_set(&mut self, kind: SetKind, name: &str, declaration: &str) -> Result<&mut Self, NftError> {
        self.add_set(kind, name, declaration)?;
        let line = format!("delete {} {} {} {name}", kind.word(), self.family, self.table);
        self.push(format_args!("{line}"));
        Ok(self)
    }

    pub fn flush_set(&mut self, kind: SetKind, name: &str) -> Result<&mut Self, NftError> {
        validate_name("set", name)?;
        let line = format!("flush {} {} {} {name}", kind.word(), self.family, self.table);
        self.push(format_args!("{line}"));
        Ok(self)
    }

    /// Adds elements (`key` or `key : value` each); nothing when `elements` is empty.
    pub fn add_elements<S: AsRef<str>>(&mut self, set: &str, elements: &[S]) -> Result<&mut Self, NftError> {
        self.elements("add", set, elements)
    }

    /// Deletes elements (keys only); each must exist.
    pub fn delete_elements<S: AsRef<str>>(&mut self, set: &str, elements: &[S]) -> Result<&mut Self, NftError> {
        self.elements("delete", set, elements)
    }

    fn elements<S: AsRef<str>>(&mut self, verb: &str, set: &str, elements: &[S]) -> Result<&mut Self, NftError> {
        validate_name("set", set)?;
        if elements.is_empty() {
            return Ok(self);
        }
        let list: Vec<&str> = elements.iter().map(AsRef::as_ref).collect();
        let line = format!(
            "{verb} element {} {} {set} {{ {} }}",
            self.family,
            self.table,
            list.join(", ")
        );
        self.push(format_args!("{line}"));
        Ok(self)
    }

    /// Appends another script of the same table.
    pub fn extend(&mut self, other: &NftScript) -> Result<&mut Self, NftError> {
        if (other.family.as_str(), other.table.as_str()) != (self.family.as_str(), self.table.as_str()) {
            return Err(NftError::OutOfScope {
                what: "a script of another table".into(),
                family: self.family.clone(),
                table: self.table.clone(),
            });
        }
        self.text.push_str(&other.text);
        self.commands += other.commands;
        Ok(self)
    }

    /// Applies the script in one nft run: all of it or none of it.
    pub fn apply(&self) -> Result<(), NftError> {
        if self.is_empty() {
            return Ok(());
        }
        run_nft(NftInput::Script(self.text.as_bytes())).map(drop)
    }
}

/// Whether a declaration is a set or a map.
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

#[cfg(test)]
mod tests {
    use nftables::types::NfFamily;

    use super::*;

    #[test]
    fn every_command_names_the_table_and_names_are_checked() {
        let t = NftTable::new(NfFamily::IP6, "netsvc_lb").unwrap();
        let mut s = NftScript::new(&t);
        s.add_table();
        s.add_set(SetKind::Map, "m", "type ipv6_addr : ipv6_addr;").unwrap();
        s.add_elements("m", &["::1 : ::2"]).unwrap();
        s.add_elements::<&str>("m", &[]).unwrap();
        s.remove_chain("c").unwrap();
        assert_eq!(
            s.text(),
            "add table ip6 netsvc_lb\n\
             add map ip6 netsvc_lb m { type ipv6_addr : ipv6_addr; }\n\
             add element ip6 netsvc_lb m { ::1 : ::2 }\n\
             add chain ip6 netsvc_lb c\n\
             flush chain ip6 netsvc_lb c\n\
             delete chain ip6 netsvc_lb c\n"
        );
        assert!(s.add_rule("bad name;", "accept").is_err());
        assert!(s.add_elements("x}", &["1"]).is_err());
    }
}
