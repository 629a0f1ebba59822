//! A small plugin on the core main loop, used by the protocol conformance
//! tests and the exec benchmark. It records each attachment as a file under
//! `$NETSVC_STATE_DIR/testplugin/` so DEL, CHECK and GC have real state to act on.
//!
//! Config: `{"type": "netsvc-testplugin", "test": {"mark": "x", "panic": false}}`;
//! `test` denies unknown keys. STATUS answers 50 while `testplugin/unavailable` exists.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use netsvc_core::cni::{Call, CniError, CniResult, Descriptor, Feature, Interface, Plugin, Result};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Conf {
    #[serde(default)]
    test: TestSettings,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TestSettings {
    /// Added to the result's DNS search list, to show the plugin's own mark.
    #[serde(default)]
    mark: Option<String>,
    /// Panic inside ADD, to prove a panic becomes a CNI error.
    #[serde(default)]
    panic: bool,
}

struct TestPlugin;

fn state_dir() -> PathBuf {
    let base = std::env::var_os("NETSVC_STATE_DIR").map_or_else(|| PathBuf::from("/run/netsvc"), PathBuf::from);
    base.join("testplugin")
}

fn record(call: &Call) -> PathBuf {
    state_dir().join(format!(
        "{}-{}-{}",
        call.conf.name, call.env.container_id, call.env.ifname
    ))
}

impl Plugin for TestPlugin {
    fn descriptor(&self) -> Descriptor {
        Descriptor {
            plugin_type: "netsvc-testplugin".into(),
            provides: vec![Feature::Dns],
            ..Default::default()
        }
    }

    fn add(&self, call: &Call) -> Result<CniResult> {
        let conf: Conf = call.conf.service_config()?;
        if conf.test.panic {
            panic!("asked to panic");
        }
        let netns = call
            .env
            .netns
            .as_ref()
            .ok_or_else(|| CniError::invalid_env("CNI_NETNS", "not set"))?;
        if !netns.exists() {
            return Err(CniError::unknown_container(format!(
                "netns {} does not exist",
                netns.display()
            )));
        }
        std::fs::create_dir_all(state_dir())?;
        std::fs::write(record(call), netns.display().to_string())?;
        let mut result = call.prev_result()?.unwrap_or_else(|| CniResult {
            interfaces: vec![Interface {
                name: call.env.ifname.clone(),
                sandbox: Some(netns.display().to_string()),
                ..Default::default()
            }],
            ..Default::default()
        });
        if let Some(mark) = conf.test.mark {
            result.dns.search.push(mark);
        }
        Ok(result)
    }

    /// DEL works from recorded state, not config: it succeeds even when the
    /// config that failed ADD is still wrong, so the chain's cleanup goes on.
    fn del(&self, call: &Call) -> Result<()> {
        match std::fs::remove_file(record(call)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    fn check(&self, call: &Call) -> Result<()> {
        if !record(call).exists() {
            return Err(CniError::unknown_container(format!(
                "attachment {}/{} is not known",
                call.env.container_id, call.env.ifname
            )));
        }
        Ok(())
    }

    fn gc(&self, call: &Call) -> Result<()> {
        let keep: Vec<String> = call
            .conf
            .gc_keep()
            .iter()
            .map(|a| format!("{}-{}-{}", call.conf.name, a.container_id, a.ifname))
            .collect();
        let prefix = format!("{}-", call.conf.name);
        let Ok(entries) = std::fs::read_dir(state_dir()) else {
            return Ok(());
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) && !keep.contains(&name) {
                std::fs::remove_file(e.path())?;
            }
        }
        Ok(())
    }

    fn status(&self, _call: &Call) -> Result<()> {
        if state_dir().join("unavailable").exists() {
            return Err(CniError::not_available("the test plugin was told it is unavailable"));
        }
        Ok(())
    }
}

fn main() {
    netsvc_core::runtime::run(TestPlugin)
}
