//! Evaluates a flow against the rules the firewall renders, from the graph
//! alone: which chain decided, and the rule's reason. This is the same plan
//! the kernel runs, interpreted, so `netsvc explain` and the packets agree.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use netsvc_core::cni::IpNet;
use netsvc_core::graph::Endpoint;
use serde::Serialize;

use crate::config::Protocol;
use crate::model::{Fam, Match, Members, Plan, RuleDef, Verdict, membership};

/// A new connection's first packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: Protocol,
    pub port: u16,
}

/// One side's decision: the chain that decided and the rule's reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub direction: &'static str,
    pub network: String,
    pub allowed: bool,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub flow: Flow,
    pub allowed: bool,
    /// The source's egress decision, then the destination's ingress decision;
    /// a side that is not a netsvc endpoint has no step.
    pub steps: Vec<Step>,
}

/// Every network's plan and endpoints: the whole firewall as the kernel has it.
#[derive(Debug, Default)]
pub struct World {
    plans: Vec<Plan>,
    chains: BTreeMap<String, Vec<RuleDef>>,
    elements: BTreeMap<String, BTreeSet<IpNet>>,
}

impl World {
    /// Adds a network: its plan and the endpoints the firewall holds in it.
    pub fn add_network(&mut self, plan: Plan, endpoints: &[Endpoint]) {
        for (name, def) in &plan.sets {
            if let Members::Cidrs(nets) = &def.members {
                self.elements
                    .entry(name.clone())
                    .or_default()
                    .extend(nets.iter().copied());
            }
        }
        for ep in endpoints {
            let m = membership(&plan, ep);
            for (set, ip) in m.elements {
                self.elements.entry(set).or_default().insert(IpNet::host(ip));
            }
        }
        for (name, rules) in &plan.chains {
            self.chains.insert(name.clone(), rules.clone());
        }
        self.plans.push(plan);
    }

    pub fn explain(&self, flow: Flow) -> Explanation {
        let mut steps = Vec::new();
        // Every network's chains must let the packet through (nftables base
        // chains all must accept), so the order only shapes the story: the
        // source's egress first, then the destination's ingress.
        for (direction, ip, suffix) in [("egress", flow.src, "out"), ("ingress", flow.dst, "in")] {
            for plan in &self.plans {
                if !self.contains(&format!("{}_eps{}", plan.prefix, Fam::of(ip).suffix()), ip) {
                    continue;
                }
                let (allowed, reason) = self.run(&format!("{}_{suffix}", plan.prefix), &flow);
                steps.push(Step {
                    direction,
                    network: plan.network.clone(),
                    allowed,
                    reason,
                });
                if !allowed {
                    return Explanation {
                        flow,
                        allowed: false,
                        steps,
                    };
                }
            }
        }
        Explanation {
            flow,
            allowed: steps.iter().all(|s| s.allowed),
            steps,
        }
    }

    /// Runs a chain as nft does: the first matching rule with a verdict decides;
    /// a goto continues in its target; falling off the end returns (allows).
    fn run(&self, chain: &str, flow: &Flow) -> (bool, String) {
        let mut current = chain.to_string();
        // Gotos only go forward in a plan, so this ends; the bound is a guard.
        for _ in 0..16 {
            let Some(rules) = self.chains.get(&current) else {
                return (true, format!("chain {current} is missing: nothing isolates this"));
            };
            let hit = rules.iter().find(|r| self.matches(r, flow));
            match hit.map(|r| (&r.verdict, &r.why)) {
                Some((Verdict::Return, why)) => return (true, why.clone()),
                Some((Verdict::Drop, why)) => return (false, why.clone()),
                Some((Verdict::Goto(next), _)) => current = next.clone(),
                None => return (true, "no policy isolates this direction of the endpoint".into()),
            }
        }
        (false, "rule evaluation did not end".into())
    }

    fn matches(&self, rule: &RuleDef, flow: &Flow) -> bool {
        if rule.fam.is_some_and(|f| f != Fam::of(flow.src)) {
            return false;
        }
        rule.matches.iter().all(|m| match m {
            Match::Src { set, negate } => self.contains(set, flow.src) != *negate,
            Match::Dst { set, negate } => self.contains(set, flow.dst) != *negate,
            Match::L4 { proto, ports } => {
                *proto == flow.proto && ports.is_none_or(|(a, b)| (a..=b).contains(&flow.port))
            }
        })
    }

    fn contains(&self, set: &str, ip: IpAddr) -> bool {
        self.elements
            .get(set)
            .is_some_and(|nets| nets.iter().any(|n| n.contains(ip)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FirewallConf;
    use crate::model::plan;
    use serde_json::json;

    use crate::model::test_endpoint as ep;

    fn world() -> World {
        let conf = FirewallConf::from_value(&json!({"cniVersion": "1.0.0", "name": "web", "type": "t",
            "policies": [{"name": "api-from-web", "select": {"labels": {"tier": "api"}},
                "ingress": [{"from": [{"labels": {"tier": "web"}}], "ports": [{"protocol": "tcp", "port": 8080}]},
                            {"from": [{"cidr": "10.9.0.0/16"}]}]}]}))
        .unwrap();
        let mut w = World::default();
        w.add_network(
            plan("web", &conf),
            &[
                ep("web", "a", "10.89.0.2", "web", "web"),
                ep("web", "b", "10.89.0.3", "api", "api"),
            ],
        );
        let open = FirewallConf::default();
        w.add_network(plan("other", &open), &[ep("other", "c", "10.9.0.5", "x", "web")]);
        w
    }

    fn flow(src: &str, dst: &str, port: u16) -> Flow {
        Flow {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto: Protocol::Tcp,
            port,
        }
    }

    #[test]
    fn names_the_deciding_policy() {
        let w = world();
        let ok = w.explain(flow("10.89.0.2", "10.89.0.3", 8080));
        assert!(ok.allowed, "{ok:?}");
        assert!(ok.steps[1].reason.contains("api-from-web ingress[0]"), "{ok:?}");
        let no = w.explain(flow("10.89.0.2", "10.89.0.3", 9000));
        assert!(!no.allowed);
        assert!(
            no.steps[1].reason.contains("policy api-from-web isolates ingress"),
            "{no:?}"
        );
        let back = w.explain(flow("10.89.0.3", "10.89.0.2", 80));
        assert!(back.allowed, "web is not isolated: {back:?}");
    }

    #[test]
    fn networks_are_isolated_unless_a_cidr_allows() {
        let w = world();
        // other -> web's api: other's egress drops cross-network traffic (no cidr policy there).
        let e = w.explain(flow("10.9.0.5", "10.89.0.3", 22));
        assert!(!e.allowed);
        assert_eq!(e.steps[0].network, "other");
        assert!(e.steps[0].reason.contains("isolated from each other"), "{e:?}");
        // web -> other: web's egress is not isolated but crosses networks: denied.
        let e = w.explain(flow("10.89.0.2", "10.9.0.5", 22));
        assert!(!e.allowed, "{e:?}");
    }
}
