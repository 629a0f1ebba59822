//! The objects a table declares over netlink: base chains, sets and maps
//! (with the types nft knows them by), and verdicts. Each carries its text
//! in nft's syntax, which is what a human reads (errors, `--dry-run`); the
//! kernel gets the netlink form from [`super::Batch`].

use std::time::Duration;

use super::netlink::{attr, attr_str, attr_u32, nest};

// linux/netfilter/nf_tables.h.
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DATA_TYPE: u16 = 6;
const NFTA_SET_DATA_LEN: u16 = 7;
const NFTA_SET_DESC: u16 = 9;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_TIMEOUT: u16 = 11;
const NFTA_SET_USERDATA: u16 = 13;
const NFTA_SET_DESC_SIZE: u16 = 1;
const NFT_SET_INTERVAL: u32 = 0x4;
const NFT_SET_MAP: u32 = 0x8;
const NFT_SET_TIMEOUT: u32 = 0x10;
const NFT_SET_EVAL: u32 = 0x20;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NF_ACCEPT: u32 = 1;
/// nft's datatype ids (nftables' `enum datatypes`): what `nft list` shows a key as.
const TYPE_VERDICT: u32 = 1;
const TYPE_INTEGER: u32 = 4;
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;
const TYPE_INET_PROTOCOL: u32 = 12;
const TYPE_INET_SERVICE: u32 = 13;
/// A concatenation's type is its parts' ids, each shifted in by this many bits.
const TYPE_BITS: u32 = 6;
/// A verdict map's data type (NFT_DATA_VERDICT).
const NFT_DATA_VERDICT: u32 = 0xffff_ff00;

/// A type of set keys and map values, as nft names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    Ipv4Addr,
    Ipv6Addr,
    InetProto,
    InetService,
    /// A number as a register holds it (what `numgen` and `jhash` give).
    Integer32,
    Verdict,
}

impl DataType {
    fn id(self) -> u32 {
        match self {
            DataType::Ipv4Addr => TYPE_IPADDR,
            DataType::Ipv6Addr => TYPE_IP6ADDR,
            DataType::InetProto => TYPE_INET_PROTOCOL,
            DataType::InetService => TYPE_INET_SERVICE,
            DataType::Integer32 => TYPE_INTEGER,
            DataType::Verdict => TYPE_VERDICT,
        }
    }

    fn len(self) -> u32 {
        match self {
            DataType::Ipv4Addr | DataType::Integer32 => 4,
            DataType::Ipv6Addr => 16,
            DataType::InetProto => 1,
            DataType::InetService => 2,
            DataType::Verdict => 0,
        }
    }

    fn word(self) -> &'static str {
        match self {
            DataType::Ipv4Addr => "ipv4_addr",
            DataType::Ipv6Addr => "ipv6_addr",
            DataType::InetProto => "inet_proto",
            DataType::InetService => "inet_service",
            DataType::Integer32 => "integer",
            DataType::Verdict => "verdict",
        }
    }
}

/// A set or map of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetDecl {
    pub name: String,
    /// One type, or the parts of a concatenation.
    pub key: Vec<DataType>,
    /// A map's values.
    pub data: Option<DataType>,
    /// Written from the packet path (`update @set …`), elements expiring after `timeout`.
    pub dynamic: Option<Dynamic>,
    /// Holds prefixes (`flags interval`).
    pub interval: bool,
    /// What nft keeps beside the set to print it (`typeof …`, byte orders).
    pub userdata: Vec<u8>,
    /// The declaration as nft writes it, between the braces.
    pub text: String,
}

/// A set the packet path writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dynamic {
    pub timeout: Duration,
    pub size: u32,
}

impl SetDecl {
    /// A set (or, with `data`, a map) of `key`, declared by type.
    pub fn typed(name: &str, key: &[DataType], data: Option<DataType>) -> SetDecl {
        let key_words: Vec<&str> = key.iter().map(|t| t.word()).collect();
        let mut text = format!("type {}", key_words.join(" . "));
        if let Some(d) = data {
            text.push_str(&format!(" : {}", d.word()));
        }
        text.push(';');
        SetDecl {
            name: name.to_string(),
            key: key.to_vec(),
            data,
            dynamic: None,
            interval: false,
            userdata: Vec::new(),
            text,
        }
    }

