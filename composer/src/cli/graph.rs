//! `netsvc graph`: draw a chain (a conflist, or a spec composed first) as
//! its dependency graph.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde_json::Value;

use super::common::CatalogArg;
use crate::chart;
use crate::order::edges;
use crate::spec::Spec;

#[derive(Debug, Args)]
#[command(after_help = "Example: netsvc graph examples/tiered-web.yaml --format mermaid")]
pub struct GraphArgs {
    /// A conflist (JSON) or a spec (YAML or JSON with `subnets`); `-` reads stdin.
    input: PathBuf,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    catalog: CatalogArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Dot,
    Mermaid,
    Text,
}

pub fn run(a: GraphArgs) -> anyhow::Result<i32> {
    let text = if a.input.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading stdin")?
    } else {
        std::fs::read_to_string(&a.input).with_context(|| format!("reading {}", a.input.display()))?
    };
    let catalog = a.catalog.load()?;
    let value: Value = serde_norway::from_str(&text).context("the input is neither JSON nor YAML")?;
    // A spec has subnets; a conflist has plugins. A spec is composed first.
    let plugins: Vec<Value> = if value.get("subnets").is_some() {
        let list = Spec::parse(&text)?.to_conflist_with(&catalog)?;
        list.plugins.into_iter().map(Value::Object).collect()
    } else {
        value["plugins"]
            .as_array()
            .cloned()
            .context("a conflist needs \"plugins\"")?
    };
    let chain: Vec<_> = plugins
        .iter()
        .map(|p| catalog.get(p["type"].as_str().unwrap_or_default()))
        .collect();
    let edges = edges(&chain)?;
    let drawn = match a.format {
        Format::Dot => chart::dot(&chain, &edges),
        Format::Mermaid => chart::mermaid(&chain, &edges),
        Format::Text => chart::text(&chain, &edges),
    };
    print!("{drawn}");
    Ok(0)
}
