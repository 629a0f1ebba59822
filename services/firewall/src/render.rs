//! Plans and memberships → the commands of one nftables transaction
//! (pure). Full renders diff the desired network against what the kernel
//! holds ([`crate::kernel::Current`]) and touch only what differs; ADD and
//! DEL are element updates only.

use std::collections::{BTreeMap, BTreeSet};

use netsvc_core::cni::IpNet;
use netsvc_core::naming::digest_hex;
use netsvc_core::nft::{BaseChain, Batch, DataType, ElementOp, Hook, NftError, SetDecl};

use crate::kernel::Current;
use crate::model::{BASE_CHAIN, BASE_PRIORITY, Fam, Match, Members, Membership, Plan, RuleDef, Verdict, all_endpoints};
use crate::stmt::{self, Stmt};

/// The comment of the base chain's first rule.
pub const REPLIES_WHY: &str = "replies and related packets of allowed connections pass";

/// One command of a render, in the order the transaction runs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    /// The table (kept when present).
    AddTable,
    /// A chain (kept when present); `base`: the forward hook's.
    AddChain {
        name: String,
        base: bool,
    },
    /// A set of one family's addresses (kept when present); `interval`: of prefixes.
    AddSet {
        name: String,
        fam: Fam,
        interval: bool,
    },
    /// A rule, at the chain's end or (`at_head`) its head.
    Rule {
        chain: String,
        stmts: Vec<Stmt>,
        comment: String,
        at_head: bool,
    },
    DeleteRule {
        chain: String,
        handle: u64,
    },
    FlushChain(String),
    DeleteSet(String),
    DeleteChain(String),
    /// Elements into (`add`) or out of a set; prefixes when the set is an interval set.
    Elements {
        add: bool,
        set: String,
        interval: bool,
        nets: Vec<IpNet>,
    },
}

impl Cmd {
    fn rule(chain: &str, stmts: Vec<Stmt>, why: &str, at_head: bool) -> Cmd {
        let comment = comment(why, &stmts);
        Cmd::Rule {
            chain: chain.to_string(),
            stmts,
            comment,
            at_head,
        }
    }

