//! The service graph kept in the store: networks, endpoints (attachments),
//! services, policies, shaping and peers, changed in per-network transactions.

mod error;
mod identity;
mod selector;
mod tx;
mod types;

pub use error::GraphError;
pub use identity::{Identity, identity, validate_label, validate_name};
pub use selector::Selector;
pub use tx::{Graph, Tx};
pub use types::{Endpoint, Network, Peer, Policy, Service, ServicePort, Shaping};
