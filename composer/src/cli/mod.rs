//! The `netsvc` command line.

mod apply;
mod compose;
mod exec;
mod explain;
mod graph;
mod plugins;
mod status;
mod validate;
mod vpn;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "netsvc",
    version,
    about = "Network services for containers, as chained CNI plugins"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Turn a network spec (YAML or JSON) into an ordered, validated conflist.
    Compose(compose::ComposeArgs),
    /// Run a conflist's plugins against a network namespace, as a CNI runtime does.
    Exec(exec::ExecArgs),
    /// Re-render every netsvc service of a conflist's network for its existing endpoints.
    Apply(apply::ApplyArgs),
    /// Say which firewall policy allows or denies a flow, and why.
    Explain(explain::ExplainArgs),
    /// Check conflists: libcni's rules, each service's config, chain order, conflicts.
    Validate(validate::ValidateArgs),
    /// Draw a chain as its dependency graph (dot, mermaid or text).
    Graph(graph::GraphArgs),
    /// Networks, endpoints, services and backends, policies, shaping, VPN peers.
    Status(status::StatusArgs),
    /// The plugin catalog: what each plugin type provides, requires and conflicts with.
    Plugins(plugins::PluginsArgs),
    /// VPN operations: status (public keys, peers, handshakes) and key rotation.
    Vpn(vpn::VpnArgs),
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    netsvc_core::cni::plugin::init_logging();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Cmd::Compose(a) => compose::run(a),
        Cmd::Exec(a) => exec::run(a),
        Cmd::Apply(a) => apply::run(a),
        Cmd::Explain(a) => explain::run(a),
        Cmd::Graph(a) => graph::run(a),
        Cmd::Plugins(a) => plugins::run(a),
        Cmd::Status(a) => status::run(a),
        Cmd::Validate(a) => validate::run(a),
        Cmd::Vpn(a) => vpn::run(a),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("netsvc: {e:#}");
            1
        }
    }
}
