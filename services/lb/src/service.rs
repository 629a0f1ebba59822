//! The load balancer as the composer sees it ([`DESCRIPTION`]). `netsvc
//! status` shows its services from the graph, with every other service's.

use netsvc_core::service::Service;

use crate::config::LbConf;
use crate::{Lb, SERVICE};

/// The load-balancer service, for the composer's list.
pub static DESCRIPTION: Service = Service {
    name: SERVICE,
    plugin: &Lb,
    schema: || schemars::schema_for!(LbConf).to_value(),
    validate: |v| LbConf::from_value(v).map(drop),
    reconcile: Some(&Lb),
    repair: &Lb,
    status: None,
    link_prefixes: &[],
};
