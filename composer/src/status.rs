//! `netsvc status`: what the store holds, network by network. Endpoints,
//! services and their backends, firewall policies, shaping, and the VPN's
//! tunnels and mesh nodes. Public material only: the VPN part never holds a
//! private key. Then the file store's quarantined documents: records that
//! did not parse and now read as absent.

use std::fmt::Write;

use netsvc_core::cni::IpNet;
use netsvc_core::graph::{Endpoint, Graph, Network};
use netsvc_core::node::NodeName;
use netsvc_core::store::{FileStore, QuarantinedDoc, StoreHandle, StoreSpec};
use serde::Serialize;
use serde_json::{Map, Value};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkStatus {
    #[serde(flatten)]
    pub network: Network,
    pub endpoints: Vec<Endpoint>,
    pub services: Vec<ServiceStatus>,
    /// Each service's own part (the firewall's policies, the shaping, the
    /// VPN's tunnels and mesh), under the key the service names, in the
    /// order of [`crate::services::ALL`]; a service with nothing to show is
    /// left out.
    #[serde(flatten)]
    pub parts: Map<String, Value>,
    /// The same parts as text, in the same order.
    #[serde(skip)]
    pub text: Vec<String>,
    /// Calls of this node that died before they finished, by service (the
    /// next call, `netsvc repair` or the agent finishes them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unfinished: Vec<Unfinished>,
}

#[derive(Debug, Serialize)]
pub struct Unfinished {
    pub service: String,
    #[serde(flatten)]
    pub intent: netsvc_core::graph::Intent,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    #[serde(flatten)]
    pub service: netsvc_core::graph::Service,
    /// The endpoints it selects (`<container id>:<ifname>`).
    pub backends: Vec<String>,
}

/// What `netsvc status` reports.
#[derive(Debug, Serialize)]
pub struct Status {
    pub networks: Vec<NetworkStatus>,
    /// Documents of the file store that did not parse, moved aside (every
    /// one, whatever `--network` says: a lost record is worth seeing).
    pub quarantined: Vec<QuarantinedDoc>,
}

/// Every network (or only `network`) as the store holds it, and what the
/// store quarantined, as `node` sees them.
pub fn collect(store: &StoreHandle, node: &NodeName, only: Option<&str>) -> anyhow::Result<Status> {
    let networks = networks(store, node, only)?;
    // After the networks: reading them is what finds a bad document.
    let quarantined = match store.spec() {
        StoreSpec::File => FileStore::open(store.state_dir())?.quarantined(),
        StoreSpec::Etcd(_) => Vec::new(),
    };
    Ok(Status { networks, quarantined })
}

fn networks(store: &StoreHandle, node: &NodeName, only: Option<&str>) -> anyhow::Result<Vec<NetworkStatus>> {
    let graph = Graph::new(store, node);
    let mut out = Vec::new();
    for network in graph.networks()? {
        if only.is_some_and(|n| n != network.name) {
            continue;
        }
        let endpoints = graph.endpoints(&network.name)?;
        let services = graph
            .services(&network.name)?
            .into_iter()
            .map(|service| ServiceStatus {
                backends: endpoints
                    .iter()
                    .filter(|e| !service.selector.is_empty() && service.selector.matches(e))
                    .map(Endpoint::id)
                    .collect(),
                service,
            })
            .collect();
        let (mut parts, mut text) = (Map::new(), Vec::new());
        for view in crate::services::ALL.iter().filter_map(|s| s.status) {
            if let Some(part) = view.collect(store, node, &network.name)? {
                parts.insert(view.key().to_string(), part.json);
                text.push(part.text);
            }
        }
        let mut unfinished = Vec::new();
        for service in crate::services::names() {
            if let Some(intent) = netsvc_core::graph::pending(&graph, &network.name, service)? {
                unfinished.push(Unfinished {
                    service: service.to_string(),
                    intent,
                });
            }
        }
        out.push(NetworkStatus {
            unfinished,
            endpoints,
            services,
            parts,
            text,
            network,
        });
    }
    Ok(out)
}

/// The status as text.
pub fn render(status: &Status) -> String {
    let mut s = String::new();
    for n in &status.networks {
        let net = &n.network;
        let _ = writeln!(
            s,
            "network {}  subnets {}  gateway {}  on {}",
            net.name,
            IpNet::list(&net.subnets),
            net.gateway.map_or("-".to_string(), |g| g.to_string()),
            net.bridge.as_deref().unwrap_or("-")
        );
        for u in &n.unfinished {
            let _ = writeln!(
                s,
                "  unfinished {} {} of {} (pid {}): `netsvc repair` finishes it",
                u.service,
                u.intent.op.word(),
                u.intent.container_id.as_deref().unwrap_or("the network"),
                u.intent.pid
            );
        }
        let _ = writeln!(s, "  endpoints ({}):", n.endpoints.len());
        for e in &n.endpoints {
            let labels: Vec<String> = e.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(
                s,
                "    {}  {}  names {}  labels {}  held by {}",
                e.id(),
                IpNet::list(&e.ips),
                if e.names.is_empty() {
                    "-".into()
                } else {
                    e.names.join(",")
                },
                if labels.is_empty() {
                    "-".into()
                } else {
                    labels.join(",")
                },
                e.services.join(",")
            );
        }
        for svc in &n.services {
            let ports: Vec<String> = svc
                .service
                .ports
                .iter()
                .map(|p| {
                    format!(
                        "{}->{}/{}",
                        p.port,
                        p.target_port.unwrap_or(p.port),
                        p.protocol.as_str()
                    )
                })
                .collect();
            let _ = writeln!(
                s,
                "  service {}  vip {}  ports {}  backends {}",
                svc.service.name,
                svc.service.vip.map_or("-".to_string(), |v| v.to_string()),
                ports.join(" "),
                if svc.backends.is_empty() {
                    "none".into()
                } else {
                    svc.backends.join(", ")
                }
            );
        }
        for part in &n.text {
            s.push_str(part);
        }
    }
    if !status.quarantined.is_empty() {
        let _ = writeln!(
            s,
            "quarantined documents ({}): did not parse, read as absent",
            status.quarantined.len()
        );
        for q in &status.quarantined {
            let _ = writeln!(
                s,
                "  {}  {}  {}",
                q.key,
                q.path.display(),
                q.why.as_deref().unwrap_or("-")
            );
        }
    }
    s
}
