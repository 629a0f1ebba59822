//! netsvc-core: what every netsvc service shares — the CNI protocol, network
//! namespaces, netlink and nftables programming, the store and the service graph.

pub mod attachment;
pub mod bridged;
pub mod cni;
pub mod failpoint;
pub mod graph;
pub mod inet;
pub mod naming;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod node;
pub mod reconcile;
pub mod runtime;
pub mod service;
pub mod spawn;
pub mod store;
#[cfg(test)]
mod test_support;
