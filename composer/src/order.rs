//! The order of a chain: a dependency graph over its plugins, built from
//! their descriptors, sorted so every requirement is met by an earlier
//! plugin. Kahn's algorithm takes the earliest-declared ready plugin first,
//! so the same input always gives the same order, and a chain already in a
//! valid order keeps it. A cycle is reported whole: every plugin on it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use netsvc_core::cni::{CniError, Descriptor, Feature};
use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};

/// Why one plugin must stand before another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The earlier one provides what the later one requires.
    Provides(Feature),
    /// The later one declares `after` the earlier one's type.
    After,
    /// The earlier one declares `before` the later one's type.
    Before,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Provides(feature) => write!(f, "provides {}", feature_name(*feature)),
            Reason::After => f.write_str("must come after it"),
            Reason::Before => f.write_str("must come before it"),
        }
    }
}

/// A feature as descriptors spell it (`host-veth`).
pub fn feature_name(f: Feature) -> String {
    serde_json::to_value(f)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{f:?}"))
}

/// `earlier` must stand before `later` because of `reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub earlier: usize,
    pub later: usize,
    pub reason: Reason,
}

/// A chain in order: indices into the input, and the edges that put them so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ordered {
    pub order: Vec<usize>,
    pub edges: Vec<Edge>,
}

/// The edges between the plugins of `chain` (indices are positions in it).
/// A requirement nobody else provides is an error unless the plugin
/// provides it itself.
pub fn edges(chain: &[Descriptor]) -> Result<Vec<Edge>, CniError> {
    let mut edges = Vec::new();
    for (i, d) in chain.iter().enumerate() {
        for &feature in &d.requires {
            let providers: Vec<usize> = (0..chain.len())
                .filter(|&j| j != i && chain[j].provides.contains(&feature))
                .collect();
            if providers.is_empty() && !d.provides.contains(&feature) {
                return Err(CniError::invalid_config(
                    &format!("plugins[{i}]"),
                    format!(
                        "{} requires {}, which no plugin of the chain provides",
                        d.plugin_type,
                        feature_name(feature)
                    ),
                ));
            }
            edges.extend(providers.into_iter().map(|j| Edge {
                earlier: j,
                later: i,
                reason: Reason::Provides(feature),
            }));
        }
        for (j, other) in chain.iter().enumerate().filter(|(j, _)| *j != i) {
            if d.after.contains(&other.plugin_type) {
                edges.push(Edge {
                    earlier: j,
                    later: i,
                    reason: Reason::After,
                });
            }
            if d.before.contains(&other.plugin_type) {
                edges.push(Edge {
                    earlier: i,
                    later: j,
                    reason: Reason::Before,
                });
            }
        }
    }
    Ok(edges)
}

/// Orders `chain`. Code 7 naming the plugins when a requirement is unmet or
/// the constraints form a cycle.
pub fn order(chain: &[Descriptor]) -> Result<Ordered, CniError> {
    let edges = edges(chain)?;
    let mut graph = DiGraph::<usize, ()>::with_capacity(chain.len(), edges.len());
    let nodes: Vec<NodeIndex> = (0..chain.len()).map(|i| graph.add_node(i)).collect();
    for e in &edges {
        graph.update_edge(nodes[e.earlier], nodes[e.later], ());
    }
    let mut waiting: Vec<usize> = nodes
        .iter()
        .map(|&n| graph.neighbors_directed(n, petgraph::Incoming).count())
        .collect();
    let mut ready: BinaryHeap<Reverse<usize>> = (0..chain.len()).filter(|&i| waiting[i] == 0).map(Reverse).collect();
    let mut order = Vec::with_capacity(chain.len());
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for next in graph.neighbors(nodes[i]) {
            let j = graph[next];
            waiting[j] -= 1;
            if waiting[j] == 0 {
                ready.push(Reverse(j));
            }
        }
    }
    if order.len() < chain.len() {
        return Err(cycle_error(chain, &graph));
    }
    Ok(Ordered { order, edges })
}

