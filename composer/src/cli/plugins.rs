//! `netsvc plugins`: the catalog the composer orders chains with.

use std::io::Write;

use clap::Args;

use super::common::CatalogArg;
use crate::order::feature_name;

#[derive(Debug, Args)]
#[command(after_help = "Example: netsvc plugins --json")]
pub struct PluginsArgs {
    #[command(flatten)]
    catalog: CatalogArg,
    /// Print the descriptors as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: PluginsArgs) -> anyhow::Result<i32> {
    let catalog = a.catalog.load()?;
    if a.json {
        let all: Vec<_> = catalog.descriptors().collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(0);
    }
    let list = |features: &[netsvc_core::cni::Feature]| {
        let names: Vec<String> = features.iter().map(|f| feature_name(*f)).collect();
        if names.is_empty() {
            "-".to_string()
        } else {
            names.join(",")
        }
    };
    // A closed pipe (`| head`) ends the listing quietly.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{:<16} {:<30} {:<22} conflicts", "type", "provides", "requires");
    for d in catalog.descriptors() {
        let _ = writeln!(
            out,
            "{:<16} {:<30} {:<22} {}",
            d.plugin_type,
            list(&d.provides),
            list(&d.requires),
            if d.conflicts.is_empty() {
                "-".to_string()
            } else {
                d.conflicts.join(",")
            }
        );
    }
    Ok(0)
}
