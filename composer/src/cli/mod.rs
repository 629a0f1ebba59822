//! The `netsvc` command line.

mod agent;
mod apply;
mod common;
mod compose;
mod dns;
mod exec;
mod explain;
mod graph;
mod plugins;
mod repair;
mod status;
mod validate;
mod vpn;

use clap::{CommandFactory, Parser, Subcommand};

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
    Repair(repair::RepairArgs),
    /// Write the JSON Schema of every service's config into a folder.
    #[command(after_help = "Example: netsvc schema --out docs/schema")]
    Schema {
        #[arg(long, default_value = ".")]
        out: std::path::PathBuf,
    },
    /// Print a shell completion script.
    #[command(after_help = "Example: netsvc completions bash > /etc/bash_completion.d/netsvc")]
    Completions {
        shell: clap_complete::Shell,
    },
    /// Write man pages (netsvc.1 and one per subcommand) into a folder.
    #[command(after_help = "Example: netsvc man --out /usr/local/share/man/man1")]
    Man {
        #[arg(long, default_value = ".")]
        out: std::path::PathBuf,
    },
    /// VPN operations: status (public keys, peers, handshakes) and key rotation.
    Vpn(vpn::VpnArgs),
    /// The DNS resolver from the node: a container's name as the node sees it, the cache.
    Dns(dns::DnsArgs),
    /// The node agent: follows a shared store and re-renders this node's services.
    Agent(agent::AgentArgs),
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    netsvc_core::runtime::init_logging();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Cmd::Compose(a) => compose::run(a),
        Cmd::Exec(a) => exec::run(a),
        Cmd::Apply(a) => apply::run(a),
        Cmd::Explain(a) => explain::run(a),
        Cmd::Graph(a) => graph::run(a),
        Cmd::Plugins(a) => plugins::run(a),
        Cmd::Repair(a) => repair::run(a),
        Cmd::Status(a) => status::run(a),
        Cmd::Validate(a) => validate::run(a),
        Cmd::Vpn(a) => vpn::run(a),
        Cmd::Dns(a) => dns::run(a),
        Cmd::Agent(a) => agent::run(a),
        Cmd::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "netsvc", &mut std::io::stdout());
            Ok(0)
        }
        Cmd::Man { out } => write_man_pages(&out).map(|()| 0),
        Cmd::Schema { out } => write_schemas(&out).map(|()| 0),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("netsvc: {e:#}");
            1
        }
    }
}

/// `<type>.schema.json` for every service in `dir`.
fn write_schemas(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (t, schema) in crate::schema::service_schemas() {
        let (name, body) = crate::schema::file(t, &schema);
        std::fs::write(dir.join(name), body)?;
    }
    Ok(())
}

/// netsvc.1 and netsvc-<subcommand>.1 (and their own subcommands') in `dir`.
fn write_man_pages(dir: &std::path::Path) -> anyhow::Result<()> {
    fn write(dir: &std::path::Path, name: &str, cmd: clap::Command) -> anyhow::Result<()> {
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd.clone()).title(name).render(&mut page)?;
        std::fs::write(dir.join(format!("{name}.1")), page)?;
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            write(dir, &format!("{name}-{}", sub.get_name()), sub.clone())?;
        }
        Ok(())
    }
    std::fs::create_dir_all(dir)?;
    let mut cmd = Cli::command();
    cmd.build();
    write(dir, "netsvc", cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every subcommand, at every depth, with its path.
    fn all(cmd: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
        for sub in cmd.get_subcommands() {
            let p = format!("{path} {}", sub.get_name());
            out.push((p.clone(), sub.clone()));
            all(sub, p, out);
        }
    }

    #[test]
    fn every_subcommand_shows_an_example() {
        let mut subs = Vec::new();
        all(&Cli::command(), "netsvc".into(), &mut subs);
        assert!(subs.len() >= 12, "{}", subs.len());
        for (path, sub) in subs.iter().filter(|(_, s)| s.get_subcommands().next().is_none()) {
            let help = sub.get_after_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(
                help.starts_with("Example: netsvc "),
                "{path} has no example in its --help"
            );
        }
    }

    #[test]
    fn man_pages_and_completions_are_generated() {
        let dir = tempfile::tempdir().unwrap();
        write_man_pages(dir.path()).unwrap();
        for page in [
            "netsvc.1",
            "netsvc-compose.1",
            "netsvc-validate.1",
            "netsvc-vpn-rotate.1",
        ] {
            let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
            assert!(text.contains(".TH"), "{page}");
        }
        let mut script = Vec::new();
        clap_complete::generate(clap_complete::Shell::Bash, &mut Cli::command(), "netsvc", &mut script);
        let script = String::from_utf8(script).unwrap();
        assert!(script.contains("validate") && script.contains("compose"));
    }
}
