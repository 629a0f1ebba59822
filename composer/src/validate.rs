//! `netsvc validate`: everything that can be known wrong about a conflist
//! before a container starts. libcni's rules, each netsvc service's own
//! config type, chain order, conflicts and capabilities. Every diagnostic
//! names the plugin, the JSON path, what is wrong and how to fix it.

use std::collections::BTreeSet;

use netsvc_core::cni::{Descriptor, Feature, SUPPORTED_VERSIONS};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::catalog::Catalog;
use crate::order::{Reason, edges, feature_name};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// A stable name for the kind of mistake (`service-config`, `order`, …).
    pub check: &'static str,
    /// The plugin's index in the chain, when one plugin is at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<usize>,
    /// The JSON path of the offending value.
    pub path: String,
    pub problem: String,
    pub fix: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{severity}[{}] {}: {}\n  fix: {}",
            self.check, self.path, self.problem, self.fix
        )
    }
}

fn diag(
    severity: Severity,
    check: &'static str,
    plugin: Option<usize>,
    path: String,
    problem: String,
    fix: &str,
) -> Diagnostic {
    Diagnostic {
        severity,
        check,
        plugin,
        path,
        problem,
        fix: fix.to_string(),
    }
}

/// Whether any diagnostic is an error.
pub fn has_errors(found: &[Diagnostic]) -> bool {
    found.iter().any(|d| d.severity == Severity::Error)
}

/// Validates the conflist `raw` (parsed JSON).
pub fn validate(raw: &Value, catalog: &Catalog) -> Vec<Diagnostic> {
    use Severity::*;
    let mut out = Vec::new();
    let Some(top) = raw.as_object() else {
        out.push(diag(
            Error,
            "not-an-object",
            None,
            "(top level)".into(),
            "a conflist is a JSON object".into(),
            "write {\"cniVersion\": …, \"name\": …, \"plugins\": [ … ]}",
        ));
        return out;
    };
    let version = top.get("cniVersion").and_then(Value::as_str);
    match version {
        None => out.push(diag(
            Error,
            "missing-version",
            None,
            "cniVersion".into(),
            "is missing".into(),
            "add \"cniVersion\": \"1.0.0\" (or the version your runtime speaks)",
        )),
        Some(v) if !SUPPORTED_VERSIONS.contains(&v) => out.push(diag(
            Error,
            "bad-version",
            None,
            "cniVersion".into(),
            format!("{v:?} is not a CNI spec version"),
            &format!("use one of {}", SUPPORTED_VERSIONS.join(", ")),
        )),
        Some(_) => {}
    }
    match top.get("name").and_then(Value::as_str) {
        None | Some("") => out.push(diag(
            Error,
            "missing-name",
            None,
            "name".into(),
            "the network has no name".into(),
            "add \"name\": a name runtimes and the store know the network by",
        )),
        Some(n)
            if !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) =>
        {
            out.push(diag(
                Error,
                "bad-name",
                None,
                "name".into(),
                format!("{n:?} holds characters libcni refuses"),
                "use letters, digits, '-', '_' and '.' only",
            ))
        }
        Some(_) => {}
    }
    let plugins: Vec<&Map<String, Value>> = match top.get("plugins").and_then(Value::as_array) {
        None => {
            out.push(diag(
                Error,
                "no-plugins",
                None,
                "plugins".into(),
                "is missing or not a list".into(),
                "add \"plugins\": [ … ] with an interface plugin first",
            ));
            return out;
        }
        Some(list) if list.is_empty() => {
            out.push(diag(
                Error,
                "no-plugins",
                None,
                "plugins".into(),
                "is empty".into(),
                "add an interface plugin (bridge, ptp, …) and the services after it",
            ));
            return out;
        }
        Some(list) => list.iter().filter_map(Value::as_object).collect(),
    };
    let types: Vec<&str> = plugins
        .iter()
        .map(|p| p.get("type").and_then(Value::as_str).unwrap_or(""))
        .collect();
    for (i, p) in plugins.iter().enumerate() {
        check_plugin(i, p, types[i], version, catalog, &mut out);
    }
    if types.iter().any(|t| t.is_empty()) {
        return out;
    }
    let chain: Vec<Descriptor> = types.iter().map(|t| catalog.get(t)).collect();
    check_chain(&chain, &plugins, &mut out);
    out.sort_by_key(|d| (d.severity, d.plugin));
    out
}

