//! `netsvc apply`: re-render every netsvc service of a conflist's network for
//! its existing endpoints, after the conflist changed while containers run.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use netsvc_core::cni::{NetConf, NetConfList};

use crate::runtime::{RuntimeConf, plugin_conf};
use crate::services::reconciler;

#[derive(Debug, Args)]
#[command(after_help = "Example: netsvc apply /etc/cni/net.d/shop.conflist")]
pub struct ApplyArgs {
    /// The conflist, as changed.
    conflist: PathBuf,
}

pub fn run(a: ApplyArgs) -> anyhow::Result<i32> {
    let bytes = std::fs::read(&a.conflist).with_context(|| format!("reading {}", a.conflist.display()))?;
    let list = match NetConfList::parse(&bytes) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("netsvc apply: {}: {e}", a.conflist.display());
            return Ok(1);
        }
    };
    let mut failed = false;
    for i in 0..list.plugins.len() {
        let Some(service) = reconciler(list.plugin_type(i)) else {
            continue;
        };
        let raw = plugin_conf(&list, i, &list.cni_version, &RuntimeConf::default(), None);
        let outcome = NetConf::from_value(&serde_json::Value::Object(raw)).and_then(|conf| service.reconcile(&conf));
        match outcome {
            Ok(s) => println!(
                "{} {}: {} endpoints, {} changes",
                s.service, s.network, s.endpoints, s.changes
            ),
            Err(e) => {
                eprintln!("netsvc apply: plugin #{i} ({}): {e}", list.plugin_type(i));
                failed = true;
            }
        }
    }
    Ok(i32::from(failed))
}
