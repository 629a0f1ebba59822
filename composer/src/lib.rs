//! netsvc-composer: turns network specs into ordered conflists, and runs
//! conflists the way a CNI runtime does (`netsvc exec`).

pub mod agent;
pub mod catalog;
pub mod chart;
pub mod cli;
pub mod order;
pub mod repair;
pub mod runtime;
pub mod schema;
pub mod services;
pub mod spec;
pub mod status;
pub mod validate;