/// What one plugin's own object may get wrong.
fn check_plugin(
    i: usize,
    p: &Map<String, Value>,
    t: &str,
    version: Option<&str>,
    catalog: &Catalog,
    out: &mut Vec<Diagnostic>,
) {
    use Severity::*;
    let at = |key: &str| format!("plugins[{i}].{key}");
    if t.is_empty() || t.contains('/') {
        out.push(diag(
            Error,
            "missing-type",
            Some(i),
            at("type"),
            "names no plugin binary".into(),
            "set \"type\" to the plugin's binary name (as found on CNI_PATH)",
        ));
        return;
    }
    if let (Some(own), Some(list)) = (p.get("cniVersion").and_then(Value::as_str), version)
        && own != list
    {
        out.push(diag(
            Warning,
            "version-mismatch",
            Some(i),
            at("cniVersion"),
            format!("{own:?} differs from the conflist's {list:?}, which runtimes use instead"),
            "remove it: plugins take the conflist's version",
        ));
    }
    if let Err(e) = crate::services::check_service(p) {
        let detail = e.msg.strip_prefix("invalid config field ").unwrap_or(&e.msg);
        let (field, why) = detail.split_once(": ").unwrap_or(("", detail));
        let path = if field.is_empty() || field == "(top level)" {
            format!("plugins[{i}]")
        } else {
            at(field)
        };
        out.push(diag(
            Error,
            "service-config",
            Some(i),
            path,
            why.to_string(),
            &format!(
                "see the fields of {t} in services/{}/README.md; unknown keys inside its objects are typos",
                t.trim_start_matches("netsvc-")
            ),
        ));
    }
    if !catalog.knows(t) {
        out.push(diag(
            Warning,
            "unknown-plugin",
            Some(i),
            at("type"),
            format!("{t:?} is in no catalog: its place in the chain is not checked"),
            "add a descriptor for it to /etc/netsvc/catalog (or --catalog DIR)",
        ));
    }
    if let Some(caps) = p.get("capabilities") {
        let understood = catalog.get(t).capabilities;
        match caps.as_object() {
            None => out.push(diag(
                Error,
                "bad-capabilities",
                Some(i),
                at("capabilities"),
                "must be an object of capability: true".into(),
                "write {\"portMappings\": true}",
            )),
            Some(caps) => {
                for (name, on) in caps {
                    if !on.is_boolean() {
                        out.push(diag(
                            Error,
                            "bad-capabilities",
                            Some(i),
                            at(&format!("capabilities.{name}")),
                            format!("{on} is not true or false"),
                            "write true to ask the runtime for it",
                        ));
                    } else if catalog.knows(t)
                        && !understood.contains(name)
                        && catalog.get(t).plugin_type.starts_with("netsvc-")
                    {
                        out.push(diag(
                            Warning,
                            "unused-capability",
                            Some(i),
                            at(&format!("capabilities.{name}")),
                            format!("{t} does not use the {name:?} capability"),
                            &format!(
                                "remove it (it understands: {})",
                                if understood.is_empty() {
                                    "none".into()
                                } else {
                                    understood.join(", ")
                                }
                            ),
                        ));
                    }
                }
            }
        }
    }
    if p.contains_key("runtimeConfig") {
        out.push(diag(
            Warning,
            "static-runtime-config",
            Some(i),
            at("runtimeConfig"),
            "is filled in by the runtime from capabilities, per container".into(),
            "declare \"capabilities\" instead and let the runtime pass the values",
        ));
    }
}

