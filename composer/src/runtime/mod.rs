//! A CNI runtime that behaves like libcni: runs a conflist's plugins in order
//! with `prevResult` chaining, DEL in reverse, CHECK and DEL from a 0600
//! result cache, GC with the valid attachments, and version negotiation.
//! `netsvc exec` and the integration tests share this code.

mod cache;
mod invoke;

use std::path::PathBuf;

pub use cache::{CACHE_KIND, CachedAttachment, ResultCache};
pub use invoke::{CallEnv, Invoker};
use netsvc_core::cni::{
    Attachment, CniArgs, CniError, CniResult, Command, NetConfList, SUPPORTED_VERSIONS, Version,
    version::highest_common,
};
use serde_json::{Map, Value, json};

/// A plugin of the chain failed: which one, and its CNI error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("plugin #{index} ({plugin_type}): {error} (code {})", error.code)]
pub struct ChainError {
    pub index: usize,
    pub plugin_type: String,
    pub error: CniError,
}

/// Errors of the runtime itself (before or after any plugin ran) or of a plugin.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Runtime(#[from] CniError),
    #[error(transparent)]
    Plugin(#[from] ChainError),
}

impl RuntimeError {
    /// The CNI error, as a runtime would report it to its user.
    pub fn cni(&self) -> &CniError {
        match self {
            RuntimeError::Runtime(e) => e,
            RuntimeError::Plugin(e) => &e.error,
        }
    }
}

/// One attachment a runtime call acts on.
#[derive(Debug, Clone, Default)]
pub struct RuntimeConf {
    pub container_id: String,
    pub netns: Option<PathBuf>,
    pub ifname: String,
    /// `CNI_ARGS` pairs.
    pub args: Vec<(String, String)>,
    /// Capability arguments, injected as `runtimeConfig` into plugins that enable them.
    pub cap_args: Map<String, Value>,
}

impl RuntimeConf {
    fn args_string(&self) -> String {
        CniArgs(self.args.clone()).to_env_string()
    }
}

/// The runtime: where plugins live, where results are cached.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub invoker: Invoker,
    pub cache: ResultCache,
}

impl Runtime {
    pub fn new(invoker: Invoker, cache_dir: impl Into<PathBuf>) -> Self {
        Runtime {
            invoker,
            cache: ResultCache::new(cache_dir),
        }
    }

    /// The version the chain runs at: `cniVersions`' highest that every plugin
    /// supports (asking each), else `cniVersion`.
    pub fn negotiate(&self, list: &NetConfList) -> Result<String, RuntimeError> {
        let Some(candidates) = list.cni_versions.as_ref().filter(|v| !v.is_empty()) else {
            return Ok(list.cni_version.clone());
        };
        let mut each = Vec::new();
        for i in 0..list.plugins.len() {
            each.push(self.version_of(list.plugin_type(i)).map_err(|error| ChainError {
                index: i,
                plugin_type: list.plugin_type(i).to_string(),
                error,
            })?);
        }
        each.push(SUPPORTED_VERSIONS.iter().map(|s| s.to_string()).collect());
        highest_common(candidates.iter().map(String::as_str), &each)
            .map(str::to_string)
            .ok_or_else(|| {
                CniError::incompatible_version(format!(
                    "no version of cniVersions {candidates:?} is supported by every plugin of {}",
                    list.name
                ))
                .into()
            })
    }

    /// The versions a plugin reports for VERSION.
    pub fn version_of(&self, plugin_type: &str) -> Result<Vec<String>, CniError> {
        let env = CallEnv {
            command: Command::Version,
            container_id: "",
            netns: None,
            ifname: "",
            args: "",
        };
        let out = self.invoker.exec(plugin_type, &env, br#"{"cniVersion":"0.4.0"}"#)?;
        let v: Value = serde_json::from_slice(&out)
            .map_err(|e| CniError::decode(format!("failed to decode VERSION output of {plugin_type}: {e}")))?;
        Ok(v.get("supportedVersions")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
            .unwrap_or_default())
    }

    /// ADD: every plugin in order, each given the previous result. The final
    /// result (in the chain's version) is cached and returned.
    pub fn add(&self, list: &NetConfList, rt: &RuntimeConf) -> Result<Value, RuntimeError> {
        let version = self.negotiate(list)?;
        let mut prev: Option<Value> = None;
        for i in 0..list.plugins.len() {
            let conf = plugin_conf(list, i, &version, rt, prev.as_ref());
            let out = self.call(list, i, Command::Add, rt, &conf)?;
            let result = parse_result(&out, &version).map_err(|error| ChainError {
                index: i,
                plugin_type: list.plugin_type(i).to_string(),
                error,
            })?;
            prev = Some(result);
        }
        let result = prev.unwrap_or_else(|| json!({"cniVersion": version}));
        self.cache.put(&CachedAttachment {
            kind: CACHE_KIND.into(),
            network_name: list.name.clone(),
            container_id: rt.container_id.clone(),
            if_name: rt.ifname.clone(),
            netns: rt.netns.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            cni_args: rt.args.clone(),
            capability_args: rt.cap_args.clone(),
            result: result.clone(),
        })?;
        Ok(result)
    }

    /// DEL: every plugin in reverse order with the cached result (from 0.4.0),
    /// then the cache entry goes.
    pub fn del(&self, list: &NetConfList, rt: &RuntimeConf) -> Result<(), RuntimeError> {
        let version = self.negotiate(list)?;
        let cached = self.cached_result(list, rt, &version)?;
        let prev = cached.filter(|_| Version::parse(&version).is_ok_and(|v| v >= Version::V0_4_0));
        for i in (0..list.plugins.len()).rev() {
            let conf = plugin_conf(list, i, &version, rt, prev.as_ref());
            self.call(list, i, Command::Del, rt, &conf)?;
        }
        self.cache.delete(&list.name, &rt.container_id, &rt.ifname)?;
        Ok(())
    }

    /// CHECK: every plugin in order with the cached result. Needs 0.4.0 or later.
    pub fn check(&self, list: &NetConfList, rt: &RuntimeConf) -> Result<(), RuntimeError> {
        let version = self.negotiate(list)?;
        if Version::parse(&version)? < Version::V0_4_0 {
            return Err(CniError::incompatible_version(format!(
                "configuration version {version} does not support CHECK"
            ))
            .into());
        }
        if list.disable_check {
            return Ok(());
        }
        let prev = self.cached_result(list, rt, &version)?.ok_or_else(|| {
            CniError::unknown_container(format!(
                "no cached result for {} {} {}: was it added?",
                list.name, rt.container_id, rt.ifname
            ))
        })?;
        for i in 0..list.plugins.len() {
            let conf = plugin_conf(list, i, &version, rt, Some(&prev));
            self.call(list, i, Command::Check, rt, &conf)?;
        }
        Ok(())
    }

    /// GC: every plugin runs (even after another failed) with the valid
    /// attachments; cached results of other attachments of this network go.
    /// Before 1.1.0, or with `disableGC`, it does nothing, as libcni.
    pub fn gc(&self, list: &NetConfList, valid: &[Attachment]) -> Result<(), RuntimeError> {
        let version = self.negotiate(list)?;
        if Version::parse(&version)? < Version::V1_1_0 || list.disable_gc {
            return Ok(());
        }
        for stale in self.cache.list(&list.name)? {
            if !valid
                .iter()
                .any(|a| a.container_id == stale.container_id && a.ifname == stale.if_name)
            {
                self.cache.delete(&list.name, &stale.container_id, &stale.if_name)?;
            }
        }
        let rt = RuntimeConf::default();
        let mut first_error = None;
        for i in 0..list.plugins.len() {
            let mut conf = plugin_conf(list, i, &version, &rt, None);
            let valid = serde_json::to_value(valid).unwrap_or_default();
            conf.insert("cni.dev/valid-attachments".into(), valid.clone());
            conf.insert("cni.dev/attachments".into(), valid);
            if let Err(e) = self.call(list, i, Command::Gc, &rt, &conf) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), |e| Err(e.into()))
    }

