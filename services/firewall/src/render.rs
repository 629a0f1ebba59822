//! Plans and memberships → nftables JSON commands (pure). Full renders diff
//! the desired network against what the kernel holds ([`crate::kernel::Current`])
//! and touch only what differs; ADD and DEL are element updates only.

use std::collections::{BTreeMap, BTreeSet};

use netsvc_core::cni::IpNet;
use netsvc_core::naming::digest_hex;
use serde_json::{Value, json};

use crate::kernel::Current;
use crate::model::{
    BASE_CHAIN, BASE_PRIORITY, Fam, Match, Members, Membership, Plan, RuleDef, TABLE, Verdict, all_endpoints,
};

/// The comment of the base chain's first rule.
pub const REPLIES_WHY: &str = "replies and related packets of allowed connections pass";

fn obj(kind: &str, body: Value) -> Value {
    let mut b = body;
    b["family"] = json!("inet");
    b["table"] = json!(TABLE);
    json!({ kind: b })
}

fn cmd(op: &str, kind: &str, body: Value) -> Value {
    json!({ op: obj(kind, body) })
}

/// One address or prefix as nft JSON: a host is a plain address.
pub fn element(net: &IpNet) -> Value {
    if *net == IpNet::host(net.addr) {
        json!(net.addr.to_string())
    } else {
        json!({"prefix": {"addr": net.addr.to_string(), "len": net.prefix}})
    }
}

/// The table, the base chain and the global sets: every `add` here keeps what exists.
pub fn globals() -> Vec<Value> {
    let mut out = vec![
        cmd("add", "table", json!({"name": TABLE})),
        cmd(
            "add",
            "chain",
            json!({"name": BASE_CHAIN, "type": "filter", "hook": "forward", "prio": BASE_PRIORITY, "policy": "accept"}),
        ),
    ];
    for f in Fam::BOTH {
        out.push(cmd(
            "add",
            "set",
            json!({"name": all_endpoints(f), "type": f.addr_type()}),
        ));
    }
    out
}

/// The first rule of the base chain.
pub fn replies_rule() -> Value {
    let expr = json!([
        {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}},
        {"counter": null},
        {"accept": null}
    ]);
    rule_cmd("insert", BASE_CHAIN, expr, REPLIES_WHY)
}

fn rule_cmd(op: &str, chain: &str, expr: Value, why: &str) -> Value {
    cmd(
        op,
        "rule",
        json!({"chain": chain, "expr": expr, "comment": comment(why, &expr)}),
    )
}

/// `why`, then a digest of the rule, so a later render can tell an unchanged
/// rule from a changed one by its comment alone.
pub fn comment(why: &str, expr: &Value) -> String {
    let digest = digest_hex(expr.to_string().as_bytes());
    let mut why: String = why.chars().take(200).collect();
    why.push_str(" #");
    why.push_str(&digest[..10]);
    why
}

/// The base chain's jumps into one network's chains.
pub fn network_jumps(plan: &Plan) -> Vec<(Value, String)> {
    let p = &plan.prefix;
    let mut out = Vec::new();
    for (dir, field, chain) in [
        ("egress", "saddr", format!("{p}_out")),
        ("ingress", "daddr", format!("{p}_in")),
    ] {
        for f in Fam::BOTH {
            let expr = json!([
                {"match": {"op": "==", "left": {"payload": {"protocol": f.proto(), "field": field}},
                           "right": format!("@{p}_eps{}", f.suffix())}},
                {"jump": {"target": chain}}
            ]);
            let why = format!("net {p}: {dir} of network {}", plan.network);
            out.push((expr, why));
        }
    }
    out
}

