//! `netsvc validate`: check conflists before any container starts.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::common::{CatalogArg, Format};
use crate::validate::{has_errors, validate};

#[derive(Debug, Args)]
#[command(after_help = "Example: netsvc validate /etc/cni/net.d/web.conflist --format json")]
pub struct ValidateArgs {
    /// Conflists to check; `-` reads one from stdin.
    #[arg(required = true)]
    conflists: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    catalog: CatalogArg,
}

/// Exit 1 when any conflist has an error; 0 with warnings only.
pub fn run(a: ValidateArgs) -> anyhow::Result<i32> {
    let catalog = a.catalog.load()?;
    let mut failed = false;
    let mut report = Vec::new();
    for path in &a.conflists {
        let text = if path.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin()).context("reading stdin")?
        } else {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        };
        let found = match serde_json::from_str(&text) {
            Ok(raw) => validate(&raw, &catalog),
            Err(e) => vec![crate::validate::Diagnostic {
                severity: crate::validate::Severity::Error,
                check: "not-json",
                plugin: None,
                path: "(top level)".into(),
                problem: format!("is not JSON: {e}"),
                fix: "a conflist is one JSON object".into(),
            }],
        };
        failed |= has_errors(&found);
        match a.format {
            Format::Text => {
                for d in &found {
                    println!("{}: {d}", path.display());
                }
                if found.is_empty() {
                    println!("{}: ok", path.display());
                }
            }
            Format::Json => report.push(serde_json::json!({"file": path, "diagnostics": found})),
        }
    }
    if let Format::Json = a.format {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(i32::from(failed))
}