    /// The map `typeof numgen random mod 1 : <ip|ip6> daddr`: a slot
    /// number (in host order, as `numgen` and `jhash` give it) to an address.
    pub fn numgen_to_daddr(name: &str, ipv6: bool) -> SetDecl {
        let (addr, word) = if ipv6 {
            (DataType::Ipv6Addr, "ip6")
        } else {
            (DataType::Ipv4Addr, "ip")
        };
        SetDecl {
            userdata: numgen_to_daddr_userdata(ipv6),
            text: format!("typeof numgen random mod 1 : {word} daddr;"),
            ..SetDecl::typed(name, &[DataType::Integer32], Some(addr))
        }
    }

    /// Written from the packet path, elements expiring after `timeout`, at most `size`.
    pub fn dynamic(mut self, timeout: Duration, size: u32) -> SetDecl {
        self.dynamic = Some(Dynamic { timeout, size });
        self.text.push_str(&format!(
            " flags dynamic,timeout; timeout {}s; size {size};",
            timeout.as_secs()
        ));
        self
    }

    /// A set of prefixes (`flags interval`).
    pub fn interval(mut self) -> SetDecl {
        self.interval = true;
        self.text.push_str(" flags interval;");
        self
    }

    /// Whether it is a map (`add map`) rather than a set.
    pub fn is_map(&self) -> bool {
        self.data.is_some()
    }

    /// The attributes after the table and name; `id` names the set within
    /// its batch (the kernel requires one).
    pub(super) fn encode(&self, m: &mut Vec<u8>, id: u32) {
        let concat = self.key.len() > 1;
        let key_type = self.key.iter().fold(0, |acc, t| (acc << TYPE_BITS) | t.id());
        let key_len: u32 = if concat {
            self.key.iter().map(|t| t.len().next_multiple_of(4)).sum()
        } else {
            self.key.iter().map(|t| t.len()).sum()
        };
        let mut flags = 0;
        if self.data.is_some() {
            flags |= NFT_SET_MAP;
        }
        if self.dynamic.is_some() {
            flags |= NFT_SET_TIMEOUT | NFT_SET_EVAL;
        }
        if self.interval {
            flags |= NFT_SET_INTERVAL;
        }
        attr_u32(m, NFTA_SET_FLAGS, flags);
        attr_u32(m, NFTA_SET_KEY_TYPE, key_type);
        attr_u32(m, NFTA_SET_KEY_LEN, key_len);
        if let Some(d) = self.data {
            let id = if d == DataType::Verdict {
                NFT_DATA_VERDICT
            } else {
                d.id()
            };
            attr_u32(m, NFTA_SET_DATA_TYPE, id);
            attr_u32(m, NFTA_SET_DATA_LEN, d.len());
        }
        attr_u32(m, NFTA_SET_ID, id);
        if let Some(dynamic) = self.dynamic {
            nest(m, NFTA_SET_DESC, |m| attr_u32(m, NFTA_SET_DESC_SIZE, dynamic.size));
            let ms = u64::try_from(dynamic.timeout.as_millis()).unwrap_or(u64::MAX);
            attr(m, NFTA_SET_TIMEOUT, &ms.to_be_bytes());
        }
        if !self.userdata.is_empty() {
            attr(m, NFTA_SET_USERDATA, &self.userdata);
        }
    }
}

/// A chain's hook, for a base chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

impl Hook {
    fn number(self) -> u32 {
        match self {
            Hook::Prerouting => 0,
            Hook::Input => 1,
            Hook::Forward => 2,
            Hook::Output => 3,
            Hook::Postrouting => 4,
        }
    }

    fn word(self) -> &'static str {
        match self {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
        }
    }
}

/// What a base chain is: its type (`filter`, `nat`), hook and priority;
/// its policy is accept (a service's table never decides for others).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseChain {
    pub kind: &'static str,
    pub hook: Hook,
    pub priority: i32,
}

impl BaseChain {
    pub fn text(&self) -> String {
        format!(
            "type {} hook {} priority {}; policy accept;",
            self.kind,
            self.hook.word(),
            self.priority
        )
    }

    pub(super) fn encode(&self, m: &mut Vec<u8>) {
        nest(m, NFTA_CHAIN_HOOK, |m| {
            attr_u32(m, NFTA_HOOK_HOOKNUM, self.hook.number());
            attr(m, NFTA_HOOK_PRIORITY, &self.priority.to_be_bytes());
        });
        attr_u32(m, NFTA_CHAIN_POLICY, NF_ACCEPT);
        attr_str(m, NFTA_CHAIN_TYPE, self.kind);
    }
}

/// A verdict: a rule's last word, or what a verdict map's element says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Return,
    Jump(String),
    Goto(String),
}