/// What the chain as a whole may get wrong: order, conflicts, interfaces.
fn check_chain(chain: &[Descriptor], plugins: &[&Map<String, Value>], out: &mut Vec<Diagnostic>) {
    use Severity::*;
    let types: Vec<&str> = chain.iter().map(|d| d.plugin_type.as_str()).collect();
    // Interface plugins without IPAM provide no addresses.
    let provides = |j: usize, f: Feature| {
        chain[j].provides.contains(&f)
            && !(f == Feature::Ip && is_interface(&chain[j]) && !plugins[j].contains_key("ipam"))
    };
    for (i, d) in chain.iter().enumerate() {
        for &f in &d.requires {
            if provides(i, f) || (0..i).any(|j| provides(j, f)) {
                continue;
            }
            let later: Vec<usize> = (i + 1..chain.len()).filter(|&j| provides(j, f)).collect();
            let feature = feature_name(f);
            if let Some(&j) = later.first() {
                out.push(diag(
                    Error,
                    "order",
                    Some(i),
                    format!("plugins[{i}]"),
                    format!(
                        "{} requires {feature}, which only {} (plugins[{j}]) provides, later in the chain",
                        types[i], types[j]
                    ),
                    &format!("move {} before {}", types[j], types[i]),
                ));
            } else if f == Feature::Ip && (0..i).any(|j| is_interface(&chain[j])) {
                out.push(diag(
                    Error,
                    "no-ipam",
                    Some(i),
                    format!("plugins[{i}]"),
                    format!(
                        "{} requires addresses, but the interface plugin has no \"ipam\"",
                        types[i]
                    ),
                    "give the interface plugin an ipam section (host-local, static or dhcp)",
                ));
            } else if f == Feature::HostVeth && (0..i).any(|j| is_interface(&chain[j])) {
                out.push(diag(Error, "no-host-veth", Some(i), format!("plugins[{i}]"),
                    format!("{} works on the node side of a veth pair, which no earlier plugin leaves", types[i]),
                    "use bridge or ptp as the interface plugin (macvlan, ipvlan, host-device leave no veth on the node)"));
            } else {
                out.push(diag(
                    Error,
                    "unmet-requirement",
                    Some(i),
                    format!("plugins[{i}]"),
                    format!("{} requires {feature}, which no plugin of the chain provides", types[i]),
                    "put a plugin that provides it (an interface plugin, usually) first",
                ));
            }
        }
    }
    for (i, d) in chain.iter().enumerate() {
        let interface = (0..i).find(|&j| is_interface(&chain[j]));
        for &f in &d.prefers {
            let Some(j) = interface.filter(|_| !(0..i).any(|j| provides(j, f))) else {
                continue;
            };
            out.push(diag(
                Warning,
                "no-node-path",
                Some(i),
                format!("plugins[{i}]"),
                format!(
                    "{} serves traffic that passes through the node, but {} (plugins[{j}]) leaves no {}: \
                     containers reach each other and the outside by the parent link, not through the node",
                    types[i],
                    types[j],
                    match f {
                        Feature::HostVeth => "veth peer on the node".to_string(),
                        other => feature_name(other),
                    }
                ),
                "use bridge or ptp as the interface plugin; otherwise only traffic routed through the node is covered",
            ));
        }
    }
    if let Ok(all) = edges(chain) {
        let declared = all
            .iter()
            .filter(|e| matches!(e.reason, Reason::After | Reason::Before));
        for e in declared.filter(|e| e.earlier > e.later) {
            out.push(diag(
                Error,
                "order",
                Some(e.later),
                format!("plugins[{}]", e.later),
                format!("{} must come after {}", types[e.later], types[e.earlier]),
                &format!("move {} before {}", types[e.earlier], types[e.later]),
            ));
        }
    }
    let mut seen = BTreeSet::new();
    for (i, d) in chain.iter().enumerate() {
        for (j, other) in chain.iter().enumerate().skip(i + 1) {
            if d.conflicts.contains(&other.plugin_type) || other.conflicts.contains(&d.plugin_type) {
                out.push(diag(
                    Error,
                    "conflict",
                    Some(j),
                    format!("plugins[{j}]"),
                    format!(
                        "{} and {} (plugins[{i}]) both do the same job on one interface",
                        other.plugin_type, d.plugin_type
                    ),
                    "keep one of them (netsvc-qos takes the reference bandwidth plugin's keys and capability)",
                ));
            }
        }
        if d.plugin_type.starts_with("netsvc-") && !seen.insert(d.plugin_type.as_str()) {
            out.push(diag(
                Error,
                "duplicate-service",
                Some(i),
                format!("plugins[{i}]"),
                format!("{} is in the chain twice", d.plugin_type),
                "merge the two configs into one (a service renders its whole config per attachment)",
            ));
        }
    }
    let interfaces: Vec<usize> = (0..chain.len()).filter(|&j| is_interface(&chain[j])).collect();
    if let [first, second, ..] = interfaces[..] {
        out.push(diag(Error, "two-interfaces", Some(second), format!("plugins[{second}]"),
            format!("{} and {} (plugins[{first}]) both make the container's interface CNI_IFNAME", types[second], types[first]),
            "one interface plugin per conflist; put a second network in its own conflist (Multus, podman network connect)"));
    }
    if let Some(&first) = interfaces.first()
        && first > 0
    {
        out.push(diag(
            Warning,
            "interface-not-first",
            Some(first),
            format!("plugins[{first}]"),
            format!("{} makes the interface but stands at position {first}", types[first]),
            "put the interface plugin first: the plugins before it see no interface",
        ));
    }
}

/// An interface plugin proper (not a tunnel that can also stand alone).
fn is_interface(d: &Descriptor) -> bool {
    d.provides.contains(&Feature::Interface) && !d.provides.contains(&Feature::Tunnel)
}
