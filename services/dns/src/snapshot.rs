//! Reads what the resolver serves from the store: every network with DNS
//! settings, its DNS endpoints and its LB services.

use netsvc_core::graph::{Graph, GraphError};
use netsvc_core::store::Store;

use crate::zone::{NetworkData, Zone};
use crate::{SERVICE, SETTINGS, Settings};

/// The zone as of the store's current revision.
pub fn load(store: &dyn Store) -> Result<Zone, GraphError> {
    // Read the revision first: a change racing the reads is picked up next time.
    let revision = store.revision()?;
    let graph = Graph::new(store);
    let mut networks = Vec::new();
    for net in graph.networks()? {
        let Some(settings) = graph.record::<Settings>(&net.name, SERVICE, SETTINGS)? else {
            continue;
        };
        let endpoints = graph
            .endpoints(&net.name)?
            .into_iter()
            .filter(|e| e.held_by(SERVICE))
            .collect();
        networks.push(NetworkData {
            services: graph.services(&net.name)?,
            name: net.name,
            served: settings.served,
            endpoints,
        });
    }
    Ok(Zone::build(networks, revision))
}
