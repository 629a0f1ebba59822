//! `netsvc repair`: finds where the kernel differs from what the store
//! wants on this node, service by service, and converges it.

use clap::Args;

use super::common::{Format, StateDirArg};

#[derive(Debug, Args)]
#[command(after_help = "Example: netsvc repair --network shop --dry-run")]
pub struct RepairArgs {
    /// Only this network.
    #[arg(long)]
    network: Option<String>,
    /// Print the differences without changing anything.
    #[arg(long)]
    dry_run: bool,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    store: StateDirArg,
}

/// Exits 1 when a service could not be compared.
pub fn run(a: RepairArgs) -> anyhow::Result<i32> {
    let store = a.store.open()?;
    let outcome = crate::repair::run(&store, &super::common::this_node()?, a.network.as_deref(), a.dry_run)?;
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&outcome)?),
        Format::Text => print!("{}", crate::repair::render(&outcome, a.dry_run)),
    }
    Ok(i32::from(!outcome.errors.is_empty()))
}
