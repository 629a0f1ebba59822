//! Network configuration: the per-plugin object a runtime sends on stdin, and
//! the conflist it comes from. Unknown top-level keys are kept (runtimes add
//! their own); a service reads its own keys strictly through [`NetConf::service_config`].

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::{CniError, Result};
use super::result::{CniResult, Dns};

/// One attachment named in `cni.dev/valid-attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The configuration one plugin receives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub capabilities: BTreeMap<String, bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_config: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_masq: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_result: Option<Value>,
    #[serde(
        rename = "cni.dev/valid-attachments",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub valid_attachments: Option<Vec<Attachment>>,
    /// The older spelling of `cni.dev/valid-attachments`; libcni sends both.
    #[serde(rename = "cni.dev/attachments", default, skip_serializing_if = "Option::is_none")]
    pub attachments: Option<Vec<Attachment>>,
    /// Every other key, in order: runtime additions and the service's own settings.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The top-level keys [`NetConf`] decodes itself; all others go to `extra`.
const KNOWN_KEYS: [&str; 12] = [
    "cniVersion",
    "name",
    "type",
    "capabilities",
    "runtimeConfig",
    "args",
    "ipMasq",
    "ipam",
    "dns",
    "prevResult",
    "cni.dev/valid-attachments",
    "cni.dev/attachments",
];

impl NetConf {
    /// Parses stdin. Malformed JSON is code 6; a wrong type of a known key is code 7.
    pub fn parse(bytes: &[u8]) -> Result<NetConf> {
        let raw: Value = serde_json::from_slice(bytes)
            .map_err(|e| CniError::decode(format!("failed to decode network config: {e}")))?;
        NetConf::from_owned(raw)
    }

    pub fn from_value(raw: &Value) -> Result<NetConf> {
        NetConf::from_owned(raw.clone())
    }

    /// As [`NetConf::from_value`], taking the value: the keys the spec knows
    /// are decoded, every other key moves into `extra` as it is (no copy and
    /// no buffering of a service's possibly large settings).
    pub fn from_owned(raw: Value) -> Result<NetConf> {
        let Value::Object(mut all) = raw else {
            return Err(CniError::decode("network config must be a JSON object"));
        };
        let known: Map<String, Value> = KNOWN_KEYS
            .iter()
            .filter_map(|k| all.shift_remove(*k).map(|v| (k.to_string(), v)))
            .collect();
        let mut conf: NetConf = decode_at(&Value::Object(known), "")?;
        conf.extra = all;
        Ok(conf)
    }

    /// The previous result, read in this config's version.
    pub fn prev_result(&self) -> Result<Option<CniResult>> {
        self.prev_result
            .as_ref()
            .map(|v| CniResult::from_value(v, &self.cni_version))
            .transpose()
    }

    /// The attachments GC must keep: `cni.dev/valid-attachments`, else the older key.
    pub fn gc_keep(&self) -> Vec<Attachment> {
        self.valid_attachments
            .clone()
            .or_else(|| self.attachments.clone())
            .unwrap_or_default()
    }

    /// A `runtimeConfig` entry, present only when the capability was enabled.
    pub fn runtime(&self, capability: &str) -> Option<&Value> {
        self.runtime_config.as_ref().and_then(|m| m.get(capability))
    }

    /// The whole config as JSON.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Decodes a service's own typed settings from this config. The service's
    /// type names its own top-level keys and should let the rest pass through;
    /// its nested objects deny unknown keys. Errors are code 7 naming the JSON path.
    pub fn service_config<T: DeserializeOwned>(&self) -> Result<T> {
        decode_at(&self.service_value(), "")
    }

    /// The keys the spec does not know (a service's own, and runtime
    /// additions) as one object: what a service decodes its settings from.
    pub fn service_value(&self) -> Value {
        Value::Object(self.extra.clone())
    }
}

/// Deserializes `v`, reporting failures as code 7 with the JSON path of the
/// offending field (e.g. `policies[0].select: unknown field "nmes"`).
pub fn decode_at<T: DeserializeOwned>(v: &Value, base: &str) -> Result<T> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let field = match (base.is_empty(), path.as_str()) {
            (_, ".") if base.is_empty() => "(top level)".to_string(),
            (true, p) => p.to_string(),
            (false, ".") => base.to_string(),
            (false, p) => format!("{base}.{p}"),
        };
        CniError::invalid_config(&field, e.into_inner())
    })
}

