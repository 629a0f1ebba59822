//! The graph's view of a plugin call: the endpoint a chained ADD describes.

use crate::cni::{Call, CniError, CniResult, IpNet};
use crate::netns::check_cni_netns;

use super::{Endpoint, Graph, GraphError, Network, Tx, identity};

/// The addresses the chain gave the container interface `ifname` (addresses
/// bound to no interface count too, as the reference plugins read them).
pub fn container_addresses(result: &CniResult, ifname: &str) -> Vec<IpNet> {
    match result.container_interface(ifname) {
        Some(idx) => result.ips_of(idx).map(|ip| ip.address).collect(),
        None => result
            .ips
            .iter()
            .filter(|ip| ip.interface.is_none())
            .map(|ip| ip.address)
            .collect(),
    }
}

/// The interfaces of a result that live on the node (no sandbox): a bridge, a host veth.
pub fn host_interfaces(result: &CniResult) -> impl Iterator<Item = &str> {
    result
        .interfaces
        .iter()
        .filter(|i| i.sandbox.is_none())
        .map(|i| i.name.as_str())
}

/// The endpoint a chained call attaches: identity from CNI_ARGS, the
/// `aliases` capability and `args.cni.labels`; addresses from `prev`.
/// Fails with code 7 when the chain gave the container no address, and as
/// [`check_cni_netns`] when CNI_NETNS is no network namespace: the endpoint
/// records that path, and a recorded path is one later calls enter.
pub fn endpoint_from_call(call: &Call, prev: &CniResult, service: &str) -> Result<Endpoint, CniError> {
    if let Some(netns) = &call.env.netns {
        check_cni_netns(netns)?;
    }
    let runtime_config = call.conf.runtime_config.clone().map(serde_json::Value::Object);
    let id = identity(
        &call.conf.name,
        &call.env.args.0,
        runtime_config.as_ref(),
        call.conf.args.as_ref(),
    )?;
    let ips = container_addresses(prev, &call.env.ifname);
    if ips.is_empty() {
        return Err(CniError::invalid_config(
            "prevResult.ips",
            format!(
                "{service} needs an earlier plugin of the chain to give {} an address (chain it after bridge/ptp with IPAM)",
                call.env.ifname
            ),
        ));
    }
    Ok(Endpoint {
        network: call.conf.name.clone(),
        container_id: call.env.container_id.clone(),
        ifname: call.env.ifname.clone(),
        ips,
        host_veth: None,
        netns: call.env.netns.as_ref().map(|p| p.display().to_string()),
        names: id.names,
        labels: id.labels,
        services: Vec::new(),
        node: Some(call.node.to_string()),
    })
}

/// Records the network from the interface plugin's result on its first
/// attachment (later ones leave it as it is).
pub fn record_network(tx: &mut Tx<'_>, prev: &CniResult) -> Result<(), GraphError> {
    if tx.get_network()?.is_some() {
        return Ok(());
    }
    let subnets = prev.ips.iter().map(|ip| ip.address.network()).collect();
    let gateway = prev.ips.iter().find_map(|ip| ip.gateway);
    let bridge = host_interfaces(prev).next().map(str::to_string);
    tx.put_network(&Network {
        name: tx.network_name().to_string(),
        subnets,
        gateway,
        bridge,
    })
}

/// CHECK's first question for every service: the call's endpoint as the
/// graph holds it for `service`; code 120 when it is not there.
pub fn checked_endpoint(graph: &Graph<'_>, call: &Call, service: &str) -> Result<Endpoint, CniError> {
    let (id, ifname) = (&call.env.container_id, &call.env.ifname);
    graph
        .endpoint(&call.conf.name, id, ifname)?
        .filter(|e| e.held_by(service))
        .ok_or_else(|| CniError::state_missing(service, format!("endpoint {id}/{ifname} is not in the graph")))
}
