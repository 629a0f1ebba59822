//! `netsvc compose`: spec in, conflist out.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::common::CatalogArg;
use crate::spec::Spec;

#[derive(Debug, Args)]
#[command(after_help = "Example: netsvc compose examples/tiered-web.yaml -o /etc/cni/net.d/shop.conflist --explain")]
pub struct ComposeArgs {
    /// The spec file (YAML or JSON); `-` reads stdin.
    spec: PathBuf,
    /// Write the conflist here instead of stdout.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Say on stderr why each plugin stands where it does.
    #[arg(long)]
    explain: bool,
    #[command(flatten)]
    catalog: CatalogArg,
}

pub fn run(args: ComposeArgs) -> anyhow::Result<i32> {
    let text = if args.spec.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the spec from stdin")?
    } else {
        std::fs::read_to_string(&args.spec).with_context(|| format!("reading {}", args.spec.display()))?
    };
    let spec = match Spec::parse(&text) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("netsvc compose: {}: {e}", args.spec.display());
            return Ok(1);
        }
    };
    let catalog = match args.catalog.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("netsvc compose: catalog {}: {e}", args.catalog.catalog.display());
            return Ok(1);
        }
    };
    let list = match spec.compose(&catalog) {
        Ok((list, why)) => {
            if args.explain {
                eprintln!("{}", why.join("\n"));
            }
            list
        }
        Err(e) => {
            eprintln!("netsvc compose: {}: {e}", args.spec.display());
            return Ok(1);
        }
    };
    let mut out = serde_json::to_string_pretty(&list)?;
    out.push('\n');
    match args.output {
        Some(path) => std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?,
        None => print!("{out}"),
    }
    Ok(0)
}
