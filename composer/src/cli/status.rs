//! `netsvc status`: networks, endpoints, services and backends, policies,
//! shaping, VPN peers, as the store holds them (never a private key), and
//! the documents the file store quarantined.

use clap::Args;

use super::common::ReportArgs;
use crate::status::{collect, render};

#[derive(Debug, Args)]
#[command(after_help = "Example: netsvc status --network shop --format json")]
pub struct StatusArgs {
    #[command(flatten)]
    report: ReportArgs,
}

pub fn run(a: StatusArgs) -> anyhow::Result<i32> {
    a.report.print(collect, render)
}
