//! `netsvc status`: what the store holds, network by network. Endpoints,
//! services and their backends, firewall policies, shaping, and the VPN's
//! tunnels and mesh nodes. Public material only: the VPN part never holds a
//! private key. Then the file store's quarantined documents: records that
//! did not parse and now read as absent.

use std::fmt::Write;

use netsvc_core::graph::{Endpoint, Graph, Network, Shaping};
use netsvc_core::store::{FileStore, QuarantinedDoc, StoreHandle, StoreSpec};
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkStatus {
    #[serde(flatten)]
    pub network: Network,
    pub endpoints: Vec<Endpoint>,
    pub services: Vec<ServiceStatus>,
    /// The firewall's policies as configured (`defaultIngress`, `policies`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firewall: Option<Value>,
    pub shaping: Vec<Shaping>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vpn: Option<netsvc_vpn::status::NetworkStatus>,
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
/// store quarantined.
pub fn collect(store: &StoreHandle, only: Option<&str>) -> anyhow::Result<Status> {
    let networks = networks(store, only)?;
    // After the networks: reading them is what finds a bad document.
    let quarantined = match store.spec() {
        StoreSpec::File => FileStore::open(store.state_dir())?.quarantined(),
        StoreSpec::Etcd(_) => Vec::new(),
    };
    Ok(Status { networks, quarantined })
}

fn networks(store: &StoreHandle, only: Option<&str>) -> anyhow::Result<Vec<NetworkStatus>> {
    let graph = Graph::new(store);
    let mut vpn = netsvc_vpn::status::collect(store, only)?;
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
        let firewall = graph
            .record::<Value>(&network.name, netsvc_firewall::SERVICE, "settings")?
            .map(|r| r["conf"].clone());
        let vpn_index = vpn.iter().position(|v| v.network == network.name);
        let mut unfinished = Vec::new();
        for service in crate::services::KNOWN {
            if let Some(intent) = netsvc_core::graph::pending(&graph, &network.name, service)? {
                unfinished.push(Unfinished {
                    service: service.to_string(),
                    intent,
                });
            }
        }
        out.push(NetworkStatus {
            unfinished,
            shaping: graph.shapings(&network.name)?,
            endpoints,
            services,
            firewall,
            vpn: vpn_index.map(|i| vpn.remove(i)),
            network,
        });
    }
    Ok(out)
}

fn rate(bits: Option<u64>) -> String {
    bits.map_or("-".into(), |b| format!("{:.3} Mbit/s", b as f64 / 1e6))
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
            net.subnets.join(", "),
            net.gateway.as_deref().unwrap_or("-"),
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
                e.ips.join(", "),
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
                svc.service.vip.as_deref().unwrap_or("-"),
                ports.join(" "),
                if svc.backends.is_empty() {
                    "none".into()
                } else {
                    svc.backends.join(", ")
                }
            );
        }
        if let Some(fw) = &n.firewall {
            let names: Vec<&str> = fw["policies"]
                .as_array()
                .map(|ps| ps.iter().filter_map(|p| p["name"].as_str()).collect())
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "  firewall  default ingress {}  policies {}",
                fw["defaultIngress"].as_str().unwrap_or("allow"),
                if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                }
            );
        }
        for sh in &n.shaping {
            let _ = writeln!(
                s,
                "  shaping {}  to it {}  from it {}",
                sh.endpoint,
                rate(sh.ingress_rate),
                rate(sh.egress_rate)
            );
        }
        if let Some(vpn) = &n.vpn {
            let text = netsvc_vpn::status::render(std::slice::from_ref(vpn));
            // The VPN's own block, without its network line.
            for line in text.lines().skip(1) {
                let _ = writeln!(s, "{line}");
            }
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
