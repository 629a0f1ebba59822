//! An endpoint's identity (names, labels) from what the runtime passes:
//! CNI_ARGS, the `aliases` capability and the config's `args.cni.labels`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::GraphError;
use crate::naming;

/// Names and labels of one attachment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    pub names: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// Builds the identity of an attachment to `network`:
/// - names: `NETSVC_NAME`, `K8S_POD_NAME` (CNI_ARGS), then `runtimeConfig.aliases`,
///   either a list or podman's map network -> list (only `network`'s entry counts);
/// - labels: `args.cni.labels` (Multus), then `NETSVC_LABELS=k:v,k2:v2` (CNI_ARGS wins).
pub fn identity(
    network: &str,
    args: &[(String, String)],
    runtime_config: Option<&Value>,
    args_key: Option<&Value>,
) -> Result<Identity, GraphError> {
    let mut id = Identity::default();
    let mut add_name = |field: &str, name: &str| -> Result<(), GraphError> {
        validate_name(field, name)?;
        if !id.names.iter().any(|n| n == name) {
            id.names.push(name.to_string());
        }
        Ok(())
    };
    for key in ["NETSVC_NAME", "K8S_POD_NAME"] {
        for (_, v) in args.iter().filter(|(k, _)| k == key) {
            add_name(&format!("CNI_ARGS.{key}"), v)?;
        }
    }
    match runtime_config.and_then(|rc| rc.get("aliases")) {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => add_names("runtimeConfig.aliases", list, &mut add_name)?,
        Some(Value::Object(map)) => match map.get(network) {
            None | Some(Value::Null) => {}
            Some(Value::Array(list)) => add_names(&format!("runtimeConfig.aliases.{network}"), list, &mut add_name)?,
            Some(other) => {
                return Err(GraphError::invalid(
                    format!("runtimeConfig.aliases.{network}"),
                    other.to_string(),
                    "expected a list of names",
                ));
            }
        },
        Some(other) => {
            return Err(GraphError::invalid(
                "runtimeConfig.aliases",
                other.to_string(),
                "expected a list of names or a map network -> list",
            ));
        }
    }

    match args_key.and_then(|a| a.get("cni")).and_then(|c| c.get("labels")) {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (k, v) in map {
                let field = "args.cni.labels";
                let v = v
                    .as_str()
                    .ok_or_else(|| GraphError::invalid(format!("{field}.{k}"), v.to_string(), "expected a string"))?;
                validate_label(field, k, v)?;
                id.labels.insert(k.clone(), v.to_string());
            }
        }
        Some(other) => {
            return Err(GraphError::invalid(
                "args.cni.labels",
                other.to_string(),
                "expected an object",
            ));
        }
    }
    for (_, raw) in args.iter().filter(|(k, _)| k == "NETSVC_LABELS") {
        for (k, v) in parse_labels(raw)? {
            id.labels.insert(k, v);
        }
    }
    Ok(id)
}

fn add_names(
    field: &str,
    list: &[Value],
    add: &mut impl FnMut(&str, &str) -> Result<(), GraphError>,
) -> Result<(), GraphError> {
    for (i, v) in list.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let name = v
            .as_str()
            .ok_or_else(|| GraphError::invalid(&f, v.to_string(), "expected a string"))?;
        add(&f, name)?;
    }
    Ok(())
}

/// Parses `k:v,k2:v2` (the CNI_ARGS grammar forbids `=` and `;` in values).
fn parse_labels(raw: &str) -> Result<Vec<(String, String)>, GraphError> {
    let field = "CNI_ARGS.NETSVC_LABELS";
    let mut out = Vec::new();
    for pair in raw.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once(':')
            .ok_or_else(|| GraphError::invalid(field, pair, "expected key:value"))?;
        validate_label(field, k, v)?;
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// A DNS-ish name (see [`naming::validate_name`]).
pub fn validate_name(field: &str, name: &str) -> Result<(), GraphError> {
    naming::validate_name(field, name).map_err(GraphError::from)
}

/// A label, Kubernetes-style: key `[prefix/]name` (name ≤63 of [A-Za-z0-9_.-],
/// alphanumeric at both ends; prefix a DNS name), value empty or like a name.
pub fn validate_label(field: &str, key: &str, value: &str) -> Result<(), GraphError> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let key_ok = naming::is_word(name, 63) && prefix.is_none_or(|p| validate_name(field, p).is_ok());
    if !key_ok {
        return Err(GraphError::invalid(
            format!("{field} key"),
            key,
            "a label key is [prefix/]name, name ≤63 of [A-Za-z0-9_.-], alphanumeric at both ends",
        ));
    }
    if !(value.is_empty() || naming::is_word(value, 63)) {
        return Err(GraphError::invalid(
            format!("{field}.{key}"),
            value,
            "a label value is empty or ≤63 of [A-Za-z0-9_.-], alphanumeric at both ends",
        ));
    }
    Ok(())
}