    /// STATUS: every plugin in order; the first that cannot serve answers.
    pub fn status(&self, list: &NetConfList) -> Result<(), RuntimeError> {
        let version = self.negotiate(list)?;
        if Version::parse(&version)? < Version::V1_1_0 {
            return Ok(());
        }
        let rt = RuntimeConf::default();
        for i in 0..list.plugins.len() {
            let conf = plugin_conf(list, i, &version, &rt, None);
            self.call(list, i, Command::Status, &rt, &conf)?;
        }
        Ok(())
    }

    /// The attachments the cache knows for `network`.
    pub fn cached(&self, network: &str) -> Result<Vec<CachedAttachment>, CniError> {
        self.cache.list(network)
    }

    fn cached_result(&self, list: &NetConfList, rt: &RuntimeConf, version: &str) -> Result<Option<Value>, CniError> {
        let Some(entry) = self.cache.get(&list.name, &rt.container_id, &rt.ifname)? else {
            return Ok(None);
        };
        let from = entry
            .result
            .get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or(version)
            .to_string();
        CniResult::convert(&entry.result, &from, version).map(Some)
    }

    fn call(
        &self,
        list: &NetConfList,
        i: usize,
        command: Command,
        rt: &RuntimeConf,
        conf: &Map<String, Value>,
    ) -> Result<Vec<u8>, ChainError> {
        let args = rt.args_string();
        let env = CallEnv {
            command,
            container_id: &rt.container_id,
            netns: rt.netns.as_deref(),
            ifname: &rt.ifname,
            args: &args,
        };
        let stdin = serde_json::to_vec(conf).unwrap_or_default();
        self.invoker
            .exec(list.plugin_type(i), &env, &stdin)
            .map_err(|error| ChainError {
                index: i,
                plugin_type: list.plugin_type(i).to_string(),
                error,
            })
    }
}

/// The config plugin `i` receives: its object plus the list's `cniVersion`
/// and `name`, `runtimeConfig` for the capabilities it enabled, and `prevResult`.
pub fn plugin_conf(
    list: &NetConfList,
    i: usize,
    version: &str,
    rt: &RuntimeConf,
    prev: Option<&Value>,
) -> Map<String, Value> {
    let mut conf = list.plugins[i].clone();
    conf.insert("cniVersion".into(), Value::String(version.to_string()));
    conf.insert("name".into(), Value::String(list.name.clone()));
    let enabled: Map<String, Value> = conf
        .get("capabilities")
        .and_then(Value::as_object)
        .map(|caps| {
            caps.iter()
                .filter(|(_, on)| on.as_bool() == Some(true))
                .filter_map(|(name, _)| rt.cap_args.get(name).map(|v| (name.clone(), v.clone())))
                .collect()
        })
        .unwrap_or_default();
    if !enabled.is_empty() {
        let runtime = conf.entry("runtimeConfig").or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = runtime {
            m.extend(enabled);
        }
    }
    match prev {
        Some(p) => conf.insert("prevResult".into(), p.clone()),
        None => conf.remove("prevResult"),
    };
    conf
}

/// A plugin's ADD output, converted to the chain's version.
fn parse_result(out: &[u8], version: &str) -> Result<Value, CniError> {
    let v: Value =
        serde_json::from_slice(out).map_err(|e| CniError::decode(format!("failed to decode plugin result: {e}")))?;
    let from = v
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or(version)
        .to_string();
    CniResult::convert(&v, &from, version)
}
