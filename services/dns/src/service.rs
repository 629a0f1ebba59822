//! The DNS service as the composer sees it ([`DESCRIPTION`]). Its daemon
//! follows the store itself: it has no reconcile hook.

use netsvc_core::service::Service;

use crate::config::DnsConf;
use crate::{Dns, SERVICE};

/// The DNS service, for the composer's list.
pub static DESCRIPTION: Service = Service {
    name: SERVICE,
    plugin: &Dns,
    schema: || schemars::schema_for!(DnsConf).to_value(),
    validate: |v| DnsConf::from_value(v).map(drop),
    reconcile: None,
    repair: &Dns,
    status: None,
    link_prefixes: &[],
};
