//! `netsvc apply`: re-render every netsvc service of a conflist's network for
//! its existing endpoints, after the conflist changed while containers run.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use netsvc_core::cni::NetConfList;

use crate::services::reconcile_all;

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
    let node = super::common::this_node()?;
    for (i, plugin_type, outcome) in reconcile_all(&list, &node) {
        match outcome {
            Ok(s) => println!(
                "{} {}: {} endpoints, {} changes",
                s.service, s.network, s.endpoints, s.changes
            ),
            Err(e) => {
                eprintln!("netsvc apply: plugin #{i} ({plugin_type}): {e}");
                failed = true;
            }
        }
    }
    Ok(i32::from(failed))
}