fn match_json(m: &Match, f: Option<Fam>) -> Vec<Value> {
    let addr = |field: &str, set: &str, negate: bool| {
        let fam = set_family(set).or(f).unwrap_or(Fam::V4);
        json!({"match": {"op": if negate { "!=" } else { "==" },
                         "left": {"payload": {"protocol": fam.proto(), "field": field}}, "right": format!("@{set}")}})
    };
    match m {
        Match::Src { set, negate } => vec![addr("saddr", set, *negate)],
        Match::Dst { set, negate } => vec![addr("daddr", set, *negate)],
        Match::L4 { proto, ports } => {
            let mut v =
                vec![json!({"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": proto.as_str()}})];
            if let Some((a, b)) = ports {
                let right = if a == b { json!(a) } else { json!({"range": [a, b]}) };
                v.push(json!({"match": {"op": "==", "left": {"payload": {"protocol": "th", "field": "dport"}}, "right": right}}));
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
pub fn rule_exprs(rule: &RuleDef, plan: &Plan) -> Vec<(Value, String)> {
    let mut matches: Vec<Value> = Vec::new();
    let has_addr_match = rule.matches.iter().any(|m| !matches!(m, Match::L4 { .. }));
    if let (Some(f), false) = (rule.fam, has_addr_match) {
        let proto = if f == Fam::V4 { "ipv4" } else { "ipv6" };
        matches.push(json!({"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": proto}}));
    }
    for m in &rule.matches {
        matches.extend(match_json(m, rule.fam));
    }
    let mut out = Vec::new();
    if let Some(prefix) = &rule.log {
        let mut log = json!({"prefix": prefix});
        if let Some(g) = plan.log.group {
            log["group"] = json!(g);
        }
        let mut e = matches.clone();
        e.push(json!({"limit": {"rate": plan.log.rate, "per": "second"}}));
        e.push(json!({"log": log}));
        out.push((Value::Array(e), format!("log: {}", rule.why)));
    }
    let mut e = matches;
    e.push(json!({"counter": null}));
    e.push(match &rule.verdict {
        Verdict::Return => json!({"return": null}),
        Verdict::Drop => json!({"drop": null}),
        Verdict::Goto(c) => json!({"goto": {"target": c}}),
    });
    out.push((Value::Array(e), rule.why.clone()));
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
pub fn reconcile(prefix: &str, desired: Option<&Desired>, current: &Current) -> Vec<Value> {
    let own = |name: &str| name.starts_with(&format!("{prefix}_"));
    let mut out = globals();

    // Desired chains with their rules and comments.
    let mut want_chains: BTreeMap<String, Vec<(Value, String)>> = BTreeMap::new();
    let mut want_jumps: Vec<(Value, String)> = Vec::new();
    if let Some(d) = desired {
        for (name, rules) in &d.plan.chains {
            let rendered = rules
                .iter()
                .flat_map(|r| rule_exprs(r, d.plan))
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
                // nft identifies the rule by handle; the schema still wants an expr.
                out.push(cmd(
                    "delete",
                    "rule",
                    json!({"chain": BASE_CHAIN, "handle": h, "expr": []}),
                ));
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
            out.push(cmd("flush", "chain", json!({"name": name})));
        }
    }
    // d. sets: drop stale or redefined ones, create new ones, diff the rest.
    let want_sets = desired.map(|d| &d.plan.sets);
    for (name, have) in current.sets.iter().filter(|(n, _)| own(n)) {
        let keep = want_sets
            .and_then(|s| s.get(name))
            .is_some_and(|def| def.interval() == have.interval);
        if !keep {
            out.push(cmd("delete", "set", json!({"name": name, "type": have.addr_type})));
        }
    }
    if let Some(d) = desired {
        for (name, def) in &d.plan.sets {
            let want = d.elements.get(name).cloned().unwrap_or_default();
            match current.sets.get(name).filter(|h| h.interval == def.interval()) {
                None => {
                    let mut set = json!({"name": name, "type": def.fam.addr_type()});
                    if def.interval() {
                        set["flags"] = json!(["interval"]);
                    }
                    out.push(cmd("add", "set", set));
                    push_elements(&mut out, "add", name, want.iter());
                }
                Some(have) => {
                    push_elements(&mut out, "delete", name, have.elements.difference(&want));
                    push_elements(&mut out, "add", name, want.difference(&have.elements));
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
        push_elements(&mut out, "delete", &global, gone.iter());
        push_elements(&mut out, "add", &global, want.difference(&have));
    }
    // f. chains: create, then fill the changed ones (targets exist before gotos).
    for name in want_chains.keys().filter(|n| !current.chains.contains_key(*n)) {
        out.push(cmd("add", "chain", json!({"name": name})));
    }
    for (name, rules) in &want_chains {
        if chain_changed(name) {
            for (expr, c) in rules {
                out.push(cmd("add", "rule", json!({"chain": name, "expr": expr, "comment": c})));
            }
        }
    }
    if jumps_differ {
        for (expr, c) in &want_jumps {
            out.push(cmd(
                "add",
                "rule",
                json!({"chain": BASE_CHAIN, "expr": expr, "comment": c}),
            ));
        }
    }
    // g. chains nothing refers to any more.
    for name in stale_chains {
        out.push(cmd("delete", "chain", json!({"name": name})));
    }
    out
}

fn push_elements<'n>(out: &mut Vec<Value>, op: &str, set: &str, nets: impl Iterator<Item = &'n IpNet>) {
    let elem: Vec<Value> = nets.map(element).collect();
    if !elem.is_empty() {
        out.push(cmd(op, "element", json!({"name": set, "elem": elem})));
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::config::FirewallConf;
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

    /// The table a batch of `add`s and `insert`s makes from nothing, as the
    /// kernel would hold it: each object is checked to exist before anything
    /// refers to it, as nft requires within one batch.
    #[derive(Default)]
    struct Table {
        /// Chain → its definition (hook, priority, policy of a base chain).
        chains: BTreeMap<String, Value>,
        /// Chain → its rules' (expression, comment), in order.
        rules: BTreeMap<String, Vec<(Vec<Value>, String)>>,
        /// Set → (definition, elements).
        sets: BTreeMap<String, (Value, Vec<IpNet>)>,
    }

    impl Table {
        fn apply(cmds: &[Value]) -> Table {
            let mut t = Table::default();
            for c in cmds {
                let (op, body) = c.as_object().and_then(|o| o.iter().next()).unwrap();
                let (kind, b) = body.as_object().and_then(|o| o.iter().next()).unwrap();
                if kind != "table" {
                    assert_eq!((&b["family"], &b["table"]), (&json!("inet"), &json!(TABLE)), "{c}");
                }
                let name = b["name"].as_str().unwrap_or_default().to_string();
                match (op.as_str(), kind.as_str()) {
                    ("add", "table") => assert_eq!(b["family"], "inet"),
                    ("add", "chain") => assert!(t.chains.insert(name, b.clone()).is_none(), "twice: {c}"),
                    ("add", "set") => assert!(t.sets.insert(name, (b.clone(), vec![])).is_none(), "twice: {c}"),
                    ("add", "element") => {
                        let set = t.sets.get_mut(&name).unwrap_or_else(|| panic!("no set yet: {c}"));
                        set.1.extend(b["elem"].as_array().unwrap().iter().map(parse_elem));
                    }
                    ("add" | "insert", "rule") => {
                        let chain = b["chain"].as_str().unwrap();
                        assert!(t.chains.contains_key(chain), "no chain yet: {c}");
                        let expr = b["expr"].as_array().unwrap().clone();
                        for target in expr.iter().filter_map(|s| s.get("jump").or(s.get("goto"))) {
                            let target = target["target"].as_str().unwrap();
                            assert!(t.chains.contains_key(target), "no target chain yet: {c}");
                        }
                        for set in expr
                            .iter()
                            .filter_map(|s| s["match"]["right"].as_str()?.strip_prefix('@'))
                        {
                            assert!(t.sets.contains_key(set), "no set yet: {c}");
                        }
                        let rule = (expr, b["comment"].as_str().unwrap().to_string());
                        let rules = t.rules.entry(chain.to_string()).or_default();
                        if op == "insert" {
                            rules.insert(0, rule)
                        } else {
                            rules.push(rule)
                        }
                    }
                    _ => panic!("a first render only adds: {c}"),
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
            self.sets[set].1.iter().map(text).collect()
        }

        /// What happens to `pkt` in the forward hook, and the log prefixes it meets.
        fn verdict(&self, pkt: &Packet) -> (&'static str, Vec<String>) {
            let mut logs = Vec::new();
            // The chains to go back to, each with the rule to go on from.
            let mut stack: Vec<(&str, usize)> = vec![];
            let (mut chain, mut at) = (BASE_CHAIN, 0);
            loop {
                let rules = self.rules.get(chain).map(Vec::as_slice).unwrap_or_default();
                let Some((expr, _)) = rules.get(at) else {
                    match stack.pop() {
                        Some(back) => (chain, at) = back,
                        // The base chain's policy.
                        None => {
                            return (
                                self.chains[BASE_CHAIN]["policy"].as_str().map(|_| "accept").unwrap(),
                                logs,
                            );
                        }
                    }
                    continue;
                };
                at += 1;
                let mut next = None;
                for stmt in expr {
                    let (key, val) = stmt.as_object().and_then(|o| o.iter().next()).unwrap();
                    match key.as_str() {
                        "match" if self.matches(val, pkt) => {}
                        "match" => break,
                        "counter" | "limit" => {}
                        "log" => logs.push(val["prefix"].as_str().unwrap().to_string()),
                        "accept" => return ("accept", logs),
                        "drop" => return ("drop", logs),
                        "return" => next = Some(stack.pop()),
                        "jump" => {
                            stack.push((chain, at));
                            next = Some(Some((val["target"].as_str().unwrap(), 0)));
                        }
                        "goto" => next = Some(Some((val["target"].as_str().unwrap(), 0))),
                        other => panic!("unknown statement {other}"),
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

        fn matches(&self, m: &Value, pkt: &Packet) -> bool {
            let (left, right) = (&m["left"], &m["right"]);
            let value: Option<Value> = if left["ct"]["key"] == "state" {
                Some(json!(pkt.ct))
            } else if left["meta"]["key"] == "l4proto" {
                Some(json!(pkt.proto))
            } else if left["meta"]["key"] == "nfproto" {
                Some(json!(if pkt.src.is_ipv4() { "ipv4" } else { "ipv6" }))
            } else if left["payload"]["protocol"] == "th" {
                pkt.dport.map(|p| json!(p))
            } else {
                // ip/ip6 saddr/daddr: only packets of that family.
                let fam = if pkt.src.is_ipv4() { "ip" } else { "ip6" };
                let ip = if left["payload"]["field"] == "saddr" {
                    pkt.src
                } else {
                    pkt.dst
                };
                (left["payload"]["protocol"] == fam).then(|| json!(ip.to_string()))
            };
            let Some(value) = value else { return false };
            let hit = match right {
                Value::String(s) if s.starts_with('@') => {
                    let ip: IpAddr = value.as_str().unwrap().parse().unwrap();
                    self.sets[&s[1..]].1.iter().any(|n| n.contains(ip))
                }
                Value::Array(any) => any.contains(&value),
                Value::Object(o) if o.contains_key("range") => {
                    let (lo, hi) = (&o["range"][0], &o["range"][1]);
                    (lo.as_u64()..=hi.as_u64()).contains(&value.as_u64())
                }
                _ => *right == value,
            };
            match m["op"].as_str().unwrap() {
                "==" | "in" => hit,
                "!=" => !hit,
                op => panic!("unknown op {op}"),
            }
        }
    }

    fn parse_elem(e: &Value) -> IpNet {
        match e.as_str() {
            Some(ip) => IpNet::host(ip.parse().unwrap()),
            None => {
                let p = &e["prefix"];
                IpNet::new(
                    p["addr"].as_str().unwrap().parse().unwrap(),
                    p["len"].as_u64().unwrap() as u8,
                )
                .unwrap()
            }
        }
    }

    /// A packet the forward hook sees: addresses, layer 4, conntrack state.
    struct Packet {
        src: IpAddr,
        dst: IpAddr,
        proto: &'static str,
        dport: Option<u16>,
        ct: &'static str,
    }

    fn new_conn(src: &str, dst: &str, proto: &'static str, dport: Option<u16>) -> Packet {
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

    /// The first render of network `web` (defaultIngress deny; policy
    /// api-from-web: tier api takes tcp/8080-8090 from names web and from
    /// 10.0.0.0/8 except 10.1.0.0/16, and sends only to tier db on tcp/5432;
    /// denials logged to group 7), with endpoints web and api.
    fn first_render() -> (Plan, Vec<Value>) {
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
        let table = &cmds[0]["add"]["table"];
        assert_eq!(
            (&table["family"], &table["name"]),
            (&json!("inet"), &json!(TABLE)),
            "{}",
            cmds[0]
        );
        let t = Table::apply(&cmds);
        let base = &t.chains[BASE_CHAIN];
        assert_eq!(
            (&base["type"], &base["hook"], &base["prio"], &base["policy"]),
            (
                &json!("filter"),
                &json!("forward"),
                &json!(BASE_PRIORITY),
                &json!("accept")
            ),
            "{base}"
        );
        let regular: Vec<&String> = t.chains.keys().filter(|c| *c != BASE_CHAIN).collect();
        let want: Vec<String> = ["in", "in_allow", "in_cross", "out", "out_allow", "out_cross"]
            .iter()
            .map(|c| format!("{p}_{c}"))
            .collect();
        assert_eq!(regular, want.iter().collect::<Vec<_>>());
        for c in &want {
            assert!(
                t.chains[c].get("hook").is_none(),
                "{c} is a regular chain: {}",
                t.chains[c]
            );
        }
        // The base chain: replies first, then this network's four jumps,
        // by its endpoint sets: nothing per endpoint.
        let rules = &t.rules[BASE_CHAIN];
        assert_eq!(
            rules[0].0,
            replies_rule()["insert"]["rule"]["expr"].as_array().unwrap().clone()
        );
        assert!(rules[0].1.starts_with(REPLIES_WHY), "{}", rules[0].1);
        let jumps: Vec<(String, String, String)> = rules[1..]
            .iter()
            .map(|(e, _)| {
                let m = &e[0]["match"];
                let field = m["left"]["payload"]["field"].as_str().unwrap();
                let set = m["right"].as_str().unwrap();
                (
                    field.into(),
                    set.into(),
                    e[1]["jump"]["target"].as_str().unwrap().into(),
                )
            })
            .collect();
        let jump = |f: &str, s: &str, c: &str| (f.to_string(), format!("@{p}_{s}"), format!("{p}_{c}"));
        assert_eq!(
            jumps,
            [
                jump("saddr", "eps4", "out"),
                jump("saddr", "eps6", "out"),
                jump("daddr", "eps4", "in"),
                jump("daddr", "eps6", "in")
            ]
        );
        // Every rule's comment ends in the digest of its own expression: how
        // the next render tells an unchanged rule.
        for (chain, rules) in &t.rules {
            for (expr, c) in rules {
                let (why, _) = c.rsplit_once(" #").unwrap();
                assert_eq!(*c, comment(why, &Value::Array(expr.clone())), "{chain}: {c}");
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
        for (name, (def, elements)) in &t.sets {
            let fam = if name.ends_with('4') { "ipv4_addr" } else { "ipv6_addr" };
            assert_eq!(def["type"], fam, "{name}");
            // Only the policy's cidr peers are interval sets of prefixes.
            let interval = def["flags"] == json!(["interval"]);
            assert_eq!(
                interval,
                elements.iter().any(|n| n.prefix < 32),
                "{name}: {def} {elements:?}"
            );
        }
        let cidrs: Vec<Vec<String>> = t
            .sets
            .keys()
            .filter(|n| t.sets[*n].0["flags"] == json!(["interval"]))
            .map(|n| t.elements(n))
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
            (WEB, "tcp", Some(8080), "accept"),
            (WEB, "tcp", Some(8090), "accept"),
            (WEB, "tcp", Some(8079), "drop"),
            (WEB, "tcp", Some(8091), "drop"),
            (WEB, "udp", Some(8080), "drop"),
            (WEB, "icmp", None, "drop"),
            ("10.5.0.1", "tcp", Some(8085), "accept"),
            ("10.1.0.5", "tcp", Some(8085), "drop"),
            ("192.168.1.1", "tcp", Some(8080), "drop"),
        ] {
            assert_eq!(verdict(&t, src, API, proto, port), want, "{src} → api {proto}/{port:?}");
        }
        // defaultIngress deny: web, which no policy selects, takes nothing
        // (api's own egress to web is the policy's: see below).
        for src in ["10.5.0.1", "192.168.1.1"] {
            assert_eq!(verdict(&t, src, WEB, "tcp", Some(80)), "drop", "{src} → web");
        }
        // Egress: web's is open (defaultEgress allow); api's, isolated by the
        // policy, goes only to tier db (none here).
        assert_eq!(verdict(&t, WEB, "192.0.2.1", "tcp", Some(443)), "accept");
        assert_eq!(verdict(&t, API, "192.0.2.1", "tcp", Some(5432)), "drop");
        assert_eq!(verdict(&t, API, "192.0.2.1", "udp", Some(53)), "drop");
        assert_eq!(verdict(&t, API, WEB, "tcp", Some(80)), "drop");
        // Replies of any connection pass, whatever the policy says of new ones.
        for src in [WEB, "192.168.1.1", "10.1.0.5"] {
            let mut reply = new_conn(src, API, "tcp", Some(9999));
            reply.ct = "established";
            assert_eq!(t.verdict(&reply).0, "accept", "{src} → api reply");
        }
        // Traffic of no endpoint of this network is not this network's business.
        assert_eq!(verdict(&t, "192.0.2.1", "198.51.100.1", "tcp", Some(22)), "accept");
        assert_eq!(verdict(&t, "2001:db8::1", "2001:db8::2", "tcp", Some(22)), "accept");
        // Another network's endpoint (as its render puts it in eps4): only
        // the cidr rule lets it in, and nothing of this network reaches it.
        let other = "10.90.0.7";
        t.sets
            .get_mut("eps4")
            .unwrap()
            .1
            .push(IpNet::host(other.parse().unwrap()));
        assert_eq!(verdict(&t, other, API, "tcp", Some(8080)), "accept", "cidr rule");
        assert_eq!(verdict(&t, other, API, "tcp", Some(80)), "drop");
        assert_eq!(verdict(&t, other, WEB, "tcp", Some(80)), "drop");
        assert_eq!(
            verdict(&t, WEB, other, "tcp", Some(80)),
            "drop",
            "web's egress is open, not across networks"
        );
    }

    #[test]
    fn first_render_logs_each_denial_with_its_reason_and_nothing_allowed() {
        let (_, cmds) = first_render();
        let t = Table::apply(&cmds);
        let logs = |src, dst, port| t.verdict(&new_conn(src, dst, "tcp", Some(port))).1;
        assert_eq!(logs(WEB, API, 8080), Vec::<String>::new());
        assert_eq!(logs(WEB, API, 22), ["netsvc-fw web api-from-web ingress denied: "]);
        assert_eq!(logs("10.5.0.1", WEB, 80), ["netsvc-fw web default ingress denied: "]);
        assert_eq!(
            logs(API, "192.0.2.1", 80),
            ["netsvc-fw web api-from-web egress denied: "]
        );
        // Every log is rate-limited and goes to the configured group.
        for (chain, rules) in &t.rules {
            for (expr, c) in rules.iter().filter(|(e, _)| e.iter().any(|s| s.get("log").is_some())) {
                let n = expr.len();
                assert_eq!(
                    expr[n - 2],
                    json!({"limit": {"rate": example().log.rate, "per": "second"}}),
                    "{chain}: {c}"
                );
                assert_eq!(expr[n - 1]["log"]["group"], 7, "{chain}: {c}");
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
        // What the batch does beyond the globals' `add`s, which keep what exists.
        let changes: Vec<String> = cmds[globals().len()..]
            .iter()
            .map(|c| {
                let (op, body) = c.as_object().and_then(|o| o.iter().next()).unwrap();
                let (kind, b) = body.as_object().and_then(|o| o.iter().next()).unwrap();
                let what = match kind.as_str() {
                    "rule" => format!("{} handle {}", b["chain"].as_str().unwrap(), b["handle"]),
                    "element" => format!("{} {}", b["name"].as_str().unwrap(), b["elem"]),
                    _ => b["name"].as_str().unwrap().to_string(),
                };
                format!("{op} {kind} {what}")
            })
            .collect();
        assert_eq!(
            changes,
            [
                // This network's jump goes; the replies rule (handle 2) stays.
                "delete rule forward handle 3",
                "delete set web_1_eps4",
                // Its endpoint leaves the global set; another network's stays.
                r#"delete element eps4 ["10.0.0.2"]"#,
                // Empty, so gone without a flush.
                "delete chain web_1_in",
            ],
            "{cmds:#?}"
        );
    }
}
