//! The firewall's decisions as plain data (no kernel, no root): a network's
//! config becomes a [`Plan`] of sets and chains; an endpoint becomes its
//! [`Membership`] in those sets. Rendering turns both into nftables, and
//! `netsvc explain` evaluates the very same rules, so the two cannot disagree.
//!
//! Shape of the table (one per host, `inet netsvc_firewall`):
//! - base chain `forward` (hook forward): replies pass (`ct state
//!   established,related`), then per network `ip saddr @<net>_eps4 jump
//!   <net>_out` and `ip daddr @<net>_eps4 jump <net>_in` (and IPv6): rules
//!   per network, never per endpoint;
//! - per network `<net>_in` / `<net>_out`: send isolated endpoints to the
//!   allow chain, drop traffic from or to another network's endpoints;
//! - per network `<net>_in_allow` / `<net>_out_allow`: one rule per policy ×
//!   rule × peer × port that returns (allows), then drops.
//!
//! Membership is set elements only, so an ADD or DEL never changes a rule.

use std::collections::BTreeMap;
use std::net::IpAddr;

use netsvc_core::cni::IpNet;
use netsvc_core::graph::{Endpoint, Selector};
use netsvc_core::naming::object_name;
use serde::Serialize;

use crate::config::{DefaultAction, FirewallConf, Peer, PolicyConf, PortConf, Protocol};

pub const TABLE: &str = "netsvc_firewall";
pub const BASE_CHAIN: &str = "forward";
/// Runs after conntrack (-200) and DNAT (-100, so a load balancer's VIP is
/// already translated to the backend) and before iptables-nft's filter
/// chains (0), so an isolation drop is final whatever accept rules others add.
pub const BASE_PRIORITY: i32 = -5;

/// Address family of a set or rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Fam {
    V4,
    V6,
}

impl Fam {
    pub const BOTH: [Fam; 2] = [Fam::V4, Fam::V6];

    pub fn of(ip: IpAddr) -> Fam {
        if ip.is_ipv4() { Fam::V4 } else { Fam::V6 }
    }
    pub fn suffix(self) -> &'static str {
        match self {
            Fam::V4 => "4",
            Fam::V6 => "6",
        }
    }
    /// The payload protocol nft names the family's header by.
    pub fn proto(self) -> &'static str {
        match self {
            Fam::V4 => "ip",
            Fam::V6 => "ip6",
        }
    }
    pub fn addr_type(self) -> &'static str {
        match self {
            Fam::V4 => "ipv4_addr",
            Fam::V6 => "ipv6_addr",
        }
    }
}

/// The global set of every network's endpoints (to tell cross-network traffic).
pub fn all_endpoints(f: Fam) -> String {
    format!("eps{}", f.suffix())
}

