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

    #[test]
    fn first_render_of_a_network() {
        let plan = plan("web", &example());
        let eps = [ep("c1", "10.89.0.2", "web", "web"), ep("c2", "10.89.0.3", "api", "api")];
        let memberships: Vec<_> = eps.iter().map(|e| membership(&plan, e)).collect();
        let desired = Desired::new(&plan, &memberships);
        insta::assert_json_snapshot!(reconcile(&plan.prefix, Some(&desired), &Current::default()));
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
        let text = serde_json::to_string(&cmds).unwrap();
        assert!(text.contains(r#""delete":{"chain":{"name":"web_1_in""#), "{text}");
        assert!(text.contains(r#""delete":{"set":{"name":"web_1_eps4""#), "{text}");
        assert!(text.contains(r#""handle":3"#), "this network's jump goes: {text}");
        assert!(!text.contains("other_2"), "another network is untouched: {text}");
        assert!(
            text.contains(r#"{"delete":{"element":{"elem":["10.0.0.2"],"name":"eps4""#)
                || text.contains(r#""elem":["10.0.0.2"]"#),
            "{text}"
        );
        assert!(
            !text.contains("10.0.0.9"),
            "another network's endpoint stays global: {text}"
        );
    }
}
