//! A chain drawn as its dependency graph (`netsvc graph`): each plugin a
//! node in chain order, each edge what one plugin needs of an earlier one.

use std::fmt::Write;

use netsvc_core::cni::Descriptor;

use crate::order::{Edge, Reason, feature_name};

/// One arrow: `earlier` → `later`, with every reason between the two.
struct Arrow {
    earlier: usize,
    later: usize,
    label: String,
}

fn arrows(edges: &[Edge]) -> Vec<Arrow> {
    let mut out: Vec<Arrow> = Vec::new();
    for e in edges {
        let reason = match &e.reason {
            Reason::Provides(f) => feature_name(*f),
            Reason::After | Reason::Before => "declared order".to_string(),
        };
        match out.iter_mut().find(|a| a.earlier == e.earlier && a.later == e.later) {
            Some(a) if !a.label.split(", ").any(|r| r == reason) => {
                a.label.push_str(", ");
                a.label.push_str(&reason);
            }
            Some(_) => {}
            None => out.push(Arrow {
                earlier: e.earlier,
                later: e.later,
                label: reason,
            }),
        }
    }
    out.sort_by_key(|a| (a.later, a.earlier));
    out
}

/// Graphviz.
pub fn dot(chain: &[Descriptor], edges: &[Edge]) -> String {
    let mut s = String::from("digraph chain {\n  rankdir=LR;\n  node [shape=box];\n");
    for (i, d) in chain.iter().enumerate() {
        let _ = writeln!(s, "  p{i} [label=\"{i}: {}\"];", d.plugin_type);
    }
    for a in arrows(edges) {
        let _ = writeln!(s, "  p{} -> p{} [label=\"{}\"];", a.earlier, a.later, a.label);
    }
    s.push_str("}\n");
    s
}

/// Mermaid (renders in Markdown on most forges).
pub fn mermaid(chain: &[Descriptor], edges: &[Edge]) -> String {
    let mut s = String::from("flowchart LR\n");
    for (i, d) in chain.iter().enumerate() {
        let _ = writeln!(s, "  p{i}[\"{i}: {}\"]", d.plugin_type);
    }
    for a in arrows(edges) {
        let _ = writeln!(s, "  p{} -->|{}| p{}", a.earlier, a.label, a.later);
    }
    s
}

/// Plain text: each plugin with what it takes from which earlier one.
pub fn text(chain: &[Descriptor], edges: &[Edge]) -> String {
    let arrows = arrows(edges);
    let mut s = String::new();
    for (i, d) in chain.iter().enumerate() {
        let _ = write!(s, "{i}: {}", d.plugin_type);
        let needs: Vec<String> = arrows
            .iter()
            .filter(|a| a.later == i)
            .map(|a| format!("{} from {}: {}", a.label, a.earlier, chain[a.earlier].plugin_type))
            .collect();
        if !needs.is_empty() {
            let _ = write!(s, "  <- {}", needs.join("; "));
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order::order;
    use netsvc_core::cni::Feature::*;

    fn chain() -> Vec<Descriptor> {
        let d = |t: &str, provides: Vec<_>, requires: Vec<_>| Descriptor {
            plugin_type: t.into(),
            provides,
            requires,
            ..Default::default()
        };
        vec![
            d("bridge", vec![Interface, HostVeth, Ip], vec![]),
            d("netsvc-qos", vec![Shaping], vec![Interface, HostVeth]),
        ]
    }

    #[test]
    fn the_three_drawings() {
        let c = chain();
        let o = order(&c).unwrap();
        assert_eq!(
            dot(&c, &o.edges),
            "digraph chain {\n  rankdir=LR;\n  node [shape=box];\n  p0 [label=\"0: bridge\"];\n  \
             p1 [label=\"1: netsvc-qos\"];\n  p0 -> p1 [label=\"interface, host-veth\"];\n}\n"
        );
        assert_eq!(
            mermaid(&c, &o.edges),
            "flowchart LR\n  p0[\"0: bridge\"]\n  p1[\"1: netsvc-qos\"]\n  p0 -->|interface, host-veth| p1\n"
        );
        assert_eq!(
            text(&c, &o.edges),
            "0: bridge\n1: netsvc-qos  <- interface, host-veth from 0: bridge\n"
        );
    }
}