/// Who belongs in a set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Members {
    /// Addresses of the network's endpoints that match any of the selectors.
    Endpoints(Vec<Selector>),
    /// Fixed prefixes (an interval set).
    Cidrs(Vec<IpNet>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetDef {
    pub fam: Fam,
    pub members: Members,
}

impl SetDef {
    pub fn interval(&self) -> bool {
        matches!(self.members, Members::Cidrs(_))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Match {
    /// Source address in (or, negated, not in) a set.
    Src {
        set: String,
        negate: bool,
    },
    Dst {
        set: String,
        negate: bool,
    },
    /// Layer-4 protocol, with an optional inclusive destination-port range.
    L4 {
        proto: Protocol,
        ports: Option<(u16, u16)>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Verdict {
    /// Allowed by this chain: back to the caller.
    Return,
    Drop,
    Goto(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleDef {
    /// Only packets of this family (set matches imply it too).
    pub fam: Option<Fam>,
    pub matches: Vec<Match>,
    pub verdict: Verdict,
    /// Log (rate-limited) with this prefix before the verdict.
    pub log: Option<String>,
    /// Why the rule exists, in words: its nft comment and `netsvc explain`'s answer.
    pub why: String,
}

/// Everything a network's config makes, before any endpoint exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub network: String,
    pub prefix: String,
    pub sets: BTreeMap<String, SetDef>,
    /// Chains in dependency order (a chain's goto targets come after it).
    pub chains: Vec<(String, Vec<RuleDef>)>,
    pub log: crate::config::LogConf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Ingress,
    Egress,
}

impl Dir {
    fn word(self) -> &'static str {
        match self {
            Dir::Ingress => "ingress",
            Dir::Egress => "egress",
        }
    }
    fn short(self) -> &'static str {
        match self {
            Dir::Ingress => "in",
            Dir::Egress => "out",
        }
    }
    /// The endpoint a direction protects is the destination (ingress) or source (egress).
    fn own(self, set: String, negate: bool) -> Match {
        match self {
            Dir::Ingress => Match::Dst { set, negate },
            Dir::Egress => Match::Src { set, negate },
        }
    }
    fn other(self, set: String, negate: bool) -> Match {
        match self {
            Dir::Ingress => Match::Src { set, negate },
            Dir::Egress => Match::Dst { set, negate },
        }
    }
    fn default(self, conf: &FirewallConf) -> DefaultAction {
        match self {
            Dir::Ingress => conf.default_ingress,
            Dir::Egress => conf.default_egress,
        }
    }
}

/// A policy's rules in one direction, as (peers, ports); `None`: the policy
/// does not isolate that direction.
fn rules(p: &PolicyConf, dir: Dir) -> Option<Vec<(&[Peer], &[PortConf])>> {
    match dir {
        Dir::Ingress => p
            .ingress
            .as_ref()
            .map(|r| r.iter().map(|r| (&r.from[..], &r.ports[..])).collect()),
        Dir::Egress => p
            .egress
            .as_ref()
            .map(|r| r.iter().map(|r| (&r.to[..], &r.ports[..])).collect()),
    }
}

/// The name prefix of a network's objects.
pub fn network_prefix(network: &str) -> String {
    object_name(network, 16)
}

/// Builds a network's sets and chains from its config.
pub fn plan(network: &str, conf: &FirewallConf) -> Plan {
    let p = network_prefix(network);
    let mut plan = Plan {
        network: network.into(),
        prefix: p.clone(),
        sets: BTreeMap::new(),
        chains: Vec::new(),
        log: conf.log,
    };
    for f in Fam::BOTH {
        plan.sets.insert(
            format!("{p}_eps{}", f.suffix()),
            SetDef {
                fam: f,
                members: Members::Endpoints(vec![Selector::default()]),
            },
        );
    }
    for dir in [Dir::Ingress, Dir::Egress] {
        plan_direction(&mut plan, conf, dir);
    }
    plan
}

fn plan_direction(plan: &mut Plan, conf: &FirewallConf, dir: Dir) {
    let p = plan.prefix.clone();
    let (entry, allow) = (format!("{p}_{}", dir.short()), format!("{p}_{}_allow", dir.short()));
    let isolating: Vec<&PolicyConf> = conf.policies.iter().filter(|pol| rules(pol, dir).is_some()).collect();
    let cross = format!("{p}_{}_cross", dir.short());
    // Another network's endpoints first: only cidr rules may let them through.
    let mut entry_rules: Vec<RuleDef> = Fam::BOTH
        .iter()
        .map(|f| RuleDef {
            fam: Some(*f),
            matches: vec![
                dir.other(all_endpoints(*f), false),
                dir.other(format!("{p}_eps{}", f.suffix()), true),
            ],
            verdict: Verdict::Goto(cross.clone()),
            log: None,
            why: format!("{} with another network's endpoint", dir.word()),
        })
        .collect();
    if dir.default(conf) == DefaultAction::Deny {
        entry_rules.push(RuleDef {
            fam: None,
            matches: vec![],
            verdict: Verdict::Goto(allow.clone()),
            log: None,
            why: format!("default{} deny isolates every endpoint", capitalized(dir.word())),
        });
    } else if !isolating.is_empty() {
        for f in Fam::BOTH {
            let iso = format!("{p}_{}iso{}", &dir.short()[..1], f.suffix());
            let selectors = isolating.iter().map(|pol| pol.select.clone()).collect();
            plan.sets.insert(
                iso.clone(),
                SetDef {
                    fam: f,
                    members: Members::Endpoints(selectors),
                },
            );
            entry_rules.push(RuleDef {
                fam: Some(f),
                matches: vec![dir.own(iso, false)],
                verdict: Verdict::Goto(allow.clone()),
                log: None,
                why: format!("a policy isolates {} of the endpoint", dir.word()),
            });
        }
    }
    let mut allow_rules = Vec::new();
    let mut cross_rules = Vec::new();
    for pol in &isolating {
        let pn = object_name(&pol.name, 16);
        let sel = format!("{p}_{pn}_sel");
        for f in Fam::BOTH {
            plan.sets.insert(
                format!("{sel}{}", f.suffix()),
                SetDef {
                    fam: f,
                    members: Members::Endpoints(vec![pol.select.clone()]),
                },
            );
        }
        for (r, (peers, ports)) in rules(pol, dir).unwrap_or_default().into_iter().enumerate() {
            let rule_at = format!("policy {} {}[{r}]", pol.name, dir.word());
            let peer_matches = peer_alternatives(plan, &format!("{p}_{pn}_{}{r}", &dir.short()[..1]), peers, dir);
            for (fam, peer_m, peer_why, is_cidr) in peer_matches {
                for (port_m, port_why) in port_alternatives(ports) {
                    let mut matches = vec![dir.own(format!("{sel}{}", fam.suffix()), false)];
                    matches.extend(peer_m.iter().cloned());
                    matches.extend(port_m);
                    let rule = RuleDef {
                        fam: Some(fam),
                        matches,
                        verdict: Verdict::Return,
                        log: None,
                        why: format!("{rule_at} allows {peer_why} {port_why}"),
                    };
                    if is_cidr {
                        cross_rules.push(rule.clone());
                    }
                    allow_rules.push(rule);
                }
            }
        }
    }
    for pol in &isolating {
        let sel = format!("{p}_{}_sel", object_name(&pol.name, 16));
        for f in Fam::BOTH {
            allow_rules.push(RuleDef {
                fam: Some(f),
                matches: vec![dir.own(format!("{sel}{}", f.suffix()), false)],
                verdict: Verdict::Drop,
                log: conf
                    .log
                    .denied
                    .then(|| format!("netsvc-fw {} {} {} denied: ", plan.network, pol.name, dir.word())),
                why: format!(
                    "policy {} isolates {} and none of its rules allows this",
                    pol.name,
                    dir.word()
                ),
            });
        }
    }
    let drop_all = |what: &str, why: String| RuleDef {
        fam: None,
        matches: vec![],
        verdict: Verdict::Drop,
        log: conf
            .log
            .denied
            .then(|| format!("netsvc-fw {} {what} {} denied: ", plan.network, dir.word())),
        why,
    };
    allow_rules.push(drop_all(
        "default",
        format!("default{} deny and no policy allows this", capitalized(dir.word())),
    ));
    cross_rules.push(drop_all(
        "cross-network",
        "networks are isolated from each other unless a cidr rule of an isolating policy allows it".into(),
    ));
    plan.chains.push((entry, entry_rules));
    // Nothing jumps to the allow chain unless something isolates this direction.
    if dir.default(conf) == DefaultAction::Deny || !isolating.is_empty() {
        plan.chains.push((allow, allow_rules));
    }
    plan.chains.push((cross, cross_rules));
}

/// One match list per family-specific way a rule's peers can be met; no
/// peers means any address of either family.
/// Each alternative: family, matches, words, and whether it is a cidr peer.
fn peer_alternatives(plan: &mut Plan, base: &str, peers: &[Peer], dir: Dir) -> Vec<(Fam, Vec<Match>, String, bool)> {
    if peers.is_empty() {
        return Fam::BOTH
            .iter()
            .map(|f| (*f, vec![], "from/to anywhere".to_string(), false))
            .collect();
    }
    let mut out = Vec::new();
    for (x, peer) in peers.iter().enumerate() {
        let name = format!("{base}p{x}");
        match peer.cidr {
            Some(cidr) => {
                let f = Fam::of(cidr.addr);
                let set = format!("{name}{}", f.suffix());
                plan.sets.insert(
                    set.clone(),
                    SetDef {
                        fam: f,
                        members: Members::Cidrs(vec![cidr.network()]),
                    },
                );
                let mut m = vec![dir.other(set, false)];
                let mut why = format!("cidr {}", cidr.network());
                if !peer.except.is_empty() {
                    let ex = format!("{name}x{}", f.suffix());
                    let nets = peer.except.iter().map(IpNet::network).collect::<Vec<_>>();
                    why += &format!(
                        " except {}",
                        nets.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
                    );
                    plan.sets.insert(
                        ex.clone(),
                        SetDef {
                            fam: f,
                            members: Members::Cidrs(nets),
                        },
                    );
                    m.push(dir.other(ex, true));
                }
                out.push((f, m, why, true));
            }
            None => {
                for f in Fam::BOTH {
                    let set = format!("{name}{}", f.suffix());
                    plan.sets.insert(
                        set.clone(),
                        SetDef {
                            fam: f,
                            members: Members::Endpoints(vec![peer.selector()]),
                        },
                    );
                    out.push((
                        f,
                        vec![dir.other(set, false)],
                        describe_selector(&peer.selector()),
                        false,
                    ));
                }
            }
        }
    }
    out
}

fn port_alternatives(ports: &[PortConf]) -> Vec<(Vec<Match>, String)> {
    if ports.is_empty() {
        return vec![(vec![], "on any port".into())];
    }
    ports
        .iter()
        .map(|pc| {
            let range = pc.range();
            let what = match range {
                None => format!("on any {} port", pc.protocol.as_str()),
                Some((a, b)) if a == b => format!("on {}/{a}", pc.protocol.as_str()),
                Some((a, b)) => format!("on {}/{a}-{b}", pc.protocol.as_str()),
            };
            (
                vec![Match::L4 {
                    proto: pc.protocol,
                    ports: range,
                }],
                what,
            )
        })
        .collect()
}

fn describe_selector(s: &Selector) -> String {
    let mut parts = Vec::new();
    if !s.names.is_empty() {
        parts.push(format!("names {}", s.names.join(",")));
    }
    if !s.labels.is_empty() {
        parts.push(format!(
            "labels {}",
            s.labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    if parts.is_empty() {
        "every endpoint of the network".into()
    } else {
        parts.join(" ")
    }
}

fn capitalized(word: &str) -> String {
    let mut c = word.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

/// The set elements that stand for one endpoint: (set, address) pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Membership {
    pub elements: Vec<(String, IpAddr)>,
}

/// The addresses of an endpoint (its CIDRs' host parts).
pub fn endpoint_ips(ep: &Endpoint) -> Vec<IpAddr> {
    ep.ips.iter().map(|n| n.addr).collect()
}

/// Where `ep` belongs under `plan`.
pub fn membership(plan: &Plan, ep: &Endpoint) -> Membership {
    let mut m = Membership::default();
    for ip in endpoint_ips(ep) {
        let f = Fam::of(ip);
        m.elements.push((all_endpoints(f), ip));
        for (name, def) in &plan.sets {
            if let Members::Endpoints(selectors) = &def.members
                && def.fam == f
                && selectors.iter().any(|s| s.matches(ep))
            {
                m.elements.push((name.clone(), ip));
            }
        }
    }
    m
}

/// An endpoint for unit tests: one IPv4 address in a /24, one name, a tier label.
#[cfg(test)]
pub(crate) fn test_endpoint(network: &str, id: &str, ip: &str, name: &str, tier: &str) -> Endpoint {
    Endpoint {
        network: network.into(),
        container_id: id.into(),
        ifname: "eth0".into(),
        ips: vec![format!("{ip}/24").parse().unwrap()],
        names: vec![name.into()],
        labels: [("tier".to_string(), tier.to_string())].into(),
        ..Default::default()
    }
}
