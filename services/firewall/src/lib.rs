//! netsvc-firewall: NetworkPolicy-style isolation for containers on nftables.

pub mod config;
pub mod model;