/// One line per plugin in chain order saying why it stands there: which
/// earlier plugins it must follow and for what.
pub fn explain(chain: &[Descriptor], o: &Ordered) -> Vec<String> {
    o.order
        .iter()
        .enumerate()
        .map(|(place, &i)| {
            let mut why: Vec<(usize, Vec<String>)> = Vec::new();
            for e in o.edges.iter().filter(|e| e.later == i) {
                let reason = e.reason.to_string();
                match why.iter_mut().find(|(j, _)| *j == e.earlier) {
                    Some((_, reasons)) if !reasons.contains(&reason) => reasons.push(reason),
                    Some(_) => {}
                    None => why.push((e.earlier, vec![reason])),
                }
            }
            let text = if why.is_empty() {
                "needs nothing earlier; stands in declaration order".to_string()
            } else {
                why.iter()
                    .map(|(j, reasons)| format!("after {} ({})", chain[*j].plugin_type, reasons.join(", ")))
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            format!("{}. {}: {text}", place + 1, chain[i].plugin_type)
        })
        .collect()
}

/// The first cycle of `graph`, whole, as an error.
fn cycle_error(chain: &[Descriptor], graph: &DiGraph<usize, ()>) -> CniError {
    let mut cycles: Vec<Vec<usize>> = tarjan_scc(graph)
        .into_iter()
        .filter(|scc| scc.len() > 1)
        .map(|scc| {
            let mut members: Vec<usize> = scc.iter().map(|&n| graph[n]).collect();
            members.sort_unstable();
            members
        })
        .collect();
    cycles.sort();
    let names = cycles
        .first()
        .map(|c| {
            c.iter()
                .map(|&i| format!("#{i} {}", chain[i].plugin_type))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    CniError::invalid_config(
        "plugins",
        format!("these plugins must each come before another of them (a cycle): {names}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(t: &str, provides: &[Feature], requires: &[Feature]) -> Descriptor {
        Descriptor {
            plugin_type: t.into(),
            provides: provides.to_vec(),
            requires: requires.to_vec(),
            ..Default::default()
        }
    }

    fn types(chain: &[Descriptor], o: &Ordered) -> Vec<String> {
        o.order.iter().map(|&i| chain[i].plugin_type.clone()).collect()
    }

    #[test]
    fn services_given_first_move_after_the_interface_they_need() {
        use Feature::*;
        let chain = [
            d("netsvc-qos", &[Shaping], &[Interface, HostVeth]),
            d("netsvc-firewall", &[Policy], &[Interface, Ip]),
            d("bridge", &[Interface, HostVeth, Ip, Routes], &[]),
        ];
        let o = order(&chain).unwrap();
        assert_eq!(types(&chain, &o), ["bridge", "netsvc-qos", "netsvc-firewall"]);
    }

    #[test]
    fn explain_says_what_each_plugin_follows() {
        use Feature::*;
        let chain = [
            d("netsvc-qos", &[Shaping], &[Interface, HostVeth]),
            d("bridge", &[Interface, HostVeth, Ip], &[]),
        ];
        let lines = explain(&chain, &order(&chain).unwrap());
        assert_eq!(
            lines,
            [
                "1. bridge: needs nothing earlier; stands in declaration order",
                "2. netsvc-qos: after bridge (provides interface, provides host-veth)",
            ]
        );
    }

    #[test]
    fn a_valid_order_is_kept() {
        use Feature::*;
        let chain = [
            d("bridge", &[Interface, Ip], &[]),
            d("b", &[], &[Ip]),
            d("a", &[], &[Ip]),
            d("unknown", &[], &[]),
        ];
        assert_eq!(order(&chain).unwrap().order, [0, 1, 2, 3]);
    }

    #[test]
    fn an_unmet_requirement_names_the_plugin_and_the_feature() {
        let chain = [d("netsvc-qos", &[Feature::Shaping], &[Feature::HostVeth])];
        let e = order(&chain).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("plugins[0]") && e.msg.contains("host-veth"), "{}", e.msg);
    }

    #[test]
    fn a_cycle_is_reported_whole() {
        let mut a = d("a", &[], &[]);
        let mut b = d("b", &[], &[]);
        let mut c = d("c", &[], &[]);
        a.after = vec!["c".into()];
        b.after = vec!["a".into()];
        c.after = vec!["b".into()];
        let free = d("free", &[], &[]);
        let e = order(&[free, a, b, c]).unwrap_err();
        assert!(
            e.msg.contains("#1 a, #2 b, #3 c") && !e.msg.contains("free"),
            "{}",
            e.msg
        );
    }

    /// Random DAGs: plugin `i` may declare `after` any plugin declared
    /// later in a hidden topological order; the chain is then shuffled.
    fn dag() -> impl Strategy<Value = (Vec<Descriptor>, Vec<(usize, usize)>)> {
        (2usize..12)
            .prop_flat_map(|n| {
                let pairs = proptest::collection::vec((0..n, 0..n), 0..n * 2);
                (Just(n), pairs, Just((0..n).collect::<Vec<_>>()).prop_shuffle())
            })
            .prop_map(|(n, pairs, shuffled)| {
                // Hidden order: 0..n. An edge (a, b) with a < b says a before b.
                let edges: Vec<(usize, usize)> = pairs
                    .into_iter()
                    .filter(|(a, b)| a != b)
                    .map(|(a, b)| (a.min(b), a.max(b)))
                    .collect();
                let mut chain: Vec<Descriptor> = (0..n).map(|i| d(&format!("p{i}"), &[], &[])).collect();
                for &(a, b) in &edges {
                    chain[b].after.push(format!("p{a}"));
                }
                let shuffled_chain = shuffled.iter().map(|&i| chain[i].clone()).collect();
                (shuffled_chain, edges)
            })
    }

    proptest! {
        #[test]
        fn any_dag_in_any_order_is_ordered_validly_and_stably((chain, edges) in dag()) {
            let o = order(&chain).unwrap();
            let position = |name: String| {
                o.order.iter().position(|&i| chain[i].plugin_type == name).unwrap()
            };
            for (a, b) in edges {
                let (pa, pb) = (position(format!("p{a}")), position(format!("p{b}")));
                prop_assert!(pa < pb, "p{} at {} must precede p{} at {}", a, pa, b, pb);
            }
            prop_assert_eq!(order(&chain).unwrap(), o);
        }

        #[test]
        fn a_back_edge_makes_a_cycle_naming_its_members((chain, edges) in dag()) {
            prop_assume!(!edges.is_empty());
            let (a, b) = edges[0];
            let mut chain = chain;
            let first = chain.iter().position(|d| d.plugin_type == format!("p{a}")).unwrap();
            chain[first].after.push(format!("p{b}"));
            let e = order(&chain).unwrap_err();
            let listed: Vec<&str> = e.msg.rsplit(": ").next().unwrap().split(", ")
                .filter_map(|t| t.rsplit(' ').next())
                .collect();
            prop_assert!(listed.contains(&format!("p{a}").as_str()), "{}", e.msg);
            prop_assert!(listed.contains(&format!("p{b}").as_str()), "{}", e.msg);
        }
    }
}