impl Verdict {
    /// As nft writes it.
    pub fn text(&self) -> String {
        match self {
            Verdict::Accept => "accept".into(),
            Verdict::Drop => "drop".into(),
            Verdict::Return => "return".into(),
            Verdict::Jump(c) => format!("jump {c}"),
            Verdict::Goto(c) => format!("goto {c}"),
        }
    }

    /// NFTA_DATA_VERDICT: the code (NF_DROP, NF_ACCEPT, NFT_JUMP, …) and chain.
    pub(super) fn encode(&self, m: &mut Vec<u8>) {
        let (code, chain): (i32, Option<&str>) = match self {
            Verdict::Drop => (0, None),
            Verdict::Accept => (1, None),
            Verdict::Jump(c) => (-3, Some(c)),
            Verdict::Goto(c) => (-4, Some(c)),
            Verdict::Return => (-5, None),
        };
        nest(m, NFTA_DATA_VERDICT, |m| {
            attr(m, NFTA_VERDICT_CODE, &code.to_be_bytes());
            if let Some(c) = chain {
                attr_str(m, NFTA_VERDICT_CHAIN, c);
            }
        });
    }
}

/// The userdata nft writes beside `typeof numgen random mod 1 : <ip|ip6> daddr`
/// (libnftnl's set udata TLVs: key and data byte order, then each side's
/// expression), so that `nft list` prints the map as it was declared and
/// its keys as numbers.
fn numgen_to_daddr_userdata(ipv6: bool) -> Vec<u8> {
    fn tlv(out: &mut Vec<u8>, kind: u8, value: &[u8]) {
        out.push(kind);
        out.push(value.len() as u8);
        out.extend_from_slice(value);
    }
    let u32le = |v: u32| v.to_ne_bytes();
    let (proto, field) = if ipv6 { (13, 9) } else { (12, 12) };
    let mut numgen = Vec::new();
    tlv(&mut numgen, 0, &u32le(1)); // random
    tlv(&mut numgen, 1, &u32le(1)); // mod 1
    tlv(&mut numgen, 2, &u32le(0)); // offset 0
    let mut key = Vec::new();
    tlv(&mut key, 0, &u32le(23)); // the numgen expression
    tlv(&mut key, 1, &numgen);
    let mut payload = Vec::new();
    tlv(&mut payload, 0, &u32le(proto));
    tlv(&mut payload, 1, &u32le(field));
    let mut data = Vec::new();
    tlv(&mut data, 0, &u32le(7)); // a payload expression
    tlv(&mut data, 1, &payload);
    let mut out = Vec::new();
    tlv(&mut out, 0, &u32le(1)); // keys in host order
    tlv(&mut out, 1, &u32le(2)); // values in network order
    tlv(&mut out, 3, &key);
    tlv(&mut out, 4, &data);
    tlv(&mut out, 6, &u32le(0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes nft 1.x writes for this declaration (`nft --debug=mnl`).
    #[test]
    fn the_typeof_userdata_is_the_one_nft_writes() {
        let ip = "00 04 01 00 00 00 01 04 02 00 00 00 03 1a 00 04 17 00 00 00 01 12 00 04 01 00 00 00 \
                  01 04 01 00 00 00 02 04 00 00 00 00 04 14 00 04 07 00 00 00 01 0c 00 04 0c 00 00 00 \
                  01 04 0c 00 00 00 06 04 00 00 00 00";
        let bytes: Vec<u8> = ip
            .split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect();
        assert_eq!(numgen_to_daddr_userdata(false), bytes);
    }

    #[test]
    fn a_concatenation_shifts_its_types_in_and_pads_its_length() {
        let d = SetDecl::typed(
            "services",
            &[DataType::Ipv4Addr, DataType::InetProto, DataType::InetService],
            Some(DataType::Verdict),
        );
        assert_eq!(d.text, "type ipv4_addr . inet_proto . inet_service : verdict;");
        let mut m = Vec::new();
        d.encode(&mut m, 1);
        let has = |needle: &[u8]| m.windows(needle.len()).any(|w| w == needle);
        assert!(has(&[8, 0, 4, 0, 0, 0, 0x73, 0x0d]), "key type 0x730d: {m:?}");
        assert!(has(&[8, 0, 5, 0, 0, 0, 0, 12]), "key length 12: {m:?}");
        assert!(has(&[8, 0, 6, 0, 0xff, 0xff, 0xff, 0]), "verdict data: {m:?}");
    }
}
