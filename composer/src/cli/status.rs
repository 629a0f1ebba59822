//! `netsvc status`: networks, endpoints, services and backends, policies,
//! shaping, VPN peers, as the store holds them (never a private key).

use clap::Args;

use super::common::{Format, StateDirArg};
use crate::status::{collect, render};

#[derive(Debug, Args)]
#[command(after_help = "Example: netsvc status --network shop --format json")]
pub struct StatusArgs {
    /// Only this network.
    #[arg(long)]
    network: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    store: StateDirArg,
}

pub fn run(a: StatusArgs) -> anyhow::Result<i32> {
    let store = a.store.open()?;
    let networks = collect(&store, a.network.as_deref())?;
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&networks)?),
        Format::Text => print!("{}", render(&networks)),
    }
    Ok(0)
}