    /// Adds this command to `b` (the table's batch).
    fn push_to(&self, b: &mut Batch) -> Result<(), NftError> {
        match self {
            Cmd::AddTable => {
                b.add_table();
            }
            Cmd::AddChain { name, base } => {
                let hook = base.then_some(BaseChain {
                    kind: "filter",
                    hook: Hook::Forward,
                    priority: BASE_PRIORITY,
                });
                b.add_chain(name, hook)?;
            }
            Cmd::AddSet { name, fam, interval } => {
                let ty = match fam {
                    Fam::V4 => DataType::Ipv4Addr,
                    Fam::V6 => DataType::Ipv6Addr,
                };
                let decl = SetDecl::typed(name, &[ty], None);
                b.add_set(if *interval { decl.interval() } else { decl })?;
            }
            Cmd::Rule {
                chain,
                stmts,
                comment,
                at_head,
            } => {
                b.commented_rule(chain, stmt::rule(stmts), !at_head, Some(comment.clone()))?;
            }
            Cmd::DeleteRule { chain, handle } => {
                b.delete_rule(chain, *handle)?;
            }
            Cmd::FlushChain(c) => {
                b.flush_chain(c)?;
            }
            Cmd::DeleteSet(s) => {
                b.destroy_set(s, false)?;
            }
            Cmd::DeleteChain(c) => {
                b.destroy_chain(c)?;
            }
            Cmd::Elements {
                add,
                set,
                interval,
                nets,
            } => {
                let op = if *add { ElementOp::Add } else { ElementOp::Delete };
                for n in nets {
                    if *interval {
                        b.interval(op, set, *n)?;
                    } else {
                        b.push(op, set, n.addr)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The commands as one batch for the table.
pub fn batch(cmds: &[Cmd]) -> Result<Batch, NftError> {
    let mut b = Batch::new(&crate::kernel::table());
    for c in cmds {
        c.push_to(&mut b)?;
    }
    Ok(b)
}

/// The table, the base chain and the global sets: every `add` here keeps what exists.
pub fn globals() -> Vec<Cmd> {
    let mut out = vec![
        Cmd::AddTable,
        Cmd::AddChain {
            name: BASE_CHAIN.into(),
            base: true,
        },
    ];
    for f in Fam::BOTH {
        out.push(Cmd::AddSet {
            name: all_endpoints(f),
            fam: f,
            interval: false,
        });
    }
    out
}

/// The first rule of the base chain.
pub fn replies_rule() -> Cmd {
    Cmd::rule(
        BASE_CHAIN,
        vec![
            Stmt::Replies,
            Stmt::Counter,
            Stmt::Verdict(netsvc_core::nft::Verdict::Accept),
        ],
        REPLIES_WHY,
        true,
    )
}

/// `why`, then a digest of the rule, so a later render can tell an unchanged
/// rule from a changed one by its comment alone.
/// It fits nft's comments (127 bytes, no double quote), so the kernel
/// gives back exactly what was written.
pub fn comment(why: &str, stmts: &[Stmt]) -> String {
    let digest = digest_hex(stmt::text(stmts).as_bytes());
    let mut out = String::new();
    for ch in why.chars().map(|c| if c == '"' { '\'' } else { c }) {
        if out.len() + ch.len_utf8() > WHY_MAX {
            break;
        }
        out.push(ch);
    }
    out.push_str(" #");
    out.push_str(&digest[..10]);
    out
}

/// The longest reason a comment keeps, in bytes: with " #" and the
/// digest's ten, within nft's 127.
const WHY_MAX: usize = 115;

/// The base chain's jumps into one network's chains.
pub fn network_jumps(plan: &Plan) -> Vec<(Vec<Stmt>, String)> {
    let p = &plan.prefix;
    let mut out = Vec::new();
    for (dir, source, chain) in [
        ("egress", true, format!("{p}_out")),
        ("ingress", false, format!("{p}_in")),
    ] {
        for f in Fam::BOTH {
            let stmts = vec![
                Stmt::Addr {
                    fam: f,
                    source,
                    set: format!("{p}_eps{}", f.suffix()),
                    negate: false,
                },
                Stmt::Verdict(netsvc_core::nft::Verdict::Jump(chain.clone())),
            ];
            out.push((stmts, format!("net {p}: {dir} of network {}", plan.network)));
        }
    }
    out
}

fn match_stmts(m: &Match, f: Option<Fam>) -> Vec<Stmt> {
    let addr = |source: bool, set: &str, negate: bool| Stmt::Addr {
        fam: set_family(set).or(f).unwrap_or(Fam::V4),
        source,
        set: set.to_string(),
        negate,
    };
    match m {
        Match::Src { set, negate } => vec![addr(true, set, *negate)],
        Match::Dst { set, negate } => vec![addr(false, set, *negate)],
        Match::L4 { proto, ports } => {
            let mut v = vec![Stmt::L4(*proto)];
            if let Some((a, b)) = ports {
                v.push(Stmt::Dport(*a, *b));
            }
            v
        }
    }
}

/// Set names end in their family's digit.
fn set_family(set: &str) -> Option<Fam> {
    match set.chars().last() {
        Some('4') => Some(Fam::V4),
        Some('6') => Some(Fam::V6),
        _ => None,
    }
}

/// The rule's statements, and a log-only rule before it when it logs.
pub fn rule_stmts(rule: &RuleDef, plan: &Plan) -> Vec<(Vec<Stmt>, String)> {
    let mut matches: Vec<Stmt> = Vec::new();
    let has_addr_match = rule.matches.iter().any(|m| !matches!(m, Match::L4 { .. }));
    if let (Some(f), false) = (rule.fam, has_addr_match) {
        matches.push(Stmt::Family(f));
    }
    for m in &rule.matches {
        matches.extend(match_stmts(m, rule.fam));
    }
    let mut out = Vec::new();
    if let Some(prefix) = &rule.log {
        let mut e = matches.clone();
        e.push(Stmt::Limit(plan.log.rate));
        e.push(Stmt::Log {
            prefix: prefix.clone(),
            group: plan.log.group,
        });
        out.push((e, format!("log: {}", rule.why)));
    }
    let mut e = matches;
    e.push(Stmt::Counter);
    e.push(Stmt::Verdict(match &rule.verdict {
        Verdict::Return => netsvc_core::nft::Verdict::Return,
        Verdict::Drop => netsvc_core::nft::Verdict::Drop,
        Verdict::Goto(c) => netsvc_core::nft::Verdict::Goto(c.clone()),
    }));
    out.push((e, rule.why.clone()));
    out
}

/// What a network should hold: its plan and every element of its sets.
pub struct Desired<'a> {
    pub plan: &'a Plan,
    pub elements: BTreeMap<String, BTreeSet<IpNet>>,
}

impl<'a> Desired<'a> {
    pub fn new(plan: &'a Plan, memberships: &[Membership]) -> Desired<'a> {
        let mut elements: BTreeMap<String, BTreeSet<IpNet>> = plan
            .sets
            .iter()
            .map(|(name, def)| {
                let fixed = match &def.members {
                    Members::Cidrs(nets) => nets.iter().copied().collect(),
                    Members::Endpoints(_) => BTreeSet::new(),
                };
                (name.clone(), fixed)
            })
            .collect();
        for m in memberships {
            for (set, ip) in &m.elements {
                elements.entry(set.clone()).or_default().insert(IpNet::host(*ip));
            }
        }
        Desired { plan, elements }
    }
}

/// One atomic batch taking network `prefix` from `current` to `desired`
/// (`None`: the network has no endpoints left, remove all of it).
pub fn reconcile(prefix: &str, desired: Option<&Desired>, current: &Current) -> Vec<Cmd> {
    let own = |name: &str| name.starts_with(&format!("{prefix}_"));
    let mut out = globals();

    // Desired chains with their rules and comments.
    let mut want_chains: BTreeMap<String, Vec<(Vec<Stmt>, String)>> = BTreeMap::new();
    let mut want_jumps: Vec<(Vec<Stmt>, String)> = Vec::new();
    if let Some(d) = desired {
        for (name, rules) in &d.plan.chains {
            let rendered = rules
                .iter()
                .flat_map(|r| rule_stmts(r, d.plan))
                .map(|(e, why)| {
                    let c = comment(&why, &e);
                    (e, c)
                })
                .collect();
            want_chains.insert(name.clone(), rendered);
        }
        want_jumps = network_jumps(d.plan)
            .into_iter()
            .map(|(e, why)| {
                let c = comment(&why, &e);
                (e, c)
            })
            .collect();
    }
    let chain_changed = |name: &str| {
        let want: Vec<&String> = want_chains
            .get(name)
            .map(|r| r.iter().map(|(_, c)| c).collect())
            .unwrap_or_default();
        current
            .chains
            .get(name)
            .is_none_or(|have| have.iter().map(|(_, c)| c).collect::<Vec<_>>() != want)
    };

    // a. replies rule first in the base chain.
    if !current
        .chains
        .get(BASE_CHAIN)
        .is_some_and(|r| r.iter().any(|(_, c)| c.starts_with(REPLIES_WHY)))
    {
        out.push(replies_rule());
    }
    // b. this network's jumps in the base chain, replaced when they differ.
    let jump_tag = format!("net {prefix}:");
    let have_jumps: Vec<&(Option<u64>, String)> = current
        .chains
        .get(BASE_CHAIN)
        .map(|r| r.iter().filter(|(_, c)| c.starts_with(&jump_tag)).collect())
        .unwrap_or_default();
    let jumps_differ =
        have_jumps.iter().map(|(_, c)| c).collect::<Vec<_>>() != want_jumps.iter().map(|(_, c)| c).collect::<Vec<_>>();
    if jumps_differ {
        for (handle, _) in &have_jumps {
            if let Some(h) = handle {
                out.push(Cmd::DeleteRule {
                    chain: BASE_CHAIN.into(),
                    handle: *h,
                });
            }
        }
    }
    // c. flush chains that change or go.
    let stale_chains: Vec<&String> = current
        .chains
        .keys()
        .filter(|c| own(c) && !want_chains.contains_key(*c))
        .collect();
    for name in current.chains.keys().filter(|c| own(c)) {
        if chain_changed(name) {
            out.push(Cmd::FlushChain(name.clone()));
        }
    }
    // d. sets: drop stale or redefined ones, create new ones, diff the rest.
    let want_sets = desired.map(|d| &d.plan.sets);
    for (name, have) in current.sets.iter().filter(|(n, _)| own(n)) {
        let keep = want_sets
            .and_then(|s| s.get(name))
            .is_some_and(|def| def.interval() == have.interval);
        if !keep {
            out.push(Cmd::DeleteSet(name.clone()));
        }
    }
    if let Some(d) = desired {
        for (name, def) in &d.plan.sets {
            let want = d.elements.get(name).cloned().unwrap_or_default();
            let interval = def.interval();
            match current.sets.get(name).filter(|h| h.interval == interval) {
                None => {
                    out.push(Cmd::AddSet {
                        name: name.clone(),
                        fam: def.fam,
                        interval,
                    });
                    push_elements(&mut out, true, name, interval, want.iter());
                }
                Some(have) => {
                    push_elements(&mut out, false, name, interval, have.elements.difference(&want));
                    push_elements(&mut out, true, name, interval, want.difference(&have.elements));
                }
            }
        }
    }
    // e. the global endpoint sets: every network's endpoints, no more.
    for f in Fam::BOTH {
        let (global, mine) = (all_endpoints(f), format!("{prefix}_eps{}", f.suffix()));
        let want = desired.and_then(|d| d.elements.get(&mine).cloned()).unwrap_or_default();
        let others: BTreeSet<IpNet> = current
            .sets
            .iter()
            .filter(|(n, _)| n.ends_with(&format!("_eps{}", f.suffix())) && **n != mine && **n != global)
            .flat_map(|(_, s)| s.elements.iter().copied())
            .collect();
        let have = current
            .sets
            .get(&global)
            .map(|s| s.elements.clone())
            .unwrap_or_default();
        let gone: Vec<IpNet> = have
            .iter()
            .filter(|ip| !want.contains(ip) && !others.contains(ip))
            .copied()
            .collect();
        push_elements(&mut out, false, &global, false, gone.iter());
        push_elements(&mut out, true, &global, false, want.difference(&have));
    }
    // f. chains: create, then fill the changed ones (targets exist before gotos).
    for name in want_chains.keys().filter(|n| !current.chains.contains_key(*n)) {
        out.push(Cmd::AddChain {
            name: name.clone(),
            base: false,
        });
    }
    for (name, rules) in &want_chains {
        if chain_changed(name) {
            for (stmts, c) in rules {
                out.push(Cmd::Rule {
                    chain: name.clone(),
                    stmts: stmts.clone(),
                    comment: c.clone(),
                    at_head: false,
                });
            }
        }
    }
    if jumps_differ {
        for (stmts, c) in &want_jumps {
            out.push(Cmd::Rule {
                chain: BASE_CHAIN.into(),
                stmts: stmts.clone(),
                comment: c.clone(),
                at_head: false,
            });
        }
    }
    // g. chains nothing refers to any more.
    for name in stale_chains {
        out.push(Cmd::DeleteChain(name.clone()));
    }
    out
}

fn push_elements<'n>(out: &mut Vec<Cmd>, add: bool, set: &str, interval: bool, nets: impl Iterator<Item = &'n IpNet>) {
    let nets: Vec<IpNet> = nets.copied().collect();
    if !nets.is_empty() {
        out.push(Cmd::Elements {
            add,
            set: set.to_string(),
            interval,
            nets,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use netsvc_core::nft::Verdict as V;
    use serde_json::json;

    use super::*;
    use crate::config::{FirewallConf, Protocol};
    use crate::kernel::{Current, SetState};
    use crate::model::{membership, plan};

    fn example() -> FirewallConf {
        FirewallConf::from_value(&json!({"cniVersion": "1.0.0", "name": "web", "type": "netsvc-firewall",
            "defaultIngress": "deny",
            "policies": [{"name": "api-from-web", "select": {"labels": {"tier": "api"}},
                "ingress": [{"from": [{"names": ["web"]}, {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}],
                             "ports": [{"protocol": "tcp", "port": 8080, "endPort": 8090}]}],
                "egress": [{"to": [{"labels": {"tier": "db"}}], "ports": [{"protocol": "tcp", "port": 5432}]}]}],
            "log": {"denied": true, "group": 7}}))
        .unwrap()
    }

    fn ep(id: &str, ip: &str, name: &str, tier: &str) -> netsvc_core::graph::Endpoint {
        crate::model::test_endpoint("web", id, ip, name, tier)
    }

    /// The table a batch of adds and inserts makes from nothing, as the
    /// kernel would hold it: each object is checked to exist before anything
    /// refers to it, as the kernel requires within one transaction.
    #[derive(Default)]
    struct Table {
        /// Chain → whether it is the base chain.
        chains: BTreeMap<String, bool>,
        /// Chain → its rules' (statements, comment), in order.
        rules: BTreeMap<String, Vec<(Vec<Stmt>, String)>>,
        /// Set → (family, interval, elements).
        sets: BTreeMap<String, (Fam, bool, Vec<IpNet>)>,
    }

    impl Table {
        fn apply(cmds: &[Cmd]) -> Table {
            let mut t = Table::default();
            for c in cmds {
                match c {
                    Cmd::AddTable => {}
                    Cmd::AddChain { name, base } => {
                        assert!(t.chains.insert(name.clone(), *base).is_none(), "twice: {c:?}")
                    }
                    Cmd::AddSet { name, fam, interval } => {
                        assert!(
                            t.sets.insert(name.clone(), (*fam, *interval, vec![])).is_none(),
                            "twice: {c:?}"
                        )
                    }
                    Cmd::Elements {
                        add: true, set, nets, ..
                    } => {
                        let s = t.sets.get_mut(set).unwrap_or_else(|| panic!("no set yet: {c:?}"));
                        s.2.extend(nets.iter().copied());
                    }
                    Cmd::Rule {
                        chain,
                        stmts,
                        comment,
                        at_head,
                    } => {
                        assert!(t.chains.contains_key(chain), "no chain yet: {c:?}");
                        for s in stmts {
                            match s {
                                Stmt::Verdict(V::Jump(to) | V::Goto(to)) => {
                                    assert!(t.chains.contains_key(to), "no target chain yet: {c:?}")
                                }
                                Stmt::Addr { set, .. } => assert!(t.sets.contains_key(set), "no set yet: {c:?}"),
                                _ => {}
                            }
                        }
                        let rules = t.rules.entry(chain.clone()).or_default();
                        let rule = (stmts.clone(), comment.clone());
                        if *at_head {
                            rules.insert(0, rule)
                        } else {
                            rules.push(rule)
                        }
                    }
                    _ => panic!("a first render only adds: {c:?}"),
                }
            }
            t
        }

        fn elements(&self, set: &str) -> Vec<String> {
            let text = |n: &IpNet| {
                if *n == IpNet::host(n.addr) {
                    n.addr.to_string()
                } else {
                    n.to_string()
                }
            };
            self.sets[set].2.iter().map(text).collect()
        }

        /// What happens to `pkt` in the forward hook, and the log prefixes it meets.
        fn verdict(&self, pkt: &Packet) -> (&'static str, Vec<String>) {
            let mut logs = Vec::new();
            // The chains to go back to, each with the rule to go on from.
            let mut stack: Vec<(&str, usize)> = vec![];
            let (mut chain, mut at) = (BASE_CHAIN, 0);
            loop {
                let rules = self.rules.get(chain).map(Vec::as_slice).unwrap_or_default();
                let Some((stmts, _)) = rules.get(at) else {
                    match stack.pop() {
                        Some(back) => (chain, at) = back,
                        // The base chain's policy: accept.
                        None => return ("accept", logs),
                    }
                    continue;
                };
                at += 1;
                let mut next = None;
                for s in stmts {
                    if !self.passes(s, pkt) {
                        break;
                    }
                    match s {
                        Stmt::Log { prefix, .. } => logs.push(prefix.clone()),
                        Stmt::Verdict(V::Accept) => return ("accept", logs),
                        Stmt::Verdict(V::Drop) => return ("drop", logs),
                        Stmt::Verdict(V::Return) => next = Some(stack.pop()),
                        Stmt::Verdict(V::Jump(to)) => {
                            stack.push((chain, at));
                            next = Some(Some((to.as_str(), 0)));
                        }
                        Stmt::Verdict(V::Goto(to)) => next = Some(Some((to.as_str(), 0))),
                        _ => {}
                    }
                }
                match next {
                    Some(Some(to)) => (chain, at) = to,
                    // A return from the base chain: its policy.
                    Some(None) => return ("accept", logs),
                    None => {}
                }
            }
        }

        /// Whether the rule goes on past `s` for `pkt`.
        fn passes(&self, s: &Stmt, pkt: &Packet) -> bool {
            let v4 = pkt.src.is_ipv4();
            match s {
                Stmt::Replies => pkt.ct != "new",
                Stmt::Family(f) => (*f == Fam::V4) == v4,
                Stmt::Addr {
                    fam,
                    source,
                    set,
                    negate,
                } => {
                    // ip/ip6 saddr/daddr: only packets of that family.
                    if (*fam == Fam::V4) != v4 {
                        return false;
                    }
                    let ip: IpAddr = if *source { pkt.src } else { pkt.dst };
                    self.sets[set].2.iter().any(|n| n.contains(ip)) != *negate
                }
                Stmt::L4(p) => *p == pkt.proto,
                Stmt::Dport(lo, hi) => pkt.dport.is_some_and(|d| (*lo..=*hi).contains(&d)),
                Stmt::Limit(_) | Stmt::Log { .. } | Stmt::Counter | Stmt::Verdict(_) => true,
            }
        }
    }

    /// A packet the forward hook sees: addresses, layer 4, conntrack state.
    struct Packet {
        src: IpAddr,
        dst: IpAddr,
        proto: Protocol,
        dport: Option<u16>,
        ct: &'static str,
    }

    fn new_conn(src: &str, dst: &str, proto: Protocol, dport: Option<u16>) -> Packet {
        Packet {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto,
            dport,
            ct: "new",
        }
    }

    const WEB: &str = "10.89.0.2";
    const API: &str = "10.89.0.3";
    const TCP: Protocol = Protocol::Tcp;
    const UDP: Protocol = Protocol::Udp;

    /// The first render of network `web` (defaultIngress deny; policy
    /// api-from-web: tier api takes tcp/8080-8090 from names web and from
    /// 10.0.0.0/8 except 10.1.0.0/16, and sends only to tier db on tcp/5432;
    /// denials logged to group 7), with endpoints web and api.
    fn first_render() -> (Plan, Vec<Cmd>) {
        let plan = plan("web", &example());
        let eps = [ep("c1", WEB, "web", "web"), ep("c2", API, "api", "api")];
        let memberships: Vec<_> = eps.iter().map(|e| membership(&plan, e)).collect();
        let desired = Desired::new(&plan, &memberships);
        let cmds = reconcile(&plan.prefix, Some(&desired), &Current::default());
        (plan, cmds)
    }

    #[test]
    fn first_render_makes_the_table_the_base_chain_and_the_networks_chains() {
        let (plan, cmds) = first_render();
        let p = &plan.prefix;
        assert_eq!(cmds[0], Cmd::AddTable);
        let t = Table::apply(&cmds);
        let base: Vec<&String> = t.chains.iter().filter(|(_, b)| **b).map(|(c, _)| c).collect();
        assert_eq!(base, [BASE_CHAIN]);
        let text = batch(&cmds).unwrap().text();
        assert!(
            text.contains(&format!(
                "add chain inet netsvc_firewall forward {{ type filter hook forward priority {BASE_PRIORITY}; policy accept; }}"
            )),
            "{text}"
        );
        let regular: Vec<&String> = t.chains.keys().filter(|c| *c != BASE_CHAIN).collect();
        let want: Vec<String> = ["in", "in_allow", "in_cross", "out", "out_allow", "out_cross"]
            .iter()
            .map(|c| format!("{p}_{c}"))
            .collect();
        assert_eq!(regular, want.iter().collect::<Vec<_>>());
        // The base chain: replies first, then this network's four jumps,
        // by its endpoint sets: nothing per endpoint.
        let rules = &t.rules[BASE_CHAIN];
        let Cmd::Rule { stmts: replies, .. } = replies_rule() else {
            unreachable!()
        };
        assert_eq!(rules[0].0, replies);
        assert!(rules[0].1.starts_with(REPLIES_WHY), "{}", rules[0].1);
        let jumps: Vec<(bool, String, String)> = rules[1..]
            .iter()
            .map(|(stmts, _)| match (&stmts[0], &stmts[1]) {
                (Stmt::Addr { source, set, .. }, Stmt::Verdict(V::Jump(to))) => (*source, set.clone(), to.clone()),
                other => panic!("not a jump: {other:?}"),
            })
            .collect();
        let jump = |source: bool, s: &str, c: &str| (source, format!("{p}_{s}"), format!("{p}_{c}"));
        assert_eq!(
            jumps,
            [
                jump(true, "eps4", "out"),
                jump(true, "eps6", "out"),
                jump(false, "eps4", "in"),
                jump(false, "eps6", "in")
            ]
        );
        // Every rule's comment ends in the digest of its own statements (how
        // the next render tells an unchanged rule) and fits nft's comments.
        for (chain, rules) in &t.rules {
            for (stmts, c) in rules {
                let (why, _) = c.rsplit_once(" #").unwrap();
                assert_eq!(*c, comment(why, stmts), "{chain}: {c}");
                assert!(c.len() < 128 && !c.contains('"'), "{chain}: {c}");
            }
        }
    }

    #[test]
    fn first_render_puts_each_endpoint_in_its_sets() {
        let (plan, cmds) = first_render();
        let p = &plan.prefix;
        let t = Table::apply(&cmds);
        assert_eq!(t.elements("eps4"), [WEB, API], "every network's endpoints");
        assert_eq!(t.elements("eps6"), Vec::<String>::new());
        assert_eq!(t.elements(&format!("{p}_eps4")), [WEB, API], "this network's endpoints");
        assert_eq!(t.elements(&format!("{p}_eps6")), Vec::<String>::new());
        for (name, (fam, interval, elements)) in &t.sets {
            let want = if name.ends_with('4') { Fam::V4 } else { Fam::V6 };
            assert_eq!(*fam, want, "{name}");
            // Only the policy's cidr peers are interval sets of prefixes.
            assert_eq!(
                *interval,
                elements.iter().any(|n| n.prefix < 32),
                "{name}: {elements:?}"
            );
        }
        let cidrs: Vec<Vec<String>> = t
            .sets
            .iter()
            .filter(|(_, (_, interval, _))| *interval)
            .map(|(n, _)| t.elements(n))
            .collect();
        assert_eq!(cidrs, [vec!["10.0.0.0/8"], vec!["10.1.0.0/16"]]);
    }

    #[test]
    fn first_render_allows_what_the_policy_allows_and_drops_the_rest() {
        let (_, cmds) = first_render();
        let mut t = Table::apply(&cmds);
        let verdict = |t: &Table, src, dst, proto, port| t.verdict(&new_conn(src, dst, proto, port)).0;
        // Ingress of api: tcp/8080-8090 from web, or from 10/8 but 10.1/16.
        for (src, proto, port, want) in [
            (WEB, TCP, Some(8080), "accept"),
            (WEB, TCP, Some(8090), "accept"),
            (WEB, TCP, Some(8079), "drop"),
            (WEB, TCP, Some(8091), "drop"),
            (WEB, UDP, Some(8080), "drop"),
            (WEB, Protocol::Sctp, None, "drop"),
            ("10.5.0.1", TCP, Some(8085), "accept"),
            ("10.1.0.5", TCP, Some(8085), "drop"),
            ("192.168.1.1", TCP, Some(8080), "drop"),
        ] {
            assert_eq!(
                verdict(&t, src, API, proto, port),
                want,
                "{src} → api {proto:?}/{port:?}"
            );
        }
        // defaultIngress deny: web, which no policy selects, takes nothing
        // (api's own egress to web is the policy's: see below).
        for src in ["10.5.0.1", "192.168.1.1"] {
            assert_eq!(verdict(&t, src, WEB, TCP, Some(80)), "drop", "{src} → web");
        }
        // Egress: web's is open (defaultEgress allow); api's, isolated by the
        // policy, goes only to tier db (none here).
        assert_eq!(verdict(&t, WEB, "192.0.2.1", TCP, Some(443)), "accept");
        assert_eq!(verdict(&t, API, "192.0.2.1", TCP, Some(5432)), "drop");
        assert_eq!(verdict(&t, API, "192.0.2.1", UDP, Some(53)), "drop");
        assert_eq!(verdict(&t, API, WEB, TCP, Some(80)), "drop");
        // Replies of any connection pass, whatever the policy says of new ones.
        for src in [WEB, "192.168.1.1", "10.1.0.5"] {
            let mut reply = new_conn(src, API, TCP, Some(9999));
            reply.ct = "established";
            assert_eq!(t.verdict(&reply).0, "accept", "{src} → api reply");
        }
        // Traffic of no endpoint of this network is not this network's business.
        assert_eq!(verdict(&t, "192.0.2.1", "198.51.100.1", TCP, Some(22)), "accept");
        assert_eq!(verdict(&t, "2001:db8::1", "2001:db8::2", TCP, Some(22)), "accept");
        // Another network's endpoint (as its render puts it in eps4): only
        // the cidr rule lets it in, and nothing of this network reaches it.
        let other = "10.90.0.7";
        t.sets
            .get_mut("eps4")
            .unwrap()
            .2
            .push(IpNet::host(other.parse().unwrap()));
        assert_eq!(verdict(&t, other, API, TCP, Some(8080)), "accept", "cidr rule");
        assert_eq!(verdict(&t, other, API, TCP, Some(80)), "drop");
        assert_eq!(verdict(&t, other, WEB, TCP, Some(80)), "drop");
        assert_eq!(
            verdict(&t, WEB, other, TCP, Some(80)),
            "drop",
            "web's egress is open, not across networks"
        );
    }

    #[test]
    fn first_render_logs_each_denial_with_its_reason_and_nothing_allowed() {
        let (_, cmds) = first_render();
        let t = Table::apply(&cmds);
        let logs = |src, dst, port| t.verdict(&new_conn(src, dst, TCP, Some(port))).1;
        assert_eq!(logs(WEB, API, 8080), Vec::<String>::new());
        assert_eq!(logs(WEB, API, 22), ["netsvc-fw web api-from-web ingress denied: "]);
        assert_eq!(logs("10.5.0.1", WEB, 80), ["netsvc-fw web default ingress denied: "]);
        assert_eq!(
            logs(API, "192.0.2.1", 80),
            ["netsvc-fw web api-from-web egress denied: "]
        );
        // Every log is rate-limited and goes to the configured group.
        for (chain, rules) in &t.rules {
            for (stmts, c) in rules
                .iter()
                .filter(|(s, _)| s.iter().any(|s| matches!(s, Stmt::Log { .. })))
            {
                let n = stmts.len();
                assert_eq!(stmts[n - 2], Stmt::Limit(example().log.rate), "{chain}: {c}");
                assert!(
                    matches!(&stmts[n - 1], Stmt::Log { group: Some(7), .. }),
                    "{chain}: {c}"
                );
                assert!(c.starts_with("log: "), "{chain}: {c}");
            }
        }
    }

    #[test]
    fn an_endpoint_is_elements_only() {
        let plan = plan("web", &example());
        let m = membership(&plan, &ep("c2", "10.89.0.3", "api", "api"));
        insta::assert_json_snapshot!(m.elements);
    }

    #[test]
    fn teardown_removes_only_this_network() {
        let mut current = Current::default();
        current.chains.insert(
            BASE_CHAIN.into(),
            vec![(Some(2), format!("{REPLIES_WHY} #x")), (Some(3), "net web_1:x".into())],
        );
        current.chains.insert("web_1_in".into(), vec![]);
        current.chains.insert("other_2_in".into(), vec![]);
        let set = SetState {
            addr_type: "ipv4_addr".into(),
            interval: false,
            elements: ["10.0.0.2/32".parse().unwrap()].into(),
        };
        current.sets.insert("web_1_eps4".into(), set.clone());
        current.sets.insert(
            "other_2_eps4".into(),
            SetState {
                elements: ["10.0.0.9/32".parse().unwrap()].into(),
                ..set.clone()
            },
        );
        current.sets.insert(
            "eps4".into(),
            SetState {
                elements: ["10.0.0.2/32".parse().unwrap(), "10.0.0.9/32".parse().unwrap()].into(),
                ..set
            },
        );
        let cmds = reconcile("web_1", None, &current);
        // What the batch does beyond the globals' adds, which keep what exists.
        let text = batch(&cmds[globals().len()..]).unwrap().text();
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            [
                // This network's jump goes; the replies rule (handle 2) stays.
                "delete rule inet netsvc_firewall forward handle 3",
                "destroy set inet netsvc_firewall web_1_eps4",
                // Its endpoint leaves the global set; another network's stays.
                "delete element inet netsvc_firewall eps4 { 10.0.0.2 }",
                // Empty, so gone without a flush.
                "destroy chain inet netsvc_firewall web_1_in",
            ],
            "{cmds:#?}"
        );
    }
}