/// Names the list item an error points into: for `policies[2].select: …`
/// appends ` (policy "web")` from the item's `name`, so a user finds it by name.
pub fn name_item(raw: &Value, e: CniError, list: &str, kind: &str) -> CniError {
    let Some(rest) = e.msg.split(&format!("{list}[")).nth(1) else {
        return e;
    };
    let Some(i) = rest.split(']').next().and_then(|i| i.parse::<usize>().ok()) else {
        return e;
    };
    match raw[list][i]["name"].as_str() {
        Some(name) => CniError {
            msg: format!("{} ({kind} {name:?})", e.msg),
            ..e
        },
        None => e,
    }
}

/// A conflist: the chain a runtime runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConfList {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni_versions: Option<Vec<String>>,
    pub name: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disable_check: bool,
    #[serde(default, rename = "disableGC", skip_serializing_if = "std::ops::Not::not")]
    pub disable_gc: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub load_only_inlined_plugins: bool,
    pub plugins: Vec<Map<String, Value>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl NetConfList {
    /// Parses and validates a conflist by libcni's rules: a name, a non-empty
    /// plugin list, a `type` on every plugin. Errors name the JSON path.
    pub fn parse(bytes: &[u8]) -> Result<NetConfList> {
        let raw: Value =
            serde_json::from_slice(bytes).map_err(|e| CniError::decode(format!("failed to decode conflist: {e}")))?;
        let list: NetConfList = decode_at(&raw, "")?;
        list.validate()?;
        Ok(list)
    }

    pub fn validate(&self) -> Result<()> {
        if self.name.is_empty() {
            return Err(CniError::invalid_config("name", "a conflist needs a non-empty name"));
        }
        if self.plugins.is_empty() {
            return Err(CniError::invalid_config(
                "plugins",
                "a conflist needs at least one plugin",
            ));
        }
        for (i, p) in self.plugins.iter().enumerate() {
            match p.get("type") {
                Some(Value::String(t)) if !t.is_empty() && !t.contains('/') => {}
                other => {
                    return Err(CniError::invalid_config(
                        &format!("plugins[{i}].type"),
                        format!(
                            "needs a plugin binary name, got {}",
                            other.map_or("nothing".into(), |v| v.to_string())
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The `type` of plugin `i`.
    pub fn plugin_type(&self, i: usize) -> &str {
        self.plugins[i].get("type").and_then(Value::as_str).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_top_level_keys_are_kept_in_order() {
        let c = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"t","zeta":1,"alpha":{"x":2}}"#).unwrap();
        let keys: Vec<_> = c.extra.keys().cloned().collect();
        assert_eq!(keys, ["zeta", "alpha"]);
        assert_eq!(c.to_value()["alpha"]["x"], 2);
    }

    #[test]
    fn bad_json_is_code_6_and_bad_type_is_code_7() {
        assert_eq!(NetConf::parse(b"{not json").unwrap_err().code, 6);
        let e = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"t","ipMasq":"yes"}"#).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("ipMasq"), "{}", e.msg);
    }

    #[test]
    fn gc_prefers_valid_attachments_and_falls_back() {
        let c = NetConf::from_value(&json!({"cniVersion":"1.1.0","name":"n","type":"t",
            "cni.dev/attachments":[{"containerID":"a","ifname":"eth0"}]}))
        .unwrap();
        assert_eq!(c.gc_keep()[0].container_id, "a");
    }

    #[test]
    fn service_config_names_unknown_nested_key() {
        #[derive(Deserialize, Debug)]
        struct Svc {
            #[allow(dead_code)]
            policy: Inner,
        }
        #[derive(Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        struct Inner {
            #[allow(dead_code)]
            #[serde(default)]
            names: Vec<String>,
        }
        let c = NetConf::from_value(&json!({"cniVersion":"1.1.0","name":"n","type":"t","policy":{"nmes":[]}})).unwrap();
        let e = c.service_config::<Svc>().unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("policy") && e.msg.contains("nmes"), "{}", e.msg);
    }

    #[test]
    fn conflist_rules() {
        assert_eq!(
            NetConfList::parse(br#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#)
                .unwrap_err()
                .code,
            7
        );
        let e = NetConfList::parse(br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"x":1}]}"#).unwrap_err();
        assert!(e.msg.contains("plugins[0].type"), "{}", e.msg);
    }
}
