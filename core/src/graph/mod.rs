//! The service graph kept in the store: networks, endpoints (attachments),
//! services, policies, shaping and peers, changed in per-network transactions.

mod error;
mod from_call;
mod identity;
mod intent;
mod selector;
mod tx;
mod types;

pub use error::GraphError;
pub use from_call::{checked_endpoint, container_addresses, endpoint_from_call, host_interfaces, record_network};
pub use identity::{Identity, identity, validate_label, validate_name};
pub use intent::{Intent, Op, Session, check_finished, pending};
pub use selector::Selector;
pub use tx::{Graph, LOCK_TIMEOUT, Tx, peers_prefix};
pub use types::{Endpoint, Network, Peer, Policy, Protocol, Service, ServicePort, Shaping};
