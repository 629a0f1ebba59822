//! Reads what the resolver serves from the store: every network with DNS
//! settings, its DNS endpoints and its LB services.

use std::collections::BTreeSet;

use netsvc_core::graph::{Graph, GraphError};
use netsvc_core::node::NodeName;
use netsvc_core::store::Store;

use crate::zone::{NetworkData, Zone};
use crate::{SERVICE, SETTINGS, Settings};

/// An endpoint a DEL withdrew from the daemon: (network, endpoint id).
pub type Withdrawn = (String, String);

/// The zone as of the store's current revision, without the `withdrawn`
/// endpoints; and those of them the store still holds (the others are
/// forgotten: the store caught up). `node`: the node whose DNS settings
/// are served.
pub fn load(
    store: &dyn Store,
    node: &NodeName,
    withdrawn: &BTreeSet<Withdrawn>,
) -> Result<(Zone, BTreeSet<Withdrawn>), GraphError> {
    // Read the revision first: a change racing the reads is picked up next time.
    let revision = store.revision()?;
    let graph = Graph::new(store, node);
    let mut networks = Vec::new();
    let mut still = BTreeSet::new();
    for net in graph.networks()? {
        let Some(settings) = graph.record::<Settings>(&net.name, SERVICE, SETTINGS)? else {
            continue;
        };
        let mut endpoints = graph.endpoints(&net.name)?;
        endpoints.retain(|e| {
            let key = (net.name.clone(), e.id());
            let hidden = withdrawn.contains(&key);
            if hidden {
                still.insert(key);
            }
            e.held_by(SERVICE) && !hidden
        });
        networks.push(NetworkData {
            services: graph.services(&net.name)?,
            name: net.name,
            served: settings.served,
            endpoints,
        });
    }
    Ok((Zone::build(networks, revision), still))
}
