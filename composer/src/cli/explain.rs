//! `netsvc explain`: which policy allows or denies a flow, and why, from the graph.

use std::net::IpAddr;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use netsvc_core::graph::Protocol;
use netsvc_core::graph::{Endpoint, Graph};
use netsvc_firewall::explain::{Explanation, Flow, World};
use netsvc_firewall::{Rendered, SERVICE, model};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Debug, Args)]
#[command(after_help = "Example: netsvc explain shop web api 8080/tcp")]
pub struct ExplainArgs {
    /// The network the endpoints are named in.
    network: String,
    /// Source: an endpoint name (or alias) of the network, or an IP.
    src: String,
    /// Destination: an endpoint name of the network, or an IP.
    dst: String,
    /// `PORT/PROTO`, e.g. `8080/tcp`.
    port: String,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// The state dir (default: NETSVC_STATE_DIR, else /run/netsvc).
    #[arg(long)]
    state_dir: Option<String>,
}

pub fn run(a: ExplainArgs) -> anyhow::Result<i32> {
    let store = netsvc_core::store::open(a.state_dir.as_deref())?;
    let graph = Graph::new(&store, &super::common::this_node()?);
    let (world, endpoints) = load(&graph)?;
    let flow = Flow {
        src: resolve(&a.network, &a.src, &endpoints)?,
        dst: resolve(&a.network, &a.dst, &endpoints)?,
        proto: parse_proto(&a.port)?.1,
        port: parse_proto(&a.port)?.0,
    };
    let e = world.explain(flow);
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&e)?),
        Format::Text => print!("{}", text(&a, &e)),
    }
    Ok(0)
}

/// Every network the firewall rendered, with the endpoints it holds there.
fn load(graph: &Graph<'_>) -> anyhow::Result<(World, Vec<Endpoint>)> {
    let mut world = World::default();
    let mut all = Vec::new();
    for net in graph.networks()? {
        let Some(rendered) = graph.record::<Rendered>(&net.name, SERVICE, "settings")? else {
            continue;
        };
        let eps: Vec<Endpoint> = graph
            .endpoints(&net.name)?
            .into_iter()
            .filter(|e| e.held_by(SERVICE))
            .collect();
        world.add_network(model::plan(&net.name, &rendered.conf), &eps);
        all.extend(eps);
    }
    Ok((world, all))
}

fn resolve(network: &str, who: &str, endpoints: &[Endpoint]) -> anyhow::Result<IpAddr> {
    if let Ok(ip) = who.parse() {
        return Ok(ip);
    }
    let ep = endpoints
        .iter()
        .find(|e| e.network == network && e.names.iter().any(|n| n == who))
        .with_context(|| format!("no endpoint named {who:?} in network {network:?}"))?;
    model::endpoint_ips(ep)
        .into_iter()
        .min_by_key(|ip| !ip.is_ipv4())
        .with_context(|| format!("endpoint {who:?} has no address"))
}

fn parse_proto(s: &str) -> anyhow::Result<(u16, Protocol)> {
    let (port, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    let proto = match proto {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "sctp" => Protocol::Sctp,
        other => bail!("protocol {other:?}: expected tcp, udp or sctp"),
    };
    Ok((port.parse().with_context(|| format!("port {port:?}"))?, proto))
}

fn text(a: &ExplainArgs, e: &Explanation) -> String {
    let verdict = if e.allowed { "ALLOWED" } else { "DENIED" };
    let mut out = format!(
        "{verdict}: {} ({}) -> {} ({}) {}/{}\n",
        a.src,
        e.flow.src,
        a.dst,
        e.flow.dst,
        e.flow.port,
        e.flow.proto.as_str()
    );
    for s in &e.steps {
        let word = if s.allowed { "allows" } else { "denies" };
        out += &format!("  {} of network {} {word}: {}\n", s.direction, s.network, s.reason);
    }
    if e.steps.is_empty() {
        out += "  neither side is a netsvc-firewall endpoint\n";
    }
    out
}
