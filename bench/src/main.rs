//! `netsvc-bench`: the measuring and reporting half of `bench/run`.
//!
//! `bench/run` (root) builds the release binaries, runs every section into
//! `bench/results/raw/*.json` (these subcommands and the existing benches
//! and scripts, each writing its figures there), then `netsvc-bench report`
//! turns them into `bench/results/report.md` and PNG charts.

#![forbid(unsafe_code)]

mod compare;
mod exec;
mod plots;
mod qos;
mod report;
mod stats;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "netsvc's benchmark report")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Whole-process ADD and DEL of each plugin and of whole chains, ours
    /// against the reference plugins (root).
    Exec {
        #[arg(long, default_value_t = 30)]
        rounds: usize,
        #[arg(long)]
        out: PathBuf,
    },
    /// QoS rates on the wire against the set rate, beside the reference
    /// bandwidth plugin (root).
    Qos {
        /// Seconds of iperf3 per measurement.
        #[arg(long, default_value_t = 6)]
        seconds: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Whole-process ADD and DEL of each netsvc plugin, two builds
    /// interleaved (before, after, after, before, …) in one run (root).
    Compare {
        /// The folder of the first build's plugin binaries.
        #[arg(long)]
        before: PathBuf,
        /// The folder of the second build's plugin binaries.
        #[arg(long)]
        after: PathBuf,
        /// Rounds of each plugin per measurement.
        #[arg(long, default_value_t = 20)]
        rounds: usize,
        /// Measurements of each build.
        #[arg(long, default_value_t = 4)]
        repeat: usize,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Writes report.md and the charts from the figures in DIR/raw.
    Report {
        #[arg(long, default_value = "bench/results")]
        dir: PathBuf,
    },
}

fn write_json(path: &PathBuf, value: &impl serde::Serialize) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)?).with_context(|| format!("write {}", path.display()))
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Exec { rounds, out } => write_json(&out, &exec::run(rounds)?),
        Command::Qos { seconds, out } => write_json(&out, &qos::run(seconds)?),
        Command::Compare {
            before,
            after,
            rounds,
            repeat,
            out,
        } => {
            let c = compare::run(&before, &after, rounds, repeat)?;
            print!("{}", compare::table(&c));
            out.map_or(Ok(()), |out| write_json(&out, &c))
        }
        Command::Report { dir } => report::write(&dir),
    }
}
